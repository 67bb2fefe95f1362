//! Mailed single-use links, and the flows built on them: email verification and password
//! recovery.
//!
//! Tokens are 32 random bytes, URL-safe base64, stored only as a SHA-256 hash with their purpose,
//! user, address and expiry, and spent on first use. A link is valid only while the account
//! still has the address it was sent to.

use std::{sync::Arc, time::Duration};

use url::Url;

use crate::{
    accounts::{self, Proof},
    clock,
    domain::{Email, Password, User},
    error::ApiError,
    mail::{notices::notify, Letter, MailError, Notice, PasswordChange},
    state::AppState,
    store::{CredentialChange, TokenKind},
};

/// Where a link may point: the client's `redirectUrl` when it is an allow-listed web URL, or
/// the public URL.
pub fn base(state: &AppState, redirect: Option<&str>) -> Result<Url, ApiError> {
    match redirect {
        Some(raw) => {
            let url = Url::parse(raw).map_err(|_| ApiError::InvalidCallbackUrl)?;
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
pub async fn issue(
    state: &AppState,
    kind: TokenKind,
    user: &User,
    base: &Url,
    ttl: Duration,
) -> Result<String, ApiError> {
    let token = crate::random::token();
    state
        .store
        .put_token(
            kind,
            &crate::random::token_hash(&token),
            Some(user.id),
            user.email.as_str(),
            clock::now() + ttl,
        )
        .await?;
    let mut link = base.clone();
    link.query_pairs_mut().append_pair("token", &token);
    Ok(link.to_string())
}

/// Spends a token: the user it was made for, if it is valid and their address is unchanged.
pub async fn spend(state: &AppState, kind: TokenKind, token: &str) -> Result<User, ApiError> {
    if token.is_empty() || token.len() > 256 {
        return Err(ApiError::InvalidToken);
    }
    let record = state
        .store
        .take_token(kind, &crate::random::token_hash(token), clock::now())
        .await?
        .ok_or(ApiError::InvalidToken)?;
    let user_id = record.user_id.ok_or(ApiError::InvalidToken)?;
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

/// A delivery failure as the client sees it; the cause goes to the log only.
pub fn mail_failed(e: MailError) -> ApiError {
    match e {
        MailError::Unavailable => ApiError::MailUnavailable,
        MailError::Failed(why) => {
            log::error!("mail not delivered: {why}");
            ApiError::internal(anyhow::anyhow!("mail delivery failed"))
        }
        MailError::Template(why) => {
            log::error!("mail not rendered: {why}");
            ApiError::internal(anyhow::anyhow!("mail template failed"))
        }
    }
}

/// Mails a verification link to `user`, once per limit window of their address.
pub async fn request_verification(
    state: &AppState,
    user: &User,
    base: &Url,
) -> Result<(), ApiError> {
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
    let link = issue(
        state,
        TokenKind::VerifyEmail,
        user,
        base,
        state.settings.mail.verify_token_ttl,
    )
    .await?;
    let letter = Letter::VerifyEmail { link: &link };
    state
        .mailer
        .deliver(&user.email, &letter)
        .await
        .map_err(mail_failed)?;
    log::info!("user {} asked for a verification link", user.id);
    Ok(())
}

/// Spends a verification link: the address is proven. Returns the user as it is now.
pub async fn verify_email(state: &AppState, token: &str) -> Result<User, ApiError> {
    let user = spend(state, TokenKind::VerifyEmail, token).await?;
    accounts::first_proof(state, &user, Proof::Link).await?;
    let user = state
        .store
        .user_by_id(user.id)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    log::info!("user {} verified their address", user.id);
    Ok(user)
}

/// Checks what can be checked at once for a reset request (mail delivery, the per-address
/// limit), then looks the address up and mails a link in the background: the caller answers
/// the same whether or not the address has an account.
pub async fn request_reset(state: Arc<AppState>, email: Email, base: Url) -> Result<(), ApiError> {
    if state.mailer.mail_unavailable() {
        return Err(ApiError::MailUnavailable);
    }
    // Counted per address whether or not it has an account, so the limit reveals nothing.
    state.limiter.mail_request("reset", email.as_str()).await?;
    tokio::spawn(async move {
        if let Err(e) = send_reset(&state, &email, &base).await {
            log::warn!("password reset mail not sent: {e}");
        }
    });
    Ok(())
}

async fn send_reset(state: &AppState, email: &Email, base: &Url) -> Result<(), ApiError> {
    let Some(user) = state.store.user_by_email(email).await? else {
        return Ok(());
    };
    let ttl = state.settings.mail.reset_token_ttl;
    let link = issue(state, TokenKind::PasswordReset, &user, base, ttl).await?;
    let letter = Letter::PasswordReset {
        link: &link,
        minutes: ttl.as_secs().div_ceil(60),
    };
    state
        .mailer
        .deliver(&user.email, &letter)
        .await
        .map_err(mail_failed)?;
    log::info!("user {} was sent a reset link", user.id);
    Ok(())
}

/// Spends a reset link and sets the new password; every session of the user ends.
pub async fn reset_password(
    state: &AppState,
    token: &str,
    password: &Password,
) -> Result<(), ApiError> {
    let user = spend(state, TokenKind::PasswordReset, token).await?;
    let hash = state.hasher.hash(password).await?;
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
    accounts::first_proof(state, &user, Proof::Link).await?;
    notify(
        &state.mailer,
        &user,
        Notice::PasswordChanged(PasswordChange::Reset),
    );
    log::info!("user {} reset their password; every session ended", user.id);
    Ok(())
}
