//! Sessions: starting one for a signed-in user, with its first access token and its refresh
//! token, and refreshing it (rotation, reuse detection, grace). The HTTP answer that carries them is the routes' concern (`routes::answers`).

use time::OffsetDateTime;
use uuid::Uuid;

use secrecy::ExposeSecret;

use crate::{
    auth::{jwt::IssuedToken, ClientIp},
    clock,
    domain::{Amr, User, UserId},
    error::ApiError,
    mail::{notices::notify, Notice},
    state::AppState,
    store::{RefreshState, SessionRecord, StoreError, TokenKind},
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

/// Creates a session record for `user` (who proved who they are at `auth_time`, by `amr`),
/// lasting as long as its refresh token, and signs its first access token. Every sign-in path
/// starts its session here: the record is stored only at the credential version the sign-in
/// checked.
pub async fn start(
    state: &AppState,
    origin: &Origin,
    user: &User,
    auth_time: OffsetDateTime,
    amr: Amr,
) -> Result<Started, ApiError> {
    let now = clock::now();
    let user_agent = origin.user_agent.clone();
    let ip = origin.ip;
    let refresh_expires_at = now + state.settings.sessions.refresh_ttl;
    let record = SessionRecord {
        id: Uuid::new_v4(),
        user_id: user.id,
        created_at: now,
        last_used_at: now,
        expires_at: refresh_expires_at,
        auth_time,
        amr,
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

/// Trades a refresh token for its session's next tokens. Every use rotates the token; a spent one
/// presented again means it leaked (or a client is confused): the whole session is revoked,
/// except within the grace period after its rotation, where the caller gets the live successor
/// again, so two tabs refreshing at once both end up holding the one live token.
/// `authorize(session)` runs as soon as the token's session is known (`None`: it is not), before
/// anything is written: the caller's CSRF rule for a refresh by cookie.
pub async fn refresh(
    state: &AppState,
    token: &str,
    authorize: impl Fn(Option<Uuid>) -> Result<(), ApiError>,
) -> Result<(User, Started), ApiError> {
    let invalid = || ApiError::InvalidRefresh;
    if token.is_empty() || token.len() > 256 {
        authorize(None)?;
        return Err(invalid());
    }
    let hash = crate::random::token_hash(token);
    let now = clock::now();
    let Some((session, refresh)) = state.store.session_by_refresh(&hash, now).await? else {
        // Not live anywhere: spent long ago (reuse), or never ours.
        if let Some(spent) = state
            .store
            .peek_token(TokenKind::RefreshSpent, &hash, now)
            .await?
        {
            if let Ok(id) = spent.data.parse::<Uuid>() {
                authorize(Some(id))?;
                revoke_reused(state, id, spent.user_id).await?;
                return Err(ApiError::RefreshReused);
            }
        }
        authorize(None)?;
        return Err(invalid());
    };
    authorize(Some(session.id))?;
    let user = state
        .store
        .user_by_id(session.user_id)
        .await?
        .ok_or_else(invalid)?;

    if refresh.hash.as_deref() == Some(hash.as_str()) {
        let (next, next_hash) = new_refresh_token();
        let sealed = state
            .vault
            .seal_secret(&successor_context(&session), &next)
            .map_err(ApiError::internal)?;
        if state
            .store
            .rotate_refresh(session.user_id, session.id, &hash, &next_hash, &sealed, now)
            .await?
        {
            state
                .store
                .put_token(
                    TokenKind::RefreshSpent,
                    &hash,
                    Some(user.id),
                    &session.id.to_string(),
                    session.expires_at,
                )
                .await
                .or_else(|e| match e {
                    crate::store::StoreError::Conflict => Ok(()),
                    e => Err(e),
                })?;
            log::info!("user {} refreshed session {}", user.id, session.id);
            return next_tokens(state, user, &session, next, now);
        }
        // Another request rotated this token a moment ago: take what it made, within grace.
        let Some((session, refresh)) = state.store.session_by_refresh(&hash, now).await? else {
            return Err(invalid());
        };
        return within_grace(state, user, &session, &refresh, &hash, now).await;
    }
    within_grace(state, user, &session, &refresh, &hash, now).await
}

fn successor_context(session: &SessionRecord) -> String {
    format!("refresh-successor|{}|{}", session.user_id, session.id)
}

/// A spent token came back: its successor again within the grace period, else revocation.
async fn within_grace(
    state: &AppState,
    user: User,
    session: &SessionRecord,
    refresh: &RefreshState,
    hash: &str,
    now: OffsetDateTime,
) -> Result<(User, Started), ApiError> {
    let grace = state.settings.sessions.refresh_grace;
    let in_grace = refresh.previous_hash.as_deref() == Some(hash)
        && refresh
            .rotated_at
            .is_some_and(|at| now - at <= grace && !grace.is_zero());
    if let (true, Some(sealed)) = (in_grace, &refresh.successor) {
        if let Ok(next) = state.vault.open_secret(&successor_context(session), sealed) {
            log::info!(
                "user {}: refresh within grace for session {}",
                user.id,
                session.id
            );
            return next_tokens(state, user, session, next.expose_secret().to_owned(), now);
        }
    }
    revoke_reused(state, session.id, Some(user.id)).await?;
    Err(ApiError::RefreshReused)
}

/// Ends the session of a reused token and tells its user, once per session: only the call that
/// actually ended it mails (later replays, or concurrent ones, find it ended already).
async fn revoke_reused(
    state: &AppState,
    session: Uuid,
    user: Option<UserId>,
) -> Result<(), ApiError> {
    let ended = match user {
        Some(user) => state.store.end_user_session(user, session).await?,
        None => state.store.end_session(session).await?,
    };
    if !ended {
        return Ok(());
    }
    log::warn!("a spent refresh token was presented again: session {session} revoked");
    if let Some(user) = user {
        if let Some(user) = state.store.user_by_id(user).await? {
            notify(&state.mailer, &user, Notice::SessionRevoked);
        }
    }
    Ok(())
}

/// The session's next access token, with the refresh token that goes with it.
fn next_tokens(
    state: &AppState,
    user: User,
    session: &SessionRecord,
    refresh: String,
    now: OffsetDateTime,
) -> Result<(User, Started), ApiError> {
    let started = Started {
        issued: state.jwt.issue(&user, session, now)?,
        refresh,
        refresh_expires_at: session.expires_at,
    };
    Ok((user, started))
}
