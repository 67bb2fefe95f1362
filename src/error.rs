//! `ApiError`: the one error type of every handler, its stable codes and its problem+json body.

use std::{collections::BTreeMap, time::Duration};

use actix_web::{
    error::{PathError, QueryPayloadError},
    http::{
        header::{self, HeaderValue},
        StatusCode,
    },
    HttpRequest, HttpResponse, ResponseError,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{domain::FieldErrors, store::StoreError};

/// Everything a request can fail with. Each variant has exactly one code, status and title.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed")]
    Validation(FieldErrors),
    #[error("email taken")]
    EmailTaken,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("unauthenticated")]
    Unauthenticated,
    #[error("re-authentication required")]
    ReauthRequired,
    #[error("csrf check failed")]
    CsrfFailed,
    #[error("origin forbidden")]
    OriginForbidden,
    #[error("not found")]
    NotFound,
    #[error("unknown provider")]
    UnknownProvider,
    #[error("method not allowed")]
    MethodNotAllowed { allow: Option<String> },
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("rate limited")]
    RateLimited { retry_after: Duration },
    #[error("store unavailable")]
    StoreUnavailable,
    #[error("a stored key could not be opened")]
    VaultOpenFailed,
    #[error("no Together AI key stored")]
    MissingApiKey,
    #[error("callback URL not allowed")]
    InvalidCallbackUrl,
    #[error("invalid OAuth state")]
    InvalidState,
    #[error("account not linked")]
    AccountNotLinked,
    #[error("email not verified by the provider")]
    EmailNotVerified,
    #[error("provider error")]
    ProviderError,
    #[error("invalid one-time code")]
    InvalidCode,
    #[error("last sign-in method")]
    LastSignInMethod,
    #[error("invalid token")]
    InvalidToken,
    #[error("already verified")]
    AlreadyVerified,
    #[error("mail unavailable")]
    MailUnavailable,
    #[error("invalid refresh token")]
    InvalidRefresh,
    #[error("refresh token reused")]
    RefreshReused,
    #[error("upstream rejected the key")]
    UpstreamKeyRejected,
    #[error("upstream rate limited")]
    UpstreamRateLimited { retry_after: Duration },
    #[error("upstream error")]
    UpstreamError,
    #[error("upstream timeout")]
    UpstreamTimeout,
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

/// Code, HTTP status and title of one kind of error.
pub struct ErrorKind {
    pub code: &'static str,
    pub status: StatusCode,
    pub title: &'static str,
}

const fn kind(code: &'static str, status: StatusCode, title: &'static str) -> ErrorKind {
    ErrorKind {
        code,
        status,
        title,
    }
}

impl ApiError {
    pub fn kind(&self) -> ErrorKind {
        use StatusCode as S;
        match self {
            Self::Validation(_) => kind(
                "validation_failed",
                S::BAD_REQUEST,
                "The request is not valid",
            ),
            Self::EmailTaken => kind(
                "email_taken",
                S::CONFLICT,
                "An account with this email already exists",
            ),
            Self::InvalidCredentials => kind(
                "invalid_credentials",
                S::UNAUTHORIZED,
                "Invalid email or password",
            ),
            Self::Unauthenticated => kind("unauthenticated", S::UNAUTHORIZED, "Sign-in required"),
            Self::ReauthRequired => kind(
                "reauth_required",
                S::UNAUTHORIZED,
                "Recent sign-in required",
            ),
            Self::CsrfFailed => kind("csrf_failed", S::FORBIDDEN, "CSRF check failed"),
            Self::OriginForbidden => kind("origin_forbidden", S::FORBIDDEN, "Origin not allowed"),
            Self::NotFound => kind("not_found", S::NOT_FOUND, "Not found"),
            Self::UnknownProvider => kind("unknown_provider", S::NOT_FOUND, "Unknown provider"),
            Self::MethodNotAllowed { .. } => kind(
                "method_not_allowed",
                S::METHOD_NOT_ALLOWED,
                "Method not allowed",
            ),
            Self::PayloadTooLarge => kind(
                "payload_too_large",
                S::PAYLOAD_TOO_LARGE,
                "Request body too large",
            ),
            Self::UnsupportedMediaType => kind(
                "unsupported_media_type",
                S::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
            ),
            Self::RateLimited { .. } => {
                kind("rate_limited", S::TOO_MANY_REQUESTS, "Too many requests")
            }
            Self::StoreUnavailable => kind(
                "store_unavailable",
                S::SERVICE_UNAVAILABLE,
                "Database unavailable",
            ),
            Self::VaultOpenFailed => kind(
                "vault_open_failed",
                S::INTERNAL_SERVER_ERROR,
                "A stored key could not be decrypted",
            ),
            Self::InvalidCallbackUrl => kind(
                "invalid_callback_url",
                S::BAD_REQUEST,
                "Callback URL not allowed",
            ),
            Self::InvalidState => kind(
                "invalid_state",
                S::BAD_REQUEST,
                "Invalid or expired sign-in attempt",
            ),
            Self::AccountNotLinked => kind(
                "account_not_linked",
                S::CONFLICT,
                "An account with this email exists",
            ),
            Self::EmailNotVerified => kind(
                "email_not_verified",
                S::CONFLICT,
                "The provider has not verified this email address",
            ),
            Self::ProviderError => kind(
                "provider_error",
                S::BAD_GATEWAY,
                "The sign-in provider failed",
            ),
            Self::InvalidCode => kind("invalid_code", S::BAD_REQUEST, "Invalid one-time code"),
            Self::LastSignInMethod => kind(
                "last_sign_in_method",
                S::CONFLICT,
                "This is the last way to sign in",
            ),
            Self::InvalidToken => kind("invalid_token", S::BAD_REQUEST, "Invalid or expired link"),
            Self::AlreadyVerified => kind(
                "already_verified",
                S::CONFLICT,
                "The email address is already verified",
            ),
            Self::InvalidRefresh => {
                kind("invalid_refresh", S::UNAUTHORIZED, "Invalid refresh token")
            }
            Self::RefreshReused => kind("refresh_reused", S::UNAUTHORIZED, "Refresh token reused"),
            Self::MailUnavailable => kind(
                "mail_unavailable",
                S::SERVICE_UNAVAILABLE,
                "Mail delivery is not configured",
            ),
            Self::MissingApiKey => kind(
                "missing_api_key",
                S::BAD_REQUEST,
                "No Together AI key is stored",
            ),
            Self::UpstreamKeyRejected => kind(
                "upstream_key_rejected",
                S::UNPROCESSABLE_ENTITY,
                "The provider rejected your API key",
            ),
            Self::UpstreamRateLimited { .. } => kind(
                "upstream_rate_limited",
                S::TOO_MANY_REQUESTS,
                "The provider is rate limiting your key",
            ),
            Self::UpstreamError => kind("upstream_error", S::BAD_GATEWAY, "The provider failed"),
            Self::UpstreamTimeout => kind(
                "upstream_timeout",
                S::GATEWAY_TIMEOUT,
                "The provider did not answer in time",
            ),
            Self::Internal(_) => kind(
                "internal",
                S::INTERNAL_SERVER_ERROR,
                "Internal server error",
            ),
        }
    }

    /// Wraps an unexpected failure; its cause goes to the log, never to the client.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::Internal(cause.into())
    }

    /// A 400 naming one field.
    pub fn field(field: &str, message: &str) -> Self {
        Self::Validation(crate::domain::FieldError::new(field, message).into())
    }

    fn detail(&self) -> String {
        match self {
            Self::Validation(_) => "One or more fields are invalid; see errors.".into(),
            Self::EmailTaken => "Sign in instead, or use another email address.".into(),
            Self::InvalidCredentials => "The email or password is wrong.".into(),
            Self::Unauthenticated => {
                "Send the session cookie or an Authorization: Bearer token that is valid.".into()
            }
            Self::ReauthRequired => {
                "This action needs a sign-in within the last 10 minutes; sign in again.".into()
            }
            Self::CsrfFailed => {
                "Cookie-authenticated writes need the X-CSRF-Token header from GET /api/auth/csrf."
                    .into()
            }
            Self::OriginForbidden => "Requests from this origin are not allowed.".into(),
            Self::NotFound => "No such resource.".into(),
            Self::UnknownProvider => "No such provider is known or enabled.".into(),
            Self::MethodNotAllowed { .. } => "This resource does not support that method.".into(),
            Self::PayloadTooLarge => {
                "The request body is larger than this endpoint accepts.".into()
            }
            Self::UnsupportedMediaType => "Send the body as application/json.".into(),
            Self::RateLimited { retry_after } => {
                format!(
                    "Too many attempts; retry in {} seconds.",
                    retry_secs(*retry_after)
                )
            }
            Self::StoreUnavailable => "The database did not answer in time; retry shortly.".into(),
            Self::InvalidCallbackUrl => {
                "callbackUrl must be on the configured allow-list of origins or exact URLs.".into()
            }
            Self::InvalidState => {
                "The sign-in attempt is unknown, expired or already used; start it again.".into()
            }
            Self::AccountNotLinked => "An account with this email exists but the provider did not vouch for the address; sign in with your password and link the provider from there.".into(),
            Self::EmailNotVerified => "The provider does not report this address as verified, so no account is made for it; verify the address with the provider, or sign up with a password.".into(),
            Self::ProviderError => "The sign-in provider failed or sent an answer that did not verify; try again.".into(),
            Self::InvalidCode => "The code is unknown, used, expired, or the code verifier does not match.".into(),
            Self::LastSignInMethod => "Set a password or link another provider before removing this one.".into(),
            Self::InvalidToken => {
                "The link is unknown, already used or expired; ask for a new one.".into()
            }
            Self::AlreadyVerified => "This address is verified already.".into(),
            Self::InvalidRefresh => {
                "The refresh token is unknown, expired, or its session ended; sign in again.".into()
            }
            Self::RefreshReused => "This refresh token was already used: the session is revoked for safety; sign in again.".into(),
            Self::MailUnavailable => {
                "This server cannot send mail (no SMTP is configured); ask its operator.".into()
            }
            Self::MissingApiKey => "Store your Together AI key first: POST /api/user/api-keys with {\"togetherAI\": \"...\"}.".into(),
            Self::UpstreamKeyRejected => {
                "Together AI refused the stored key; check it and store it again.".into()
            }
            Self::UpstreamRateLimited { retry_after } => format!(
                "Together AI is rate limiting your key; retry in {} seconds.",
                retry_secs(*retry_after)
            ),
            Self::UpstreamError => "Together AI failed to answer; retry later.".into(),
            Self::UpstreamTimeout => "Together AI did not answer in time; retry later.".into(),
            Self::VaultOpenFailed => {
                "A stored API key could not be decrypted; set it again, or ask the operator to check the encryption keys."
                    .into()
            }
            Self::Internal(_) => "Something went wrong on our side.".into(),
        }
    }
}

fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:authvault:problem:validation_failed",
    "title": "The request is not valid",
    "status": 400,
    "code": "validation_failed",
    "detail": "One or more fields are invalid; see errors.",
    "errors": {"email": ["must be a valid email address"]}
}))]
pub struct Problem {
    /// `urn:authvault:problem:{code}`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    /// Stable machine-readable code, one of `ErrorCode`.
    #[schema(schema_with = error_code_schema)]
    pub code: String,
    pub detail: String,
    /// Field name to messages, on `validation_failed` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<BTreeMap<String, Vec<String>>>,
}

/// `Problem.code` refers to the `ErrorCode` enum that `openapi.rs` adds to the document.
fn error_code_schema() -> utoipa::openapi::schema::RefBuilder {
    utoipa::openapi::schema::RefBuilder::new()
        .ref_location_from_schema_name("ErrorCode")
        .description(Some("Stable machine-readable code, one of `ErrorCode`."))
}

impl From<&ApiError> for Problem {
    fn from(error: &ApiError) -> Self {
        let kind = error.kind();
        Self {
            type_: format!("urn:authvault:problem:{}", kind.code),
            title: kind.title.into(),
            status: kind.status.as_u16(),
            code: kind.code.into(),
            detail: error.detail(),
            errors: match error {
                ApiError::Validation(errors) => Some(errors.clone().into_map()),
                _ => None,
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.kind().status
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(cause) = self {
            log::error!("internal error: {cause:#}");
        }
        let mut res = HttpResponse::build(self.status_code());
        match self {
            Self::RateLimited { retry_after } | Self::UpstreamRateLimited { retry_after } => {
                res.insert_header((header::RETRY_AFTER, retry_secs(*retry_after).to_string()));
            }
            Self::MethodNotAllowed { allow: Some(allow) } => {
                if let Ok(value) = HeaderValue::from_str(allow) {
                    res.insert_header((header::ALLOW, value));
                }
            }
            Self::Unauthenticated
            | Self::InvalidCredentials
            | Self::ReauthRequired
            | Self::InvalidRefresh
            | Self::RefreshReused => {
                res.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            _ => {}
        }
        res.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        res.content_type("application/problem+json")
            .json(Problem::from(self))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => {
                crate::metrics::metrics()
                    .store_errors
                    .with_label_values(&["unavailable"])
                    .inc();
                log::warn!("store unavailable: {cause:#}");
                Self::StoreUnavailable
            }
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict => Self::internal(anyhow::anyhow!("unexpected store conflict")),
            StoreError::Other(cause) => {
                crate::metrics::metrics()
                    .store_errors
                    .with_label_values(&["other"])
                    .inc();
                Self::Internal(cause)
            }
        }
    }
}

impl From<crate::domain::FieldError> for ApiError {
    fn from(error: crate::domain::FieldError) -> Self {
        Self::Validation(error.into())
    }
}

impl From<crate::upstream::UpstreamError> for ApiError {
    fn from(error: crate::upstream::UpstreamError) -> Self {
        use crate::upstream::UpstreamError as U;
        let outcome = match &error {
            U::KeyRejected => "key_rejected",
            U::RateLimited { .. } => "rate_limited",
            U::Timeout => "timeout",
            U::Failed(_) => "error",
        };
        crate::metrics::metrics()
            .upstream
            .with_label_values(&["together", outcome])
            .inc();
        match error {
            U::KeyRejected => Self::UpstreamKeyRejected,
            U::RateLimited { retry_after } => Self::UpstreamRateLimited { retry_after },
            U::Timeout => Self::UpstreamTimeout,
            U::Failed(why) => {
                log::warn!("upstream failure: {why}");
                Self::UpstreamError
            }
        }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(errors: FieldErrors) -> Self {
        Self::Validation(errors)
    }
}

/// Every stable error code, for the OpenAPI description.
pub const ALL_CODES: &[&str] = &[
    "validation_failed",
    "email_taken",
    "invalid_credentials",
    "unauthenticated",
    "reauth_required",
    "csrf_failed",
    "origin_forbidden",
    "not_found",
    "unknown_provider",
    "method_not_allowed",
    "payload_too_large",
    "unsupported_media_type",
    "rate_limited",
    "store_unavailable",
    "vault_open_failed",
    "missing_api_key",
    "invalid_callback_url",
    "invalid_state",
    "account_not_linked",
    "email_not_verified",
    "provider_error",
    "invalid_code",
    "last_sign_in_method",
    "invalid_token",
    "already_verified",
    "mail_unavailable",
    "invalid_refresh",
    "refresh_reused",
    "upstream_key_rejected",
    "upstream_rate_limited",
    "upstream_error",
    "upstream_timeout",
    "internal",
];

/// Malformed path parameters.
pub fn path_error_handler(_err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound.into()
}

/// Malformed query strings.
pub fn query_error_handler(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let message = match err {
        QueryPayloadError::Deserialize(e) => e.to_string(),
        _ => "could not be read".into(),
    };
    ApiError::field("query", &message).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_code_is_listed() {
        let samples = [
            ApiError::Validation(FieldErrors::new()),
            ApiError::EmailTaken,
            ApiError::InvalidCredentials,
            ApiError::Unauthenticated,
            ApiError::ReauthRequired,
            ApiError::CsrfFailed,
            ApiError::OriginForbidden,
            ApiError::NotFound,
            ApiError::UnknownProvider,
            ApiError::MethodNotAllowed { allow: None },
            ApiError::PayloadTooLarge,
            ApiError::UnsupportedMediaType,
            ApiError::RateLimited {
                retry_after: Duration::from_millis(1500),
            },
            ApiError::StoreUnavailable,
            ApiError::VaultOpenFailed,
            ApiError::MissingApiKey,
            ApiError::InvalidCallbackUrl,
            ApiError::InvalidState,
            ApiError::AccountNotLinked,
            ApiError::EmailNotVerified,
            ApiError::ProviderError,
            ApiError::InvalidCode,
            ApiError::LastSignInMethod,
            ApiError::InvalidToken,
            ApiError::AlreadyVerified,
            ApiError::MailUnavailable,
            ApiError::InvalidRefresh,
            ApiError::RefreshReused,
            ApiError::UpstreamKeyRejected,
            ApiError::UpstreamRateLimited {
                retry_after: Duration::from_secs(3),
            },
            ApiError::UpstreamError,
            ApiError::UpstreamTimeout,
            ApiError::internal(anyhow::anyhow!("x")),
        ];
        for e in &samples {
            assert!(
                ALL_CODES.contains(&e.kind().code),
                "{} missing",
                e.kind().code
            );
        }
        assert_eq!(samples.len(), ALL_CODES.len());
    }

    #[test]
    fn an_internal_cause_never_reaches_the_body() {
        let e = ApiError::internal(anyhow::anyhow!("connection string mongodb://u:p@h"));
        let p = Problem::from(&e);
        let body = serde_json::to_string(&p).unwrap();
        assert!(!body.contains("mongodb"));
        assert_eq!(p.code, "internal");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_secs(Duration::from_secs(3)), 3);
    }
}
