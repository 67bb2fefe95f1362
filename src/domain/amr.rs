//! How a user proved who they are: the `amr` claim (RFC 8176) of their access tokens.

use std::fmt;

/// One authentication method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// A password.
    Pwd,
    /// A hardware-bound key (a passkey).
    Hwk,
    /// A federated sign-in (GitHub, Google).
    Fed,
    /// A link mailed to the address.
    Email,
    /// A one-time code (TOTP or a recovery code): a second factor, listed after the first.
    Otp,
    /// Two factors were used.
    Mfa,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pwd => "pwd",
            Self::Otp => "otp",
            Self::Hwk => "hwk",
            Self::Fed => "fed",
            Self::Email => "email",
            Self::Mfa => "mfa",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "pwd" => Self::Pwd,
            "otp" => Self::Otp,
            "hwk" => Self::Hwk,
            "fed" => Self::Fed,
            "email" => Self::Email,
            "mfa" => Self::Mfa,
            _ => return None,
        })
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The methods of one sign-in, as a set (a byte: copied, never allocated, since the session
/// check reads it on every request). Stored as the names joined by spaces (`"pwd otp mfa"`), in
/// the order of [`AuthMethod::ALL`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amr(u8);

impl AuthMethod {
    /// Every method, in the order `amr` lists them.
    pub const ALL: [Self; 6] = [
        Self::Pwd,
        Self::Hwk,
        Self::Fed,
        Self::Email,
        Self::Otp,
        Self::Mfa,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl Amr {
    pub fn one(method: AuthMethod) -> Self {
        Self(method.bit())
    }

    /// This set with `method` added.
    pub fn with(self, method: AuthMethod) -> Self {
        Self(self.0 | method.bit())
    }

    pub fn contains(self, method: AuthMethod) -> bool {
        self.0 & method.bit() != 0
    }

    pub fn methods(self) -> impl Iterator<Item = AuthMethod> {
        AuthMethod::ALL
            .into_iter()
            .filter(move |m| self.contains(*m))
    }

    /// The names, for the `amr` claim and the session answer.
    pub fn names(self) -> Vec<&'static str> {
        self.methods().map(AuthMethod::as_str).collect()
    }

    /// The stored form: names joined by spaces.
    pub fn to_stored(self) -> String {
        self.names().join(" ")
    }

    /// Reads the stored form; an unknown name (a later version's) is skipped, and a session
    /// stored before `amr` existed reads as empty.
    pub fn from_stored(raw: &str) -> Self {
        raw.split_whitespace()
            .filter_map(AuthMethod::parse)
            .fold(Self::default(), Self::with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_reads_back() {
        let amr = Amr::one(AuthMethod::Mfa)
            .with(AuthMethod::Pwd)
            .with(AuthMethod::Otp);
        assert_eq!(amr.to_stored(), "pwd otp mfa");
        assert_eq!(Amr::from_stored(&amr.to_stored()), amr);
        assert_eq!(Amr::from_stored(""), Amr::default());
        assert_eq!(Amr::from_stored("pwd future"), Amr::one(AuthMethod::Pwd));
        // The first factor comes first, whatever order it was added in.
        let fed = Amr::one(AuthMethod::Otp)
            .with(AuthMethod::Fed)
            .with(AuthMethod::Mfa);
        assert_eq!(fed.names(), ["fed", "otp", "mfa"]);
    }
}
