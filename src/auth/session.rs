//! Finding and checking the caller's token: the `CurrentUser` extractor.

use actix_web::{dev::Payload, http::Method, web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{csrf, jwt::AccessClaims};
use crate::{clock, domain::UserId, error::ApiError, startup::AppState};

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
    pub via: Via,
}

impl CurrentUser {
    /// Whether the user proved who they are within the last 10 minutes.
    pub fn recently_authenticated(&self) -> bool {
        clock::now() - self.auth_time < time::Duration::minutes(10)
    }
}

/// The token of the request: the `Authorization` header wins over the cookie.
pub fn find_token(req: &HttpRequest, cookie_name: &str) -> Option<(String, Via)> {
    if let Some(value) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return None;
        }
        return Some((token.trim().to_owned(), Via::Bearer));
    }
    req.cookie(cookie_name)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
        .map(|v| (v, Via::Cookie))
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

impl FromRequest for CurrentUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = app_state(&req)?;
            let (token, via) =
                find_token(&req, state.cookies.session_name).ok_or(ApiError::Unauthenticated)?;
            let claims: AccessClaims = state.jwt.verify_access(&token)?;
            if via == Via::Cookie && is_state_changing(req.method()) {
                let header = req
                    .headers()
                    .get(csrf::HEADER)
                    .and_then(|v| v.to_str().ok());
                let cookie = req.cookie(state.cookies.csrf_name);
                state
                    .csrf
                    .check(header, cookie.as_ref().map(|c| c.value()))?;
            }
            let now = clock::now();
            // The store is the truth: a token whose session was ended is refused at once.
            let session = state
                .store
                .session(claims.sid, now)
                .await?
                .filter(|s| s.user_id == claims.sub)
                .ok_or(ApiError::Unauthenticated)?;
            Ok(CurrentUser {
                id: claims.sub,
                session_id: session.id,
                expires_at: OffsetDateTime::from_unix_timestamp(claims.exp)
                    .unwrap_or(session.expires_at),
                auth_time: session.auth_time,
                via,
            })
        })
    }
}
