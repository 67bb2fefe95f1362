use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Email, UserName};

/// A user's stable identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(Uuid);

impl UserId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for UserId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl FromStr for UserId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A way to sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthProvider {
    Credentials,
    Github,
    Google,
    /// One or more passkeys (WebAuthn credentials).
    Passkey,
    /// An account made by an emailed sign-in link (kept as an identity of the address).
    Email,
}

impl AuthProvider {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Credentials => "credentials",
            Self::Github => "github",
            Self::Google => "google",
            Self::Passkey => "passkey",
            Self::Email => "email",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "credentials" => Some(Self::Credentials),
            "github" => Some(Self::Github),
            "google" => Some(Self::Google),
            "passkey" => Some(Self::Passkey),
            "email" => Some(Self::Email),
            _ => None,
        }
    }
}

/// A stored user, with the bcrypt hash when the user has a password.
#[derive(Clone)]
pub struct User {
    pub id: UserId,
    pub name: UserName,
    pub email: Email,
    pub image: Option<String>,
    pub password_hash: Option<String>,
    /// Linked OAuth identities' providers, sorted, without duplicates.
    pub linked: Vec<AuthProvider>,
    /// When the address was proven to belong to the user, if it was.
    pub email_verified: Option<OffsetDateTime>,
    /// Moves on every change of the user's credentials (password set, changed or reset, sign-in
    /// methods removed): a session may start only with the version its credential was checked
    /// against, so a sign-in in flight during such a change starts none.
    pub credential_version: u64,
    /// A confirmed TOTP authenticator: every sign-in but a passkey's asks for a second factor.
    pub mfa_enabled: bool,
    /// How many passkeys the user has registered.
    pub passkeys: u32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl User {
    /// The ways this user can sign in: `credentials` when a password is set, then linked
    /// providers, then `passkey` when there is at least one.
    pub fn providers(&self) -> Vec<AuthProvider> {
        let mut providers = Vec::with_capacity(2 + self.linked.len());
        if self.password_hash.is_some() {
            providers.push(AuthProvider::Credentials);
        }
        providers.extend(self.linked.iter().copied());
        if self.passkeys > 0 {
            providers.push(AuthProvider::Passkey);
        }
        providers
    }

    /// How many separate ways to sign in the user has (each passkey counts): removing one
    /// when this is 1 would lock them out.
    pub fn sign_in_methods(&self) -> usize {
        usize::from(self.password_hash.is_some()) + self.linked.len() + self.passkeys as usize
    }

    pub fn has_password(&self) -> bool {
        self.password_hash.is_some()
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
