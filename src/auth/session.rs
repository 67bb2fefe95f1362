//! Finding and checking the caller's token: the `CurrentUser` extractor.

use std::borrow::Cow;

use actix_web::{dev::Payload, http::Method, web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{csrf, jwt::AccessClaims};
use crate::{
    clock,
    domain::{Amr, User, UserId},
    error::ApiError,
    state::AppState,
    store::SessionRecord,
};

/// How the token arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Bearer,
    Cookie,
}

/// A caller with a valid, unrevoked access token.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: UserId,
    pub session_id: Uuid,
    pub expires_at: OffsetDateTime,
    pub auth_time: OffsetDateTime,
    /// How the user proved who they are for this session.
    pub amr: Amr,
    pub via: Via,
}

impl CurrentUser {
    /// Whether the user proved who they are within the last 10 minutes.
    pub fn recently_authenticated(&self) -> bool {
        clock::now() - self.auth_time < time::Duration::minutes(10)
    }

    /// The caller as stored now; `unauthenticated` when the account is gone.
    pub async fn load(&self, state: &AppState) -> Result<User, ApiError> {
        state
            .store
            .user_by_id(self.id)
            .await?
            .ok_or(ApiError::Unauthenticated)
    }
}

/// The token of the request: the `Authorization` header wins over the cookie.
pub fn find_token<'r>(req: &'r HttpRequest, cookie_name: &str) -> Option<(Cow<'r, str>, Via)> {
    if let Some(value) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        // A token is base64url: plain UTF-8 validation (fast on ASCII) is all it needs here;
        // anything else fails the signature check.
        let value = std::str::from_utf8(value.as_bytes()).ok()?;
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return None;
        }
        return Some((Cow::Borrowed(token), Via::Bearer));
    }
    req.cookie(cookie_name)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
        .map(|v| (Cow::Owned(v), Via::Cookie))
}

fn is_state_changing(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The app state, or a 500 when the app was wired without it.
pub fn app_state(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("AppState is not registered")))
}

/// Everything about the caller's token that needs no store: it is found, its signature and
/// claims verify, and a cookie write carries the CSRF token. Runs before the extractor's future,
/// so the token is never copied.
fn verified_claims(
    req: &HttpRequest,
) -> Result<(web::Data<AppState>, AccessClaims, Via), ApiError> {
    let state = app_state(req)?;
    let (token, via) =
        find_token(req, state.cookies.session_name).ok_or(ApiError::Unauthenticated)?;
    let claims = state.jwt.verify_access(&token)?;
    if via == Via::Cookie && is_state_changing(req.method()) {
        let header = req
            .headers()
            .get(csrf::HEADER)
            .and_then(|v| v.to_str().ok());
        let cookie = req.cookie(state.cookies.csrf_name);
        // Only a token issued with this session's cookie.
        state.csrf.check(
            header,
            cookie.as_ref().map(|c| c.value()),
            &[Some(claims.sid)],
        )?;
    }
    Ok((state, claims, via))
}

impl CurrentUser {
    fn new(claims: &AccessClaims, session: &SessionRecord, via: Via) -> Self {
        CurrentUser {
            id: claims.sub,
            session_id: session.id,
            expires_at: OffsetDateTime::from_unix_timestamp(claims.exp)
                .unwrap_or(session.expires_at),
            auth_time: session.auth_time,
            amr: session.amr,
            via,
        }
    }
}

impl FromRequest for CurrentUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let checked = verified_claims(req);
        Box::pin(async move {
            let (state, claims, via) = checked?;
            // The store is the truth: a token whose session was ended is refused at once.
            let session = state
                .store
                .session(claims.sub, claims.sid, clock::now())
                .await?
                .ok_or(ApiError::Unauthenticated)?;
            Ok(CurrentUser::new(&claims, &session, via))
        })
    }
}

/// A caller with a valid, unrevoked access token, and their user record, read together with
/// the session in one store call.
pub struct SignedIn {
    pub current: CurrentUser,
    pub user: User,
}

impl FromRequest for SignedIn {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let checked = verified_claims(req);
        Box::pin(async move {
            let (state, claims, via) = checked?;
            let (session, user) = state
                .store
                .session_with_user(claims.sub, claims.sid, clock::now())
                .await?
                .ok_or(ApiError::Unauthenticated)?;
            Ok(SignedIn {
                current: CurrentUser::new(&claims, &session, via),
                user,
            })
        })
    }
}
