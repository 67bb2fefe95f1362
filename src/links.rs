//! Mailed single-use links, and the flows built on them: email verification, password
//! recovery, and passwordless sign-in.
//!
//! Tokens are 32 random bytes, URL-safe base64, stored only as a SHA-256 hash with their purpose,
//! user, address and expiry, and spent on first use. A link is valid only while the account
//! still has the address it was sent to.

use std::{sync::Arc, time::Duration};

use url::Url;

use crate::{
    accounts::{self, Proof},
    clock,
    domain::{AuthProvider, Email, Password, User, UserId, UserName},
    error::ApiError,
    mail::{notices::notify, Letter, MailError, Notice, PasswordChange},
    state::AppState,
    store::{CredentialChange, NewUser, StoreError, TokenKind},
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

/// What an emailed sign-in link's token keeps: the address it went to and, when the client
/// asked for one, the PKCE challenge its verifier must match.
#[derive(serde::Serialize, serde::Deserialize)]
struct SignInLink {
    email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    challenge: Option<String>,
}

/// Answers an emailed sign-in link request at once, the same whatever the address: the lookup,
/// the per-address limit and the mail happen after the answer.
pub async fn request_sign_in_link(
    state: Arc<AppState>,
    email: Email,
    base: Url,
    challenge: Option<String>,
) -> Result<(), ApiError> {
    if state.mailer.mail_unavailable() {
        return Err(ApiError::MailUnavailable);
    }
    tokio::spawn(async move {
        if let Err(e) = send_sign_in_link(&state, &email, &base, challenge).await {
            log::warn!("sign-in link mail not sent: {e}");
        }
    });
    Ok(())
}

async fn send_sign_in_link(
    state: &AppState,
    email: &Email,
    base: &Url,
    challenge: Option<String>,
) -> Result<(), ApiError> {
    // Counted per address whether or not it has an account; past the limit nothing is sent.
    if let Err(e) = state.limiter.email_link_request(email.as_str()).await {
        log::info!("sign-in link not sent: {e}");
        return Ok(());
    }
    let user = state.store.user_by_email(email).await?;
    if user.is_none() && !state.settings.mail.email_link_signup {
        return Ok(());
    }
    let ttl = state.settings.mail.email_link_ttl;
    let token = crate::random::token();
    let data = serde_json::to_string(&SignInLink {
        email: email.as_str().to_owned(),
        challenge,
    })
    .map_err(ApiError::internal)?;
    state
        .store
        .put_token(
            TokenKind::EmailSignIn,
            &crate::random::token_hash(&token),
            user.as_ref().map(|u| u.id),
            &data,
            clock::now() + ttl,
        )
        .await?;
    let mut link = base.clone();
    link.query_pairs_mut().append_pair("token", &token);
    let letter = Letter::SigninLink {
        link: link.as_str(),
        minutes: ttl.as_secs().div_ceil(60),
    };
    state
        .mailer
        .deliver(email, &letter)
        .await
        .map_err(mail_failed)?;
    match &user {
        Some(user) => log::info!("user {} was sent a sign-in link", user.id),
        None => log::info!("a sign-in link for a new account was sent"),
    }
    Ok(())
}

/// Spends an emailed sign-in link (with the PKCE verifier when it was asked with a challenge):
/// the account it signs in, made now for an address that has none, with its address proven.
/// The session (or the second step) is the caller's, through `signin::sign_in`.
pub async fn spend_sign_in_link(
    state: &AppState,
    token: &str,
    verifier: Option<&str>,
) -> Result<User, ApiError> {
    if token.is_empty() || token.len() > 256 {
        return Err(ApiError::InvalidToken);
    }
    let record = state
        .store
        .take_token(
            TokenKind::EmailSignIn,
            &crate::random::token_hash(token),
            clock::now(),
        )
        .await?
        .ok_or(ApiError::InvalidToken)?;
    let link: SignInLink =
        serde_json::from_str(&record.data).map_err(|_| ApiError::InvalidToken)?;
    // A link asked for with a challenge signs in only the browser that holds the verifier.
    if let Some(challenge) = &link.challenge {
        if !verifier.is_some_and(|v| crate::auth::pkce::verifies(challenge, v)) {
            log::warn!("a sign-in link was presented without its verifier; it is spent");
            return Err(ApiError::InvalidToken);
        }
    }
    let email = Email::from_stored(link.email).map_err(|_| ApiError::InvalidToken)?;
    let (user, proof) = match record.user_id {
        Some(id) => {
            let user = state
                .store
                .user_by_id(id)
                .await?
                .ok_or(ApiError::InvalidToken)?;
            // A link sent to an address the account no longer has proves nothing.
            if user.email != email {
                return Err(ApiError::InvalidToken);
            }
            (user, Proof::Link)
        }
        None => match state.store.user_by_email(&email).await? {
            // The address got an account after the link was sent (the mailbox owner's own).
            Some(user) => (user, Proof::Link),
            None if state.settings.mail.email_link_signup => (
                create_linked_account(state, &email).await?,
                Proof::Identity(AuthProvider::Email, email.as_str()),
            ),
            None => return Err(ApiError::InvalidToken),
        },
    };
    accounts::first_proof(state, &user, proof).await?;
    // As it is now: the proof may have moved the credential version.
    state
        .store
        .user_by_id(user.id)
        .await?
        .ok_or(ApiError::InvalidToken)
}

/// A password-less account for `email`, named after its local part, with the address as its
/// `email` identity; the account a concurrent link made, if one won the race.
async fn create_linked_account(state: &AppState, email: &Email) -> Result<User, ApiError> {
    let local = email.as_str().split('@').next().unwrap_or_default();
    let name = UserName::parse(local)
        .or_else(|_| UserName::parse("New user"))
        .map_err(|e| ApiError::internal(anyhow::anyhow!("a user name: {e:?}")))?;
    let new = NewUser {
        id: UserId::new(),
        name,
        email: email.clone(),
        image: None,
        password_hash: None,
        created_at: clock::now(),
    };
    match state
        .store
        .create_user_with_identity(new, AuthProvider::Email, email.as_str())
        .await
    {
        Ok(user) => {
            log::info!("user {} was created by an emailed sign-in link", user.id);
            Ok(user)
        }
        Err(StoreError::Conflict) => state
            .store
            .user_by_email(email)
            .await?
            .ok_or(ApiError::InvalidToken),
        Err(e) => Err(e.into()),
    }
}
