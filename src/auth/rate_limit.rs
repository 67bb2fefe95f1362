//! Rate limits counted in the store, so that several instances enforce one limit. Windows are
//! computed from stored timestamps; keys are hashed so that the table holds no emails or IPs.
//!
//! Every limit reserves its slot in one atomic store step before the work it guards, so a
//! concurrent burst gets at most the limit, and a refused request (429) adds nothing. A failed
//! sign-in is a reservation that stands; a successful one gives its reservations back.

use std::{sync::Arc, time::Duration};

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::ClientIp;
use crate::{
    clock,
    domain::Email,
    error::ApiError,
    store::{EventSlot, RateLimitStore, Reserved},
};

const MINUTE: Duration = Duration::from_secs(60);

pub use crate::config::Limits;

#[derive(Clone)]
pub struct RateLimiter {
    store: Arc<dyn RateLimitStore>,
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

/// One reserved slot under a key.
#[derive(Debug)]
struct Slot {
    key: String,
    id: Uuid,
}

/// A credential check in progress for one email from one client: it holds a failure slot in
/// each sign-in limit. Dropped as it is, both stand as a failure; [`RateLimiter::passed`] gives
/// them back.
#[must_use = "a checked credential gives its slots back with `passed`"]
#[derive(Debug)]
pub struct CredentialCheck {
    per_client: Slot,
    per_email: Slot,
}

impl RateLimiter {
    pub fn new(store: Arc<dyn RateLimitStore>, limits: Limits) -> Self {
        Self { store, limits }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Reserves one event under `key` in the window ending now, or `RateLimited` (recording
    /// nothing) when `max` are there already.
    async fn reserve(
        &self,
        limit: &'static str,
        key: String,
        max: u32,
        window: Duration,
    ) -> Result<Slot, ApiError> {
        let now = clock::now();
        let slot = EventSlot {
            id: Uuid::new_v4(),
            at: now,
            since: now - window,
            max,
            expires_at: now + window,
        };
        match self.store.reserve_event(&key, slot).await? {
            Reserved::Yes => Ok(Slot { key, id: slot.id }),
            Reserved::Full { oldest } => {
                crate::metrics::metrics()
                    .rate_limited
                    .with_label_values(&[limit])
                    .inc();
                let oldest = oldest.unwrap_or(now);
                let retry_after = (oldest + window - now).max(time::Duration::seconds(1));
                Err(ApiError::RateLimited {
                    retry_after: retry_after.try_into().unwrap_or(window),
                })
            }
        }
    }

    /// Counts one request against a per-minute budget, refusing it once the budget is spent.
    async fn take(&self, limit: &'static str, key: String, per_min: u32) -> Result<(), ApiError> {
        if per_min == 0 {
            return Ok(());
        }
        self.reserve(limit, key, per_min, MINUTE).await.map(drop)
    }

    /// The per-IP budget of the credential endpoints.
    pub async fn credential_request(&self, ip: ClientIp) -> Result<(), ApiError> {
        self.take("ip", key(&["ip", &ip.limit_key()]), self.limits.ip_per_min)
            .await
    }

    /// The per-user budget of `/api/generate`.
    pub async fn generate_request(&self, user: &str) -> Result<(), ApiError> {
        self.take(
            "generate",
            key(&["generate", user]),
            self.limits.generate_per_min,
        )
        .await
    }

    /// The per-address budget of mail requests (`kind`: verify, reset): 5 per 15 minutes.
    pub async fn mail_request(&self, kind: &'static str, address: &str) -> Result<(), ApiError> {
        const WINDOW: Duration = Duration::from_secs(15 * 60);
        self.reserve("mail", key(&["mail", kind, address]), 5, WINDOW)
            .await
            .map(drop)
    }

    /// The per-address budget of emailed sign-in links: 5 per hour. `RateLimited` when spent.
    pub async fn email_link_request(&self, address: &str) -> Result<(), ApiError> {
        const WINDOW: Duration = Duration::from_secs(60 * 60);
        self.reserve("mail", key(&["mail", "signin-link", address]), 5, WINDOW)
            .await
            .map(drop)
    }

    fn signin_keys(email: &Email, ip: ClientIp) -> (String, String) {
        (
            key(&["signin-fail", email.as_str(), &ip.limit_key()]),
            key(&["signin-fail", email.as_str()]),
        )
    }

    /// Before a credential of `email` is checked for a client at `ip` (a password, and later a
    /// second-factor code): reserves a failure slot in the per-client limit, then in the
    /// per-email one. `RateLimited` when either is full, even before the credential is looked
    /// at; then nothing is counted. Since only a client with room in its own limit reaches the
    /// per-email one, one client adds at most its own limit to the per-email count.
    pub async fn check_credential(
        &self,
        email: &Email,
        ip: ClientIp,
    ) -> Result<CredentialCheck, ApiError> {
        let (per_client, per_email) = Self::signin_keys(email, ip);
        let window = self.limits.signin_window;
        let per_client = self
            .reserve(
                "signin_ip",
                per_client,
                self.limits.signin_max_failures,
                window,
            )
            .await?;
        match self
            .reserve(
                "signin_email",
                per_email,
                self.limits.signin_max_failures_per_email,
                window,
            )
            .await
        {
            Ok(per_email) => Ok(CredentialCheck {
                per_client,
                per_email,
            }),
            Err(e) => {
                // Refused: this attempt counts nowhere.
                self.store
                    .release_event(&per_client.key, per_client.id)
                    .await?;
                Err(e)
            }
        }
    }

    /// Gives a check's slots back without forgetting anything (the request was refused for
    /// another reason before its credential counted).
    pub async fn release(&self, check: CredentialCheck) -> Result<(), ApiError> {
        self.store
            .release_event(&check.per_client.key, check.per_client.id)
            .await?;
        self.store
            .release_event(&check.per_email.key, check.per_email.id)
            .await?;
        Ok(())
    }

    /// Before a code is checked against an `mfaToken` (by its hash): reserves one of its `max`
    /// wrong-code slots, or `RateLimited` when they are spent. Slots are never given back: the
    /// token is single use, so a right code ends it anyway.
    pub async fn mfa_attempt(&self, token_hash: &str, max: u32) -> Result<MfaAttempt, ApiError> {
        const WINDOW: Duration = Duration::from_secs(10 * 60);
        let key = key(&["mfa-token", token_hash]);
        self.reserve("mfa_token", key.clone(), max, WINDOW).await?;
        let since = clock::now() - WINDOW;
        let window = self.store.count_events(&key, since).await?;
        Ok(MfaAttempt {
            was_last: window.count >= u64::from(max),
        })
    }

    /// The credential checked out: the client's failures are forgotten (not the per-email
    /// total, which tracks a distributed guess), and this attempt's slot there is given back.
    pub async fn passed(&self, check: CredentialCheck) -> Result<(), ApiError> {
        self.store.clear_events(&check.per_client.key).await?;
        self.store
            .release_event(&check.per_email.key, check.per_email.id)
            .await?;
        Ok(())
    }
}

/// One wrong-code slot of an `mfaToken`.
#[derive(Debug)]
pub struct MfaAttempt {
    /// This attempt took the token's last slot: a wrong code now spends the token.
    pub was_last: bool,
}

/// A request to a credential endpoint, counted against its client's per-IP budget before the
/// handler runs (429 `rate_limited` once it is spent). Put it after the body extractor, so that a
/// body refused as malformed is not counted.
#[derive(Debug, Clone, Copy)]
pub struct CredentialBudget(pub ClientIp);

impl actix_web::FromRequest for CredentialBudget {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        match super::session::app_state(req) {
            Ok(state) => {
                let ip = ClientIp::resolve(req, &state.settings.server.trusted_proxies);
                Box::pin(async move {
                    state.limiter.credential_request(ip).await?;
                    Ok(Self(ip))
                })
            }
            Err(e) => Box::pin(async move { Err(e) }),
        }
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
