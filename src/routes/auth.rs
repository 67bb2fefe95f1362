//! `/api/auth/*`: sign-up, sign-in, the session, sign-out, CSRF tokens, providers.

use std::collections::BTreeMap;

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    answers::{start_session, AuthResponse, ClientKind, SignInResponse},
    json::{ApiJson, OptionalJson},
    problems, UserBody,
};

use crate::{
    accounts,
    auth::{CredentialBudget, CurrentUser, SignedIn},
    clock::rfc3339,
    domain::{Email, FieldErrors, Password, UserName},
    error::ApiError,
    state::AppState,
};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"name": "Ada Lovelace", "email": "ada@example.com", "password": "correct horse battery"}))]
pub struct SignupRequest {
    /// 1-100 characters after trimming, without control characters.
    #[schema(pattern = r"^\s*\S(.{0,98}\S)?\s*$")]
    pub name: String,
    /// Trimmed and lower-cased; at most 254 characters.
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// At least 8 characters and at most 72 bytes of UTF-8.
    #[schema(min_length = 8, max_length = 72, format = Password)]
    pub password: String,
    /// `browser` (default): tokens in cookies only; `app`: tokens in the body only.
    #[serde(default)]
    pub client: Option<ClientKind>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"email": "ada@example.com", "password": "correct horse battery"}))]
pub struct SigninRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(format = Password, min_length = 1)]
    pub password: String,
    /// `browser` (default): tokens in cookies only; `app`: tokens in the body only.
    #[serde(default)]
    pub client: Option<ClientKind>,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"everywhere": true}))]
pub struct SignoutRequest {
    /// Also revoke every other token of the user.
    #[serde(default)]
    pub everywhere: Option<bool>,
}

/// The current session.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"user": {"id": "2f0c6f5e-8d1c-4b9a-9c57-1b1f0f6a3e21", "name": "Ada Lovelace", "email": "ada@example.com", "image": null, "providers": ["credentials"], "emailVerified": null, "mfaEnabled": false, "createdAt": "2026-11-25T15:16:03.123Z", "updatedAt": "2026-11-25T15:16:03.123Z"}, "expires": "2026-11-25T16:16:03Z", "amr": ["pwd"]}))]
pub struct SessionInfo {
    pub user: UserBody,
    /// When the access token expires.
    #[schema(format = DateTime)]
    pub expires: String,
    /// How the user signed in (RFC 8176), as the access token's `amr` says: `pwd` (password),
    /// `fed` (GitHub or Google); later `otp`, `hwk`, `email`, and `mfa` with two factors.
    /// Empty for a session started before authvault recorded it.
    pub amr: Vec<&'static str>,
}

/// A CSRF token to send back in `X-CSRF-Token`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"csrfToken": "q3mYfZl0m2Qxh7cN4s1k8V0b2zW5e9Rt.1Jc0kq3Ff8x2bA7d9Lw4sYhT6pVn0GmE5uRz3XoIiKk"}))]
pub struct CsrfBody {
    pub csrf_token: String,
}

/// One enabled way to sign in.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderInfo {
    #[schema(example = "credentials")]
    pub id: &'static str,
    #[schema(example = "Email and password")]
    pub name: &'static str,
    /// `credentials`, `oauth`, `webauthn` or `email`.
    #[serde(rename = "type")]
    #[schema(schema_with = provider_type_schema)]
    pub type_: &'static str,
    #[schema(format = "uri")]
    pub signin_url: String,
    /// Where the provider sends the browser back; `null` for credentials and passkeys.
    #[schema(format = "uri", required = true)]
    pub callback_url: Option<String>,
}

fn provider_type_schema() -> utoipa::openapi::ObjectBuilder {
    super::string_enum(
        &["credentials", "oauth", "webauthn", "email"],
        "`credentials`, `oauth`, `webauthn` (passkeys) or `email` (emailed sign-in links).",
    )
}

/// Create an account and sign in.
#[utoipa::path(post, path = "/api/auth/signup", tag = "auth",
    request_body = SignupRequest,
    responses(
        (status = 201, description = "Account created and signed in; the session cookie is set",
            body = AuthResponse, headers(("Set-Cookie" = String, description = "The session cookie"))),
        problems::JsonBody, problems::Limited, problems::Stored,
        (status = 401, description = "`unauthenticated`: the account was deleted before its session could start"),
        (status = 403, description = "`origin_forbidden`: the `Origin` header names a site that is not allowed"),
        (status = 409, description = "`email_taken`"),
    ))]
pub async fn signup(
    state: web::Data<AppState>,
    req: HttpRequest,
    ApiJson(body): ApiJson<SignupRequest>,
    CredentialBudget(ip): CredentialBudget,
) -> Result<HttpResponse, ApiError> {
    let mut errors = FieldErrors::new();
    let name = errors.take(UserName::parse(&body.name));
    let email = errors.take(Email::parse(&body.email));
    let password = errors.take(Password::parse(&body.password, "password"));
    let (Some(name), Some(email), Some(password)) = (name, email, password) else {
        return Err(errors.into());
    };

    let user = accounts::sign_up(&state, name, email, &password).await?;
    start_session(
        &state,
        &req,
        ip,
        &user,
        body.client.unwrap_or_default(),
        StatusCode::CREATED,
    )
    .await
}

/// Sign in with email and password.
#[utoipa::path(post, path = "/api/auth/signin", tag = "auth",
    request_body = SigninRequest,
    responses(
        (status = 200, description = "Signed in (`{user, session}`; the session cookie is set), or, when the user has MFA on, `{mfaRequired: true, mfaToken, ...}` with no session and no cookie: complete it with `POST /api/auth/mfa/verify`", body = SignInResponse,
            headers(("Set-Cookie" = String, description = "The session cookie (not with `mfaRequired`)"))),
        problems::JsonBody, problems::Limited, problems::Stored,
        (status = 401, description = "`invalid_credentials`: unknown email, wrong password, or an account without a password (`unauthenticated` if the account was deleted meanwhile)"),
        (status = 403, description = "`origin_forbidden`: the `Origin` header names a site that is not allowed"),
    ))]
pub async fn signin(
    state: web::Data<AppState>,
    req: HttpRequest,
    ApiJson(body): ApiJson<SigninRequest>,
    CredentialBudget(ip): CredentialBudget,
) -> Result<HttpResponse, ApiError> {
    let email = Email::parse(&body.email)?;
    if body.password.is_empty() {
        return Err(ApiError::field("password", "is required"));
    }
    let user = accounts::password_sign_in(&state, &email, &body.password, ip).await?;
    start_session(
        &state,
        &req,
        ip,
        &user,
        body.client.unwrap_or_default(),
        StatusCode::OK,
    )
    .await
}

/// The signed-in user and when the session expires.
#[utoipa::path(get, path = "/api/auth/session", tag = "auth",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The current session", body = SessionInfo),
        problems::SignedIn, problems::Stored,
    ))]
pub async fn session(signed_in: SignedIn) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(SessionInfo {
        user: UserBody::from(&signed_in.user),
        expires: rfc3339(signed_in.current.expires_at),
        amr: signed_in.current.amr.names(),
    }))
}

/// Sign out: revoke this token, or with `everywhere` every token of the user.
#[utoipa::path(post, path = "/api/auth/signout", tag = "auth",
    security(("bearer" = []), ("cookie" = [])),
    request_body(content = Option<SignoutRequest>, description = "Optional; an empty body signs out this session only"),
    responses(
        (status = 204, description = "Signed out; the session cookie is cleared",
            headers(("Set-Cookie" = String, description = "The session cookie with Max-Age=0"))),
        problems::JsonBody, problems::SignedIn, problems::CookieWrite, problems::Stored,
    ))]
pub async fn signout(
    state: web::Data<AppState>,
    current: CurrentUser,
    OptionalJson(body): OptionalJson<SignoutRequest>,
) -> Result<HttpResponse, ApiError> {
    if body.everywhere.unwrap_or(false) {
        state.store.end_user_sessions(current.id, None).await?;
        log::info!("user {} signed out everywhere", current.id);
    } else {
        state
            .store
            .end_user_session(current.id, current.session_id)
            .await?;
        log::info!("user {} signed out", current.id);
    }
    Ok(HttpResponse::NoContent()
        .cookie(state.cookies.clear_session())
        .cookie(state.cookies.clear_refresh())
        .finish())
}

/// A CSRF token for cookie-authenticated writes (double-submit: body and cookie).
#[utoipa::path(get, path = "/api/auth/csrf", tag = "auth",
    responses((status = 200, description = "A fresh token; the CSRF cookie is set", body = CsrfBody,
        headers(("Set-Cookie" = String, description = "The CSRF cookie")))))]
pub async fn csrf(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    // Bound to the session of the session cookie sent with it, if that cookie holds a token of
    // ours (revocation does not matter here: every write checks its session anyway).
    let session = req
        .cookie(state.cookies.session_name)
        .and_then(|c| state.jwt.verify_access(c.value()).ok())
        .map(|claims| claims.sid);
    let token = state.csrf.issue(session);
    HttpResponse::Ok()
        .cookie(state.cookies.csrf(token.clone()))
        .json(CsrfBody { csrf_token: token })
}

/// The enabled sign-in providers, keyed by id.
#[utoipa::path(get, path = "/api/auth/providers", tag = "auth",
    responses((status = 200, description = "Enabled providers keyed by id",
        body = BTreeMap<String, ProviderInfo>,
        example = json!({"credentials": {"id": "credentials", "name": "Email and password", "type": "credentials",
            "signinUrl": "http://127.0.0.1:8080/api/auth/signin", "callbackUrl": null}}))))]
pub async fn providers(state: web::Data<AppState>) -> HttpResponse {
    let base = state
        .settings
        .server
        .public_url
        .as_str()
        .trim_end_matches('/');
    let mut map = BTreeMap::new();
    map.insert(
        "credentials",
        ProviderInfo {
            id: "credentials",
            name: "Email and password",
            type_: "credentials",
            signin_url: format!("{base}/api/auth/signin"),
            callback_url: None,
        },
    );
    for (enabled, id, name) in [
        (state.github.is_some(), "github", "GitHub"),
        (state.google.is_some(), "google", "Google"),
    ] {
        if enabled {
            map.insert(
                id,
                ProviderInfo {
                    id,
                    name,
                    type_: "oauth",
                    signin_url: format!("{base}/api/auth/signin/{id}"),
                    callback_url: Some(format!("{base}/api/auth/callback/{id}")),
                },
            );
        }
    }
    if !state.mailer.mail_unavailable() {
        map.insert(
            "email",
            ProviderInfo {
                id: "email",
                name: "Email link",
                type_: "email",
                signin_url: format!("{base}/api/auth/email-link"),
                callback_url: None,
            },
        );
    }
    if state.passkeys.is_some() {
        map.insert(
            "passkey",
            ProviderInfo {
                id: "passkey",
                name: "Passkey",
                type_: "webauthn",
                signin_url: format!("{base}/api/auth/passkey/start"),
                callback_url: None,
            },
        );
    }
    HttpResponse::Ok().json(map)
}
