//! Refresh tokens (rotation, reuse detection, grace), cookie and app clients, the device list.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::*;

backend_tests!(
    apps_get_tokens_in_the_body_and_browsers_in_cookies,
    a_refresh_rotates_the_token_and_a_reused_one_revokes_the_session,
    within_the_grace_period_a_spent_token_gets_its_successor_again,
    concurrent_refreshes_with_one_token_leave_one_live_chain,
    browsers_refresh_with_the_cookie_and_the_csrf_token,
    expired_unknown_and_signed_out_refresh_tokens_are_401,
    the_device_list_shows_and_ends_only_the_users_own_sessions,
    a_reuse_on_one_instance_revokes_the_session_on_the_other,
);

async fn app_signin(app: &TestApp, user: &TestUser) -> Value {
    let res = app
        .post_json(
            "/api/auth/signin",
            &json!({"email": user.email, "password": user.password, "client": "app"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("set-cookie").is_none(),
        "apps get no cookies"
    );
    res.json().await.unwrap()
}

async fn refresh(app: &TestApp, token: &str) -> Response {
    app.post_json("/api/auth/refresh", &json!({"refreshToken": token}))
        .await
}

fn refresh_token(body: &Value) -> String {
    body["session"]["refreshToken"].as_str().unwrap().to_owned()
}

fn access_token(body: &Value) -> String {
    body["session"]["accessToken"].as_str().unwrap().to_owned()
}

async fn apps_get_tokens_in_the_body_and_browsers_in_cookies(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    let body = app_signin(&app, &user).await;
    assert_eq!(refresh_token(&body).len(), 43);
    assert!(body["session"]["refreshExpiresAt"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    let browser = app.signin(&user.email, &user.password).await;
    let cookie = set_cookie(browser.headers(), "authvault.refresh").expect("refresh cookie");
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/api/auth/refresh",
        "Max-Age=2592000",
    ] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(set_cookie(browser.headers(), "authvault.session").is_some());
    let body: Value = browser.json().await.unwrap();
    assert!(
        body["session"].get("refreshToken").is_none(),
        "scripts never see it"
    );
}

async fn a_refresh_rotates_the_token_and_a_reused_one_revokes_the_session(backend: Backend) {
    let app = spawn_app_with(backend, &[("AUTHVAULT_REFRESH_GRACE_SECS", "0")]).await;
    let user = app.signed_up_user().await;
    let first = app_signin(&app, &user).await;

    let res = refresh(&app, &refresh_token(&first)).await;
    assert_eq!(res.status(), 200);
    let second: Value = res.json().await.unwrap();
    assert_ne!(refresh_token(&second), refresh_token(&first));
    assert_ne!(access_token(&second), access_token(&first));
    assert_eq!(
        app.get_bearer("/api/user", &access_token(&second))
            .await
            .status(),
        200
    );
    let third: Value = refresh(&app, &refresh_token(&second))
        .await
        .json()
        .await
        .unwrap();

    // The first token comes back: it leaked. The whole session goes.
    let reused = refresh(&app, &refresh_token(&first)).await;
    app.assert_problem(reused, 401, "refresh_reused").await;
    app.assert_problem(
        refresh(&app, &refresh_token(&third)).await,
        401,
        "invalid_refresh",
    )
    .await;
    assert_eq!(
        app.get_bearer("/api/user", &access_token(&third))
            .await
            .status(),
        401
    );
    // The user's other sessions are untouched.
    assert_eq!(app.get_bearer("/api/user", &user.token).await.status(), 200);
}

async fn within_the_grace_period_a_spent_token_gets_its_successor_again(backend: Backend) {
    let app = spawn_app(backend).await; // grace: the default 10 s
    let user = app.signed_up_user().await;
    let first = app_signin(&app, &user).await;

    let a: Value = refresh(&app, &refresh_token(&first))
        .await
        .json()
        .await
        .unwrap();
    let res = refresh(&app, &refresh_token(&first)).await;
    assert_eq!(res.status(), 200, "a second tab within grace");
    let b: Value = res.json().await.unwrap();

    assert_eq!(
        refresh_token(&a),
        refresh_token(&b),
        "both hold the one live token"
    );
    let c = refresh(&app, &refresh_token(&b)).await;
    assert_eq!(c.status(), 200);
}

async fn concurrent_refreshes_with_one_token_leave_one_live_chain(backend: Backend) {
    let app = spawn_app_with(backend, &[("AUTHVAULT_IP_RATE_LIMIT_PER_MIN", "0")]).await;
    let user = app.signed_up_user().await;
    let first = app_signin(&app, &user).await;
    let token = refresh_token(&first);

    let answers = futures_util::future::join_all((0..10).map(|_| refresh(&app, &token))).await;

    let mut successors = std::collections::BTreeSet::new();
    for res in answers {
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        successors.insert(refresh_token(&body));
    }
    assert_eq!(successors.len(), 1, "one successor, not several chains");
    let live = successors.into_iter().next().unwrap();
    assert_eq!(refresh(&app, &live).await.status(), 200);
}

async fn browsers_refresh_with_the_cookie_and_the_csrf_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    let res = app.signin(&user.email, &user.password).await;
    let refresh_cookie = cookie_pair(set_cookie(res.headers(), "authvault.refresh").unwrap());
    let (csrf, csrf_cookie) = app.csrf().await;

    let without = app
        .client
        .post(app.url("/api/auth/refresh"))
        .header("cookie", &refresh_cookie)
        .send()
        .await
        .unwrap();
    app.assert_problem(without, 403, "csrf_failed").await;

    let with = app
        .client
        .post(app.url("/api/auth/refresh"))
        .header("cookie", format!("{refresh_cookie}; {csrf_cookie}"))
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    let new_refresh = set_cookie(with.headers(), "authvault.refresh")
        .unwrap()
        .to_owned();
    assert_ne!(cookie_pair(&new_refresh), refresh_cookie);
    let session = cookie_pair(set_cookie(with.headers(), "authvault.session").unwrap());
    let body: Value = with.json().await.unwrap();
    assert!(body["session"].get("refreshToken").is_none());
    let me = app
        .client
        .get(app.url("/api/user"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
}

async fn expired_unknown_and_signed_out_refresh_tokens_are_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    app.assert_problem(refresh(&app, "never-issued").await, 401, "invalid_refresh")
        .await;
    let none = app
        .client
        .post(app.url("/api/auth/refresh"))
        .send()
        .await
        .unwrap();
    app.assert_problem(none, 401, "invalid_refresh").await;

    // A session whose lifetime ran out, stored as the server stores them.
    let now = authvault::clock::now();
    let expired = authvault::store::SessionRecord {
        id: uuid::Uuid::new_v4(),
        user_id: user.id.parse().unwrap(),
        created_at: now - Duration::from_secs(7200),
        last_used_at: now - Duration::from_secs(7200),
        expires_at: now - Duration::from_secs(60),
        auth_time: now - Duration::from_secs(7200),
        amr: authvault::domain::Amr::one(authvault::domain::AuthMethod::Pwd),
        user_agent: None,
        ip: None,
    };
    let old_token = "expired-refresh-token-0123456789abcdefghijk";
    let hash: String = {
        use sha2::{Digest, Sha256};
        Sha256::digest(old_token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    app.store
        .create_session_with_refresh(&expired, &hash, 0)
        .await
        .unwrap();
    app.assert_problem(refresh(&app, old_token).await, 401, "invalid_refresh")
        .await;

    // Signing out ends the session, so its refresh token stops working too.
    let body = app_signin(&app, &user).await;
    let res = app
        .send_bearer(
            Method::POST,
            "/api/auth/signout",
            &access_token(&body),
            None,
        )
        .await;
    assert_eq!(res.status(), 204);
    app.assert_problem(
        refresh(&app, &refresh_token(&body)).await,
        401,
        "invalid_refresh",
    )
    .await;
}

async fn the_device_list_shows_and_ends_only_the_users_own_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    let other_device = app_signin(&app, &user).await;
    let stranger = app.signed_up_user().await;

    let res = app.get_bearer("/api/user/sessions", &user.token).await;
    assert_eq!(res.status(), 200);
    let list: Value = res.json().await.unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let other = sessions.iter().find(|s| s["current"] == false).unwrap();
    for field in ["createdAt", "lastUsedAt", "expiresAt"] {
        assert!(other[field].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(other["ip"], "127.0.0.1");
    let other_id = other["id"].as_str().unwrap().to_owned();

    let stranger_try = app
        .send_bearer(
            Method::DELETE,
            &format!("/api/user/sessions/{other_id}"),
            &stranger.token,
            None,
        )
        .await;
    app.assert_problem(stranger_try, 404, "not_found").await;
    let garbage = app
        .send_bearer(
            Method::DELETE,
            "/api/user/sessions/not-a-uuid",
            &user.token,
            None,
        )
        .await;
    app.assert_problem(garbage, 404, "not_found").await;

    let res = app
        .send_bearer(
            Method::DELETE,
            &format!("/api/user/sessions/{other_id}"),
            &user.token,
            None,
        )
        .await;
    assert_eq!(res.status(), 204);
    assert_eq!(
        app.get_bearer("/api/user", &access_token(&other_device))
            .await
            .status(),
        401
    );
    app.assert_problem(
        refresh(&app, &refresh_token(&other_device)).await,
        401,
        "invalid_refresh",
    )
    .await;
    let list: Value = app
        .get_bearer("/api/user/sessions", &user.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
}

async fn a_reuse_on_one_instance_revokes_the_session_on_the_other(backend: Backend) {
    let a = spawn_app_with(backend, &[("AUTHVAULT_REFRESH_GRACE_SECS", "0")]).await;
    let b = spawn_app_on(a.db.clone(), &[("AUTHVAULT_REFRESH_GRACE_SECS", "0")]).await;
    let user = a.signed_up_user().await;
    let first = app_signin(&a, &user).await;

    let second: Value = refresh(&a, &refresh_token(&first))
        .await
        .json()
        .await
        .unwrap();
    b.assert_problem(
        refresh(&b, &refresh_token(&first)).await,
        401,
        "refresh_reused",
    )
    .await;

    assert_eq!(
        a.get_bearer("/api/user", &access_token(&second))
            .await
            .status(),
        401
    );
    a.assert_problem(
        refresh(&a, &refresh_token(&second)).await,
        401,
        "invalid_refresh",
    )
    .await;
}
