//! Local fakes of GitHub (OAuth 2.0 + REST) and Google (OpenID Connect) that check what the real
//! providers check (client id and secret, redirect_uri, code, the PKCE verifier) and answer in
//! their wire formats. One server plays both; tests pick what each next sign-in looks like.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const GITHUB_CLIENT_ID: &str = "gh-client-id";
pub const GITHUB_CLIENT_SECRET: &str = "gh-client-secret";
pub const GOOGLE_CLIENT_ID: &str = "google-client-id.apps.example";
pub const GOOGLE_CLIENT_SECRET: &str = "google-client-secret";

const GOOGLE_KEY: &str = include_str!("../../fixtures/google-test-key.pem");
const GOOGLE_KEY_N: &str = include_str!("../../fixtures/google-test-key.n");
const OTHER_KEY: &str = include_str!("../../fixtures/other-test-key.pem");

/// The GitHub account the next authorization belongs to.
#[derive(Clone, Debug)]
pub struct GithubAccount {
    pub id: u64,
    pub login: String,
    pub name: Option<String>,
    pub email: String,
    pub verified: bool,
}

/// The Google account the next authorization belongs to.
#[derive(Clone, Debug)]
pub struct GoogleAccount {
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
    pub hd: Option<String>,
    pub name: Option<String>,
}

/// How the next Google ID token is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdToken {
    Good,
    WrongKey,
    WrongAudience,
    WrongNonce,
    WrongIssuer,
    Expired,
}

/// How the token endpoints behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenEndpoint {
    Normal,
    Fails,
    Slow,
}

struct Grant {
    challenge: String,
    redirect_uri: String,
    nonce: Option<String>,
    github: Option<GithubAccount>,
    google: Option<GoogleAccount>,
}

struct Inner {
    base: String,
    github_next: Option<GithubAccount>,
    google_next: Option<GoogleAccount>,
    id_token: IdToken,
    token_endpoint: TokenEndpoint,
    /// The key id the JWKS publishes; changing it makes authvault fetch the JWKS again.
    kid: String,
    grants: HashMap<String, Grant>,
    github_tokens: HashMap<String, GithubAccount>,
    google_tokens: HashMap<String, GoogleAccount>,
    /// What went wrong in a check, for the test to read.
    complaints: Vec<String>,
}

pub struct FakeProviders {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
    jwks_fetches: Arc<AtomicUsize>,
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn random() -> String {
    URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

type State = web::Data<(Arc<Mutex<Inner>>, Arc<AtomicUsize>)>;

/// Both authorize endpoints: the user "approves" at once, and is sent back with a code.
fn authorize(state: &State, query: &HashMap<String, String>, google: bool) -> HttpResponse {
    let mut inner = state.0.lock().unwrap();
    let expected_client = if google {
        GOOGLE_CLIENT_ID
    } else {
        GITHUB_CLIENT_ID
    };
    let mut problems = Vec::new();
    if query.get("client_id").map(String::as_str) != Some(expected_client) {
        problems.push("authorize: wrong client_id".to_string());
    }
    if query.get("code_challenge_method").map(String::as_str) != Some("S256") {
        problems.push("authorize: no S256 PKCE".to_string());
    }
    let scope = query.get("scope").cloned().unwrap_or_default();
    let wanted = if google {
        "openid email profile"
    } else {
        "read:user user:email"
    };
    for s in wanted.split(' ') {
        if !scope.split(' ').any(|x| x == s) {
            problems.push(format!("authorize: scope {s} missing"));
        }
    }
    if google && query.get("response_type").map(String::as_str) != Some("code") {
        problems.push("authorize: response_type is not code".into());
    }
    if google && !query.contains_key("nonce") {
        problems.push("authorize: no nonce".into());
    }
    let (Some(redirect_uri), Some(state_param), Some(challenge)) = (
        query.get("redirect_uri"),
        query.get("state"),
        query.get("code_challenge"),
    ) else {
        problems.push("authorize: missing redirect_uri, state or code_challenge".into());
        inner.complaints.extend(problems);
        return HttpResponse::BadRequest().finish();
    };
    inner.complaints.extend(problems);
    let code = random();
    let grant = Grant {
        challenge: challenge.clone(),
        redirect_uri: redirect_uri.clone(),
        nonce: query.get("nonce").cloned(),
        github: (!google).then(|| inner.github_next.clone()).flatten(),
        google: google.then(|| inner.google_next.clone()).flatten(),
    };
    inner.grants.insert(code.clone(), grant);
    let mut location = url::Url::parse(redirect_uri).unwrap();
    location
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", state_param);
    HttpResponse::Found()
        .insert_header(("location", location.to_string()))
        .finish()
}

async fn github_authorize(
    state: State,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    authorize(&state, &query, false)
}

async fn google_authorize(
    state: State,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    authorize(&state, &query, true)
}

/// Client credentials from HTTP basic auth or the form, as both providers accept.
fn client_credentials(req: &HttpRequest, form: &HashMap<String, String>) -> (String, String) {
    if let Some(basic) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&decoded).to_string();
        let (id, secret) = text.split_once(':').unwrap_or(("", ""));
        let unescape = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        };
        return (unescape(id), unescape(secret));
    }
    (
        form.get("client_id").cloned().unwrap_or_default(),
        form.get("client_secret").cloned().unwrap_or_default(),
    )
}

/// Checks a code exchange the way the providers do; the grant on success.
fn redeem(
    inner: &mut Inner,
    req: &HttpRequest,
    form: &HashMap<String, String>,
    google: bool,
) -> Result<Grant, &'static str> {
    let (id, secret) = client_credentials(req, form);
    let expected = if google {
        (GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET)
    } else {
        (GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET)
    };
    if (id.as_str(), secret.as_str()) != expected {
        return Err("incorrect_client_credentials");
    }
    let code = form.get("code").cloned().unwrap_or_default();
    // A code is good once.
    let grant = inner.grants.remove(&code).ok_or("bad_verification_code")?;
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return Err("redirect_uri_mismatch");
    }
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if s256(&verifier) != grant.challenge {
        return Err("invalid_pkce_verifier");
    }
    Ok(grant)
}

async fn github_token(
    state: State,
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let mode = state.0.lock().unwrap().token_endpoint;
    match mode {
        TokenEndpoint::Fails => return HttpResponse::InternalServerError().body("oops"),
        TokenEndpoint::Slow => tokio::time::sleep(Duration::from_secs(12)).await,
        TokenEndpoint::Normal => {}
    }
    let wants_json = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let mut inner = state.0.lock().unwrap();
    let result = redeem(&mut inner, &req, &form, false);
    let body = match result {
        Ok(grant) => {
            let token = format!("gho_{}", random());
            if let Some(account) = grant.github {
                inner.github_tokens.insert(token.clone(), account);
            }
            vec![
                ("access_token", token),
                ("token_type", "bearer".into()),
                ("scope", "read:user,user:email".into()),
            ]
        }
        Err(error) => {
            inner.complaints.push(format!("github token: {error}"));
            vec![("error", error.to_string())]
        }
    };
    // GitHub answers 200 either way, form-encoded unless asked for JSON.
    if wants_json {
        let map: serde_json::Map<String, Value> = body
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        HttpResponse::Ok().json(map)
    } else {
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(body)
            .finish();
        HttpResponse::Ok()
            .content_type("application/x-www-form-urlencoded")
            .body(encoded)
    }
}

fn github_account(state: &State, req: &HttpRequest) -> Option<GithubAccount> {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })?;
    state.0.lock().unwrap().github_tokens.get(token).cloned()
}

async fn github_user(state: State, req: HttpRequest) -> HttpResponse {
    if req.headers().get("user-agent").is_none() {
        return HttpResponse::Forbidden().body("User-Agent required");
    }
    match github_account(&state, &req) {
        Some(a) => HttpResponse::Ok().json(json!({
            "id": a.id, "login": a.login, "name": a.name,
            "avatar_url": format!("https://avatars.example/{}.png", a.id),
            "email": null, "type": "User",
        })),
        None => HttpResponse::Unauthorized().json(json!({"message": "Bad credentials"})),
    }
}

async fn github_emails(state: State, req: HttpRequest) -> HttpResponse {
    match github_account(&state, &req) {
        Some(a) => HttpResponse::Ok().json(json!([
            {"email": format!("{}@users.noreply.example", a.login), "primary": false, "verified": true, "visibility": null},
            {"email": a.email, "primary": true, "verified": a.verified, "visibility": "private"},
        ])),
        None => HttpResponse::Unauthorized().json(json!({"message": "Bad credentials"})),
    }
}

async fn google_token(
    state: State,
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let mode = state.0.lock().unwrap().token_endpoint;
    match mode {
        TokenEndpoint::Fails => {
            return HttpResponse::InternalServerError().json(json!({"error": "internal_failure"}))
        }
        TokenEndpoint::Slow => tokio::time::sleep(Duration::from_secs(12)).await,
        TokenEndpoint::Normal => {}
    }
    let mut inner = state.0.lock().unwrap();
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        inner
            .complaints
            .push("google token: wrong grant_type".into());
        return HttpResponse::BadRequest().json(json!({"error": "unsupported_grant_type"}));
    }
    let grant = match redeem(&mut inner, &req, &form, true) {
        Ok(grant) => grant,
        Err(error) => {
            inner.complaints.push(format!("google token: {error}"));
            return HttpResponse::BadRequest()
                .json(json!({"error": "invalid_grant", "error_description": error}));
        }
    };
    let Some(account) = grant.google else {
        return HttpResponse::BadRequest().json(json!({"error": "invalid_grant"}));
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mode = inner.id_token;
    let mut claims = json!({
        "iss": if mode == IdToken::WrongIssuer { "https://evil.example".to_string() } else { inner.base.clone() },
        "azp": GOOGLE_CLIENT_ID,
        "aud": if mode == IdToken::WrongAudience { "someone-else" } else { GOOGLE_CLIENT_ID },
        "sub": account.sub,
        "email": account.email,
        "email_verified": account.email_verified,
        "iat": now,
        "exp": if mode == IdToken::Expired { now - 600 } else { now + 3600 },
        "nonce": if mode == IdToken::WrongNonce { "not-the-nonce".to_string() } else { grant.nonce.clone().unwrap_or_default() },
    });
    if let Some(hd) = &account.hd {
        claims["hd"] = json!(hd);
    }
    if let Some(name) = &account.name {
        claims["name"] = json!(name);
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(inner.kid.clone());
    let pem = if mode == IdToken::WrongKey {
        OTHER_KEY
    } else {
        GOOGLE_KEY
    };
    let id_token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let access = format!("ya29.{}", random());
    inner.google_tokens.insert(access.clone(), account);
    HttpResponse::Ok().json(json!({
        "access_token": access,
        "expires_in": 3599,
        "token_type": "Bearer",
        "scope": "openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile",
        "id_token": id_token,
    }))
}

async fn google_jwks(state: State) -> HttpResponse {
    state.1.fetch_add(1, Ordering::SeqCst);
    let kid = state.0.lock().unwrap().kid.clone();
    HttpResponse::Ok().json(json!({"keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": GOOGLE_KEY_N.trim(), "e": "AQAB",
    }]}))
}

async fn google_userinfo(state: State, req: HttpRequest) -> HttpResponse {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    match state.0.lock().unwrap().google_tokens.get(&token) {
        Some(a) => HttpResponse::Ok().json(json!({
            "sub": a.sub, "email": a.email, "email_verified": a.email_verified,
            "name": a.name.clone().unwrap_or_else(|| "Info Name".into()),
            "picture": "https://lh3.example/photo.jpg",
        })),
        None => HttpResponse::Unauthorized().finish(),
    }
}

impl FakeProviders {
    pub async fn start() -> Self {
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let inner = Arc::new(Mutex::new(Inner {
            base: String::new(),
            github_next: None,
            google_next: None,
            id_token: IdToken::Good,
            token_endpoint: TokenEndpoint::Normal,
            kid: "key-1".into(),
            grants: HashMap::new(),
            github_tokens: HashMap::new(),
            google_tokens: HashMap::new(),
            complaints: Vec::new(),
        }));
        let data = web::Data::new((inner.clone(), jwks_fetches.clone()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/login/oauth/authorize", web::get().to(github_authorize))
                .route("/login/oauth/access_token", web::post().to(github_token))
                .route("/user", web::get().to(github_user))
                .route("/user/emails", web::get().to(github_emails))
                .route("/o/oauth2/v2/auth", web::get().to(google_authorize))
                .route("/token", web::post().to(google_token))
                .route("/oauth2/v3/certs", web::get().to(google_jwks))
                .route("/v1/userinfo", web::get().to(google_userinfo))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let base = format!("http://127.0.0.1:{}", server.addrs()[0].port());
        inner.lock().unwrap().base = base.clone();
        tokio::spawn(server.run());
        Self {
            base,
            inner,
            jwks_fetches,
        }
    }

    /// The variables that point authvault at this fake.
    pub fn vars(&self) -> Vec<(String, String)> {
        let b = &self.base;
        [
            ("GITHUB_CLIENT_ID", GITHUB_CLIENT_ID.to_string()),
            ("GITHUB_CLIENT_SECRET", GITHUB_CLIENT_SECRET.to_string()),
            ("GITHUB_URL", b.clone()),
            ("GITHUB_API_URL", b.clone()),
            ("GOOGLE_CLIENT_ID", GOOGLE_CLIENT_ID.to_string()),
            ("GOOGLE_CLIENT_SECRET", GOOGLE_CLIENT_SECRET.to_string()),
            ("GOOGLE_AUTH_URL", format!("{b}/o/oauth2/v2/auth")),
            ("GOOGLE_TOKEN_URL", format!("{b}/token")),
            ("GOOGLE_USERINFO_URL", format!("{b}/v1/userinfo")),
            ("GOOGLE_JWKS_URL", format!("{b}/oauth2/v3/certs")),
            ("GOOGLE_ISSUER", b.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn next_github(&self, account: GithubAccount) {
        self.inner.lock().unwrap().github_next = Some(account);
    }

    pub fn next_google(&self, account: GoogleAccount) {
        self.inner.lock().unwrap().google_next = Some(account);
    }

    pub fn id_token(&self, mode: IdToken) {
        self.inner.lock().unwrap().id_token = mode;
    }

    pub fn token_endpoint(&self, mode: TokenEndpoint) {
        self.inner.lock().unwrap().token_endpoint = mode;
    }

    pub fn rotate_key_id(&self, kid: &str) {
        self.inner.lock().unwrap().kid = kid.to_owned();
    }

    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Every check the fake saw fail.
    pub fn complaints(&self) -> Vec<String> {
        self.inner.lock().unwrap().complaints.clone()
    }
}

/// A browser sign-in with `provider` through the fake: start, let the fake approve, come back to
/// the callback with the flow cookie. The answer is the callback's.
pub async fn browser_sign_in(app: &super::TestApp, provider: &str) -> reqwest::Response {
    let start = app.get(&format!("/api/auth/signin/{provider}")).await;
    assert_eq!(start.status(), 302, "start of the {provider} sign-in");
    let flow = super::cookie_pair(super::set_cookie(start.headers(), "authvault.oauth").unwrap());
    let approved = app
        .client
        .get(start.headers()["location"].to_str().unwrap())
        .send()
        .await
        .unwrap();
    let back = url::Url::parse(approved.headers()["location"].to_str().unwrap()).unwrap();
    app.client
        .get(app.url(&format!("{}?{}", back.path(), back.query().unwrap())))
        .header("cookie", flow)
        .send()
        .await
        .unwrap()
}

/// An app with both fake providers and a real SMTP server (without authentication), the per-IP
/// limit off, and some variables more.
pub async fn app_with_providers_and_mail(
    backend: super::Backend,
    extra: &[(&str, &str)],
) -> (super::TestApp, FakeProviders, super::smtp::SmtpSink) {
    let fake = FakeProviders::start().await;
    let sink = super::smtp::SmtpSink::start(false);
    let mut vars = fake.vars();
    vars.push(("AUTHVAULT_SMTP_URL".into(), sink.url()));
    vars.push(("AUTHVAULT_IP_RATE_LIMIT_PER_MIN".into(), "0".into()));
    for (k, v) in extra {
        vars.push(((*k).into(), (*v).into()));
    }
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    (super::spawn_app_with(backend, &vars).await, fake, sink)
}
