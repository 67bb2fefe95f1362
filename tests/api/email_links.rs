//! Passwordless sign-in by emailed link, against a real SMTP server: the same answer for every
//! address (and mail only where it should go), single use, expiry, tokens of one kind only,
//! the sign-up switch, the per-address limit, the redirect allow-list, the PKCE binding against
//! login CSRF, the second factor, and the first proof of the address.

use std::time::Duration;

use authvault::store::TokenKind;
use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::{
    email::app_with_mail,
    helpers::{smtp::*, *},
};

backend_tests!(
    a_link_signs_in_an_existing_account_once_and_proves_its_address,
    every_address_gets_the_same_answer_and_mail_goes_only_where_it_should,
    a_new_address_gets_a_password_less_account_unless_sign_up_is_off,
    a_link_lives_its_ttl_and_is_of_its_own_kind_only,
    five_links_an_hour_per_address_and_the_rest_are_answered_alike,
    links_point_only_to_allowed_web_pages,
    a_link_asked_with_a_code_challenge_needs_its_verifier,
    a_user_with_mfa_on_gets_the_second_step,
    a_link_sign_in_removes_what_was_attached_while_the_address_was_unproven,
    without_mail_delivery_the_link_is_not_offered,
);

const SPA: &str = "http://app.test";
// RFC 7636, appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const ACCEPTED: &str = "If the address can receive mail from us, a sign-in link is on its way.";

async fn request(app: &TestApp, body: &Value) -> Response {
    app.post_json("/api/auth/email-link", body).await
}

/// Asks for a link to `email` and checks the one answer every address gets.
async fn ask(app: &TestApp, email: &str) {
    let res = request(
        app,
        &json!({"email": email, "redirectUrl": "http://app.test/link"}),
    )
    .await;
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"message": ACCEPTED}));
}

async fn verify(app: &TestApp, body: &Value) -> Response {
    app.post_json("/api/auth/email-link/verify", body).await
}

/// The newest mail's link token, once `n` mails have arrived.
async fn nth_token(sink: &SmtpSink, n: usize) -> String {
    let mails = sink.wait_for(n, Duration::from_secs(10)).await;
    token_link(&mails[n - 1]).1
}

/// Waits a little for mail that should not come, then counts what did.
async fn settled_count(sink: &SmtpSink) -> usize {
    tokio::time::sleep(Duration::from_millis(700)).await;
    sink.messages().len()
}

async fn a_link_signs_in_an_existing_account_once_and_proves_its_address(backend: Backend) {
    let (app, sink) = app_with_mail(backend, &[]).await;
    let user = app.signed_up_user().await;
    ask(&app, &user.email).await;
    let mails = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(header(&mails[0], "To").unwrap(), user.email);
    assert_eq!(
        header(&mails[0], "Subject").unwrap(),
        "Sign in to authvault"
    );
    let (link, token) = token_link(&mails[0]);
    assert!(link.starts_with("http://app.test/link?token="), "{link}");
    assert!(decoded_part(&mails[0], "text/plain")
        .unwrap()
        .contains("15 minutes"));

    let res = verify(&app, &json!({"token": token})).await;
    assert_eq!(res.status(), 200);
    let cookie = cookie_pair(set_cookie(res.headers(), "authvault.session").expect("a cookie"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["id"], user.id.as_str());
    assert!(body["user"]["emailVerified"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(body["user"]["providers"], json!(["credentials"]));
    let session: Value = app
        .client
        .get(app.url("/api/auth/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["amr"], json!(["email"]));

    let again = verify(&app, &json!({"token": token})).await;
    app.assert_problem(again, 400, "invalid_token").await;

    // An app client gets its tokens in the body.
    ask(&app, &user.email).await;
    let token = nth_token(&sink, 2).await;
    let res = verify(&app, &json!({"token": token, "client": "app"})).await;
    assert_eq!(res.status(), 200);
    assert!(set_cookie(res.headers(), "authvault.session").is_none());
    let body: Value = res.json().await.unwrap();
    assert!(body["session"]["refreshToken"].as_str().is_some());
}

async fn every_address_gets_the_same_answer_and_mail_goes_only_where_it_should(backend: Backend) {
    let (app, sink) = app_with_mail(backend, &[("AUTHVAULT_EMAIL_LINK_SIGNUP", "false")]).await;
    let user = app.signed_up_user().await;
    ask(&app, "nobody@example.com").await;
    ask(&app, &user.email).await;
    ask(&app, "NOBODY@example.com").await;
    let mails = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        settled_count(&sink).await,
        1,
        "only the account's address gets mail"
    );
    assert_eq!(header(&mails[0], "To").unwrap(), user.email);
    // The answer is given before the lookup: an unknown address is not slower to answer.
    let started = std::time::Instant::now();
    ask(&app, "someone-else@example.com").await;
    assert!(started.elapsed() < Duration::from_secs(2));
    // A malformed address is refused outright.
    let res = request(&app, &json!({"email": "not an address"})).await;
    app.assert_problem(res, 400, "validation_failed").await;
}

async fn a_new_address_gets_a_password_less_account_unless_sign_up_is_off(backend: Backend) {
    let (app, sink) = app_with_mail(backend, &[]).await;
    ask(&app, "grace.hopper@example.com").await;
    let token = nth_token(&sink, 1).await;
    let res = verify(&app, &json!({"token": token, "client": "app"})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let user = &body["user"];
    assert_eq!(user["email"], "grace.hopper@example.com");
    assert_eq!(user["name"], "grace.hopper");
    assert_eq!(user["providers"], json!(["email"]));
    assert!(user["emailVerified"].as_str().is_some());
    // No password was set: a password sign-in fails like any wrong one.
    let res = app
        .signin("grace.hopper@example.com", "correct horse battery")
        .await;
    app.assert_problem(res, 401, "invalid_credentials").await;
    // The next link signs the same account in.
    ask(&app, "grace.hopper@example.com").await;
    let token = nth_token(&sink, 2).await;
    let res = verify(&app, &json!({"token": token, "client": "app"})).await;
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["user"]["id"], user["id"]);

    // With sign-up off, a link sent earlier to a new address creates nothing either.
    ask(&app, "late@example.com").await;
    let token = nth_token(&sink, 3).await;
    let db = app.db.url.clone();
    let off = spawn_app_on(
        Database::at(db),
        &[
            ("AUTHVAULT_EMAIL_LINK_SIGNUP", "false"),
            ("AUTHVAULT_SMTP_URL", &sink.url()),
        ],
    )
    .await;
    let res = verify(&off, &json!({"token": token})).await;
    off.assert_problem(res, 400, "invalid_token").await;
    let email = authvault::domain::Email::parse("late@example.com").unwrap();
    assert!(off.store.user_by_email(&email).await.unwrap().is_none());
}

async fn a_link_lives_its_ttl_and_is_of_its_own_kind_only(backend: Backend) {
    let (app, sink) = app_with_mail(backend, &[("AUTHVAULT_EMAIL_LINK_TTL_SECS", "120")]).await;
    let user = app.signed_up_user().await;
    ask(&app, &user.email).await;
    let token = nth_token(&sink, 1).await;
    let hash = authvault::random::token_hash(&token);
    let now = authvault::clock::now();
    let kind = TokenKind::EmailSignIn;
    let store = &app.store;
    assert!(store
        .peek_token(kind, &hash, now + Duration::from_secs(110))
        .await
        .unwrap()
        .is_some());
    assert!(store
        .peek_token(kind, &hash, now + Duration::from_secs(121))
        .await
        .unwrap()
        .is_none());

    // A sign-in link neither verifies an address nor resets a password...
    let res = app
        .post_json("/api/auth/verify-email", &json!({"token": token}))
        .await;
    app.assert_problem(res, 400, "invalid_token").await;
    let res = app
        .post_json(
            "/api/auth/password/reset",
            &json!({"token": token, "newPassword": "a brand new passphrase"}),
        )
        .await;
    app.assert_problem(res, 400, "invalid_token").await;
    // ...and still signs in, since those tries did not spend it.
    assert_eq!(verify(&app, &json!({"token": token})).await.status(), 200);

    // A reset link and a verification link never sign in.
    let res = app
        .post_json(
            "/api/auth/password/forgot",
            &json!({"email": user.email, "redirectUrl": SPA}),
        )
        .await;
    assert_eq!(res.status(), 202);
    let reset = nth_token(&sink, 2).await;
    let res = verify(&app, &json!({"token": reset})).await;
    app.assert_problem(res, 400, "invalid_token").await;
    let fresh = app.signed_up_user().await;
    let res = app
        .send_bearer(
            Method::POST,
            "/api/auth/verify-email/request",
            &fresh.token,
            None,
        )
        .await;
    assert_eq!(res.status(), 202);
    let verification = nth_token(&sink, 3).await;
    let res = verify(&app, &json!({"token": verification})).await;
    app.assert_problem(res, 400, "invalid_token").await;
    for token in ["", "x", &"y".repeat(300)] {
        let res = verify(&app, &json!({"token": token})).await;
        assert_eq!(res.status(), 400);
    }
}

async fn five_links_an_hour_per_address_and_the_rest_are_answered_alike(backend: Backend) {
    let (app, sink) = app_with_mail(backend, &[]).await;
    let user = app.signed_up_user().await;
    for _ in 0..7 {
        ask(&app, &user.email).await;
    }
    sink.wait_for(5, Duration::from_secs(10)).await;
    assert_eq!(settled_count(&sink).await, 5);
    // Another address has its own budget.
    ask(&app, "other@example.com").await;
    sink.wait_for(6, Duration::from_secs(10)).await;
}

async fn links_point_only_to_allowed_web_pages(backend: Backend) {
    let (app, sink) = app_with_mail(
        backend,
        &[("AUTHVAULT_APP_CALLBACKS", "com.example.app:/oauth/callback")],
    )
    .await;
    for redirect in [
        "https://evil.example/steal",
        "com.example.app:/oauth/callback",
        "javascript:alert(1)",
        "not a url",
    ] {
        let res = request(
            &app,
            &json!({"email": "ada@example.com", "redirectUrl": redirect}),
        )
        .await;
        app.assert_problem(res, 400, "invalid_callback_url").await;
    }
    assert_eq!(settled_count(&sink).await, 0);
    // Without one, the link goes to the public URL.
    ask_without_redirect(&app, "ada@example.com").await;
    let mails = sink.wait_for(1, Duration::from_secs(10)).await;
    let (link, _) = token_link(&mails[0]);
    assert!(link.starts_with(&format!("{PUBLIC_URL}/?token=")), "{link}");
}

async fn ask_without_redirect(app: &TestApp, email: &str) {
    let res = request(app, &json!({"email": email})).await;
    assert_eq!(res.status(), 202);
}

async fn a_link_asked_with_a_code_challenge_needs_its_verifier(backend: Backend) {
    let (app, sink) = app_with_mail(backend, &[]).await;
    let user = app.signed_up_user().await;
    let with_challenge = json!({"email": user.email, "codeChallenge": CHALLENGE});
    for (n, verifier) in [
        (1, None),
        (2, Some("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj")),
    ] {
        assert_eq!(request(&app, &with_challenge).await.status(), 202);
        let token = nth_token(&sink, n).await;
        let res = verify(&app, &json!({"token": token, "codeVerifier": verifier})).await;
        app.assert_problem(res, 400, "invalid_token").await;
        // The failure spent the link: not even the right verifier helps now.
        let res = verify(&app, &json!({"token": token, "codeVerifier": VERIFIER})).await;
        app.assert_problem(res, 400, "invalid_token").await;
    }
    assert_eq!(request(&app, &with_challenge).await.status(), 202);
    let token = nth_token(&sink, 3).await;
    let res = verify(&app, &json!({"token": token, "codeVerifier": VERIFIER})).await;
    assert_eq!(res.status(), 200);
    for challenge in ["short", &"a".repeat(44), &format!("{}=", &CHALLENGE[1..])] {
        let res = request(
            &app,
            &json!({"email": user.email, "codeChallenge": challenge}),
        )
        .await;
        app.assert_problem(res, 400, "validation_failed").await;
    }
}

async fn a_user_with_mfa_on_gets_the_second_step(backend: Backend) {
    let (app, sink) = app_with_mail(backend, &[]).await;
    let mfa = crate::mfa::mfa_user(&app).await;
    ask(&app, &mfa.user.email).await;
    // The notice that MFA went on came first.
    let mails = sink.wait_for(2, Duration::from_secs(10)).await;
    let link_mail = mails
        .iter()
        .find(|m| header(m, "Subject").unwrap() == "Sign in to authvault")
        .expect("the link mail");
    let (_, token) = token_link(link_mail);
    let res = verify(&app, &json!({"token": token})).await;
    assert_eq!(res.status(), 200);
    assert!(set_cookie(res.headers(), "authvault.session").is_none());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfaRequired"], true, "{body}");
    assert!(body.get("session").is_none());
}

async fn a_link_sign_in_removes_what_was_attached_while_the_address_was_unproven(backend: Backend) {
    let (app, sink) = app_with_mail(backend, &[]).await;
    let user = app.signed_up_user().await;
    // A GitHub identity linked while the address is unproven.
    let id: authvault::domain::UserId = user.id.parse().unwrap();
    app.store
        .link_identity(
            id,
            authvault::domain::AuthProvider::Github,
            "gh-unproven",
            authvault::clock::now(),
        )
        .await
        .unwrap();
    ask(&app, &user.email).await;
    let token = nth_token(&sink, 1).await;
    let res = verify(&app, &json!({"token": token, "client": "app"})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["providers"], json!(["credentials"]), "{body}");
    // The sign-up session ended with the clean-up; the link's own session works.
    let res = app.get_bearer("/api/user", &user.token).await;
    app.assert_problem(res, 401, "unauthenticated").await;
    let token = body["session"]["accessToken"].as_str().unwrap();
    assert_eq!(app.get_bearer("/api/user", token).await.status(), 200);
}

async fn without_mail_delivery_the_link_is_not_offered(backend: Backend) {
    // MongoDB without SMTP cannot deliver mail (SQLite falls back to the outbox).
    let app = spawn_app(backend).await;
    let providers: Value = app.get("/api/auth/providers").await.json().await.unwrap();
    match backend {
        Backend::Mongo => {
            assert!(providers.get("email").is_none(), "{providers}");
            let res = request(&app, &json!({"email": "ada@example.com"})).await;
            app.assert_problem(res, 503, "mail_unavailable").await;
        }
        Backend::Sqlite => {
            assert_eq!(providers["email"]["type"], "email", "{providers}");
            assert_eq!(providers["email"]["name"], "Email link");
        }
    }
}
