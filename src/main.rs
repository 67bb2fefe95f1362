use std::process::ExitCode;

use authvault::{
    cli::{self, Cli, Command},
    config::Settings,
    openapi,
    startup::{open_store, resolve_secrets, Application},
    vault::KeyRing,
};
use clap::Parser;

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            use std::io::Write;
            // A reader that stops early (`| head`) is not an error worth a panic.
            match writeln!(std::io::stdout().lock(), "{}", openapi::document_json()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve => match setup() {
            Ok(settings) => serve(settings).await,
            Err(code) => code,
        },
        Command::SigningKey { alg, kid } => match cli::signing_key(&alg, kid.as_deref()) {
            Ok(entry) => {
                println!("{}", entry.as_str());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::RotateKeys => match setup() {
            Ok(settings) => rotate_keys(settings).await,
            Err(code) => code,
        },
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
    let filter = authvault::config::var::RUST_LOG;
    env_logger::Builder::from_env(
        env_logger::Env::default().filter_or(filter.name, filter.default),
    )
    .init();
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

async fn rotate_keys(settings: Settings) -> ExitCode {
    let opened = async {
        let secrets = resolve_secrets(&settings)?;
        let store = open_store(&settings).await?;
        anyhow::Ok((store, KeyRing::new(&secrets.encryption_keys)))
    };
    match opened.await {
        Ok((store, ring)) => cli::rotate_keys(store.as_ref(), &ring).await,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
