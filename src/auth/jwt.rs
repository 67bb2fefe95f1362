//! Access tokens: HS256 JWTs with issuer and audience, verified with no other algorithm.

use std::time::Duration;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
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

/// The claims the session check needs: nothing that allocates (issuer and audience are checked
/// by the validation itself).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct AccessClaims {
    pub sub: UserId,
    pub sid: Uuid,
    pub exp: i64,
}

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
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
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
    /// check needs.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, ApiError> {
        decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| ApiError::Unauthenticated)
    }

    /// Verifies signature, algorithm, issuer, audience and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| ApiError::Unauthenticated)
    }
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
        assert!(keys.verify(&format!("{header}.{payload}.")).is_err());
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
    }

    #[test]
    fn an_expired_token_is_refused() {
        let keys = keys();
        let user = user();
        let long_ago = crate::clock::now() - Duration::from_secs(7200);
        let token = keys.issue(&user, &session(&user), long_ago).unwrap().token;
        assert!(keys.verify(&token).is_err());
    }
}
