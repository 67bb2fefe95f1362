//! authvault: a headless JSON authentication and key-vault REST API.
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)]

pub mod accounts;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dev_secrets;
pub mod domain;
pub mod error;
pub mod links;
pub mod mail;
pub mod metrics;
pub mod mfa;
pub mod middleware;
pub mod openapi;
pub mod passkeys;
pub mod random;
pub mod routes;
pub mod sessions;
pub mod signin;
pub mod signing;
pub mod startup;
pub mod state;
pub mod store;
pub mod upstream;
pub mod vault;
