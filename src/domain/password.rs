use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::FieldError;

/// A candidate password: at least 8 characters and at most 72 bytes of UTF-8, bcrypt's limit,
/// so that nothing is ever silently truncated.
pub struct Password(SecretString);

impl Password {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_BYTES: usize = 72;

    /// Parses a password given for `field` (`password`, `newPassword`, ...).
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldError> {
        if raw.chars().count() < Self::MIN_CHARS {
            return Err(FieldError::new(field, "must be at least 8 characters"));
        }
        if raw.len() > Self::MAX_BYTES {
            return Err(FieldError::new(
                field,
                "must be at most 72 bytes in UTF-8 (bcrypt's limit); use a shorter password",
            ));
        }
        if raw.contains('\0') {
            return Err(FieldError::new(field, "must not contain NUL characters"));
        }
        if is_common(raw) {
            return Err(FieldError::new(
                field,
                "is one of the 10,000 most common passwords; choose another",
            ));
        }
        Ok(Self(SecretString::from(raw)))
    }

    /// A password given to be checked, not set: any length is accepted, but one that could never
    /// have been stored is marked so that it is refused after the same work as a wrong one.
    pub fn candidate(raw: &str) -> Self {
        Self(SecretString::from(raw))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether bcrypt can take this password without truncating it.
    pub fn fits_bcrypt(&self) -> bool {
        let raw = self.expose();
        raw.len() <= Self::MAX_BYTES && !raw.contains('\0')
    }
}

/// How many of the most common passwords are refused (NIST SP 800-63B, 5.1.1.2).
const COMMON_RANK: usize = 10_000;

/// Whether the whole password (in any letter case) is among the most common passwords of the
/// `zxcvbn` crate's built-in list, which is ranked by frequency in leaked password sets.
fn is_common(raw: &str) -> bool {
    let entropy = zxcvbn::zxcvbn(raw, &[]);
    let [only] = entropy.sequence() else {
        return false;
    };
    let whole = only.i == 0 && only.j + 1 == raw.chars().count();
    match &only.pattern {
        zxcvbn::matching::patterns::MatchPattern::Dictionary(d) => {
            // The passwords list is the crate's default dictionary type (its type is not
            // nameable from outside the crate).
            whole
                && d.dictionary_name == Default::default()
                && d.rank <= COMMON_RANK
                && !d.reversed
                && !d.l33t
        }
        _ => false,
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_characters_are_too_few() {
        assert!(Password::parse("1234567", "password").is_err());
        assert!(Password::parse("1234x678", "password").is_ok());
    }

    #[test]
    fn more_than_72_bytes_is_refused_not_truncated() {
        assert!(Password::parse(&"a".repeat(72), "password").is_ok());
        let err = Password::parse(&"a".repeat(73), "password").unwrap_err();
        assert!(err.message.contains("72 bytes"));
        // 25 three-byte characters: 25 characters, 75 bytes.
        assert!(Password::parse(&"€".repeat(25), "password").is_err());
    }

    #[test]
    fn common_passwords_are_refused_in_any_case() {
        for common in [
            "password",
            "Password",
            "12345678",
            "iloveyou",
            "qwertyuiop",
            "baseball",
        ] {
            let err = Password::parse(common, "password").unwrap_err();
            assert!(err.message.contains("most common"), "{common}");
        }
        for fine in [
            "correct horse battery",
            "tr0ub4dor&3-staple",
            "pässwörd-🦀-long",
        ] {
            assert!(Password::parse(fine, "password").is_ok(), "{fine}");
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let password = Password::parse("correct horse", "password").unwrap();
        assert_eq!(format!("{password:?}"), "Password(..)");
    }
}
