//! Calls to outside services. Each returns `UpstreamError`; none knows about HTTP handlers.

use std::time::Duration;

pub mod github;
pub mod google;
pub mod sse;
pub mod together;

/// How an outside call failed, in the terms the API reports. Never holds a response body.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The provider refused the user's key (401 or 403).
    #[error("the provider rejected the key")]
    KeyRejected,
    /// The provider is rate limiting this key (429).
    #[error("the provider is rate limiting")]
    RateLimited { retry_after: Duration },
    /// No answer within the configured time.
    #[error("the provider did not answer in time")]
    Timeout,
    /// Anything else: an unexpected status, a broken connection, an unreadable answer.
    #[error("provider failure: {0}")]
    Failed(String),
}

/// Counts the outcome of one call to an outside service, and logs a failure: the one place
/// upstream outcomes are recorded (`authvault_upstream_requests_total`).
pub fn observe(provider: &str, outcome: Result<(), &UpstreamError>) {
    let label = match outcome {
        Ok(()) => "ok",
        Err(UpstreamError::KeyRejected) => "key_rejected",
        Err(UpstreamError::RateLimited { .. }) => "rate_limited",
        Err(UpstreamError::Timeout) => "timeout",
        Err(UpstreamError::Failed(_)) => "error",
    };
    if let Err(e) = outcome {
        log::warn!("{provider} call failed: {e}");
    }
    crate::metrics::metrics()
        .upstream
        .with_label_values(&[provider, label])
        .inc();
}

impl UpstreamError {
    /// Maps a transport error without its URL or body.
    pub fn from_transport(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else if e.is_connect() {
            Self::Failed("could not connect".into())
        } else if e.is_decode() {
            Self::Failed("unreadable answer".into())
        } else {
            Self::Failed("connection failed".into())
        }
    }
}
