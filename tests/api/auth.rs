//! Sign-up, sign-in, sessions, sign-out, tokens and brute-force limits.

use std::time::Duration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::*;

backend_tests!(
    signup_creates_the_user_and_signs_them_in,
    signup_with_a_secure_cookie_uses_the_host_prefix,
    signup_with_a_taken_email_is_409_whatever_its_case,
    signup_lists_every_invalid_field,
    signup_refuses_a_password_over_72_bytes_with_a_clear_message,
    twenty_concurrent_signups_with_one_email_make_one_user,
    signin_with_the_right_password_returns_a_working_session,
    signin_failures_look_the_same_for_unknown_wrong_and_passwordless,
    signin_is_locked_after_five_failures_from_one_client_even_with_the_right_password,
    failures_from_many_ips_lock_the_email_for_everyone,
    an_untrusted_peer_cannot_dodge_the_limit_with_x_forwarded_for,
    credential_endpoints_are_limited_per_ip_but_session_is_not,
    session_accepts_bearer_and_cookie_and_refuses_neither,
    forged_tokens_are_refused,
    signout_revokes_that_token_only,
    signout_everywhere_revokes_every_token_of_the_user,
    cookie_writes_need_the_csrf_token_and_bearer_writes_do_not,
    providers_lists_credentials,
    sign_in_still_works_after_a_restart_on_the_same_database,
    a_stored_hash_of_another_cost_is_rehashed_on_sign_in,
);

async fn signup_creates_the_user_and_signs_them_in(backend: Backend) {
    let app = spawn_app(backend).await;

    let res = app
        .signup(
            "  Ada Lovelace ",
            " Ada@Example.COM ",
            "correct horse battery",
        )
        .await;

    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let cookie = set_cookie(res.headers(), "authvault.session").expect("session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=3600"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["name"], "Ada Lovelace");
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["user"]["providers"], json!(["credentials"]));
    assert_eq!(body["user"]["image"], Value::Null);
    assert_eq!(body["session"]["tokenType"], "Bearer");
    assert_eq!(body["session"]["expiresIn"], 3600);
    assert!(body["user"]["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(body["user"].get("password").is_none());

    let token = body["session"]["accessToken"].as_str().unwrap();
    let claims = app.jwt().verify(token).expect("a valid token");
    assert_eq!(claims.sub.to_string(), body["user"]["id"].as_str().unwrap());
    assert_eq!(claims.iss, PUBLIC_URL);
    assert_eq!(claims.aud, "authvault");
    assert_eq!(claims.exp - claims.iat, 3600);
    assert!((claims.auth_time - claims.iat).abs() <= 1);
}

async fn signup_with_a_secure_cookie_uses_the_host_prefix(backend: Backend) {
    let app = spawn_app_with(backend, &[("AUTHVAULT_COOKIE_SECURE", "true")]).await;

    let res = app
        .signup("Ada", "ada@example.com", "correct horse battery")
        .await;

    assert_eq!(res.status(), 201);
    let cookie = set_cookie(res.headers(), "__Host-authvault.session").expect("__Host- cookie");
    assert!(cookie.contains("Secure"));
    assert!(cookie.contains("HttpOnly"));
    assert!(!cookie.contains("Domain="));
}

async fn signup_with_a_taken_email_is_409_whatever_its_case(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    let res = app
        .signup("Someone", &user.email.to_uppercase(), "another password")
        .await;

    app.assert_problem(res, 409, "email_taken").await;
}

async fn signup_lists_every_invalid_field(backend: Backend) {
    let app = spawn_app(backend).await;

    let res = app.signup("   ", "not-an-email", "short").await;

    let problem = app.assert_problem(res, 400, "validation_failed").await;
    let errors = problem.errors.expect("field errors");
    for field in ["name", "email", "password"] {
        assert!(errors.contains_key(field), "{field} missing in {errors:?}");
    }
}

async fn signup_refuses_a_password_over_72_bytes_with_a_clear_message(backend: Backend) {
    let app = spawn_app(backend).await;

    // 30 characters, 90 bytes: long enough in characters, too long for bcrypt.
    let res = app.signup("Ada", "ada@example.com", &"€".repeat(30)).await;

    let problem = app.assert_problem(res, 400, "validation_failed").await;
    let message = &problem.errors.unwrap()["password"][0];
    assert!(message.contains("72 bytes"), "{message}");
}

async fn twenty_concurrent_signups_with_one_email_make_one_user(backend: Backend) {
    let app = spawn_app_with(backend, &[("AUTHVAULT_IP_RATE_LIMIT_PER_MIN", "0")]).await;

    let attempts = (0..20).map(|i| {
        let app = &app;
        async move {
            app.signup(
                &format!("Racer {i}"),
                "race@example.com",
                "correct horse battery",
            )
            .await
            .status()
            .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(attempts).await;

    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        19,
        "{statuses:?}"
    );
    let email = authvault::domain::Email::parse("race@example.com").unwrap();
    assert!(app.store.user_by_email(&email).await.unwrap().is_some());
}

async fn signin_with_the_right_password_returns_a_working_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    let res = app.signin(&user.email.to_uppercase(), &user.password).await;

    assert_eq!(res.status(), 200);
    assert!(set_cookie(res.headers(), "authvault.session").is_some());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["id"], user.id.as_str());
    let token = body["session"]["accessToken"].as_str().unwrap();
    let res = app.get_bearer("/api/auth/session", token).await;
    assert_eq!(res.status(), 200);
    let session: Value = res.json().await.unwrap();
    assert_eq!(session["user"]["email"], user.email.as_str());
    assert!(session["expires"].as_str().unwrap().ends_with('Z'));
}

async fn signin_failures_look_the_same_for_unknown_wrong_and_passwordless(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    let (oauth_only, _) = app.passwordless_user(Duration::ZERO).await;

    let mut bodies = Vec::new();
    for (email, password) in [
        ("nobody@example.com", "whatever password"),
        (user.email.as_str(), "wrong password"),
        (oauth_only.email.as_str(), "any password at all"),
        (user.email.as_str(), &"x".repeat(100)),
    ] {
        let res = app.signin(email, password).await;
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        bodies.push(res.text().await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert!(bodies[0].contains("invalid_credentials"));
}

async fn signin_is_locked_after_five_failures_from_one_client_even_with_the_right_password(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    for _ in 0..5 {
        let res = app.signin(&user.email, "wrong password").await;
        assert_eq!(res.status(), 401);
    }
    let res = app.signin(&user.email, &user.password).await;

    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "Retry-After {retry}");
    app.assert_problem(res, 429, "rate_limited").await;
    // Another email from the same client is not affected.
    let other = app.signed_up_user().await;
    assert_eq!(
        app.signin(&other.email, &other.password).await.status(),
        200
    );
}

async fn failures_from_many_ips_lock_the_email_for_everyone(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("AUTHVAULT_TRUSTED_PROXIES", "127.0.0.1/32"),
            ("AUTHVAULT_SIGNIN_MAX_FAILURES_PER_EMAIL", "4"),
        ],
    )
    .await;
    let user = app.signed_up_user().await;
    let signin_from = |ip: String, password: &'static str| {
        let app = &app;
        let email = user.email.clone();
        async move {
            app.client
                .post(app.url("/api/auth/signin"))
                .header("x-forwarded-for", ip)
                .json(&json!({"email": email, "password": password}))
                .send()
                .await
                .unwrap()
        }
    };

    for i in 0..4 {
        let res = signin_from(format!("198.51.100.{i}"), "wrong password").await;
        assert_eq!(res.status(), 401);
    }
    let res = signin_from("203.0.113.77".into(), "correct horse battery").await;

    app.assert_problem(res, 429, "rate_limited").await;
}

async fn an_untrusted_peer_cannot_dodge_the_limit_with_x_forwarded_for(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    for i in 0..5 {
        let res = app
            .client
            .post(app.url("/api/auth/signin"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({"email": user.email, "password": "wrong password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    let res = app.signin(&user.email, &user.password).await;

    app.assert_problem(res, 429, "rate_limited").await;
}

async fn credential_endpoints_are_limited_per_ip_but_session_is_not(backend: Backend) {
    let app = spawn_app_with(backend, &[("AUTHVAULT_IP_RATE_LIMIT_PER_MIN", "3")]).await;
    let user = app.signed_up_user().await; // 1

    assert_eq!(app.signin(&user.email, &user.password).await.status(), 200); // 2
    assert_eq!(app.signin(&user.email, &user.password).await.status(), 200); // 3
    let res = app
        .signup("X", "x@example.com", "correct horse battery")
        .await;
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    app.assert_problem(res, 429, "rate_limited").await;

    for _ in 0..5 {
        assert_eq!(
            app.get_bearer("/api/auth/session", &user.token)
                .await
                .status(),
            200
        );
        assert_eq!(app.get("/api/auth/csrf").await.status(), 200);
        assert_eq!(app.get("/api/auth/providers").await.status(), 200);
    }
}

async fn session_accepts_bearer_and_cookie_and_refuses_neither(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    let by_bearer = app.get_bearer("/api/auth/session", &user.token).await;
    let by_cookie = app
        .client
        .get(app.url("/api/auth/session"))
        .header("cookie", &user.cookie)
        .send()
        .await
        .unwrap();
    let anonymous = app.get("/api/auth/session").await;

    assert_eq!(by_bearer.status(), 200);
    assert_eq!(by_bearer.headers()["cache-control"], "no-store");
    assert_eq!(by_cookie.status(), 200);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    app.assert_problem(anonymous, 401, "unauthenticated").await;
}

async fn forged_tokens_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    let claims = app.jwt().verify(&user.token).unwrap();
    let payload: Value = serde_json::to_value(&claims).unwrap();
    let sign = |payload: &Value, secret: &str| {
        encode(
            &Header::default(),
            payload,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let with = |key: &str, value: Value| {
        let mut p = payload.clone();
        p[key] = value;
        sign(&p, JWT_SECRET)
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let parts: Vec<&str> = user.token.split('.').collect();
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let hs512 = encode(
        &Header::new(jsonwebtoken::Algorithm::HS512),
        &payload,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();

    let forged = [
        (
            "tampered payload",
            format!("{}.{}x.{}", parts[0], parts[1], parts[2]),
        ),
        ("alg none", format!("{none_header}.{}.", parts[1])),
        ("HS512", hs512),
        (
            "other secret",
            sign(&payload, "some-other-secret-of-enough-length!!"),
        ),
        ("expired", with("exp", json!(now - 120))),
        ("wrong issuer", with("iss", json!("http://evil.test"))),
        ("wrong audience", with("aud", json!("someone-else"))),
        ("unknown session", with("sid", json!(uuid::Uuid::new_v4()))),
        ("garbage", "not.a.jwt".into()),
    ];
    for (what, token) in forged {
        let res = app.get_bearer("/api/auth/session", &token).await;
        assert_eq!(res.status(), 401, "{what} was accepted");
        app.assert_problem(res, 401, "unauthenticated").await;
    }
}

async fn signout_revokes_that_token_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    let other: Value = app
        .signin(&user.email, &user.password)
        .await
        .json()
        .await
        .unwrap();
    let other_token = other["session"]["accessToken"].as_str().unwrap();

    let res = app
        .send_bearer(
            reqwest::Method::POST,
            "/api/auth/signout",
            &user.token,
            None,
        )
        .await;

    assert_eq!(res.status(), 204);
    let cleared = set_cookie(res.headers(), "authvault.session").expect("cleared cookie");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(
        app.get_bearer("/api/auth/session", &user.token)
            .await
            .status(),
        401
    );
    assert_eq!(
        app.get_bearer("/api/auth/session", other_token)
            .await
            .status(),
        200
    );
}

async fn signout_everywhere_revokes_every_token_of_the_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    let bystander = app.signed_up_user().await;
    let other: Value = app
        .signin(&user.email, &user.password)
        .await
        .json()
        .await
        .unwrap();
    let other_token = other["session"]["accessToken"].as_str().unwrap();

    let res = app
        .send_bearer(
            reqwest::Method::POST,
            "/api/auth/signout",
            &user.token,
            Some(&json!({"everywhere": true})),
        )
        .await;

    assert_eq!(res.status(), 204);
    assert_eq!(
        app.get_bearer("/api/auth/session", &user.token)
            .await
            .status(),
        401
    );
    assert_eq!(
        app.get_bearer("/api/auth/session", other_token)
            .await
            .status(),
        401
    );
    assert_eq!(
        app.get_bearer("/api/auth/session", &bystander.token)
            .await
            .status(),
        200
    );
}

async fn cookie_writes_need_the_csrf_token_and_bearer_writes_do_not(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    let (csrf, csrf_cookie) = app.csrf_for(&user.cookie).await;
    let patch = |cookie: String, header: Option<String>| {
        let app = &app;
        async move {
            let mut req = app
                .client
                .patch(app.url("/api/user"))
                .header("cookie", cookie)
                .json(&json!({"name": "Renamed"}));
            if let Some(h) = header {
                req = req.header("x-csrf-token", h);
            }
            req.send().await.unwrap()
        }
    };

    let no_token = patch(user.cookie.clone(), None).await;
    app.assert_problem(no_token, 403, "csrf_failed").await;

    let header_only = patch(user.cookie.clone(), Some(csrf.clone())).await;
    app.assert_problem(header_only, 403, "csrf_failed").await;

    // A pair that matches but was not signed by this server (a planted cookie).
    let planted = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let forged = patch(
        format!("{}; authvault.csrf={planted}", user.cookie),
        Some(planted.into()),
    )
    .await;
    app.assert_problem(forged, 403, "csrf_failed").await;

    // A pair of ours, but minted without a session cookie, or for another client's session.
    let (unbound, unbound_cookie) = app.csrf().await;
    let not_bound = patch(format!("{}; {unbound_cookie}", user.cookie), Some(unbound)).await;
    app.assert_problem(not_bound, 403, "csrf_failed").await;
    let other = app.signed_up_user().await;
    let (theirs, theirs_cookie) = app.csrf_for(&other.cookie).await;
    let not_mine = patch(format!("{}; {theirs_cookie}", user.cookie), Some(theirs)).await;
    app.assert_problem(not_mine, 403, "csrf_failed").await;
    // A second session of the same user is another session too.
    let again = app.signin(&user.email, &user.password).await;
    let second = cookie_pair(set_cookie(again.headers(), "authvault.session").unwrap());
    let (second_csrf, second_csrf_cookie) = app.csrf_for(&second).await;
    let other_session = patch(
        format!("{}; {second_csrf_cookie}", user.cookie),
        Some(second_csrf),
    )
    .await;
    app.assert_problem(other_session, 403, "csrf_failed").await;

    let both = patch(format!("{}; {csrf_cookie}", user.cookie), Some(csrf)).await;
    assert_eq!(both.status(), 200);

    let bearer = app
        .send_bearer(
            reqwest::Method::PATCH,
            "/api/user",
            &user.token,
            Some(&json!({"name": "Bearer Rename"})),
        )
        .await;
    assert_eq!(bearer.status(), 200);
}

async fn providers_lists_credentials(backend: Backend) {
    let app = spawn_app(backend).await;

    let res = app.get("/api/auth/providers").await;

    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["credentials"]["type"], "credentials");
    assert_eq!(body["credentials"]["id"], "credentials");
    assert_eq!(
        body["credentials"]["signinUrl"],
        format!("{PUBLIC_URL}/api/auth/signin")
    );
    // Only enabled providers: emailed links need mail, which SQLite has (its outbox) and
    // MongoDB without SMTP has not.
    let mut names: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort();
    let expected = match backend {
        Backend::Sqlite => vec!["credentials", "email"],
        Backend::Mongo => vec!["credentials"],
    };
    assert_eq!(names, expected, "only enabled providers");
}

async fn sign_in_still_works_after_a_restart_on_the_same_database(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    let db = app.db.clone();
    app.stop().await;
    drop(app);

    let restarted = spawn_app_on(db, &[]).await;

    assert_eq!(
        restarted
            .get_bearer("/api/auth/session", &user.token)
            .await
            .status(),
        200,
        "a token issued before the restart still works"
    );
    assert_eq!(
        restarted.signin(&user.email, &user.password).await.status(),
        200
    );
    assert_eq!(
        restarted
            .signin(&user.email, "wrong password")
            .await
            .status(),
        401
    );
}

async fn a_stored_hash_of_another_cost_is_rehashed_on_sign_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    let db = app.db.clone();
    app.stop().await;
    drop(app);
    let app = spawn_app_on(db, &[("AUTHVAULT_BCRYPT_COST", "5")]).await;
    let id = user.id.parse().unwrap();
    let before = app.store.user_by_id(id).await.unwrap().unwrap();
    assert!(before
        .password_hash
        .as_deref()
        .unwrap()
        .starts_with("$2b$04$"));

    assert_eq!(app.signin(&user.email, &user.password).await.status(), 200);

    let after = app.store.user_by_id(id).await.unwrap().unwrap();
    assert!(after
        .password_hash
        .as_deref()
        .unwrap()
        .starts_with("$2b$05$"));
    assert_eq!(app.signin(&user.email, &user.password).await.status(), 200);
}
