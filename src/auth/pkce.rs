//! PKCE (RFC 7636) with S256: the challenge a client sends first, and the check of the verifier
//! it sends later. App callbacks and emailed sign-in links use it.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// A `codeChallenge` as sent: the base64url S256 digest of a verifier (43 characters).
pub fn parse_challenge(raw: &str) -> Result<String, ApiError> {
    let ok = raw.len() == 43
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(ApiError::field(
            "codeChallenge",
            "must be the base64url S256 challenge of your code verifier (43 characters)",
        ))
    }
}

/// The S256 challenge of `verifier`.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` (43-128 characters) is the one `challenge` was made from, compared in
/// constant time.
pub fn verifies(challenge: &str, verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && bool::from(s256(verifier).as_bytes().ct_eq(challenge.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7636_example_verifies() {
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(s256(verifier), challenge);
        assert!(verifies(challenge, verifier));
        assert!(!verifies(
            challenge,
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj"
        ));
        assert!(parse_challenge(challenge).is_ok());
        assert!(parse_challenge(&challenge[1..]).is_err());
        assert!(parse_challenge(&format!("{}=", &challenge[1..])).is_err());
    }
}
