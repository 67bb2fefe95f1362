use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::FieldError;

/// A third-party service whose API key the vault keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyProvider {
    TogetherAi,
    CodeRabbit,
    Oumi,
    Kestra,
}

impl KeyProvider {
    pub const ALL: [KeyProvider; 4] =
        [Self::TogetherAi, Self::CodeRabbit, Self::Oumi, Self::Kestra];

    /// The name used on the wire and in storage.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TogetherAi => "togetherAI",
            Self::CodeRabbit => "codeRabbit",
            Self::Oumi => "oumi",
            Self::Kestra => "kestra",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == raw)
    }
}

impl fmt::Display for KeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plaintext API key: 1 to 512 printable, non-space ASCII characters.
pub struct ApiKeyValue(SecretString);

impl ApiKeyValue {
    pub const MAX_LEN: usize = 512;

    /// Parses the key given for `field`.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldError> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(FieldError::new(field, "must be 1 to 512 characters"));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(FieldError::new(
                field,
                "must contain only printable ASCII characters without spaces",
            ));
        }
        Ok(Self(SecretString::from(raw)))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ApiKeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeyValue(..)")
    }
}

/// A key as stored: sealed by the vault, tagged with the id of the encryption key that sealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedKey {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_round_trip() {
        for p in KeyProvider::ALL {
            assert_eq!(KeyProvider::parse(p.as_str()), Some(p));
        }
        assert_eq!(KeyProvider::parse("togetherai"), None);
    }

    #[test]
    fn key_values_are_printable_non_space_ascii_up_to_512() {
        assert!(ApiKeyValue::parse("sk-abc_123.XYZ~!", "k").is_ok());
        assert!(ApiKeyValue::parse(&"a".repeat(512), "k").is_ok());
        for bad in [
            "",
            "has space",
            "tab\there",
            "naïve",
            "line\n",
            &"a".repeat(513),
        ] {
            assert!(ApiKeyValue::parse(bad, "k").is_err(), "{bad:?}");
        }
    }
}
