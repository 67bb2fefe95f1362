//! Development secrets for the embedded default: generated on first start, kept in the data
//! directory with mode 0600, and re-used on every later start.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;
use base64::{engine::general_purpose::STANDARD, Engine};
use secrecy::SecretString;

use crate::{
    config::{parse_encryption_keys, EncryptionKey},
    signing::{parse_signing_keys, JwtAlg, SigningKey},
};

const JWT_FILE: &str = "jwt-secret";
const KEYS_FILE: &str = "encryption-keys";

/// Reads `name` from `dir`, creating it from `generate()` first when it does not exist.
fn read_or_create(
    dir: &Path,
    name: &str,
    generate: impl FnOnce() -> String,
) -> anyhow::Result<(String, bool)> {
    let path: PathBuf = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(text) => return Ok((text.trim().to_owned(), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let value = generate();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(value.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            Ok((value, true))
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok((fs::read_to_string(&path)?.trim().to_owned(), false))
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// The development signing key of `alg` kept in `dir` (one file per algorithm).
pub fn signing_keys(dir: &Path, alg: JwtAlg) -> anyhow::Result<Vec<SigningKey>> {
    let name = match alg {
        JwtAlg::EdDsa => "signing-keys-eddsa",
        JwtAlg::Es256 => "signing-keys-es256",
        JwtAlg::Hs256 => return Ok(Vec::new()),
    };
    let mut failed = None;
    let (entry, created) = read_or_create(dir, name, || match SigningKey::generate("dev1", alg) {
        Ok(key) => key.to_entry().to_string(),
        Err(e) => {
            failed = Some(e);
            String::new()
        }
    })?;
    if let Some(e) = failed {
        anyhow::bail!("generating a signing key: {e}");
    }
    let keys = parse_signing_keys(&entry, alg)
        .map_err(|m| anyhow::anyhow!("{}: {m}", dir.join(name).display()))?;
    if created {
        log::warn!(
            "generated a development {} signing key in {} (set AUTHVAULT_SIGNING_KEYS in production)",
            alg.as_str(),
            dir.display()
        );
    }
    Ok(keys)
}

/// The JWT secret and encryption keys kept in `dir`.
pub fn load_or_create(dir: &Path) -> anyhow::Result<(SecretString, Vec<EncryptionKey>)> {
    let (jwt, created_jwt) = read_or_create(dir, JWT_FILE, || {
        let bytes: [u8; 48] = crate::random::bytes();
        STANDARD.encode(bytes)
    })?;
    let (keys, created_keys) = read_or_create(dir, KEYS_FILE, || {
        let bytes: [u8; 32] = crate::random::bytes();
        format!("dev1:{}", STANDARD.encode(bytes))
    })?;
    if jwt.len() < 32 {
        anyhow::bail!(
            "{} holds a secret shorter than 32 bytes",
            dir.join(JWT_FILE).display()
        );
    }
    let keys = parse_encryption_keys(&keys)
        .map_err(|m| anyhow::anyhow!("{}: {m}", dir.join(KEYS_FILE).display()))?;
    if created_jwt || created_keys {
        log::warn!(
            "generated development secrets in {} (set AUTHVAULT_JWT_SECRET and AUTHVAULT_ENCRYPTION_KEYS in production)",
            dir.display()
        );
    }
    Ok((SecretString::from(jwt), keys))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_signing_key_is_created_once_per_algorithm_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        for alg in [JwtAlg::EdDsa, JwtAlg::Es256] {
            let first = signing_keys(dir.path(), alg).unwrap();
            let again = signing_keys(dir.path(), alg).unwrap();
            assert_eq!(first.len(), 1);
            assert_eq!(first[0].alg(), alg);
            assert_eq!(first[0].public_jwk(), again[0].public_jwk());
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("signing-keys-es256"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(signing_keys(dir.path(), JwtAlg::Hs256).unwrap().is_empty());
    }

    #[test]
    fn secrets_are_created_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, keys_a) = load_or_create(dir.path()).unwrap();
        let (b, keys_b) = load_or_create(dir.path()).unwrap();
        assert_eq!(a.expose_secret(), b.expose_secret());
        assert_eq!(keys_a[0].id, keys_b[0].id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(JWT_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
