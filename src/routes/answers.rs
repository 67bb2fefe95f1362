//! The answers that carry a new session, shared by every sign-in route: the `{user, session}`
//! body, and the cookies of a browser client.

use actix_web::{http::StatusCode, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::UserBody;
use crate::{
    auth::ClientIp,
    clock::{self, rfc3339},
    domain::{Amr, AuthMethod, User},
    error::ApiError,
    mfa::Challenge,
    sessions::{Origin, Started},
    signin::{self, SignIn},
    state::AppState,
};

/// Where the request of a sign-in comes from.
pub fn origin(req: &HttpRequest, ip: ClientIp) -> Origin {
    Origin {
        ip,
        user_agent: req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect()),
    }
}

/// Where a client keeps its tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// Cookies only: the session cookie, and the refresh token as an HttpOnly cookie scoped to
    /// `/api/auth/refresh`; the body carries no refresh token, so page scripts never see it.
    #[default]
    Browser,
    /// No cookies: the body carries the access and the refresh token.
    App,
}

/// An access token and when it expires.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "accessToken": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
    "tokenType": "Bearer",
    "expiresAt": "2026-11-25T16:16:03Z",
    "expiresIn": 3600
}))]
pub struct SessionBody {
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(schema_with = bearer_schema)]
    pub token_type: &'static str,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Seconds until `expiresAt`.
    pub expires_in: u64,
    /// For `app` clients only: the refresh token (single use, rotated by `POST /api/auth/refresh`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// For `app` clients only: when the refresh token (and the session) expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub refresh_expires_at: Option<String>,
}

/// A signed-in user and their new session.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"user": {"id": "2f0c6f5e-8d1c-4b9a-9c57-1b1f0f6a3e21", "name": "Ada Lovelace", "email": "ada@example.com", "image": null, "providers": ["credentials"], "emailVerified": null, "mfaEnabled": false, "createdAt": "2026-11-25T15:16:03.123Z", "updatedAt": "2026-11-25T15:16:03.123Z"}, "session": {"accessToken": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...", "tokenType": "Bearer", "expiresAt": "2026-11-25T16:16:03Z", "expiresIn": 3600}}))]
pub struct AuthResponse {
    pub user: UserBody,
    pub session: SessionBody,
}

/// A sign-in waiting for its second factor: no session, no cookie, no refresh token yet. Send
/// `mfaToken` with a code to `POST /api/auth/mfa/verify`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"mfaRequired": true, "mfaToken": "Q2hhbGxlbmdlVG9rZW5FeGFtcGxlMTIzNDU2Nzg5MGFi", "methods": ["totp", "recoveryCode"], "expiresAt": "2026-11-25T15:21:03Z"}))]
pub struct MfaRequired {
    /// Always `true`: what tells this answer from a session.
    #[schema(schema_with = true_schema)]
    pub mfa_required: bool,
    /// Single use, valid 5 minutes; five wrong codes spend it.
    pub mfa_token: String,
    /// The second factors the user can give.
    #[schema(schema_with = methods_schema)]
    pub methods: [&'static str; 2],
    #[schema(format = DateTime)]
    pub expires_at: String,
}

fn true_schema() -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Boolean)
        .enum_values(Some([true]))
        .description(Some("Always `true`."))
}

fn methods_schema() -> utoipa::openapi::schema::ArrayBuilder {
    utoipa::openapi::schema::ArrayBuilder::new().items(super::string_enum(
        &["totp", "recoveryCode"],
        "`totp`: a 6-digit code of the authenticator app; `recoveryCode`: an unused recovery code.",
    ))
}

/// What a sign-in answers: a session, or (for a user with MFA on) the wait for a second factor.
/// Tell them apart by `mfaRequired`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum SignInResponse {
    Session(Box<AuthResponse>),
    MfaRequired(MfaRequired),
}

/// The answer of a sign-in that waits for its second factor.
pub fn mfa_required(challenge: &Challenge) -> MfaRequired {
    MfaRequired {
        mfa_required: true,
        mfa_token: challenge.token.clone(),
        methods: ["totp", "recoveryCode"],
        expires_at: rfc3339(challenge.expires_at),
    }
}

fn bearer_schema() -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["Bearer"]))
        .description(Some("Always `Bearer`."))
}

/// The `{user, session}` body; the refresh token appears in it for apps only.
pub fn auth_response(user: &User, started: &Started, client: ClientKind) -> AuthResponse {
    let app = client == ClientKind::App;
    AuthResponse {
        user: UserBody::from(user),
        session: SessionBody {
            access_token: started.issued.token.clone(),
            token_type: "Bearer",
            expires_at: rfc3339(started.issued.expires_at),
            expires_in: started.issued.expires_in,
            refresh_token: app.then(|| started.refresh.clone()),
            refresh_expires_at: app.then(|| rfc3339(started.refresh_expires_at)),
        },
    }
}

/// The session and refresh cookies of a browser client.
pub fn session_cookies(
    state: &AppState,
    started: &Started,
) -> [actix_web::cookie::Cookie<'static>; 2] {
    let left = (started.refresh_expires_at - clock::now()).whole_milliseconds();
    let refresh_secs = ((left + 999) / 1000).max(0) as u64;
    [
        state
            .cookies
            .session(started.issued.token.clone(), started.issued.expires_in),
        state.cookies.refresh(started.refresh.clone(), refresh_secs),
    ]
}

/// Answers with a session: cookies for browsers, tokens in the body for apps.
pub fn session_answer(
    state: &AppState,
    user: &User,
    started: &Started,
    client: ClientKind,
    status: StatusCode,
) -> HttpResponse {
    let mut res = HttpResponse::build(status);
    if client == ClientKind::Browser {
        for cookie in session_cookies(state, started) {
            res.cookie(cookie);
        }
    }
    res.json(auth_response(user, started, client))
}

/// A 200 answer that no cache may keep (secrets, one-time challenges).
pub fn no_store() -> actix_web::HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    builder.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    builder
}

/// Answers a sign-in: the session (with `status`), or 200 with the `mfaRequired` body.
pub fn sign_in_answer(
    state: &AppState,
    user: &User,
    signed_in: &SignIn,
    client: ClientKind,
    status: StatusCode,
) -> HttpResponse {
    match signed_in {
        SignIn::Started(started) => session_answer(state, user, started, client, status),
        SignIn::MfaRequired(challenge) => no_store().json(mfa_required(challenge)),
    }
}

/// Signs `user` in now, with a password.
pub async fn start_session(
    state: &AppState,
    req: &HttpRequest,
    ip: ClientIp,
    user: &User,
    client: ClientKind,
    status: StatusCode,
) -> Result<HttpResponse, ApiError> {
    let amr = Amr::one(AuthMethod::Pwd);
    let signed_in = signin::sign_in(state, &origin(req, ip), user, clock::now(), amr).await?;
    Ok(sign_in_answer(state, user, &signed_in, client, status))
}
