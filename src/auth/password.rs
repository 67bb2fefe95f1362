//! bcrypt hashing, always on the blocking pool and bounded, so that a flood of sign-ins queues
//! instead of starving every other request.

use std::{sync::Arc, time::Duration};

use anyhow::anyhow;
use tokio::sync::Semaphore;

use crate::{domain::Password, error::ApiError};

/// Hashes and verifies passwords at the configured cost.
#[derive(Clone)]
pub struct Hasher {
    cost: u32,
    permits: Arc<Semaphore>,
    queue_timeout: Duration,
    /// A hash of a random password at `cost`: unknown emails are checked against it, so that
    /// they cost the same time as known ones.
    dummy_hash: Arc<String>,
}

impl Hasher {
    /// Builds the hasher; computing the dummy hash costs one bcrypt run.
    pub fn new(cost: u32, parallelism: usize, queue_timeout: Duration) -> anyhow::Result<Self> {
        let random: [u8; 18] = crate::random::bytes();
        let dummy = bcrypt::hash(random, cost)?;
        Ok(Self {
            cost,
            permits: Arc::new(Semaphore::new(parallelism.max(1))),
            queue_timeout,
            dummy_hash: Arc::new(dummy),
        })
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// Runs one bcrypt job on the blocking pool once a permit is free; a job that waited longer
    /// than the queue timeout is answered 503 instead.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| ApiError::StoreUnavailable)?
            .map_err(ApiError::internal)?;
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(|e| ApiError::internal(anyhow!("bcrypt task failed: {e}")))?;
        result.map_err(ApiError::internal)
    }

    /// Hashes a validated password.
    pub async fn hash(&self, password: &Password) -> Result<String, ApiError> {
        let raw = zeroize::Zeroizing::new(password.expose().to_owned());
        let cost = self.cost;
        // `Password` holds at most 72 bytes, all of which bcrypt uses; its `non_truncating_*`
        // functions also count the NUL terminator and so would refuse exactly 72.
        self.run(move || bcrypt::hash(raw.as_bytes(), cost)).await
    }

    /// Checks a password against a stored hash, or against the dummy hash when there is none,
    /// so that both cases take one bcrypt run. A password bcrypt would truncate never matches.
    pub async fn verify(&self, password: &Password, hash: Option<&str>) -> Result<bool, ApiError> {
        let fits = password.fits_bcrypt();
        let known = hash.is_some();
        let hash = hash.map_or_else(|| self.dummy_hash.as_str().to_owned(), str::to_owned);
        let mut raw = zeroize::Zeroizing::new(password.expose().to_owned());
        if !fits {
            let cut = raw.floor_char_boundary(72);
            raw.truncate(cut);
        }
        let matched = self
            .run(move || match bcrypt::verify(raw.as_bytes(), &hash) {
                Ok(ok) => Ok(ok),
                // A stored hash we cannot read is a failed check, not a 500 to the caller.
                Err(
                    bcrypt::BcryptError::InvalidHash(_) | bcrypt::BcryptError::InvalidPrefix(_),
                ) => Ok(false),
                Err(e) => Err(e),
            })
            .await?;
        Ok(matched && known && fits)
    }

    /// Whether a stored hash was made at another cost and should be re-hashed.
    pub fn needs_rehash(&self, hash: &str) -> bool {
        stored_cost(hash).is_none_or(|cost| cost != self.cost)
    }
}

/// The cost field of a `$2b$12$...` hash.
fn stored_cost(hash: &str) -> Option<u32> {
    let mut parts = hash.split('$');
    parts.next()?;
    parts.next()?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> Hasher {
        Hasher::new(4, 2, Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn a_hashed_password_verifies_and_a_wrong_one_does_not() {
        let h = hasher();
        let pw = Password::parse("correct horse battery", "password").unwrap();
        let hash = h.hash(&pw).await.unwrap();
        assert!(h.verify(&pw, Some(&hash)).await.unwrap());
        let wrong = Password::candidate("correct horse battery!");
        assert!(!h.verify(&wrong, Some(&hash)).await.unwrap());
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies_even_with_the_dummy_password() {
        let h = hasher();
        assert!(!h
            .verify(&Password::candidate("anything"), None)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_password_over_72_bytes_never_matches_its_truncation() {
        let h = hasher();
        let pw = Password::parse(&"x".repeat(72), "password").unwrap();
        let hash = h.hash(&pw).await.unwrap();
        assert!(
            h.verify(&pw, Some(&hash)).await.unwrap(),
            "72 bytes is allowed"
        );
        let shorter = Password::candidate(&"x".repeat(71));
        assert!(
            !h.verify(&shorter, Some(&hash)).await.unwrap(),
            "every byte counts"
        );
        let longer = Password::candidate(&"x".repeat(80));
        assert!(!h.verify(&longer, Some(&hash)).await.unwrap());
    }

    #[test]
    fn a_hash_of_another_cost_needs_rehashing() {
        let h = hasher();
        assert!(!h.needs_rehash("$2b$04$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234"));
        assert!(h.needs_rehash("$2b$10$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234"));
        assert!(h.needs_rehash("garbage"));
    }
}
