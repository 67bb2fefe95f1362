//! Passkeys: registration and usernameless sign-in against a software authenticator
//! (`helpers::authenticator`), and every way an answer can be wrong: origin, RP ID, challenge
//! (replay), user verification, sign counter, user handle, another user's ceremony, an unknown
//! credential. Also listing, renaming, deleting (the last-sign-in-method rule, under a race),
//! MFA (a passkey asks no second factor), the first proof of the address, account deletion, and
//! a ceremony started on one instance and finished on another.

use std::{sync::Arc, time::Duration};

use authvault::store::TokenKind;
use reqwest::{Method, Response};
use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::helpers::{
    authenticator::{Answer, SoftAuthenticator},
    smtp::*,
    *,
};

backend_tests!(
    passkeys_are_off_when_the_rp_id_is_an_ip_address,
    registration_options_ask_for_a_discoverable_credential_with_user_verification,
    a_registered_passkey_signs_in_without_a_username_or_a_second_factor,
    registration_needs_a_recent_sign_in,
    registration_refuses_wrong_answers_and_spent_or_foreign_ceremonies,
    sign_in_refuses_every_wrong_answer,
    a_sign_counter_gone_backwards_is_refused_and_racing_sign_ins_count_once,
    a_user_with_totp_on_signs_in_with_a_passkey_in_one_step,
    passkeys_are_listed_renamed_and_deleted_but_never_the_last_way_in,
    racing_deletes_of_the_last_two_passkeys_leave_one,
    proving_the_address_removes_passkeys_attached_while_it_was_unproven,
    a_deleted_account_takes_its_passkeys_along,
    a_ceremony_started_on_one_instance_finishes_on_another,
    malformed_passkey_requests_are_clear_problems,
    both_passkey_sign_in_routes_count_toward_the_per_ip_limit,
);

const ORIGIN: &str = "http://app.test";
const RP_ID: &str = "app.test";

async fn passkey_app(backend: Backend) -> TestApp {
    spawn_app_with(
        backend,
        &[
            ("AUTHVAULT_WEBAUTHN_RP_ID", RP_ID),
            ("AUTHVAULT_IP_RATE_LIMIT_PER_MIN", "0"),
        ],
    )
    .await
}

async fn post_bearer(app: &TestApp, path: &str, token: &str, body: &Value) -> Response {
    app.send_bearer(Method::POST, path, token, Some(body)).await
}

/// `POST /api/user/passkeys/register/start`: (flowId, publicKey).
async fn register_start(app: &TestApp, token: &str) -> (String, Value) {
    let res = post_bearer(app, "/api/user/passkeys/register/start", token, &json!({})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    (
        body["flowId"].as_str().unwrap().to_owned(),
        body["publicKey"].clone(),
    )
}

async fn register_finish(
    app: &TestApp,
    token: &str,
    flow: &str,
    credential: &Value,
    name: Option<&str>,
) -> Response {
    let mut body = json!({"flowId": flow, "credential": credential});
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    post_bearer(app, "/api/user/passkeys/register/finish", token, &body).await
}

/// Registers a new passkey of `authenticator` for the user of `token`: its id.
async fn register(app: &TestApp, token: &str, authenticator: &mut SoftAuthenticator) -> String {
    let (flow, options) = register_start(app, token).await;
    let credential = authenticator.register(&options, &Answer::from(ORIGIN));
    let res = register_finish(app, token, &flow, &credential, Some("Laptop")).await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// `POST /api/auth/passkey/start`: (flowId, publicKey).
async fn signin_start(app: &TestApp) -> (String, Value) {
    let res = app.post_json("/api/auth/passkey/start", &json!({})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    (
        body["flowId"].as_str().unwrap().to_owned(),
        body["publicKey"].clone(),
    )
}

async fn signin_finish(app: &TestApp, flow: &str, credential: &Value) -> Response {
    app.post_json(
        "/api/auth/passkey/finish",
        &json!({"flowId": flow, "credential": credential, "client": "app"}),
    )
    .await
}

/// A passkey sign-in with credential `index` answered as `answer` says.
async fn sign_in_with(
    app: &TestApp,
    authenticator: &mut SoftAuthenticator,
    index: usize,
    answer: &Answer,
) -> Response {
    let (flow, options) = signin_start(app).await;
    let credential = authenticator.assert(index, &options, answer);
    signin_finish(app, &flow, &credential).await
}

/// The statuses the racing requests got, sorted.
async fn sorted_statuses(tasks: Vec<tokio::task::JoinHandle<u16>>) -> Vec<u16> {
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses.sort();
    statuses
}

/// Answers wrong in one way each: another origin, another RP ID, no user verification, another
/// ceremony's challenge.
fn wrong_answers() -> Vec<Answer> {
    vec![
        Answer {
            origin: "http://evil.test".into(),
            ..Answer::from(ORIGIN)
        },
        Answer {
            rp_id: Some("evil.test".into()),
            ..Answer::from(ORIGIN)
        },
        Answer {
            user_verified: false,
            ..Answer::from(ORIGIN)
        },
        Answer {
            challenge: Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
            ..Answer::from(ORIGIN)
        },
    ]
}

async fn passkey_list(app: &TestApp, token: &str) -> Vec<Value> {
    let res = app.get_bearer("/api/user/passkeys", token).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["passkeys"].as_array().unwrap().clone()
}

async fn providers_of(app: &TestApp, token: &str) -> Value {
    let me: Value = app
        .get_bearer("/api/user", token)
        .await
        .json()
        .await
        .unwrap();
    me["providers"].clone()
}

async fn passkeys_are_off_when_the_rp_id_is_an_ip_address(backend: Backend) {
    // The test default: a public URL on 127.0.0.1 and no RP ID.
    let app = spawn_app(backend).await;
    let providers: Value = app.get("/api/auth/providers").await.json().await.unwrap();
    assert!(providers.get("passkey").is_none(), "{providers}");
    let user = app.signed_up_user().await;
    let some_id = "5f2b9c1e-0000-4000-8000-000000000000";
    let finish = json!({"flowId": "x", "credential": {"id": "AAAA", "rawId": "AAAA",
        "type": "public-key", "response": {"clientDataJSON": "AAAA", "attestationObject": "AAAA",
        "authenticatorData": "AAAA", "signature": "AAAA"}}});
    for (method, path, body) in [
        (
            Method::POST,
            "/api/user/passkeys/register/start".to_owned(),
            json!({}),
        ),
        (
            Method::POST,
            "/api/user/passkeys/register/finish".to_owned(),
            finish.clone(),
        ),
        (Method::GET, "/api/user/passkeys".to_owned(), json!({})),
        (
            Method::PATCH,
            format!("/api/user/passkeys/{some_id}"),
            json!({"name": "x"}),
        ),
        (
            Method::DELETE,
            format!("/api/user/passkeys/{some_id}"),
            json!({}),
        ),
        (
            Method::POST,
            "/api/auth/passkey/start".to_owned(),
            json!({}),
        ),
        (
            Method::POST,
            "/api/auth/passkey/finish".to_owned(),
            finish.clone(),
        ),
    ] {
        let res = app
            .send_bearer(method, &path, &user.token, Some(&body))
            .await;
        app.assert_problem(res, 404, "not_found").await;
    }
    // An RP ID that is an IP address, said outright, is the same.
    let app = spawn_app_with(backend, &[("AUTHVAULT_WEBAUTHN_RP_ID", "127.0.0.1")]).await;
    let res = app.post_json("/api/auth/passkey/start", &json!({})).await;
    app.assert_problem(res, 404, "not_found").await;

    let app = passkey_app(backend).await;
    let providers: Value = app.get("/api/auth/providers").await.json().await.unwrap();
    assert_eq!(providers["passkey"]["type"], "webauthn");
    assert_eq!(providers["passkey"]["name"], "Passkey");
}

async fn registration_options_ask_for_a_discoverable_credential_with_user_verification(
    backend: Backend,
) {
    let app = passkey_app(backend).await;
    let user = app.signed_up_user().await;
    let (flow, options) = register_start(&app, &user.token).await;
    assert_eq!(flow.len(), 43, "32 random bytes, base64url");
    assert_eq!(options["rp"]["id"], RP_ID);
    assert_eq!(options["user"]["name"], user.email.as_str());
    let handle = options["user"]["id"].as_str().unwrap().to_owned();
    assert_eq!(base64_url(&handle).len(), 16, "a 16-byte user handle");
    assert!(base64_url(options["challenge"].as_str().unwrap()).len() >= 16);
    let selection = &options["authenticatorSelection"];
    assert_eq!(selection["residentKey"], "required", "{options}");
    assert_eq!(selection["userVerification"], "required");
    assert_eq!(options["excludeCredentials"], json!([]));
    assert!(options["pubKeyCredParams"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["alg"] == -7));

    // The same user handle every time; the user's passkeys are excluded.
    let mut authenticator = SoftAuthenticator::new();
    let credential = authenticator.register(&options, &Answer::from(ORIGIN));
    let res = register_finish(&app, &user.token, &flow, &credential, None).await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["name"], "Passkey", "the default name");
    let (_, again) = register_start(&app, &user.token).await;
    assert_eq!(again["user"]["id"], handle.as_str());
    assert_eq!(
        again["excludeCredentials"][0]["id"], credential["id"],
        "{again}"
    );
    assert_ne!(again["challenge"], options["challenge"]);
    // Another user has another handle.
    let other = app.signed_up_user().await;
    let (_, theirs) = register_start(&app, &other.token).await;
    assert_ne!(theirs["user"]["id"], handle.as_str());

    // A ceremony lives 5 minutes.
    let (flow, _) = register_start(&app, &user.token).await;
    let hash = authvault::random::token_hash(&flow);
    let now = authvault::clock::now();
    let kind = TokenKind::PasskeyRegistration;
    assert!(app
        .store
        .peek_token(kind, &hash, now + Duration::from_secs(290))
        .await
        .unwrap()
        .is_some());
    assert!(app
        .store
        .peek_token(kind, &hash, now + Duration::from_secs(301))
        .await
        .unwrap()
        .is_none());
}

fn base64_url(text: &str) -> Vec<u8> {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

async fn a_registered_passkey_signs_in_without_a_username_or_a_second_factor(backend: Backend) {
    let (app, sink) =
        crate::email::app_with_mail(backend, &[("AUTHVAULT_WEBAUTHN_RP_ID", RP_ID)]).await;
    let user = app.signed_up_user().await;
    let mut authenticator = SoftAuthenticator::new();
    let (flow, options) = register_start(&app, &user.token).await;
    let credential = authenticator.register(&options, &Answer::from(ORIGIN));
    let res = register_finish(&app, &user.token, &flow, &credential, Some("  MacBook  ")).await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["name"], "MacBook");
    assert_eq!(created["lastUsedAt"], Value::Null);
    assert!(created["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(passkey_list(&app, &user.token).await, vec![created.clone()]);
    assert_eq!(
        providers_of(&app, &user.token).await,
        json!(["credentials", "passkey"])
    );
    let mails = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(header(&mails[0], "To").unwrap(), user.email);
    assert!(header(&mails[0], "Subject")
        .unwrap()
        .contains("passkey was added"));
    assert!(decoded_part(&mails[0], "text/plain")
        .unwrap()
        .contains("MacBook"));

    let (flow, options) = signin_start(&app).await;
    assert_eq!(options["allowCredentials"], json!([]), "{options}");
    assert_eq!(options["userVerification"], "required");
    assert_eq!(options["rpId"], RP_ID);
    let assertion = authenticator.assert(0, &options, &Answer::from(ORIGIN));
    let res = app
        .post_json(
            "/api/auth/passkey/finish",
            &json!({"flowId": flow, "credential": assertion}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let cookie = set_cookie(res.headers(), "authvault.session").expect("a browser client's cookie");
    let cookie = cookie_pair(cookie);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["id"], user.id.as_str());
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
    assert_eq!(session["amr"], json!(["hwk", "mfa"]));
    let listed = passkey_list(&app, &user.token).await;
    assert!(listed[0]["lastUsedAt"].as_str().unwrap().ends_with('Z'));

    // An app client gets its tokens in the body, and the session is in the device list.
    let res = sign_in_with(&app, &mut authenticator, 0, &Answer::from(ORIGIN)).await;
    assert_eq!(res.status(), 200);
    assert!(set_cookie(res.headers(), "authvault.session").is_none());
    let body: Value = res.json().await.unwrap();
    let token = body["session"]["accessToken"].as_str().unwrap();
    assert!(body["session"]["refreshToken"].as_str().is_some());
    let sessions: Value = app
        .get_bearer("/api/user/sessions", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        sessions["sessions"].as_array().unwrap().len(),
        3,
        "{sessions}"
    );
}

async fn registration_needs_a_recent_sign_in(backend: Backend) {
    let app = passkey_app(backend).await;
    let (_, token) = app.passwordless_user(Duration::from_secs(11 * 60)).await;
    let res = post_bearer(
        &app,
        "/api/user/passkeys/register/start",
        &token,
        &json!({}),
    )
    .await;
    app.assert_problem(res, 401, "reauth_required").await;
    let res = app
        .post_json("/api/user/passkeys/register/start", &json!({}))
        .await;
    app.assert_problem(res, 401, "unauthenticated").await;
}

async fn registration_refuses_wrong_answers_and_spent_or_foreign_ceremonies(backend: Backend) {
    let app = passkey_app(backend).await;
    let user = app.signed_up_user().await;
    let mut authenticator = SoftAuthenticator::new();
    let mut wrong = wrong_answers();
    wrong.push(Answer {
        origin: "http://sub.app.test".into(),
        ..Answer::from(ORIGIN)
    });
    for answer in &wrong {
        let (flow, options) = register_start(&app, &user.token).await;
        let credential = authenticator.register(&options, answer);
        let res = register_finish(&app, &user.token, &flow, &credential, None).await;
        app.assert_problem(res, 400, "invalid_passkey").await;
        // The ceremony is spent by the failure.
        let good = authenticator.register(&options, &Answer::from(ORIGIN));
        let res = register_finish(&app, &user.token, &flow, &good, None).await;
        app.assert_problem(res, 400, "invalid_passkey").await;
    }
    assert!(passkey_list(&app, &user.token).await.is_empty());

    // Another user's ceremony is refused, and spent for both.
    let other = app.signed_up_user().await;
    let (flow, options) = register_start(&app, &user.token).await;
    let credential = authenticator.register(&options, &Answer::from(ORIGIN));
    let res = register_finish(&app, &other.token, &flow, &credential, None).await;
    app.assert_problem(res, 400, "invalid_passkey").await;
    assert!(passkey_list(&app, &other.token).await.is_empty());

    // A used ceremony, or one never started, is refused.
    let (flow, options) = register_start(&app, &user.token).await;
    let credential = authenticator.register(&options, &Answer::from(ORIGIN));
    let res = register_finish(&app, &user.token, &flow, &credential, None).await;
    assert_eq!(res.status(), 201);
    let res = register_finish(&app, &user.token, &flow, &credential, None).await;
    app.assert_problem(res, 400, "invalid_passkey").await;
    let res = register_finish(&app, &user.token, "unknown-flow", &credential, None).await;
    app.assert_problem(res, 400, "invalid_passkey").await;

    // The same credential registered again (on a new ceremony), for this user or another: no.
    let (flow, _) = register_start(&app, &other.token).await;
    let res = register_finish(&app, &other.token, &flow, &credential, None).await;
    app.assert_problem(res, 400, "invalid_passkey").await;
    assert_eq!(passkey_list(&app, &user.token).await.len(), 1);
}

async fn sign_in_refuses_every_wrong_answer(backend: Backend) {
    let app = passkey_app(backend).await;
    let user = app.signed_up_user().await;
    let other = app.signed_up_user().await;
    let mut authenticator = SoftAuthenticator::new();
    register(&app, &user.token, &mut authenticator).await;
    register(&app, &other.token, &mut authenticator).await;
    let mut wrong = wrong_answers();
    wrong.extend([
        // The other user's handle with this user's credential, and no handle at all.
        Answer {
            user_handle: Some(Some(authenticator.credentials[1].user_handle.clone())),
            ..Answer::from(ORIGIN)
        },
        Answer {
            user_handle: Some(None),
            ..Answer::from(ORIGIN)
        },
    ]);
    for answer in &wrong {
        let res = sign_in_with(&app, &mut authenticator, 0, answer).await;
        app.assert_problem(res, 401, "invalid_credentials").await;
    }

    // A replayed answer: its ceremony is spent, and on a new ceremony its challenge is stale.
    let (flow, options) = signin_start(&app).await;
    let assertion = authenticator.assert(0, &options, &Answer::from(ORIGIN));
    assert_eq!(signin_finish(&app, &flow, &assertion).await.status(), 200);
    let res = signin_finish(&app, &flow, &assertion).await;
    app.assert_problem(res, 400, "invalid_passkey").await;
    let (flow, _) = signin_start(&app).await;
    let res = signin_finish(&app, &flow, &assertion).await;
    app.assert_problem(res, 401, "invalid_credentials").await;

    // A bad signature, and a credential nobody registered.
    let (flow, options) = signin_start(&app).await;
    let mut assertion = authenticator.assert(0, &options, &Answer::from(ORIGIN));
    let other_options = signin_start(&app).await.1;
    let signed_elsewhere = authenticator.assert(0, &other_options, &Answer::from(ORIGIN));
    assertion["response"]["signature"] = signed_elsewhere["response"]["signature"].clone();
    let res = signin_finish(&app, &flow, &assertion).await;
    app.assert_problem(res, 401, "invalid_credentials").await;
    let mut stranger = SoftAuthenticator::new();
    let (_, options) = register_start(&app, &user.token).await;
    stranger.register(&options, &Answer::from(ORIGIN));
    let res = sign_in_with(&app, &mut stranger, 0, &Answer::from(ORIGIN)).await;
    app.assert_problem(res, 401, "invalid_credentials").await;
    let res = signin_finish(&app, "unknown-flow", &assertion).await;
    app.assert_problem(res, 400, "invalid_passkey").await;

    // After all that, the right answer still signs in.
    let res = sign_in_with(&app, &mut authenticator, 0, &Answer::from(ORIGIN)).await;
    assert_eq!(res.status(), 200);
}

async fn a_sign_counter_gone_backwards_is_refused_and_racing_sign_ins_count_once(backend: Backend) {
    let app = passkey_app(backend).await;
    let user = app.signed_up_user().await;
    let mut authenticator = SoftAuthenticator::new();
    register(&app, &user.token, &mut authenticator).await;
    let at = |counter| Answer {
        counter: Some(counter),
        ..Answer::from(ORIGIN)
    };
    assert_eq!(
        sign_in_with(&app, &mut authenticator, 0, &at(5))
            .await
            .status(),
        200
    );
    for counter in [5, 4] {
        let res = sign_in_with(&app, &mut authenticator, 0, &at(counter)).await;
        app.assert_problem(res, 401, "invalid_credentials").await;
    }
    assert_eq!(
        sign_in_with(&app, &mut authenticator, 0, &at(6))
            .await
            .status(),
        200
    );

    // Two sign-ins with one counter value at once (a cloned key): only one counts.
    let mut answers = Vec::new();
    for _ in 0..2 {
        let (flow, options) = signin_start(&app).await;
        answers.push((flow, authenticator.assert(0, &options, &at(7))));
    }
    let barrier = Arc::new(Barrier::new(2));
    let app = Arc::new(app);
    let tasks: Vec<_> = answers
        .into_iter()
        .map(|(flow, assertion)| {
            let (app, barrier) = (app.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                signin_finish(&app, &flow, &assertion)
                    .await
                    .status()
                    .as_u16()
            })
        })
        .collect();
    assert_eq!(sorted_statuses(tasks).await, vec![200, 401]);
}

async fn a_user_with_totp_on_signs_in_with_a_passkey_in_one_step(backend: Backend) {
    let app = passkey_app(backend).await;
    let mfa = crate::mfa::mfa_user(&app).await;
    // Turning MFA on ended the enrolling session's siblings, not itself.
    let token = mfa.user.token.clone();
    let mut authenticator = SoftAuthenticator::new();
    register(&app, &token, &mut authenticator).await;
    let res = app.signin(&mfa.user.email, &mfa.user.password).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["mfaRequired"], true,
        "the password still asks for a code"
    );
    let res = sign_in_with(&app, &mut authenticator, 0, &Answer::from(ORIGIN)).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body.get("mfaRequired").is_none(), "{body}");
    let token = body["session"]["accessToken"].as_str().unwrap();
    let session: Value = app
        .get_bearer("/api/auth/session", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(session["amr"], json!(["hwk", "mfa"]));
    assert_eq!(session["user"]["mfaEnabled"], true);
}

async fn passkeys_are_listed_renamed_and_deleted_but_never_the_last_way_in(backend: Backend) {
    let app = passkey_app(backend).await;
    let user = app.signed_up_user().await;
    let other = app.signed_up_user().await;
    let mut authenticator = SoftAuthenticator::new();
    let first = register(&app, &user.token, &mut authenticator).await;
    let second = register(&app, &user.token, &mut authenticator).await;
    let listed = passkey_list(&app, &user.token).await;
    let ids: Vec<&str> = listed.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![first.as_str(), second.as_str()], "oldest first");
    assert!(passkey_list(&app, &other.token).await.is_empty());

    let path = format!("/api/user/passkeys/{first}");
    let res = app
        .send_bearer(
            Method::PATCH,
            &path,
            &user.token,
            Some(&json!({"name": "Phone"})),
        )
        .await;
    assert_eq!(res.status(), 200);
    let renamed: Value = res.json().await.unwrap();
    assert_eq!(renamed["name"], "Phone");
    assert_eq!(renamed["id"], first.as_str());
    for name in [
        json!(""),
        json!("   "),
        json!("x".repeat(65)),
        json!("a\u{7}b"),
        json!("Phone\u{202E}gpj.exe"),
        json!("a\u{200B}b"),
    ] {
        let res = app
            .send_bearer(
                Method::PATCH,
                &path,
                &user.token,
                Some(&json!({"name": name})),
            )
            .await;
        app.assert_problem(res, 400, "validation_failed").await;
    }
    // Another user's passkey, or no passkey at all, is not found.
    let res = app
        .send_bearer(
            Method::PATCH,
            &path,
            &other.token,
            Some(&json!({"name": "Mine"})),
        )
        .await;
    app.assert_problem(res, 404, "not_found").await;
    let res = app
        .send_bearer(Method::DELETE, &path, &other.token, None)
        .await;
    app.assert_problem(res, 404, "not_found").await;
    for missing in ["not-a-uuid", "5f2b9c1e-0000-4000-8000-000000000000"] {
        let res = app
            .send_bearer(
                Method::DELETE,
                &format!("/api/user/passkeys/{missing}"),
                &user.token,
                None,
            )
            .await;
        app.assert_problem(res, 404, "not_found").await;
    }
    assert_eq!(passkey_list(&app, &user.token).await[0]["name"], "Phone");

    // With a password, both can go; the user keeps `credentials`.
    for id in [&first, &second] {
        let res = app
            .send_bearer(
                Method::DELETE,
                &format!("/api/user/passkeys/{id}"),
                &user.token,
                None,
            )
            .await;
        assert_eq!(res.status(), 204);
    }
    assert!(passkey_list(&app, &user.token).await.is_empty());
    assert_eq!(
        providers_of(&app, &user.token).await,
        json!(["credentials"])
    );
    let res = sign_in_with(&app, &mut authenticator, 0, &Answer::from(ORIGIN)).await;
    app.assert_problem(res, 401, "invalid_credentials").await;

    // Without a password, the last passkey stays.
    let (_, token) = app.passwordless_user(Duration::ZERO).await;
    let only = register(&app, &token, &mut authenticator).await;
    assert_eq!(providers_of(&app, &token).await, json!(["passkey"]));
    let res = app
        .send_bearer(
            Method::DELETE,
            &format!("/api/user/passkeys/{only}"),
            &token,
            None,
        )
        .await;
    app.assert_problem(res, 409, "last_sign_in_method").await;
    assert_eq!(passkey_list(&app, &token).await.len(), 1);
}

async fn racing_deletes_of_the_last_two_passkeys_leave_one(backend: Backend) {
    let app = Arc::new(passkey_app(backend).await);
    for _ in 0..3 {
        let (_, token) = app.passwordless_user(Duration::ZERO).await;
        let mut authenticator = SoftAuthenticator::new();
        let ids = [
            register(&app, &token, &mut authenticator).await,
            register(&app, &token, &mut authenticator).await,
        ];
        let barrier = Arc::new(Barrier::new(2));
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| {
                let (app, barrier, token) = (app.clone(), barrier.clone(), token.clone());
                let path = format!("/api/user/passkeys/{id}");
                tokio::spawn(async move {
                    barrier.wait().await;
                    app.send_bearer(Method::DELETE, &path, &token, None)
                        .await
                        .status()
                        .as_u16()
                })
            })
            .collect();
        assert_eq!(sorted_statuses(tasks).await, vec![204, 409]);
        assert_eq!(passkey_list(&app, &token).await.len(), 1);
        assert_eq!(providers_of(&app, &token).await, json!(["passkey"]));
    }
}

async fn proving_the_address_removes_passkeys_attached_while_it_was_unproven(backend: Backend) {
    let (app, sink) =
        crate::email::app_with_mail(backend, &[("AUTHVAULT_WEBAUTHN_RP_ID", RP_ID)]).await;
    let user = app.signed_up_user().await;
    let mut authenticator = SoftAuthenticator::new();
    register(&app, &user.token, &mut authenticator).await;
    sink.wait_for(1, Duration::from_secs(10)).await;
    let res = post_bearer(
        &app,
        "/api/auth/verify-email/request",
        &user.token,
        &json!({"redirectUrl": "http://app.test/verify"}),
    )
    .await;
    assert_eq!(res.status(), 202);
    let mails = sink.wait_for(2, Duration::from_secs(10)).await;
    let (_, token) = token_link(&mails[1]);
    let res = app
        .post_json("/api/auth/verify-email", &json!({"token": token}))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["providers"], json!(["credentials"]), "{body}");
    // Every session ended; the passkey no longer signs in.
    let res = app.get_bearer("/api/user", &user.token).await;
    app.assert_problem(res, 401, "unauthenticated").await;
    let res = sign_in_with(&app, &mut authenticator, 0, &Answer::from(ORIGIN)).await;
    app.assert_problem(res, 401, "invalid_credentials").await;
    let id: authvault::domain::UserId = user.id.parse().unwrap();
    assert!(app.store.passkeys(id).await.unwrap().is_empty());

    // Registered after the proof, a passkey stays.
    let res = app.signin(&user.email, &user.password).await;
    let body: Value = res.json().await.unwrap();
    let token = body["session"]["accessToken"].as_str().unwrap().to_owned();
    register(&app, &token, &mut authenticator).await;
    assert_eq!(passkey_list(&app, &token).await.len(), 1);
}

async fn a_deleted_account_takes_its_passkeys_along(backend: Backend) {
    let app = passkey_app(backend).await;
    let user = app.signed_up_user().await;
    let mut authenticator = SoftAuthenticator::new();
    register(&app, &user.token, &mut authenticator).await;
    let res = app
        .send_bearer(
            Method::DELETE,
            "/api/user",
            &user.token,
            Some(&json!({"password": user.password})),
        )
        .await;
    assert_eq!(res.status(), 204);
    let credential_id = authenticator.credentials[0].id.clone();
    assert!(app
        .store
        .passkey_by_credential(&credential_id)
        .await
        .unwrap()
        .is_none());
    let res = sign_in_with(&app, &mut authenticator, 0, &Answer::from(ORIGIN)).await;
    app.assert_problem(res, 401, "invalid_credentials").await;
}

async fn a_ceremony_started_on_one_instance_finishes_on_another(backend: Backend) {
    let first = passkey_app(backend).await;
    let overrides = [
        ("AUTHVAULT_WEBAUTHN_RP_ID", RP_ID),
        ("AUTHVAULT_IP_RATE_LIMIT_PER_MIN", "0"),
    ];
    let second = spawn_app_on(Database::at(first.db.url.clone()), &overrides).await;
    let user = first.signed_up_user().await;
    let mut authenticator = SoftAuthenticator::new();
    let (flow, options) = register_start(&first, &user.token).await;
    let credential = authenticator.register(&options, &Answer::from(ORIGIN));
    let res = register_finish(&second, &user.token, &flow, &credential, None).await;
    assert_eq!(res.status(), 201);
    let (flow, options) = signin_start(&second).await;
    let assertion = authenticator.assert(0, &options, &Answer::from(ORIGIN));
    assert_eq!(signin_finish(&first, &flow, &assertion).await.status(), 200);
    // Spent on the first, it is spent on the second.
    let res = signin_finish(&second, &flow, &assertion).await;
    second.assert_problem(res, 400, "invalid_passkey").await;
}

async fn malformed_passkey_requests_are_clear_problems(backend: Backend) {
    let app = passkey_app(backend).await;
    let user = app.signed_up_user().await;
    let (flow, _) = signin_start(&app).await;
    for body in [
        json!({}),
        json!({"flowId": flow}),
        json!({"flowId": flow, "credential": "nope"}),
        json!({"flowId": flow, "credential": {"id": "x"}}),
        json!({"flowId": flow, "credential": {"id": "x", "rawId": "!!", "type": "public-key",
            "response": {"clientDataJSON": "", "authenticatorData": "", "signature": ""}}}),
        json!({"flowId": flow, "credential": {}, "extra": 1}),
    ] {
        let res = app.post_json("/api/auth/passkey/finish", &body).await;
        app.assert_problem(res, 400, "validation_failed").await;
        let res = post_bearer(
            &app,
            "/api/user/passkeys/register/finish",
            &user.token,
            &body,
        )
        .await;
        app.assert_problem(res, 400, "validation_failed").await;
    }
    // Well-formed JSON that is not a WebAuthn answer at all.
    let junk = json!({"id": "AAAA", "rawId": "AAAA", "type": "public-key",
        "response": {"clientDataJSON": "AAAA", "authenticatorData": "AAAA", "signature": "AAAA",
            "attestationObject": "AAAA"}});
    let res = signin_finish(&app, &flow, &junk).await;
    app.assert_problem(res, 401, "invalid_credentials").await;
    // The starts take nothing but an empty body or `{}`.
    let res = app
        .post_json("/api/auth/passkey/start", &json!({"userName": "ada"}))
        .await;
    app.assert_problem(res, 400, "validation_failed").await;
    let res = post_bearer(
        &app,
        "/api/user/passkeys/register/start",
        &user.token,
        &json!({"x": 1}),
    )
    .await;
    app.assert_problem(res, 400, "validation_failed").await;
    let (flow, _) = register_start(&app, &user.token).await;
    let res = register_finish(&app, &user.token, &flow, &junk, None).await;
    app.assert_problem(res, 400, "invalid_passkey").await;
    let res = register_finish(&app, &user.token, &flow, &junk, Some(&"y".repeat(65))).await;
    app.assert_problem(res, 400, "validation_failed").await;
}

async fn both_passkey_sign_in_routes_count_toward_the_per_ip_limit(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("AUTHVAULT_WEBAUTHN_RP_ID", RP_ID),
            ("AUTHVAULT_IP_RATE_LIMIT_PER_MIN", "3"),
        ],
    )
    .await;
    let (flow, options) = signin_start(&app).await;
    let (_, _) = signin_start(&app).await;
    let mut stranger = SoftAuthenticator::new();
    let user = app.signed_up_user().await;
    // (Sign-up spent the third request of this client's minute.)
    let (_, creation) = register_start(&app, &user.token).await;
    stranger.register(&creation, &Answer::from(ORIGIN));
    let assertion = stranger.assert(0, &options, &Answer::from(ORIGIN));
    let res = signin_finish(&app, &flow, &assertion).await;
    app.assert_problem(res, 429, "rate_limited").await;
    let res = app.post_json("/api/auth/passkey/start", &json!({})).await;
    app.assert_problem(res, 429, "rate_limited").await;
}
