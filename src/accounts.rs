//! Account rules that several sign-in paths share, written once: what the first proof of an
//! address does.

use crate::{
    clock,
    domain::{AuthProvider, User},
    error::ApiError,
    mail::notices::notify,
    state::AppState,
};

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
    let what = format!(
        "Your email address was just proven to belong to you. Sign-in methods that were added to \
         the account while the address was unproven were removed ({}), and every session was \
         ended. If you did not add them, someone may have prepared the account before you: your \
         password stays as it is, so reset it if you did not choose it yourself.",
        names.join(", ")
    );
    notify(
        &state.mailer,
        user,
        "Sign-in methods were removed from your account",
        &what,
    );
    Ok(())
}

fn method_name(provider: AuthProvider) -> &'static str {
    match provider {
        AuthProvider::Credentials => "password",
        AuthProvider::Github => "GitHub",
        AuthProvider::Google => "Google",
    }
}
