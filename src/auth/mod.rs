//! Proving who a caller is: passwords, tokens, cookies, CSRF, rate limits.
pub mod client_ip;
pub mod cookies;
pub mod csrf;
pub mod jwt;
pub mod oauth_flow;
pub mod password;
pub mod pkce;
pub mod rate_limit;
pub mod session;

pub use client_ip::ClientIp;
pub use rate_limit::CredentialBudget;
pub use session::{CurrentUser, SignedIn, Via};
