//! Account rules, written once for every route that needs them: signing up and signing in with
//! a password, and what the first proof of an address does.

use crate::{
    auth::{ClientIp, CurrentUser},
    clock,
    domain::{AuthProvider, Email, Password, User, UserId, UserName},
    error::ApiError,
    mail::{notices::notify, Notice, PasswordChange},
    state::AppState,
    store::{CredentialChange, NewUser, StoreError},
};

/// Sets or changes the signed-in user's password after the step-up check: in one store step the
/// new hash, every other session ended, every reset link spent, and the credential version moved
/// so that a sign-in in flight with the old password starts none. The owner is told.
pub async fn change_password(
    state: &AppState,
    current: &CurrentUser,
    ip: ClientIp,
    user: &User,
    current_password: Option<&str>,
    new_password: &Password,
) -> Result<(), ApiError> {
    confirm_identity(
        state,
        current,
        ip,
        user,
        current_password,
        "currentPassword",
    )
    .await?;
    let hash = state.hasher.hash(new_password).await?;
    if !state
        .store
        .change_password(
            user.id,
            CredentialChange {
                hash: Some(&hash),
                keep: Some(current.session_id),
                // Only the credential the step-up check verified: a reset or an address
                // clean-up that answered meanwhile wins, and this request changes nothing.
                expected_version: Some(user.credential_version),
            },
            clock::now(),
        )
        .await?
    {
        return Err(ApiError::Unauthenticated);
    }
    notify(
        &state.mailer,
        user,
        Notice::PasswordChanged(if user.has_password() {
            PasswordChange::Changed
        } else {
            PasswordChange::Set
        }),
    );
    log::info!("user {} changed password; other sessions ended", user.id);
    Ok(())
}

/// Deletes the signed-in user's account after the step-up check, only while the credential is
/// the one just verified (a reset meanwhile wins).
pub async fn delete_account(
    state: &AppState,
    current: &CurrentUser,
    ip: ClientIp,
    user: &User,
    password: Option<&str>,
) -> Result<(), ApiError> {
    confirm_identity(state, current, ip, user, password, "password").await?;
    if !state
        .store
        .delete_user(user.id, Some(user.credential_version))
        .await?
    {
        return Err(ApiError::Unauthenticated);
    }
    log::info!("user {} deleted their account", user.id);
    Ok(())
}

/// Proves the caller may take a sensitive action: the password when the user has one (checked
/// under the sign-in limits of the user's email and the client's IP, like a sign-in),
/// otherwise a sign-in within the last 10 minutes.
async fn confirm_identity(
    state: &AppState,
    current: &CurrentUser,
    ip: ClientIp,
    user: &User,
    password: Option<&str>,
    field: &str,
) -> Result<(), ApiError> {
    match (&user.password_hash, password) {
        (Some(_), None) => Err(ApiError::field(field, "is required")),
        (Some(hash), Some(given)) => {
            let check = state.limiter.check_credential(&user.email, ip).await?;
            let ok = state
                .hasher
                .verify(&Password::candidate(given), Some(hash))
                .await?;
            if !ok {
                // The reserved slots stand as this failure.
                return Err(ApiError::InvalidCredentials);
            }
            state.limiter.passed(check).await
        }
        (None, _) if current.recently_authenticated() => Ok(()),
        (None, _) => Err(ApiError::ReauthRequired),
    }
}

/// A new account with a password; `email_taken` when the address has one (the unique index
/// decides: no read-before-write race).
pub async fn sign_up(
    state: &AppState,
    name: UserName,
    email: Email,
    password: &Password,
) -> Result<User, ApiError> {
    let password_hash = state.hasher.hash(password).await?;
    let new_user = NewUser {
        id: UserId::new(),
        name,
        email,
        image: None,
        password_hash: Some(password_hash),
        created_at: clock::now(),
    };
    let user = match state.store.create_user(new_user).await {
        Err(StoreError::Conflict) => return Err(ApiError::EmailTaken),
        other => other?,
    };
    log::info!("user {} signed up", user.id);
    Ok(user)
}

/// The first factor of a password sign-in: the password of `email`, checked under the
/// brute-force limits of that email and client. The user it returns carries the credential
/// version the password was checked against, for the session to start at. A hash of an older
/// cost is made again, only while the password is still the one checked.
pub async fn password_sign_in(
    state: &AppState,
    email: &Email,
    password: &str,
    ip: ClientIp,
) -> Result<User, ApiError> {
    let signins = &crate::metrics::metrics().signins;
    let check = match state.limiter.check_credential(email, ip).await {
        Ok(check) => check,
        Err(e) => {
            if matches!(e, ApiError::RateLimited { .. }) {
                signins.with_label_values(&["rate_limited"]).inc();
            }
            return Err(e);
        }
    };
    let user = state.store.user_by_email(email).await?;
    let hash = user.as_ref().and_then(|u| u.password_hash.as_deref());
    // Unknown emails and password-less accounts pay for one bcrypt run too.
    let matched = state
        .hasher
        .verify(&Password::candidate(password), hash)
        .await?;
    let user = match user {
        Some(user) if matched => user,
        _ => {
            // The reserved slots stand as this failure.
            signins.with_label_values(&["invalid_credentials"]).inc();
            return Err(ApiError::InvalidCredentials);
        }
    };
    signins.with_label_values(&["success"]).inc();
    state.limiter.passed(check).await?;

    if user
        .password_hash
        .as_deref()
        .is_some_and(|h| state.hasher.needs_rehash(h))
    {
        if let Ok(password) = Password::parse(password, "password") {
            let rehashed = state.hasher.hash(&password).await?;
            if state
                .store
                .rehash_password(user.id, &rehashed, user.credential_version)
                .await?
            {
                log::info!(
                    "user {} password re-hashed at cost {}",
                    user.id,
                    state.hasher.cost()
                );
            }
        }
    }
    log::info!("user {} signed in", user.id);
    Ok(user)
}

/// How a proof of the address arrived.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    /// A verification or reset link reached the mailbox.
    Link,
    /// A provider identity vouches for the address: it stays, and a password set while the
    /// address was unproven goes (the pre-hijacking defence).
    Identity(AuthProvider, &'a str),
}

/// The first proof of a user's address: every sign-in method attached while it was unproven (but
/// the vouching identity) is removed, in one store step. If anything was, every session has
/// ended, and the owner is told. Nothing happens when the address was proven before.
pub async fn first_proof(state: &AppState, user: &User, proof: Proof<'_>) -> Result<(), ApiError> {
    let (keep, remove_password) = match proof {
        Proof::Link => (None, false),
        Proof::Identity(provider, account) => (Some((provider, account)), true),
    };
    let removed = state
        .store
        .prove_email(user.id, clock::now(), keep, remove_password)
        .await?;
    let Some(removed) = removed.filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    let names: Vec<&str> = removed.iter().copied().map(method_name).collect();
    log::warn!(
        "user {}: address proven; sign-in methods added while it was unproven removed ({}), every session ended",
        user.id,
        names.join(", ")
    );
    notify(
        &state.mailer,
        user,
        Notice::MethodsRemoved { methods: &names },
    );
    Ok(())
}

fn method_name(provider: AuthProvider) -> &'static str {
    match provider {
        AuthProvider::Credentials => "password",
        AuthProvider::Github => "GitHub",
        AuthProvider::Google => "Google",
        AuthProvider::Passkey => "passkey",
        AuthProvider::Email => "emailed link",
    }
}

/// An identity a provider signed in, with what it says of its address.
pub struct ProviderIdentity {
    pub provider: AuthProvider,
    pub account_id: String,
    pub email: Option<Email>,
    /// Whether the provider reports the address verified (enough to create an account for it).
    pub email_verified: bool,
    /// Whether the provider vouches that the address belongs to this account (enough to link
    /// to an existing account, and to prove the address).
    pub vouched: bool,
    pub name: Option<String>,
    pub image: Option<String>,
}

fn display_name(identity: &ProviderIdentity, email: &Email) -> UserName {
    identity
        .name
        .as_deref()
        .and_then(|n| {
            UserName::parse(&n.chars().take(UserName::MAX_CHARS).collect::<String>()).ok()
        })
        .or_else(|| UserName::parse(email.as_str().split('@').next().unwrap_or("")).ok())
        .or_else(|| UserName::parse("New user").ok())
        .unwrap_or_else(unreachable_name)
}

#[allow(clippy::expect_used)]
fn unreachable_name() -> UserName {
    UserName::parse("User").expect("a constant valid name")
}

fn usable_image(raw: Option<&str>) -> Option<String> {
    let raw = raw?;
    let url = url::Url::parse(raw).ok()?;
    (matches!(url.scheme(), "http" | "https") && raw.len() <= 2048).then(|| raw.to_owned())
}

/// The account policy: a known identity signs its user in; a vouched email links to its
/// account; an unvouched one that matches an account is refused; a new address gets a new user
/// only when the provider reports it verified.
pub async fn resolve_identity(
    state: &AppState,
    identity: &ProviderIdentity,
) -> Result<User, ApiError> {
    let store = &state.store;
    let this = Proof::Identity(identity.provider, &identity.account_id);
    for _ in 0..2 {
        if let Some(user) = store
            .user_by_identity(identity.provider, &identity.account_id)
            .await?
        {
            let proves = identity.vouched && identity.email.as_ref() == Some(&user.email);
            if proves && user.email_verified.is_none() {
                first_proof(state, &user, this).await?;
                return store
                    .user_by_id(user.id)
                    .await?
                    .ok_or(ApiError::Unauthenticated);
            }
            return Ok(user);
        }
        let Some(email) = &identity.email else {
            log::warn!(
                "{} shared no usable email address",
                identity.provider.as_str()
            );
            return Err(ApiError::ProviderError);
        };
        let now = clock::now();
        match store.user_by_email(email).await? {
            Some(user) if identity.vouched => {
                match store
                    .link_identity(user.id, identity.provider, &identity.account_id, now)
                    .await
                {
                    Ok(true) => {
                        log::info!("user {} linked {}", user.id, identity.provider.as_str());
                        if user.email_verified.is_none() {
                            // Pre-hijacking defence: whoever registered this address first never
                            // proved it, the provider now does. The owner takes the account:
                            // what was attached while it was unproven goes, the unproven password
                            // too, and every session of it ends, all in one store step.
                            first_proof(state, &user, this).await?;
                        }
                        notify(
                            &state.mailer,
                            &user,
                            Notice::ProviderLinked {
                                provider: match identity.provider {
                                    AuthProvider::Github => "GitHub",
                                    _ => "Google",
                                },
                            },
                        );
                        return store
                            .user_by_id(user.id)
                            .await?
                            .ok_or(ApiError::AccountNotLinked);
                    }
                    // The user has another identity of this provider, or this one raced in.
                    Err(StoreError::Conflict) => continue,
                    Ok(false) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Some(_) => return Err(ApiError::AccountNotLinked),
            // An address the provider does not report verified may belong to someone else:
            // an account made for it would be waiting for its owner (pre-account takeover).
            None if !identity.email_verified => {
                log::info!(
                    "{} identity with an unverified address refused",
                    identity.provider.as_str()
                );
                return Err(ApiError::EmailNotVerified);
            }
            None => {
                let new_user = NewUser {
                    id: UserId::new(),
                    name: display_name(identity, email),
                    email: email.clone(),
                    image: usable_image(identity.image.as_deref()),
                    password_hash: None,
                    created_at: now,
                };
                match store
                    .create_user_with_identity(new_user, identity.provider, &identity.account_id)
                    .await
                {
                    Ok(mut user) => {
                        log::info!(
                            "user {} signed up with {}",
                            user.id,
                            identity.provider.as_str()
                        );
                        if identity.vouched {
                            store.mark_email_verified(user.id, now).await?;
                            user.email_verified = Some(now);
                        }
                        return Ok(user);
                    }
                    // The email or the identity was taken meanwhile: look again.
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Err(ApiError::AccountNotLinked)
}
