//! Email verification and password recovery: one-time links sent by mail.
//!
//! Tokens are 32 random bytes, URL-safe base64, stored only as a SHA-256 hash with their purpose,
//! user and expiry, spent on first use. A reset request answers the same, at once, whether or not
//! the address has an account: the lookup and the mail happen after the answer.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    json::{ApiJson, OptionalJson},
    problems, UserBody,
};
use crate::{
    accounts::{self, Proof},
    auth::{CredentialBudget, CurrentUser},
    clock,
    domain::{Email, Password, User, UserId},
    error::ApiError,
    mail::{
        notices::{message, notify},
        MailError,
    },
    state::AppState,
    store::{CredentialChange, TokenKind},
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

/// The link base: the client's allow-listed `redirectUrl`, or the public URL.
fn link_base(state: &AppState, redirect: Option<&str>) -> Result<url::Url, ApiError> {
    match redirect {
        Some(raw) => {
            let url = url::Url::parse(raw).map_err(|_| ApiError::InvalidCallbackUrl)?;
            // A link opens in a mail reader's browser: never an app's custom scheme, whose
            // handler any app on the device can claim.
            let web = matches!(url.scheme(), "http" | "https");
            if web && state.settings.callback_allowed(&url) {
                Ok(url)
            } else {
                Err(ApiError::InvalidCallbackUrl)
            }
        }
        None => Ok(state.settings.server.public_url.clone()),
    }
}

/// Stores a new single-use token for `user` and returns the link carrying it.
async fn new_link(
    state: &AppState,
    kind: TokenKind,
    user: &User,
    base: &url::Url,
    ttl: std::time::Duration,
) -> Result<String, ApiError> {
    let token = crate::random::token();
    let now = clock::now();
    state
        .store
        .put_token(
            kind,
            &crate::random::token_hash(&token),
            Some(user.id),
            user.email.as_str(),
            now + ttl,
        )
        .await?;
    let mut link = base.clone();
    link.query_pairs_mut().append_pair("token", &token);
    Ok(link.to_string())
}

fn mail_failed(e: MailError) -> ApiError {
    match e {
        MailError::Unavailable => ApiError::MailUnavailable,
        MailError::Failed(why) => {
            log::error!("mail not delivered: {why}");
            ApiError::internal(anyhow::anyhow!("mail delivery failed"))
        }
    }
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
    let base = link_base(&state, body.redirect_url.as_deref())?;
    let user = state
        .store
        .user_by_id(current.id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    if user.email_verified.is_some() {
        return Err(ApiError::AlreadyVerified);
    }
    if state.mailer.mail_unavailable() {
        return Err(ApiError::MailUnavailable);
    }
    state
        .limiter
        .mail_request("verify", user.email.as_str())
        .await?;
    let link = new_link(
        &state,
        TokenKind::VerifyEmail,
        &user,
        &base,
        state.settings.mail.verify_token_ttl,
    )
    .await?;
    let mail = message(
        &user.email,
        "Verify your email address",
        &["Please confirm that this address belongs to your account."],
        Some(("Verify your address", &link)),
    );
    state.mailer.send(mail).await.map_err(mail_failed)?;
    log::info!("user {} asked for a verification link", user.id);
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
    let user = spend(&state, TokenKind::VerifyEmail, &body.token).await?;
    accounts::first_proof(&state, &user, Proof::Link).await?;
    let user = state
        .store
        .user_by_id(user.id)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    log::info!("user {} verified their address", user.id);
    Ok(HttpResponse::Ok().json(UserBody::from(&user)))
}

/// Spends a token: the user it was made for, if it is valid and their address is unchanged.
async fn spend(state: &AppState, kind: TokenKind, token: &str) -> Result<User, ApiError> {
    if token.is_empty() || token.len() > 256 {
        return Err(ApiError::InvalidToken);
    }
    let record = state
        .store
        .take_token(kind, &crate::random::token_hash(token), clock::now())
        .await?
        .ok_or(ApiError::InvalidToken)?;
    let user_id: UserId = record.user_id.ok_or(ApiError::InvalidToken)?;
    let user = state
        .store
        .user_by_id(user_id)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    // A link sent to an address the account no longer has proves nothing.
    if user.email.as_str() != record.data {
        return Err(ApiError::InvalidToken);
    }
    Ok(user)
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
    let base = link_base(&state, body.redirect_url.as_deref())?;
    if state.mailer.mail_unavailable() {
        return Err(ApiError::MailUnavailable);
    }
    // Counted per address whether or not it has an account, so the limit reveals nothing.
    state.limiter.mail_request("reset", email.as_str()).await?;
    let state = state.into_inner();
    tokio::spawn(async move {
        if let Err(e) = send_reset(&state, &email, &base).await {
            log::warn!("password reset mail not sent: {e}");
        }
    });
    Ok(HttpResponse::Accepted().json(Accepted {
        message: "If the address has an account, a reset link is on its way.",
    }))
}

async fn send_reset(state: &AppState, email: &Email, base: &url::Url) -> Result<(), ApiError> {
    let Some(user) = state.store.user_by_email(email).await? else {
        return Ok(());
    };
    let link = new_link(
        state,
        TokenKind::PasswordReset,
        &user,
        base,
        state.settings.mail.reset_token_ttl,
    )
    .await?;
    let mail = message(
        &user.email,
        "Reset your password",
        &[&format!(
            "Someone asked to reset the password of your account. The link works once, for {} minutes.",
            state.settings.mail.reset_token_ttl.as_secs().div_ceil(60)
        )],
        Some(("Choose a new password", &link)),
    );
    state.mailer.send(mail).await.map_err(mail_failed)?;
    log::info!("user {} was sent a reset link", user.id);
    Ok(())
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
    let user = spend(&state, TokenKind::PasswordReset, &body.token).await?;
    let hash = state.hasher.hash(&password).await?;
    // One step: the new hash, every session ended, every other reset link spent, and the
    // credential version moved so that a sign-in in flight with the old password starts none.
    if !state
        .store
        .change_password(
            user.id,
            CredentialChange {
                hash: Some(&hash),
                ..CredentialChange::default()
            },
            clock::now(),
        )
        .await?
    {
        return Err(ApiError::InvalidToken);
    }
    // The link reached the mailbox: the address is proven too.
    accounts::first_proof(&state, &user, Proof::Link).await?;
    notify(
        &state.mailer,
        &user,
        "Your password was changed",
        "The password of your account was just reset with a link sent to this address.",
    );
    log::info!("user {} reset their password; every session ended", user.id);
    Ok(HttpResponse::NoContent().finish())
}
