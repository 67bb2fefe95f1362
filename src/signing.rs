//! Asymmetric signing keys for access tokens: EdDSA (Ed25519) and ES256 (P-256).
//!
//! A key is written `kid:base64(PKCS#8 DER private key)` (`AUTHVAULT_SIGNING_KEYS`, the data
//! dir's `signing-keys`, `authvault signing-key`). The keys are parsed and generated with
//! `ed25519-dalek` and `p256`, the crates `jsonwebtoken` signs and verifies with.

use std::fmt;

use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine,
};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde::Serialize;
use zeroize::Zeroizing;

/// The algorithm access tokens are signed with (`AUTHVAULT_JWT_ALG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlg {
    /// HMAC-SHA-256 with `AUTHVAULT_JWT_SECRET`: only authvault can verify.
    Hs256,
    /// Ed25519.
    EdDsa,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

impl JwtAlg {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "HS256" => Ok(Self::Hs256),
            "EdDSA" => Ok(Self::EdDsa),
            "ES256" => Ok(Self::Es256),
            _ => Err("must be HS256, EdDSA or ES256".into()),
        }
    }

    /// The JOSE name (`alg`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
        }
    }
}

/// The private part of one signing key.
#[derive(Clone)]
enum Private {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    P256(p256::SecretKey),
}

/// One asymmetric signing key with its key id.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    private: Private,
    /// The PKCS#8 DER encoding, as `jsonwebtoken` takes it.
    der: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}:{}:***)", self.alg().as_str(), self.kid)
    }
}

/// A public key as published in the JWKS (RFC 7517, RFC 8037): never a private member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicJwk {
    pub kty: &'static str,
    pub crv: &'static str,
    pub x: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    pub kid: String,
    pub alg: &'static str,
    #[serde(rename = "use")]
    pub use_: &'static str,
}

/// The public half of a key, for the session check.
pub enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// Whether `signature` (the JWS encoding: 64 bytes for both curves) signs `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use signature::Verifier;
        match self {
            Self::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
            Self::P256(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
        }
    }
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 32
        && kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl SigningKey {
    /// Reads a PKCS#8 DER private key of `alg`'s type.
    pub fn from_der(kid: &str, der: &[u8], alg: JwtAlg) -> Result<Self, String> {
        if !valid_kid(kid) {
            return Err("a key id must be 1-32 characters of A-Z, a-z, 0-9, - or _".into());
        }
        let private = match alg {
            JwtAlg::EdDsa => ed25519_dalek::SigningKey::from_pkcs8_der(der)
                .map(|k| Private::Ed25519(Box::new(k)))
                .map_err(|_| format!("key {kid} is not an Ed25519 PKCS#8 key, as EdDSA needs"))?,
            JwtAlg::Es256 => p256::SecretKey::from_pkcs8_der(der)
                .map(Private::P256)
                .map_err(|_| format!("key {kid} is not a P-256 PKCS#8 key, as ES256 needs"))?,
            JwtAlg::Hs256 => return Err("HS256 takes no signing keys".into()),
        };
        Ok(Self {
            kid: kid.to_owned(),
            private,
            der: Zeroizing::new(der.to_vec()),
        })
    }

    /// A new random key.
    pub fn generate(kid: &str, alg: JwtAlg) -> Result<Self, String> {
        let der = match alg {
            JwtAlg::EdDsa => {
                let seed: Zeroizing<[u8; 32]> = Zeroizing::new(crate::random::bytes());
                ed25519_dalek::SigningKey::from_bytes(&seed)
                    .to_pkcs8_der()
                    .map_err(|e| e.to_string())?
            }
            JwtAlg::Es256 => {
                // A random 32-byte string is a valid scalar but with odds of about 2^-128.
                let key = loop {
                    let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(crate::random::bytes());
                    if let Ok(key) = p256::SecretKey::from_slice(bytes.as_slice()) {
                        break key;
                    }
                };
                p256::pkcs8::EncodePrivateKey::to_pkcs8_der(&key).map_err(|e| e.to_string())?
            }
            JwtAlg::Hs256 => return Err("HS256 takes no signing keys".into()),
        };
        Self::from_der(kid, der.as_bytes(), alg)
    }

    pub fn alg(&self) -> JwtAlg {
        match self.private {
            Private::Ed25519(_) => JwtAlg::EdDsa,
            Private::P256(_) => JwtAlg::Es256,
        }
    }

    /// The PKCS#8 DER private key, for `jsonwebtoken::EncodingKey`.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// `kid:base64(DER)`, the form the configuration takes.
    pub fn to_entry(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{}:{}", self.kid, STANDARD.encode(&*self.der)))
    }

    pub fn public_key(&self) -> PublicKey {
        match &self.private {
            Private::Ed25519(key) => PublicKey::Ed25519(key.verifying_key()),
            Private::P256(key) => {
                PublicKey::P256(p256::ecdsa::VerifyingKey::from(key.public_key()))
            }
        }
    }

    pub fn public_jwk(&self) -> PublicJwk {
        let (kty, crv, x, y) = match &self.private {
            Private::Ed25519(key) => (
                "OKP",
                "Ed25519",
                URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
                None,
            ),
            Private::P256(key) => {
                use p256::elliptic_curve::sec1::ToEncodedPoint;
                let point = key.public_key().to_encoded_point(false);
                (
                    "EC",
                    "P-256",
                    URL_SAFE_NO_PAD.encode(point.x().map(|x| x.as_slice()).unwrap_or_default()),
                    Some(
                        URL_SAFE_NO_PAD.encode(point.y().map(|y| y.as_slice()).unwrap_or_default()),
                    ),
                )
            }
        };
        PublicJwk {
            kty,
            crv,
            x,
            y,
            kid: self.kid.clone(),
            alg: self.alg().as_str(),
            use_: "sig",
        }
    }
}

/// Parses `kid:base64der[,kid:base64der...]`; every key must be of `alg`'s type, and the first
/// one signs.
pub fn parse_signing_keys(raw: &str, alg: JwtAlg) -> Result<Vec<SigningKey>, String> {
    let mut keys: Vec<SigningKey> = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((kid, b64)) = part.split_once(':') else {
            return Err("each key must be written kid:base64(PKCS#8 DER)".into());
        };
        let kid = kid.trim();
        if keys.iter().any(|k| k.kid == kid) {
            return Err(format!("key id {kid} appears twice"));
        }
        let der = Zeroizing::new(
            STANDARD
                .decode(b64.trim())
                .map_err(|_| format!("key {kid} is not valid base64"))?,
        );
        keys.push(SigningKey::from_der(kid, &der, alg)?);
    }
    if keys.is_empty() {
        return Err("at least one key is required".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_reads_back_from_its_entry_with_the_same_public_key() {
        for alg in [JwtAlg::EdDsa, JwtAlg::Es256] {
            let key = SigningKey::generate("k1", alg).unwrap();
            let parsed = parse_signing_keys(&key.to_entry(), alg).unwrap();
            assert_eq!(parsed.len(), 1);
            assert_eq!(parsed[0].public_jwk(), key.public_jwk());
            assert_eq!(parsed[0].alg(), alg);
        }
    }

    #[test]
    fn a_key_of_the_other_type_is_refused() {
        let ed = SigningKey::generate("ed", JwtAlg::EdDsa).unwrap();
        let ec = SigningKey::generate("ec", JwtAlg::Es256).unwrap();
        let err = parse_signing_keys(&ed.to_entry(), JwtAlg::Es256).unwrap_err();
        assert!(err.contains("P-256"), "{err}");
        let err = parse_signing_keys(&ec.to_entry(), JwtAlg::EdDsa).unwrap_err();
        assert!(err.contains("Ed25519"), "{err}");
        let both = format!("{},{}", ed.to_entry().as_str(), ec.to_entry().as_str());
        assert!(parse_signing_keys(&both, JwtAlg::EdDsa).is_err());
    }

    #[test]
    fn malformed_entries_are_refused_without_echoing_the_key() {
        let key = SigningKey::generate("k1", JwtAlg::EdDsa).unwrap();
        let entry = key.to_entry();
        let b64 = entry.split_once(':').unwrap().1;
        for (raw, expect) in [
            ("", "at least one"),
            ("nokid", "kid:base64"),
            ("bad kid!:AAAA", "key id"),
            ("k1:not base64!", "base64"),
            ("k1:AAAA", "Ed25519"),
        ] {
            let err = parse_signing_keys(raw, JwtAlg::EdDsa).unwrap_err();
            assert!(err.contains(expect), "{raw}: {err}");
        }
        let twice = format!("k1:{b64},k1:{b64}");
        let err = parse_signing_keys(&twice, JwtAlg::EdDsa).unwrap_err();
        assert!(err.contains("twice") && !err.contains(b64), "{err}");
    }

    #[test]
    fn the_jwk_has_the_public_members_only() {
        let ec = SigningKey::generate("ec1", JwtAlg::Es256)
            .unwrap()
            .public_jwk();
        let json = serde_json::to_value(&ec).unwrap();
        let mut names: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
        assert_eq!(json["use"], "sig");
        let ed = SigningKey::generate("ed1", JwtAlg::EdDsa)
            .unwrap()
            .public_jwk();
        let json = serde_json::to_value(&ed).unwrap();
        assert!(json.get("y").is_none() && json.get("d").is_none());
        assert_eq!(
            (json["kty"].as_str(), json["crv"].as_str()),
            (Some("OKP"), Some("Ed25519"))
        );
    }
}
