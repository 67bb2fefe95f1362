//! The security rules of the second stage, each attacked the way the outside review did: the
//! pre-account takeover story end to end, bursts against the limits, sign-ins racing a password
//! change, the refresh cookie, replayed refresh tokens, email-link redirects and reset links.

use std::{sync::Arc, time::Duration};

use reqwest::{Method, Response};
use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::helpers::{providers::*, smtp::*, *};

backend_tests!(
    an_unverified_github_address_creates_no_account_and_the_owner_signs_up_later,
    the_owners_reset_link_removes_an_identity_attached_while_the_address_was_unproven,
    a_verification_link_removes_what_was_attached_before_and_a_later_one_does_nothing,
    a_burst_of_wrong_passwords_from_one_client_gets_at_most_the_limit_and_locks_nobody_out,
    a_burst_on_a_credential_endpoint_is_served_at_most_the_per_ip_limit,
    ipv6_clients_share_a_limit_per_64,
    wrong_current_passwords_count_as_failed_sign_ins,
    a_wrong_password_at_account_deletion_counts_as_a_failed_sign_in,
    no_sign_in_racing_a_password_change_keeps_a_session,
    a_refresh_by_the_cookie_always_answers_as_a_browser,
    a_replayed_refresh_token_mails_one_notice_per_session,
    email_links_never_go_to_an_app_scheme,
    a_reset_or_a_password_change_spends_every_outstanding_reset_link,
);

const APP_SCHEME: &str = "com.example.app:/auth";

/// An app with the fake providers, a real SMTP server, and the proxy on 127.0.0.1 trusted, so
/// that a test speaks for many client IPs through `X-Forwarded-For`.
async fn app_for(backend: Backend, extra: &[(&str, &str)]) -> (TestApp, FakeProviders, SmtpSink) {
    let mut vars = vec![("AUTHVAULT_TRUSTED_PROXIES", "127.0.0.1/32")];
    vars.extend_from_slice(extra);
    app_with_providers_and_mail(backend, &vars).await
}

fn session_cookie(res: &Response) -> String {
    cookie_pair(set_cookie(res.headers(), "authvault.session").expect("session cookie"))
}

async fn status_with_cookie(app: &TestApp, path: &str, cookie: &str) -> u16 {
    app.client
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The link of the newest mail whose subject contains `subject`, and its token.
async fn link_in(sink: &SmtpSink, count: usize, subject: &str) -> (String, String) {
    let mails = sink.wait_for(count, Duration::from_secs(10)).await;
    let mail = mails
        .iter()
        .rev()
        .find(|m| header(m, "Subject").is_some_and(|s| s.contains(subject)))
        .unwrap_or_else(|| panic!("a mail about {subject:?}"));
    token_link(mail)
}

fn subjects(sink: &SmtpSink) -> Vec<String> {
    sink.messages()
        .iter()
        .filter_map(|m| header(m, "Subject"))
        .collect()
}

/// A JSON POST from client `ip` (through the trusted proxy), on a connection of its own.
async fn post_from(app: &TestApp, ip: &str, path: &str, body: &Value) -> Response {
    reqwest::Client::new()
        .post(app.url(path))
        .header("x-forwarded-for", ip)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Fires `n` copies of a request at once: each on its own connection, released together.
async fn burst(app: &TestApp, n: usize, ip: &str, path: &str, body: Value) -> Vec<u16> {
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, url, ip, body) =
                (barrier.clone(), app.url(path), ip.to_owned(), body.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let req = client.post(url).header("x-forwarded-for", ip).json(&body);
                barrier.wait().await;
                req.send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

async fn an_unverified_github_address_creates_no_account_and_the_owner_signs_up_later(
    backend: Backend,
) {
    let (app, fake, _sink) = app_for(backend, &[]).await;
    // The attacker's GitHub account claims the victim's address, unverified.
    fake.next_github(GithubAccount {
        id: 666,
        login: "mallory".into(),
        name: Some("Mallory".into()),
        email: "victim@example.com".into(),
        verified: false,
    });
    let res = browser_sign_in(&app, "github").await;
    assert!(set_cookie(res.headers(), "authvault.session").is_none());
    app.assert_problem(res, 409, "email_not_verified").await;

    // Nothing was made: the owner signs up with the address.
    let owner = app
        .signup("Victim", "victim@example.com", "the owner's passphrase")
        .await;
    assert_eq!(owner.status(), 201);
    // And the attacker's identity still gets nowhere: its address now has an account that
    // GitHub does not vouch for.
    fake.next_github(GithubAccount {
        id: 666,
        login: "mallory".into(),
        name: Some("Mallory".into()),
        email: "victim@example.com".into(),
        verified: false,
    });
    let again = browser_sign_in(&app, "github").await;
    app.assert_problem(again, 409, "account_not_linked").await;
}

async fn the_owners_reset_link_removes_an_identity_attached_while_the_address_was_unproven(
    backend: Backend,
) {
    let (app, fake, sink) = app_for(backend, &[]).await;
    // Google reports the address verified but does not vouch for it (not Gmail, no Workspace
    // domain): enough to create an account, not to prove the address.
    let attacker = GoogleAccount {
        sub: "mallory-sub".into(),
        email: "victim@example.com".into(),
        email_verified: true,
        hd: None,
        name: Some("Mallory".into()),
    };
    fake.next_google(attacker.clone());
    let res = browser_sign_in(&app, "google").await;
    assert_eq!(res.status(), 302);
    let attacker_cookie = session_cookie(&res);
    assert_eq!(
        status_with_cookie(&app, "/api/user", &attacker_cookie).await,
        200
    );

    // The owner is refused at sign-up, and recovers the address by mail.
    let signup = app
        .signup("Victim", "victim@example.com", "the owner's passphrase")
        .await;
    app.assert_problem(signup, 409, "email_taken").await;
    let forgot = app
        .post_json(
            "/api/auth/password/forgot",
            &json!({"email": "victim@example.com"}),
        )
        .await;
    assert_eq!(forgot.status(), 202);
    let (_, token) = link_in(&sink, 1, "Reset your password").await;
    let reset = app
        .post_json(
            "/api/auth/password/reset",
            &json!({"token": token, "newPassword": "the owner's passphrase"}),
        )
        .await;
    assert_eq!(reset.status(), 204);

    // The attacker's session is over, and their identity no longer signs in to the account.
    assert_eq!(
        status_with_cookie(&app, "/api/user", &attacker_cookie).await,
        401
    );
    fake.next_google(attacker);
    let back = browser_sign_in(&app, "google").await;
    app.assert_problem(back, 409, "account_not_linked").await;

    // The owner signs in with the password and finds only what is theirs.
    let signin = app
        .signin("victim@example.com", "the owner's passphrase")
        .await;
    assert_eq!(signin.status(), 200);
    let body: Value = signin.json().await.unwrap();
    assert_eq!(body["user"]["providers"], json!(["credentials"]));
    assert!(body["user"]["emailVerified"].is_string());
    let token = body["session"]["accessToken"].as_str().unwrap().to_owned();
    let keys = app
        .send_bearer(
            Method::POST,
            "/api/user/api-keys",
            &token,
            Some(&json!({"togetherAI": "tg-owner-key-0001"})),
        )
        .await;
    assert_eq!(keys.status(), 200);

    // And is told what happened.
    sink.wait_for(3, Duration::from_secs(10)).await;
    let subjects = subjects(&sink);
    assert!(
        subjects
            .iter()
            .any(|s| s.contains("Sign-in methods were removed")),
        "{subjects:?}"
    );
    let notice = sink
        .messages()
        .into_iter()
        .find(|m| header(m, "Subject").is_some_and(|s| s.contains("Sign-in methods were removed")))
        .unwrap();
    let text = decoded_part(&notice, "text/plain").unwrap();
    assert!(text.contains("Google"), "{text}");
}

async fn a_verification_link_removes_what_was_attached_before_and_a_later_one_does_nothing(
    backend: Backend,
) {
    let (app, fake, sink) = app_for(backend, &[]).await;
    // An account made by an identity that does not prove the address, with a password too.
    fake.next_google(GoogleAccount {
        sub: "early-sub".into(),
        email: "owner@example.com".into(),
        email_verified: true,
        hd: None,
        name: Some("Early".into()),
    });
    let res = browser_sign_in(&app, "google").await;
    let cookie = session_cookie(&res);
    let me: Value = app
        .client
        .get(app.url("/api/user"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(me["emailVerified"].is_null());
    let (csrf, csrf_cookie) = app.csrf_for(&cookie).await;
    let request = app
        .client
        .post(app.url("/api/auth/verify-email/request"))
        .header("cookie", format!("{cookie}; {csrf_cookie}"))
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(request.status(), 202);
    let (_, token) = link_in(&sink, 1, "Verify your email").await;

    let verified = app
        .post_json("/api/auth/verify-email", &json!({"token": token}))
        .await;
    assert_eq!(verified.status(), 200);
    let user: Value = verified.json().await.unwrap();
    assert!(user["emailVerified"].is_string());
    assert_eq!(
        user["providers"],
        json!([]),
        "the identity attached while the address was unproven is gone"
    );
    assert_eq!(status_with_cookie(&app, "/api/user", &cookie).await, 401);
    sink.wait_for(2, Duration::from_secs(10)).await;
    assert!(subjects(&sink)
        .iter()
        .any(|s| s.contains("Sign-in methods were removed")));
}

async fn a_burst_of_wrong_passwords_from_one_client_gets_at_most_the_limit_and_locks_nobody_out(
    backend: Backend,
) {
    // Per email and client: 5; per email from any client: 8. Under the old check-then-record
    // code a burst of 30 from one client counted some 30 failures and locked the owner out.
    let (app, _fake, _sink) = app_for(
        backend,
        &[
            ("AUTHVAULT_SIGNIN_MAX_FAILURES", "5"),
            ("AUTHVAULT_SIGNIN_MAX_FAILURES_PER_EMAIL", "8"),
        ],
    )
    .await;
    let user = app.signed_up_user().await;

    let statuses = burst(
        &app,
        30,
        "203.0.113.66",
        "/api/auth/signin",
        json!({"email": user.email, "password": "wrong guess"}),
    )
    .await;
    assert_eq!(count(&statuses, 401), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 25, "{statuses:?}");

    // The attacker's client stays refused, even with the right password.
    let attacker = post_from(
        &app,
        "203.0.113.66",
        "/api/auth/signin",
        &json!({"email": user.email, "password": user.password}),
    )
    .await;
    app.assert_problem(attacker, 429, "rate_limited").await;
    // The owner, elsewhere, is not locked out: one client added only its 5 to the email's count.
    let owner = post_from(
        &app,
        "198.51.100.7",
        "/api/auth/signin",
        &json!({"email": user.email, "password": user.password}),
    )
    .await;
    assert_eq!(owner.status(), 200);

    // A distributed guess still locks the email: two more clients bring it to the cap of 8.
    let second = burst(
        &app,
        6,
        "192.0.2.1",
        "/api/auth/signin",
        json!({"email": user.email, "password": "wrong guess"}),
    )
    .await;
    assert_eq!(count(&second, 401), 3, "the per-email cap is 8: {second:?}");
    let third = post_from(
        &app,
        "192.0.2.99",
        "/api/auth/signin",
        &json!({"email": user.email, "password": user.password}),
    )
    .await;
    app.assert_problem(third, 429, "rate_limited").await;
}

async fn a_burst_on_a_credential_endpoint_is_served_at_most_the_per_ip_limit(backend: Backend) {
    let (app, _fake, _sink) = app_for(backend, &[("AUTHVAULT_IP_RATE_LIMIT_PER_MIN", "20")]).await;
    let statuses = burst(
        &app,
        60,
        "203.0.113.5",
        "/api/auth/token",
        json!({"code": "no-such-code", "codeVerifier": "v".repeat(43)}),
    )
    .await;
    assert_eq!(count(&statuses, 400), 20, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 40, "{statuses:?}");
    // Another client has its own budget.
    let other = post_from(
        &app,
        "203.0.113.6",
        "/api/auth/token",
        &json!({"code": "no-such-code", "codeVerifier": "v".repeat(43)}),
    )
    .await;
    app.assert_problem(other, 400, "invalid_code").await;
}

async fn ipv6_clients_share_a_limit_per_64(backend: Backend) {
    let (app, _fake, _sink) = app_for(backend, &[("AUTHVAULT_IP_RATE_LIMIT_PER_MIN", "3")]).await;
    let body = json!({"code": "no-such-code", "codeVerifier": "v".repeat(43)});
    for ip in ["2001:db8:5:6::1", "2001:db8:5:6::2", "2001:db8:5:6:ffff::9"] {
        let res = post_from(&app, ip, "/api/auth/token", &body).await;
        app.assert_problem(res, 400, "invalid_code").await;
    }
    // A fourth address of the same /64 is the same client.
    let same = post_from(&app, "2001:db8:5:6:1234::1", "/api/auth/token", &body).await;
    app.assert_problem(same, 429, "rate_limited").await;
    // The next /64 is another.
    let next = post_from(&app, "2001:db8:5:7::1", "/api/auth/token", &body).await;
    app.assert_problem(next, 400, "invalid_code").await;
}

/// A signed-in request from client `ip` (through the trusted proxy).
async fn bearer_from(
    app: &TestApp,
    ip: &str,
    method: Method,
    path: &str,
    token: &str,
    body: &Value,
) -> Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("x-forwarded-for", ip)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn wrong_current_passwords_count_as_failed_sign_ins(backend: Backend) {
    let (app, _fake, _sink) = app_for(backend, &[]).await;
    let user = app.signed_up_user().await;
    let change = |ip: &'static str, current: &str| {
        let body = json!({"currentPassword": current, "newPassword": "a brand new passphrase"});
        let (app, token) = (&app, user.token.clone());
        async move { bearer_from(app, ip, Method::POST, "/api/user/password", &token, &body).await }
    };
    for _ in 0..5 {
        let wrong = change("203.0.113.9", "wrong guess").await;
        app.assert_problem(wrong, 401, "invalid_credentials").await;
    }
    let right = change("203.0.113.9", &user.password).await;
    app.assert_problem(right, 429, "rate_limited").await;
    // They count toward the sign-in limit of that email and client too.
    let signin = post_from(
        &app,
        "203.0.113.9",
        "/api/auth/signin",
        &json!({"email": user.email, "password": user.password}),
    )
    .await;
    app.assert_problem(signin, 429, "rate_limited").await;
    // From another client the right password still works.
    assert_eq!(change("198.51.100.1", &user.password).await.status(), 204);
}

async fn a_wrong_password_at_account_deletion_counts_as_a_failed_sign_in(backend: Backend) {
    let (app, _fake, _sink) = app_for(backend, &[("AUTHVAULT_SIGNIN_MAX_FAILURES", "3")]).await;
    let user = app.signed_up_user().await;
    let delete = |password: &str| {
        let body = json!({"password": password});
        let (app, token) = (&app, user.token.clone());
        async move {
            bearer_from(
                app,
                "203.0.113.10",
                Method::DELETE,
                "/api/user",
                &token,
                &body,
            )
            .await
        }
    };
    for _ in 0..3 {
        app.assert_problem(delete("wrong guess").await, 401, "invalid_credentials")
            .await;
    }
    app.assert_problem(delete(&user.password).await, 429, "rate_limited")
        .await;
    assert_eq!(app.get_bearer("/api/user", &user.token).await.status(), 200);
}

async fn no_sign_in_racing_a_password_change_keeps_a_session(backend: Backend) {
    // bcrypt at cost 6 takes a few milliseconds. Sign-ins arrive every 3 ms from before the
    // change until well after it, so some read the old hash just before the change writes the
    // new one and try to start their sessions just after it.
    let (app, _fake, _sink) = app_for(
        backend,
        &[
            ("AUTHVAULT_BCRYPT_COST", "6"),
            ("AUTHVAULT_SIGNIN_MAX_FAILURES", "1000"),
            ("AUTHVAULT_SIGNIN_MAX_FAILURES_PER_EMAIL", "1000"),
        ],
    )
    .await;
    let user = app.signed_up_user().await;
    let racers = 40;
    let barrier = Arc::new(Barrier::new(racers + 1));
    let tasks: Vec<_> = (0..racers)
        .map(|i| {
            let barrier = barrier.clone();
            let url = app.url("/api/auth/signin");
            let body = json!({"email": user.email, "password": user.password, "client": "app"});
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                barrier.wait().await;
                tokio::time::sleep(Duration::from_millis(3 * i as u64)).await;
                let res = client.post(url).json(&body).send().await.unwrap();
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap_or(Value::Null);
                (status, body)
            })
        })
        .collect();
    barrier.wait().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let change = app
        .send_bearer(
            Method::POST,
            "/api/user/password",
            &user.token,
            Some(
                &json!({"currentPassword": user.password, "newPassword": "a brand new passphrase"}),
            ),
        )
        .await;
    assert_eq!(change.status(), 204);

    let mut started = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert!(
            matches!(status, 200 | 401),
            "a racing sign-in answered {status}"
        );
        if status != 200 {
            continue;
        }
        started += 1;
        let access = body["session"]["accessToken"].as_str().unwrap();
        let refresh = body["session"]["refreshToken"].as_str().unwrap();
        assert_eq!(
            app.get_bearer("/api/user", access).await.status(),
            401,
            "a session started with the old password works after the change answered"
        );
        let refreshed = app
            .post_json("/api/auth/refresh", &json!({"refreshToken": refresh}))
            .await;
        assert_eq!(refreshed.status(), 401);
    }
    // The session that changed the password is the only one left.
    assert_eq!(app.get_bearer("/api/user", &user.token).await.status(), 200);
    let sessions: Value = app
        .get_bearer("/api/user/sessions", &user.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        sessions["sessions"].as_array().unwrap().len(),
        1,
        "{started} racing sign-ins succeeded; none may have a live session"
    );
}

async fn a_refresh_by_the_cookie_always_answers_as_a_browser(backend: Backend) {
    let (app, _fake, _sink) = app_for(backend, &[]).await;
    let user = app.signed_up_user().await;
    let res = app.signin(&user.email, &user.password).await;
    let refresh_cookie = cookie_pair(set_cookie(res.headers(), "authvault.refresh").unwrap());
    let (csrf, csrf_cookie) = app.csrf().await;

    let res = app
        .client
        .post(app.url("/api/auth/refresh"))
        .header("cookie", format!("{refresh_cookie}; {csrf_cookie}"))
        .header("x-csrf-token", csrf)
        .json(&json!({"client": "app"}))
        .send()
        .await
        .unwrap();

    assert_eq!(res.status(), 200);
    let new_cookie = set_cookie(res.headers(), "authvault.refresh").map(str::to_owned);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["session"].get("refreshToken").is_none(),
        "page scripts must not read the browser's refresh token: {body}"
    );
    assert!(body["session"].get("refreshExpiresAt").is_none());
    assert!(
        new_cookie.is_some(),
        "the new refresh token is in the cookie"
    );
}

async fn a_replayed_refresh_token_mails_one_notice_per_session(backend: Backend) {
    let (app, _fake, sink) = app_for(backend, &[("AUTHVAULT_REFRESH_GRACE_SECS", "0")]).await;
    let user = app.signed_up_user().await;
    let signin: Value = app
        .post_json(
            "/api/auth/signin",
            &json!({"email": user.email, "password": user.password, "client": "app"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let spent = signin["session"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = app
        .post_json("/api/auth/refresh", &json!({"refreshToken": spent}))
        .await;
    assert_eq!(rotated.status(), 200);

    // The stolen, spent token comes back many times, some at once.
    let statuses = burst(
        &app,
        8,
        "127.0.0.1",
        "/api/auth/refresh",
        json!({"refreshToken": spent}),
    )
    .await;
    for _ in 0..4 {
        let again = app
            .post_json("/api/auth/refresh", &json!({"refreshToken": spent}))
            .await;
        statuses_are_refusals(&[again.status().as_u16()]);
    }
    statuses_are_refusals(&statuses);
    assert!(count(&statuses, 401) == 8);

    // Give any stray notice time to arrive, then count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let notices = subjects(&sink)
        .into_iter()
        .filter(|s| s.contains("signed-in device was signed out"))
        .count();
    assert_eq!(notices, 1, "{:?}", subjects(&sink));
}

fn statuses_are_refusals(statuses: &[u16]) {
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
}

async fn email_links_never_go_to_an_app_scheme(backend: Backend) {
    let allow = format!("http://app.test,{APP_SCHEME}");
    let (app, _fake, sink) = app_for(
        backend,
        &[
            ("AUTHVAULT_CALLBACK_ALLOWLIST", allow.as_str()),
            ("AUTHVAULT_APP_CALLBACKS", APP_SCHEME),
        ],
    )
    .await;
    let user = app.signed_up_user().await;
    let forgot = app
        .post_json(
            "/api/auth/password/forgot",
            &json!({"email": user.email, "redirectUrl": APP_SCHEME}),
        )
        .await;
    app.assert_problem(forgot, 400, "invalid_callback_url")
        .await;
    let verify = app
        .send_bearer(
            Method::POST,
            "/api/auth/verify-email/request",
            &user.token,
            Some(&json!({"redirectUrl": APP_SCHEME})),
        )
        .await;
    app.assert_problem(verify, 400, "invalid_callback_url")
        .await;
    // An allowed web address still works.
    let ok = app
        .post_json(
            "/api/auth/password/forgot",
            &json!({"email": user.email, "redirectUrl": "http://app.test/reset"}),
        )
        .await;
    assert_eq!(ok.status(), 202);
    let (link, _) = link_in(&sink, 1, "Reset your password").await;
    assert!(link.starts_with("http://app.test/reset?token="), "{link}");
}

async fn a_reset_or_a_password_change_spends_every_outstanding_reset_link(backend: Backend) {
    let (app, _fake, sink) = app_for(backend, &[]).await;
    let user = app.signed_up_user().await;
    let forgot = || async {
        let res = app
            .post_json("/api/auth/password/forgot", &json!({"email": user.email}))
            .await;
        assert_eq!(res.status(), 202);
    };
    forgot().await;
    let (_, first) = link_in(&sink, 1, "Reset your password").await;
    forgot().await;
    let (_, second) = link_in(&sink, 2, "Reset your password").await;
    assert_ne!(first, second);

    let reset = app
        .post_json(
            "/api/auth/password/reset",
            &json!({"token": second, "newPassword": "a brand new passphrase"}),
        )
        .await;
    assert_eq!(reset.status(), 204);
    let stale = app
        .post_json(
            "/api/auth/password/reset",
            &json!({"token": first, "newPassword": "an attacker's passphrase"}),
        )
        .await;
    app.assert_problem(stale, 400, "invalid_token").await;

    // A password change spends them too.
    forgot().await;
    let (_, third) = link_in(&sink, 4, "Reset your password").await;
    let signin: Value = app
        .signin(&user.email, "a brand new passphrase")
        .await
        .json()
        .await
        .unwrap();
    let token = signin["session"]["accessToken"].as_str().unwrap();
    let change = app
        .send_bearer(
            Method::POST,
            "/api/user/password",
            token,
            Some(&json!({"currentPassword": "a brand new passphrase", "newPassword": "the third passphrase"})),
        )
        .await;
    assert_eq!(change.status(), 204);
    let stale = app
        .post_json(
            "/api/auth/password/reset",
            &json!({"token": third, "newPassword": "an attacker's passphrase"}),
        )
        .await;
    app.assert_problem(stale, 400, "invalid_token").await;
    assert_eq!(
        app.signin(&user.email, "the third passphrase")
            .await
            .status(),
        200
    );
}
