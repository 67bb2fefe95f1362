//! Rate limits counted in the store, so that several instances enforce one limit. Windows are
//! computed from stored timestamps; keys are hashed so that the table holds no emails or IPs.

use std::{sync::Arc, time::Duration};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::ClientIp;
use crate::{clock, domain::Email, error::ApiError, store::Store};

const MINUTE: Duration = Duration::from_secs(60);

/// The configured limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub signin_max_failures: u32,
    pub signin_max_failures_per_email: u32,
    pub signin_window: Duration,
    pub ip_per_min: u32,
    pub generate_per_min: u32,
}

#[derive(Clone)]
pub struct RateLimiter {
    store: Arc<dyn Store>,
    limits: Limits,
}

fn key(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl RateLimiter {
    pub fn new(store: Arc<dyn Store>, limits: Limits) -> Self {
        Self { store, limits }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// `RateLimited` when `key` already has `max` events in the window ending now.
    async fn check(
        &self,
        limit: &'static str,
        key: &str,
        max: u32,
        window: Duration,
        now: OffsetDateTime,
    ) -> Result<(), ApiError> {
        let seen = self.store.count_events(key, now - window).await?;
        if seen.count < u64::from(max) {
            return Ok(());
        }
        crate::metrics::metrics()
            .rate_limited
            .with_label_values(&[limit])
            .inc();
        let oldest = seen.oldest.unwrap_or(now);
        let retry_after = (oldest + window - now).max(time::Duration::seconds(1));
        Err(ApiError::RateLimited {
            retry_after: retry_after.try_into().unwrap_or(window),
        })
    }

    /// Counts one request against a per-minute budget, refusing it once the budget is spent.
    async fn take(&self, limit: &'static str, key: &str, per_min: u32) -> Result<(), ApiError> {
        if per_min == 0 {
            return Ok(());
        }
        let now = clock::now();
        self.check(limit, key, per_min, MINUTE, now).await?;
        self.store.record_event(key, now, now + MINUTE).await?;
        Ok(())
    }

    /// The per-IP budget of the credential endpoints.
    pub async fn credential_request(&self, ip: ClientIp) -> Result<(), ApiError> {
        self.take(
            "ip",
            &key(&["ip", &ip.0.to_string()]),
            self.limits.ip_per_min,
        )
        .await
    }

    /// The per-user budget of `/api/generate`.
    pub async fn generate_request(&self, user: &str) -> Result<(), ApiError> {
        self.take(
            "generate",
            &key(&["generate", user]),
            self.limits.generate_per_min,
        )
        .await
    }

    /// The per-address budget of mail requests (`kind`: verify, reset): 5 per 15 minutes.
    pub async fn mail_request(&self, kind: &'static str, address: &str) -> Result<(), ApiError> {
        const WINDOW: Duration = Duration::from_secs(15 * 60);
        let key = key(&["mail", kind, address]);
        let now = clock::now();
        self.check("mail", &key, 5, WINDOW, now).await?;
        self.store.record_event(&key, now, now + WINDOW).await?;
        Ok(())
    }

    fn signin_keys(email: &Email, ip: ClientIp) -> (String, String) {
        let ip = ip.0.to_string();
        (
            key(&["signin-fail", email.as_str(), &ip]),
            key(&["signin-fail", email.as_str()]),
        )
    }

    /// Refuses a sign-in for `email` from `ip` once either failure limit is reached, even before
    /// the password is looked at.
    pub async fn check_signin(&self, email: &Email, ip: ClientIp) -> Result<(), ApiError> {
        let (per_ip, per_email) = Self::signin_keys(email, ip);
        let now = clock::now();
        let window = self.limits.signin_window;
        self.check(
            "signin_ip",
            &per_ip,
            self.limits.signin_max_failures,
            window,
            now,
        )
        .await?;
        self.check(
            "signin_email",
            &per_email,
            self.limits.signin_max_failures_per_email,
            window,
            now,
        )
        .await
    }

    /// Counts a failed sign-in against both limits.
    pub async fn signin_failed(&self, email: &Email, ip: ClientIp) -> Result<(), ApiError> {
        let (per_ip, per_email) = Self::signin_keys(email, ip);
        let now = clock::now();
        let until = now + self.limits.signin_window;
        self.store.record_event(&per_ip, now, until).await?;
        self.store.record_event(&per_email, now, until).await?;
        Ok(())
    }

    /// A successful sign-in forgets that client's failures (not the per-email total, which
    /// tracks a distributed guess).
    pub async fn signin_succeeded(&self, email: &Email, ip: ClientIp) -> Result<(), ApiError> {
        let (per_ip, _) = Self::signin_keys(email, ip);
        self.store.clear_events(&per_ip).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn keys_are_fixed_size_and_do_not_contain_their_parts() {
        let k = key(&["signin-fail", "ada@example.com", "127.0.0.1"]);
        assert_eq!(k.len(), 32);
        assert!(!k.contains("ada"));
        assert_ne!(k, key(&["signin-fail", "ada@example.com127.0.0.1"]));
    }
}
