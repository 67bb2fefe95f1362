//! Signed double-submit CSRF tokens: `nonce.mac`, where mac = HMAC-SHA256(key, nonce || sid),
//! `sid` being the session of the session cookie the token was issued with (empty without one).
//! A cookie write must send the token in `X-CSRF-Token` and the same token in the CSRF cookie,
//! the MAC must be ours, so a cookie planted by a sibling site does not pass, and it must name
//! the session that authenticates the write, so a pair minted by another client does not either.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::error::ApiError;

pub const HEADER: &str = "x-csrf-token";

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    #[allow(clippy::expect_used)]
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The key CSRF tokens are signed with, derived from the server secret.
pub struct CsrfKey(SecretBox<[u8; 32]>);

impl CsrfKey {
    pub fn derive(server_secret: &SecretString) -> Self {
        let key = hmac_sha256(
            server_secret.expose_secret().as_bytes(),
            b"authvault csrf key v1",
        );
        Self(SecretBox::new(Box::new(key)))
    }

    fn mac(&self, nonce: &[u8], session: Option<Uuid>) -> [u8; 32] {
        let mut data = [0u8; 24 + 16];
        let len = nonce.len().min(24);
        data[..len].copy_from_slice(&nonce[..len]);
        match session {
            Some(sid) => {
                data[24..].copy_from_slice(sid.as_bytes());
                hmac_sha256(self.0.expose_secret(), &data)
            }
            None => hmac_sha256(self.0.expose_secret(), &data[..24]),
        }
    }

    /// A new token, bound to `session` (that of the session cookie it is issued with), or to no
    /// session.
    pub fn issue(&self, session: Option<Uuid>) -> String {
        let nonce: [u8; 24] = crate::random::bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(self.mac(&nonce, session))
        )
    }

    fn is_ours(&self, token: &str, session: Option<Uuid>) -> bool {
        let Some((nonce, mac)) = token.split_once('.') else {
            return false;
        };
        let (Ok(nonce), Ok(mac)) = (URL_SAFE_NO_PAD.decode(nonce), URL_SAFE_NO_PAD.decode(mac))
        else {
            return false;
        };
        nonce.len() == 24 && bool::from(self.mac(&nonce, session).ct_eq(mac.as_slice()))
    }

    /// Passes when header and cookie hold the same token, it carries our signature, and it was
    /// issued for one of `sessions` (`None`: issued without a session cookie).
    pub fn check(
        &self,
        header: Option<&str>,
        cookie: Option<&str>,
        sessions: &[Option<Uuid>],
    ) -> Result<(), ApiError> {
        match (header, cookie) {
            (Some(h), Some(c))
                if bool::from(h.as_bytes().ct_eq(c.as_bytes()))
                    && sessions.iter().any(|s| self.is_ours(h, *s)) =>
            {
                Ok(())
            }
            _ => Err(ApiError::CsrfFailed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> CsrfKey {
        CsrfKey::derive(&SecretString::from(secret))
    }

    #[test]
    fn a_matching_signed_pair_passes() {
        let k = key("server-secret-server-secret-server-secret");
        let t = k.issue(None);
        assert!(k.check(Some(&t), Some(&t), &[None]).is_ok());
    }

    #[test]
    fn a_missing_or_different_half_fails() {
        let k = key("server-secret-server-secret-server-secret");
        let (a, b) = (k.issue(None), k.issue(None));
        assert!(k.check(Some(&a), None, &[None]).is_err());
        assert!(k.check(None, Some(&a), &[None]).is_err());
        assert!(k.check(Some(&a), Some(&b), &[None]).is_err());
    }

    #[test]
    fn a_token_signed_with_another_key_fails_even_as_a_pair() {
        let planted = key("another-secret-another-secret-another").issue(None);
        let k = key("server-secret-server-secret-server-secret");
        assert!(k.check(Some(&planted), Some(&planted), &[None]).is_err());
        assert!(k.check(Some("x.y"), Some("x.y"), &[None]).is_err());
    }

    #[test]
    fn a_token_passes_only_for_the_session_it_was_issued_for() {
        let k = key("server-secret-server-secret-server-secret");
        let (mine, theirs) = (Uuid::new_v4(), Uuid::new_v4());
        let t = k.issue(Some(mine));
        assert!(k.check(Some(&t), Some(&t), &[Some(mine)]).is_ok());
        assert!(k.check(Some(&t), Some(&t), &[Some(theirs)]).is_err());
        assert!(k.check(Some(&t), Some(&t), &[None]).is_err());
        let unbound = k.issue(None);
        assert!(k
            .check(Some(&unbound), Some(&unbound), &[Some(mine)])
            .is_err());
        assert!(k
            .check(Some(&unbound), Some(&unbound), &[None, Some(mine)])
            .is_ok());
    }
}
