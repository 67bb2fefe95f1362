//! Where every sign-in ends: a first factor checked out (a password, a provider, a one-time code,
//! an emailed link) becomes a session, or, when the user has MFA on, a wait for the second
//! factor (`mfa::verify` completes it). A passkey is two factors in itself and asks no more.

use time::OffsetDateTime;

use crate::{
    domain::{Amr, AuthMethod, User},
    error::ApiError,
    mfa::{self, Challenge},
    sessions::{self, Origin, Started},
    state::AppState,
};

/// What a sign-in's first factor led to.
pub enum SignIn {
    /// A session began.
    Started(Started),
    /// No session yet: the second factor is asked for.
    MfaRequired(Challenge),
}

/// Signs `user` in after a first factor proved at `auth_time` by `amr`: the one place that
/// decides whether a second factor is needed.
pub async fn sign_in(
    state: &AppState,
    origin: &Origin,
    user: &User,
    auth_time: OffsetDateTime,
    amr: Amr,
) -> Result<SignIn, ApiError> {
    if user.mfa_enabled && !amr.contains(AuthMethod::Hwk) {
        return Ok(SignIn::MfaRequired(
            mfa::challenge(state, user, auth_time, amr).await?,
        ));
    }
    Ok(SignIn::Started(
        sessions::start(state, origin, user, auth_time, amr).await?,
    ))
}
