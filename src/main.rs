use std::{io::IsTerminal, process::ExitCode};

use authvault::{
    config::Settings,
    openapi,
    startup::{open_store, resolve_secrets, Application},
    vault::{
        rotate::{rotate_all, Progress},
        KeyRing,
    },
};

const USAGE: &str = "usage: authvault [serve | openapi | rotate-keys]\n\
  serve        serve the API (the default)\n\
  openapi      print the OpenAPI document\n\
  rotate-keys  re-seal every stored API key with the first key of AUTHVAULT_ENCRYPTION_KEYS";

#[actix_web::main]
async fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    match command.as_str() {
        "openapi" => {
            println!("{}", openapi::document_json());
            ExitCode::SUCCESS
        }
        "serve" => match setup() {
            Ok(settings) => serve(settings).await,
            Err(code) => code,
        },
        "rotate-keys" => match setup() {
            Ok(settings) => rotate_keys(settings).await,
            Err(code) => code,
        },
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("unknown command {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Loads `.env`, starts logging and reads the configuration.
fn setup() -> Result<Settings, ExitCode> {
    // A missing .env is fine; a broken one is not.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("error: .env: {e}");
            return Err(ExitCode::FAILURE);
        }
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    Settings::from_env().map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })
}

async fn serve(settings: Settings) -> ExitCode {
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn rotate_keys(mut settings: Settings) -> ExitCode {
    let opened = async {
        resolve_secrets(&mut settings)?;
        let store = open_store(&settings).await?;
        let keys = settings
            .encryption_keys
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("AUTHVAULT_ENCRYPTION_KEYS is not set"))?;
        anyhow::Ok((store, KeyRing::new(keys)))
    };
    let (store, ring) = match opened.await {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "re-sealing stored API keys with encryption key {:?} on the {} store",
        ring.current_id(),
        store.backend()
    );
    let on_terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::hidden();
    let mut last_line = 0;
    let result = rotate_all(store.as_ref(), &ring, |event| match event {
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
        Progress::Failed {
            user,
            provider,
            key_id,
        } => {
            let line = format!(
                "failed: user {user}, {provider} key sealed with key id {key_id:?} does not open"
            );
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
