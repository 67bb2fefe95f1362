//! Access tokens: JWTs with issuer and audience, signed with the one configured algorithm
//! (HS256 with the server secret, or EdDSA / ES256 with the first signing key, named by `kid`)
//! and verified with no other.

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
    signing::{JwtAlg, PublicKey, SigningKey},
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
    /// How they proved it (RFC 8176); absent in tokens issued before it existed.
    #[serde(default)]
    pub amr: Vec<String>,
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
    // Not needed, but [`Claims`] requires them with these types (and once each), so a token
    // `verify` refuses for them is refused here too.
    #[serde(borrow)]
    email: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    jti: Option<Uuid>,
    auth_time: Option<i64>,
    /// Absent is fine (tokens from before `amr`), `null` is not: as `Claims` reads it.
    #[serde(default)]
    #[allow(dead_code)]
    amr: StrList,
    /// Never issued. The library skips its value, yet refuses some values (a non-empty array or
    /// object): any `nbf` is refused rather than that reproduced.
    nbf: Option<serde::de::IgnoredAny>,
}

/// A JSON array of strings, read without keeping it (what `Claims::amr` accepts).
#[derive(Default)]
struct StrList;

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = StrList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StrList, A::Error> {
                while seq.next_element::<Str>()?.is_some() {}
                Ok(StrList)
            }
        }
        de.deserialize_seq(Visit)
    }
}

/// A JSON string, read without keeping it.
struct Str;

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Str;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Str, E> {
                Ok(Str)
            }
        }
        de.deserialize_str(Visit)
    }
}

/// The header of an `alg`-checked token that is not byte-for-byte ours.
#[derive(Deserialize)]
struct AccessHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    crit: Option<serde::de::IgnoredAny>,
    #[serde(borrow)]
    kid: Option<Cow<'a, str>>,
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

/// Signs and verifies access tokens.
pub struct JwtKeys {
    alg: Algorithm,
    /// The key tokens are signed with: the HS256 secret, or the first signing key.
    encoding: EncodingKey,
    /// The header tokens are signed with (with the signing key's `kid` for EdDSA and ES256).
    signing_header: Header,
    validation: Validation,
    verifier: Verifier,
    issuer: String,
    ttl: Duration,
}

/// How signatures are checked.
// Built once per process; boxing the HS256 keys would add a pointer chase to every check.
#[allow(clippy::large_enum_variant)]
enum Verifier {
    Hs256 {
        decoding: DecodingKey,
        /// HMAC-SHA256 with the key already absorbed: each check clones it.
        mac: Hmac<Sha256>,
        /// The encoded header this service signs with, so the check can skip decoding it.
        header: String,
    },
    /// Every configured key verifies; the first signs.
    Asymmetric(Vec<PublicKeyEntry>),
}

/// One configured public key.
struct PublicKeyEntry {
    kid: String,
    /// The encoded header tokens signed with this key carry.
    header: String,
    key: PublicKey,
    decoding: DecodingKey,
}

fn encoded_header(header: &Header) -> String {
    serde_json::to_vec(header)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .unwrap_or_default()
}

fn validation(alg: Algorithm, issuer: &str) -> Validation {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    validation.leeway = LEEWAY.unsigned_abs();
    validation
}

impl JwtKeys {
    /// HS256 keys: `secret` is used as its UTF-8 bytes; `issuer` is the public URL.
    pub fn new(secret: &SecretString, issuer: &str, ttl: Duration) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        #[allow(clippy::expect_used)]
        let mac = Hmac::<Sha256>::new_from_slice(bytes).expect("HMAC takes keys of any length");
        let signing_header = Header::new(Algorithm::HS256);
        Self {
            alg: Algorithm::HS256,
            encoding: EncodingKey::from_secret(bytes),
            verifier: Verifier::Hs256 {
                decoding: DecodingKey::from_secret(bytes),
                mac,
                header: encoded_header(&signing_header),
            },
            signing_header,
            validation: validation(Algorithm::HS256, issuer),
            issuer: issuer.to_owned(),
            ttl,
        }
    }

    /// EdDSA or ES256 keys: the first signs, every one verifies. All are of one type (the
    /// configuration checked that).
    pub fn asymmetric(keys: &[SigningKey], issuer: &str, ttl: Duration) -> anyhow::Result<Self> {
        let first = keys
            .first()
            .ok_or_else(|| anyhow::anyhow!("at least one signing key is required"))?;
        let (alg, encoding) = match first.alg() {
            JwtAlg::EdDsa => (Algorithm::EdDSA, EncodingKey::from_ed_der(first.der())),
            JwtAlg::Es256 => (Algorithm::ES256, EncodingKey::from_ec_der(first.der())),
            JwtAlg::Hs256 => anyhow::bail!("HS256 takes no signing keys"),
        };
        let header_for = |kid: &str| {
            let mut header = Header::new(alg);
            header.kid = Some(kid.to_owned());
            header
        };
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            if key.alg() != first.alg() {
                anyhow::bail!("signing key {} is not of the first key's type", key.kid);
            }
            let jwk = key.public_jwk();
            let decoding = match &jwk.y {
                Some(y) => DecodingKey::from_ec_components(&jwk.x, y),
                None => DecodingKey::from_ed_components(&jwk.x),
            }?;
            entries.push(PublicKeyEntry {
                kid: key.kid.clone(),
                header: encoded_header(&header_for(&key.kid)),
                key: key.public_key(),
                decoding,
            });
        }
        Ok(Self {
            alg,
            encoding,
            signing_header: header_for(&first.kid),
            validation: validation(alg, issuer),
            verifier: Verifier::Asymmetric(entries),
            issuer: issuer.to_owned(),
            ttl,
        })
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
            amr: session.amr.names().into_iter().map(str::to_owned).collect(),
        };
        let token =
            encode(&self.signing_header, &claims, &self.encoding).map_err(ApiError::internal)?;
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
        match &self.verifier {
            Verifier::Hs256 {
                mac, header: ours, ..
            } => {
                if header != ours.as_bytes() && !header_names(header, "HS256") {
                    return None;
                }
                let mut tag = [0u8; 32];
                if URL_SAFE_NO_PAD.decode_slice(signature, &mut tag).ok()? != tag.len() {
                    return None;
                }
                let mut mac = mac.clone();
                mac.update(signed);
                mac.verify_slice(&tag).ok()?;
            }
            Verifier::Asymmetric(keys) => {
                let entry = match keys.iter().find(|k| k.header.as_bytes() == header) {
                    Some(entry) => entry,
                    None => self.entry_for_header(keys, header)?,
                };
                // Both curves' JWS signatures are 64 bytes.
                let mut sig = [0u8; 64];
                if URL_SAFE_NO_PAD.decode_slice(signature, &mut sig).ok()? != sig.len()
                    || !entry.key.verifies(signed, &sig)
                {
                    return None;
                }
            }
        }

        if payload.len() > MAX_PAYLOAD / 3 * 4 {
            return None;
        }
        let mut buf = [0u8; MAX_PAYLOAD];
        let n = URL_SAFE_NO_PAD.decode_slice(payload, &mut buf).ok()?;
        // serde reads a struct from an array too; the library never accepts one.
        if !is_object(&buf[..n]) {
            return None;
        }
        let claims: AccessPayload<'_> = serde_json::from_slice(&buf[..n]).ok()?;
        let (exp, sub, sid) = (claims.exp?, claims.sub?, claims.sid?);
        if claims.iat.is_none()
            || claims.email.is_none()
            || claims.name.is_none()
            || claims.jti.is_none()
            || claims.auth_time.is_none()
            || claims.nbf.is_some()
            || claims.iss.as_deref() != Some(self.issuer.as_str())
            || claims.aud.as_deref() != Some(AUDIENCE)
            || exp < now - LEEWAY
        {
            return None;
        }
        Some(AccessClaims { sub, sid, exp })
    }

    /// The key a header that is not byte-for-byte one of ours names: it must name our
    /// algorithm and a configured `kid`.
    fn entry_for_header<'k>(
        &self,
        keys: &'k [PublicKeyEntry],
        header: &[u8],
    ) -> Option<&'k PublicKeyEntry> {
        let mut buf = [0u8; 256];
        let json = decoded_header(header, &mut buf)?;
        let parsed: AccessHeader<'_> = serde_json::from_slice(json).ok()?;
        let kid = parsed.kid.as_deref()?;
        if !header_names(header, algorithm_name(self.alg)) {
            return None;
        }
        keys.iter().find(|k| k.kid == kid)
    }

    /// Verifies signature, algorithm, issuer, audience and expiry with the library.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let decoding = match &self.verifier {
            Verifier::Hs256 { decoding, .. } => decoding,
            Verifier::Asymmetric(keys) => {
                let header =
                    jsonwebtoken::decode_header(token).map_err(|_| ApiError::Unauthenticated)?;
                let kid = header.kid.ok_or(ApiError::Unauthenticated)?;
                &keys
                    .iter()
                    .find(|k| k.kid == kid)
                    .ok_or(ApiError::Unauthenticated)?
                    .decoding
            }
        };
        decode::<Claims>(token, decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| ApiError::Unauthenticated)
    }
}

fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::EdDSA => "EdDSA",
        Algorithm::ES256 => "ES256",
        _ => "HS256",
    }
}

fn decoded_header<'b>(encoded: &[u8], buf: &'b mut [u8; 256]) -> Option<&'b [u8]> {
    if encoded.len() > buf.len() / 3 * 4 {
        return None;
    }
    let n = URL_SAFE_NO_PAD.decode_slice(encoded, buf).ok()?;
    Some(&buf[..n])
}

/// Whether an encoded header is a JSON object that names `alg` and nothing we would have to
/// understand (`crit`), and that the library's [`Header`] reads (it types `typ`, `kid`, `jwk`
/// and the rest, and refuses duplicates). Only headers that are not byte-for-byte ours get here.
fn header_names(encoded: &[u8], alg: &str) -> bool {
    let mut buf = [0u8; 256];
    let Some(json) = decoded_header(encoded, &mut buf) else {
        return false;
    };
    is_object(json)
        && serde_json::from_slice::<AccessHeader<'_>>(json)
            .is_ok_and(|h| h.alg == alg && h.crit.is_none())
        && serde_json::from_slice::<Header>(json).is_ok()
}

/// Whether `json` starts as an object does (serde also reads a struct from an array).
fn is_object(json: &[u8]) -> bool {
    json.trim_ascii_start().first() == Some(&b'{')
}

#[cfg(test)]
mod tests {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

    use super::*;
    use crate::domain::{Amr, AuthMethod, Email, UserName};

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
            mfa_enabled: false,
            passkeys: 0,
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
            amr: Amr::one(AuthMethod::Pwd),
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

    // ---------------------------------------------------------------------------------------
    // The fast path against the library: `check_access` (what `verify_access` runs) and
    // `verify` (`jsonwebtoken::decode` with the struct's `Validation`) must give the same answer
    // on every token, except where the fast path refuses on purpose (`deliberately_stricter`).
    // ---------------------------------------------------------------------------------------

    use proptest::prelude::*;
    use proptest::sample::select;

    const ISSUER: &str = "http://issuer.test";

    /// A JSON value in a generated payload: literal text, a time relative to `now`, or a UUID.
    #[derive(Debug, Clone)]
    enum Val {
        Raw(&'static str),
        Time(i64, TimeFmt),
        Uuid(u128, UuidFmt),
        /// A string of this many characters.
        Long(usize),
        /// Arrays nested this deep.
        Deep(usize),
    }

    #[derive(Debug, Clone, Copy)]
    enum TimeFmt {
        Int,
        Half,
        Dot0,
        Exp0,
        Quoted,
    }

    #[derive(Debug, Clone, Copy)]
    enum UuidFmt {
        Hyphenated,
        Simple,
        Upper,
        Urn,
        Braced,
        Escaped,
        Number,
    }

    impl Val {
        fn render(&self, now: i64) -> String {
            match *self {
                Val::Raw(raw) => raw.to_owned(),
                Val::Long(n) => format!("\"{}\"", "x".repeat(n)),
                Val::Deep(n) => format!("{}{}", "[".repeat(n), "]".repeat(n)),
                Val::Time(offset, fmt) => {
                    let t = now + offset;
                    match fmt {
                        TimeFmt::Int => t.to_string(),
                        TimeFmt::Half => format!("{t}.5"),
                        TimeFmt::Dot0 => format!("{t}.0"),
                        TimeFmt::Exp0 => format!("{t}e0"),
                        TimeFmt::Quoted => format!("\"{t}\""),
                    }
                }
                Val::Uuid(n, fmt) => {
                    let id = Uuid::from_u128(n);
                    match fmt {
                        UuidFmt::Hyphenated => format!("\"{}\"", id.hyphenated()),
                        UuidFmt::Simple => format!("\"{}\"", id.simple()),
                        UuidFmt::Upper => format!("\"{}\"", id.hyphenated()).to_uppercase(),
                        UuidFmt::Urn => format!("\"{}\"", id.urn()),
                        UuidFmt::Braced => format!("\"{}\"", id.braced()),
                        UuidFmt::Escaped => {
                            let text = id.hyphenated().to_string();
                            format!("\"\\u{:04x}{}\"", u32::from(text.as_bytes()[0]), &text[1..])
                        }
                        UuidFmt::Number => n.to_string(),
                    }
                }
            }
        }
    }

    /// A change to the claims of a valid payload.
    #[derive(Debug, Clone)]
    enum Edit {
        /// Drops the member at this index (modulo the count).
        Remove(usize),
        /// Replaces the value of the first member with this key, or adds it.
        Set(&'static str, Val),
        /// Adds a member, a duplicate where the key is already there.
        Add(&'static str, Val),
        Swap(usize, usize),
    }

    /// What the payload segment holds.
    #[derive(Debug, Clone)]
    enum Body {
        /// The claims of a valid token (`exp` this far from now, `iat` that far), then edited.
        Object {
            ids: (u128, u128, u128),
            exp: i64,
            iat: i64,
            edits: Vec<Edit>,
            sep: &'static str,
            around: &'static str,
            trailer: &'static str,
        },
        /// The claims the fast path reads, as an array in its struct's field order.
        FastArray(u128, u128, i64),
        /// Every claim, as an array in `Claims` field order.
        ClaimsArray(u128, u128, i64),
        Raw(&'static str),
    }

    /// A change to bytes, at an index taken modulo their length.
    #[derive(Debug, Clone, Copy)]
    enum Flip {
        Keep,
        Bit(usize, u8),
        Byte(usize, u8),
        Insert(usize, u8),
        Delete(usize),
    }

    /// How a segment is base64-encoded.
    #[derive(Debug, Clone, Copy)]
    enum Enc {
        Url,
        Padded,
        Standard,
        Space(usize),
        Append(&'static str),
        Prepend(&'static str),
        Empty,
    }

    #[derive(Debug, Clone, Copy)]
    enum Sig {
        Good(Enc),
        WrongKey,
        FlipBit(u8),
        Truncate(usize),
        Extend(u8),
        Hs384,
        /// The right tag with the unused low bits of its last character set.
        TrailingBits,
        Raw(&'static str),
    }

    #[derive(Debug, Clone, Copy)]
    enum Shape {
        Normal,
        /// `h.p.s.extra`: the library reads `extra` as the signature.
        ExtraAfter(&'static str),
        /// `h.p.extra.s`, signed over `h.p.extra`.
        ExtraMiddle,
        /// `h.p`, no signature segment.
        NoSignature,
        /// `.h.p.s`
        LeadingDot,
        /// `h.p..s`, signed over `h.p.`.
        DoubleDot,
    }

    #[derive(Debug, Clone)]
    struct Spec {
        header: String,
        header_flip: Flip,
        header_enc: Enc,
        body: Body,
        body_flip: Flip,
        body_enc: Enc,
        /// Applied to `header.payload` before it is signed (so the signature still matches).
        signed_flip: Flip,
        shape: Shape,
        sig: Sig,
        /// Applied to the finished token (so the signature no longer matches, as a rule).
        token_flip: Flip,
    }

    fn apply(flip: Flip, bytes: &mut Vec<u8>) {
        let len = bytes.len();
        match flip {
            Flip::Keep => {}
            Flip::Bit(_, _) | Flip::Byte(_, _) | Flip::Delete(_) if len == 0 => {}
            Flip::Bit(at, bit) => bytes[at % len] ^= 1 << bit,
            Flip::Byte(at, byte) => bytes[at % len] = byte,
            Flip::Insert(at, byte) => bytes.insert(at % (len + 1), byte),
            Flip::Delete(at) => {
                bytes.remove(at % len);
            }
        }
    }

    fn encode(enc: Enc, bytes: &[u8]) -> String {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE};
        match enc {
            Enc::Url => URL_SAFE_NO_PAD.encode(bytes),
            Enc::Padded => URL_SAFE.encode(bytes),
            Enc::Standard => STANDARD_NO_PAD.encode(bytes),
            Enc::Space(at) => {
                let mut text = URL_SAFE_NO_PAD.encode(bytes);
                text.insert(at % (text.len() + 1), ' ');
                text
            }
            Enc::Append(tail) => URL_SAFE_NO_PAD.encode(bytes) + tail,
            Enc::Prepend(head) => format!("{head}{}", URL_SAFE_NO_PAD.encode(bytes)),
            Enc::Empty => String::new(),
        }
    }

    fn hs256(key: &str, data: &[u8]) -> [u8; 32] {
        crate::auth::csrf::hmac_sha256(key.as_bytes(), data)
    }

    impl Body {
        fn render(&self, now: i64) -> String {
            let id = |n: u128| Val::Uuid(n, UuidFmt::Hyphenated).render(now);
            match self {
                Body::Object {
                    ids: (sub, sid, jti),
                    exp,
                    iat,
                    edits,
                    sep,
                    around,
                    trailer,
                } => {
                    let mut members: Vec<(&str, Val)> = vec![
                        ("iss", Val::Raw("\"http://issuer.test\"")),
                        ("aud", Val::Raw("\"authvault\"")),
                        ("sub", Val::Uuid(*sub, UuidFmt::Hyphenated)),
                        ("email", Val::Raw("\"ada@example.com\"")),
                        ("name", Val::Raw("\"Ada\"")),
                        ("iat", Val::Time(*iat, TimeFmt::Int)),
                        ("exp", Val::Time(*exp, TimeFmt::Int)),
                        ("jti", Val::Uuid(*jti, UuidFmt::Hyphenated)),
                        ("sid", Val::Uuid(*sid, UuidFmt::Hyphenated)),
                        ("auth_time", Val::Time(*iat, TimeFmt::Int)),
                    ];
                    for edit in edits {
                        match edit {
                            Edit::Remove(at) if !members.is_empty() => {
                                members.remove(at % members.len());
                            }
                            Edit::Remove(_) => {}
                            Edit::Set(key, val) => {
                                match members.iter_mut().find(|(k, _)| k == key) {
                                    Some(member) => member.1 = val.clone(),
                                    None => members.push((key, val.clone())),
                                }
                            }
                            Edit::Add(key, val) => members.push((key, val.clone())),
                            Edit::Swap(a, b) if !members.is_empty() => {
                                let n = members.len();
                                members.swap(a % n, b % n);
                            }
                            Edit::Swap(..) => {}
                        }
                    }
                    let members: Vec<String> = members
                        .iter()
                        .map(|(key, val)| format!("\"{key}\":{}", val.render(now)))
                        .collect();
                    format!("{around}{{{}}}{around}{trailer}", members.join(sep))
                }
                Body::FastArray(sub, sid, exp) => format!(
                    "[\"{ISSUER}\",\"authvault\",{},{},{},{}]",
                    id(*sub),
                    id(*sid),
                    now,
                    now + exp
                ),
                Body::ClaimsArray(sub, sid, exp) => format!(
                    "[\"{ISSUER}\",\"authvault\",{},\"a@b.c\",\"A\",{now},{},{},{},{now}]",
                    id(*sub),
                    now + exp,
                    id(*sub ^ 1),
                    id(*sid)
                ),
                Body::Raw(raw) => (*raw).to_owned(),
            }
        }
    }

    impl Spec {
        /// The token, ASCII whatever the mutations (see `ascii_flip`).
        fn token(&self, now: i64) -> String {
            let mut header = self.header.clone().into_bytes();
            apply(self.header_flip, &mut header);
            let mut body = self.body.render(now).into_bytes();
            apply(self.body_flip, &mut body);
            let mut signed = format!(
                "{}.{}",
                encode(self.header_enc, &header),
                encode(self.body_enc, &body)
            )
            .into_bytes();
            apply(self.signed_flip, &mut signed);
            match self.shape {
                Shape::ExtraMiddle => signed.extend_from_slice(b".e30"),
                Shape::DoubleDot => signed.push(b'.'),
                Shape::LeadingDot => signed.insert(0, b'.'),
                _ => {}
            }
            let tag = hs256(SECRET, &signed);
            let signature = match self.sig {
                Sig::Good(enc) => encode(enc, &tag),
                Sig::WrongKey => URL_SAFE_NO_PAD.encode(hs256("another-secret", &signed)),
                Sig::FlipBit(bit) => {
                    let mut tag = tag;
                    tag[usize::from(bit / 8)] ^= 1 << (bit % 8);
                    URL_SAFE_NO_PAD.encode(tag)
                }
                Sig::Truncate(n) => URL_SAFE_NO_PAD.encode(&tag[..n % tag.len()]),
                Sig::Extend(byte) => {
                    let mut longer = tag.to_vec();
                    longer.push(byte);
                    URL_SAFE_NO_PAD.encode(longer)
                }
                Sig::Hs384 => {
                    let mut mac = Hmac::<sha2::Sha384>::new_from_slice(SECRET.as_bytes()).unwrap();
                    mac.update(&signed);
                    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
                }
                Sig::TrailingBits => {
                    const ALPHABET: &[u8] =
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                    let mut text = URL_SAFE_NO_PAD.encode(tag).into_bytes();
                    let last = text.len() - 1;
                    let index = ALPHABET.iter().position(|&c| c == text[last]).unwrap();
                    text[last] = ALPHABET[index | 1];
                    String::from_utf8(text).unwrap()
                }
                Sig::Raw(raw) => raw.to_owned(),
            };
            let mut token = signed;
            match self.shape {
                Shape::NoSignature => {}
                _ => {
                    token.push(b'.');
                    token.extend_from_slice(signature.as_bytes());
                }
            }
            if let Shape::ExtraAfter(extra) = self.shape {
                token.push(b'.');
                token.extend_from_slice(extra.as_bytes());
            }
            apply(self.token_flip, &mut token);
            String::from_utf8(token).unwrap()
        }
    }

    /// `exp - now`, at least two seconds away from the leeway boundary (`exp == now - LEEWAY`)
    /// so that the second ticking between the two checks cannot change the answer.
    fn exp_offset() -> impl Strategy<Value = i64> {
        let offset = prop_oneof![
            3 => -(LEEWAY - 2)..=100_000i64,
            2 => -100_000i64..=-(LEEWAY + 2),
            1 => Just(-(LEEWAY - 2)),
            1 => Just(-(LEEWAY + 2)),
            1 => Just(0i64),
            1 => -1_000_000_000_000i64..=1_000_000_000_000,
        ];
        offset.prop_filter("near the leeway boundary", |t| (t + LEEWAY).abs() >= 2)
    }

    fn time_fmt() -> impl Strategy<Value = TimeFmt> {
        prop_oneof![
            8 => Just(TimeFmt::Int),
            1 => Just(TimeFmt::Half),
            1 => Just(TimeFmt::Dot0),
            1 => Just(TimeFmt::Exp0),
            1 => Just(TimeFmt::Quoted),
        ]
    }

    fn uuid_fmt() -> impl Strategy<Value = UuidFmt> {
        prop_oneof![
            6 => Just(UuidFmt::Hyphenated),
            1 => Just(UuidFmt::Simple),
            1 => Just(UuidFmt::Upper),
            1 => Just(UuidFmt::Urn),
            1 => Just(UuidFmt::Braced),
            1 => Just(UuidFmt::Escaped),
            1 => Just(UuidFmt::Number),
        ]
    }

    /// Numbers and other values where a time belongs.
    const ODD_TIMES: &[&str] = &[
        "0",
        "-0",
        "-1",
        "1.5",
        "1e20",
        "1e10",
        "-1e10",
        "1e400",
        "-1e400",
        "1E+12",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "123456789012345678901234567890",
        "null",
        "true",
        "\"9999999999\"",
        "[9999999999]",
        "[]",
        "{}",
        "{\"exp\":9999999999}",
    ];

    fn claim_value(key: &'static str) -> BoxedStrategy<Val> {
        let raw = |values: &'static [&'static str]| select(values).prop_map(Val::Raw).boxed();
        match key {
            "iss" => raw(&[
                "\"http://issuer.test\"",
                "\"http:\\/\\/issuer.test\"",
                "\"http://issuer.tes\\u0074\"",
                "\"http://evil.test\"",
                "\"http://issuer.test/\"",
                "\"HTTP://ISSUER.TEST\"",
                "\"http://issuer.test\\u0000\"",
                "[\"http://issuer.test\"]",
                "[\"http://evil.test\"]",
                "\"\"",
                "null",
                "1",
                "{}",
            ]),
            "aud" => raw(&[
                "\"authvault\"",
                "\"\\u0061uthvault\"",
                "\"Authvault\"",
                "\"authvault \"",
                "[\"authvault\"]",
                "[\"other\",\"authvault\"]",
                "[\"other\"]",
                "[]",
                "\"someone-else\"",
                "\"\"",
                "null",
                "7",
                "{\"aud\":\"authvault\"}",
            ]),
            "email" | "name" => raw(&[
                "\"ada@example.com\"",
                "\"\"",
                "\"\\u00e9\\ud83d\\ude00\"",
                "\"\\ud800\"",
                "\"\\udc00x\"",
                "null",
                "5",
                "[\"a\"]",
                "{\"x\":1}",
            ]),
            "sub" | "sid" | "jti" => prop_oneof![
                4 => (any::<u128>(), uuid_fmt()).prop_map(|(n, f)| Val::Uuid(n, f)),
                1 => select(&[
                    "\"not-a-uuid\"", "\"\"", "null", "0", "[]", "{}",
                    "\"00000000-0000-0000-0000-00000000000\"",
                    "\"00000000-0000-0000-0000-0000000000000\"",
                    "\"00000000-0000-0000-0000-00000000000g\"",
                    "[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]",
                ][..])
                .prop_map(Val::Raw),
            ]
            .boxed(),
            _ => prop_oneof![
                4 => (exp_offset(), time_fmt()).prop_map(|(t, f)| Val::Time(t, f)),
                1 => select(ODD_TIMES).prop_map(Val::Raw),
            ]
            .boxed(),
        }
    }

    const CLAIMS: &[&str] = &[
        "iss",
        "aud",
        "sub",
        "email",
        "name",
        "iat",
        "exp",
        "jti",
        "sid",
        "auth_time",
        "nbf",
    ];

    /// Members of no claim the fast path reads, or of one under another spelling.
    fn extra_member() -> impl Strategy<Value = Edit> {
        prop_oneof![
            select(vec![
                ("foo", Val::Raw("\"bar\"")),
                (
                    "nested",
                    Val::Raw("{\"a\":{\"b\":[1,2,{\"c\":null}]},\"exp\":1}")
                ),
                ("deep", Val::Deep(100)),
                ("deep", Val::Deep(200)),
                ("big", Val::Raw("1e400")),
                ("huge", Val::Raw("123456789012345678901234567890")),
                ("lone", Val::Raw("\"\\ud800\"")),
                ("\\u00e9", Val::Raw("1")),
                ("", Val::Raw("null")),
                ("EXP", Val::Raw("1")),
                ("scope", Val::Raw("[\"admin\"]")),
                ("pad", Val::Long(100)),
                ("pad", Val::Long(1_000)),
                ("pad", Val::Long(1_990)),
                ("pad", Val::Long(2_100)),
                ("pad", Val::Long(4_000)),
            ])
            .prop_map(|(k, v)| Edit::Add(k, v)),
            (
                select(
                    &[
                        "\\u0065xp",
                        "\\u0073ub",
                        "\\u0061ud",
                        "\\u0069ss",
                        "\\u0065mail"
                    ][..]
                ),
                exp_offset()
            )
                .prop_map(|(k, t)| Edit::Add(k, Val::Time(t, TimeFmt::Int))),
        ]
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            2 => any::<usize>().prop_map(Edit::Remove),
            5 => select(CLAIMS).prop_flat_map(|k| claim_value(k).prop_map(move |v| Edit::Set(k, v))),
            2 => select(CLAIMS).prop_flat_map(|k| claim_value(k).prop_map(move |v| Edit::Add(k, v))),
            2 => extra_member(),
            1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Swap(a, b)),
        ]
    }

    fn body() -> impl Strategy<Value = Body> {
        let object = (
            any::<(u128, u128, u128)>(),
            prop_oneof![4 => 10i64..100_000, 1 => exp_offset()],
            prop_oneof![4 => -100_000i64..=0, 1 => 0i64..100_000],
            prop_oneof![1 => Just(vec![]), 1 => prop::collection::vec(edit(), 1..4)],
            select(&[",", ", ", " ,\n\t"][..]),
            select(&["", "", " ", "\n"][..]),
            prop_oneof![8 => Just(""), 1 => select(&["x", "}", ",", "null", "{}"][..])],
        )
            .prop_map(
                |(ids, exp, iat, edits, sep, around, trailer)| Body::Object {
                    ids,
                    exp,
                    iat,
                    edits,
                    sep,
                    around,
                    trailer,
                },
            );
        prop_oneof![
            20 => object,
            1 => (any::<u128>(), any::<u128>(), 10i64..100_000)
                .prop_map(|(a, b, e)| Body::FastArray(a, b, e)),
            1 => (any::<u128>(), any::<u128>(), 10i64..100_000)
                .prop_map(|(a, b, e)| Body::ClaimsArray(a, b, e)),
            1 => select(&["", "{}", "[]", "null", "123", "\"claims\"", "true", "{", "{\"exp\":}"][..])
                .prop_map(Body::Raw),
        ]
    }

    /// The header this service signs with.
    fn own_header() -> String {
        serde_json::to_string(&Header::new(Algorithm::HS256)).unwrap()
    }

    fn header() -> impl Strategy<Value = String> {
        let alg = prop_oneof![
            12 => Just("\"HS256\""),
            1 => select(&[
                "\"none\"", "\"None\"", "\"HS384\"", "\"HS512\"", "\"RS256\"", "\"ES256\"",
                "\"EdDSA\"", "\"hs256\"", "\"HS256 \"", "\"\"", "null", "256", "[\"HS256\"]",
                "{\"HS256\":null}", "\"HS\\u0032\\u00356\"",
            ][..]),
        ];
        let member = select(
            [
                "\"typ\":\"JWT\"",
                "\"typ\":\"jwt\"",
                "\"typ\":\"at+jwt\"",
                "\"typ\":\"\"",
                "\"typ\":null",
                "\"typ\":123",
                "\"cty\":\"JWT\"",
                "\"kid\":\"k1\"",
                "\"kid\":\"\"",
                "\"kid\":7",
                "\"kid\":\"../../dev/null\"",
                "\"crit\":[\"exp\"]",
                "\"crit\":[]",
                "\"crit\":null",
                "\"crit\":\"b64\"",
                "\"b64\":false",
                "\"jku\":\"https://evil.test/\"",
                "\"x5u\":\"https://evil.test/\"",
                "\"x5c\":[\"MIIB\"]",
                "\"x5c\":\"MIIB\"",
                "\"x5t\":\"abc\"",
                "\"x5t#S256\":\"abc\"",
                "\"jwk\":{}",
                "\"jwk\":{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}",
                "\"foo\":\"bar\"",
                "\"nested\":{\"a\":[1,{\"b\":null}]}",
                "\"alg\":\"HS256\"",
                "\"alg\":\"none\"",
                "\"\\u0061lg\":\"HS256\"",
                "\"\\u0061lg\":\"none\"",
                "\"big\":1e400",
                "\"lone\":\"\\ud800\"",
                "\"kid\":\"\\ud800\"",
            ]
            .iter()
            .map(|member| (*member).to_owned())
            .chain([format!("\"kid\":\"{}\"", "k".repeat(300))])
            .collect::<Vec<_>>(),
        );
        let built = (
            prop::option::weighted(0.95, alg),
            prop::collection::vec(member, 0..4),
            any::<usize>(),
            select(&[",", ", ", " ,\n"][..]),
            select(&["", "", " ", "\n"][..]),
            prop_oneof![12 => Just(""), 1 => select(&["x", "}", ",", "null"][..])],
        )
            .prop_map(|(alg, mut members, at, sep, around, trailer)| {
                if let Some(alg) = alg {
                    let at = at % (members.len() + 1);
                    members.insert(at, format!("\"alg\":{alg}"));
                }
                format!("{around}{{{}}}{around}{trailer}", members.join(sep))
            });
        prop_oneof![
            6 => Just(own_header()),
            10 => built,
            1 => select(&[
                "[\"HS256\"]", "[\"HS256\",null]", "[\"JWT\",\"HS256\"]",
                "[\"JWT\",\"HS256\",null,null,null,null,null,null,null,null]",
                "[\"HS256\",null,null,null,null,null,null,null,null,null]",
                "\"HS256\"", "null", "1", "{}", "", "not json",
            ][..])
            .prop_map(str::to_owned),
        ]
    }

    fn flip(weight_keep: u32) -> impl Strategy<Value = Flip> {
        prop_oneof![
            weight_keep => Just(Flip::Keep),
            2 => (any::<usize>(), 0u8..8).prop_map(|(a, b)| Flip::Bit(a, b)),
            1 => (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Flip::Byte(a, b)),
            1 => (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Flip::Insert(a, b)),
            1 => any::<usize>().prop_map(Flip::Delete),
        ]
    }

    /// Like `flip`, but ASCII stays ASCII (bits 0 to 6, bytes below 0x80): tokens are `&str`.
    fn ascii_flip(weight_keep: u32) -> impl Strategy<Value = Flip> {
        prop_oneof![
            weight_keep => Just(Flip::Keep),
            3 => (any::<usize>(), 0u8..7).prop_map(|(a, b)| Flip::Bit(a, b)),
            1 => (any::<usize>(), 0u8..0x80).prop_map(|(a, b)| Flip::Byte(a, b)),
            1 => (any::<usize>(), select(&b"A_-+/=. \n"[..])).prop_map(|(a, b)| Flip::Insert(a, b)),
            1 => any::<usize>().prop_map(Flip::Delete),
        ]
    }

    fn enc() -> impl Strategy<Value = Enc> {
        prop_oneof![
            100 => Just(Enc::Url),
            1 => Just(Enc::Padded),
            1 => Just(Enc::Standard),
            1 => any::<usize>().prop_map(Enc::Space),
            1 => select(&["=", "==", "A", "AA", "AAA", "!", "\n", " ", "+", "/", "%3D"][..])
                .prop_map(Enc::Append),
            1 => select(&[" ", "\t", "A", "="][..]).prop_map(Enc::Prepend),
            1 => Just(Enc::Empty),
        ]
    }

    fn sig() -> impl Strategy<Value = Sig> {
        prop_oneof![
            100 => Just(Sig::Good(Enc::Url)),
            3 => enc().prop_map(Sig::Good),
            1 => Just(Sig::WrongKey),
            1 => any::<u8>().prop_map(Sig::FlipBit),
            1 => any::<usize>().prop_map(Sig::Truncate),
            1 => any::<u8>().prop_map(Sig::Extend),
            1 => Just(Sig::Hs384),
            1 => Just(Sig::TrailingBits),
            1 => select(&["", "A", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "e30"][..])
                .prop_map(Sig::Raw),
        ]
    }

    fn shape() -> impl Strategy<Value = Shape> {
        prop_oneof![
            100 => Just(Shape::Normal),
            1 => select(&["", "e30", "AAAA"][..]).prop_map(Shape::ExtraAfter),
            1 => Just(Shape::ExtraMiddle),
            1 => Just(Shape::NoSignature),
            1 => Just(Shape::LeadingDot),
            1 => Just(Shape::DoubleDot),
        ]
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            (header(), flip(100), enc()),
            (body(), flip(30), enc()),
            (ascii_flip(100), shape(), sig(), ascii_flip(60)),
        )
            .prop_map(
                |(
                    (header, header_flip, header_enc),
                    (body, body_flip, body_enc),
                    (signed_flip, shape, sig, token_flip),
                )| Spec {
                    header,
                    header_flip,
                    header_enc,
                    body,
                    body_flip,
                    body_enc,
                    signed_flip,
                    shape,
                    sig,
                    token_flip,
                },
            )
    }

    /// What kind of JSON value a member holds.
    #[derive(Debug, PartialEq)]
    enum Kind {
        Null,
        Str,
        Other,
    }

    impl<'de> Deserialize<'de> for Kind {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Kind;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_unit<E>(self) -> Result<Kind, E> {
                    Ok(Kind::Null)
                }
                fn visit_none<E>(self) -> Result<Kind, E> {
                    Ok(Kind::Null)
                }
                fn visit_str<E>(self, _: &str) -> Result<Kind, E> {
                    Ok(Kind::Str)
                }
                fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
                    Ok(Kind::Other)
                }
                fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
                    Ok(Kind::Other)
                }
                fn visit_u64<E>(self, _: u64) -> Result<Kind, E> {
                    Ok(Kind::Other)
                }
                fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
                    Ok(Kind::Other)
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<Kind, A::Error> {
                    while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                    Ok(Kind::Other)
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<Kind, A::Error> {
                    while a
                        .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                        .is_some()
                    {}
                    Ok(Kind::Other)
                }
            }
            d.deserialize_any(V)
        }
    }

    /// The members of a JSON object, duplicates included, with the kind of value of `alg` and
    /// whether `nbf` is null (every other value is skipped unparsed, as both verifiers skip it).
    fn members(json: &[u8]) -> Option<Vec<(String, Option<Kind>)>> {
        struct Members(Vec<(String, Option<Kind>)>);
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = a.next_key::<String>()? {
                    let kind = match key.as_str() {
                        "alg" => Some(a.next_value::<Kind>()?),
                        // Skipped, not parsed: `1e400` is out of range for a number.
                        "nbf" => match a.next_value::<Option<serde::de::IgnoredAny>>()? {
                            None => Some(Kind::Null),
                            Some(_) => Some(Kind::Other),
                        },
                        _ => {
                            a.next_value::<serde::de::IgnoredAny>()?;
                            None
                        }
                    };
                    members.push((key, kind));
                }
                Ok(Members(members))
            }
        }
        let mut de = serde_json::Deserializer::from_slice(json);
        let members = serde::Deserializer::deserialize_map(&mut de, V).ok()?;
        de.end().ok()?;
        Some(members.0)
    }

    /// Why the fast path may refuse this token although the library accepts it: each is a rule
    /// it keeps on purpose. `None` for every other token, which both must answer alike.
    fn deliberately_stricter(token: &str) -> Option<&'static str> {
        let (message, _) = token.rsplit_once('.')?;
        let (header, payload) = message.rsplit_once('.')?;
        // Both bounds keep the decoding on the stack; our header is 27 bytes, our payloads are
        // well under 1 KiB.
        if header.len() > 256 / 3 * 4 {
            return Some("header over 255 bytes");
        }
        if payload.len() > MAX_PAYLOAD / 3 * 4 {
            return Some("payload over MAX_PAYLOAD bytes");
        }
        let header = URL_SAFE_NO_PAD.decode(header).ok()?;
        // RFC 7515 §4: the header is a JSON object; the library's `Header` (a serde struct) also
        // reads an array of its fields in order.
        if !is_object(&header) {
            return Some("header is not an object");
        }
        let header = members(&header)?;
        // RFC 7515 §4.1.11: `crit` names extensions the recipient must understand or refuse the
        // token; we understand none (the library ignores `crit`).
        if header.iter().any(|(key, _)| key == "crit") {
            return Some("header has crit");
        }
        // `alg` is the string "HS256"; the library's enum also takes `{"HS256":null}`.
        if header
            .iter()
            .any(|(key, kind)| key == "alg" && *kind != Some(Kind::Str))
        {
            return Some("alg is not a string");
        }
        // We never issue `nbf`. The library skips its value but refuses some (a non-empty array
        // or object), so the fast path refuses every `nbf` rather than reproduce that.
        let payload = members(&URL_SAFE_NO_PAD.decode(payload).ok()?)?;
        if payload
            .iter()
            .any(|(key, kind)| key == "nbf" && *kind != Some(Kind::Null))
        {
            return Some("payload has nbf");
        }
        None
    }

    /// How the two verifiers answered a token they agree on.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Outcome {
        BothRefuse,
        BothAccept,
        /// The fast path refuses on purpose, for this reason; the library accepts.
        Stricter(&'static str),
    }

    /// The fast path and the library agree on `token`, or the fast path refuses on purpose.
    fn agree(keys: &JwtKeys, token: &str, now: i64) -> Result<Outcome, String> {
        match (keys.check_access(token.as_bytes(), now), keys.verify(token)) {
            (None, Err(_)) => Ok(Outcome::BothRefuse),
            (Some(fast), Ok(lib))
                if fast.sub == lib.sub && fast.sid == lib.sid && fast.exp == lib.exp =>
            {
                Ok(Outcome::BothAccept)
            }
            (Some(fast), Ok(lib)) => Err(format!("different claims: {fast:?} vs {lib:?}")),
            (Some(_), Err(_)) => Err("fast path accepts, library refuses".to_owned()),
            (None, Ok(_)) => deliberately_stricter(token)
                .map(Outcome::Stricter)
                .ok_or_else(|| "fast path refuses, library accepts".to_owned()),
        }
    }

    /// The token's segments, each followed by what it decodes to where it does.
    fn describe(token: &str) -> String {
        let parts: Vec<String> = token
            .split('.')
            .map(|part| match URL_SAFE_NO_PAD.decode(part) {
                Ok(bytes) => format!("{part} = {}", String::from_utf8_lossy(&bytes)),
                Err(_) => part.to_owned(),
            })
            .collect();
        parts.join("\n  .")
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 10_000,
            // No `proptest-regressions/` beside this file: a failure prints its token instead.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Generated and mutated tokens, re-signed with the right key unless the mutation is
        /// of the signature or of the finished token.
        #[test]
        fn the_session_check_answers_every_token_as_the_library_does(spec in spec()) {
            let keys = keys();
            let now = jsonwebtoken::get_current_timestamp() as i64;
            let token = spec.token(now);
            if let Err(e) = agree(&keys, &token, now) {
                prop_assert!(false, "{e}:\n  {}", describe(&token));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 1_000,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Tokens the service issues, then with a bit of the token and of the signature flipped
        /// or a character inserted or dropped (not re-signed).
        #[test]
        fn issued_tokens_and_their_mutations_get_the_same_answer(
            ttl in 1u64..100_000,
            age in prop_oneof![0u64..100, 0u64..200_000],
            mutation in ascii_flip(0),
            sig_bit in (any::<usize>(), 0u8..7),
        ) {
            let keys = JwtKeys::new(
                &SecretString::from(SECRET),
                ISSUER,
                Duration::from_secs(ttl),
            );
            let user = user();
            let session = SessionRecord {
                expires_at: crate::clock::now() + Duration::from_secs(1_000_000),
                ..session(&user)
            };
            let now = jsonwebtoken::get_current_timestamp() as i64;
            let issued_at = now - age as i64;
            let exp = issued_at + ttl as i64;
            // Two seconds or more either side of the leeway boundary.
            prop_assume!((exp - (now - LEEWAY)).abs() >= 2);
            let issued = OffsetDateTime::from_unix_timestamp(issued_at).unwrap();
            let token = keys.issue(&user, &session, issued).unwrap().token;
            let expected = if exp >= now - LEEWAY {
                Outcome::BothAccept
            } else {
                Outcome::BothRefuse
            };
            prop_assert_eq!(agree(&keys, &token, now), Ok(expected));

            let mut mutated = token.clone().into_bytes();
            apply(mutation, &mut mutated);
            let mut flipped = token.into_bytes();
            let at = flipped.len() - 1 - sig_bit.0 % 43;
            flipped[at] ^= 1 << sig_bit.1;
            for token in [mutated, flipped] {
                let token = String::from_utf8(token).unwrap();
                if let Err(e) = agree(&keys, &token, now) {
                    prop_assert!(false, "{e}:\n  {}", describe(&token));
                }
            }
        }
    }

    /// One EdDSA and one ES256 key set (two keys each, the first signing), made once.
    static ASYMMETRIC: std::sync::LazyLock<Vec<JwtKeys>> = std::sync::LazyLock::new(|| {
        [JwtAlg::EdDsa, JwtAlg::Es256]
            .into_iter()
            .map(|alg| {
                let keys = [
                    SigningKey::generate("k1", alg).unwrap(),
                    SigningKey::generate("k2", alg).unwrap(),
                ];
                JwtKeys::asymmetric(&keys, ISSUER, Duration::from_secs(3600)).unwrap()
            })
            .collect()
    });

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 1_000,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// EdDSA and ES256: issued tokens, then with a character of the token or a bit of the
        /// signature changed; the fast path answers each as the library does.
        #[test]
        fn asymmetric_tokens_and_their_mutations_get_the_same_answer(
            which in 0usize..2,
            mutation in ascii_flip(0),
            sig_bit in (any::<usize>(), 0u8..7),
        ) {
            let keys = &ASYMMETRIC[which];
            let user = user();
            let session = session(&user);
            let now = jsonwebtoken::get_current_timestamp() as i64;
            let token = keys.issue(&user, &session, crate::clock::now()).unwrap().token;
            prop_assert_eq!(agree(keys, &token, now), Ok(Outcome::BothAccept));

            let mut mutated = token.clone().into_bytes();
            apply(mutation, &mut mutated);
            let mut flipped = token.into_bytes();
            // The signature is 64 bytes: 86 base64url characters.
            let at = flipped.len() - 1 - sig_bit.0 % 86;
            flipped[at] ^= 1 << sig_bit.1;
            for token in [mutated, flipped] {
                let token = String::from_utf8(token).unwrap();
                if let Err(e) = agree(keys, &token, now) {
                    prop_assert!(false, "{e}:\n  {}", describe(&token));
                }
            }
        }
    }

    #[test]
    fn an_asymmetric_check_takes_only_its_own_algorithm_and_listed_kids() {
        let user = user();
        let session = session(&user);
        let now = crate::clock::now();
        let ed = &ASYMMETRIC[0];
        let es = &ASYMMETRIC[1];
        let ed_token = ed.issue(&user, &session, now).unwrap().token;
        let es_token = es.issue(&user, &session, now).unwrap().token;
        let t = now.unix_timestamp();
        assert!(ed.check_access(ed_token.as_bytes(), t).is_some());
        // The other algorithm's token, though its kid (k1) is listed here too.
        assert!(ed.check_access(es_token.as_bytes(), t).is_none());
        assert!(es.check_access(ed_token.as_bytes(), t).is_none());
        assert!(ed.verify(&es_token).is_err());
        // An HS256 token keyed with the server secret.
        let hs = keys().issue(&user, &session, now).unwrap().token;
        assert!(ed.check_access(hs.as_bytes(), t).is_none() && ed.verify(&hs).is_err());
        // The second key verifies; a header naming it with other spacing goes the slow way.
        let only_k2 = {
            let k2 = SigningKey::generate("k2", JwtAlg::EdDsa).unwrap();
            JwtKeys::asymmetric(&[k2], ISSUER, Duration::from_secs(3600)).unwrap()
        };
        let token = only_k2.issue(&user, &session, now).unwrap().token;
        assert!(only_k2.check_access(token.as_bytes(), t).is_some());
        assert!(
            ed.check_access(token.as_bytes(), t).is_none(),
            "a foreign key named k2"
        );
    }

    /// The disagreements the property test found, fixed in the fast path: each token is signed
    /// with the right key and refused by the library, and so by the session check.
    #[test]
    fn the_session_check_refuses_what_the_library_refuses() {
        let keys = keys();
        let (sub, sid) = (UserId::new(), Uuid::new_v4());
        let now = crate::clock::now().unix_timestamp();
        let exp = now + 600;
        let ours = r#"{"typ":"JWT","alg":"HS256"}"#;
        let mut cases = vec![
            // serde reads a struct from an array of its fields in order.
            (
                ours.to_owned(),
                serde_json::json!([ISSUER, "authvault", sub, sid, now, exp]),
            ),
            // Headers the library's `Header` cannot read.
            (r#"["HS256",null]"#.to_owned(), payload(sub, sid, exp)),
            (
                r#"{"alg":"HS256","typ":123}"#.to_owned(),
                payload(sub, sid, exp),
            ),
            (
                r#"{"alg":"HS256","kid":"\ud800"}"#.to_owned(),
                payload(sub, sid, exp),
            ),
            (
                r#"{"alg":"HS256","x5c":"MIIB"}"#.to_owned(),
                payload(sub, sid, exp),
            ),
            (
                r#"{"alg":"HS256","jwk":{}}"#.to_owned(),
                payload(sub, sid, exp),
            ),
            (
                r#"{"typ":"JWT","typ":"JWT","alg":"HS256"}"#.to_owned(),
                payload(sub, sid, exp),
            ),
        ];
        // A claim `Claims` requires, missing or mistyped.
        for (key, value) in [
            ("email", None),
            ("name", None),
            ("jti", None),
            ("auth_time", None),
            ("email", Some(serde_json::json!(null))),
            ("name", Some(serde_json::json!(["Ada"]))),
            ("jti", Some(serde_json::json!("not-a-uuid"))),
            ("auth_time", Some(serde_json::json!(1.5))),
            (
                "auth_time",
                Some(serde_json::json!(9_223_372_036_854_775_808u64)),
            ),
        ] {
            let mut body = payload(sub, sid, exp);
            match value {
                Some(value) => body[key] = value,
                None => {
                    body.as_object_mut().unwrap().remove(key);
                }
            }
            cases.push((ours.to_owned(), body));
        }
        for (header, body) in &cases {
            let token = signed(header, body, SECRET);
            assert!(keys.verify(&token).is_err(), "{header} {body}");
            assert!(
                keys.verify_access(&token).is_err(),
                "{header} {body} was accepted"
            );
        }
        // What `serde_json::Value` cannot hold: a duplicate member, a lone surrogate, and an
        // `nbf` the library fails on (`validate_nbf` is off, yet it parses `nbf`).
        let body = payload(sub, sid, exp).to_string();
        for body in [
            body.replacen('{', r#"{"name":"Eve","#, 1),
            body.replacen('{', r#"{"email":"\ud800","#, 1),
            body.replacen('{', r#"{"nbf":[1],"#, 1),
        ] {
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(ours),
                URL_SAFE_NO_PAD.encode(&body)
            );
            let tag = hs256(SECRET, signed.as_bytes());
            let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag));
            assert!(keys.verify(&token).is_err(), "{body}");
            assert!(keys.verify_access(&token).is_err(), "{body} was accepted");
        }
    }
}
