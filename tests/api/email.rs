//! Email verification and password recovery against a real local SMTP server.

use std::time::Duration;

use authvault::store::TokenKind;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{providers::*, smtp::*, *};

backend_tests!(
    a_verification_link_proves_the_address_once,
    verification_links_must_go_to_allowed_places,
    forged_and_expired_tokens_are_400_invalid_token,
    a_forgotten_password_is_reset_through_the_mailed_link,
    forgot_answers_the_same_for_unknown_addresses_and_mails_only_real_ones,
    mail_requests_are_limited_per_address,
    common_passwords_are_refused,
    a_vouched_provider_takes_back_an_account_registered_by_someone_else,
    linking_to_a_verified_account_keeps_its_password_and_mails_a_notice,
    an_operators_template_directory_replaces_a_built_in_mail,
);

pub(crate) async fn app_with_mail(backend: Backend, extra: &[(&str, &str)]) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start(true);
    let url = sink.url();
    let mut vars = vec![
        ("AUTHVAULT_SMTP_URL", url.as_str()),
        ("AUTHVAULT_MAIL_FROM", "authvault <no-reply@authvault.test>"),
        ("AUTHVAULT_IP_RATE_LIMIT_PER_MIN", "0"),
    ];
    vars.extend_from_slice(extra);
    (spawn_app_with(backend, &vars).await, sink)
}

async fn a_verification_link_proves_the_address_once(backend: Backend) {
    let (app, sink) = app_with_mail(backend, &[]).await;
    let user = app.signed_up_user().await;
    let me: Value = app
        .get_bearer("/api/user", &user.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["emailVerified"], Value::Null);

    let res = app
        .send_bearer(
            Method::POST,
            "/api/auth/verify-email/request",
            &user.token,
            Some(&json!({"redirectUrl": "http://app.test/verify"})),
        )
        .await;
    assert_eq!(res.status(), 202);
    let mails = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(header(&mails[0], "To").unwrap(), user.email);
    assert!(header(&mails[0], "From")
        .unwrap()
        .contains("no-reply@authvault.test"));
    assert!(decoded_part(&mails[0], "text/html")
        .unwrap()
        .contains("http://app.test/verify?token="));
    let (link, token) = token_link(&mails[0]);
    assert!(link.starts_with("http://app.test/verify?token="));
    assert_eq!(token.len(), 43, "32 random bytes, base64url");

    let res = app
        .post_json("/api/auth/verify-email", &json!({"token": token}))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["emailVerified"].as_str().unwrap().ends_with('Z'));
    let again = app
        .post_json("/api/auth/verify-email", &json!({"token": token}))
        .await;
    app.assert_problem(again, 400, "invalid_token").await;
    let res = app
        .send_bearer(
            Method::POST,
            "/api/auth/verify-email/request",
            &user.token,
            None,
        )
        .await;
    app.assert_problem(res, 409, "already_verified").await;
}

async fn an_operators_template_directory_replaces_a_built_in_mail(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("verify_email.subject.txt"),
        "Confirm your address for {{ service }}",
    )
    .unwrap();
    let templates = dir.path().display().to_string();
    let (app, sink) = app_with_mail(
        backend,
        &[
            ("AUTHVAULT_MAIL_TEMPLATES", &templates),
            ("AUTHVAULT_MFA_ISSUER", "Example Vault"),
        ],
    )
    .await;
    let user = app.signed_up_user().await;

    let res = app
        .send_bearer(
            Method::POST,
            "/api/auth/verify-email/request",
            &user.token,
            None,
        )
        .await;
    assert_eq!(res.status(), 202);

    let mails = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        header(&mails[0], "Subject").as_deref(),
        Some("Confirm your address for Example Vault")
    );
    // The parts it did not replace are the built-in ones, link and all.
    let text = decoded_part(&mails[0], "text/plain").unwrap();
    assert!(
        text.starts_with("Please confirm that this address"),
        "{text}"
    );
    let (_, token) = token_link(&mails[0]);
    let res = app
        .post_json("/api/auth/verify-email", &json!({"token": token}))
        .await;
    assert_eq!(res.status(), 200);
}

async fn verification_links_must_go_to_allowed_places(backend: Backend) {
    let (app, sink) = app_with_mail(backend, &[]).await;
    let user = app.signed_up_user().await;

    for bad in ["https://evil.example/verify", "javascript:alert(1)", "nope"] {
        let res = app
            .send_bearer(
                Method::POST,
                "/api/auth/verify-email/request",
                &user.token,
                Some(&json!({"redirectUrl": bad})),
            )
            .await;
        app.assert_problem(res, 400, "invalid_callback_url").await;
        let res = app
            .post_json(
                "/api/auth/password/forgot",
                &json!({"email": user.email, "redirectUrl": bad}),
            )
            .await;
        app.assert_problem(res, 400, "invalid_callback_url").await;
    }
    let res = app
        .send_bearer(
            Method::POST,
            "/api/auth/verify-email/request",
            &user.token,
            None,
        )
        .await;
    assert_eq!(res.status(), 202);
    let (link, _) = token_link(&sink.wait_for(1, Duration::from_secs(10)).await[0]);
    assert!(link.starts_with(&format!("{PUBLIC_URL}/?token=")), "{link}");
}

async fn forged_and_expired_tokens_are_400_invalid_token(backend: Backend) {
    let (app, _sink) = app_with_mail(backend, &[]).await;
    let user = app.signed_up_user().await;
    let id = user.id.parse().unwrap();
    // A token that expired a minute ago, put straight into the store as the server would.
    let expired = "expired-token-0123456789abcdefghijklmnopqr";
    let hash: String = Sha256::digest(expired.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let past = authvault::clock::now() - Duration::from_secs(60);
    for kind in [TokenKind::VerifyEmail, TokenKind::PasswordReset] {
        app.store
            .put_token(kind, &hash, Some(id), &user.email, past)
            .await
            .unwrap();
    }

    for token in ["forged-token", "", &"x".repeat(300), expired] {
        let res = app
            .post_json("/api/auth/verify-email", &json!({"token": token}))
            .await;
        app.assert_problem(res, 400, "invalid_token").await;
        let res = app
            .post_json(
                "/api/auth/password/reset",
                &json!({"token": token, "newPassword": "a long new password"}),
            )
            .await;
        app.assert_problem(res, 400, "invalid_token").await;
    }
    assert_eq!(app.signin(&user.email, &user.password).await.status(), 200);
}

async fn a_forgotten_password_is_reset_through_the_mailed_link(backend: Backend) {
    let (app, sink) = app_with_mail(backend, &[]).await;
    let user = app.signed_up_user().await;
    let other_session: Value = app
        .signin(&user.email, &user.password)
        .await
        .json()
        .await
        .unwrap();
    let other_token = other_session["session"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();

    let res = app
        .post_json(
            "/api/auth/password/forgot",
            &json!({"email": user.email.to_uppercase(), "redirectUrl": "http://app.test/reset"}),
        )
        .await;
    assert_eq!(res.status(), 202);
    let mails = sink.wait_for(1, Duration::from_secs(10)).await;
    let (link, token) = token_link(&mails[0]);
    assert!(link.starts_with("http://app.test/reset?token="));

    let weak = app
        .post_json(
            "/api/auth/password/reset",
            &json!({"token": token, "newPassword": "password"}),
        )
        .await;
    app.assert_problem(weak, 400, "validation_failed").await;
    let res = app
        .post_json(
            "/api/auth/password/reset",
            &json!({"token": token, "newPassword": "a brand new passphrase"}),
        )
        .await;
    assert_eq!(res.status(), 204, "the token survived the weak attempt");

    for token in [&user.token, &other_token] {
        assert_eq!(
            app.get_bearer("/api/user", token).await.status(),
            401,
            "every session ended"
        );
    }
    assert_eq!(app.signin(&user.email, &user.password).await.status(), 401);
    let res = app.signin(&user.email, "a brand new passphrase").await;
    assert_eq!(res.status(), 200);
    let me: Value = res.json().await.unwrap();
    assert!(
        me["user"]["emailVerified"].is_string(),
        "the link proved the address"
    );
    let reuse = app
        .post_json(
            "/api/auth/password/reset",
            &json!({"token": token, "newPassword": "another new passphrase"}),
        )
        .await;
    app.assert_problem(reuse, 400, "invalid_token").await;
    let mails = sink.wait_for(2, Duration::from_secs(10)).await;
    assert!(header(&mails[1], "Subject")
        .unwrap()
        .contains("password was changed"));
}

async fn forgot_answers_the_same_for_unknown_addresses_and_mails_only_real_ones(backend: Backend) {
    let (app, sink) = app_with_mail(backend, &[]).await;
    let user = app.signed_up_user().await;

    let known = app
        .post_json("/api/auth/password/forgot", &json!({"email": user.email}))
        .await;
    let unknown = app
        .post_json(
            "/api/auth/password/forgot",
            &json!({"email": "nobody@example.com"}),
        )
        .await;

    assert_eq!(known.status(), 202);
    assert_eq!(unknown.status(), 202);
    let strip = |h: &reqwest::header::HeaderMap| {
        let mut names: Vec<String> = h
            .keys()
            .map(|k| k.to_string())
            .filter(|k| k != "date")
            .collect();
        names.sort();
        names
    };
    assert_eq!(strip(known.headers()), strip(unknown.headers()));
    assert_eq!(known.text().await.unwrap(), unknown.text().await.unwrap());
    let mails = sink.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.messages().len(), 1, "only the real account got mail");
    assert_eq!(header(&mails[0], "To").unwrap(), user.email);
    let bad = app
        .post_json(
            "/api/auth/password/forgot",
            &json!({"email": "not an email"}),
        )
        .await;
    app.assert_problem(bad, 400, "validation_failed").await;
}

async fn mail_requests_are_limited_per_address(backend: Backend) {
    let (app, _sink) = app_with_mail(backend, &[]).await;

    for _ in 0..5 {
        let res = app
            .post_json(
                "/api/auth/password/forgot",
                &json!({"email": "target@example.com"}),
            )
            .await;
        assert_eq!(res.status(), 202);
    }
    let res = app
        .post_json(
            "/api/auth/password/forgot",
            &json!({"email": "target@example.com"}),
        )
        .await;
    assert!(res.headers().contains_key("retry-after"));
    app.assert_problem(res, 429, "rate_limited").await;
    let other = app
        .post_json(
            "/api/auth/password/forgot",
            &json!({"email": "other@example.com"}),
        )
        .await;
    assert_eq!(other.status(), 202);
}

async fn common_passwords_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;

    for common in ["password1", "iloveyou", "Sunshine", "qwerty123"] {
        let res = app.signup("C", "common@example.com", common).await;
        let problem = app.assert_problem(res, 400, "validation_failed").await;
        assert!(
            problem.errors.unwrap()["password"][0].contains("common"),
            "{common}"
        );
    }
    let user = app.signed_up_user().await;
    let res = app
        .send_bearer(
            Method::POST,
            "/api/user/password",
            &user.token,
            Some(&json!({"currentPassword": user.password, "newPassword": "12345678"})),
        )
        .await;
    app.assert_problem(res, 400, "validation_failed").await;
}

async fn a_vouched_provider_takes_back_an_account_registered_by_someone_else(backend: Backend) {
    let (app, fake, _sink) = app_with_providers_and_mail(backend, &[]).await;
    // Someone registers the victim's address first, with a password of their own.
    let squatter = app
        .signup("Squatter", "victim@gmail.com", "squatter's password")
        .await;
    assert_eq!(squatter.status(), 201);
    let squatter: Value = squatter.json().await.unwrap();
    let squatter_token = squatter["session"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();

    fake.next_google(GoogleAccount {
        sub: "victim-sub".into(),
        email: "victim@gmail.com".into(),
        email_verified: true,
        hd: None,
        name: Some("Victim".into()),
    });
    let res = browser_sign_in(&app, "google").await;

    assert_eq!(res.status(), 302);
    let cookie = cookie_pair(set_cookie(res.headers(), "authvault.session").unwrap());
    let me: Value = app
        .client
        .get(app.url("/api/user"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], squatter["user"]["id"]);
    assert_eq!(
        me["providers"],
        json!(["google"]),
        "the unproven password is gone"
    );
    assert!(me["emailVerified"].is_string());
    assert_eq!(
        app.get_bearer("/api/user", &squatter_token).await.status(),
        401
    );
    assert_eq!(
        app.signin("victim@gmail.com", "squatter's password")
            .await
            .status(),
        401
    );
}

async fn linking_to_a_verified_account_keeps_its_password_and_mails_a_notice(backend: Backend) {
    let (app, fake, sink) = app_with_providers_and_mail(backend, &[]).await;
    let user = app.signed_up_user().await;
    app.send_bearer(
        Method::POST,
        "/api/auth/verify-email/request",
        &user.token,
        None,
    )
    .await;
    let (_, token) = token_link(&sink.wait_for(1, Duration::from_secs(10)).await[0]);
    assert_eq!(
        app.post_json("/api/auth/verify-email", &json!({"token": token}))
            .await
            .status(),
        200
    );

    fake.next_github(GithubAccount {
        id: 777,
        login: "owner".into(),
        name: None,
        email: user.email.clone(),
        verified: true,
    });
    let res = browser_sign_in(&app, "github").await;
    assert_eq!(res.status(), 302);

    let me: Value = app
        .get_bearer("/api/user", &user.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["providers"], json!(["credentials", "github"]));
    let mails = sink.wait_for(2, Duration::from_secs(10)).await;
    assert!(header(&mails[1], "Subject")
        .unwrap()
        .contains("provider was linked"));
}

mod without_smtp {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mongodb_answers_503_mail_unavailable() {
        let app = spawn_app(Backend::Mongo).await;
        let user = app.signed_up_user().await;

        let res = app
            .send_bearer(
                Method::POST,
                "/api/auth/verify-email/request",
                &user.token,
                None,
            )
            .await;
        app.assert_problem(res, 503, "mail_unavailable").await;
        let res = app
            .post_json("/api/auth/password/forgot", &json!({"email": user.email}))
            .await;
        app.assert_problem(res, 503, "mail_unavailable").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_embedded_default_writes_to_the_outbox() {
        let app = spawn_app(Backend::Sqlite).await;
        let user = app.signed_up_user().await;

        let res = app
            .send_bearer(
                Method::POST,
                "/api/auth/verify-email/request",
                &user.token,
                None,
            )
            .await;

        assert_eq!(res.status(), 202);
        let db = app.db.url.strip_prefix("sqlite://").unwrap();
        let outbox = std::path::Path::new(db).parent().unwrap().join("outbox");
        let files: Vec<_> = std::fs::read_dir(&outbox).unwrap().collect();
        assert_eq!(files.len(), 1);
        let raw = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
        let (_, token) = token_link(&raw);
        let res = app
            .post_json("/api/auth/verify-email", &json!({"token": token}))
            .await;
        assert_eq!(res.status(), 200);
    }
}
