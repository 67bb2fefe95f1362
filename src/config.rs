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

/// The whole configuration of one authvault process.
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub public_url: Url,
    pub database_url: DatabaseUrl,
    pub jwt_secret: Option<SecretString>,
    pub encryption_keys: Option<Vec<EncryptionKey>>,
    pub cookie_secure: bool,
    pub cookie_samesite: SameSite,
    pub cors_origins: Vec<String>,
    pub callback_allowlist: Vec<String>,
    pub app_callbacks: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub store_timeout: Duration,
    pub bcrypt_cost: u32,
    pub signin_max_failures: u32,
    pub signin_window: Duration,
    pub signin_max_failures_per_email: u32,
    pub ip_rate_limit_per_min: u32,
    pub generate_per_min: u32,
    pub github: GithubSettings,
    pub google: GoogleSettings,
    pub together_api_url: Url,
    pub generate_model: String,
    pub generate_timeout: Duration,
    pub refresh_ttl: Duration,
    pub refresh_grace: Duration,
    pub smtp_url: Option<SecretString>,
    pub mail_from: String,
    pub verify_token_ttl: Duration,
    pub reset_token_ttl: Duration,
    /// Access token lifetime (the contract's one hour).
    pub session_ttl: Duration,
    /// HTTP worker threads; `None` is one per core. Not a variable: tests set it.
    pub workers: Option<usize>,
}

/// The model asked for when a request names none.
pub const DEFAULT_GENERATE_MODEL: &str = "Qwen/Qwen2.5-Coder-32B-Instruct";

impl Settings {
    /// Reads the process environment (after loading `.env`, see `main`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`; an empty value counts as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let vars = Vars { get: &get };

        let listen = vars.parse("AUTHVAULT_LISTEN", "127.0.0.1:8080", |v| {
            v.parse::<SocketAddr>()
                .map_err(|_| "must be host:port, e.g. 127.0.0.1:8080".to_string())
        })?;
        let public_url = vars.parse("AUTHVAULT_PUBLIC_URL", "http://127.0.0.1:8080", |v| {
            parse_base_url(v)
        })?;
        let database_url = vars.parse(
            "AUTHVAULT_DATABASE_URL",
            "sqlite://./data/authvault.db",
            DatabaseUrl::parse,
        )?;
        let jwt_secret = match get("AUTHVAULT_JWT_SECRET") {
            Some(v) if v.len() < 32 => {
                return Err(ConfigError::new(
                    "AUTHVAULT_JWT_SECRET",
                    "must be at least 32 bytes",
                ))
            }
            Some(v) => Some(SecretString::from(v)),
            None => None,
        };
        let encryption_keys = get("AUTHVAULT_ENCRYPTION_KEYS")
            .map(|v| parse_encryption_keys(&v))
            .transpose()
            .map_err(|m| ConfigError::new("AUTHVAULT_ENCRYPTION_KEYS", m))?;
        if matches!(database_url, DatabaseUrl::Mongo(_)) {
            if jwt_secret.is_none() {
                return Err(ConfigError::new(
                    "AUTHVAULT_JWT_SECRET",
                    "is required with MongoDB (generate one: openssl rand -base64 48)",
                ));
            }
            if encryption_keys.is_none() {
                return Err(ConfigError::new(
                    "AUTHVAULT_ENCRYPTION_KEYS",
                    "is required with MongoDB (e.g. k1:$(openssl rand -base64 32))",
                ));
            }
        }
        let cookie_secure = vars.parse("AUTHVAULT_COOKIE_SECURE", "true", parse_bool)?;
        let cookie_samesite = vars.parse("AUTHVAULT_COOKIE_SAMESITE", "lax", |v| {
            match v.to_ascii_lowercase().as_str() {
                "lax" => Ok(SameSite::Lax),
                "strict" => Ok(SameSite::Strict),
                "none" => Ok(SameSite::None),
                _ => Err("must be lax, strict or none".to_string()),
            }
        })?;
        if cookie_samesite == SameSite::None && !cookie_secure {
            return Err(ConfigError::new(
                "AUTHVAULT_COOKIE_SAMESITE",
                "none requires AUTHVAULT_COOKIE_SECURE=true",
            ));
        }
        let cors_origins = vars.list("AUTHVAULT_CORS_ORIGINS", parse_origin)?;
        let callback_allowlist = match get("AUTHVAULT_CALLBACK_ALLOWLIST") {
            Some(_) => vars.list("AUTHVAULT_CALLBACK_ALLOWLIST", parse_callback_entry)?,
            None => {
                let mut list = cors_origins.clone();
                list.push(origin_of(&public_url));
                list
            }
        };
        let app_callbacks = vars.list("AUTHVAULT_APP_CALLBACKS", parse_exact_callback)?;
        let trusted_proxies = vars.list("AUTHVAULT_TRUSTED_PROXIES", |v| {
            v.parse::<IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{v} is not a CIDR such as 10.0.0.0/8"))
        })?;
        let store_timeout =
            Duration::from_millis(vars.number("AUTHVAULT_STORE_TIMEOUT_MS", 2000, 1, 600_000)?);
        let bcrypt_cost = vars.number("AUTHVAULT_BCRYPT_COST", 12, 4, 31)? as u32;
        let signin_max_failures = vars.number("AUTHVAULT_SIGNIN_MAX_FAILURES", 5, 1, 1_000_000)?;
        let signin_window = Duration::from_secs(vars.number(
            "AUTHVAULT_SIGNIN_WINDOW_SECS",
            900,
            1,
            86_400 * 30,
        )?);
        let signin_max_failures_per_email =
            vars.number("AUTHVAULT_SIGNIN_MAX_FAILURES_PER_EMAIL", 50, 1, 1_000_000)?;
        let ip_rate_limit_per_min =
            vars.number("AUTHVAULT_IP_RATE_LIMIT_PER_MIN", 60, 0, 1_000_000)?;
        let generate_per_min = vars.number("AUTHVAULT_GENERATE_PER_MIN", 20, 0, 1_000_000)?;

        let github = GithubSettings {
            client: oauth_client(&get, "GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET")?,
            url: vars.parse("GITHUB_URL", "https://github.com", parse_base_url)?,
            api_url: vars.parse("GITHUB_API_URL", "https://api.github.com", parse_base_url)?,
        };
        let google = GoogleSettings {
            client: oauth_client(&get, "GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET")?,
            auth_url: vars.parse(
                "GOOGLE_AUTH_URL",
                "https://accounts.google.com/o/oauth2/v2/auth",
                parse_base_url,
            )?,
            token_url: vars.parse(
                "GOOGLE_TOKEN_URL",
                "https://oauth2.googleapis.com/token",
                parse_base_url,
            )?,
            userinfo_url: vars.parse(
                "GOOGLE_USERINFO_URL",
                "https://openidconnect.googleapis.com/v1/userinfo",
                parse_base_url,
            )?,
            jwks_url: vars.parse(
                "GOOGLE_JWKS_URL",
                "https://www.googleapis.com/oauth2/v3/certs",
                parse_base_url,
            )?,
            issuer: get("GOOGLE_ISSUER").unwrap_or_else(|| "https://accounts.google.com".into()),
        };
        let together_api_url = vars.parse(
            "TOGETHER_API_URL",
            "https://api.together.xyz/v1",
            parse_base_url,
        )?;
        let generate_model =
            vars.parse("AUTHVAULT_GENERATE_MODEL", DEFAULT_GENERATE_MODEL, |v| {
                if v.len() > 200 || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    Err("must be a model id without spaces, at most 200 characters".to_string())
                } else {
                    Ok(v.to_owned())
                }
            })?;
        let generate_timeout =
            Duration::from_secs(vars.number("AUTHVAULT_GENERATE_TIMEOUT_SECS", 60, 1, 3600)?);
        let refresh_ttl = Duration::from_secs(vars.number(
            "AUTHVAULT_REFRESH_TTL_SECS",
            2_592_000,
            60,
            86_400 * 400,
        )?);
        let refresh_grace =
            Duration::from_secs(vars.number("AUTHVAULT_REFRESH_GRACE_SECS", 10, 0, 300)?);
        let smtp_url = match get("AUTHVAULT_SMTP_URL") {
            Some(v) if v.starts_with("smtp://") || v.starts_with("smtps://") => {
                Some(SecretString::from(v))
            }
            Some(_) => {
                return Err(ConfigError::new(
                    "AUTHVAULT_SMTP_URL",
                    "unknown scheme: use smtp://user:pass@host:port or smtps://...",
                ))
            }
            None => None,
        };
        let mail_from =
            get("AUTHVAULT_MAIL_FROM").unwrap_or_else(|| "authvault <no-reply@localhost>".into());
        let verify_token_ttl = Duration::from_secs(vars.number(
            "AUTHVAULT_VERIFY_TOKEN_TTL_SECS",
            86_400,
            60,
            86_400 * 30,
        )?);
        let reset_token_ttl = Duration::from_secs(vars.number(
            "AUTHVAULT_RESET_TOKEN_TTL_SECS",
            1_800,
            60,
            86_400,
        )?);

        Ok(Self {
            listen,
            public_url,
            database_url,
            jwt_secret,
            encryption_keys,
            cookie_secure,
            cookie_samesite,
            cors_origins,
            callback_allowlist,
            app_callbacks,
            trusted_proxies,
            store_timeout,
            bcrypt_cost,
            signin_max_failures: signin_max_failures as u32,
            signin_window,
            signin_max_failures_per_email: signin_max_failures_per_email as u32,
            ip_rate_limit_per_min: ip_rate_limit_per_min as u32,
            generate_per_min: generate_per_min as u32,
            github,
            google,
            together_api_url,
            generate_model,
            generate_timeout,
            refresh_ttl,
            refresh_grace,
            smtp_url,
            mail_from,
            verify_token_ttl,
            reset_token_ttl,
            session_ttl: Duration::from_secs(3600),
            workers: None,
        })
    }

    /// The folder next to the SQLite file: development secrets and the outbox live there.
    pub fn data_dir(&self) -> Option<&Path> {
        match &self.database_url {
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
        origin_of(&self.public_url)
    }
}

struct Vars<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Vars<'_> {
    fn parse<T>(
        &self,
        name: &'static str,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let raw = (self.get)(name);
        parse(raw.as_deref().unwrap_or(default).trim()).map_err(|m| ConfigError::new(name, m))
    }

    fn number(
        &self,
        name: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let Some(raw) = (self.get)(name) else {
            return Ok(default);
        };
        match raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ConfigError::new(
                name,
                format!("must be a whole number from {min} to {max}"),
            )),
        }
    }

    fn list<T>(
        &self,
        name: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        let Some(raw) = (self.get)(name) else {
            return Ok(Vec::new());
        };
        raw.split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| parse(v).map_err(|m| ConfigError::new(name, m)))
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
impl Settings {
    /// Whether `url` may receive the user after a sign-in or from a mailed link: an allowed
    /// origin (any path under it) or an exact URL, on the allow-list or among the app callbacks.
    pub fn callback_allowed(&self, url: &Url) -> bool {
        let exact = url.to_string();
        let origin = origin_of(url);
        self.app_callbacks.contains(&exact)
            || self
                .callback_allowlist
                .iter()
                .any(|e| *e == exact || (matches!(url.scheme(), "http" | "https") && *e == origin))
    }
}

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
    id_var: &'static str,
    secret_var: &'static str,
) -> Result<Option<OAuthClient>, ConfigError> {
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
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.public_origin(), "http://127.0.0.1:8080");
        assert!(matches!(s.database_url, DatabaseUrl::Sqlite(_)));
        assert!(s.cookie_secure);
        assert_eq!(s.cookie_samesite, SameSite::Lax);
        assert_eq!(s.bcrypt_cost, 12);
        assert_eq!(s.signin_max_failures, 5);
        assert_eq!(s.signin_window, Duration::from_secs(900));
        assert_eq!(s.signin_max_failures_per_email, 50);
        assert_eq!(s.ip_rate_limit_per_min, 60);
        assert_eq!(s.store_timeout, Duration::from_millis(2000));
        assert_eq!(
            s.callback_allowlist,
            vec!["http://127.0.0.1:8080".to_string()]
        );
        assert_eq!(s.data_dir(), Some(Path::new("./data")));
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
