//! Signed double-submit CSRF tokens: `nonce.mac`, where mac = HMAC-SHA256(key, nonce). A cookie
//! write must send the token in `X-CSRF-Token` and the same token in the CSRF cookie, and the MAC
//! must be ours, so a cookie planted by a sibling site does not pass.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

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

    fn mac(&self, nonce: &[u8]) -> [u8; 32] {
        hmac_sha256(self.0.expose_secret(), nonce)
    }

    /// A new token.
    pub fn issue(&self) -> String {
        let nonce: [u8; 24] = crate::random::bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(self.mac(&nonce))
        )
    }

    fn is_ours(&self, token: &str) -> bool {
        let Some((nonce, mac)) = token.split_once('.') else {
            return false;
        };
        let (Ok(nonce), Ok(mac)) = (URL_SAFE_NO_PAD.decode(nonce), URL_SAFE_NO_PAD.decode(mac))
        else {
            return false;
        };
        nonce.len() == 24 && bool::from(self.mac(&nonce).ct_eq(mac.as_slice()))
    }

    /// Passes when header and cookie hold the same token and it carries our signature.
    pub fn check(&self, header: Option<&str>, cookie: Option<&str>) -> Result<(), ApiError> {
        match (header, cookie) {
            (Some(h), Some(c))
                if bool::from(h.as_bytes().ct_eq(c.as_bytes())) && self.is_ours(h) =>
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
        let t = k.issue();
        assert!(k.check(Some(&t), Some(&t)).is_ok());
    }

    #[test]
    fn a_missing_or_different_half_fails() {
        let k = key("server-secret-server-secret-server-secret");
        let (a, b) = (k.issue(), k.issue());
        assert!(k.check(Some(&a), None).is_err());
        assert!(k.check(None, Some(&a)).is_err());
        assert!(k.check(Some(&a), Some(&b)).is_err());
    }

    #[test]
    fn a_token_signed_with_another_key_fails_even_as_a_pair() {
        let planted = key("another-secret-another-secret-another").issue();
        let k = key("server-secret-server-secret-server-secret");
        assert!(k.check(Some(&planted), Some(&planted)).is_err());
        assert!(k.check(Some("x.y"), Some("x.y")).is_err());
    }
}
