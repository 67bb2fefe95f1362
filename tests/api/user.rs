//! The signed-in user's profile, password and account.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

backend_tests!(
    get_user_returns_the_profile,
    patch_user_changes_name_and_image_and_bumps_updated_at,
    patch_user_refuses_bad_values,
    changing_the_password_needs_the_current_one,
    changing_the_password_revokes_every_other_session,
    a_first_password_needs_a_recent_sign_in,
    deleting_the_account_needs_the_password,
    deleting_the_account_removes_user_and_sessions,
    deleting_a_passwordless_account_needs_a_recent_sign_in,
);

async fn get_user_returns_the_profile(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    let res = app.get_bearer("/api/user", &user.token).await;

    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["id"], user.id.as_str());
    assert_eq!(body["email"], user.email.as_str());
    assert_eq!(body["name"], user.name.as_str());
    assert_eq!(body["providers"], json!(["credentials"]));
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "createdAt",
            "email",
            "emailVerified",
            "id",
            "image",
            "mfaEnabled",
            "name",
            "providers",
            "updatedAt"
        ]
    );
    assert_eq!(body["mfaEnabled"], false);
}

async fn patch_user_changes_name_and_image_and_bumps_updated_at(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    let before: Value = app
        .get_bearer("/api/user", &user.token)
        .await
        .json()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;

    let res = app
        .send_bearer(
            Method::PATCH,
            "/api/user",
            &user.token,
            Some(&json!({"name": "  Grace Hopper ", "image": "https://example.com/g.png"})),
        )
        .await;

    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["name"], "Grace Hopper");
    assert_eq!(body["image"], "https://example.com/g.png");
    assert_ne!(body["updatedAt"], before["updatedAt"]);
    assert_eq!(body["createdAt"], before["createdAt"]);

    let cleared: Value = app
        .send_bearer(
            Method::PATCH,
            "/api/user",
            &user.token,
            Some(&json!({"image": null})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["image"], Value::Null);
    assert_eq!(
        cleared["name"], "Grace Hopper",
        "an absent field is left as it is"
    );
}

async fn patch_user_refuses_bad_values(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    for body in [
        json!({"name": ""}),
        json!({"name": "x".repeat(101)}),
        json!({"image": "javascript:alert(1)"}),
        json!({"image": "not a url"}),
        json!({"image": format!("https://example.com/{}", "a".repeat(2100))}),
        json!({"email": "new@example.com"}),
        json!({"name": 42}),
        json!({"name": {"$set": "x"}}),
    ] {
        let res = app
            .send_bearer(Method::PATCH, "/api/user", &user.token, Some(&body))
            .await;
        app.assert_problem(res, 400, "validation_failed").await;
    }
    let unchanged: Value = app
        .get_bearer("/api/user", &user.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unchanged["name"], user.name.as_str());
}

async fn changing_the_password_needs_the_current_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    let change = |body: Value| {
        let app = &app;
        let token = user.token.clone();
        async move {
            app.send_bearer(Method::POST, "/api/user/password", &token, Some(&body))
                .await
        }
    };

    let missing = change(json!({"newPassword": "a brand new password"})).await;
    let problem = app.assert_problem(missing, 400, "validation_failed").await;
    assert!(problem.errors.unwrap().contains_key("currentPassword"));

    let wrong =
        change(json!({"currentPassword": "nope nope", "newPassword": "a brand new password"}))
            .await;
    app.assert_problem(wrong, 401, "invalid_credentials").await;

    let weak = change(json!({"currentPassword": user.password, "newPassword": "short"})).await;
    app.assert_problem(weak, 400, "validation_failed").await;

    let ok =
        change(json!({"currentPassword": user.password, "newPassword": "a brand new password"}))
            .await;
    assert_eq!(ok.status(), 204);
    assert_eq!(app.signin(&user.email, &user.password).await.status(), 401);
    assert_eq!(
        app.signin(&user.email, "a brand new password")
            .await
            .status(),
        200
    );
}

async fn changing_the_password_revokes_every_other_session(backend: Backend) {
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
            Method::POST,
            "/api/user/password",
            &user.token,
            Some(&json!({"currentPassword": user.password, "newPassword": "a brand new password"})),
        )
        .await;

    assert_eq!(res.status(), 204);
    assert_eq!(app.get_bearer("/api/user", &user.token).await.status(), 200);
    assert_eq!(app.get_bearer("/api/user", other_token).await.status(), 401);
}

async fn a_first_password_needs_a_recent_sign_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, stale) = app.passwordless_user(Duration::from_secs(11 * 60)).await;
    let (user, fresh) = app.passwordless_user(Duration::from_secs(60)).await;
    let body = json!({"newPassword": "my first password"});

    let res = app
        .send_bearer(Method::POST, "/api/user/password", &stale, Some(&body))
        .await;
    app.assert_problem(res, 401, "reauth_required").await;

    let res = app
        .send_bearer(Method::POST, "/api/user/password", &fresh, Some(&body))
        .await;
    assert_eq!(res.status(), 204);
    let me: Value = app
        .get_bearer("/api/user", &fresh)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["providers"], json!(["credentials"]));
    assert_eq!(
        app.signin(user.email.as_str(), "my first password")
            .await
            .status(),
        200
    );
}

async fn deleting_the_account_needs_the_password(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    let missing = app
        .send_bearer(Method::DELETE, "/api/user", &user.token, None)
        .await;
    app.assert_problem(missing, 400, "validation_failed").await;

    let wrong = app
        .send_bearer(
            Method::DELETE,
            "/api/user",
            &user.token,
            Some(&json!({"password": "not the password"})),
        )
        .await;
    app.assert_problem(wrong, 401, "invalid_credentials").await;
    assert_eq!(app.get_bearer("/api/user", &user.token).await.status(), 200);
}

async fn deleting_the_account_removes_user_and_sessions(backend: Backend) {
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
            Method::DELETE,
            "/api/user",
            &user.token,
            Some(&json!({"password": user.password})),
        )
        .await;

    assert_eq!(res.status(), 204);
    assert!(set_cookie(res.headers(), "authvault.session")
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(app.get_bearer("/api/user", &user.token).await.status(), 401);
    assert_eq!(app.get_bearer("/api/user", other_token).await.status(), 401);
    assert_eq!(app.signin(&user.email, &user.password).await.status(), 401);
    assert!(app
        .store
        .user_by_id(user.id.parse().unwrap())
        .await
        .unwrap()
        .is_none());
    // The address is free again.
    assert_eq!(
        app.signup("Again", &user.email, "correct horse battery")
            .await
            .status(),
        201
    );
}

async fn deleting_a_passwordless_account_needs_a_recent_sign_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, stale) = app.passwordless_user(Duration::from_secs(11 * 60)).await;
    let (user, fresh) = app.passwordless_user(Duration::ZERO).await;

    let res = app
        .send_bearer(Method::DELETE, "/api/user", &stale, None)
        .await;
    app.assert_problem(res, 401, "reauth_required").await;

    let res = app
        .send_bearer(Method::DELETE, "/api/user", &fresh, None)
        .await;
    assert_eq!(res.status(), 204);
    assert!(app.store.user_by_id(user.id).await.unwrap().is_none());
}
