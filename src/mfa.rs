//! Multi-factor sign-in: TOTP authenticators (RFC 6238 with `totp-rs`: SHA-1, 6 digits, 30 s,
//! one step of skew each way) and recovery codes, and the second step every sign-in passes
//! through when the user has MFA on (`sessions::sign_in` asks for it, `verify` completes it).
//!
//! What is stored: the TOTP secret sealed with the vault's key ring (associated data: the user
//! and `totp`), the last accepted time step (a step is accepted once per user, across instances),
//! and HMAC-SHA-256 digests of the unused recovery codes keyed with a key derived from the server
//! secret. An `mfaToken` is a single-use secret stored by its hash, like a mailed link.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use totp_rs::{Builder, Secret, Totp};

use crate::{
    auth::{csrf::hmac_sha256, ClientIp, CurrentUser},
    clock,
    domain::{Amr, AuthMethod, User, UserId},
    error::ApiError,
    mail::{notices::notify, Notice},
    sessions::{self, Origin, Started},
    state::AppState,
    store::{MfaEnable, TokenKind},
};

/// How long an `mfaToken` lives.
pub const MFA_TOKEN_TTL: time::Duration = time::Duration::minutes(5);
/// Wrong codes that spend an `mfaToken`.
pub const MAX_WRONG_CODES: u32 = 5;
/// Recovery codes in a set.
pub const RECOVERY_CODES: usize = 10;
/// Characters of a recovery code (base32, 5 bits each: 60 bits).
const RECOVERY_LEN: usize = 12;
const STEP_SECS: u64 = 30;

/// The key recovery codes are stored under, derived from the server secret: a database dump
/// alone cannot be searched for them (a plain hash of 60 bits could be).
pub struct MfaKeys {
    recovery: [u8; 32],
}

impl MfaKeys {
    pub fn derive(server_secret: &SecretString) -> Self {
        Self {
            recovery: hmac_sha256(
                server_secret.expose_secret().as_bytes(),
                b"authvault/recovery-codes/v1",
            ),
        }
    }

    /// The stored form of a normalised recovery code of `user`.
    fn recovery_hash(&self, user: UserId, code: &str) -> String {
        let message = format!("{user}\0{code}");
        data_encoding::HEXLOWER.encode(&hmac_sha256(&self.recovery, message.as_bytes()))
    }
}

fn totp(secret: Vec<u8>) -> Result<Totp, ApiError> {
    Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP_SECS)
        .with_secret(secret)
        .build()
        .map_err(|e| ApiError::internal(anyhow::anyhow!("building a TOTP: {e:?}")))
}

/// What the vault's seal of a user's TOTP secret is bound to.
fn seal_context(user: UserId) -> String {
    format!("totp|{user}")
}

fn unix_now() -> u64 {
    clock::now().unix_timestamp().max(0) as u64
}

/// A new TOTP enrolment, as the authenticator app takes it.
pub struct Enrolment {
    /// Base32, without padding.
    pub secret: String,
    pub otpauth_url: String,
    /// An SVG document of a QR code of `otpauth_url`.
    pub qr_svg: String,
}

/// The `otpauth://` URL authenticator apps read (the Key Uri Format of Google Authenticator).
fn otpauth_url(issuer: &str, email: &str, secret: &str) -> Result<String, ApiError> {
    let label = format!("{}:{}", label_part(issuer), label_part(email));
    let mut url =
        url::Url::parse(&format!("otpauth://totp/{label}")).map_err(ApiError::internal)?;
    url.query_pairs_mut()
        .append_pair("secret", secret)
        .append_pair("issuer", issuer)
        .append_pair("algorithm", "SHA1")
        .append_pair("digits", "6")
        .append_pair("period", "30");
    Ok(url.to_string())
}

/// Percent-encodes a label part: everything but unreserved characters and `@`.
fn label_part(part: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    const LABEL: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'@');
    utf8_percent_encode(part, LABEL).to_string()
}

fn qr_svg(text: &str) -> Result<String, ApiError> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(ApiError::internal)?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build())
}

/// Starts an enrolment: a new pending secret (replacing a pending one). Needs a recent sign-in.
pub async fn enrol(
    state: &AppState,
    current: &CurrentUser,
    user: &User,
) -> Result<Enrolment, ApiError> {
    if !current.recently_authenticated() {
        return Err(ApiError::ReauthRequired);
    }
    if user.mfa_enabled {
        return Err(ApiError::MfaAlreadyEnabled);
    }
    let secret = Secret::from(crate::random::bytes::<20>()).to_base32();
    let sealed = state
        .vault
        .seal_secret(&seal_context(user.id), &secret)
        .map_err(ApiError::internal)?;
    if !state.store.set_pending_totp(user.id, &sealed).await? {
        // Turned on meanwhile (or the account is gone).
        return Err(ApiError::MfaAlreadyEnabled);
    }
    let otpauth_url = otpauth_url(
        &state.settings.sessions.mfa_issuer,
        user.email.as_str(),
        &secret,
    )?;
    let qr_svg = qr_svg(&otpauth_url)?;
    log::info!("user {} started a TOTP enrolment", user.id);
    Ok(Enrolment {
        secret,
        otpauth_url,
        qr_svg,
    })
}

/// The time step a 6-digit `code` matches for `secret` now (current, previous or next).
fn matching_step(secret: &str, code: &str) -> Result<Option<i64>, ApiError> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let bytes = Secret::try_from_base32(secret)
        .map_err(|_| ApiError::internal(anyhow::anyhow!("a stored TOTP secret is not base32")))?;
    let totp = totp(bytes.as_bytes().to_vec())?;
    Ok(totp.check(code, unix_now()).map(|step| step as i64))
}

fn open_secret(
    state: &AppState,
    user: UserId,
    sealed: &crate::domain::SealedKey,
) -> Result<SecretString, ApiError> {
    state
        .vault
        .open_secret(&seal_context(user), sealed)
        .map_err(|_| ApiError::VaultOpenFailed)
}

/// New recovery codes: the codes to show once, and their stored digests.
fn new_recovery_codes(keys: &MfaKeys, user: UserId) -> (Vec<String>, Vec<String>) {
    (0..RECOVERY_CODES)
        .map(|_| {
            let raw = data_encoding::BASE32_NOPAD.encode(&crate::random::bytes::<8>());
            let code = raw[..RECOVERY_LEN].to_ascii_lowercase();
            let hash = keys.recovery_hash(user, &code);
            let shown = format!("{}-{}-{}", &code[..4], &code[4..8], &code[8..]);
            (shown, hash)
        })
        .unzip()
}

/// A recovery code as typed (any case, spaces and dashes anywhere) in its stored form, if it
/// can be one.
fn normalise_recovery(code: &str) -> Option<String> {
    let code: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (code.len() == RECOVERY_LEN && code.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')))
        .then_some(code)
}

/// Confirms the pending secret with a code from the app: MFA is on, with a first set of recovery
/// codes, and every other session of the user ends.
pub async fn confirm(
    state: &AppState,
    current: &CurrentUser,
    user: &User,
    code: &str,
) -> Result<Vec<String>, ApiError> {
    let record = state.store.mfa(user.id).await?.unwrap_or_default();
    let (Some(pending), None) = (record.pending, record.secret) else {
        return Err(ApiError::BadMfaCode);
    };
    let secret = open_secret(state, user.id, &pending)?;
    let Some(step) = matching_step(secret.expose_secret(), code.trim())? else {
        return Err(ApiError::BadMfaCode);
    };
    let (codes, hashes) = new_recovery_codes(&state.mfa, user.id);
    let enabled = state
        .store
        .enable_mfa(
            user.id,
            MfaEnable {
                pending_nonce: &pending.nonce,
                step,
                recovery: &hashes,
                keep: current.session_id,
            },
        )
        .await?;
    if !enabled {
        // Enrolled again, turned on by another request, or this session ended meanwhile.
        return Err(ApiError::BadMfaCode);
    }
    notify(&state.mailer, user, Notice::MfaEnabled);
    log::info!("user {} turned MFA on; other sessions ended", user.id);
    Ok(codes)
}

/// Which second factor a code was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Factor {
    Totp,
    Recovery { left: u32 },
}

/// Checks a second-factor code of `user` and spends it: a TOTP step is accepted once, a recovery
/// code is used up (and its owner told). `None` when it is neither.
async fn spend_code(state: &AppState, user: &User, code: &str) -> Result<Option<Factor>, ApiError> {
    let code = code.trim();
    if code.is_empty() || code.len() > 64 {
        return Ok(None);
    }
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        let Some(record) = state.store.mfa(user.id).await? else {
            return Ok(None);
        };
        let Some(sealed) = record.secret else {
            return Ok(None);
        };
        let secret = open_secret(state, user.id, &sealed)?;
        let Some(step) = matching_step(secret.expose_secret(), code)? else {
            return Ok(None);
        };
        // Accepted once: a replay, or a second request racing with the same code, is refused.
        return Ok(state
            .store
            .accept_totp_step(user.id, step)
            .await?
            .then_some(Factor::Totp));
    }
    let Some(normalised) = normalise_recovery(code) else {
        return Ok(None);
    };
    let hash = state.mfa.recovery_hash(user.id, &normalised);
    let Some(left) = state.store.spend_recovery_code(user.id, &hash).await? else {
        return Ok(None);
    };
    notify(&state.mailer, user, Notice::RecoveryCodeUsed { left });
    log::info!("user {} used a recovery code; {left} left", user.id);
    Ok(Some(Factor::Recovery { left }))
}

/// The step-up check of a change to MFA: a recent sign-in and a current code, checked under the
/// sign-in limits like a password is.
async fn confirm_with_code(
    state: &AppState,
    current: &CurrentUser,
    user: &User,
    ip: ClientIp,
    code: &str,
) -> Result<(), ApiError> {
    if !current.recently_authenticated() {
        return Err(ApiError::ReauthRequired);
    }
    if !user.mfa_enabled {
        return Err(ApiError::NotFound);
    }
    let check = state.limiter.check_credential(&user.email, ip).await?;
    if spend_code(state, user, code).await?.is_none() {
        // The reserved slots stand as this failure.
        return Err(ApiError::BadMfaCode);
    }
    state.limiter.passed(check).await
}

/// Turns MFA off after the step-up check.
pub async fn disable(
    state: &AppState,
    current: &CurrentUser,
    user: &User,
    ip: ClientIp,
    code: &str,
) -> Result<(), ApiError> {
    confirm_with_code(state, current, user, ip, code).await?;
    if !state.store.disable_mfa(user.id).await? {
        return Err(ApiError::NotFound);
    }
    notify(&state.mailer, user, Notice::MfaDisabled);
    log::info!("user {} turned MFA off", user.id);
    Ok(())
}

/// A new set of recovery codes after the step-up check; the old set stops working.
pub async fn regenerate(
    state: &AppState,
    current: &CurrentUser,
    user: &User,
    ip: ClientIp,
    code: &str,
) -> Result<Vec<String>, ApiError> {
    confirm_with_code(state, current, user, ip, code).await?;
    let (codes, hashes) = new_recovery_codes(&state.mfa, user.id);
    if !state.store.replace_recovery_codes(user.id, &hashes).await? {
        return Err(ApiError::NotFound);
    }
    log::info!("user {} made new recovery codes", user.id);
    Ok(codes)
}

/// The second step a sign-in is waiting for.
pub struct Challenge {
    pub token: String,
    pub expires_at: OffsetDateTime,
}

/// What an `mfaToken` remembers of the first factor.
#[derive(Serialize, Deserialize)]
struct Pending {
    amr: String,
    auth_time: i64,
    version: u64,
}

/// Holds a first factor of `user` (proved at `auth_time` by `amr`) for the second step.
pub async fn challenge(
    state: &AppState,
    user: &User,
    auth_time: OffsetDateTime,
    amr: Amr,
) -> Result<Challenge, ApiError> {
    let token = crate::random::token();
    let now = clock::now();
    let expires_at = now + MFA_TOKEN_TTL;
    let data = serde_json::to_string(&Pending {
        amr: amr.to_stored(),
        auth_time: auth_time.unix_timestamp(),
        version: user.credential_version,
    })
    .map_err(ApiError::internal)?;
    state
        .store
        .put_token(
            TokenKind::MfaPending,
            &crate::random::token_hash(&token),
            Some(user.id),
            &data,
            expires_at,
        )
        .await?;
    log::info!("user {} passed a first factor; a second is asked", user.id);
    Ok(Challenge { token, expires_at })
}

/// Completes a sign-in waiting for its second factor: `code` (a TOTP or a recovery code) under
/// the brute-force limits of the user's email and the client, and under the token's own limit
/// of wrong codes. The session starts at the credential version of the first factor, with its
/// `amr` plus `otp` and `mfa`.
pub async fn verify(
    state: &AppState,
    origin: &Origin,
    token: &str,
    code: &str,
) -> Result<(User, Started), ApiError> {
    if token.is_empty() || token.len() > 256 {
        return Err(ApiError::InvalidMfaToken);
    }
    let hash = crate::random::token_hash(token);
    let now = clock::now();
    let record = state
        .store
        .peek_token(TokenKind::MfaPending, &hash, now)
        .await?
        .ok_or(ApiError::InvalidMfaToken)?;
    let pending: Pending =
        serde_json::from_str(&record.data).map_err(|_| ApiError::InvalidMfaToken)?;
    let user_id = record.user_id.ok_or(ApiError::InvalidMfaToken)?;
    let Some(mut user) = state.store.user_by_id(user_id).await? else {
        return Err(ApiError::InvalidMfaToken);
    };
    let check = state
        .limiter
        .check_credential(&user.email, origin.ip)
        .await?;
    // The token's own budget of wrong codes; a token out of it is spent.
    let attempt = match state.limiter.mfa_attempt(&hash, MAX_WRONG_CODES).await {
        Ok(attempt) => attempt,
        Err(e) => {
            state.limiter.release(check).await?;
            if matches!(e, ApiError::RateLimited { .. }) {
                state
                    .store
                    .take_token(TokenKind::MfaPending, &hash, now)
                    .await?;
                return Err(ApiError::InvalidMfaToken);
            }
            return Err(e);
        }
    };
    let factor = if user.mfa_enabled {
        spend_code(state, &user, code).await?
    } else {
        None
    };
    if factor.is_none() {
        // The reserved slots stand as this failure; the last allowed one spends the token.
        if attempt.was_last {
            state
                .store
                .take_token(TokenKind::MfaPending, &hash, now)
                .await?;
        }
        log::info!("user {} sent a wrong second-factor code", user.id);
        return Err(ApiError::WrongCode);
    }
    // Single use: of two requests with good codes, one signs in.
    if state
        .store
        .take_token(TokenKind::MfaPending, &hash, clock::now())
        .await?
        .is_none()
    {
        state.limiter.passed(check).await?;
        return Err(ApiError::InvalidMfaToken);
    }
    state.limiter.passed(check).await?;
    user.credential_version = pending.version;
    let amr = Amr::from_stored(&pending.amr)
        .with(AuthMethod::Otp)
        .with(AuthMethod::Mfa);
    let started = sessions::start(state, origin, &user, clock::now(), amr).await?;
    log::info!("user {} completed a second factor", user.id);
    Ok((user, started))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_ten_distinct_60_bit_codes_typed_any_way() {
        let keys = MfaKeys::derive(&SecretString::from("k".repeat(32)));
        let user = UserId::new();
        let (codes, hashes) = new_recovery_codes(&keys, user);
        assert_eq!(codes.len(), 10);
        let mut unique = hashes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
        for (code, hash) in codes.iter().zip(&hashes) {
            assert_eq!(code.len(), 14, "{code}");
            let typed = format!(" {} ", code.to_uppercase().replace('-', " "));
            let normalised = normalise_recovery(&typed).unwrap();
            assert_eq!(&keys.recovery_hash(user, &normalised), hash);
            // Keyed and bound to the user: neither another user nor another key gives it.
            assert_ne!(&keys.recovery_hash(UserId::new(), &normalised), hash);
            let other = MfaKeys::derive(&SecretString::from("j".repeat(32)));
            assert_ne!(&other.recovery_hash(user, &normalised), hash);
        }
        assert_eq!(normalise_recovery("abcd-efgh-ijk"), None);
        assert_eq!(normalise_recovery("abcd-efgh-ijk1"), None);
        assert_eq!(normalise_recovery("123456"), None);
    }

    #[test]
    fn the_otpauth_url_has_the_contract_parameters() {
        let url = otpauth_url("authvault", "ada+1@example.com", "JBSWY3DPEHPK3PXP").unwrap();
        assert_eq!(
            url,
            "otpauth://totp/authvault:ada%2B1@example.com?secret=JBSWY3DPEHPK3PXP&issuer=authvault&algorithm=SHA1&digits=6&period=30"
        );
        let url = otpauth_url("Acme Co", "a@b.c", "JBSWY3DPEHPK3PXP").unwrap();
        assert!(url.starts_with("otpauth://totp/Acme%20Co:a@b.c?"), "{url}");
        assert!(url.contains("&issuer=Acme+Co&"), "{url}");
    }

    #[test]
    fn codes_of_the_previous_current_and_next_step_match_and_no_others() {
        let secret = Secret::from(crate::random::bytes::<20>()).to_base32();
        let bytes = Secret::try_from_base32(&secret)
            .unwrap()
            .as_bytes()
            .to_vec();
        let totp = totp(bytes).unwrap();
        let now = unix_now();
        let step = (now / STEP_SECS) as i64;
        for offset in [-1i64, 0, 1] {
            let at = (now as i64 + offset * STEP_SECS as i64) as u64;
            let code = totp.generate(at).to_string();
            let matched = matching_step(&secret, &code).unwrap();
            // A code can repeat between steps by chance; the step found is one of the window.
            assert!(matched.is_some_and(|m| (m - step).abs() <= 1), "{offset}");
        }
        let far = totp.generate(now + 10 * STEP_SECS).to_string();
        let near = [-1i64, 0, 1].map(|o| totp.generate((now as i64 + o * 30) as u64).to_string());
        if !near.contains(&far) {
            assert_eq!(matching_step(&secret, &far).unwrap(), None);
        }
        assert_eq!(matching_step(&secret, "12345").unwrap(), None);
        assert_eq!(matching_step(&secret, "12345a").unwrap(), None);
    }

    #[test]
    fn the_qr_code_is_an_svg_document() {
        let svg = qr_svg("otpauth://totp/authvault:a@b.c?secret=JBSWY3DPEHPK3PXP").unwrap();
        assert!(svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
