//! The command line: `serve` (the default), `openapi`, `rotate-keys`, `signing-key`, each with
//! its own `--help`, and `--version`; and the terminal side of `rotate-keys`. `main.rs` parses it
//! and composes.

use std::{io::IsTerminal, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{
    store::Store,
    vault::{
        rotate::{rotate_all, Progress},
        KeyRing,
    },
};

/// Headless JSON authentication and key-vault REST API.
///
/// Configuration comes from the environment or a `.env` file in the working directory (see the
/// README's configuration table); with none, `serve` runs on the embedded store under `./data`
/// with development secrets generated on first start.
#[derive(Debug, Parser)]
#[command(name = "authvault", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve the API (the default when no command is given).
    Serve,
    /// Print the OpenAPI document (reads no configuration and opens no store).
    Openapi,
    /// Re-seal every stored API key and TOTP secret with the first key of
    /// AUTHVAULT_ENCRYPTION_KEYS.
    ///
    /// Safe while servers run, and safe to run again after a failure. Exits 1 when a key
    /// could not be opened with any configured key.
    RotateKeys,
    /// Print a new signing key for AUTHVAULT_SIGNING_KEYS: `kid:base64(PKCS#8 DER)`.
    ///
    /// Reads no configuration. To rotate, add the new entry second, wait at least 300 s (the
    /// JWKS cache time), then move it first (see the README).
    SigningKey {
        /// The algorithm the key signs with (AUTHVAULT_JWT_ALG).
        #[arg(long, value_parser = ["EdDSA", "ES256"])]
        alg: String,
        /// The key id (`kid`); default: the algorithm and the date, e.g. `eddsa-20261202`.
        #[arg(long)]
        kid: Option<String>,
    },
}

/// `authvault signing-key`: a new key's configuration entry, or why there is none.
pub fn signing_key(alg: &str, kid: Option<&str>) -> Result<zeroize::Zeroizing<String>, String> {
    let alg = crate::signing::JwtAlg::parse(alg)?;
    let default_kid;
    let kid = match kid {
        Some(kid) => kid,
        None => {
            let today = crate::clock::now().date();
            default_kid = format!(
                "{}-{:04}{:02}{:02}",
                alg.as_str().to_ascii_lowercase(),
                today.year(),
                u8::from(today.month()),
                today.day()
            );
            &default_kid
        }
    };
    Ok(crate::signing::SigningKey::generate(kid, alg)?.to_entry())
}

/// `authvault rotate-keys` once the store is open: re-seals every stored API key with the
/// current encryption key, with a progress bar on a terminal and a line per hundred keys
/// elsewhere; exit 1 when any key failed to open.
pub async fn rotate_keys(store: &dyn Store, ring: &KeyRing) -> ExitCode {
    println!(
        "re-sealing stored API keys and TOTP secrets with encryption key {:?} on the {} store",
        ring.current_id(),
        store.backend()
    );
    let on_terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::hidden();
    let mut last_line = 0;
    let result = rotate_all(store, ring, |event| match event {
        Progress::Started { total } => {
            if on_terminal {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_length(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} keys {msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
            } else {
                println!("{total} keys stored");
            }
        }
        Progress::Advanced { report } => {
            if on_terminal {
                bar.set_position(report.done());
            } else if report.done() >= last_line + 100 {
                last_line = report.done();
                println!("{} keys done", report.done());
            }
        }
        Progress::Failed { user, what, key_id } => {
            let line =
                format!("failed: user {user}, {what} sealed with key id {key_id:?} does not open");
            if on_terminal {
                bar.println(line);
            } else {
                println!("{line}");
            }
        }
    })
    .await;
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            println!(
                "done: {} re-sealed, {} already current, {} failed",
                report.resealed, report.current, report.failed
            );
            if report.failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e:#} (safe to run again)");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_command_means_serve_and_each_command_parses() {
        assert_eq!(Cli::try_parse_from(["authvault"]).unwrap().command, None);
        for (word, command) in [
            ("serve", Command::Serve),
            ("openapi", Command::Openapi),
            ("rotate-keys", Command::RotateKeys),
        ] {
            let cli = Cli::try_parse_from(["authvault", word]).unwrap();
            assert_eq!(cli.command, Some(command));
        }
        assert!(Cli::try_parse_from(["authvault", "unknown"]).is_err());
    }
}
