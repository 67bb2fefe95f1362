//! bcrypt hashing, always off the async workers and bounded, so that a flood of sign-ins queues
//! instead of starving every other request: it runs on threads of its own (one per core) at a
//! lower CPU priority than the workers, behind a semaphore with a queue timeout.

use std::{
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use anyhow::anyhow;
use tokio::sync::{oneshot, Semaphore};

use crate::{domain::Password, error::ApiError};

/// Hashes and verifies passwords at the configured cost.
#[derive(Clone)]
pub struct Hasher {
    cost: u32,
    permits: Arc<Semaphore>,
    /// The hashing threads' queue; the permits keep it from ever holding more than one job per
    /// thread.
    jobs: mpsc::SyncSender<Job>,
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
        let threads = parallelism.max(1);
        Ok(Self {
            cost,
            permits: Arc::new(Semaphore::new(threads)),
            jobs: spawn_hashing_threads(threads)?,
            queue_timeout,
            dummy_hash: Arc::new(dummy),
        })
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// Runs one bcrypt job on a hashing thread once a permit is free; a job that waited longer
    /// than the queue timeout is answered 503 instead.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| ApiError::StoreUnavailable(None))?
            .map_err(ApiError::internal)?;
        let (done, result) = oneshot::channel();
        self.jobs
            .try_send(Box::new(move || {
                let _permit = permit;
                // The caller may be gone (its request was cancelled): nobody to tell.
                let _ = done.send(job());
            }))
            .map_err(|e| ApiError::internal(anyhow!("bcrypt queue refused a job: {e}")))?;
        result
            .await
            .map_err(|_| ApiError::internal(anyhow!("a bcrypt thread dropped its job")))?
            .map_err(ApiError::internal)
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
type Job = Box<dyn FnOnce() + Send>;

/// Starts `threads` hashing threads, each at a lower priority than the async workers, fed by one
/// queue. They end when every `Hasher` holding the queue is dropped.
fn spawn_hashing_threads(threads: usize) -> std::io::Result<mpsc::SyncSender<Job>> {
    let (jobs, queue) = mpsc::sync_channel::<Job>(threads);
    let queue = Arc::new(Mutex::new(queue));
    for i in 0..threads {
        let queue = queue.clone();
        std::thread::Builder::new()
            .name(format!("bcrypt-{i}"))
            .spawn(move || {
                lower_priority();
                loop {
                    // The lock is held only while waiting for the next job, never while hashing.
                    let next = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    match next {
                        // A job that panics loses only itself (its caller gets a 500): the
                        // thread goes on with the next one.
                        Ok(job) => {
                            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err()
                            {
                                log::error!("a bcrypt job panicked");
                            }
                        }
                        Err(_) => return,
                    }
                }
            })?;
    }
    Ok(jobs)
}

/// How much nicer than the process the hashing threads are: the scheduler then gives a waking
/// worker the CPU at once, while bcrypt still gets every cycle nobody else wants.
pub const HASHING_NICE_INCREMENT: i32 = 10;

/// The nice value hashing threads take in a process whose nice value is `process`.
pub fn hashing_nice(process: i32) -> i32 {
    (process + HASHING_NICE_INCREMENT).min(19)
}

/// Lowers the calling thread's priority (on Linux a nice value is per thread). Lowering needs
/// no privilege; where it fails, hashing simply runs at the normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpriority and setpriority take plain integers and touch no memory of ours;
        // `who` 0 names the calling thread.
        let rc = unsafe {
            let current = libc::getpriority(libc::PRIO_PROCESS, 0);
            libc::setpriority(libc::PRIO_PROCESS, 0, hashing_nice(current))
        };
        if rc != 0 {
            log::warn!(
                "bcrypt threads run at normal priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

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

    /// The nice value of each of this process's threads with this name.
    #[cfg(target_os = "linux")]
    fn nice_of_threads(name: &str) -> Vec<i32> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
            // Fields after the parenthesised command: state is field 3, nice field 19.
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            found.push(after.split(' ').nth(16).unwrap().parse().unwrap());
        }
        found
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_runs_on_its_own_threads_below_the_workers_priority() {
        let h = Hasher::new(4, 3, Duration::from_secs(5)).unwrap();
        let pw = Password::parse("correct horse battery", "password").unwrap();
        // Many jobs at once: the permits queue them, the three threads take them all.
        let hashes = futures_util::future::join_all((0..12).map(|_| h.hash(&pw))).await;
        for hash in hashes {
            assert!(h.verify(&pw, Some(&hash.unwrap())).await.unwrap());
        }
        // The test's own thread stands in for an async worker: it keeps its priority, and the
        // hashing threads are nicer.
        let this: i32 = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let nice = nice_of_threads("bcrypt-2");
        assert!(!nice.is_empty(), "no bcrypt thread found");
        assert!(nice.iter().all(|n| *n == hashing_nice(this)), "{nice:?}");
        assert!(hashing_nice(this) > this || this == 19);
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
