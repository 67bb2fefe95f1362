//! Account rules that several sign-in paths share, written once: what the first proof of an
//! address does.

use crate::{
    clock,
    domain::{AuthProvider, User},
    error::ApiError,
    mail::notices::notify,
    state::AppState,
};

/// The first proof of a user's address (a verification or reset link, a provider identity that
/// vouches for it): every sign-in method attached while it was unproven, but `keep` (the
/// vouching identity), is removed. If anything was, every session has ended, and the owner is
/// told. Nothing happens when the address was proven before.
pub async fn first_proof(
    state: &AppState,
    user: &User,
    keep: Option<(AuthProvider, &str)>,
) -> Result<(), ApiError> {
    let removed = state.store.prove_email(user.id, clock::now(), keep).await?;
    let Some(removed) = removed.filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    let names: Vec<&str> = removed.iter().map(|p| p.as_str()).collect();
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
