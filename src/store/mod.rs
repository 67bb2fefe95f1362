//! Storage: small traits per capability, one implementation per database.
//!
//! Stores hold hashes and sealed blobs, never plaintext secrets. Every call is bounded by the
//! configured store timeout and answers `StoreError::Unavailable` when the database is away.

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Amr, AuthProvider, Email, KeyProvider, SealedKey, User, UserId, UserName};

pub mod mongo;
pub mod sqlite;

pub use mongo::MongoStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the write.
    #[error("conflict with an existing record")]
    Conflict,
    #[error("record not found")]
    NotFound,
    /// The database did not answer within the store timeout, or is unreachable.
    #[error("store unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    #[error("store error: {0:#}")]
    Other(anyhow::Error),
}

/// A user about to be created.
pub struct NewUser {
    pub id: UserId,
    pub name: UserName,
    pub email: Email,
    pub image: Option<String>,
    pub password_hash: Option<String>,
    pub created_at: OffsetDateTime,
}

impl NewUser {
    /// The user as the store holds it right after creating it (linked to `linked`, if any): the
    /// one way every backend turns a new user into a `User`.
    pub fn into_created(self, linked: Option<AuthProvider>) -> User {
        User {
            id: self.id,
            name: self.name,
            email: self.email,
            image: self.image,
            password_hash: self.password_hash,
            linked: linked.into_iter().collect(),
            email_verified: None,
            credential_version: 0,
            mfa_enabled: false,
            passkeys: 0,
            created_at: self.created_at,
            updated_at: self.created_at,
        }
    }
}

/// A change of a user's password.
#[derive(Debug, Clone, Copy, Default)]
pub struct CredentialChange<'a> {
    /// The new bcrypt hash; `None` removes the password.
    pub hash: Option<&'a str>,
    /// The session that asked for the change: it stays, if it is still live.
    pub keep: Option<Uuid>,
    /// Only while the credential is still at this version (the one a step-up check verified).
    pub expected_version: Option<u64>,
}

/// A profile change; `None` leaves the field as it is.
#[derive(Default)]
pub struct ProfileUpdate {
    pub name: Option<UserName>,
    /// `Some(None)` clears the image.
    pub image: Option<Option<String>>,
}

/// One sign-in: the access token's `sid` names it; ending it revokes its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: Uuid,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    pub last_used_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// When the user last proved who they are (password or provider).
    pub auth_time: OffsetDateTime,
    /// How they proved it; kept across refreshes.
    pub amr: Amr,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// How many live sessions one user may have: starting one more ends the oldest (by creation).
/// It bounds what the session check reads on MongoDB, where a user's sessions live in their
/// document, and what one account can pile up by signing in again and again.
pub const MAX_LIVE_SESSIONS: usize = 100;

/// A session's refresh-token state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshState {
    /// Hash of the live refresh token.
    pub hash: Option<String>,
    /// Hash of the token it replaced, for the reuse grace period.
    pub previous_hash: Option<String>,
    pub rotated_at: Option<OffsetDateTime>,
    /// The live token, sealed, handed again to a late caller of the previous one within grace.
    pub successor: Option<SealedKey>,
}

/// Events recorded under one key since some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventWindow {
    pub count: u64,
    pub oldest: Option<OffsetDateTime>,
}

/// One rate-limit event to record under a key, if its window has room.
#[derive(Debug, Clone, Copy)]
pub struct EventSlot {
    /// Names the event, so that it can be released again.
    pub id: Uuid,
    pub at: OffsetDateTime,
    /// The window counts the events strictly after this.
    pub since: OffsetDateTime,
    /// At most this many events in the window, the new one included.
    pub max: u32,
    /// Kept (at least) until then.
    pub expires_at: OffsetDateTime,
}

/// What reserving a slot found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// The event is recorded.
    Yes,
    /// The window is full and nothing was recorded; `oldest` is its oldest event.
    Full { oldest: Option<OffsetDateTime> },
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates the user; `Conflict` when the email is taken (decided by the unique index).
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError>;
    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError>;
    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError>;
    /// Applies the update and bumps `updatedAt`; `None` when the user is gone.
    async fn update_profile(
        &self,
        id: UserId,
        update: ProfileUpdate,
        now: OffsetDateTime,
    ) -> Result<Option<User>, StoreError>;
    /// Changes the credential, all in one step: replaces (or removes) the password hash, moves
    /// the credential version, ends every session of the user but `change.keep`, and spends
    /// every outstanding password-reset token. False (and nothing changed) when the user is gone,
    /// the version is no longer `change.expected_version`, or the session to keep has ended.
    async fn change_password(
        &self,
        id: UserId,
        change: CredentialChange<'_>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Replaces the hash with one of the same password (a cost upgrade) only while the credential
    /// version is still `version`, so a password changed meanwhile is never overwritten. True
    /// when replaced.
    async fn rehash_password(
        &self,
        id: UserId,
        hash: &str,
        version: u64,
    ) -> Result<bool, StoreError>;
    /// Deletes the user with everything that belongs to them; false when already gone, or (with
    /// `expected_version`) when their credential changed since it was checked.
    async fn delete_user(
        &self,
        id: UserId,
        expected_version: Option<u64>,
    ) -> Result<bool, StoreError>;
    /// Records that the user proved their address at `at` (kept if already set); false when the
    /// user is gone.
    async fn mark_email_verified(&self, id: UserId, at: OffsetDateTime)
        -> Result<bool, StoreError>;
    /// The first proof of the user's address, in one step: records it at `at` and removes every
    /// OAuth identity and passkey attached while the address was unproven, but `keep` (the
    /// identity that proves it, if one does), and with `remove_password` the password too. If
    /// anything was removed, the credential version moves and every session ends. `None` when
    /// the address was proven already or the user is gone; else what was removed (`Credentials`
    /// for the password, `Passkey` for passkeys), sorted.
    async fn prove_email(
        &self,
        id: UserId,
        at: OffsetDateTime,
        keep: Option<(AuthProvider, &str)>,
        remove_password: bool,
    ) -> Result<Option<Vec<AuthProvider>>, StoreError>;
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Creates a session; past [`MAX_LIVE_SESSIONS`] the user's oldest sessions end.
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    /// The live session `id` of `user`; an expired one, or one of another user, is reported as
    /// absent. This is the check of every signed-in request: one read, by key.
    async fn session(
        &self,
        user: UserId,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<SessionRecord>, StoreError>;
    /// The same check together with the user it belongs to, still in one read (the answer of
    /// `GET /api/auth/session`).
    async fn session_with_user(
        &self,
        user: UserId,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<(SessionRecord, User)>, StoreError>;
    /// Ends one session; false when there was none.
    async fn end_session(&self, id: Uuid) -> Result<bool, StoreError>;
    /// Ends every session of the user but `except`; returns how many ended.
    async fn end_user_sessions(
        &self,
        user: UserId,
        except: Option<Uuid>,
    ) -> Result<u64, StoreError>;
    /// Creates a session whose refresh token hashes to `refresh_hash`, only while the user's
    /// credential version is still `credential_version` (the one the sign-in checked); `Conflict`
    /// when the user is gone or their credential changed meanwhile.
    async fn create_session_with_refresh(
        &self,
        session: &SessionRecord,
        refresh_hash: &str,
        credential_version: u64,
    ) -> Result<(), StoreError>;
    /// The live session whose current or previous refresh token hashes to `hash`.
    async fn session_by_refresh(
        &self,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(SessionRecord, RefreshState)>, StoreError>;
    /// Replaces the refresh token only if `old_hash` is still the live one (so concurrent
    /// refreshes make one successor, never two chains); records `old_hash`, `now` and the sealed
    /// successor for the grace period, and marks the session used. True when rotated.
    async fn rotate_refresh(
        &self,
        user: UserId,
        session: Uuid,
        old_hash: &str,
        new_hash: &str,
        successor: &SealedKey,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// The user's live sessions, newest first.
    async fn user_sessions(
        &self,
        user: UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionRecord>, StoreError>;
    /// Ends one session of the user; false when the user has no such session.
    async fn end_user_session(&self, user: UserId, session: Uuid) -> Result<bool, StoreError>;
}

#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Records the event under `key` only if fewer than `slot.max` events are there after
    /// `slot.since`, in one atomic step: of N concurrent callers at most `max` get `Yes`, and a
    /// caller that gets `Full` adds nothing.
    async fn reserve_event(&self, key: &str, slot: EventSlot) -> Result<Reserved, StoreError>;
    /// Forgets the one event `id` under `key` (a reservation that turned out not to count).
    async fn release_event(&self, key: &str, id: Uuid) -> Result<(), StoreError>;
    /// Counts the events under `key` strictly after `since` (MongoDB keeps only as many of a
    /// key's newest events as its limit allows, so a count never exceeds the limit).
    async fn count_events(
        &self,
        key: &str,
        since: OffsetDateTime,
    ) -> Result<EventWindow, StoreError>;
    /// Forgets every event under `key`.
    async fn clear_events(&self, key: &str) -> Result<(), StoreError>;
}

/// One stored API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub provider: KeyProvider,
    pub sealed: SealedKey,
    pub updated_at: OffsetDateTime,
}

/// A change to one API key: `Some` sets it, `None` removes it.
pub type KeyChange = (KeyProvider, Option<SealedKey>);

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// The user's stored keys, in `KeyProvider::ALL` order.
    async fn api_keys(&self, user: UserId) -> Result<Vec<StoredKey>, StoreError>;
    /// Applies every change at once, stamping the changed keys with `now`; false when the user
    /// is gone.
    async fn update_api_keys(
        &self,
        user: UserId,
        changes: &[KeyChange],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Replaces a key's seal only if it still carries `expected_nonce` (so a concurrent change by
    /// the user wins); keeps its `updated_at`. True when replaced.
    async fn reseal_api_key(
        &self,
        user: UserId,
        provider: KeyProvider,
        expected_nonce: &[u8],
        sealed: &SealedKey,
    ) -> Result<bool, StoreError>;
    /// Users that have keys, ordered by id, starting after `after`, at most `limit` of them.
    async fn api_keys_page(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<(UserId, Vec<StoredKey>)>, StoreError>;
    /// How many keys are stored in all.
    async fn count_api_keys(&self) -> Result<u64, StoreError>;
}

#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// The user an OAuth identity is linked to.
    async fn user_by_identity(
        &self,
        provider: AuthProvider,
        account_id: &str,
    ) -> Result<Option<User>, StoreError>;
    /// Creates a user already linked to an identity, all or nothing; `Conflict` when the email
    /// or the identity is taken.
    async fn create_user_with_identity(
        &self,
        user: NewUser,
        provider: AuthProvider,
        account_id: &str,
    ) -> Result<User, StoreError>;
    /// Links an identity to a user; `Conflict` when it is linked already (to anyone) or the user
    /// has another identity of that provider; false when the user is gone.
    async fn link_identity(
        &self,
        user: UserId,
        provider: AuthProvider,
        account_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Unlinks the user's identity of `provider`; false when there was none.
    async fn unlink_identity(
        &self,
        user: UserId,
        provider: AuthProvider,
    ) -> Result<bool, StoreError>;
}

/// A user's TOTP authenticator and recovery codes, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MfaRecord {
    /// The confirmed secret, sealed; `None` while MFA is off.
    pub secret: Option<SealedKey>,
    /// A secret enrolled but not confirmed yet, sealed.
    pub pending: Option<SealedKey>,
    /// The last TOTP time step accepted (steps at or before it are refused: no replay).
    pub last_step: Option<i64>,
    /// How many unused recovery codes are left.
    pub recovery_left: u32,
}

/// Which of a user's TOTP seals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpSeal {
    Confirmed,
    Pending,
}

/// Turning MFA on.
#[derive(Debug, Clone, Copy)]
pub struct MfaEnable<'a> {
    /// The pending secret confirmed (its nonce): a secret enrolled again meanwhile is not it.
    pub pending_nonce: &'a [u8],
    /// The time step of the confirming code, accepted once like any other.
    pub step: i64,
    /// The HMACs of the new recovery codes.
    pub recovery: &'a [String],
    /// The session that confirmed: it stays (if still live); every other session ends.
    pub keep: Uuid,
}

#[async_trait]
pub trait MfaStore: Send + Sync {
    /// The user's TOTP record; `None` when the user has none (never enrolled, or turned off).
    async fn mfa(&self, user: UserId) -> Result<Option<MfaRecord>, StoreError>;
    /// Stores a pending secret, replacing one there; false (nothing stored) when MFA is on or the
    /// user is gone.
    async fn set_pending_totp(&self, user: UserId, sealed: &SealedKey) -> Result<bool, StoreError>;
    /// Turns MFA on in one step: the pending secret becomes the secret, `step` the last accepted,
    /// the recovery codes are replaced, the credential version moves (a sign-in in flight with
    /// one factor starts no session) and every session but `keep` ends. False (nothing changed)
    /// when that secret is no longer pending, MFA is on, or `keep` has ended.
    async fn enable_mfa(&self, user: UserId, enable: MfaEnable<'_>) -> Result<bool, StoreError>;
    /// Turns MFA off: removes the secret, a pending one and the recovery codes. False when it was
    /// off.
    async fn disable_mfa(&self, user: UserId) -> Result<bool, StoreError>;
    /// Records `step` as the last accepted TOTP step only if MFA is on and `step` is later than
    /// the last accepted; false otherwise (a replay, or a concurrent use of the same code). Of N
    /// concurrent callers with one step, exactly one gets true.
    async fn accept_totp_step(&self, user: UserId, step: i64) -> Result<bool, StoreError>;
    /// Spends the unused recovery code whose HMAC is `hash`: how many are left, or `None` when it
    /// is not one (unknown, spent, or MFA off). Of concurrent callers at most one spends it.
    async fn spend_recovery_code(
        &self,
        user: UserId,
        hash: &str,
    ) -> Result<Option<u32>, StoreError>;
    /// Replaces every recovery code while MFA is on; false when it is off.
    async fn replace_recovery_codes(
        &self,
        user: UserId,
        hashes: &[String],
    ) -> Result<bool, StoreError>;
    /// Users with a sealed TOTP secret (confirmed or pending), ordered by id, after `after`, at
    /// most `limit` of them: for key rotation.
    async fn totp_page(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<(UserId, Vec<(TotpSeal, SealedKey)>)>, StoreError>;
    /// Replaces one seal only if it still carries `expected_nonce`. True when replaced.
    async fn reseal_totp(
        &self,
        user: UserId,
        which: TotpSeal,
        expected_nonce: &[u8],
        sealed: &SealedKey,
    ) -> Result<bool, StoreError>;
    /// How many TOTP seals are stored in all.
    async fn count_totp(&self) -> Result<u64, StoreError>;
}

/// One passkey (a WebAuthn credential) as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRecord {
    /// Ours, shown to clients; the credential ID is the authenticator's.
    pub id: Uuid,
    pub user_id: UserId,
    pub credential_id: Vec<u8>,
    pub name: String,
    /// The credential as the relying-party library keeps it (its public key, algorithm, flags
    /// and transports at registration), JSON. `counter` and `backup_state` below are the
    /// live values.
    pub credential: String,
    /// The authenticator's sign counter at the last use (0: it keeps none).
    pub counter: u32,
    pub backup_eligible: bool,
    pub backup_state: bool,
    /// Hints such as `internal`, `hybrid`, `usb`.
    pub transports: Vec<String>,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
}

/// A sign-in with a passkey, to record: only while the counter is still `previous_counter`.
#[derive(Debug, Clone, Copy)]
pub struct PasskeyUse {
    pub previous_counter: u32,
    pub counter: u32,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub at: OffsetDateTime,
}

/// What deleting a passkey found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasskeyDeletion {
    Deleted,
    /// The user has no passkey of that id.
    NotFound,
    /// It is the user's last way to sign in; nothing was deleted.
    LastSignInMethod,
}

#[async_trait]
pub trait PasskeyStore: Send + Sync {
    /// The user's WebAuthn user handle, storing `candidate` as it if they have none yet (one per
    /// user, never changed); `None` when the user is gone.
    async fn webauthn_handle(
        &self,
        user: UserId,
        candidate: [u8; 16],
    ) -> Result<Option<[u8; 16]>, StoreError>;
    /// Adds a passkey; `Conflict` when its credential ID is registered already (to anyone);
    /// false when the user is gone.
    async fn add_passkey(&self, passkey: &PasskeyRecord) -> Result<bool, StoreError>;
    /// The user's passkeys, oldest first.
    async fn passkeys(&self, user: UserId) -> Result<Vec<PasskeyRecord>, StoreError>;
    /// The passkey with this credential ID, with its user's WebAuthn handle.
    async fn passkey_by_credential(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<(PasskeyRecord, Option<[u8; 16]>)>, StoreError>;
    /// Renames one of the user's passkeys; `None` when they have no such passkey.
    async fn rename_passkey(
        &self,
        user: UserId,
        id: Uuid,
        name: &str,
    ) -> Result<Option<PasskeyRecord>, StoreError>;
    /// Deletes one of the user's passkeys unless it is their last way to sign in (no password,
    /// no linked identity, no other passkey), decided in one step with the delete; the
    /// credential version moves (a sign-in in flight with it starts no session).
    async fn delete_passkey(&self, user: UserId, id: Uuid) -> Result<PasskeyDeletion, StoreError>;
    /// Records a sign-in with the passkey: the new counter, backup flags and last use, only
    /// while its counter is still `used.previous_counter` (so of two concurrent sign-ins with one
    /// counter value only one counts). True when recorded.
    async fn record_passkey_use(&self, id: Uuid, used: PasskeyUse) -> Result<bool, StoreError>;
}

/// What a single-use secret is for: a token of one kind never passes for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An OAuth `state`, spent at the callback.
    OauthState,
    /// An app's one-time code from an OAuth callback, spent by `POST /api/auth/token`.
    OauthCode,
    /// A mailed address-verification link.
    VerifyEmail,
    /// A mailed password-reset link; a credential change spends every one of the user.
    PasswordReset,
    /// A spent refresh token, remembered to recognise its reuse.
    RefreshSpent,
    /// The second step of a sign-in: an `mfaToken`, spent by `POST /api/auth/mfa/verify`.
    MfaPending,
    /// A passkey registration under way (the ceremony's state), bound to its user.
    PasskeyRegistration,
    /// A passkey sign-in under way (the ceremony's state).
    PasskeySignIn,
    /// An emailed sign-in link (of an account, or of an address that has none yet).
    EmailSignIn,
}

impl TokenKind {
    /// The name the stores keep.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OauthState => "oauth_state",
            Self::OauthCode => "oauth_code",
            Self::VerifyEmail => "verify_email",
            Self::PasswordReset => "password_reset",
            Self::RefreshSpent => "refresh_spent",
            Self::MfaPending => "mfa_pending",
            Self::PasskeyRegistration => "passkey_registration",
            Self::PasskeySignIn => "passkey_signin",
            Self::EmailSignIn => "email_signin",
        }
    }
}

/// A single-use secret's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub user_id: Option<UserId>,
    pub data: String,
    pub expires_at: OffsetDateTime,
}

#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a single-use secret by its hash; `Conflict` when that hash is already stored.
    async fn put_token(
        &self,
        kind: TokenKind,
        hash: &str,
        user: Option<UserId>,
        data: &str,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Reads a secret without spending it; `None` when absent or expired at `now`.
    async fn peek_token(
        &self,
        kind: TokenKind,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError>;
    /// Spends a secret: removes it and returns it, unless absent or expired at `now`. Of several
    /// concurrent callers at most one gets it.
    async fn take_token(
        &self,
        kind: TokenKind,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError>;
}

/// Everything the service keeps, behind one object.
#[async_trait]
pub trait Store:
    UserStore
    + SessionStore
    + RateLimitStore
    + KeyStore
    + IdentityStore
    + TokenStore
    + MfaStore
    + PasskeyStore
{
    /// Round-trips to the database; `Unavailable` when it does not answer.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The backend's name for logs and metrics.
    fn backend(&self) -> &'static str;
}
