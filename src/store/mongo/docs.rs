//! The documents the MongoDB store keeps, as serde types. Field names are the stored ones; an
//! optional field reads as absent when it is missing (documents written before it existed), null,
//! or of another BSON type.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context};
use mongodb::bson::{self, spec::BinarySubtype, Binary, Bson, DateTime};
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{bdt, binary, odt};
use crate::{
    domain::{Amr, AuthProvider, Email, KeyProvider, SealedKey, User, UserId, UserName},
    store::{
        EventWindow, MfaRecord, NewUser, PasskeyRecord, RefreshState, SessionRecord, StoreError,
        StoredKey, TokenKind, TokenRecord, TotpSeal, MAX_LIVE_SESSIONS,
    },
};

/// Reads an optional field: `None` when absent, null, or of another BSON type than `T`'s.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(Option::<Bson>::deserialize(deserializer)?.and_then(|b| bson::from_bson(b).ok()))
}

/// A value as BSON, to be set by an update.
pub(super) fn to_bson(value: &impl Serialize) -> Result<Bson, StoreError> {
    bson::to_bson(value).map_err(|e| StoreError::Other(anyhow!(e).context("writing a document")))
}

/// A stored credential version (documents written before it existed have none: 0).
fn version(stored: Option<i64>) -> u64 {
    stored.map_or(0, |v| v as u64)
}

/// The providers a stored list names (names no provider has are skipped).
fn providers(stored: &[String]) -> impl Iterator<Item = AuthProvider> + '_ {
    stored.iter().filter_map(|p| AuthProvider::parse(p))
}

/// The bytes of a generic binary (another subtype is not ours).
fn generic(b: Binary) -> Option<Vec<u8>> {
    (b.subtype == BinarySubtype::Generic).then_some(b.bytes)
}

/// A `users` document. Its session entries and API keys are set by updates, so a new user's
/// document has neither.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UserDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub email: String,
    pub name: String,
    #[serde(default, deserialize_with = "lenient")]
    pub image: Option<String>,
    /// The bcrypt hash.
    #[serde(default, deserialize_with = "lenient")]
    pub password: Option<String>,
    #[serde(default)]
    pub providers: Vec<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub email_verified: Option<DateTime>,
    #[serde(default, deserialize_with = "lenient")]
    pub cred_version: Option<i64>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    #[serde(default, skip_serializing_if = "Sessions::is_empty")]
    pub sessions: Sessions,
    #[serde(default, skip_serializing_if = "ApiKeys::is_empty")]
    pub api_keys: ApiKeys,
    /// The TOTP authenticator and recovery codes; set by updates. Read strictly: a document
    /// that does not read as one fails, rather than reading as MFA off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<MfaDoc>,
    /// How many documents of `passkeys` are the user's; moved in the transaction that adds or
    /// deletes one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub passkey_count: Option<i64>,
}

/// A user document's `mfa`: MFA is on exactly when `secret` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MfaDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SealedDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<SealedDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<i64>,
    /// HMACs of the unused recovery codes.
    #[serde(default)]
    pub recovery: Vec<String>,
}

impl MfaDoc {
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// The record, unless a seal's binary is not generic.
    pub fn record(self) -> Result<MfaRecord, StoreError> {
        let seal = |s: Option<SealedDoc>| -> Result<Option<SealedKey>, StoreError> {
            s.map(|s| {
                s.sealed().ok_or_else(|| {
                    StoreError::Other(anyhow!("reading a TOTP seal: a binary is not generic"))
                })
            })
            .transpose()
        };
        Ok(MfaRecord {
            secret: seal(self.secret)?,
            pending: seal(self.pending)?,
            last_step: self.last_step,
            recovery_left: self.recovery.len() as u32,
        })
    }

    /// The seals there are, for rotation.
    pub fn seals(self) -> Result<Vec<(TotpSeal, SealedKey)>, StoreError> {
        let record = self.record()?;
        Ok([
            record.secret.map(|s| (TotpSeal::Confirmed, s)),
            record.pending.map(|s| (TotpSeal::Pending, s)),
        ]
        .into_iter()
        .flatten()
        .collect())
    }
}

/// The `_id` and `mfa` of a user document (a projection).
#[derive(Debug, Deserialize)]
pub(super) struct UserMfa {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub mfa: Option<MfaDoc>,
}

impl UserDoc {
    /// The document of a new user, linked to `provider`, if any.
    pub fn new(user: &NewUser, provider: Option<AuthProvider>) -> Self {
        let at = bdt(user.created_at);
        Self {
            id: user.id.to_string(),
            email: user.email.as_str().to_owned(),
            name: user.name.as_str().to_owned(),
            image: user.image.clone(),
            password: user.password_hash.clone(),
            providers: provider.iter().map(|p| p.as_str().to_owned()).collect(),
            email_verified: None,
            cred_version: Some(0),
            created_at: at,
            updated_at: at,
            sessions: Sessions::default(),
            api_keys: ApiKeys::default(),
            mfa: None,
            passkey_count: None,
        }
    }
}

impl TryFrom<UserDoc> for User {
    type Error = StoreError;

    fn try_from(d: UserDoc) -> Result<Self, StoreError> {
        let read = move || -> anyhow::Result<User> {
            let id: UserId = d.id.parse().context("user _id")?;
            // One rule for stored addresses on both backends (they were parsed when written).
            let email = Email::from_stored(d.email).map_err(|_| anyhow!("stored email"))?;
            let name = UserName::parse(&d.name).map_err(|_| anyhow!("stored name"))?;
            let mut linked: Vec<AuthProvider> = providers(&d.providers).collect();
            linked.sort();
            linked.dedup();
            Ok(User {
                id,
                name,
                email,
                image: d.image,
                password_hash: d.password,
                linked,
                email_verified: d.email_verified.map(odt),
                credential_version: version(d.cred_version),
                mfa_enabled: d.mfa.as_ref().is_some_and(MfaDoc::enabled),
                passkeys: d.passkey_count.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
                created_at: odt(d.created_at),
                updated_at: odt(d.updated_at),
            })
        };
        read().map_err(|e| StoreError::Other(e.context("reading a user document")))
    }
}

/// What the session and credential changes read of a user document (under a projection, or the
/// whole document on the session check): its profile is not needed there.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UserParts {
    #[serde(default)]
    pub sessions: Sessions,
    #[serde(default, deserialize_with = "lenient")]
    pub cred_version: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    pub email_verified: Option<DateTime>,
    #[serde(default)]
    pub providers: Vec<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub password: Option<String>,
    #[serde(default)]
    pub mfa: Option<MfaDoc>,
}

impl UserParts {
    pub fn credential_version(&self) -> u64 {
        version(self.cred_version)
    }

    /// The providers the document lists.
    pub fn providers(&self) -> impl Iterator<Item = AuthProvider> + '_ {
        providers(&self.providers)
    }
}

/// A session's entry `sessions.<id>` in its user's document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionEntry {
    pub created_at: DateTime,
    pub last_used_at: DateTime,
    pub expires_at: DateTime,
    pub auth_time: DateTime,
    /// How the user signed in (`Amr`'s stored form); absent in entries written before it.
    #[serde(default, deserialize_with = "lenient")]
    pub amr: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub user_agent: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub ip: Option<String>,
}

impl SessionEntry {
    pub fn new(s: &SessionRecord) -> Self {
        Self {
            created_at: bdt(s.created_at),
            last_used_at: bdt(s.last_used_at),
            expires_at: bdt(s.expires_at),
            auth_time: bdt(s.auth_time),
            amr: Some(s.amr.to_stored()),
            user_agent: s.user_agent.clone(),
            ip: s.ip.clone(),
        }
    }

    pub fn record(&self, user: UserId, id: Uuid) -> SessionRecord {
        SessionRecord {
            id,
            user_id: user,
            created_at: odt(self.created_at),
            last_used_at: odt(self.last_used_at),
            expires_at: odt(self.expires_at),
            auth_time: odt(self.auth_time),
            amr: Amr::from_stored(self.amr.as_deref().unwrap_or_default()),
            user_agent: self.user_agent.clone(),
            ip: self.ip.clone(),
        }
    }
}

/// A user document's session entries, keyed by session id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct Sessions(BTreeMap<String, SessionEntry>);

impl Sessions {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries by id (entries whose key is no id are skipped).
    pub fn iter(&self) -> impl Iterator<Item = (Uuid, &SessionEntry)> {
        self.0
            .iter()
            .filter_map(|(key, entry)| Some((key.parse().ok()?, entry)))
    }

    /// The live session `id`, found under its key as the store writes it.
    pub fn live(&self, user: UserId, id: Uuid, now: OffsetDateTime) -> Option<SessionRecord> {
        let mut key = [0u8; 36];
        let key = id.hyphenated().encode_lower(&mut key);
        let session = self.0.get(key)?.record(user, id);
        (session.expires_at > now).then_some(session)
    }

    /// The ids of the entries that end as a session starts at `now`: those that expired, and the
    /// oldest live ones past the cap (one place is kept for the new session).
    pub fn ended_at(&self, now: OffsetDateTime) -> Vec<Uuid> {
        let mut ended = Vec::new();
        let mut live = Vec::new();
        for (id, e) in self.iter() {
            if odt(e.expires_at) > now {
                live.push((odt(e.created_at), id));
            } else {
                ended.push(id);
            }
        }
        if live.len() >= MAX_LIVE_SESSIONS {
            // Newest first, as SQLite orders them (creation, then id, both descending).
            live.sort_by(|a, b| b.cmp(a));
            ended.extend(live.drain(MAX_LIVE_SESSIONS - 1..).map(|(_, id)| id));
        }
        ended
    }
}

/// A sealed secret: an API key's seal, or a refresh token's sealed successor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SealedDoc {
    pub key_id: String,
    pub nonce: Binary,
    pub ciphertext: Binary,
}

impl SealedDoc {
    pub fn new(sealed: &SealedKey) -> Self {
        Self {
            key_id: sealed.key_id.clone(),
            nonce: binary(&sealed.nonce),
            ciphertext: binary(&sealed.ciphertext),
        }
    }

    /// The seal, unless a binary of it is not generic.
    fn sealed(self) -> Option<SealedKey> {
        Some(SealedKey {
            key_id: self.key_id,
            nonce: generic(self.nonce)?,
            ciphertext: generic(self.ciphertext)?,
        })
    }
}

/// An API key, `apiKeys.<provider>` in its user's document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct KeyEntry {
    pub key_id: String,
    pub nonce: Binary,
    pub ciphertext: Binary,
    pub updated_at: DateTime,
}

impl KeyEntry {
    pub fn new(sealed: &SealedKey, now: OffsetDateTime) -> Self {
        Self {
            key_id: sealed.key_id.clone(),
            nonce: binary(&sealed.nonce),
            ciphertext: binary(&sealed.ciphertext),
            updated_at: bdt(now),
        }
    }
}

/// A user document's API keys, keyed by provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct ApiKeys(BTreeMap<String, KeyEntry>);

impl ApiKeys {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many entries there are (whichever provider they name).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The keys, in `KeyProvider::ALL` order.
    pub fn stored(self) -> Result<Vec<StoredKey>, StoreError> {
        let mut keys = self.0;
        let mut out = Vec::with_capacity(keys.len());
        for provider in KeyProvider::ALL {
            let Some(entry) = keys.remove(provider.as_str()) else {
                continue;
            };
            let updated_at = odt(entry.updated_at);
            let sealed = SealedDoc {
                key_id: entry.key_id,
                nonce: entry.nonce,
                ciphertext: entry.ciphertext,
            }
            .sealed()
            .ok_or_else(|| {
                StoreError::Other(anyhow!("reading a stored key: a binary is not generic"))
            })?;
            out.push(StoredKey {
                provider,
                sealed,
                updated_at,
            });
        }
        Ok(out)
    }
}

/// The `_id` and API keys of a user document (a projection).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UserKeys {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub api_keys: ApiKeys,
}

/// A `sessions` record: the session as it started, and its refresh-token state, found by hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub user_id: String,
    pub created_at: DateTime,
    pub last_used_at: DateTime,
    pub expires_at: DateTime,
    pub auth_time: DateTime,
    #[serde(default, deserialize_with = "lenient")]
    pub user_agent: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub ip: Option<String>,
    /// Records of sessions started before refresh tokens existed have none.
    #[serde(default, deserialize_with = "lenient")]
    pub refresh_hash: Option<String>,
    /// The rotation's fields, set by the first rotation.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub previous_hash: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub rotated_at: Option<DateTime>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub successor: Option<SealedDoc>,
}

impl SessionDoc {
    pub fn new(s: &SessionRecord, refresh_hash: Option<&str>) -> Self {
        let entry = SessionEntry::new(s);
        Self {
            id: s.id.to_string(),
            user_id: s.user_id.to_string(),
            created_at: entry.created_at,
            last_used_at: entry.last_used_at,
            expires_at: entry.expires_at,
            auth_time: entry.auth_time,
            user_agent: entry.user_agent,
            ip: entry.ip,
            refresh_hash: refresh_hash.map(str::to_owned),
            previous_hash: None,
            rotated_at: None,
            successor: None,
        }
    }

    /// The user and the session the record names.
    pub fn ids(&self) -> Result<(UserId, Uuid), StoreError> {
        match (self.user_id.parse(), self.id.parse()) {
            (Ok(user), Ok(id)) => Ok((user, id)),
            _ => Err(StoreError::Other(anyhow!(
                "a session document has a bad id"
            ))),
        }
    }

    /// The refresh-token state (a successor whose seal is not ours reads as none).
    pub fn refresh_state(self) -> RefreshState {
        RefreshState {
            hash: self.refresh_hash,
            previous_hash: self.previous_hash,
            rotated_at: self.rotated_at.map(odt),
            successor: self.successor.and_then(SealedDoc::sealed),
        }
    }
}

/// The user a `sessions` record belongs to (a projection).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionOwner {
    #[serde(default, deserialize_with = "lenient")]
    user_id: Option<String>,
}

impl SessionOwner {
    pub fn user(&self) -> Option<UserId> {
        self.user_id.as_deref()?.parse().ok()
    }
}

/// A `passkeys` document: one WebAuthn credential of a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PasskeyDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub user_id: String,
    pub credential_id: Binary,
    pub name: String,
    pub credential: String,
    pub counter: i64,
    pub backup_eligible: bool,
    pub backup_state: bool,
    #[serde(default)]
    pub transports: Vec<String>,
    pub created_at: DateTime,
    #[serde(default, deserialize_with = "lenient")]
    pub last_used_at: Option<DateTime>,
}

impl PasskeyDoc {
    pub fn new(p: &PasskeyRecord) -> Self {
        Self {
            id: p.id.to_string(),
            user_id: p.user_id.to_string(),
            credential_id: binary(&p.credential_id),
            name: p.name.clone(),
            credential: p.credential.clone(),
            counter: i64::from(p.counter),
            backup_eligible: p.backup_eligible,
            backup_state: p.backup_state,
            transports: p.transports.clone(),
            created_at: bdt(p.created_at),
            last_used_at: p.last_used_at.map(bdt),
        }
    }
}

impl TryFrom<PasskeyDoc> for PasskeyRecord {
    type Error = StoreError;

    fn try_from(d: PasskeyDoc) -> Result<Self, StoreError> {
        let read = move || -> anyhow::Result<PasskeyRecord> {
            Ok(PasskeyRecord {
                id: d.id.parse().context("passkey _id")?,
                user_id: d.user_id.parse().context("passkey userId")?,
                credential_id: generic(d.credential_id).context("passkey credentialId")?,
                name: d.name,
                credential: d.credential,
                counter: u32::try_from(d.counter).context("passkey counter")?,
                backup_eligible: d.backup_eligible,
                backup_state: d.backup_state,
                transports: d.transports,
                created_at: odt(d.created_at),
                last_used_at: d.last_used_at.map(odt),
            })
        };
        read().map_err(|e| StoreError::Other(e.context("reading a passkey document")))
    }
}

/// What a passkey sign-in reads of its user's document.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UserHandle {
    #[serde(default, deserialize_with = "lenient")]
    pub webauthn_handle: Option<Binary>,
}

impl UserHandle {
    pub fn handle(self) -> Option<[u8; 16]> {
        let bytes = generic(self.webauthn_handle?)?;
        <[u8; 16]>::try_from(bytes.as_slice()).ok()
    }
}

/// An `accounts` document: an OAuth identity linked to a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AccountDoc {
    pub provider: String,
    pub provider_account_id: String,
    pub user_id: String,
    pub created_at: DateTime,
}

impl AccountDoc {
    pub fn new(user: &str, provider: AuthProvider, account_id: &str, at: OffsetDateTime) -> Self {
        Self {
            provider: provider.as_str().to_owned(),
            provider_account_id: account_id.to_owned(),
            user_id: user.to_owned(),
            created_at: bdt(at),
        }
    }
}

/// A `tokens` document: a single-use secret, `_id` `<kind>:<hash>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TokenDoc {
    #[serde(rename = "_id")]
    pub id: String,
    /// Tokens written before they carried their kind have none (their `_id` still has it).
    #[serde(default, deserialize_with = "lenient")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub data: Option<String>,
    pub expires_at: DateTime,
}

impl TokenDoc {
    /// The `_id` of the token of `kind` hashing to `hash`.
    pub fn id(kind: TokenKind, hash: &str) -> String {
        format!("{}:{hash}", kind.as_str())
    }

    pub fn new(
        kind: TokenKind,
        hash: &str,
        user: Option<UserId>,
        data: &str,
        expires_at: OffsetDateTime,
    ) -> Self {
        Self {
            id: Self::id(kind, hash),
            kind: Some(kind.as_str().to_owned()),
            user_id: user.map(|u| u.to_string()),
            data: Some(data.to_owned()),
            expires_at: bdt(expires_at),
        }
    }

    /// The record (a user id that does not parse reads as none).
    pub fn record(self) -> TokenRecord {
        TokenRecord {
            user_id: self.user_id.and_then(|u| u.parse().ok()),
            data: self.data.unwrap_or_default(),
            expires_at: odt(self.expires_at),
        }
    }
}

/// A `rate_windows` document: the newest events of one key (at most its limit, oldest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RateWindowDoc {
    #[serde(rename = "_id")]
    pub key: String,
    #[serde(default)]
    pub ev: Vec<RateEvent>,
    pub expires_at: DateTime,
}

impl RateWindowDoc {
    /// The events strictly after `since`.
    pub fn window(&self, since: OffsetDateTime) -> EventWindow {
        let mut window = EventWindow::default();
        for t in self.ev.iter().map(|e| odt(e.t)).filter(|t| *t > since) {
            window.count += 1;
            window.oldest = Some(window.oldest.map_or(t, |o| o.min(t)));
        }
        window
    }
}

/// One event of a rate window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct RateEvent {
    pub t: DateTime,
    pub id: String,
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{doc, Document};

    use super::*;
    use crate::clock::from_millis;

    const USER: &str = "6f1c2a3e-9b4d-4c1a-8e2f-0a1b2c3d4e5f";
    const SESSION: &str = "0e8b7c6d-5a4f-4e3d-9c2b-1a0f9e8d7c6b";

    fn at(ms: i64) -> DateTime {
        DateTime::from_millis(ms)
    }

    /// Reads a document the way the driver does: from its bytes.
    fn read<T: DeserializeOwned>(d: &Document) -> T {
        bson::from_slice(&bson::to_vec(d).expect("document encodes")).expect("document reads")
    }

    fn write(value: &impl Serialize) -> Document {
        bson::to_document(value).expect("document writes")
    }

    /// A session entry as the store sets it at `sessions.<id>`.
    fn entry_literal() -> Document {
        doc! {
            "createdAt": at(1_000),
            "lastUsedAt": at(2_000),
            "expiresAt": at(9_000),
            "authTime": at(1_000),
            "userAgent": "curl/8",
            "ip": Bson::Null,
        }
    }

    /// A user document as it is written on sign-up, then linked, verified, signed in and given
    /// a key by the store's updates.
    fn user_literal() -> Document {
        doc! {
            "_id": USER,
            "email": "ada@example.test",
            "name": "Ada",
            "image": Bson::Null,
            "password": "$2b$12$hash",
            "providers": ["github", "twitter", "github"],
            "emailVerified": at(1_500),
            "credVersion": 3i64,
            "createdAt": at(1_000),
            "updatedAt": at(1_500),
            "sessions": {SESSION: entry_literal(), "not-an-id": entry_literal()},
            "apiKeys": {"oumi": {
                "keyId": "k1",
                "nonce": binary(&[1, 2, 3]),
                "ciphertext": binary(&[4, 5]),
                "updatedAt": at(1_200),
            }},
        }
    }

    fn user_from(d: &Document) -> User {
        User::try_from(read::<UserDoc>(d)).expect("user converts")
    }

    #[test]
    fn a_user_document_of_the_hand_built_layout_reads_as_the_same_user() {
        let user = user_from(&user_literal());
        assert_eq!(user.id, USER.parse::<UserId>().unwrap());
        assert_eq!(user.email.as_str(), "ada@example.test");
        assert_eq!(user.name.as_str(), "Ada");
        assert_eq!(user.image, None);
        assert_eq!(user.password_hash.as_deref(), Some("$2b$12$hash"));
        // Sorted, without duplicates, unknown providers skipped.
        assert_eq!(user.linked, vec![AuthProvider::Github]);
        assert_eq!(user.email_verified, Some(from_millis(1_500)));
        assert_eq!(user.credential_version, 3);
        assert_eq!(user.created_at, from_millis(1_000));
        assert_eq!(user.updated_at, from_millis(1_500));
    }

    #[test]
    fn a_user_document_from_before_credential_versions_and_proofs_reads_at_version_0() {
        let mut d = user_literal();
        d.remove("credVersion");
        d.remove("emailVerified");
        d.remove("sessions");
        d.remove("apiKeys");
        let user = user_from(&d);
        assert_eq!(user.credential_version, 0);
        assert_eq!(user.email_verified, None);
        assert_eq!(user.linked, vec![AuthProvider::Github]);
        let parts: UserParts = read(&d);
        assert_eq!(parts.credential_version(), 0);
        assert!(parts.sessions.is_empty());
    }

    #[test]
    fn optional_fields_of_another_type_read_as_absent_as_they_did() {
        let mut d = user_literal();
        d.insert("image", 7i32);
        d.insert("password", Bson::Null);
        d.insert("emailVerified", "yesterday");
        d.insert("credVersion", 2i32);
        let user = user_from(&d);
        assert_eq!(user.image, None);
        assert_eq!(user.password_hash, None);
        assert_eq!(user.email_verified, None);
        // A 32-bit version counts; any other number type reads as 0.
        assert_eq!(user.credential_version, 2);
        d.insert("credVersion", 2.0f64);
        assert_eq!(user_from(&d).credential_version, 0);
    }

    #[test]
    fn a_user_document_with_a_bad_field_does_not_read() {
        for (field, value) in [
            ("_id", Bson::String("nope".into())),
            ("email", Bson::String("no-at-sign".into())),
            ("name", Bson::String("  ".into())),
        ] {
            let mut d = user_literal();
            d.insert(field, value);
            assert!(User::try_from(read::<UserDoc>(&d)).is_err(), "{field}");
        }
        let mut d = user_literal();
        d.remove("createdAt");
        let missing: Result<UserDoc, _> = bson::from_slice(&bson::to_vec(&d).unwrap());
        assert!(missing.is_err());
    }

    #[test]
    fn the_parts_of_a_user_document_hold_its_sessions_and_keys() {
        let parts: UserParts = read(&user_literal());
        let user = USER.parse().unwrap();
        let id: Uuid = SESSION.parse().unwrap();
        assert_eq!(parts.credential_version(), 3);
        assert!(parts.email_verified.is_some());
        assert_eq!(parts.password.as_deref(), Some("$2b$12$hash"));
        assert_eq!(
            parts.providers().collect::<Vec<_>>(),
            [AuthProvider::Github; 2]
        );
        // The key that is no id is skipped.
        assert_eq!(
            parts.sessions.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            [id]
        );
        let expected = SessionRecord {
            id,
            user_id: user,
            created_at: from_millis(1_000),
            last_used_at: from_millis(2_000),
            expires_at: from_millis(9_000),
            auth_time: from_millis(1_000),
            // An entry written before `amr` existed.
            amr: Amr::default(),
            user_agent: Some("curl/8".into()),
            ip: None,
        };
        assert_eq!(
            parts.sessions.live(user, id, from_millis(8_999)),
            Some(expected)
        );
        assert_eq!(parts.sessions.live(user, id, from_millis(9_000)), None);
        assert_eq!(
            parts.sessions.live(user, Uuid::new_v4(), from_millis(0)),
            None
        );
        assert_eq!(
            parts.sessions.ended_at(from_millis(8_999)),
            Vec::<Uuid>::new()
        );
        assert_eq!(parts.sessions.ended_at(from_millis(9_000)), [id]);

        let keys: UserKeys = read(&user_literal());
        assert_eq!(keys.id, USER);
        assert_eq!(keys.api_keys.len(), 1);
        assert_eq!(
            keys.api_keys.stored().unwrap(),
            [StoredKey {
                provider: KeyProvider::Oumi,
                sealed: SealedKey {
                    key_id: "k1".into(),
                    nonce: vec![1, 2, 3],
                    ciphertext: vec![4, 5],
                },
                updated_at: from_millis(1_200),
            }]
        );
        let mut d = user_literal();
        d.insert(
            "apiKeys",
            doc! {"oumi": {
                "keyId": "k1",
                "nonce": Binary {subtype: BinarySubtype::Uuid, bytes: vec![1]},
                "ciphertext": binary(&[4, 5]),
                "updatedAt": at(1_200),
            }},
        );
        assert!(read::<UserKeys>(&d).api_keys.stored().is_err());
    }

    fn new_user() -> NewUser {
        NewUser {
            id: USER.parse().unwrap(),
            name: UserName::parse("Ada").unwrap(),
            email: Email::parse("ada@example.test").unwrap(),
            image: Some("https://img.test/a.png".into()),
            password_hash: None,
            created_at: from_millis(1_000),
        }
    }

    fn assert_same_user(a: &User, b: &User) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.name, b.name);
        assert_eq!(a.email.as_str(), b.email.as_str());
        assert_eq!(a.image, b.image);
        assert_eq!(a.password_hash, b.password_hash);
        assert_eq!(a.linked, b.linked);
        assert_eq!(a.email_verified, b.email_verified);
        assert_eq!(a.credential_version, b.credential_version);
        assert_eq!(a.created_at, b.created_at);
        assert_eq!(a.updated_at, b.updated_at);
    }

    #[test]
    fn documents_are_written_in_the_hand_built_layout() {
        let signed_up = doc! {
            "_id": USER,
            "email": "ada@example.test",
            "name": "Ada",
            "image": "https://img.test/a.png",
            "password": Bson::Null,
            "providers": ["google"],
            "emailVerified": Bson::Null,
            "credVersion": 0i64,
            "createdAt": at(1_000),
            "updatedAt": at(1_000),
        };
        let written = write(&UserDoc::new(&new_user(), Some(AuthProvider::Google)));
        assert_eq!(written, signed_up);
        assert_eq!(
            written.keys().collect::<Vec<_>>(),
            signed_up.keys().collect::<Vec<_>>()
        );
        let created = new_user().into_created(Some(AuthProvider::Google));
        assert_same_user(&user_from(&signed_up), &created);
        let mut old = signed_up.clone();
        old.remove("credVersion");
        assert_same_user(&user_from(&old), &created);

        let session = SessionRecord {
            id: SESSION.parse().unwrap(),
            user_id: USER.parse().unwrap(),
            created_at: from_millis(1_000),
            last_used_at: from_millis(2_000),
            expires_at: from_millis(9_000),
            auth_time: from_millis(1_000),
            amr: Amr::one(crate::domain::AuthMethod::Pwd),
            user_agent: Some("curl/8".into()),
            ip: None,
        };
        let mut entry = entry_literal();
        entry.insert("amr", "pwd");
        assert_eq!(write(&SessionEntry::new(&session)), entry);
        let mut record = entry_literal();
        record.insert("_id", SESSION);
        record.insert("userId", USER);
        record.insert("refreshHash", "h1");
        assert_eq!(write(&SessionDoc::new(&session, Some("h1"))), record);
        record.insert("refreshHash", Bson::Null);
        assert_eq!(write(&SessionDoc::new(&session, None)), record);

        let sealed = SealedKey {
            key_id: "k1".into(),
            nonce: vec![1, 2, 3],
            ciphertext: vec![4, 5],
        };
        let seal = doc! {"keyId": "k1", "nonce": binary(&[1, 2, 3]), "ciphertext": binary(&[4, 5])};
        assert_eq!(write(&SealedDoc::new(&sealed)), seal);
        let mut key = seal.clone();
        key.insert("updatedAt", at(1_200));
        assert_eq!(write(&KeyEntry::new(&sealed, from_millis(1_200))), key);

        assert_eq!(
            write(&AccountDoc::new(
                USER,
                AuthProvider::Github,
                "42",
                from_millis(1_000)
            )),
            doc! {
                "provider": "github",
                "providerAccountId": "42",
                "userId": USER,
                "createdAt": at(1_000),
            }
        );
        assert_eq!(
            write(&TokenDoc::new(
                TokenKind::VerifyEmail,
                "abc",
                None,
                "{}",
                from_millis(5_000)
            )),
            doc! {
                "_id": "verify_email:abc",
                "kind": "verify_email",
                "userId": Bson::Null,
                "data": "{}",
                "expiresAt": at(5_000),
            }
        );
        let window = RateWindowDoc {
            key: "login:ada".into(),
            ev: vec![RateEvent {
                t: at(1_000),
                id: SESSION.into(),
            }],
            expires_at: at(5_000),
        };
        assert_eq!(
            write(&window),
            doc! {
                "_id": "login:ada",
                "ev": [{"t": at(1_000), "id": SESSION}],
                "expiresAt": at(5_000),
            }
        );
    }

    #[test]
    fn a_rotated_session_record_reads_its_refresh_state() {
        let mut d = entry_literal();
        d.insert("_id", SESSION);
        d.insert("userId", USER);
        d.insert("refreshHash", "h2");
        d.insert("previousHash", "h1");
        d.insert("rotatedAt", at(3_000));
        d.insert(
            "successor",
            doc! {"keyId": "k1", "nonce": binary(&[1]), "ciphertext": binary(&[2])},
        );
        let record: SessionDoc = read(&d);
        assert_eq!(
            record.ids().unwrap(),
            (USER.parse().unwrap(), SESSION.parse().unwrap())
        );
        assert_eq!(
            record.refresh_state(),
            RefreshState {
                hash: Some("h2".into()),
                previous_hash: Some("h1".into()),
                rotated_at: Some(from_millis(3_000)),
                successor: Some(SealedKey {
                    key_id: "k1".into(),
                    nonce: vec![1],
                    ciphertext: vec![2],
                }),
            }
        );
        // A record from before refresh tokens, and a successor that is not ours.
        d.remove("refreshHash");
        d.insert("successor", doc! {"keyId": "k1"});
        let state = read::<SessionDoc>(&d).refresh_state();
        assert_eq!(state.hash, None);
        assert_eq!(state.successor, None);
        d.insert("userId", "nope");
        assert!(read::<SessionDoc>(&d).ids().is_err());
        assert_eq!(read::<SessionOwner>(&d).user(), None);
        assert_eq!(
            read::<SessionOwner>(&doc! {"_id": SESSION, "userId": USER}).user(),
            USER.parse().ok()
        );
    }

    #[test]
    fn tokens_and_windows_read_as_written_and_as_older_ones_were() {
        let token: TokenDoc = read(&doc! {
            "_id": "password_reset:abc",
            "userId": USER,
            "data": "x",
            "expiresAt": at(5_000),
        });
        assert_eq!(token.kind, None);
        assert_eq!(
            token.record(),
            TokenRecord {
                user_id: USER.parse().ok(),
                data: "x".into(),
                expires_at: from_millis(5_000),
            }
        );
        let token: TokenDoc = read(&doc! {
            "_id": "oauth_state:abc",
            "kind": "oauth_state",
            "userId": "not-a-user",
            "expiresAt": at(5_000),
        });
        assert_eq!(token.record().user_id, None);

        let window: RateWindowDoc = read(&doc! {
            "_id": "login:ada",
            "ev": [{"t": at(1_000), "id": "a"}, {"t": at(3_000), "id": "b"}],
            "expiresAt": at(5_000),
        });
        assert_eq!(
            window.window(from_millis(999)),
            EventWindow {
                count: 2,
                oldest: Some(from_millis(1_000)),
            }
        );
        assert_eq!(
            window.window(from_millis(1_000)),
            EventWindow {
                count: 1,
                oldest: Some(from_millis(3_000)),
            }
        );
        let emptied: RateWindowDoc = read(&doc! {"_id": "k", "ev": [], "expiresAt": at(1)});
        assert_eq!(emptied.window(from_millis(0)), EventWindow::default());
    }
}
