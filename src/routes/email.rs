//! Email verification and password recovery: one-time links sent by mail (`crate::links`).
//!
//! A reset request answers the same, at once, whether or not the address has an account: the
//! lookup and the mail happen after the answer.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    answers::{origin, sign_in_answer, ClientKind, SignInResponse},
    json::{ApiJson, OptionalJson},
    problems, UserBody,
};
use crate::{
    auth::{pkce, CredentialBudget, CurrentUser},
    clock,
    domain::{Amr, AuthMethod, Email, Password},
    error::ApiError,
    links, signin,
    state::AppState,
};

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"redirectUrl": "https://app.example.com/verify"}))]
pub struct VerificationRequest {
    /// Where the link points (`?token=` is appended); must pass the callback allow-list.
    /// Default: the public URL.
    #[serde(default)]
    #[schema(format = "uri")]
    pub redirect_url: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"token": "Zt3kq8v0Xw2mN5pR7sB1cD4fG6hJ9kL0oQ2uY5eA8iU"}))]
pub struct TokenBody {
    /// The token from the link.
    #[schema(min_length = 1, max_length = 256)]
    pub token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"email": "ada@example.com", "redirectUrl": "https://app.example.com/reset"}))]
pub struct ForgotRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// Where the link points (`?token=` is appended); must pass the callback allow-list.
    #[serde(default)]
    #[schema(format = "uri")]
    pub redirect_url: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"token": "Zt3kq8v0Xw2mN5pR7sB1cD4fG6hJ9kL0oQ2uY5eA8iU", "newPassword": "a brand new passphrase"}))]
pub struct ResetRequest {
    #[schema(min_length = 1, max_length = 256)]
    pub token: String,
    /// At least 8 characters, at most 72 bytes, not a common password.
    #[schema(min_length = 8, max_length = 72, format = Password)]
    pub new_password: String,
}

/// The answer to a mail request; the same whatever happened.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    #[schema(example = "If the address can receive mail from us, a link is on its way.")]
    pub message: &'static str,
}

/// Mail a verification link to the signed-in user.
#[utoipa::path(post, path = "/api/auth/verify-email/request", tag = "email",
    security(("bearer" = []), ("cookie" = [])),
    request_body(content = Option<VerificationRequest>, description = "Optional; an empty body links to the public URL"),
    responses(
        (status = 202, description = "A message with a one-time link (24 h) was sent", body = Accepted),
        problems::JsonBody, problems::SignedIn, problems::CookieWrite, problems::Limited,
        (status = 400, description = "`invalid_callback_url` or `validation_failed`"),
        (status = 409, description = "`already_verified`"),
        (status = 500, description = "`internal` (the mail could not be delivered)"),
        (status = 503, description = "`mail_unavailable` or `store_unavailable`"),
    ))]
pub async fn request_verification(
    state: web::Data<AppState>,
    current: CurrentUser,
    OptionalJson(body): OptionalJson<VerificationRequest>,
    _budget: CredentialBudget,
) -> Result<HttpResponse, ApiError> {
    let base = links::base(&state, body.redirect_url.as_deref())?;
    let user = state
        .store
        .user_by_id(current.id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    links::request_verification(&state, &user, &base).await?;
    Ok(HttpResponse::Accepted().json(Accepted {
        message: "A verification link is on its way.",
    }))
}

/// Confirm an address with the token from the link.
#[utoipa::path(post, path = "/api/auth/verify-email", tag = "email",
    request_body = TokenBody,
    responses(
        (status = 200, description = "The user, with `emailVerified` set", body = UserBody),
        problems::JsonBody, problems::OriginChecked, problems::Limited, problems::Stored,
        (status = 400, description = "`invalid_token` (unknown, used or expired) or `validation_failed`"),
    ))]
pub async fn verify_email(
    state: web::Data<AppState>,
    ApiJson(body): ApiJson<TokenBody>,
    _budget: CredentialBudget,
) -> Result<HttpResponse, ApiError> {
    let user = links::verify_email(&state, &body.token).await?;
    Ok(HttpResponse::Ok().json(UserBody::from(&user)))
}

/// Ask for a password-reset link. The answer is the same whether or not the address has an
/// account.
#[utoipa::path(post, path = "/api/auth/password/forgot", tag = "email",
    request_body = ForgotRequest,
    responses(
        (status = 202, description = "Accepted; a link (30 min) is mailed only if the address has an account", body = Accepted),
        problems::JsonBody, problems::OriginChecked, problems::Stored,
        (status = 400, description = "`validation_failed` or `invalid_callback_url`"),
        (status = 429, description = "`rate_limited` (per client IP and per address)"),
        (status = 503, description = "`mail_unavailable` or `store_unavailable`"),
    ))]
pub async fn forgot_password(
    state: web::Data<AppState>,
    ApiJson(body): ApiJson<ForgotRequest>,
    _budget: CredentialBudget,
) -> Result<HttpResponse, ApiError> {
    let email = Email::parse(&body.email)?;
    let base = links::base(&state, body.redirect_url.as_deref())?;
    links::request_reset(state.into_inner(), email, base).await?;
    Ok(HttpResponse::Accepted().json(Accepted {
        message: "If the address has an account, a reset link is on its way.",
    }))
}

/// Set a new password with the token from a reset link; every session of the user ends.
#[utoipa::path(post, path = "/api/auth/password/reset", tag = "email",
    request_body = ResetRequest,
    responses(
        (status = 204, description = "Password set; every session of the user is revoked"),
        problems::JsonBody, problems::OriginChecked, problems::Limited, problems::Stored,
        (status = 400, description = "`invalid_token` or `validation_failed` (a weak password leaves the token unspent)"),
    ))]
pub async fn reset_password(
    state: web::Data<AppState>,
    ApiJson(body): ApiJson<ResetRequest>,
    _budget: CredentialBudget,
) -> Result<HttpResponse, ApiError> {
    // Checked before the token is spent, so a weak choice can be corrected with the same link.
    let password = Password::parse(&body.new_password, "newPassword")?;
    links::reset_password(&state, &body.token, &password).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"email": "ada@example.com", "redirectUrl": "https://app.example.com/signin/link", "codeChallenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}))]
pub struct EmailLinkRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// Where the link points (`?token=` is appended): an `http`/`https` URL on the callback
    /// allow-list. Default: the public URL.
    #[serde(default)]
    #[schema(format = "uri")]
    pub redirect_url: Option<String>,
    /// The base64url S256 challenge (RFC 7636) of a verifier this browser keeps: then only that
    /// verifier completes the sign-in, so a forwarded link signs no other browser in.
    #[serde(default)]
    #[schema(min_length = 43, max_length = 43)]
    pub code_challenge: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"token": "Zt3kq8v0Xw2mN5pR7sB1cD4fG6hJ9kL0oQ2uY5eA8iU", "codeVerifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"}))]
pub struct EmailLinkVerify {
    /// The token from the link.
    #[schema(min_length = 1, max_length = 256)]
    pub token: String,
    /// The verifier of the request's `codeChallenge`; required when the link was asked with one.
    #[serde(default)]
    #[schema(min_length = 43, max_length = 128)]
    pub code_verifier: Option<String>,
    /// `browser` (default): tokens in cookies only; `app`: tokens in the body only.
    #[serde(default)]
    pub client: Option<ClientKind>,
}

/// Mail a one-time sign-in link. The answer is the same whatever the address.
#[utoipa::path(post, path = "/api/auth/email-link", tag = "email",
    request_body = EmailLinkRequest,
    responses(
        (status = 202, description = "Accepted; a link (15 min) is mailed to an account's address, or to a new address when sign-up by link is on, at most 5 an hour per address", body = Accepted),
        problems::JsonBody, problems::OriginChecked, problems::Limited, problems::Stored,
        (status = 400, description = "`validation_failed` or `invalid_callback_url`"),
        (status = 503, description = "`mail_unavailable` or `store_unavailable`"),
    ))]
pub async fn request_email_link(
    state: web::Data<AppState>,
    ApiJson(body): ApiJson<EmailLinkRequest>,
    _budget: CredentialBudget,
) -> Result<HttpResponse, ApiError> {
    let email = Email::parse(&body.email)?;
    let base = links::base(&state, body.redirect_url.as_deref())?;
    let challenge = body
        .code_challenge
        .as_deref()
        .map(pkce::parse_challenge)
        .transpose()?;
    links::request_sign_in_link(state.into_inner(), email, base, challenge).await?;
    Ok(HttpResponse::Accepted().json(Accepted {
        message: "If the address can receive mail from us, a sign-in link is on its way.",
    }))
}

/// Sign in with the token of an emailed link: the address is proven too.
#[utoipa::path(post, path = "/api/auth/email-link/verify", tag = "email",
    request_body = EmailLinkVerify,
    responses(
        (status = 200, description = "Signed in with `amr` `[\"email\"]` (cookies for browser clients), or, with MFA on, the `mfaRequired` answer; `emailVerified` is set, and a new address has a password-less account named after its local part", body = SignInResponse,
            headers(("Set-Cookie" = String, description = "The session cookie (browser clients, when a session starts)"))),
        problems::JsonBody, problems::OriginChecked, problems::Limited, problems::Stored,
        (status = 400, description = "`invalid_token`: unknown, used, expired, a token of another kind, or a missing or wrong `codeVerifier` (which spends the link); `validation_failed` for a malformed body"),
    ))]
pub async fn verify_email_link(
    state: web::Data<AppState>,
    req: HttpRequest,
    ApiJson(body): ApiJson<EmailLinkVerify>,
    CredentialBudget(ip): CredentialBudget,
) -> Result<HttpResponse, ApiError> {
    let user =
        links::spend_sign_in_link(&state, &body.token, body.code_verifier.as_deref()).await?;
    let amr = Amr::one(AuthMethod::Email);
    let signed_in = signin::sign_in(&state, &origin(&req, ip), &user, clock::now(), amr).await?;
    Ok(sign_in_answer(
        &state,
        &user,
        &signed_in,
        body.client.unwrap_or_default(),
        StatusCode::OK,
    ))
}
