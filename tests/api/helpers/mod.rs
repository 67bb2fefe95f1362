//! `spawn_app(backend)`, request helpers, and the `backend_tests!` macro.

pub mod authenticator;
pub mod process;
pub mod providers;
pub mod smtp;
pub mod together;

use std::{collections::HashMap, sync::Arc, time::Duration};

use authvault::{
    auth::jwt::JwtKeys,
    config::Settings,
    domain::{Email, User, UserId, UserName},
    startup::{open_store, resolve_secrets, Application},
    store::{NewUser, SessionRecord, Store},
};
use reqwest::{header::HeaderMap, Response, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};
use tempfile::TempDir;
use uuid::Uuid;

pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123456789";
pub const PUBLIC_URL: &str = "http://127.0.0.1:9";
pub const ENCRYPTION_KEYS: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Mongo,
}

/// Expands each test name into a module with a `sqlite` and a `mongo` test.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mongo() {
                    super::$name($crate::helpers::Backend::Mongo).await
                }
            }
        )*
    };
}

/// The MongoDB URL for a fresh database; fails loudly when the test server is missing.
pub fn mongo_url(database: &str) -> String {
    let base = std::env::var("AUTHVAULT_TEST_MONGODB_URL").unwrap_or_else(|_| {
        panic!(
            "AUTHVAULT_TEST_MONGODB_URL is not set: run the tests with scripts/test, which starts \
             a MongoDB-compatible server and sets it"
        )
    });
    let mut url = url::Url::parse(&base).expect("AUTHVAULT_TEST_MONGODB_URL is a URL");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// Where a test app keeps its data; kept so that a second app can open the same database.
#[derive(Clone)]
pub struct Database {
    pub url: String,
    _dir: Arc<TempDir>,
}

impl Database {
    /// A database at a URL the test made itself.
    pub fn at(url: String) -> Self {
        Self {
            url,
            _dir: Arc::new(tempfile::tempdir().expect("temp dir")),
        }
    }

    pub fn fresh(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("authvault.db").display()),
            Backend::Mongo => mongo_url(&format!("api_{}", Uuid::new_v4().simple())),
        };
        Self {
            url,
            _dir: Arc::new(dir),
        }
    }
}

/// A running server and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: Database,
    pub store: Arc<dyn Store>,
    /// The in-process server; `None` when the app is a child process (see `process.rs`).
    handle: Option<actix_web::dev::ServerHandle>,
}

/// A user signed up through the API, with their password and token.
pub struct TestUser {
    pub id: String,
    pub name: String,
    pub email: String,
    pub password: String,
    pub token: String,
    pub cookie: String,
}

pub fn base_vars(db: &Database) -> HashMap<String, String> {
    [
        ("AUTHVAULT_LISTEN", "127.0.0.1:0"),
        ("AUTHVAULT_PUBLIC_URL", PUBLIC_URL),
        ("AUTHVAULT_DATABASE_URL", db.url.as_str()),
        ("AUTHVAULT_JWT_SECRET", JWT_SECRET),
        ("AUTHVAULT_ENCRYPTION_KEYS", ENCRYPTION_KEYS),
        ("AUTHVAULT_COOKIE_SECURE", "false"),
        ("AUTHVAULT_BCRYPT_COST", "4"),
        ("AUTHVAULT_STORE_TIMEOUT_MS", "5000"),
        ("AUTHVAULT_CORS_ORIGINS", "http://app.test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Starts the app on a fresh database of `backend` with the test defaults.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Starts the app with some variables changed.
pub async fn spawn_app_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_on(Database::fresh(backend), overrides).await
}

/// Starts an app on an existing database (a restart, or a second instance).
pub async fn spawn_app_on(db: Database, overrides: &[(&str, &str)]) -> TestApp {
    let mut vars = base_vars(&db);
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let lookup = vars.clone();
    let mut settings = Settings::from_lookup(|name| lookup.get(name).cloned()).expect("settings");
    settings.server.workers = Some(1);
    let store = open_store(&settings).await.expect("store opens");
    let listener = std::net::TcpListener::bind(settings.server.listen).expect("bind");
    let secrets = resolve_secrets(&settings).expect("secrets");
    let app = Application::with_store(settings, secrets, store.clone(), listener)
        .await
        .expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    TestApp {
        address,
        client,
        db,
        store,
        handle: Some(handle),
    }
}

/// A client for an authvault process started elsewhere (`process::ChildApp`) on `db`.
pub async fn attach(address: &str, db: Database) -> TestApp {
    let vars = base_vars(&db);
    let settings = Settings::from_lookup(|name| vars.get(name).cloned()).expect("settings");
    let store = open_store(&settings).await.expect("store opens");
    TestApp {
        address: address.to_owned(),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        db,
        store,
        handle: None,
    }
}

/// The parts of a problem document tests look at.
#[derive(Debug, serde::Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub code: String,
    pub detail: String,
    #[serde(default)]
    pub errors: Option<HashMap<String, Vec<String>>>,
}

/// The value of the cookie `name` set by a response, if any.
pub fn set_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// `name=value` of a Set-Cookie line.
pub fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_owned()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_bearer(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn send_bearer(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Response {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.expect("request")
    }

    /// Reads a problem document, checking its media type and shape.
    pub async fn problem(&self, res: Response) -> Problem {
        let status = res.status();
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            ct.starts_with("application/problem+json"),
            "{status}: content-type {ct:?}"
        );
        let problem: Problem = res.json().await.expect("problem body");
        assert_eq!(problem.status, status.as_u16());
        assert_eq!(
            problem.type_,
            format!("urn:authvault:problem:{}", problem.code)
        );
        assert!(!problem.title.is_empty() && !problem.detail.is_empty());
        problem
    }

    /// Asserts `res` is a problem with `status` and `code`.
    pub async fn assert_problem(&self, res: Response, status: u16, code: &str) -> Problem {
        assert_eq!(res.status().as_u16(), status, "expected {status} {code}");
        let p = self.problem(res).await;
        assert_eq!(p.code, code);
        p
    }

    pub async fn signup(&self, name: &str, email: &str, password: &str) -> Response {
        self.post_json(
            "/api/auth/signup",
            &json!({"name": name, "email": email, "password": password}),
        )
        .await
    }

    pub async fn signin(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/api/auth/signin",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// Signs up a fresh user and returns them with their token and cookie.
    pub async fn signed_up_user(&self) -> TestUser {
        let email = format!("user-{}@example.com", Uuid::new_v4().simple());
        let password = "correct horse battery".to_owned();
        let res = self.signup("Test User", &email, &password).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let cookie = cookie_pair(set_cookie(res.headers(), "authvault.session").expect("cookie"));
        let body: Value = res.json().await.expect("json");
        TestUser {
            id: body["user"]["id"].as_str().expect("id").to_owned(),
            name: "Test User".into(),
            email,
            password,
            token: body["session"]["accessToken"]
                .as_str()
                .expect("token")
                .to_owned(),
            cookie,
        }
    }

    /// A CSRF token with its cookie pair, issued without a session cookie.
    pub async fn csrf(&self) -> (String, String) {
        let res = self.get("/api/auth/csrf").await;
        self.csrf_pair(res).await
    }

    /// A CSRF token with its cookie pair, issued with (and so bound to) this session cookie.
    pub async fn csrf_for(&self, session_cookie: &str) -> (String, String) {
        let res = self
            .client
            .get(self.url("/api/auth/csrf"))
            .header("cookie", session_cookie)
            .send()
            .await
            .expect("request");
        self.csrf_pair(res).await
    }

    async fn csrf_pair(&self, res: reqwest::Response) -> (String, String) {
        assert_eq!(res.status(), 200);
        let cookie = cookie_pair(set_cookie(res.headers(), "authvault.csrf").expect("csrf cookie"));
        let body: Value = res.json().await.expect("json");
        (
            body["csrfToken"].as_str().expect("token").to_owned(),
            cookie,
        )
    }

    /// Creates a user without a password directly in the store (as OAuth sign-in will) and
    /// signs a token for them whose `auth_time` is `auth_age` ago.
    pub async fn passwordless_user(&self, auth_age: Duration) -> (User, String) {
        let now = authvault::clock::now();
        let user = self
            .store
            .create_user(NewUser {
                id: UserId::new(),
                name: UserName::parse("OAuth User").unwrap(),
                email: Email::parse(&format!("oauth-{}@example.com", Uuid::new_v4().simple()))
                    .unwrap(),
                image: None,
                password_hash: None,
                created_at: now,
            })
            .await
            .expect("user created");
        let token = self.token_for(&user, now - auth_age).await;
        (user, token)
    }

    /// Creates a session for `user` with the given `auth_time` and signs its token.
    pub async fn token_for(&self, user: &User, auth_time: time::OffsetDateTime) -> String {
        let now = authvault::clock::now();
        let session = SessionRecord {
            id: Uuid::new_v4(),
            user_id: user.id,
            created_at: now,
            last_used_at: now,
            expires_at: now + Duration::from_secs(3600),
            auth_time,
            amr: authvault::domain::Amr::one(authvault::domain::AuthMethod::Pwd),
            user_agent: None,
            ip: None,
        };
        self.store.create_session(&session).await.expect("session");
        self.jwt().issue(user, &session, now).expect("token").token
    }

    pub fn jwt(&self) -> JwtKeys {
        JwtKeys::new(
            &SecretString::from(JWT_SECRET),
            PUBLIC_URL,
            Duration::from_secs(3600),
        )
    }

    /// Stops this server (gracefully), leaving the database in place.
    pub async fn stop(&self) {
        if let Some(handle) = &self.handle {
            handle.stop(true).await;
        }
    }
}
