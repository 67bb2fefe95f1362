//! Bad input of every kind, security headers, origins and CORS, health.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

backend_tests!(
    bad_bodies_get_a_4xx_problem_and_never_a_5xx,
    a_huge_body_is_413,
    unknown_routes_and_methods_are_problems,
    every_response_carries_the_security_headers,
    writes_from_a_foreign_origin_are_forbidden,
    cors_answers_only_allowed_origins,
    health_and_readiness_answer,
    unicode_names_and_emails_round_trip,
);

async fn bad_bodies_get_a_4xx_problem_and_never_a_5xx(backend: Backend) {
    let app = spawn_app_with(backend, &[("AUTHVAULT_IP_RATE_LIMIT_PER_MIN", "0")]).await;
    let user = app.signed_up_user().await;
    let json_bodies = [
        json!(null),
        json!([]),
        json!("string"),
        json!(42),
        json!({}),
        json!({"email": {"$ne": null}, "password": {"$gt": ""}}),
        json!({"email": user.email, "password": {"$ne": null}}),
        json!({"email": ["a@b.c"], "password": "x"}),
        json!({"email": user.email, "password": user.password, "admin": true}),
        json!({"email": "a@b.c", "password": "correct horse", "name": "x", "$where": "1"}),
        json!({"name": "\u{0000}", "email": "a\u{0000}@b.c", "password": "\u{0000}\u{0000}\u{0000}\u{0000}\u{0000}\u{0000}\u{0000}\u{0000}"}),
        json!({"name": "Ada", "email": "ada@example.com", "password": "x".repeat(73)}),
        json!({"name": "Ada", "email": format!("{}@example.com", "a".repeat(300)), "password": "correct horse"}),
        json!({"name": "Ada", "email": "ada@example.com", "password": 12345678}),
    ];
    for path in ["/api/auth/signup", "/api/auth/signin"] {
        for body in &json_bodies {
            let res = app.post_json(path, body).await;
            let status = res.status().as_u16();
            assert!((400..500).contains(&status), "{path} {body} gave {status}");
            let problem = app.problem(res).await;
            assert!(!format!("{problem:?}").contains("correct horse"));
        }
    }
    let raw_bodies: [(&str, &[u8]); 6] = [
        ("application/json", b"{not json"),
        ("application/json", b"{\"email\": \"a@b.c\", "),
        ("application/json", b"\xff\xfe\xfd"),
        ("application/json", b""),
        ("text/plain", b"{\"email\":\"a@b.c\",\"password\":\"x\"}"),
        (
            "application/x-www-form-urlencoded",
            b"email=a%40b.c&password=x",
        ),
    ];
    for (content_type, body) in raw_bodies {
        let res = app
            .client
            .post(app.url("/api/auth/signin"))
            .header("content-type", content_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        assert!(
            [400, 415].contains(&status),
            "{content_type} {body:?} gave {status}"
        );
        app.problem(res).await;
    }
    let no_type = app
        .client
        .post(app.url("/api/auth/signin"))
        .body("{}")
        .send()
        .await
        .unwrap();
    app.assert_problem(no_type, 415, "unsupported_media_type")
        .await;
    let bad_signout = app
        .send_bearer(
            Method::POST,
            "/api/auth/signout",
            &user.token,
            Some(&json!({"everywhere": "yes"})),
        )
        .await;
    app.assert_problem(bad_signout, 400, "validation_failed")
        .await;
    let bad_header = app
        .client
        .get(app.url("/api/user"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    app.assert_problem(bad_header, 401, "unauthenticated").await;
}

async fn a_huge_body_is_413(backend: Backend) {
    let app = spawn_app(backend).await;
    let huge =
        json!({"name": "x".repeat(2_000_000), "email": "a@b.c", "password": "correct horse"});

    let res = app.post_json("/api/auth/signup", &huge).await;

    app.assert_problem(res, 413, "payload_too_large").await;
}

async fn unknown_routes_and_methods_are_problems(backend: Backend) {
    let app = spawn_app(backend).await;

    app.assert_problem(app.get("/api/nothing-here").await, 404, "not_found")
        .await;
    let res = app
        .client
        .put(app.url("/api/auth/signin"))
        .send()
        .await
        .unwrap();
    app.assert_problem(res, 405, "method_not_allowed").await;
    let res = app
        .client
        .delete(app.url("/api/auth/session"))
        .send()
        .await
        .unwrap();
    app.assert_problem(res, 405, "method_not_allowed").await;
}

async fn every_response_carries_the_security_headers(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    let responses = [
        app.get("/healthz").await,
        app.get("/api/auth/providers").await,
        app.get("/api/auth/csrf").await,
        app.get_bearer("/api/user", &user.token).await,
        app.get("/api/user").await,
        app.get("/nowhere").await,
        app.signin(&user.email, &user.password).await,
    ];
    for res in responses {
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{}", res.url());
        assert_eq!(h["referrer-policy"], "no-referrer", "{}", res.url());
        if res.url().path().starts_with("/api/") {
            assert_eq!(h["cache-control"], "no-store", "{}", res.url());
        }
    }
}

async fn writes_from_a_foreign_origin_are_forbidden(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    let foreign = app
        .client
        .post(app.url("/api/auth/signin"))
        .header("origin", "https://evil.example")
        .json(&json!({"email": user.email, "password": user.password}))
        .send()
        .await
        .unwrap();
    app.assert_problem(foreign, 403, "origin_forbidden").await;

    let null_origin = app
        .client
        .patch(app.url("/api/user"))
        .bearer_auth(&user.token)
        .header("origin", "null")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    app.assert_problem(null_origin, 403, "origin_forbidden")
        .await;

    for allowed in ["http://app.test", PUBLIC_URL] {
        let res = app
            .client
            .post(app.url("/api/auth/signin"))
            .header("origin", allowed)
            .json(&json!({"email": user.email, "password": user.password}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{allowed}");
    }
}

async fn cors_answers_only_allowed_origins(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    let preflight = app
        .client
        .request(Method::OPTIONS, app.url("/api/user"))
        .header("origin", "http://app.test")
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "content-type,x-csrf-token",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "http://app.test");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let allowed_headers = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed_headers.contains("x-csrf-token"));

    let allowed = app
        .client
        .get(app.url("/api/user"))
        .bearer_auth(&user.token)
        .header("origin", "http://app.test")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://app.test"
    );

    let foreign = app
        .client
        .get(app.url("/api/user"))
        .bearer_auth(&user.token)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(foreign
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert!(foreign
        .headers()
        .get("access-control-allow-credentials")
        .is_none());

    let foreign_preflight = app
        .client
        .request(Method::OPTIONS, app.url("/api/user"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "PATCH")
        .send()
        .await
        .unwrap();
    assert!(foreign_preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    app.assert_problem(foreign_preflight, 403, "origin_forbidden")
        .await;
}

async fn health_and_readiness_answer(backend: Backend) {
    let app = spawn_app(backend).await;

    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

async fn unicode_names_and_emails_round_trip(backend: Backend) {
    let app = spawn_app(backend).await;

    let res = app
        .signup("Zoë 李 🦀", "zoë@exämple.com", "pässwörd-🦀-long")
        .await;
    let status = res.status().as_u16();
    // An internationalised address may be refused, but only with a clear 400.
    if status == 400 {
        app.assert_problem(res, 400, "validation_failed").await;
        let res = app
            .signup("Zoë 李 🦀", "zoe@example.com", "pässwörd-🦀-long")
            .await;
        assert_eq!(res.status(), 201);
    } else {
        assert_eq!(status, 201);
    }
    let body: Value = app
        .signin("zoe@example.com", "pässwörd-🦀-long")
        .await
        .json()
        .await
        .unwrap_or_else(|_| json!({}));
    if let Some(name) = body["user"]["name"].as_str() {
        assert_eq!(name, "Zoë 李 🦀");
    }
}
