//! The composition root: picks the store, resolves secrets, wires middleware and routes.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_cors::Cors;
use actix_web::{
    body::{BoxBody, MessageBody},
    dev::{Server, ServiceRequest, ServiceResponse},
    http::{
        header::{self, HeaderValue},
        Method, StatusCode,
    },
    middleware::{from_fn, Condition, Logger, Next},
    web, App, HttpServer, ResponseError,
};
use anyhow::Context;

use crate::{
    auth::{
        cookies::CookieConfig,
        csrf::{self, CsrfKey},
        jwt::JwtKeys,
        oauth_flow::FlowKey,
        password::Hasher,
        rate_limit::{Limits, RateLimiter},
    },
    config::{DatabaseUrl, Settings},
    dev_secrets,
    error::ApiError,
    openapi, routes,
    store::{MongoStore, SqliteStore, Store},
    upstream::{github::GithubClient, google::GoogleClient, together::TogetherClient},
    vault::KeyRing,
};

/// Everything a handler may need, shared by all workers.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn Store>,
    pub jwt: JwtKeys,
    pub hasher: Hasher,
    pub csrf: CsrfKey,
    pub cookies: CookieConfig,
    pub limiter: RateLimiter,
    /// The encryption keys that seal and open stored API keys.
    pub vault: KeyRing,
    /// GitHub and Google sign-in, when configured.
    pub github: Option<GithubClient>,
    pub google: Option<GoogleClient>,
    /// Signs the OAuth flow cookie.
    pub oauth_flow: FlowKey,
    /// Mail delivery (SMTP, the development outbox, or none).
    pub mailer: crate::mail::Mailer,
    /// Together AI, with one pooled HTTP client.
    pub together: TogetherClient,
    /// The OpenAPI document, rendered once.
    pub openapi: web::Bytes,
    /// Each documented path pattern's methods, for `Allow` on 405 answers.
    pub allowed_methods: std::collections::HashMap<String, String>,
}

/// A bound, ready-to-run server.
pub struct Application {
    port: u16,
    server: Server,
}

/// Fills in development secrets from the data directory when the embedded store runs without
/// configured ones (configuration already refused MongoDB without them).
pub fn resolve_secrets(settings: &mut Settings) -> anyhow::Result<()> {
    if settings.jwt_secret.is_none() || settings.encryption_keys.is_none() {
        let dir = settings
            .data_dir()
            .context("secrets are required with this database")?
            .to_owned();
        let (jwt, keys) = dev_secrets::load_or_create(&dir)?;
        settings.jwt_secret.get_or_insert(jwt);
        settings.encryption_keys.get_or_insert(keys);
    }
    Ok(())
}

/// Opens the store the database URL names.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &settings.database_url {
        DatabaseUrl::Sqlite(path) => Arc::new(
            SqliteStore::open(path, settings.store_timeout)
                .await
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        DatabaseUrl::Mongo(url) => Arc::new(
            MongoStore::connect(url, settings.store_timeout)
                .await
                .context("connecting to MongoDB")?,
        ),
    })
}

impl Application {
    /// Opens the store, binds the listener (port 0 picks a free one) and builds the server.
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        resolve_secrets(&mut settings)?;
        let store = open_store(&settings).await?;
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("binding {}", settings.listen))?;
        Self::with_store(settings, store, listener).await
    }

    /// Builds the server on an already opened store and bound listener.
    pub async fn with_store(
        settings: Settings,
        store: Arc<dyn Store>,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let port = listener.local_addr()?.port();
        let secret = settings
            .jwt_secret
            .clone()
            .context("AUTHVAULT_JWT_SECRET is not set")?;
        let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hasher = {
            let cost = settings.bcrypt_cost;
            tokio::task::spawn_blocking(move || {
                Hasher::new(cost, parallelism, Duration::from_secs(10))
            })
            .await??
        };
        let limits = Limits {
            signin_max_failures: settings.signin_max_failures,
            signin_max_failures_per_email: settings.signin_max_failures_per_email,
            signin_window: settings.signin_window,
            ip_per_min: settings.ip_rate_limit_per_min,
            generate_per_min: settings.generate_per_min,
        };
        log::info!(
            "authvault on {} with the {} store, public URL {}",
            listener.local_addr()?,
            store.backend(),
            settings.public_url
        );
        let vault = KeyRing::new(
            settings
                .encryption_keys
                .as_deref()
                .context("AUTHVAULT_ENCRYPTION_KEYS is not set")?,
        );
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("authvault/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        let together =
            TogetherClient::new(http, &settings.together_api_url, settings.generate_timeout);
        // Provider calls never follow redirects and never wait long.
        let oauth_http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("authvault/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the OAuth HTTP client")?;
        let base = settings
            .public_url
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        let github = match &settings.github.client {
            Some(client) => Some(GithubClient::new(
                &settings.github,
                client,
                &format!("{base}/api/auth/callback/github"),
                oauth_http.clone(),
            )?),
            None => None,
        };
        let google = settings.google.client.as_ref().map(|client| {
            GoogleClient::new(
                &settings.google,
                client,
                &format!("{base}/api/auth/callback/google"),
                oauth_http.clone(),
            )
        });
        let mailer = crate::mail::Mailer::from_settings(&settings)?;
        let state = web::Data::new(AppState {
            mailer,
            github,
            google,
            oauth_flow: FlowKey::derive(&secret),
            together,
            vault,
            jwt: JwtKeys::new(
                &secret,
                settings.public_url.as_str().trim_end_matches('/'),
                settings.session_ttl,
            ),
            csrf: CsrfKey::derive(&secret),
            cookies: CookieConfig::from_settings(&settings),
            limiter: RateLimiter::new(store.clone(), limits),
            hasher,
            store,
            openapi: web::Bytes::from(openapi::document_json()),
            allowed_methods: openapi::allowed_methods(),
            settings: Arc::new(settings),
        });

        let workers = state.settings.workers;
        let mut server = HttpServer::new(move || {
            let settings = &state.settings;
            let allowed: Arc<Vec<String>> = Arc::new(
                settings
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
                .wrap(cors(settings))
                .wrap(from_fn(move |req, next| {
                    origin_guard(allowed.clone(), req, next)
                }))
                .wrap(from_fn(finish_response))
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

fn cors(settings: &Settings) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allowed_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static(csrf::HEADER),
        ])
        .expose_headers([header::RETRY_AFTER])
        .supports_credentials()
        .max_age(600)
        // Other origins get no CORS headers, so browsers keep the answer from them.
        .block_on_origin_mismatch(false);
    for origin in &settings.cors_origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

fn is_state_changing(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::OPTIONS
    )
}

/// Refuses writes (and their preflights) from origins that are neither allowed nor our own.
async fn origin_guard(
    allowed: Arc<Vec<String>>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if is_state_changing(req.method()) {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let ok = origin
                .to_str()
                .map(|o| {
                    allowed
                        .iter()
                        .any(|a| a.eq_ignore_ascii_case(o.trim_end_matches('/')))
                })
                .unwrap_or(false);
            if !ok {
                let res = ApiError::OriginForbidden.error_response();
                return Ok(req.into_response(res));
            }
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

/// The last layer of every answer: turns an error that is not yet problem+json (from a framework
/// layer) into one, adds the contract's security headers, and records the metrics.
async fn finish_response(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let method = metric_method(req.method());
    let is_api = req.path().starts_with("/api/");
    let res = with_headers(next.call(req).await?.map_into_boxed_body(), is_api);
    record_metrics(&res, method, started);
    Ok(res)
}

/// Adds the contract's security headers, and turns any error answer that is not yet
/// problem+json into one.
fn with_headers(res: ServiceResponse<BoxBody>, is_api: bool) -> ServiceResponse<BoxBody> {
    let status = res.status();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    let mut res = if (status.is_client_error() || status.is_server_error()) && !is_problem {
        let error = match status {
            StatusCode::NOT_FOUND => ApiError::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed { allow: None },
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            StatusCode::UNAUTHORIZED => ApiError::Unauthenticated,
            StatusCode::FORBIDDEN => ApiError::OriginForbidden,
            s if s.is_client_error() => ApiError::field("request", "is not valid"),
            _ => ApiError::internal(anyhow::anyhow!("framework answered {status}")),
        };
        let (req, _) = res.into_parts();
        ServiceResponse::new(req, error.error_response())
    } else {
        res
    };
    let headers = res.headers_mut();
    if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        // actix-cors adds these for every origin; without an allowed origin they only confuse.
        headers.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
        headers.remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if is_api && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The method as a metric label: a fixed set, so any other method (they are free-form) counts as
/// `OTHER`.
fn metric_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        _ => "OTHER",
    }
}

/// Counts an answer by route pattern (never the raw path: ids and codes stay out), method and
/// status, and times it.
fn record_metrics(res: &ServiceResponse<BoxBody>, method: &str, started: std::time::Instant) {
    // Our resources carry their pattern; anything else (the docs assets, unmatched paths) is
    // matched again here.
    let label = res.request().app_data::<routes::RouteLabel>();
    let found;
    let route = match label {
        Some(label) => label.0.as_ref(),
        None => {
            found = res.request().match_pattern();
            found.as_deref().unwrap_or("unmatched")
        }
    };
    let m = crate::metrics::metrics();
    m.requests
        .with_label_values(&[route, method, res.status().as_str()])
        .inc();
    m.latency
        .with_label_values(&[route, method])
        .observe(started.elapsed().as_secs_f64());
}
