use std::fmt;

/// How an API key is shown: 24+ chars show the first 8 and last 4, 12-23 chars show `...` and
/// the last 4, shorter keys show `********`. The only way a key is ever displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked(String);

impl Masked {
    pub fn of(key: &str) -> Self {
        // Keys are ASCII (checked on the way in); byte slicing is character slicing. Should a
        // stored key not be ASCII after all, fall back to the fully hidden form.
        let n = key.len();
        let shown = if !key.is_ascii() || n < 12 {
            "********".to_owned()
        } else if n < 24 {
            format!("...{}", &key[n - 4..])
        } else {
            format!("{}...{}", &key[..8], &key[n - 4..])
        };
        Self(shown)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Masked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_follows_the_contract_at_every_boundary() {
        assert_eq!(
            Masked::of("sk-abc12xxxxxxxxxxxxxwxyz").as_str(),
            "sk-abc12...wxyz"
        );
        assert_eq!(
            Masked::of(&format!("{}1234", "a".repeat(20))).as_str(),
            "aaaaaaaa...1234"
        );
        assert_eq!(
            Masked::of(&format!("{}1234", "a".repeat(19))).as_str(),
            "...1234"
        );
        assert_eq!(Masked::of("abcdefgh1234").as_str(), "...1234");
        assert_eq!(Masked::of("abcdefg1234").as_str(), "********");
        assert_eq!(Masked::of("x").as_str(), "********");
    }
}
