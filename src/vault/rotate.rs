//! Re-sealing every stored key (API keys and TOTP secrets) with the newest encryption key.
//!
//! Safe to interrupt and re-run (each key is replaced atomically, and keys already sealed with
//! the newest key are skipped), and safe beside a serving instance: a key is replaced only if it
//! still holds the seal that was read, so a change the user made meanwhile always wins.

use super::KeyRing;
use crate::{
    domain::{SealedKey, UserId},
    store::{MfaStore, Store, StoreError, StoredKey, TotpSeal},
};

const PAGE: u32 = 100;
const ATTEMPTS: usize = 5;

/// What a rotation run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RotationReport {
    /// Keys re-sealed with the newest encryption key.
    pub resealed: u64,
    /// Keys that needed nothing: already sealed with the newest key, or removed meanwhile.
    pub current: u64,
    /// Keys that could not be opened (their encryption key is missing or they were tampered).
    pub failed: u64,
}

impl RotationReport {
    pub fn done(&self) -> u64 {
        self.resealed + self.current + self.failed
    }
}

/// Progress as the run goes; the command line shows it as a bar or as lines.
pub enum Progress<'a> {
    Started {
        total: u64,
    },
    Advanced {
        report: &'a RotationReport,
    },
    Failed {
        user: UserId,
        /// Which secret: `togetherAI key`, `TOTP secret`, ...
        what: &'a str,
        key_id: &'a str,
    },
}

enum Outcome {
    Resealed,
    Current,
    Failed,
}

async fn rotate_one(
    store: &dyn Store,
    ring: &KeyRing,
    user: UserId,
    mut key: StoredKey,
) -> Result<Outcome, StoreError> {
    for _ in 0..ATTEMPTS {
        if key.sealed.key_id == ring.current_id() {
            return Ok(Outcome::Current);
        }
        let Ok(plaintext) = ring.open(user, key.provider, &key.sealed) else {
            return Ok(Outcome::Failed);
        };
        let resealed = ring
            .seal(
                user,
                key.provider,
                secrecy::ExposeSecret::expose_secret(&plaintext),
            )
            .map_err(|e| StoreError::Other(e.into()))?;
        if store
            .reseal_api_key(user, key.provider, &key.sealed.nonce, &resealed)
            .await?
        {
            return Ok(Outcome::Resealed);
        }
        // The user changed or removed the key meanwhile: look again.
        match store
            .api_keys(user)
            .await?
            .into_iter()
            .find(|k| k.provider == key.provider)
        {
            Some(fresh) => key = fresh,
            None => return Ok(Outcome::Current),
        }
    }
    Ok(Outcome::Failed)
}

async fn rotate_totp(
    store: &dyn MfaStore,
    ring: &KeyRing,
    user: UserId,
    which: TotpSeal,
    mut sealed: SealedKey,
) -> Result<Outcome, StoreError> {
    let context = format!("totp|{user}");
    for _ in 0..ATTEMPTS {
        if sealed.key_id == ring.current_id() {
            return Ok(Outcome::Current);
        }
        let Ok(plaintext) = ring.open_secret(&context, &sealed) else {
            return Ok(Outcome::Failed);
        };
        let resealed = ring
            .seal_secret(&context, secrecy::ExposeSecret::expose_secret(&plaintext))
            .map_err(|e| StoreError::Other(e.into()))?;
        if store
            .reseal_totp(user, which, &sealed.nonce, &resealed)
            .await?
        {
            return Ok(Outcome::Resealed);
        }
        // Enrolled again, confirmed or turned off meanwhile: look again.
        let record = store.mfa(user).await?.unwrap_or_default();
        match match which {
            TotpSeal::Confirmed => record.secret,
            TotpSeal::Pending => record.pending,
        } {
            Some(fresh) => sealed = fresh,
            None => return Ok(Outcome::Current),
        }
    }
    Ok(Outcome::Failed)
}

fn count(report: &mut RotationReport, outcome: Outcome) -> bool {
    match outcome {
        Outcome::Resealed => report.resealed += 1,
        Outcome::Current => report.current += 1,
        Outcome::Failed => {
            report.failed += 1;
            return false;
        }
    }
    true
}

/// Re-seals every API key and TOTP secret not sealed with `ring`'s newest key.
pub async fn rotate_all(
    store: &dyn Store,
    ring: &KeyRing,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<RotationReport, StoreError> {
    progress(Progress::Started {
        total: store.count_api_keys().await? + store.count_totp().await?,
    });
    let mut report = RotationReport::default();
    let mut after = None;
    loop {
        let page = store.api_keys_page(after, PAGE).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(*last);
        for (user, keys) in page {
            for key in keys {
                let (provider, key_id) = (key.provider, key.sealed.key_id.clone());
                if !count(&mut report, rotate_one(store, ring, user, key).await?) {
                    progress(Progress::Failed {
                        user,
                        what: &format!("{provider} key"),
                        key_id: &key_id,
                    });
                }
            }
            progress(Progress::Advanced { report: &report });
        }
    }
    let mut after = None;
    loop {
        let page = store.totp_page(after, PAGE).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(*last);
        for (user, seals) in page {
            for (which, sealed) in seals {
                let key_id = sealed.key_id.clone();
                if !count(
                    &mut report,
                    rotate_totp(store, ring, user, which, sealed).await?,
                ) {
                    progress(Progress::Failed {
                        user,
                        what: match which {
                            TotpSeal::Confirmed => "TOTP secret",
                            TotpSeal::Pending => "pending TOTP secret",
                        },
                        key_id: &key_id,
                    });
                }
            }
            progress(Progress::Advanced { report: &report });
        }
    }
    Ok(report)
}
