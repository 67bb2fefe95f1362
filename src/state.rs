//! The state every handler shares, and how it is made from the settings and the store.

use std::{sync::Arc, time::Duration};

use actix_web::web;
use anyhow::Context;

use crate::{
    auth::{
        cookies::CookieConfig, csrf::CsrfKey, jwt::JwtKeys, oauth_flow::FlowKey, password::Hasher,
        rate_limit::RateLimiter,
    },
    config::{Secrets, Settings},
    openapi,
    signing::{JwtAlg, SigningKey},
    store::Store,
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
    /// The key recovery codes are stored under.
    pub mfa: crate::mfa::MfaKeys,
    /// The passkey relying party; `None` when passkeys are off.
    pub passkeys: Option<crate::passkeys::Passkeys>,
    /// Together AI, with one pooled HTTP client.
    pub together: TogetherClient,
    /// The OpenAPI document, rendered once.
    pub openapi: web::Bytes,
    /// `GET /.well-known/jwks.json`: the public signing keys (none with HS256).
    pub jwks: web::Bytes,
    /// Each documented path pattern's methods, for `Allow` on 405 answers.
    pub allowed_methods: std::collections::HashMap<String, String>,
}

impl AppState {
    /// Makes the keys, the clients of the outside services and the limiter from the settings,
    /// the resolved secrets and an opened store.
    pub async fn build(
        settings: Settings,
        secrets: Secrets,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Self> {
        let secret = secrets.jwt_secret;
        let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hasher = {
            let cost = settings.sessions.bcrypt_cost;
            tokio::task::spawn_blocking(move || {
                Hasher::new(cost, parallelism, Duration::from_secs(10))
            })
            .await??
        };
        let vault = KeyRing::new(&secrets.encryption_keys);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("authvault/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        let together =
            TogetherClient::new(http, &settings.together.api_url, settings.together.timeout);
        // Provider calls never follow redirects and never wait long.
        let oauth_http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("authvault/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the OAuth HTTP client")?;
        let base = settings
            .server
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
        let issuer = settings.server.public_url.as_str().trim_end_matches('/');
        let access_ttl = settings.sessions.access_ttl;
        let jwt = match secrets.jwt_alg {
            JwtAlg::Hs256 => JwtKeys::new(&secret, issuer, access_ttl),
            _ => JwtKeys::asymmetric(&secrets.signing_keys, issuer, access_ttl)
                .context("AUTHVAULT_SIGNING_KEYS")?,
        };
        let jwks = web::Bytes::from(jwks_document(&secrets.signing_keys));
        Ok(Self {
            mailer,
            github,
            google,
            oauth_flow: FlowKey::derive(&secret),
            together,
            vault,
            jwt,
            csrf: CsrfKey::derive(&secret),
            mfa: crate::mfa::MfaKeys::derive(&secret),
            passkeys: settings
                .passkeys
                .as_ref()
                .map(|p| crate::passkeys::Passkeys::new(p, &settings.sessions.mfa_issuer))
                .transpose()
                .context("AUTHVAULT_WEBAUTHN_RP_ID / AUTHVAULT_WEBAUTHN_ORIGINS")?,
            cookies: CookieConfig::from_settings(&settings),
            limiter: RateLimiter::new(store.clone(), settings.limits.clone()),
            hasher,
            store,
            openapi: web::Bytes::from(openapi::document_json()),
            jwks,
            allowed_methods: openapi::allowed_methods(),
            settings: Arc::new(settings),
        })
    }
}

/// The JWKS of the signing keys: public members only (`signing::PublicJwk` has no others).
fn jwks_document(keys: &[SigningKey]) -> String {
    let keys: Vec<_> = keys.iter().map(SigningKey::public_jwk).collect();
    serde_json::json!({ "keys": keys }).to_string()
}
