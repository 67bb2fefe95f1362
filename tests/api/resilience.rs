//! Outages, crashes, shutdown, several instances on one database, and metrics.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{process::*, providers::*, together::*, *};

backend_tests!(
    two_instances_share_revocation_limits_and_one_time_codes,
    a_crash_loses_no_acknowledged_write,
    sigterm_finishes_requests_in_flight_and_exits_zero,
    metrics_count_requests_outcomes_and_limits,
);

async fn two_instances_share_revocation_limits_and_one_time_codes(backend: Backend) {
    let fake = FakeProviders::start().await;
    let mut vars: Vec<(String, String)> = fake.vars();
    vars.push((
        "AUTHVAULT_APP_CALLBACKS".into(),
        "com.example.app:/cb".into(),
    ));
    vars.push(("AUTHVAULT_SIGNIN_MAX_FAILURES".into(), "4".into()));
    vars.push(("AUTHVAULT_CORS_ORIGINS".into(), "http://app.test".into()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // Two authvault processes on one database: nothing they share can live in process memory.
    let db = Database::fresh(backend);
    let process_a = ChildApp::start(&db, &vars).await;
    let process_b = ChildApp::start(&db, &vars).await;
    let a = attach(&process_a.address, db.clone()).await;
    let b = attach(&process_b.address, db.clone()).await;

    // Sign-out on one instance revokes the token on the other at once.
    let user = a.signed_up_user().await;
    assert_eq!(b.get_bearer("/api/user", &user.token).await.status(), 200);
    let res = a
        .send_bearer(Method::POST, "/api/auth/signout", &user.token, None)
        .await;
    assert_eq!(res.status(), 204);
    b.assert_problem(
        b.get_bearer("/api/user", &user.token).await,
        401,
        "unauthenticated",
    )
    .await;

    // Failed sign-ins on both count against one limit.
    for app in [&a, &b, &a, &b] {
        assert_eq!(
            app.signin(&user.email, "wrong password").await.status(),
            401
        );
    }
    a.assert_problem(
        a.signin(&user.email, &user.password).await,
        429,
        "rate_limited",
    )
    .await;
    b.assert_problem(
        b.signin(&user.email, &user.password).await,
        429,
        "rate_limited",
    )
    .await;

    // A one-time code made by one instance is redeemable once, on any.
    fake.next_github(GithubAccount {
        id: 4242,
        login: "twin".into(),
        name: None,
        email: "twin@example.com".into(),
        verified: true,
    });
    let verifier = "twin-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
    let challenge = {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
        use sha2::{Digest, Sha256};
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
    };
    let start = a
        .get(&format!(
            "/api/auth/signin/github?callbackUrl=com.example.app%3A%2Fcb&codeChallenge={challenge}"
        ))
        .await;
    let flow = cookie_pair(set_cookie(start.headers(), "authvault.oauth").unwrap());
    let approved = a
        .client
        .get(start.headers()["location"].to_str().unwrap())
        .send()
        .await
        .unwrap();
    let back = url::Url::parse(approved.headers()["location"].to_str().unwrap()).unwrap();
    let callback = a
        .client
        .get(b.url(&format!("{}?{}", back.path(), back.query().unwrap())))
        .header("cookie", flow)
        .send()
        .await
        .unwrap();
    assert_eq!(
        callback.status(),
        302,
        "the callback may land on the other instance"
    );
    let code = url::Url::parse(callback.headers()["location"].to_str().unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .to_string();
    let body = json!({"code": code, "codeVerifier": verifier});
    assert_eq!(a.post_json("/api/auth/token", &body).await.status(), 200);
    b.assert_problem(
        b.post_json("/api/auth/token", &body).await,
        400,
        "invalid_code",
    )
    .await;
}

/// What the server said succeeded: email, password, and the key stored for the user.
type Acknowledged = (String, String, Option<String>);

async fn a_crash_loses_no_acknowledged_write(backend: Backend) {
    let db = Database::fresh(backend);
    let child = ChildApp::start(&db, &[]).await;
    let client = reqwest::Client::new();
    let acknowledged: Arc<Mutex<Vec<Acknowledged>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6 {
        let (client, acked, stop, base) = (
            client.clone(),
            acknowledged.clone(),
            stop.clone(),
            child.address.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let email = format!(
                    "crash-{w}-{n}-{}@example.com",
                    uuid::Uuid::new_v4().simple()
                );
                let password = format!("password-{w}-{n}");
                let Ok(res) = client
                    .post(format!("{base}/api/auth/signup"))
                    .json(&json!({"name": "Crash", "email": email, "password": password}))
                    .send()
                    .await
                else {
                    break;
                };
                if res.status() != 201 {
                    continue;
                }
                let Ok(body) = res.json::<Value>().await else {
                    break;
                };
                acked
                    .lock()
                    .unwrap()
                    .push((email.clone(), password.clone(), None));
                let token = body["session"]["accessToken"].as_str().unwrap().to_owned();
                let key = format!("sk-crash-{w:02}-{n:05}-abcdefgh-{n:05}");
                let Ok(res) = client
                    .post(format!("{base}/api/user/api-keys"))
                    .bearer_auth(&token)
                    .json(&json!({"togetherAI": key}))
                    .send()
                    .await
                else {
                    break;
                };
                if res.status() == 200 {
                    let mut acked = acked.lock().unwrap();
                    if let Some(entry) = acked.iter_mut().find(|e| e.0 == email) {
                        entry.2 = Some(key);
                    }
                }
            }
        }));
    }
    // The MongoDB test server takes 150-250 ms a sign-up here: 3 s give the six writers
    // enough acknowledged writes to check on a loaded machine.
    tokio::time::sleep(Duration::from_secs(3)).await;
    child.signal("KILL");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        let _ = w.await;
    }
    drop(child);
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 5,
        "too few writes before the crash: {}",
        acknowledged.len()
    );

    let app = spawn_app_on(db, &[("AUTHVAULT_IP_RATE_LIMIT_PER_MIN", "0")]).await;
    for (email, password, key) in &acknowledged {
        let res = app.signin(email, password).await;
        assert_eq!(
            res.status(),
            200,
            "{email} was acknowledged but cannot sign in"
        );
        let body: Value = res.json().await.unwrap();
        let token = body["session"]["accessToken"].as_str().unwrap();
        if let Some(key) = key {
            let keys: Value = app
                .get_bearer("/api/user/api-keys", token)
                .await
                .json()
                .await
                .unwrap();
            let expected = authvault::vault::Masked::of(key).to_string();
            assert_eq!(
                keys["apiKeys"]["togetherAI"]["masked"],
                expected.as_str(),
                "{email}"
            );
        }
    }
}

async fn sigterm_finishes_requests_in_flight_and_exits_zero(backend: Backend) {
    let fake = FakeTogether::start().await;
    fake.set_mode(Mode::Slow(Duration::from_millis(1500)));
    let db = Database::fresh(backend);
    let mut child = ChildApp::start(&db, &[("TOGETHER_API_URL", &fake.base_url)]).await;
    let client = reqwest::Client::new();
    let body: Value = client
        .post(child.url("/api/auth/signup"))
        .json(
            &json!({"name": "T", "email": "term@example.com", "password": "correct horse battery"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["session"]["accessToken"].as_str().unwrap().to_owned();
    let res = client
        .post(child.url("/api/user/api-keys"))
        .bearer_auth(&token)
        .json(&json!({"togetherAI": "tgp_v1_term-0000000000000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let in_flight = {
        let (client, url, token) = (client.clone(), child.url("/api/generate"), token.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"prompt": "slow"}))
                .send()
                .await
        })
    };
    while fake.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.signal("TERM");

    let finished = in_flight
        .await
        .unwrap()
        .expect("the request in flight was answered");
    assert_eq!(finished.status(), 200);
    let code = child.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(
        code,
        Some(0),
        "{}",
        std::fs::read_to_string(&child.log).unwrap_or_default()
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", child.port))
            .await
            .is_err(),
        "no longer accepting"
    );
}

fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics_count_requests_outcomes_and_limits(backend: Backend) {
    let fake = FakeTogether::start().await;
    let app = spawn_app_with(
        backend,
        &[
            ("TOGETHER_API_URL", &fake.base_url),
            ("AUTHVAULT_GENERATE_PER_MIN", "1"),
        ],
    )
    .await;
    let before = app.get("/metrics").await.text().await.unwrap();
    let user = app.signed_up_user().await;
    assert_eq!(app.signin(&user.email, &user.password).await.status(), 200);
    assert_eq!(
        app.signin(&user.email, "wrong password").await.status(),
        401
    );
    app.send_bearer(
        Method::POST,
        "/api/user/api-keys",
        &user.token,
        Some(&json!({"togetherAI": "tgp_v1_metrics-000000000"})),
    )
    .await;
    let gen = |app: &TestApp| {
        let (client, url, token) = (
            app.client.clone(),
            app.url("/api/generate"),
            user.token.clone(),
        );
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"prompt": "x"}))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(gen(&app).await.status(), 200);
    assert_eq!(gen(&app).await.status(), 429);

    // Methods are free-form tokens: an attacker's inventions must not grow the label set.
    let invented = Method::from_bytes(b"INVENTED").unwrap();
    let res = app
        .client
        .request(invented, app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    // A path with an id counts under its pattern; a path no resource serves, as `unmatched`.
    let res = app
        .client
        .delete(app.url("/api/user/api-keys/oumi"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(app.get("/no/such/path-123").await.status(), 404);

    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let after = res.text().await.unwrap();
    let grew =
        |name: &str, labels: &[&str]| metric(&after, name, labels) - metric(&before, name, labels);
    assert!(
        grew(
            "authvault_http_requests_total",
            &["route=\"/api/auth/signin\"", "status=\"200\""]
        ) >= 1.0
    );
    assert!(
        grew(
            "authvault_http_requests_total",
            &["route=\"/api/auth/signin\"", "status=\"401\""]
        ) >= 1.0
    );
    assert!(
        grew(
            "authvault_http_request_duration_seconds_count",
            &["route=\"/api/auth/signup\""]
        ) >= 1.0
    );
    assert!(grew("authvault_signins_total", &["outcome=\"success\""]) >= 1.0);
    assert!(
        grew(
            "authvault_signins_total",
            &["outcome=\"invalid_credentials\""]
        ) >= 1.0
    );
    assert!(grew("authvault_rate_limited_total", &["limit=\"generate\""]) >= 1.0);
    assert!(
        grew(
            "authvault_upstream_requests_total",
            &["provider=\"together\"", "outcome=\"ok\""]
        ) >= 1.0
    );
    assert!(after.contains("authvault_store_errors_total") || after.contains("# TYPE"));
    assert!(!after.contains(&user.email), "no personal data in metrics");
    assert!(!after.contains("INVENTED"));
    assert!(
        grew(
            "authvault_http_requests_total",
            &[
                "route=\"/api/user/api-keys/{provider}\"",
                "method=\"DELETE\"",
                "status=\"204\""
            ]
        ) >= 1.0
    );
    assert!(
        grew(
            "authvault_http_requests_total",
            &["route=\"unmatched\"", "status=\"404\""]
        ) >= 1.0
    );
    assert!(!after.contains("path-123") && !after.contains("/oumi"));
    assert!(
        grew(
            "authvault_http_requests_total",
            &["method=\"OTHER\"", "status=\"405\""]
        ) >= 1.0
    );
}

mod outage {
    use super::*;

    /// The database goes away: readiness and store-bound requests answer 503 quickly, and
    /// service resumes by itself when it returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mongo() {
        let mut mongo = OwnMongo::start().await;
        let db = Database::at(mongo.url("outage"));
        let app = spawn_app_on(db, &[("AUTHVAULT_STORE_TIMEOUT_MS", "500")]).await;
        let user = app.signed_up_user().await;

        mongo.stop().await;
        assert_outage(&app, &user).await;

        mongo.resume().await;
        assert_recovery(&app, &user).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let app = spawn_app_with(Backend::Sqlite, &[("AUTHVAULT_STORE_TIMEOUT_MS", "500")]).await;
        let user = app.signed_up_user().await;
        let path = app.db.url.strip_prefix("sqlite://").unwrap().to_owned();

        // Another process holds the write lock (tests run as root: permissions prove nothing).
        let mut locker = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import sqlite3, sys\n\
                 c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                 c.execute('BEGIN EXCLUSIVE')\n\
                 print('locked', flush=True)\n\
                 sys.stdin.read()\n",
            )
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(locker.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "locked");

        let started = Instant::now();
        app.assert_problem(app.get("/readyz").await, 503, "store_unavailable")
            .await;
        let res = app
            .signup("X", "x@example.com", "correct horse battery")
            .await;
        app.assert_problem(res, 503, "store_unavailable").await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "answered, not hung"
        );

        drop(locker.stdin.take());
        locker.wait().unwrap();
        assert_recovery(&app, &user).await;
    }

    async fn assert_outage(app: &TestApp, user: &TestUser) {
        for request in ["/readyz", "/api/user"] {
            let started = Instant::now();
            let res = app.get_bearer(request, &user.token).await;
            let elapsed = started.elapsed();
            app.assert_problem(res, 503, "store_unavailable").await;
            assert!(
                elapsed < Duration::from_secs(10),
                "{request} took {elapsed:?}"
            );
        }
        let res = app.signin(&user.email, &user.password).await;
        app.assert_problem(res, 503, "store_unavailable").await;
        assert_eq!(
            app.get("/healthz").await.status(),
            200,
            "alive, only not ready"
        );
    }

    async fn assert_recovery(app: &TestApp, user: &TestUser) {
        let started = Instant::now();
        while app.get("/readyz").await.status() != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "did not recover"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(app.get_bearer("/api/user", &user.token).await.status(), 200);
        assert_eq!(app.signin(&user.email, &user.password).await.status(), 200);
        let again = app
            .signup(
                "Y",
                &format!("y-{}@example.com", uuid::Uuid::new_v4().simple()),
                "correct horse battery",
            )
            .await;
        assert_eq!(again.status(), 201);
    }
}
