//! The composition root: picks the store, resolves secrets, wires middleware and routes.

use std::{net::TcpListener, sync::Arc};

use actix_web::{
    dev::Server,
    middleware::{from_fn, Condition, Logger},
    web, App, HttpServer,
};
use anyhow::Context;

use crate::{
    config::{DatabaseUrl, Secrets, Settings},
    dev_secrets, middleware, routes,
    signing::JwtAlg,
    state::AppState,
    store::{MongoStore, SqliteStore, Store},
};

/// A bound, ready-to-run server.
pub struct Application {
    port: u16,
    server: Server,
}

/// The configured secrets, with development ones from the data directory for whichever the
/// embedded store runs without (configuration already refused MongoDB without them).
pub fn resolve_secrets(settings: &Settings) -> anyhow::Result<Secrets> {
    let configured = &settings.secrets;
    let (jwt_secret, encryption_keys) = match (&configured.jwt_secret, &configured.encryption_keys)
    {
        (Some(jwt), Some(keys)) => (jwt.clone(), keys.clone()),
        (jwt, keys) => {
            let dir = settings
                .data_dir()
                .context("secrets are required with this database")?;
            let (dev_jwt, dev_keys) = dev_secrets::load_or_create(dir)?;
            (
                jwt.clone().unwrap_or(dev_jwt),
                keys.clone().unwrap_or(dev_keys),
            )
        }
    };
    let signing_keys = match (&configured.signing_keys, configured.jwt_alg) {
        (Some(keys), _) => keys.clone(),
        (None, JwtAlg::Hs256) => Vec::new(),
        (None, alg) => {
            let dir = settings
                .data_dir()
                .context("AUTHVAULT_SIGNING_KEYS is required with this database")?;
            dev_secrets::signing_keys(dir, alg)?
        }
    };
    Ok(Secrets {
        jwt_secret,
        encryption_keys,
        jwt_alg: configured.jwt_alg,
        signing_keys,
    })
}

/// Opens the store the database URL names.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &settings.store.database_url {
        DatabaseUrl::Sqlite(path) => Arc::new(
            SqliteStore::open(path, settings.store.timeout)
                .await
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        DatabaseUrl::Mongo(url) => Arc::new(
            MongoStore::connect(url, settings.store.timeout)
                .await
                .context("connecting to MongoDB")?,
        ),
    })
}

impl Application {
    /// Opens the store, binds the listener (port 0 picks a free one) and builds the server.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let secrets = resolve_secrets(&settings)?;
        let store = open_store(&settings).await?;
        let listener = TcpListener::bind(settings.server.listen)
            .with_context(|| format!("binding {}", settings.server.listen))?;
        Self::with_store(settings, secrets, store, listener).await
    }

    /// Builds the server on an already opened store and bound listener.
    pub async fn with_store(
        settings: Settings,
        secrets: Secrets,
        store: Arc<dyn Store>,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let port = listener.local_addr()?.port();
        log::info!(
            "authvault on {} with the {} store, public URL {}",
            listener.local_addr()?,
            store.backend(),
            settings.server.public_url
        );
        let state = web::Data::new(AppState::build(settings, secrets, store).await?);

        let workers = state.settings.server.workers;
        let mut server = HttpServer::new(move || {
            let settings = &state.settings;
            let allowed: Arc<Vec<String>> = Arc::new(
                settings
                    .browser
                    .cors_origins
                    .iter()
                    .cloned()
                    .chain(std::iter::once(settings.public_origin()))
                    .collect(),
            );
            App::new()
                .app_data(state.clone())
                .app_data(
                    web::PathConfig::default().error_handler(crate::error::path_error_handler),
                )
                .app_data(
                    web::QueryConfig::default().error_handler(crate::error::query_error_handler),
                )
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
                .wrap(middleware::cors(settings))
                .wrap(from_fn(move |req, next| {
                    middleware::origin_guard(allowed.clone(), req, next)
                }))
                .wrap(from_fn(middleware::finish_response))
                .wrap(Condition::new(
                    // The access log formats every request before it knows whether the line is
                    // wanted: it only runs when its level is on.
                    log::log_enabled!(target: "actix_web::middleware::logger", log::Level::Info),
                    // The path only (%U): query strings will carry OAuth codes.
                    Logger::new(r#"%a "%{method}xi %U" %s %b %Dms"#)
                        .custom_request_replace("method", |req| req.method().to_string()),
                ))
        })
        .shutdown_timeout(10);
        if let Some(n) = workers {
            server = server.workers(n);
        }
        let server = server.listen(listener)?.run();
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server from elsewhere (tests restart it).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM (then finishes the requests in flight, for up to 10 s) or SIGINT (then
    /// stops at once).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
