//! Sessions: starting one for a signed-in user, with its first access token and its refresh
//! token. The HTTP answer that carries them is the routes' concern (`routes::answers`).

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    auth::{jwt::IssuedToken, ClientIp},
    clock,
    domain::User,
    error::ApiError,
    state::AppState,
    store::{SessionRecord, StoreError},
};

/// A new session: its first access token and its refresh token.
pub struct Started {
    pub issued: IssuedToken,
    pub refresh: String,
    pub refresh_expires_at: OffsetDateTime,
}

/// A new refresh token and the hash the store keeps.
pub fn new_refresh_token() -> (String, String) {
    let token = crate::random::token();
    let hash = crate::random::token_hash(&token);
    (token, hash)
}

/// Where a sign-in comes from, as the device list shows it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub ip: ClientIp,
    /// The first 256 characters of the `User-Agent` header.
    pub user_agent: Option<String>,
}

/// Creates a session record for `user` (who proved who they are at `auth_time`), lasting as long
/// as its refresh token, and signs its first access token. Every sign-in path starts its session
/// here: the record is stored only at the credential version the sign-in checked.
pub async fn start(
    state: &AppState,
    origin: &Origin,
    user: &User,
    auth_time: OffsetDateTime,
) -> Result<Started, ApiError> {
    let now = clock::now();
    let user_agent = origin.user_agent.clone();
    let ip = origin.ip;
    let refresh_expires_at = now + state.settings.refresh_ttl;
    let record = SessionRecord {
        id: Uuid::new_v4(),
        user_id: user.id,
        created_at: now,
        last_used_at: now,
        expires_at: refresh_expires_at,
        auth_time,
        user_agent,
        ip: Some(ip.0.to_string()),
    };
    let (refresh, hash) = new_refresh_token();
    match state
        .store
        .create_session_with_refresh(&record, &hash, user.credential_version)
        .await
    {
        // The user was deleted while signing in, or their credential changed since it was
        // checked (a password change, a reset, a takeover clean-up): no session starts.
        Err(StoreError::Conflict) => return Err(ApiError::Unauthenticated),
        other => other?,
    }
    Ok(Started {
        issued: state.jwt.issue(user, &record, now)?,
        refresh,
        refresh_expires_at,
    })
}
