//! Access tokens: HS256 JWTs with issuer and audience, verified with no other algorithm.

use std::time::Duration;

use std::borrow::Cow;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    domain::{User, UserId},
    error::ApiError,
    store::SessionRecord,
};

pub const AUDIENCE: &str = "authvault";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: UserId,
    pub email: String,
    pub name: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
    /// The session record this token belongs to.
    pub sid: Uuid,
    /// When the user last proved who they are.
    pub auth_time: i64,
}

/// The claims the session check needs.
#[derive(Debug, Clone, Copy)]
pub struct AccessClaims {
    pub sub: UserId,
    pub sid: Uuid,
    pub exp: i64,
}

/// The payload as the session check reads it: borrowed where the JSON allows, every other claim
/// skipped without being built.
#[derive(Deserialize)]
struct AccessPayload<'a> {
    #[serde(borrow)]
    iss: Option<Cow<'a, str>>,
    #[serde(borrow)]
    aud: Option<Cow<'a, str>>,
    sub: Option<UserId>,
    sid: Option<Uuid>,
    iat: Option<i64>,
    exp: Option<i64>,
}

/// The header of an `alg`-checked token that is not byte-for-byte ours.
#[derive(Deserialize)]
struct AccessHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    crit: Option<serde::de::IgnoredAny>,
}

/// The largest token payload the session check decodes (ours are well under 1 KiB).
const MAX_PAYLOAD: usize = 2048;
/// Seconds of clock skew allowed on `exp`.
const LEEWAY: i64 = 5;

/// A freshly signed token.
pub struct IssuedToken {
    pub token: String,
    pub expires_at: OffsetDateTime,
    pub expires_in: u64,
}

/// Signs and verifies access tokens with the server secret.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// HMAC-SHA256 with the key already absorbed: each check clones it.
    mac: Hmac<Sha256>,
    /// The encoded header this service signs with, so the check can skip decoding it.
    header: String,
    issuer: String,
    ttl: Duration,
}

impl JwtKeys {
    /// `secret` is used as its UTF-8 bytes; `issuer` is the public URL.
    pub fn new(secret: &SecretString, issuer: &str, ttl: Duration) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        #[allow(clippy::expect_used)]
        let mac = Hmac::<Sha256>::new_from_slice(bytes).expect("HMAC takes keys of any length");
        let header = serde_json::to_vec(&Header::new(Algorithm::HS256))
            .map(|json| URL_SAFE_NO_PAD.encode(json))
            .unwrap_or_default();
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            mac,
            header,
            issuer: issuer.to_owned(),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs a token for `user` in `session`, valid for the configured lifetime from `now`.
    pub fn issue(
        &self,
        user: &User,
        session: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<IssuedToken, ApiError> {
        // Whole seconds, so that `expiresAt` is exactly the token's `exp`.
        let expires_at = (now + self.ttl).min(session.expires_at);
        let expires_at =
            expires_at - time::Duration::nanoseconds(i64::from(expires_at.nanosecond()));
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.to_owned(),
            sub: user.id,
            email: user.email.as_str().to_owned(),
            name: user.name.as_str().to_owned(),
            iat: now.unix_timestamp(),
            exp: expires_at.unix_timestamp(),
            jti: Uuid::new_v4(),
            sid: session.id,
            auth_time: session.auth_time.unix_timestamp(),
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)?;
        Ok(IssuedToken {
            token,
            expires_at,
            expires_in: (expires_at.unix_timestamp() - now.unix_timestamp()).max(0) as u64,
        })
    }

    /// Verifies signature, algorithm, issuer, audience and expiry, reading only what the session
    /// check needs. The same rules as [`JwtKeys::verify`], on the path every signed-in request
    /// takes: the MAC key is absorbed once, the payload is decoded into a stack buffer and
    /// parsed once, and our own header is recognised without decoding it.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, ApiError> {
        self.check_access(token.as_bytes(), crate::clock::now().unix_timestamp())
            .ok_or(ApiError::Unauthenticated)
    }

    fn check_access(&self, token: &[u8], now: i64) -> Option<AccessClaims> {
        let dot = token.iter().rposition(|&b| b == b'.')?;
        let (signed, signature) = (&token[..dot], &token[dot + 1..]);
        let first = signed.iter().position(|&b| b == b'.')?;
        let (header, payload) = (&signed[..first], &signed[first + 1..]);
        if header != self.header.as_bytes() && !header_is_hs256(header) {
            return None;
        }
        let mut tag = [0u8; 32];
        if URL_SAFE_NO_PAD.decode_slice(signature, &mut tag).ok()? != tag.len() {
            return None;
        }
        let mut mac = self.mac.clone();
        mac.update(signed);
        mac.verify_slice(&tag).ok()?;

        if payload.len() > MAX_PAYLOAD / 3 * 4 {
            return None;
        }
        let mut buf = [0u8; MAX_PAYLOAD];
        let n = URL_SAFE_NO_PAD.decode_slice(payload, &mut buf).ok()?;
        let claims: AccessPayload<'_> = serde_json::from_slice(&buf[..n]).ok()?;
        let (exp, sub, sid) = (claims.exp?, claims.sub?, claims.sid?);
        claims.iat?;
        if claims.iss.as_deref() != Some(self.issuer.as_str())
            || claims.aud.as_deref() != Some(AUDIENCE)
            || exp < now - LEEWAY
        {
            return None;
        }
        Some(AccessClaims { sub, sid, exp })
    }

    /// Verifies signature, algorithm, issuer, audience and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| ApiError::Unauthenticated)
    }
}

/// Whether an encoded header names HS256 and nothing we would have to understand (`crit`).
fn header_is_hs256(encoded: &[u8]) -> bool {
    let mut buf = [0u8; 256];
    if encoded.len() > buf.len() / 3 * 4 {
        return false;
    }
    let Ok(n) = URL_SAFE_NO_PAD.decode_slice(encoded, &mut buf) else {
        return false;
    };
    serde_json::from_slice::<AccessHeader<'_>>(&buf[..n])
        .is_ok_and(|h| h.alg == "HS256" && h.crit.is_none())
}

#[cfg(test)]
mod tests {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

    use super::*;
    use crate::domain::{Email, UserName};

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn keys() -> JwtKeys {
        JwtKeys::new(
            &SecretString::from(SECRET),
            "http://issuer.test",
            Duration::from_secs(3600),
        )
    }

    fn user() -> User {
        let now = crate::clock::now();
        User {
            id: UserId::new(),
            name: UserName::parse("Ada").unwrap(),
            email: Email::parse("ada@example.com").unwrap(),
            image: None,
            password_hash: None,
            linked: vec![],
            email_verified: None,
            credential_version: 0,
            created_at: now,
            updated_at: now,
        }
    }

    fn session(user: &User) -> SessionRecord {
        let now = crate::clock::now();
        SessionRecord {
            id: Uuid::new_v4(),
            user_id: user.id,
            created_at: now,
            last_used_at: now,
            expires_at: now + Duration::from_secs(7200),
            auth_time: now,
            user_agent: None,
            ip: None,
        }
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let keys = keys();
        let user = user();
        let session = session(&user);
        let issued = keys.issue(&user, &session, crate::clock::now()).unwrap();
        let claims = keys.verify(&issued.token).unwrap();
        assert_eq!(claims.sub, user.id);
        assert_eq!(claims.sid, session.id);
        assert_eq!(claims.aud, "authvault");
        assert_eq!(claims.exp - claims.iat, 3600);
        assert_eq!(issued.expires_in, 3600);
    }

    #[test]
    fn alg_none_is_refused() {
        let keys = keys();
        let user = user();
        let issued = keys
            .issue(&user, &session(&user), crate::clock::now())
            .unwrap();
        let payload = issued.token.split('.').nth(1).unwrap();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let forged = format!("{header}.{payload}.");
        assert!(keys.verify(&forged).is_err());
        assert!(keys.verify_access(&forged).is_err());
    }

    #[test]
    fn another_secret_or_issuer_is_refused() {
        let user = user();
        let session = session(&user);
        let other = JwtKeys::new(
            &SecretString::from("another-secret-of-at-least-32-bytes!!"),
            "http://issuer.test",
            Duration::from_secs(3600),
        );
        let token = other
            .issue(&user, &session, crate::clock::now())
            .unwrap()
            .token;
        assert!(keys().verify(&token).is_err());
        assert!(keys().verify_access(&token).is_err());
        let wrong_iss = JwtKeys::new(
            &SecretString::from(SECRET),
            "http://evil.test",
            Duration::from_secs(3600),
        );
        let token = wrong_iss
            .issue(&user, &session, crate::clock::now())
            .unwrap()
            .token;
        assert!(keys().verify(&token).is_err());
        assert!(keys().verify_access(&token).is_err());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let keys = keys();
        let user = user();
        let long_ago = crate::clock::now() - Duration::from_secs(7200);
        let token = keys.issue(&user, &session(&user), long_ago).unwrap().token;
        assert!(keys.verify(&token).is_err());
        assert!(keys.verify_access(&token).is_err());
    }

    /// A token with this header and payload JSON, signed with `secret` under HMAC-SHA256.
    fn signed(header: &str, payload: &serde_json::Value, secret: &str) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let tag = crate::auth::csrf::hmac_sha256(secret.as_bytes(), signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    fn payload(sub: UserId, sid: Uuid, exp: i64) -> serde_json::Value {
        serde_json::json!({
            "iss": "http://issuer.test", "aud": "authvault", "sub": sub, "sid": sid,
            "email": "ada@example.com", "name": "Ada", "iat": exp - 3600, "exp": exp,
            "jti": Uuid::new_v4(), "auth_time": exp - 3600,
        })
    }

    #[test]
    fn the_session_check_reads_sub_sid_and_exp_of_an_issued_token() {
        let keys = keys();
        let user = user();
        let session = session(&user);
        let issued = keys.issue(&user, &session, crate::clock::now()).unwrap();
        let claims = keys.verify_access(&issued.token).unwrap();
        assert_eq!(claims.sub, user.id);
        assert_eq!(claims.sid, session.id);
        assert_eq!(claims.exp, issued.expires_at.unix_timestamp());
    }

    #[test]
    fn the_session_check_accepts_another_hs256_header_and_refuses_other_algorithms() {
        let keys = keys();
        let (sub, sid) = (UserId::new(), Uuid::new_v4());
        let exp = crate::clock::now().unix_timestamp() + 600;
        let body = payload(sub, sid, exp);
        let reordered = signed(r#"{"alg":"HS256"}"#, &body, SECRET);
        assert_eq!(keys.verify_access(&reordered).unwrap().sid, sid);
        assert!(keys.verify(&reordered).is_ok());
        for header in [
            r#"{"alg":"HS512","typ":"JWT"}"#,
            r#"{"alg":"none"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"alg":"HS256","crit":["exp"]}"#,
            r#"{"typ":"JWT"}"#,
            "not json",
        ] {
            let token = signed(header, &body, SECRET);
            assert!(keys.verify_access(&token).is_err(), "{header} was accepted");
        }
    }

    #[test]
    fn the_session_check_refuses_a_wrong_audience_issuer_or_a_missing_claim() {
        let keys = keys();
        let (sub, sid) = (UserId::new(), Uuid::new_v4());
        let exp = crate::clock::now().unix_timestamp() + 600;
        let header = r#"{"typ":"JWT","alg":"HS256"}"#;
        let mut cases = Vec::new();
        for (key, value) in [
            ("aud", serde_json::json!("someone-else")),
            ("aud", serde_json::json!(["authvault"])),
            ("iss", serde_json::json!("http://evil.test")),
            ("sub", serde_json::json!("not-a-uuid")),
            ("exp", serde_json::json!("tomorrow")),
        ] {
            let mut body = payload(sub, sid, exp);
            body[key] = value;
            cases.push(body);
        }
        for key in ["iss", "aud", "sub", "sid", "iat", "exp"] {
            let mut body = payload(sub, sid, exp);
            body.as_object_mut().unwrap().remove(key);
            cases.push(body);
        }
        for body in cases {
            let token = signed(header, &body, SECRET);
            assert!(keys.verify_access(&token).is_err(), "{body} was accepted");
        }
        // The same payload, correct: accepted, so the cases above fail for their one change.
        assert!(keys
            .verify_access(&signed(header, &payload(sub, sid, exp), SECRET))
            .is_ok());
    }

    #[test]
    fn the_session_check_refuses_tampering_and_malformed_tokens() {
        let keys = keys();
        let user = user();
        let token = keys
            .issue(&user, &session(&user), crate::clock::now())
            .unwrap()
            .token;
        let parts: Vec<&str> = token.split('.').collect();
        let other = payload(UserId::new(), Uuid::new_v4(), i64::MAX / 2);
        let swapped = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(other.to_string()),
            parts[2]
        );
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        let huge = signed(
            r#"{"alg":"HS256"}"#,
            &serde_json::json!({"pad": "x".repeat(4000)}),
            SECRET,
        );
        for bad in [
            swapped.as_str(),
            flipped.as_str(),
            &format!("{}.{}", parts[0], parts[1]),
            &format!("{}.{}.", parts[0], parts[1]),
            &format!("{token}A"),
            &format!("{}.{}.{}", parts[0], parts[1], &parts[2][..20]),
            &huge,
            "",
            "...",
            "a.b.c",
        ] {
            assert!(keys.verify_access(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(keys.verify_access(&token).is_ok());
    }

    #[test]
    fn the_session_check_allows_five_seconds_of_clock_skew_on_exp() {
        let keys = keys();
        let (sub, sid) = (UserId::new(), Uuid::new_v4());
        let now = crate::clock::now().unix_timestamp();
        let header = r#"{"alg":"HS256"}"#;
        let just_expired = signed(header, &payload(sub, sid, now - 3), SECRET);
        let long_expired = signed(header, &payload(sub, sid, now - 30), SECRET);
        assert!(keys.verify_access(&just_expired).is_ok());
        assert!(keys.verify_access(&long_expired).is_err());
    }
}
