use std::fmt;

use validator::ValidateEmail;

use super::FieldError;

/// A trimmed, lower-cased, syntactically valid address of at most 254 characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let value = raw.trim().to_lowercase();
        if value.is_empty() {
            return Err(FieldError::new("email", "is required"));
        }
        if value.chars().count() > Self::MAX_LEN {
            return Err(FieldError::new("email", "must be at most 254 characters"));
        }
        if !value.validate_email() || value.chars().any(char::is_control) {
            return Err(FieldError::new("email", "must be a valid email address"));
        }
        Ok(Self(value))
    }

    /// An address read back from the store, where only [`Email::parse`] puts them: the full
    /// check (a regular expression) ran when it was written, so reading it back on every
    /// session check only makes sure it still looks like one.
    pub fn from_stored(stored: String) -> Result<Self, FieldError> {
        match stored.split_once('@') {
            Some((local, domain))
                if !local.is_empty() && !domain.is_empty() && stored.len() <= Self::MAX_LEN * 4 =>
            {
                Ok(Self(stored))
            }
            _ => Err(FieldError::new("email", "must be a valid email address")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// An address is personal data: keep it out of debug output by accident.
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_trimmed_and_lower_cased() {
        let email = Email::parse("  Ada.Lovelace@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "ada.lovelace@example.com");
    }

    #[test]
    fn a_stored_address_is_taken_as_written_unless_it_lost_its_parts() {
        let stored = Email::parse("ada@example.com").unwrap().as_str().to_owned();
        assert_eq!(
            Email::from_stored(stored).unwrap().as_str(),
            "ada@example.com"
        );
        for broken in ["", "ada", "@example.com", "ada@"] {
            assert!(Email::from_stored(broken.to_owned()).is_err(), "{broken}");
        }
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for raw in [
            "",
            "   ",
            "no-at-sign",
            "a@",
            "@b.c",
            "a b@c.d",
            "a@b@c.d",
            "a\n@b.c",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn an_address_longer_than_254_characters_is_refused() {
        let local = "a".repeat(64);
        let domain = format!("{}.com", "b".repeat(250 - 64));
        let raw = format!("{local}@{domain}");
        assert!(raw.len() > 254);
        assert!(Email::parse(&raw).is_err());
    }
}
