//! Every configuration variable of the contract, parsed once into typed values.
//!
//! Nothing else in the crate reads the environment. A value that is present but invalid is an
//! error naming the variable; it never falls back to the default.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::{engine::general_purpose::STANDARD, Engine};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use url::Url;

use crate::signing::{parse_signing_keys, JwtAlg, SigningKey};

/// A variable that is present but unusable: start-up stops with this one line.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Self {
            variable,
            message: message.into(),
        }
    }
}

/// Where the data lives. `Debug` never shows a password from the URL.
#[derive(Clone)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Mongo(SecretString),
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if let Some(path) = raw.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "sqlite:// needs a file path, e.g. sqlite://./data/authvault.db".into(),
                );
            }
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else if raw.starts_with("mongodb://") || raw.starts_with("mongodb+srv://") {
            Ok(Self::Mongo(SecretString::from(raw)))
        } else {
            Err("unknown scheme: use sqlite://PATH, mongodb:// or mongodb+srv://".into())
        }
    }

    /// The URL with any password replaced by `***`, fit for a log line.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Mongo(url) => redact_userinfo(url.expose_secret()),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// One encryption key of the vault's key ring.
pub struct EncryptionKey {
    pub id: String,
    pub key: SecretBox<[u8; 32]>,
}

impl Clone for EncryptionKey {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            key: SecretBox::new(Box::new(*self.key.expose_secret())),
        }
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey({}:***)", self.id)
    }
}

/// Parses `id:base64key[,id:base64key...]`; the first key seals, all open.
pub fn parse_encryption_keys(raw: &str) -> Result<Vec<EncryptionKey>, String> {
    let mut keys: Vec<EncryptionKey> = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, b64)) = part.split_once(':') else {
            return Err("each key must be written id:base64key".into());
        };
        let id = id.trim();
        if id.is_empty()
            || id.len() > 32
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err("a key id must be 1-32 characters of A-Z, a-z, 0-9, - or _".into());
        }
        if keys.iter().any(|k| k.id == id) {
            return Err(format!("key id {id} appears twice"));
        }
        let bytes = STANDARD
            .decode(b64.trim())
            .map_err(|_| format!("key {id} is not valid base64"))?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("key {id} must decode to 32 bytes, not {}", bytes.len()))?;
        keys.push(EncryptionKey {
            id: id.to_owned(),
            key: SecretBox::new(Box::new(key)),
        });
    }
    if keys.is_empty() {
        return Err("at least one key is required".into());
    }
    Ok(keys)
}

/// The session cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

/// An OAuth client's id and secret.
#[derive(Clone)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: SecretString,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OAuthClient({}, ***)", self.client_id)
    }
}

#[derive(Debug, Clone)]
pub struct GithubSettings {
    pub client: Option<OAuthClient>,
    pub url: Url,
    pub api_url: Url,
}

#[derive(Debug, Clone)]
pub struct GoogleSettings {
    pub client: Option<OAuthClient>,
    pub auth_url: Url,
    pub token_url: Url,
    pub userinfo_url: Url,
    pub jwks_url: Url,
    pub issuer: String,
}

/// One environment variable authvault reads: its name, its default (empty: unset, or derived
/// as its help says) and what it does. [`VARIABLES`] is the one list of them; `.env.example` and
/// the contract's configuration table are checked against it (`tests/config_table.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

macro_rules! variables {
    ($($ident:ident = $name:literal, $default:literal, $help:literal;)+) => {
        $(pub const $ident: Variable = Variable {
            name: $name,
            default: $default,
            help: $help,
        };)+

        /// Every variable authvault reads, in the order of `.env.example`.
        pub const VARIABLES: &[Variable] = &[$($ident),+];
    };
}

/// The variables, one constant each: `Settings::from_lookup` reads nothing else.
pub mod var {
    use super::Variable;

    variables! {
        LISTEN = "AUTHVAULT_LISTEN", "127.0.0.1:8080", "address to serve on (host:port)";
        PUBLIC_URL = "AUTHVAULT_PUBLIC_URL", "http://127.0.0.1:8080",
            "external base URL: JWT issuer, OAuth redirect URIs, default email link target";
        DATABASE_URL = "AUTHVAULT_DATABASE_URL", "sqlite://./data/authvault.db",
            "sqlite://PATH (embedded) or mongodb://... / mongodb+srv://...";
        STORE_TIMEOUT_MS = "AUTHVAULT_STORE_TIMEOUT_MS", "2000",
            "longest wait for the database, in ms, before 503 store_unavailable";
        JWT_SECRET = "AUTHVAULT_JWT_SECRET", "",
            "HS256 key, at least 32 bytes (generated into the data dir with SQLite; required with MongoDB)";
        ENCRYPTION_KEYS = "AUTHVAULT_ENCRYPTION_KEYS", "",
            "vault keys id:base64key[,...], 32 bytes each, the first seals (generated like the JWT secret)";
        JWT_ALG = "AUTHVAULT_JWT_ALG", "HS256",
            "access token algorithm: HS256 (the JWT secret), EdDSA or ES256 (the signing keys)";
        SIGNING_KEYS = "AUTHVAULT_SIGNING_KEYS", "",
            "EdDSA/ES256 keys kid:base64(PKCS#8 DER)[,...], the first signs (generated into the data dir with SQLite; required with MongoDB)";
        COOKIE_SECURE = "AUTHVAULT_COOKIE_SECURE", "true",
            "Secure session cookies; false only for plain-http development";
        COOKIE_SAMESITE = "AUTHVAULT_COOKIE_SAMESITE", "lax",
            "SameSite of the session cookie: lax, strict, or none (needs Secure)";
        CORS_ORIGINS = "AUTHVAULT_CORS_ORIGINS", "", "comma-separated allowed browser origins";
        CALLBACK_ALLOWLIST = "AUTHVAULT_CALLBACK_ALLOWLIST", "",
            "allowed callback origins or exact URLs (default: the CORS origins and the public URL)";
        APP_CALLBACKS = "AUTHVAULT_APP_CALLBACKS", "",
            "exact callback URLs that get a one-time code instead of a cookie";
        TRUSTED_PROXIES = "AUTHVAULT_TRUSTED_PROXIES", "",
            "comma-separated proxy CIDRs whose X-Forwarded-For is believed";
        BCRYPT_COST = "AUTHVAULT_BCRYPT_COST", "12", "bcrypt cost, 4-31";
        SIGNIN_MAX_FAILURES = "AUTHVAULT_SIGNIN_MAX_FAILURES", "5",
            "failed sign-ins per email and client IP within the window before 429";
        SIGNIN_WINDOW_SECS = "AUTHVAULT_SIGNIN_WINDOW_SECS", "900", "the sign-in failure window, in seconds";
        SIGNIN_MAX_FAILURES_PER_EMAIL = "AUTHVAULT_SIGNIN_MAX_FAILURES_PER_EMAIL", "50",
            "failed sign-ins per email from any IPs within the window before 429";
        IP_RATE_LIMIT_PER_MIN = "AUTHVAULT_IP_RATE_LIMIT_PER_MIN", "60",
            "per-IP requests per minute on the credential endpoints; 0 disables";
        GENERATE_PER_MIN = "AUTHVAULT_GENERATE_PER_MIN", "20",
            "per-user requests per minute on /api/generate; 0 disables";
        ACCESS_TTL_SECS = "AUTHVAULT_ACCESS_TTL_SECS", "3600",
            "access token lifetime and the session cookie's Max-Age, in seconds (60-86400)";
        REFRESH_TTL_SECS = "AUTHVAULT_REFRESH_TTL_SECS", "2592000", "refresh token lifetime, in seconds";
        REFRESH_GRACE_SECS = "AUTHVAULT_REFRESH_GRACE_SECS", "10",
            "seconds a just-rotated refresh token still yields its successor; 0 disables";
        MFA_ISSUER = "AUTHVAULT_MFA_ISSUER", "authvault",
            "issuer shown by authenticator apps, and the passkey RP name (1-64 characters, no colon)";
        WEBAUTHN_RP_ID = "AUTHVAULT_WEBAUTHN_RP_ID", "",
            "passkey relying party ID, a domain name (default: the public URL's host; an IP address turns passkeys off)";
        WEBAUTHN_ORIGINS = "AUTHVAULT_WEBAUTHN_ORIGINS", "",
            "comma-separated origins passkeys may be used from (default: the public URL's and the CORS origins under the RP ID)";
        SMTP_URL = "AUTHVAULT_SMTP_URL", "",
            "smtp://user:pass@host:port or smtps://... (unset: an outbox with SQLite, 503 with MongoDB)";
        MAIL_FROM = "AUTHVAULT_MAIL_FROM", "authvault <no-reply@localhost>",
            "sender of verification, reset and notice emails";
        MAIL_TEMPLATES = "AUTHVAULT_MAIL_TEMPLATES", "",
            "directory of mail templates replacing the built-in ones of the same name (unset: the built-in ones)";
        VERIFY_TOKEN_TTL_SECS = "AUTHVAULT_VERIFY_TOKEN_TTL_SECS", "86400",
            "email verification link lifetime, in seconds";
        RESET_TOKEN_TTL_SECS = "AUTHVAULT_RESET_TOKEN_TTL_SECS", "1800",
            "password reset link lifetime, in seconds";
        EMAIL_LINK_SIGNUP = "AUTHVAULT_EMAIL_LINK_SIGNUP", "true",
            "whether an emailed sign-in link to an unknown address creates its account";
        EMAIL_LINK_TTL_SECS = "AUTHVAULT_EMAIL_LINK_TTL_SECS", "900",
            "emailed sign-in link lifetime, in seconds (60-86400)";
        GITHUB_CLIENT_ID = "GITHUB_CLIENT_ID", "", "GitHub OAuth app (provider off unless both are set)";
        GITHUB_CLIENT_SECRET = "GITHUB_CLIENT_SECRET", "", "GitHub OAuth app secret";
        GITHUB_URL = "GITHUB_URL", "https://github.com", "GitHub web base URL";
        GITHUB_API_URL = "GITHUB_API_URL", "https://api.github.com", "GitHub REST API base URL";
        GOOGLE_CLIENT_ID = "GOOGLE_CLIENT_ID", "", "Google OAuth client (provider off unless both are set)";
        GOOGLE_CLIENT_SECRET = "GOOGLE_CLIENT_SECRET", "", "Google OAuth client secret";
        GOOGLE_AUTH_URL = "GOOGLE_AUTH_URL", "https://accounts.google.com/o/oauth2/v2/auth",
            "Google authorization endpoint";
        GOOGLE_TOKEN_URL = "GOOGLE_TOKEN_URL", "https://oauth2.googleapis.com/token", "Google token endpoint";
        GOOGLE_USERINFO_URL = "GOOGLE_USERINFO_URL", "https://openidconnect.googleapis.com/v1/userinfo",
            "Google userinfo endpoint";
        GOOGLE_JWKS_URL = "GOOGLE_JWKS_URL", "https://www.googleapis.com/oauth2/v3/certs",
            "JWKS that verifies Google ID tokens";
        GOOGLE_ISSUER = "GOOGLE_ISSUER", "https://accounts.google.com", "expected ID token issuer";
        TOGETHER_API_URL = "TOGETHER_API_URL", "https://api.together.xyz/v1",
            "OpenAI-compatible chat-completions base URL";
        GENERATE_MODEL = "AUTHVAULT_GENERATE_MODEL", "Qwen/Qwen2.5-Coder-32B-Instruct",
            "model used when a request names none";
        GENERATE_TIMEOUT_SECS = "AUTHVAULT_GENERATE_TIMEOUT_SECS", "60",
            "upstream timeout for /api/generate, in seconds";
        RUST_LOG = "RUST_LOG", "info", "log filter (env_logger), e.g. info,authvault=debug";
    }
}

pub use var::VARIABLES;

/// The model asked for when a request names none.
pub const DEFAULT_GENERATE_MODEL: &str = var::GENERATE_MODEL.default;

/// The server itself.
#[derive(Debug)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub public_url: Url,
    pub trusted_proxies: Vec<IpNet>,
    /// HTTP worker threads; `None` is one per core. Not a variable: tests set it.
    pub workers: Option<usize>,
}

/// Where the data lives.
#[derive(Debug)]
pub struct StoreSettings {
    pub database_url: DatabaseUrl,
    pub timeout: Duration,
}

/// The secrets as configured: each is `None` when unset, and [`Secrets`] once resolved.
#[derive(Debug)]
pub struct ConfiguredSecrets {
    pub jwt_secret: Option<SecretString>,
    pub encryption_keys: Option<Vec<EncryptionKey>>,
    /// The access tokens' algorithm; EdDSA and ES256 sign with `signing_keys`.
    pub jwt_alg: JwtAlg,
    /// Only with EdDSA or ES256, each of that algorithm's type.
    pub signing_keys: Option<Vec<SigningKey>>,
}

/// The secrets a running server uses: configured, or development ones from the data dir.
#[derive(Debug)]
pub struct Secrets {
    pub jwt_secret: SecretString,
    pub encryption_keys: Vec<EncryptionKey>,
    pub jwt_alg: JwtAlg,
    /// Empty with HS256; otherwise at least one, the first signs.
    pub signing_keys: Vec<SigningKey>,
}

/// Cookies, and where browsers and callbacks may come from.
#[derive(Debug)]
pub struct BrowserSettings {
    pub cookie_secure: bool,
    pub cookie_samesite: SameSite,
    pub cors_origins: Vec<String>,
    pub callback_allowlist: Vec<String>,
    pub app_callbacks: Vec<String>,
}

/// The brute-force and per-user limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub signin_max_failures: u32,
    pub signin_max_failures_per_email: u32,
    pub signin_window: Duration,
    pub ip_per_min: u32,
    pub generate_per_min: u32,
}

/// Passwords and session lifetimes.
#[derive(Debug)]
pub struct SessionSettings {
    pub bcrypt_cost: u32,
    /// Access token lifetime (the contract's one hour).
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub refresh_grace: Duration,
    /// The issuer authenticator apps show beside a TOTP code.
    pub mfa_issuer: String,
}

/// The passkey relying party: passkeys are on when it is set.
#[derive(Debug, Clone)]
pub struct PasskeySettings {
    /// A domain name: the public URL's host or a parent domain of it.
    pub rp_id: String,
    /// The origins whose pages may register and use passkeys (each on the RP ID or under it).
    pub origins: Vec<Url>,
}

/// Mail delivery and the lifetimes of mailed links.
#[derive(Debug)]
pub struct MailSettings {
    pub smtp_url: Option<SecretString>,
    pub from: String,
    /// The operator's mail templates (`AUTHVAULT_MAIL_TEMPLATES`); `None`: the built-in ones.
    pub templates_dir: Option<PathBuf>,
    pub verify_token_ttl: Duration,
    pub reset_token_ttl: Duration,
    /// Whether a sign-in link to an address without an account creates one.
    pub email_link_signup: bool,
    pub email_link_ttl: Duration,
}

/// Code generation with Together AI.
#[derive(Debug)]
pub struct TogetherSettings {
    pub api_url: Url,
    pub model: String,
    pub timeout: Duration,
}

/// The whole configuration of one authvault process, one part per concern.
#[derive(Debug)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub secrets: ConfiguredSecrets,
    pub browser: BrowserSettings,
    /// `None`: passkeys are off (the RP ID is an IP address).
    pub passkeys: Option<PasskeySettings>,
    pub limits: Limits,
    pub sessions: SessionSettings,
    pub mail: MailSettings,
    pub github: GithubSettings,
    pub google: GoogleSettings,
    pub together: TogetherSettings,
}

impl Settings {
    /// Reads the process environment (after loading `.env`, see `main`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`; an empty value counts as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let vars = Vars { get: &get };
        let store = StoreSettings {
            database_url: vars.parse(var::DATABASE_URL, DatabaseUrl::parse)?,
            timeout: Duration::from_millis(vars.number(var::STORE_TIMEOUT_MS, 1, 600_000)?),
        };
        let jwt_alg = vars.parse(var::JWT_ALG, JwtAlg::parse)?;
        let secrets = ConfiguredSecrets {
            jwt_secret: vars.optional(var::JWT_SECRET, |v| {
                if v.len() < 32 {
                    Err("must be at least 32 bytes".to_string())
                } else {
                    Ok(SecretString::from(v))
                }
            })?,
            encryption_keys: vars.optional(var::ENCRYPTION_KEYS, parse_encryption_keys)?,
            jwt_alg,
            signing_keys: vars.optional(var::SIGNING_KEYS, |v| parse_signing_keys(v, jwt_alg))?,
        };
        if matches!(store.database_url, DatabaseUrl::Mongo(_)) {
            if secrets.jwt_secret.is_none() {
                return Err(ConfigError::new(
                    var::JWT_SECRET.name,
                    "is required with MongoDB (generate one: openssl rand -base64 48)",
                ));
            }
            if secrets.encryption_keys.is_none() {
                return Err(ConfigError::new(
                    var::ENCRYPTION_KEYS.name,
                    "is required with MongoDB (e.g. k1:$(openssl rand -base64 32))",
                ));
            }
            if jwt_alg != JwtAlg::Hs256 && secrets.signing_keys.is_none() {
                return Err(ConfigError::new(
                    var::SIGNING_KEYS.name,
                    "is required with MongoDB and EdDSA or ES256 (make one: authvault signing-key)",
                ));
            }
        }
        let server = ServerSettings {
            listen: vars.parse(var::LISTEN, |v| {
                v.parse::<SocketAddr>()
                    .map_err(|_| "must be host:port, e.g. 127.0.0.1:8080".to_string())
            })?,
            public_url: vars.parse(var::PUBLIC_URL, parse_base_url)?,
            trusted_proxies: vars.list(var::TRUSTED_PROXIES, |v| {
                v.parse::<IpNet>()
                    .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{v} is not a CIDR such as 10.0.0.0/8"))
            })?,
            workers: None,
        };
        let browser = browser_settings(&vars, &server.public_url)?;
        let passkeys = passkey_settings(&vars, &server.public_url, &browser.cors_origins)?;
        let limits = Limits {
            signin_max_failures: vars.number(var::SIGNIN_MAX_FAILURES, 1, 1_000_000)? as u32,
            signin_window: Duration::from_secs(vars.number(
                var::SIGNIN_WINDOW_SECS,
                1,
                86_400 * 30,
            )?),
            signin_max_failures_per_email: vars.number(
                var::SIGNIN_MAX_FAILURES_PER_EMAIL,
                1,
                1_000_000,
            )? as u32,
            ip_per_min: vars.number(var::IP_RATE_LIMIT_PER_MIN, 0, 1_000_000)? as u32,
            generate_per_min: vars.number(var::GENERATE_PER_MIN, 0, 1_000_000)? as u32,
        };
        let sessions = SessionSettings {
            bcrypt_cost: vars.number(var::BCRYPT_COST, 4, 31)? as u32,
            access_ttl: Duration::from_secs(vars.number(var::ACCESS_TTL_SECS, 60, 86_400)?),
            refresh_ttl: Duration::from_secs(vars.number(
                var::REFRESH_TTL_SECS,
                60,
                86_400 * 400,
            )?),
            refresh_grace: Duration::from_secs(vars.number(var::REFRESH_GRACE_SECS, 0, 300)?),
            mfa_issuer: vars.parse(var::MFA_ISSUER, |v| {
                let v = v.trim();
                if v.is_empty()
                    || v.chars().count() > 64
                    || v.contains(':')
                    || v.chars().any(char::is_control)
                {
                    Err("must be 1-64 characters without a colon or control characters".to_owned())
                } else {
                    Ok(v.to_owned())
                }
            })?,
        };
        let mail = MailSettings {
            smtp_url: vars.optional(var::SMTP_URL, |v| {
                if v.starts_with("smtp://") || v.starts_with("smtps://") {
                    Ok(SecretString::from(v))
                } else {
                    Err("unknown scheme: use smtp://user:pass@host:port or smtps://...".to_string())
                }
            })?,
            from: vars.parse(var::MAIL_FROM, |v| Ok::<_, String>(v.to_owned()))?,
            templates_dir: vars
                .optional(var::MAIL_TEMPLATES, |v| Ok::<_, String>(PathBuf::from(v)))?,
            verify_token_ttl: Duration::from_secs(vars.number(
                var::VERIFY_TOKEN_TTL_SECS,
                60,
                86_400 * 30,
            )?),
            email_link_signup: vars.parse(var::EMAIL_LINK_SIGNUP, parse_bool)?,
            email_link_ttl: Duration::from_secs(vars.number(
                var::EMAIL_LINK_TTL_SECS,
                60,
                86_400,
            )?),
            reset_token_ttl: Duration::from_secs(vars.number(
                var::RESET_TOKEN_TTL_SECS,
                60,
                86_400,
            )?),
        };
        let github = GithubSettings {
            client: oauth_client(&get, var::GITHUB_CLIENT_ID, var::GITHUB_CLIENT_SECRET)?,
            url: vars.parse(var::GITHUB_URL, parse_base_url)?,
            api_url: vars.parse(var::GITHUB_API_URL, parse_base_url)?,
        };
        let google = GoogleSettings {
            client: oauth_client(&get, var::GOOGLE_CLIENT_ID, var::GOOGLE_CLIENT_SECRET)?,
            auth_url: vars.parse(var::GOOGLE_AUTH_URL, parse_base_url)?,
            token_url: vars.parse(var::GOOGLE_TOKEN_URL, parse_base_url)?,
            userinfo_url: vars.parse(var::GOOGLE_USERINFO_URL, parse_base_url)?,
            jwks_url: vars.parse(var::GOOGLE_JWKS_URL, parse_base_url)?,
            issuer: vars.parse(var::GOOGLE_ISSUER, |v| Ok::<_, String>(v.to_owned()))?,
        };
        let together = TogetherSettings {
            api_url: vars.parse(var::TOGETHER_API_URL, parse_base_url)?,
            model: vars.parse(var::GENERATE_MODEL, |v| {
                if v.len() > 200 || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    Err("must be a model id without spaces, at most 200 characters".to_string())
                } else {
                    Ok(v.to_owned())
                }
            })?,
            timeout: Duration::from_secs(vars.number(var::GENERATE_TIMEOUT_SECS, 1, 3600)?),
        };
        Ok(Self {
            server,
            store,
            secrets,
            browser,
            passkeys,
            limits,
            sessions,
            mail,
            github,
            google,
            together,
        })
    }

    /// The folder next to the SQLite file: development secrets and the outbox live there.
    pub fn data_dir(&self) -> Option<&Path> {
        match &self.store.database_url {
            DatabaseUrl::Sqlite(path) => Some(
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new(".")),
            ),
            DatabaseUrl::Mongo(_) => None,
        }
    }

    /// `scheme://host[:port]` of the public URL.
    pub fn public_origin(&self) -> String {
        origin_of(&self.server.public_url)
    }

    /// Whether `url` may receive the user after a sign-in or from a mailed link: an allowed
    /// origin (any path under it) or an exact URL, on the allow-list or among the app callbacks.
    pub fn callback_allowed(&self, url: &Url) -> bool {
        let exact = url.to_string();
        let origin = origin_of(url);
        self.browser.app_callbacks.contains(&exact)
            || self
                .browser
                .callback_allowlist
                .iter()
                .any(|e| *e == exact || (matches!(url.scheme(), "http" | "https") && *e == origin))
    }
}

fn browser_settings(vars: &Vars<'_>, public_url: &Url) -> Result<BrowserSettings, ConfigError> {
    let cookie_secure = vars.parse(var::COOKIE_SECURE, parse_bool)?;
    let cookie_samesite = vars.parse(var::COOKIE_SAMESITE, |v| {
        match v.to_ascii_lowercase().as_str() {
            "lax" => Ok(SameSite::Lax),
            "strict" => Ok(SameSite::Strict),
            "none" => Ok(SameSite::None),
            _ => Err("must be lax, strict or none".to_string()),
        }
    })?;
    if cookie_samesite == SameSite::None && !cookie_secure {
        return Err(ConfigError::new(
            var::COOKIE_SAMESITE.name,
            "none requires AUTHVAULT_COOKIE_SECURE=true",
        ));
    }
    let cors_origins = vars.list(var::CORS_ORIGINS, parse_origin)?;
    let mut callback_allowlist = vars.list(var::CALLBACK_ALLOWLIST, parse_callback_entry)?;
    if callback_allowlist.is_empty() {
        callback_allowlist = cors_origins.clone();
        callback_allowlist.push(origin_of(public_url));
    }
    Ok(BrowserSettings {
        cookie_secure,
        cookie_samesite,
        cors_origins,
        callback_allowlist,
        app_callbacks: vars.list(var::APP_CALLBACKS, parse_exact_callback)?,
    })
}

/// The relying party of passkeys: off (`None`) when the RP ID would be an IP address.
fn passkey_settings(
    vars: &Vars<'_>,
    public_url: &Url,
    cors_origins: &[String],
) -> Result<Option<PasskeySettings>, ConfigError> {
    // Both are read (and checked) whether passkeys end up on or off.
    let listed = vars.list(var::WEBAUTHN_ORIGINS, |v| {
        Url::parse(&parse_origin(v)?).map_err(|_| format!("{v} is not a URL"))
    })?;
    let explicit = vars.optional(var::WEBAUTHN_RP_ID, |v| {
        let v = v.trim().to_ascii_lowercase();
        match url::Host::parse(&v) {
            Ok(url::Host::Domain(d)) if !d.is_empty() && !d.contains(['/', ':', '@']) => {
                Ok(Some(d))
            }
            Ok(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => Ok(None),
            _ => Err(format!("{v} is not a domain name such as example.com")),
        }
    })?;
    let rp_id = match explicit {
        Some(Some(domain)) => domain,
        Some(None) => return Ok(None),
        None => match public_url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            _ => return Ok(None),
        },
    };
    let under_rp_id = |url: &Url| {
        url.domain()
            .map(|d| d.to_ascii_lowercase())
            .is_some_and(|d| d == rp_id || d.ends_with(&format!(".{rp_id}")))
    };
    if let Some(outside) = listed.iter().find(|u| !under_rp_id(u)) {
        return Err(ConfigError::new(
            var::WEBAUTHN_ORIGINS.name,
            format!("{outside} is not on the RP ID {rp_id} or under it"),
        ));
    }
    let mut origins = listed;
    if origins.is_empty() {
        // The defaults: those of the public URL and the CORS origins that can use this RP ID.
        let public = Url::parse(&origin_of(public_url)).ok();
        origins = public
            .into_iter()
            .chain(cors_origins.iter().filter_map(|o| Url::parse(o).ok()))
            .filter(|u| under_rp_id(u))
            .collect();
        origins.dedup();
    }
    if origins.is_empty() {
        return Err(ConfigError::new(
            var::WEBAUTHN_ORIGINS.name,
            format!("no origin is on the RP ID {rp_id}: list the pages that use passkeys"),
        ));
    }
    Ok(Some(PasskeySettings { rp_id, origins }))
}

struct Vars<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Vars<'_> {
    /// The variable's value, or its default, parsed.
    fn parse<T>(
        &self,
        var: Variable,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let raw = (self.get)(var.name);
        parse(raw.as_deref().unwrap_or(var.default).trim())
            .map_err(|m| ConfigError::new(var.name, m))
    }

    /// The variable's value parsed, or `None` when it is unset.
    fn optional<T>(
        &self,
        var: Variable,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        (self.get)(var.name)
            .map(|raw| parse(raw.trim()).map_err(|m| ConfigError::new(var.name, m)))
            .transpose()
    }

    fn number(&self, var: Variable, min: u64, max: u64) -> Result<u64, ConfigError> {
        let raw = (self.get)(var.name);
        match raw.as_deref().unwrap_or(var.default).trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ConfigError::new(
                var.name,
                format!("must be a whole number from {min} to {max}"),
            )),
        }
    }

    fn list<T>(
        &self,
        var: Variable,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        let Some(raw) = (self.get)(var.name) else {
            return Ok(Vec::new());
        };
        raw.split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| parse(v).map_err(|m| ConfigError::new(var.name, m)))
            .collect()
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

fn parse_base_url(v: &str) -> Result<Url, String> {
    let url = Url::parse(v).map_err(|_| format!("{v} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{v} must be an http:// or https:// URL"));
    }
    Ok(url)
}

/// `scheme://host[:port]` of an http(s) URL, as browsers send it in `Origin`.
pub fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn parse_origin(v: &str) -> Result<String, String> {
    let url = parse_base_url(v)?;
    if url.path() != "/" || url.query().is_some() {
        return Err(format!(
            "{v} must be an origin like https://app.example.com"
        ));
    }
    Ok(origin_of(&url))
}

/// An allow-list entry: an origin (any path under it) or an exact URL.
fn parse_callback_entry(v: &str) -> Result<String, String> {
    let url = Url::parse(v).map_err(|_| format!("{v} is not a URL"))?;
    if matches!(url.scheme(), "http" | "https") && url.path() == "/" && !v.ends_with('/') {
        Ok(origin_of(&url))
    } else {
        parse_exact_callback(v)
    }
}

fn parse_exact_callback(v: &str) -> Result<String, String> {
    let url = Url::parse(v).map_err(|_| format!("{v} is not a URL"))?;
    if url.fragment().is_some() {
        return Err(format!("{v} must not have a #fragment"));
    }
    if matches!(url.scheme(), "javascript" | "data" | "file" | "vbscript") {
        return Err(format!("{v} has a forbidden scheme"));
    }
    Ok(url.to_string())
}

fn oauth_client(
    get: &dyn Fn(&str) -> Option<String>,
    id_var: Variable,
    secret_var: Variable,
) -> Result<Option<OAuthClient>, ConfigError> {
    let (id_var, secret_var) = (id_var.name, secret_var.name);
    match (get(id_var), get(secret_var)) {
        (Some(client_id), Some(secret)) => Ok(Some(OAuthClient {
            client_id,
            client_secret: SecretString::from(secret),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::new(
            secret_var,
            "is required when the client id is set",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            id_var,
            "is required when the client secret is set",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.public_origin(), "http://127.0.0.1:8080");
        assert!(matches!(s.store.database_url, DatabaseUrl::Sqlite(_)));
        assert!(s.browser.cookie_secure);
        assert_eq!(s.browser.cookie_samesite, SameSite::Lax);
        assert_eq!(s.sessions.bcrypt_cost, 12);
        assert_eq!(s.limits.signin_max_failures, 5);
        assert_eq!(s.limits.signin_window, Duration::from_secs(900));
        assert_eq!(s.limits.signin_max_failures_per_email, 50);
        assert_eq!(s.limits.ip_per_min, 60);
        assert_eq!(s.store.timeout, Duration::from_millis(2000));
        assert_eq!(
            s.browser.callback_allowlist,
            vec!["http://127.0.0.1:8080".to_string()]
        );
        assert_eq!(s.data_dir(), Some(Path::new("./data")));
    }

    #[test]
    fn passkeys_take_a_domain_rp_id_and_its_origins() {
        let origins = |s: &Settings| -> Vec<String> {
            let p = s.passkeys.as_ref().expect("passkeys on");
            p.origins.iter().map(origin_of).collect()
        };
        // An IP address (the default public URL, or said outright) turns them off.
        assert!(settings(&[]).unwrap().passkeys.is_none());
        let s = settings(&[
            ("AUTHVAULT_PUBLIC_URL", "https://auth.example.com"),
            ("AUTHVAULT_WEBAUTHN_RP_ID", "10.0.0.1"),
        ])
        .unwrap();
        assert!(s.passkeys.is_none());
        // The public URL's host, with its origin and the CORS origins under it.
        let s = settings(&[
            ("AUTHVAULT_PUBLIC_URL", "http://localhost:8080"),
            (
                "AUTHVAULT_CORS_ORIGINS",
                "http://localhost:5173,http://127.0.0.1:5173",
            ),
        ])
        .unwrap();
        assert_eq!(s.passkeys.as_ref().unwrap().rp_id, "localhost");
        assert_eq!(
            origins(&s),
            ["http://localhost:8080", "http://localhost:5173"]
        );
        // A parent domain, and origins listed outright.
        let s = settings(&[
            ("AUTHVAULT_PUBLIC_URL", "https://auth.example.com"),
            ("AUTHVAULT_WEBAUTHN_RP_ID", "Example.com"),
            ("AUTHVAULT_WEBAUTHN_ORIGINS", "https://app.example.com"),
        ])
        .unwrap();
        assert_eq!(s.passkeys.as_ref().unwrap().rp_id, "example.com");
        assert_eq!(origins(&s), ["https://app.example.com"]);
        for (vars, variable) in [
            (
                vec![("AUTHVAULT_WEBAUTHN_RP_ID", "https://example.com")],
                "AUTHVAULT_WEBAUTHN_RP_ID",
            ),
            (
                vec![
                    ("AUTHVAULT_PUBLIC_URL", "https://auth.example.com"),
                    ("AUTHVAULT_WEBAUTHN_ORIGINS", "https://example.org"),
                ],
                "AUTHVAULT_WEBAUTHN_ORIGINS",
            ),
            (
                vec![
                    ("AUTHVAULT_PUBLIC_URL", "https://auth.example.com"),
                    ("AUTHVAULT_WEBAUTHN_RP_ID", "other.example"),
                ],
                "AUTHVAULT_WEBAUTHN_ORIGINS",
            ),
            (
                vec![("AUTHVAULT_WEBAUTHN_ORIGINS", "not a url")],
                "AUTHVAULT_WEBAUTHN_ORIGINS",
            ),
        ] {
            let err = settings(&vars).unwrap_err();
            assert_eq!(err.variable, variable, "{vars:?}: {err:?}");
        }
    }

    #[test]
    fn an_invalid_value_names_its_variable() {
        for (name, value) in [
            ("AUTHVAULT_JWT_SECRET", "too-short"),
            ("AUTHVAULT_BCRYPT_COST", "3"),
            ("AUTHVAULT_BCRYPT_COST", "32"),
            ("AUTHVAULT_DATABASE_URL", "postgres://x"),
            ("AUTHVAULT_ENCRYPTION_KEYS", "k1:c2hvcnQ="),
            ("AUTHVAULT_COOKIE_SECURE", "maybe"),
            ("AUTHVAULT_LISTEN", "nowhere"),
            ("AUTHVAULT_TRUSTED_PROXIES", "10.0.0.0/33"),
            ("AUTHVAULT_CORS_ORIGINS", "https://a.example/path"),
            ("AUTHVAULT_SMTP_URL", "http://mail"),
            ("GITHUB_CLIENT_SECRET", "a-secret-without-an-id"),
        ] {
            let err = settings(&[(name, value)]).expect_err(name);
            let expected = if name == "GITHUB_CLIENT_SECRET" {
                "GITHUB_CLIENT_ID"
            } else {
                name
            };
            assert!(
                err.to_string().contains(expected),
                "{err} does not name {expected}"
            );
        }
    }

    #[test]
    fn every_variable_of_the_table_is_read_and_nothing_else() {
        let asked = std::cell::RefCell::new(Vec::new());
        Settings::from_lookup(|name| {
            asked.borrow_mut().push(name.to_owned());
            None
        })
        .unwrap();
        let mut asked = asked.into_inner();
        asked.sort();
        asked.dedup();
        let mut table: Vec<String> = VARIABLES
            .iter()
            .filter(|v| v.name != var::RUST_LOG.name)
            .map(|v| v.name.to_owned())
            .collect();
        table.sort();
        assert_eq!(asked, table);
        let mut names: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), VARIABLES.len(), "a variable is listed twice");
    }

    #[test]
    fn every_default_of_the_table_parses() {
        // Setting each variable to its own default changes nothing.
        let defaults: HashMap<&str, &str> = VARIABLES
            .iter()
            .filter(|v| !v.default.is_empty())
            .map(|v| (v.name, v.default))
            .collect();
        let explicit = Settings::from_lookup(|name| defaults.get(name).map(|v| v.to_string()))
            .unwrap_or_else(|e| panic!("a default does not parse: {e}"));
        assert_eq!(
            format!("{explicit:?}"),
            format!("{:?}", settings(&[]).unwrap())
        );
    }

    #[test]
    fn a_signing_key_of_the_wrong_type_stops_the_start_naming_its_variable() {
        use crate::signing::SigningKey;
        let ed = SigningKey::generate("ed", JwtAlg::EdDsa)
            .unwrap()
            .to_entry();
        let ec = SigningKey::generate("ec", JwtAlg::Es256)
            .unwrap()
            .to_entry();
        for (alg, keys) in [
            ("ES256", ed.as_str()),
            ("EdDSA", ec.as_str()),
            ("HS256", ed.as_str()),
        ] {
            let err = settings(&[("AUTHVAULT_JWT_ALG", alg), ("AUTHVAULT_SIGNING_KEYS", keys)])
                .expect_err(alg);
            assert_eq!(err.variable, "AUTHVAULT_SIGNING_KEYS", "{alg}: {err}");
            assert!(!err.to_string().contains(keys.split(':').nth(1).unwrap()));
        }
        let err = settings(&[("AUTHVAULT_JWT_ALG", "RS256")]).unwrap_err();
        assert_eq!(err.variable, "AUTHVAULT_JWT_ALG");
        let ok = settings(&[
            ("AUTHVAULT_JWT_ALG", "ES256"),
            ("AUTHVAULT_SIGNING_KEYS", ec.as_str()),
        ])
        .unwrap();
        assert_eq!(ok.secrets.signing_keys.unwrap()[0].kid, "ec");
        // MongoDB has no data dir to keep a generated key in.
        let err = settings(&[
            ("AUTHVAULT_DATABASE_URL", "mongodb://localhost:27017/av"),
            ("AUTHVAULT_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            (
                "AUTHVAULT_ENCRYPTION_KEYS",
                "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            ),
            ("AUTHVAULT_JWT_ALG", "EdDSA"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "AUTHVAULT_SIGNING_KEYS");
    }

    #[test]
    fn the_access_token_lifetime_is_bounded() {
        assert_eq!(
            settings(&[]).unwrap().sessions.access_ttl,
            Duration::from_secs(3600)
        );
        for bad in ["59", "86401", "soon"] {
            let err = settings(&[("AUTHVAULT_ACCESS_TTL_SECS", bad)]).unwrap_err();
            assert_eq!(err.variable, "AUTHVAULT_ACCESS_TTL_SECS");
        }
    }

    #[test]
    fn samesite_none_needs_secure_cookies() {
        let err = settings(&[
            ("AUTHVAULT_COOKIE_SAMESITE", "none"),
            ("AUTHVAULT_COOKIE_SECURE", "false"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "AUTHVAULT_COOKIE_SAMESITE");
    }

    #[test]
    fn mongodb_requires_explicit_secrets() {
        let err =
            settings(&[("AUTHVAULT_DATABASE_URL", "mongodb://localhost:27017/av")]).unwrap_err();
        assert_eq!(err.variable, "AUTHVAULT_JWT_SECRET");
    }

    #[test]
    fn encryption_keys_keep_their_order() {
        let k1 = STANDARD.encode([1u8; 32]);
        let k2 = STANDARD.encode([2u8; 32]);
        let keys = parse_encryption_keys(&format!("k2:{k2}, k1:{k1}")).unwrap();
        assert_eq!(keys[0].id, "k2");
        assert_eq!(keys[1].id, "k1");
        assert!(parse_encryption_keys(&format!("k1:{k1},k1:{k2}")).is_err());
    }

    #[test]
    fn a_mongodb_password_never_shows_in_debug() {
        let url = DatabaseUrl::parse("mongodb://admin:hunter2hunter2@db:27017/authvault").unwrap();
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2"));
        assert_eq!(shown, "mongodb://admin:***@db:27017/authvault");
    }
}
