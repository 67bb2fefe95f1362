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

/// Declares `ApiError` and its table in one place: each variant with its stable code, HTTP
/// status, title and detail (`{retry}` stands for the seconds of a `retry_after`), and
/// `ALL_CODES` in the same order.
macro_rules! api_errors {
    ($(
        $(#[$doc:meta])*
        $variant:ident $(($($tuple:ty),*))? $({ $($field:ident: $fty:ty),* })?
            => $code:literal, $status:ident, $title:literal, $detail:literal;
    )+) => {
        /// Everything a request can fail with. Each variant has exactly one code, status, title
        /// and detail, in the table below.
        #[derive(Debug)]
        pub enum ApiError {
            $($(#[$doc])* $variant $(($($tuple),*))? $({ $($field: $fty),* })?,)+
        }

        impl ApiError {
            /// The variant's row of the table.
            pub fn kind(&self) -> ErrorKind {
                match self {
                    $(Self::$variant { .. } => ErrorKind {
                        code: $code,
                        status: StatusCode::$status,
                        title: $title,
                        detail: $detail,
                    },)+
                }
            }
        }

        /// Every variant's code, in table order (a code two variants share appears twice).
        pub const ALL_CODES: &[&str] = &[$($code),+];

        /// Every variant's code and status, in table order.
        const ROWS: &[(&str, StatusCode)] = &[$(($code, StatusCode::$status)),+];
    };
}

api_errors! {
    Validation(FieldErrors) => "validation_failed", BAD_REQUEST, "The request is not valid",
        "One or more fields are invalid; see errors.";
    EmailTaken => "email_taken", CONFLICT, "An account with this email already exists",
        "Sign in instead, or use another email address.";
    InvalidCredentials => "invalid_credentials", UNAUTHORIZED, "Invalid email or password",
        "The email or password is wrong.";
    Unauthenticated => "unauthenticated", UNAUTHORIZED, "Sign-in required",
        "Send the session cookie or an Authorization: Bearer token that is valid.";
    ReauthRequired => "reauth_required", UNAUTHORIZED, "Recent sign-in required",
        "This action needs a sign-in within the last 10 minutes; sign in again.";
    CsrfFailed => "csrf_failed", FORBIDDEN, "CSRF check failed",
        "Cookie-authenticated writes need the X-CSRF-Token header from GET /api/auth/csrf.";
    OriginForbidden => "origin_forbidden", FORBIDDEN, "Origin not allowed",
        "Requests from this origin are not allowed.";
    NotFound => "not_found", NOT_FOUND, "Not found", "No such resource.";
    UnknownProvider => "unknown_provider", NOT_FOUND, "Unknown provider",
        "No such provider is known or enabled.";
    MethodNotAllowed { allow: Option<String> } => "method_not_allowed", METHOD_NOT_ALLOWED,
        "Method not allowed", "This resource does not support that method.";
    PayloadTooLarge => "payload_too_large", PAYLOAD_TOO_LARGE, "Request body too large",
        "The request body is larger than this endpoint accepts.";
    UnsupportedMediaType => "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE,
        "Unsupported media type", "Send the body as application/json.";
    RateLimited { retry_after: Duration } => "rate_limited", TOO_MANY_REQUESTS,
        "Too many requests", "Too many attempts; retry in {retry} seconds.";
    /// The store did not answer (its cause, for the log), or the password hashers are busy.
    StoreUnavailable(Option<anyhow::Error>) => "store_unavailable", SERVICE_UNAVAILABLE, "Database unavailable",
        "The database did not answer in time; retry shortly.";
    VaultOpenFailed => "vault_open_failed", INTERNAL_SERVER_ERROR,
        "A stored key could not be decrypted",
        "A stored API key could not be decrypted; set it again, or ask the operator to check the encryption keys.";
    MissingApiKey => "missing_api_key", BAD_REQUEST, "No Together AI key is stored",
        "Store your Together AI key first: POST /api/user/api-keys with {\"togetherAI\": \"...\"}.";
    InvalidCallbackUrl => "invalid_callback_url", BAD_REQUEST, "Callback URL not allowed",
        "callbackUrl must be on the configured allow-list of origins or exact URLs.";
    InvalidState => "invalid_state", BAD_REQUEST, "Invalid or expired sign-in attempt",
        "The sign-in attempt is unknown, expired or already used; start it again.";
    AccountNotLinked => "account_not_linked", CONFLICT, "An account with this email exists",
        "An account with this email exists but the provider did not vouch for the address; sign in with your password and link the provider from there.";
    EmailNotVerified => "email_not_verified", CONFLICT,
        "The provider has not verified this email address",
        "The provider does not report this address as verified, so no account is made for it; verify the address with the provider, or sign up with a password.";
    ProviderError => "provider_error", BAD_GATEWAY, "The sign-in provider failed",
        "The sign-in provider failed or sent an answer that did not verify; try again.";
    InvalidCode => "invalid_code", BAD_REQUEST, "Invalid one-time code",
        "The code is unknown, used, expired, or the code verifier does not match.";
    /// A wrong or used code confirming an enrolment or a change to MFA of the signed-in user.
    BadMfaCode => "invalid_code", BAD_REQUEST, "Invalid code",
        "The authenticator or recovery code is wrong or was used already, or no enrolment is pending.";
    /// A wrong second-factor code at sign-in (`POST /api/auth/mfa/verify`).
    WrongCode => "invalid_code", UNAUTHORIZED, "Invalid code",
        "The authenticator or recovery code is wrong or was used already.";
    MfaAlreadyEnabled => "mfa_already_enabled", CONFLICT, "Two-factor sign-in is already on",
        "Turn it off first (DELETE /api/user/mfa) to enrol another authenticator.";
    InvalidMfaToken => "invalid_mfa_token", BAD_REQUEST, "Invalid or expired sign-in step",
        "The mfaToken is unknown, used, expired, or spent by too many wrong codes; sign in again.";
    InvalidPasskey => "invalid_passkey", BAD_REQUEST, "Invalid passkey ceremony",
        "The passkey ceremony is unknown, used, expired or another user's, or the authenticator's answer did not verify; start again.";
    /// A passkey sign-in whose answer did not verify (`POST /api/auth/passkey/finish`).
    PasskeyRejected => "invalid_credentials", UNAUTHORIZED, "Passkey not accepted",
        "The passkey is unknown, or its answer did not verify (signature, origin, user verification or sign counter); try again.";
    LastSignInMethod => "last_sign_in_method", CONFLICT, "This is the last way to sign in",
        "Set a password or link another provider before removing this one.";
    InvalidToken => "invalid_token", BAD_REQUEST, "Invalid or expired link",
        "The link is unknown, already used or expired; ask for a new one.";
    AlreadyVerified => "already_verified", CONFLICT, "The email address is already verified",
        "This address is verified already.";
    MailUnavailable => "mail_unavailable", SERVICE_UNAVAILABLE, "Mail delivery is not configured",
        "This server cannot send mail (no SMTP is configured); ask its operator.";
    InvalidRefresh => "invalid_refresh", UNAUTHORIZED, "Invalid refresh token",
        "The refresh token is unknown, expired, or its session ended; sign in again.";
    RefreshReused => "refresh_reused", UNAUTHORIZED, "Refresh token reused",
        "This refresh token was already used: the session is revoked for safety; sign in again.";
    UpstreamKeyRejected => "upstream_key_rejected", UNPROCESSABLE_ENTITY, "The provider rejected your API key",
        "Together AI refused the stored key; check it and store it again.";
    UpstreamRateLimited { retry_after: Duration } => "upstream_rate_limited", TOO_MANY_REQUESTS,
        "The provider is rate limiting your key", "Together AI is rate limiting your key; retry in {retry} seconds.";
    UpstreamError => "upstream_error", BAD_GATEWAY, "The provider failed",
        "Together AI failed to answer; retry later.";
    UpstreamTimeout => "upstream_timeout", GATEWAY_TIMEOUT, "The provider did not answer in time",
        "Together AI did not answer in time; retry later.";
    Internal(anyhow::Error) => "internal", INTERNAL_SERVER_ERROR, "Internal server error",
        "Something went wrong on our side.";
}

/// Every stable error code once, in table order, for the OpenAPI description.
pub fn codes() -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = Vec::with_capacity(ALL_CODES.len());
    for code in ALL_CODES {
        if !codes.contains(code) {
            codes.push(code);
        }
    }
    codes
}

/// Whether `code` answers with `status` (a code may answer with more than one, as `invalid_code`
/// does: 400 for a one-time code or an enrolment, 401 for a second factor at sign-in).
pub fn answers_with(code: &str, status: StatusCode) -> bool {
    ROWS.iter().any(|&(c, s)| c == code && s == status)
}

/// Code, HTTP status, title and detail of one kind of error.
pub struct ErrorKind {
    pub code: &'static str,
    pub status: StatusCode,
    pub title: &'static str,
    pub detail: &'static str,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The cause chain, for the server's log only (never in a body).
            Self::Internal(cause) => write!(f, "internal error: {cause:#}"),
            other => f.write_str(other.kind().code),
        }
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// Wraps an unexpected failure; its cause goes to the log, never to the client.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::Internal(cause.into())
    }

    /// A 400 naming one field.
    pub fn field(field: &str, message: &str) -> Self {
        Self::Validation(crate::domain::FieldError::new(field, message).into())
    }

    fn detail(&self) -> String {
        let detail = self.kind().detail;
        match self {
            Self::RateLimited { retry_after } | Self::UpstreamRateLimited { retry_after } => {
                detail.replace("{retry}", &retry_secs(*retry_after).to_string())
            }
            _ => detail.to_owned(),
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
        self.observe();
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

impl ApiError {
    /// Logs and counts an error as it is answered: the one place errors are recorded.
    /// (Outside calls are recorded where they end, by `upstream::observe`.)
    fn observe(&self) {
        let store_errors = || &crate::metrics::metrics().store_errors;
        match self {
            Self::StoreUnavailable(Some(cause)) => {
                store_errors().with_label_values(&["unavailable"]).inc();
                log::warn!("store unavailable: {cause:#}");
            }
            Self::Internal(cause) => {
                if cause.downcast_ref::<StoreFailure>().is_some() {
                    store_errors().with_label_values(&["other"]).inc();
                }
                log::error!("internal error: {cause:#}");
            }
            _ => {}
        }
    }
}

/// Marks an internal error that the store reported, for the store error count.
#[derive(Debug)]
struct StoreFailure;

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("store error")
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => Self::StoreUnavailable(Some(cause)),
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict => Self::internal(anyhow::anyhow!("unexpected store conflict")),
            StoreError::Other(cause) => Self::Internal(cause.context(StoreFailure)),
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
        match error {
            U::KeyRejected => Self::UpstreamKeyRejected,
            U::RateLimited { retry_after } => Self::UpstreamRateLimited { retry_after },
            U::Timeout => Self::UpstreamTimeout,
            U::Failed(_) => Self::UpstreamError,
        }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(errors: FieldErrors) -> Self {
        Self::Validation(errors)
    }
}

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
            ApiError::StoreUnavailable(None),
            ApiError::VaultOpenFailed,
            ApiError::MissingApiKey,
            ApiError::InvalidCallbackUrl,
            ApiError::InvalidState,
            ApiError::AccountNotLinked,
            ApiError::EmailNotVerified,
            ApiError::ProviderError,
            ApiError::InvalidCode,
            ApiError::WrongCode,
            ApiError::BadMfaCode,
            ApiError::MfaAlreadyEnabled,
            ApiError::InvalidMfaToken,
            ApiError::InvalidPasskey,
            ApiError::PasskeyRejected,
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
    fn store_errors_are_counted_once_as_they_are_answered() {
        let counter = |kind: &str| {
            crate::metrics::metrics()
                .store_errors
                .with_label_values(&[kind])
                .get()
        };
        let (other, unavailable) = (counter("other"), counter("unavailable"));
        let error = ApiError::from(StoreError::Other(anyhow::anyhow!("disk I/O error")));
        assert_eq!(error.kind().code, "internal");
        assert_eq!(counter("other"), other, "counted before it was answered");
        assert_eq!(error.error_response().status(), 500);
        assert_eq!(counter("other"), other + 1);

        let error = ApiError::from(StoreError::Unavailable(anyhow::anyhow!("timed out")));
        assert_eq!(error.error_response().status(), 503);
        assert_eq!(counter("unavailable"), unavailable + 1);
        // Busy password hashers answer 503 too, but the store is not at fault.
        assert_eq!(
            ApiError::StoreUnavailable(None).error_response().status(),
            503
        );
        assert_eq!(counter("unavailable"), unavailable + 1);
        assert_eq!(
            ApiError::internal(anyhow::anyhow!("other"))
                .error_response()
                .status(),
            500
        );
        assert_eq!(counter("other"), other + 1);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_secs(Duration::from_secs(3)), 3);
    }
}
