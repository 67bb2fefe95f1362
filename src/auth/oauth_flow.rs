//! The short-lived, signed cookie that carries an OAuth flow from its start to its callback:
//! provider, state, PKCE verifier, nonce, callbackUrl and the app's own code challenge. Binding
//! the flow to the browser that started it stops login CSRF; the state itself is also spent in
//! the store at the callback, so a flow completes once.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::csrf::hmac_sha256;

/// How long a flow may take, in seconds.
pub const FLOW_TTL_SECS: i64 = 600;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flow {
    pub provider: String,
    pub state: String,
    pub verifier: String,
    #[serde(default)]
    pub nonce: Option<String>,
    pub callback_url: String,
    /// Set for an app callback: the S256 challenge its one-time code is bound to.
    #[serde(default)]
    pub app_challenge: Option<String>,
    pub expires_at: i64,
}

/// Signs and opens flow cookies with a key derived from the server secret.
pub struct FlowKey(SecretBox<[u8; 32]>);

impl FlowKey {
    pub fn derive(server_secret: &SecretString) -> Self {
        let key = hmac_sha256(
            server_secret.expose_secret().as_bytes(),
            b"authvault oauth flow key v1",
        );
        Self(SecretBox::new(Box::new(key)))
    }

    /// `payload.mac`, both base64url.
    pub fn seal(&self, flow: &Flow) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(flow).unwrap_or_default());
        let mac = hmac_sha256(self.0.expose_secret(), payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// The flow, if the cookie is ours, intact and not expired.
    pub fn open(&self, value: &str, now: OffsetDateTime) -> Option<Flow> {
        let (payload, mac) = value.split_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let expected = hmac_sha256(self.0.expose_secret(), payload.as_bytes());
        if !bool::from(expected.ct_eq(mac.as_slice())) {
            return None;
        }
        let flow: Flow = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (flow.expires_at > now.unix_timestamp()).then_some(flow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(expires_at: i64) -> Flow {
        Flow {
            provider: "github".into(),
            state: "s".into(),
            verifier: "v".into(),
            nonce: None,
            callback_url: "http://app.test/".into(),
            app_challenge: None,
            expires_at,
        }
    }

    #[test]
    fn a_sealed_flow_opens_until_it_expires() {
        let key = FlowKey::derive(&SecretString::from("x".repeat(40)));
        let now = OffsetDateTime::now_utc();
        let sealed = key.seal(&flow(now.unix_timestamp() + 60));
        assert_eq!(
            key.open(&sealed, now),
            Some(flow(now.unix_timestamp() + 60))
        );
        let old = key.seal(&flow(now.unix_timestamp() - 1));
        assert_eq!(key.open(&old, now), None);
    }

    #[test]
    fn a_tampered_or_foreign_flow_does_not_open() {
        let key = FlowKey::derive(&SecretString::from("x".repeat(40)));
        let other = FlowKey::derive(&SecretString::from("y".repeat(40)));
        let now = OffsetDateTime::now_utc();
        let sealed = other.seal(&flow(now.unix_timestamp() + 60));
        assert_eq!(key.open(&sealed, now), None);
        let mine = key.seal(&flow(now.unix_timestamp() + 60));
        let (payload, mac) = mine.split_once('.').unwrap();
        let mut forged = flow(now.unix_timestamp() + 60);
        forged.callback_url = "https://evil.example/".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_ne!(payload, forged_payload);
        assert_eq!(key.open(&format!("{forged_payload}.{mac}"), now), None);
    }
}
