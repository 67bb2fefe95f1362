//! Email verification and password recovery: one-time links sent by mail (`crate::links`).
//!
//! A reset request answers the same, at once, whether or not the address has an account: the
//! lookup and the mail happen after the answer.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    json::{ApiJson, OptionalJson},
    problems, UserBody,
};
use crate::{
    auth::{CredentialBudget, CurrentUser},
    domain::{Email, Password},
    error::ApiError,
    links,
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
