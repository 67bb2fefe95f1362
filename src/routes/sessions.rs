//! Long-lived sign-in: the refresh endpoint (its rules are `sessions::refresh`) and the device
//! list.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    answers::{session_answer, AuthResponse, ClientKind},
    json::OptionalJson,
    problems,
};
use crate::{
    auth::{cookies::REFRESH_COOKIE, csrf, CredentialBudget, CurrentUser},
    clock::{self, rfc3339},
    error::ApiError,
    sessions,
    state::AppState,
};

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"refreshToken": "mX0c5y3l8N2qQ7vB1rT4kD9fH6jS0aW2eU8gZ5pL1oC", "client": "app"}))]
pub struct RefreshRequest {
    /// The refresh token, for app clients; browsers send the refresh cookie instead (with
    /// `X-CSRF-Token`).
    #[serde(default)]
    #[schema(max_length = 256)]
    pub refresh_token: Option<String>,
    /// Where the new tokens go, for a token sent in the body: default `app`. A refresh by the
    /// refresh cookie always answers as `browser`, whatever this says.
    #[serde(default)]
    pub client: Option<ClientKind>,
}

/// One signed-in device.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"id": "6b1f7c2e-3a4d-4e5f-8a9b-0c1d2e3f4a5b", "createdAt": "2026-11-25T15:16:03.123Z", "lastUsedAt": "2026-11-25T15:46:03.123Z", "expiresAt": "2026-12-25T15:16:03.123Z", "userAgent": "Mozilla/5.0", "ip": "203.0.113.7", "current": true}))]
pub struct SessionItem {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The last sign-in or refresh.
    #[schema(format = DateTime)]
    pub last_used_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    #[schema(required = true)]
    pub user_agent: Option<String>,
    #[schema(required = true)]
    pub ip: Option<String>,
    /// Whether this is the session of the request.
    pub current: bool,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"sessions": [{"id": "6b1f7c2e-3a4d-4e5f-8a9b-0c1d2e3f4a5b", "createdAt": "2026-11-25T15:16:03.123Z", "lastUsedAt": "2026-11-25T15:46:03.123Z", "expiresAt": "2026-12-25T15:16:03.123Z", "userAgent": "Mozilla/5.0", "ip": "203.0.113.7", "current": true}]}))]
pub struct SessionList {
    pub sessions: Vec<SessionItem>,
}

/// Exchange a refresh token for a new access token and a new refresh token.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "sessions",
    request_body(content = Option<RefreshRequest>, description = "App clients send the token; browsers send an empty body with the refresh cookie and X-CSRF-Token"),
    responses(
        (status = 200, description = "A new access token and a new refresh token; the old one is spent (browsers get both as cookies)", body = AuthResponse),
        problems::JsonBody, problems::CookieWrite, problems::Limited, problems::Stored,
        (status = 401, description = "`invalid_refresh` (unknown, expired, or the session ended) or `refresh_reused` (a spent token came back: the whole session is revoked)"),
    ))]
pub async fn refresh(
    state: web::Data<AppState>,
    req: HttpRequest,
    OptionalJson(body): OptionalJson<RefreshRequest>,
    _budget: CredentialBudget,
) -> Result<HttpResponse, ApiError> {
    // A refresh by the cookie always answers as a browser: the new refresh token goes only
    // into the cookie, never into a body that page scripts can read.
    let (token, client, by_cookie) = match body.refresh_token {
        Some(token) => (token, body.client.unwrap_or(ClientKind::App), false),
        None => {
            let cookie = req.cookie(REFRESH_COOKIE).ok_or(ApiError::InvalidRefresh)?;
            (cookie.value().to_owned(), ClientKind::Browser, true)
        }
    };
    // A cookie write like any other: the double-submit CSRF token is required, issued without
    // a session or for the session this refresh token belongs to.
    let csrf_ok = |session: Option<Uuid>| -> Result<(), ApiError> {
        if !by_cookie {
            return Ok(());
        }
        let header = req
            .headers()
            .get(csrf::HEADER)
            .and_then(|v| v.to_str().ok());
        let csrf_cookie = req.cookie(state.cookies.csrf_name);
        state.csrf.check(
            header,
            csrf_cookie.as_ref().map(|c| c.value()),
            &[None, session],
        )
    };
    let (user, started) = sessions::refresh(&state, &token, csrf_ok).await?;
    Ok(session_answer(
        &state,
        &user,
        &started,
        client,
        StatusCode::OK,
    ))
}

/// The signed-in user's live sessions.
#[utoipa::path(get, path = "/api/user/sessions", tag = "sessions",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Live sessions, newest first; `current` marks this one", body = SessionList),
        problems::SignedIn, problems::Stored,
    ))]
pub async fn list_sessions(
    state: web::Data<AppState>,
    current: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    let sessions = state.store.user_sessions(current.id, clock::now()).await?;
    Ok(HttpResponse::Ok().json(SessionList {
        sessions: sessions
            .into_iter()
            .map(|s| SessionItem {
                id: s.id.to_string(),
                created_at: rfc3339(s.created_at),
                last_used_at: rfc3339(s.last_used_at),
                expires_at: rfc3339(s.expires_at),
                user_agent: s.user_agent,
                ip: s.ip,
                current: s.id == current.session_id,
            })
            .collect(),
    }))
}

/// End one of the signed-in user's sessions; its tokens stop working at once.
#[utoipa::path(delete, path = "/api/user/sessions/{id}", tag = "sessions",
    security(("bearer" = []), ("cookie" = [])),
    params(("id" = String, Path, format = Uuid, description = "A session id from GET /api/user/sessions")),
    responses(
        (status = 204, description = "The session ended"),
        problems::SignedIn, problems::CookieWrite, problems::Stored,
        (status = 404, description = "`not_found` (also for another user's session)"),
    ))]
pub async fn end_session(
    state: web::Data<AppState>,
    current: CurrentUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    if !state.store.end_user_session(current.id, id).await? {
        return Err(ApiError::NotFound);
    }
    log::info!("user {} ended session {id}", current.id);
    Ok(HttpResponse::NoContent().finish())
}
