//! The HTTP API, end to end: each test starts the real server on 127.0.0.1 port 0 with its own
//! database, once per storage backend.

#[macro_use]
mod helpers;

mod api_keys;
mod auth;
mod docs;
mod email;
mod email_links;
mod generate;
mod hardening;
mod jwks;
mod mfa;
mod oauth;
mod oidc_peer;
mod passkeys;
mod resilience;
mod security;
mod sessions;
mod user;
