//! Random bytes from the operating system's CSPRNG.

use rand::{rngs::OsRng, RngCore};

/// `N` bytes from the OS random source.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}
