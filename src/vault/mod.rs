//! The key vault: sealing API keys at rest, showing them masked, rotating encryption keys.
//!
//! Sealing has one door (`KeyRing::seal`) and opening one (`KeyRing::open`); nothing else in the
//! crate touches `chacha20poly1305`.

mod keyring;
mod mask;
pub mod rotate;

pub use keyring::{KeyRing, VaultError};
pub use mask::Masked;
