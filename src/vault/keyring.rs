use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    XChaCha20Poly1305, XNonce,
};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    config::EncryptionKey,
    domain::{KeyProvider, SealedKey, UserId},
};

/// Why a sealed key could not be opened (or sealed). Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("no encryption key with id {0} is configured")]
    UnknownKeyId(String),
    #[error("the sealed key does not open (wrong key, user or provider, or tampered)")]
    Tampered,
    #[error("the opened key is not valid UTF-8")]
    NotText,
    #[error("sealing failed")]
    Seal,
}

/// The configured encryption keys; the first seals, all open.
pub struct KeyRing {
    keys: Vec<(String, XChaCha20Poly1305)>,
}

const NONCE_LEN: usize = 24;

/// Binds a ciphertext to its owner and provider: moved anywhere else, it fails to open.
fn associated_data(user: UserId, provider: KeyProvider) -> Vec<u8> {
    format!("authvault/api-key/v1|{user}|{}", provider.as_str()).into_bytes()
}

impl KeyRing {
    /// Builds the ring; `keys` must not be empty (configuration guarantees it).
    pub fn new(keys: &[EncryptionKey]) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|k| {
                    (
                        k.id.clone(),
                        XChaCha20Poly1305::new(k.key.expose_secret().into()),
                    )
                })
                .collect(),
        }
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        self.keys.first().map_or("", |(id, _)| id.as_str())
    }

    /// Seals `plaintext` for `user` and `provider` with the newest key and a fresh random nonce.
    pub fn seal(
        &self,
        user: UserId,
        provider: KeyProvider,
        plaintext: &str,
    ) -> Result<SealedKey, VaultError> {
        self.seal_with(&associated_data(user, provider), plaintext)
    }

    /// Opens a sealed key with the key it names; fails closed on any mismatch.
    pub fn open(
        &self,
        user: UserId,
        provider: KeyProvider,
        sealed: &SealedKey,
    ) -> Result<SecretString, VaultError> {
        self.open_with(&associated_data(user, provider), sealed)
    }

    /// Seals another short-lived secret (a refresh token's successor) bound to `context`.
    pub fn seal_secret(&self, context: &str, plaintext: &str) -> Result<SealedKey, VaultError> {
        self.seal_with(
            format!("authvault/secret/v1|{context}").as_bytes(),
            plaintext,
        )
    }

    /// Opens what `seal_secret` sealed for the same `context`.
    pub fn open_secret(
        &self,
        context: &str,
        sealed: &SealedKey,
    ) -> Result<SecretString, VaultError> {
        self.open_with(format!("authvault/secret/v1|{context}").as_bytes(), sealed)
    }

    fn seal_with(&self, aad: &[u8], plaintext: &str) -> Result<SealedKey, VaultError> {
        let (id, cipher) = self.keys.first().ok_or(VaultError::Seal)?;
        let nonce: [u8; NONCE_LEN] = crate::random::bytes();
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad,
                },
            )
            .map_err(|_| VaultError::Seal)?;
        Ok(SealedKey {
            key_id: id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    fn open_with(&self, aad: &[u8], sealed: &SealedKey) -> Result<SecretString, VaultError> {
        let cipher = self
            .keys
            .iter()
            .find(|(id, _)| *id == sealed.key_id)
            .map(|(_, c)| c)
            .ok_or_else(|| VaultError::UnknownKeyId(sealed.key_id.clone()))?;
        if sealed.nonce.len() != NONCE_LEN {
            return Err(VaultError::Tampered);
        }
        let plaintext = cipher
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad,
                },
            )
            .map_err(|_| VaultError::Tampered)?;
        String::from_utf8(plaintext)
            .map(SecretString::from)
            .map_err(|_| VaultError::NotText)
    }
}

#[cfg(test)]
mod tests {
    use base64::{engine::general_purpose::STANDARD, Engine};

    use super::*;
    use crate::config::parse_encryption_keys;

    fn ring(spec: &str) -> KeyRing {
        KeyRing::new(&parse_encryption_keys(spec).unwrap())
    }

    fn k(id: &str, byte: u8) -> String {
        format!("{id}:{}", STANDARD.encode([byte; 32]))
    }

    #[test]
    fn a_sealed_key_opens_for_its_owner_and_provider() {
        let ring = ring(&k("k1", 1));
        let user = UserId::new();
        let sealed = ring
            .seal(user, KeyProvider::TogetherAi, "sk-secret")
            .unwrap();
        assert_eq!(sealed.key_id, "k1");
        assert_eq!(sealed.nonce.len(), 24);
        assert!(!sealed.ciphertext.windows(9).any(|w| w == b"sk-secret"));
        let opened = ring.open(user, KeyProvider::TogetherAi, &sealed).unwrap();
        assert_eq!(opened.expose_secret(), "sk-secret");
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let ring = ring(&k("k1", 1));
        let user = UserId::new();
        let a = ring.seal(user, KeyProvider::Oumi, "same").unwrap();
        let b = ring.seal(user, KeyProvider::Oumi, "same").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn a_ciphertext_moved_to_another_user_or_provider_does_not_open() {
        let ring = ring(&k("k1", 1));
        let user = UserId::new();
        let sealed = ring
            .seal(user, KeyProvider::TogetherAi, "sk-secret")
            .unwrap();
        assert!(matches!(
            ring.open(UserId::new(), KeyProvider::TogetherAi, &sealed),
            Err(VaultError::Tampered)
        ));
        assert!(matches!(
            ring.open(user, KeyProvider::Kestra, &sealed),
            Err(VaultError::Tampered)
        ));
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(ring.open(user, KeyProvider::TogetherAi, &flipped).is_err());
    }

    #[test]
    fn old_keys_open_and_only_the_first_seals() {
        let old = ring(&k("k1", 1));
        let user = UserId::new();
        let sealed = old.seal(user, KeyProvider::CodeRabbit, "v").unwrap();
        let rotated = ring(&format!("{},{}", k("k2", 2), k("k1", 1)));
        assert_eq!(rotated.current_id(), "k2");
        assert!(rotated.open(user, KeyProvider::CodeRabbit, &sealed).is_ok());
        assert_eq!(
            rotated
                .seal(user, KeyProvider::CodeRabbit, "v")
                .unwrap()
                .key_id,
            "k2"
        );
        let without_k1 = ring(&k("k2", 2));
        assert!(matches!(
            without_k1.open(user, KeyProvider::CodeRabbit, &sealed),
            Err(VaultError::UnknownKeyId(_))
        ));
    }

    #[test]
    fn a_key_id_pointing_at_the_wrong_key_fails_closed() {
        let ring = ring(&format!("{},{}", k("k2", 2), k("k1", 1)));
        let user = UserId::new();
        let mut sealed = ring.seal(user, KeyProvider::Oumi, "v").unwrap();
        sealed.key_id = "k1".into();
        assert!(matches!(
            ring.open(user, KeyProvider::Oumi, &sealed),
            Err(VaultError::Tampered)
        ));
    }
}
