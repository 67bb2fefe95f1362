//! Multi-factor sign-in: TOTP enrolment, the second step on every sign-in path, its limits,
//! replay, races, recovery codes, notices, and the secret sealed at rest.
//!
//! Codes are computed here with `totp-rs` from the secret the enrolment answered, as an
//! authenticator app would. Each test leaves enough of the current 30-second step that a code
//! computed now is still in the server's window when it arrives (`settled_step`).

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{json, Value};
use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::{
    api_keys::{K1, K2},
    helpers::{providers::*, smtp::*, *},
};

backend_tests!(
    enrolment_answers_a_secret_its_otpauth_url_and_a_qr_code,
    enrolment_and_changes_need_a_recent_sign_in,
    confirming_turns_mfa_on_ends_other_sessions_and_mails_a_notice,
    password_sign_in_asks_for_the_second_factor_and_verify_completes_it,
    an_app_client_gets_its_tokens_in_the_body_after_the_second_step,
    an_mfa_token_is_single_use_expires_and_is_bound_to_its_user,
    five_wrong_codes_spend_the_mfa_token,
    wrong_codes_count_as_failed_sign_ins_of_the_email_and_client,
    an_accepted_totp_step_is_refused_again_even_on_another_instance,
    two_verifies_racing_with_one_code_start_exactly_one_session,
    two_recovery_codes_racing_on_one_mfa_token_start_exactly_one_session,
    recovery_codes_sign_in_once_typed_any_way_and_say_how_many_are_left,
    regenerated_recovery_codes_end_the_old_set,
    turning_mfa_off_needs_a_code_and_sign_in_is_one_step_again,
    a_password_change_during_the_second_step_starts_no_session,
    github_and_google_browser_sign_ins_redirect_with_an_mfa_token,
    an_app_callback_exchange_answers_mfa_required,
    the_totp_secret_is_sealed_at_rest_and_rotates_with_rotate_keys,
    malformed_second_steps_are_clear_problems,
);

const STEP: u64 = 30;
const SPA: &str = "http://app.test";
const APP_CALLBACK: &str = "com.example.app:/oauth/callback";

fn secret_bytes(secret: &str) -> Vec<u8> {
    Secret::try_from_base32(secret)
        .expect("base32")
        .as_bytes()
        .to_vec()
}

fn totp(secret: &str) -> Totp {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(STEP)
        .with_secret(secret_bytes(secret))
        .build()
        .expect("a valid TOTP")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The current 30-second step, once at least 8 seconds of it are left (so that codes of the
/// previous, current and next step computed now are all still accepted when they arrive).
async fn settled_step() -> u64 {
    loop {
        let now = unix_now();
        if STEP - now % STEP >= 8 {
            return now / STEP;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The code of `step` for `secret`.
fn code(secret: &str, step: u64) -> String {
    totp(secret).generate(step * STEP).to_string()
}

/// A user with MFA on: the enrolment's secret, the recovery codes, and the step its
/// confirmation used (the previous one, so that the current and the next are still unused).
pub(crate) struct MfaUser {
    pub(crate) user: TestUser,
    secret: String,
    recovery: Vec<String>,
    confirmed_step: u64,
}

async fn post_bearer(app: &TestApp, path: &str, token: &str, body: &Value) -> Response {
    app.send_bearer(Method::POST, path, token, Some(body)).await
}

async fn enrol(app: &TestApp, token: &str) -> Value {
    let res = post_bearer(app, "/api/user/mfa/totp", token, &json!({})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    res.json().await.unwrap()
}

async fn confirm(app: &TestApp, token: &str, code: &str) -> Response {
    post_bearer(
        app,
        "/api/user/mfa/totp/confirm",
        token,
        &json!({"code": code}),
    )
    .await
}

/// Enrols and confirms MFA for `user` with a code of the previous step.
async fn turn_on(app: &TestApp, user: TestUser) -> MfaUser {
    let enrolment = enrol(app, &user.token).await;
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let step = settled_step().await - 1;
    let res = confirm(app, &user.token, &code(&secret, step)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    let recovery = body["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    MfaUser {
        user,
        secret,
        recovery,
        confirmed_step: step,
    }
}

pub(crate) async fn mfa_user(app: &TestApp) -> MfaUser {
    let user = app.signed_up_user().await;
    turn_on(app, user).await
}

/// A password sign-in that must answer `mfaRequired`: its mfaToken.
async fn first_factor(app: &TestApp, user: &TestUser) -> String {
    let res = app.signin(&user.email, &user.password).await;
    assert_eq!(res.status(), 200);
    assert!(set_cookie(res.headers(), "authvault.session").is_none());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfaRequired"], true, "{body}");
    body["mfaToken"].as_str().unwrap().to_owned()
}

async fn verify(app: &TestApp, token: &str, code: &str) -> Response {
    app.post_json(
        "/api/auth/mfa/verify",
        &json!({"mfaToken": token, "code": code}),
    )
    .await
}

async fn verify_from(app: &TestApp, ip: &str, token: &str, code: &str) -> Response {
    app.client
        .post(app.url("/api/auth/mfa/verify"))
        .header("x-forwarded-for", ip)
        .json(&json!({"mfaToken": token, "code": code}))
        .send()
        .await
        .unwrap()
}

/// The claims of an access token.
fn claims(token: &str) -> Value {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

async fn session_of_cookie(app: &TestApp, cookie: &str) -> Value {
    let res = app
        .client
        .get(app.url("/api/auth/session"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// The mail whose subject is `subject` to `to`, waiting for it.
async fn mail_with_subject(sink: &SmtpSink, to: &str, subject: &str) -> String {
    for _ in 0..100 {
        if let Some(m) = sink.messages().into_iter().find(|m| {
            header(m, "Subject").as_deref() == Some(subject)
                && header(m, "To").is_some_and(|t| t.contains(to))
        }) {
            return decoded_part(&m, "text/plain").unwrap_or(m);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no mail {subject:?} to {to}; the sink has {:?}",
        sink.messages().len()
    )
}

fn mails_with_subject(sink: &SmtpSink, subject: &str) -> usize {
    sink.messages()
        .iter()
        .filter(|m| header(m, "Subject").as_deref() == Some(subject))
        .count()
}

async fn app_with_proxies(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![
        ("AUTHVAULT_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("AUTHVAULT_IP_RATE_LIMIT_PER_MIN", "0"),
    ];
    vars.extend_from_slice(extra);
    spawn_app_with(backend, &vars).await
}

// ---- enrolment ----

async fn enrolment_answers_a_secret_its_otpauth_url_and_a_qr_code(backend: Backend) {
    let app = spawn_app_with(backend, &[("AUTHVAULT_MFA_ISSUER", "Acme Vault")]).await;
    let user = app.signed_up_user().await;

    let first = enrol(&app, &user.token).await;

    let secret = first["secret"].as_str().unwrap();
    assert_eq!(secret.len(), 32, "20 bytes in base32 without padding");
    assert_eq!(secret_bytes(secret).len(), 20);
    let email = &user.email;
    assert_eq!(
        first["otpauthUrl"],
        format!(
            "otpauth://totp/Acme%20Vault:{email}?secret={secret}&issuer=Acme+Vault&algorithm=SHA1&digits=6&period=30"
        )
    );
    let svg = first["qrSvg"].as_str().unwrap();
    assert!(
        svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg:.80}"
    );
    // The URL parses back to what an authenticator app needs.
    let parsed = Totp::from_url(first["otpauthUrl"].as_str().unwrap()).unwrap();
    assert_eq!(parsed.secret().as_bytes(), secret_bytes(secret));
    assert_eq!((parsed.digits(), parsed.step()), (6, 30));
    assert_eq!(parsed.issuer(), Some("Acme Vault"));
    assert_eq!(parsed.account_name(), user.email);
    let now = unix_now();
    assert_eq!(parsed.generate(now), totp(secret).generate(now));

    // Pending is not on.
    let me: Value = app
        .get_bearer("/api/user", &user.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["mfaEnabled"], false);
    assert_eq!(first_or_session(&app, &user).await, "session");

    // Enrolling again replaces the pending secret: the first one no longer confirms.
    let second = enrol(&app, &user.token).await;
    let other = second["secret"].as_str().unwrap();
    assert_ne!(other, secret);
    let step = settled_step().await;
    let stale = confirm(&app, &user.token, &code(secret, step)).await;
    app.assert_problem(stale, 400, "invalid_code").await;
    let res = confirm(&app, &user.token, &code(other, step)).await;
    assert_eq!(res.status(), 200);

    // Once on, enrolment is refused until MFA is turned off.
    let again = post_bearer(&app, "/api/user/mfa/totp", &user.token, &json!({})).await;
    app.assert_problem(again, 409, "mfa_already_enabled").await;
}

/// Whether a password sign-in of `user` answers a session or the `mfaRequired` shape.
async fn first_or_session(app: &TestApp, user: &TestUser) -> &'static str {
    let body: Value = app
        .signin(&user.email, &user.password)
        .await
        .json()
        .await
        .unwrap();
    if body["mfaRequired"] == true {
        "mfa"
    } else {
        assert!(body["session"].is_object(), "{body}");
        "session"
    }
}

async fn enrolment_and_changes_need_a_recent_sign_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let (stale_user, stale) = app.passwordless_user(Duration::from_secs(11 * 60)).await;
    let res = post_bearer(&app, "/api/user/mfa/totp", &stale, &json!({})).await;
    app.assert_problem(res, 401, "reauth_required").await;
    let _ = stale_user;

    let on = mfa_user(&app).await;
    let id = on.user.id.parse().unwrap();
    let user = app.store.user_by_id(id).await.unwrap().unwrap();
    let old = app
        .token_for(&user, authvault::clock::now() - time::Duration::minutes(11))
        .await;
    let step = settled_step().await;
    let body = json!({"code": code(&on.secret, step)});
    let off = app
        .send_bearer(Method::DELETE, "/api/user/mfa", &old, Some(&body))
        .await;
    app.assert_problem(off, 401, "reauth_required").await;
    let regenerate = post_bearer(&app, "/api/user/mfa/recovery-codes", &old, &body).await;
    app.assert_problem(regenerate, 401, "reauth_required").await;
    // Nothing was spent by the refused requests: the code still works from a fresh sign-in.
    assert!(app.store.user_by_id(id).await.unwrap().unwrap().mfa_enabled);
    let res = verify(
        &app,
        &first_factor(&app, &on.user).await,
        &code(&on.secret, step),
    )
    .await;
    assert_eq!(res.status(), 200);
}

async fn confirming_turns_mfa_on_ends_other_sessions_and_mails_a_notice(backend: Backend) {
    let (app, _fake, sink) = app_with_providers_and_mail(backend, &[]).await;
    let user = app.signed_up_user().await;
    let other: Value = app
        .post_json(
            "/api/auth/signin",
            &json!({"email": user.email, "password": user.password, "client": "app"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let other = other["session"]["accessToken"].as_str().unwrap().to_owned();
    let stranger = app.signed_up_user().await;

    // Nothing pending yet.
    let nothing = confirm(&app, &user.token, "123456").await;
    app.assert_problem(nothing, 400, "invalid_code").await;

    let enrolment = enrol(&app, &user.token).await;
    let secret = enrolment["secret"].as_str().unwrap();
    let step = settled_step().await;
    for wrong in ["000000", "12345", "abcdef", &code(secret, step + 3)] {
        let res = confirm(&app, &user.token, wrong).await;
        app.assert_problem(res, 400, "invalid_code").await;
    }
    assert_eq!(app.get_bearer("/api/user", &other).await.status(), 200);

    let res = confirm(&app, &user.token, &code(secret, step)).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let codes: Vec<&str> = body["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), 10);
    let mut unique = codes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 10);
    for c in &codes {
        let bare = c.replace('-', "");
        assert_eq!(bare.len(), 12, "{c}: 60 bits of base32");
        assert!(
            bare.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')),
            "{c}"
        );
    }

    let me: Value = app
        .get_bearer("/api/user", &user.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["mfaEnabled"], true);
    assert_eq!(
        app.get_bearer("/api/user", &other).await.status(),
        401,
        "every other session ended"
    );
    // Another user is untouched.
    assert_eq!(
        app.get_bearer("/api/user", &stranger.token).await.status(),
        200
    );
    let me: Value = app
        .get_bearer("/api/user", &stranger.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["mfaEnabled"], false);

    let notice = mail_with_subject(&sink, &user.email, "Two-factor sign-in is on").await;
    assert!(!notice.contains(secret));
    for c in &codes {
        assert!(!notice.contains(c));
    }
    // Confirming twice does nothing more.
    let twice = confirm(&app, &user.token, &code(secret, step + 1)).await;
    app.assert_problem(twice, 400, "invalid_code").await;
}

// ---- the second step ----

async fn password_sign_in_asks_for_the_second_factor_and_verify_completes_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let on = mfa_user(&app).await;

    let before = authvault::clock::now();
    let res = app.signin(&on.user.email, &on.user.password).await;
    assert_eq!(res.status(), 200);
    assert!(set_cookie(res.headers(), "authvault.session").is_none());
    assert!(set_cookie(res.headers(), "authvault.refresh").is_none());
    let body: Value = res.json().await.unwrap();
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["expiresAt", "methods", "mfaRequired", "mfaToken"]);
    assert_eq!(body["methods"], json!(["totp", "recoveryCode"]));
    let token = body["mfaToken"].as_str().unwrap();
    assert_eq!(token.len(), 43, "32 bytes, URL-safe base64");
    let expires = time::OffsetDateTime::parse(
        body["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let ttl = expires - before;
    assert!(
        ttl > time::Duration::minutes(4)
            && ttl <= time::Duration::minutes(5) + time::Duration::seconds(2),
        "{ttl}"
    );

    let step = settled_step().await;
    let res = verify(&app, token, &code(&on.secret, step)).await;
    assert_eq!(res.status(), 200);
    let cookie = cookie_pair(set_cookie(res.headers(), "authvault.session").expect("cookie"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["id"], on.user.id.as_str());
    assert_eq!(body["user"]["mfaEnabled"], true);
    assert_eq!(
        claims(body["session"]["accessToken"].as_str().unwrap())["amr"],
        json!(["pwd", "otp", "mfa"])
    );
    let session = session_of_cookie(&app, &cookie).await;
    assert_eq!(session["amr"], json!(["pwd", "otp", "mfa"]));
    // The second step is a fresh authentication: changes that need a recent sign-in work.
    let enrol_again = app
        .client
        .get(app.url("/api/user"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(enrol_again.status(), 200);
    // The previous step's code was the confirmation's; the current one is now spent too.
    let _ = on.confirmed_step;
}

async fn an_app_client_gets_its_tokens_in_the_body_after_the_second_step(backend: Backend) {
    let app = spawn_app(backend).await;
    let on = mfa_user(&app).await;
    let res = app
        .post_json(
            "/api/auth/signin",
            &json!({"email": on.user.email, "password": on.user.password, "client": "app"}),
        )
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfaRequired"], true);
    assert!(body.get("session").is_none() && body.get("refreshToken").is_none());
    let token = body["mfaToken"].as_str().unwrap();

    let step = settled_step().await;
    let res = app
        .post_json(
            "/api/auth/mfa/verify",
            &json!({"mfaToken": token, "code": code(&on.secret, step), "client": "app"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(set_cookie(res.headers(), "authvault.session").is_none());
    let body: Value = res.json().await.unwrap();
    let access = body["session"]["accessToken"].as_str().unwrap();
    assert_eq!(claims(access)["amr"], json!(["pwd", "otp", "mfa"]));
    let refresh = body["session"]["refreshToken"].as_str().unwrap();
    let refreshed = app
        .post_json("/api/auth/refresh", &json!({"refreshToken": refresh}))
        .await;
    assert_eq!(refreshed.status(), 200);
    let body: Value = refreshed.json().await.unwrap();
    assert_eq!(
        claims(body["session"]["accessToken"].as_str().unwrap())["amr"],
        json!(["pwd", "otp", "mfa"]),
        "kept across a refresh"
    );
}

async fn an_mfa_token_is_single_use_expires_and_is_bound_to_its_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let ada = mfa_user(&app).await;
    let grace = mfa_user(&app).await;
    let step = settled_step().await;

    // Grace's code does not complete Ada's sign-in.
    let token = first_factor(&app, &ada.user).await;
    let res = verify(&app, &token, &code(&grace.secret, step)).await;
    app.assert_problem(res, 401, "invalid_code").await;
    let res = verify(&app, &token, &grace.recovery[0]).await;
    app.assert_problem(res, 401, "invalid_code").await;

    // Used once, then gone.
    assert_eq!(
        verify(&app, &token, &code(&ada.secret, step))
            .await
            .status(),
        200
    );
    let again = verify(&app, &token, &ada.recovery[0]).await;
    app.assert_problem(again, 400, "invalid_mfa_token").await;

    // Unknown, and tokens of another kind with the same text.
    let made_up = authvault::random::token();
    let res = verify(&app, &made_up, &code(&ada.secret, step + 1)).await;
    app.assert_problem(res, 400, "invalid_mfa_token").await;

    // Expired: a token stored as the service stores one, already past its time.
    let id = ada.user.id.parse().unwrap();
    let user = app.store.user_by_id(id).await.unwrap().unwrap();
    let expired = authvault::random::token();
    app.store
        .put_token(
            authvault::store::TokenKind::MfaPending,
            &authvault::random::token_hash(&expired),
            Some(id),
            &json!({"amr": "pwd", "auth_time": 0, "version": user.credential_version}).to_string(),
            authvault::clock::now() + time::Duration::seconds(1),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let res = verify(&app, &expired, &code(&ada.secret, step + 1)).await;
    app.assert_problem(res, 400, "invalid_mfa_token").await;
    // The code was not spent by the refused request.
    let fresh = first_factor(&app, &ada.user).await;
    assert_eq!(
        verify(&app, &fresh, &code(&ada.secret, step + 1))
            .await
            .status(),
        200
    );
}

async fn five_wrong_codes_spend_the_mfa_token(backend: Backend) {
    let app = app_with_proxies(backend, &[("AUTHVAULT_SIGNIN_MAX_FAILURES", "50")]).await;
    let on = mfa_user(&app).await;
    let token = first_factor(&app, &on.user).await;
    for wrong in ["000000", "111111", "not-a-code", "aaaa-bbbb-cccc", "999999"] {
        let res = verify(&app, &token, wrong).await;
        app.assert_problem(res, 401, "invalid_code").await;
    }
    let step = settled_step().await;
    let right = verify(&app, &token, &code(&on.secret, step)).await;
    app.assert_problem(right, 400, "invalid_mfa_token").await;
    // A new first factor gets a new budget, and the code was not spent.
    let token = first_factor(&app, &on.user).await;
    for _ in 0..4 {
        app.assert_problem(verify(&app, &token, "000000").await, 401, "invalid_code")
            .await;
    }
    assert_eq!(
        verify(&app, &token, &code(&on.secret, step)).await.status(),
        200
    );
}

async fn wrong_codes_count_as_failed_sign_ins_of_the_email_and_client(backend: Backend) {
    let app = app_with_proxies(backend, &[]).await;
    let on = mfa_user(&app).await;
    let token = first_factor(&app, &on.user).await;
    // Three wrong codes and two wrong passwords from one client: five failures.
    for _ in 0..3 {
        let res = verify_from(&app, "203.0.113.9", &token, "000000").await;
        app.assert_problem(res, 401, "invalid_code").await;
    }
    for _ in 0..2 {
        let res = app
            .client
            .post(app.url("/api/auth/signin"))
            .header("x-forwarded-for", "203.0.113.9")
            .json(&json!({"email": on.user.email, "password": "wrong guess"}))
            .send()
            .await
            .unwrap();
        app.assert_problem(res, 401, "invalid_credentials").await;
    }
    let step = settled_step().await;
    let good = code(&on.secret, step);
    let limited = verify_from(&app, "203.0.113.9", &token, &good).await;
    app.assert_problem(limited, 429, "rate_limited").await;
    let signin = app
        .client
        .post(app.url("/api/auth/signin"))
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"email": on.user.email, "password": on.user.password}))
        .send()
        .await
        .unwrap();
    app.assert_problem(signin, 429, "rate_limited").await;
    // From another client the same token and code still work: nothing was spent by the 429.
    assert_eq!(
        verify_from(&app, "198.51.100.1", &token, &good)
            .await
            .status(),
        200
    );
}

async fn an_accepted_totp_step_is_refused_again_even_on_another_instance(backend: Backend) {
    let app = spawn_app(backend).await;
    let twin = spawn_app_on(app.db.clone(), &[]).await;
    let on = mfa_user(&app).await;
    let step = settled_step().await;

    // The confirmation's code is spent already.
    let token = first_factor(&app, &on.user).await;
    let replay = verify(&app, &token, &code(&on.secret, on.confirmed_step)).await;
    app.assert_problem(replay, 401, "invalid_code").await;

    let current = code(&on.secret, step);
    assert_eq!(verify(&app, &token, &current).await.status(), 200);
    // The same code on the other instance, with a new first factor there.
    let token = first_factor(&twin, &on.user).await;
    let replay = verify(&twin, &token, &current).await;
    twin.assert_problem(replay, 401, "invalid_code").await;
    // The next step's code is still good, once, on either.
    let next = code(&on.secret, step + 1);
    assert_eq!(verify(&twin, &token, &next).await.status(), 200);
    let token = first_factor(&app, &on.user).await;
    app.assert_problem(verify(&app, &token, &next).await, 401, "invalid_code")
        .await;
    // An older step after a newer one is refused too.
    let token = first_factor(&app, &on.user).await;
    app.assert_problem(verify(&app, &token, &current).await, 401, "invalid_code")
        .await;
}

async fn two_verifies_racing_with_one_code_start_exactly_one_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let on = mfa_user(&app).await;
    let tokens = [
        first_factor(&app, &on.user).await,
        first_factor(&app, &on.user).await,
        first_factor(&app, &on.user).await,
        first_factor(&app, &on.user).await,
    ];
    let code = code(&on.secret, settled_step().await);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(tokens.len()));
    let racers: Vec<_> = tokens
        .iter()
        .map(|token| {
            let (client, url, barrier) = (
                app.client.clone(),
                app.url("/api/auth/mfa/verify"),
                barrier.clone(),
            );
            let body = json!({"mfaToken": token, "code": code});
            tokio::spawn(async move {
                barrier.wait().await;
                client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for racer in racers {
        statuses.push(racer.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 401, 401, 401]);
}

async fn two_recovery_codes_racing_on_one_mfa_token_start_exactly_one_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let on = mfa_user(&app).await;
    let token = first_factor(&app, &on.user).await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(3));
    let racers: Vec<_> = on.recovery[..3]
        .iter()
        .map(|code| {
            let (client, url, barrier) = (
                app.client.clone(),
                app.url("/api/auth/mfa/verify"),
                barrier.clone(),
            );
            let body = json!({"mfaToken": token, "code": code});
            tokio::spawn(async move {
                barrier.wait().await;
                client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for racer in racers {
        statuses.push(racer.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 400].contains(s)),
        "{statuses:?}"
    );
}

// ---- recovery codes ----

async fn recovery_codes_sign_in_once_typed_any_way_and_say_how_many_are_left(backend: Backend) {
    let (app, _fake, sink) = app_with_providers_and_mail(backend, &[]).await;
    let on = mfa_user(&app).await;

    // Upper case, spaces for dashes, padding around.
    let typed = format!("  {}  ", on.recovery[0].to_uppercase().replace('-', " "));
    let token = first_factor(&app, &on.user).await;
    let res = verify(&app, &token, &typed).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        claims(body["session"]["accessToken"].as_str().unwrap())["amr"],
        json!(["pwd", "otp", "mfa"])
    );
    let notice = mail_with_subject(&sink, &on.user.email, "A recovery code was used").await;
    assert!(notice.contains("9 of them are left"), "{notice}");
    assert!(!notice.contains(&on.recovery[0]));

    // Used once: the same code in its shown form is refused.
    let token = first_factor(&app, &on.user).await;
    let res = verify(&app, &token, &on.recovery[0]).await;
    app.assert_problem(res, 401, "invalid_code").await;
    // Dashes in other places, no dashes: still the code.
    let bare = on.recovery[1].replace('-', "");
    let odd = format!("{}-{}", &bare[..2], &bare[2..]);
    assert_eq!(verify(&app, &token, &odd).await.status(), 200);
    for _ in 0..100 {
        if mails_with_subject(&sink, "A recovery code was used") == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sink
        .messages()
        .iter()
        .any(|m| decoded_part(m, "text/plain").is_some_and(|t| t.contains("8 of them are left"))));
}

async fn regenerated_recovery_codes_end_the_old_set(backend: Backend) {
    let app = app_with_proxies(backend, &[]).await;
    let on = mfa_user(&app).await;
    let path = "/api/user/mfa/recovery-codes";

    let wrong = post_bearer(&app, path, &on.user.token, &json!({"code": "000000"})).await;
    app.assert_problem(wrong, 400, "invalid_code").await;
    // A recovery code works as the step-up code, and is spent by it.
    let res = post_bearer(&app, path, &on.user.token, &json!({"code": on.recovery[9]})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    let fresh: Vec<String> = body["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fresh.len(), 10);
    assert!(fresh.iter().all(|c| !on.recovery.contains(c)));

    let token = first_factor(&app, &on.user).await;
    for old in &on.recovery[..3] {
        app.assert_problem(verify(&app, &token, old).await, 401, "invalid_code")
            .await;
    }
    assert_eq!(verify(&app, &token, &fresh[0]).await.status(), 200);

    // Without MFA there is nothing to regenerate.
    let plain = app.signed_up_user().await;
    let res = post_bearer(&app, path, &plain.token, &json!({"code": "123456"})).await;
    app.assert_problem(res, 404, "not_found").await;
}

// ---- turning it off ----

async fn turning_mfa_off_needs_a_code_and_sign_in_is_one_step_again(backend: Backend) {
    let (app, _fake, sink) = app_with_providers_and_mail(backend, &[]).await;
    let on = mfa_user(&app).await;
    let off = |code: String| {
        let (app, token) = (&app, on.user.token.clone());
        async move {
            app.send_bearer(
                Method::DELETE,
                "/api/user/mfa",
                &token,
                Some(&json!({"code": code})),
            )
            .await
        }
    };

    app.assert_problem(off("000000".into()).await, 400, "invalid_code")
        .await;
    // The confirmation's step is spent: it does not turn MFA off.
    let replay = off(code(&on.secret, on.confirmed_step)).await;
    app.assert_problem(replay, 400, "invalid_code").await;
    let step = settled_step().await;
    assert_eq!(off(code(&on.secret, step)).await.status(), 204);
    app.assert_problem(off(code(&on.secret, step + 1)).await, 404, "not_found")
        .await;

    let notice = mail_with_subject(&sink, &on.user.email, "Two-factor sign-in is off").await;
    assert!(!notice.contains(&on.secret));
    let me: Value = app
        .get_bearer("/api/user", &on.user.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["mfaEnabled"], false);
    assert_eq!(first_or_session(&app, &on.user).await, "session");
    // The old recovery codes and secret are gone: enrolling again gives a new secret.
    assert_eq!(app.store.count_totp().await.unwrap(), 0);
    let again = enrol(&app, &on.user.token).await;
    assert_ne!(again["secret"], on.secret.as_str());
}

async fn a_password_change_during_the_second_step_starts_no_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let on = mfa_user(&app).await;
    let token = first_factor(&app, &on.user).await;

    let res = post_bearer(
        &app,
        "/api/user/password",
        &on.user.token,
        &json!({"currentPassword": on.user.password, "newPassword": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(res.status(), 204);

    let step = settled_step().await;
    let res = verify(&app, &token, &code(&on.secret, step)).await;
    assert_eq!(res.status(), 401, "{:?}", res.text().await);
}

// ---- OAuth ----

fn github(id: u64, email: &str) -> GithubAccount {
    GithubAccount {
        id,
        login: format!("octo{id}"),
        name: Some(format!("Octo {id}")),
        email: email.into(),
        verified: true,
    }
}

async fn oauth_app(backend: Backend) -> (TestApp, FakeProviders) {
    let fake = FakeProviders::start().await;
    let mut vars = fake.vars();
    vars.push(("AUTHVAULT_APP_CALLBACKS".into(), APP_CALLBACK.into()));
    vars.push(("AUTHVAULT_IP_RATE_LIMIT_PER_MIN".into(), "0".into()));
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    (spawn_app_with(backend, &borrowed).await, fake)
}

/// The `mfaToken` of a browser callback's redirect (which sets no session cookie).
fn redirected_mfa_token(res: &Response, to: &str) -> String {
    assert_eq!(res.status(), 302);
    assert!(set_cookie(res.headers(), "authvault.session").is_none());
    let location = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(to), "{location}");
    assert!(location.query_pairs().all(|(k, _)| k != "code"));
    location
        .query_pairs()
        .find(|(k, _)| k == "mfaToken")
        .expect("mfaToken in the redirect")
        .1
        .into_owned()
}

async fn github_and_google_browser_sign_ins_redirect_with_an_mfa_token(backend: Backend) {
    let (app, fake) = oauth_app(backend).await;
    // Google vouches for gmail.com addresses (and its workspace domains) only.
    let email = format!("mfa-{}@gmail.com", uuid::Uuid::new_v4().simple());
    let password = "correct horse battery".to_owned();
    let res = app.signup("Ada", &email, &password).await;
    assert_eq!(res.status(), 201);
    let cookie = cookie_pair(set_cookie(res.headers(), "authvault.session").unwrap());
    let body: Value = res.json().await.unwrap();
    let user = TestUser {
        id: body["user"]["id"].as_str().unwrap().to_owned(),
        name: "Ada".into(),
        email,
        password,
        token: body["session"]["accessToken"].as_str().unwrap().to_owned(),
        cookie,
    };
    let id: authvault::domain::UserId = user.id.parse().unwrap();
    app.store
        .mark_email_verified(id, authvault::clock::now())
        .await
        .unwrap();
    let on = turn_on(&app, user).await;

    // GitHub vouches for the address: it links to the account, and still asks for the code.
    fake.next_github(github(7001, &on.user.email));
    let res = browser_sign_in(&app, "github").await;
    let token = redirected_mfa_token(&res, PUBLIC_URL);
    let step = settled_step().await;
    let res = verify(&app, &token, &code(&on.secret, step)).await;
    assert_eq!(res.status(), 200);
    let cookie = cookie_pair(set_cookie(res.headers(), "authvault.session").unwrap());
    assert_eq!(
        session_of_cookie(&app, &cookie).await["amr"],
        json!(["fed", "otp", "mfa"])
    );

    // Google, to an allowed SPA callback.
    fake.next_google(GoogleAccount {
        sub: "g-7002".into(),
        email: on.user.email.clone(),
        email_verified: true,
        hd: None,
        name: Some("Goo Gle".into()),
    });
    let callback = url::form_urlencoded::byte_serialize(format!("{SPA}/signed-in").as_bytes())
        .collect::<String>();
    let start = app
        .get(&format!("/api/auth/signin/google?callbackUrl={callback}"))
        .await;
    assert_eq!(start.status(), 302);
    let flow = cookie_pair(set_cookie(start.headers(), "authvault.oauth").unwrap());
    let approved = app
        .client
        .get(start.headers()["location"].to_str().unwrap())
        .send()
        .await
        .unwrap();
    let back = url::Url::parse(approved.headers()["location"].to_str().unwrap()).unwrap();
    let res = app
        .client
        .get(app.url(&format!("{}?{}", back.path(), back.query().unwrap())))
        .header("cookie", flow)
        .send()
        .await
        .unwrap();
    let token = redirected_mfa_token(&res, &format!("{SPA}/signed-in"));
    let res = verify(&app, &token, &on.recovery[0]).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        claims(body["session"]["accessToken"].as_str().unwrap())["amr"],
        json!(["fed", "otp", "mfa"])
    );
}

async fn an_app_callback_exchange_answers_mfa_required(backend: Backend) {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    use sha2::{Digest, Sha256};
    let (app, fake) = oauth_app(backend).await;
    let verifier = "app-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let callback =
        url::form_urlencoded::byte_serialize(APP_CALLBACK.as_bytes()).collect::<String>();
    let app_sign_in = || {
        let app = &app;
        let query = format!("callbackUrl={callback}&codeChallenge={challenge}");
        async move {
            let start = app.get(&format!("/api/auth/signin/github?{query}")).await;
            let flow = cookie_pair(set_cookie(start.headers(), "authvault.oauth").unwrap());
            let approved = app
                .client
                .get(start.headers()["location"].to_str().unwrap())
                .send()
                .await
                .unwrap();
            let back = url::Url::parse(approved.headers()["location"].to_str().unwrap()).unwrap();
            let res = app
                .client
                .get(app.url(&format!("{}?{}", back.path(), back.query().unwrap())))
                .header("cookie", flow)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 302);
            let location = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
            assert!(location.as_str().starts_with(APP_CALLBACK));
            assert!(
                location.query_pairs().all(|(k, _)| k != "mfaToken"),
                "apps get a code"
            );
            let code = location
                .query_pairs()
                .find(|(k, _)| k == "code")
                .unwrap()
                .1
                .into_owned();
            app.post_json(
                "/api/auth/token",
                &json!({"code": code, "codeVerifier": verifier, "client": "app"}),
            )
            .await
        }
    };

    // A new GitHub user signs in from the app, then turns MFA on.
    fake.next_github(github(7101, "mobile-mfa@example.com"));
    let first: Value = app_sign_in().await.json().await.unwrap();
    let access = first["session"]["accessToken"].as_str().unwrap().to_owned();
    let enrolment = enrol(&app, &access).await;
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let step = settled_step().await;
    assert_eq!(
        confirm(&app, &access, &code(&secret, step - 1))
            .await
            .status(),
        200
    );

    fake.next_github(github(7101, "mobile-mfa@example.com"));
    let res = app_sign_in().await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfaRequired"], true, "{body}");
    assert!(body.get("session").is_none());
    let res = app
        .post_json(
            "/api/auth/mfa/verify",
            &json!({"mfaToken": body["mfaToken"], "code": code(&secret, step), "client": "app"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["session"]["refreshToken"].is_string());
    assert_eq!(
        claims(body["session"]["accessToken"].as_str().unwrap())["amr"],
        json!(["fed", "otp", "mfa"])
    );
}

// ---- at rest ----

async fn the_totp_secret_is_sealed_at_rest_and_rotates_with_rotate_keys(backend: Backend) {
    let app = spawn_app_with(backend, &[("AUTHVAULT_ENCRYPTION_KEYS", K1)]).await;
    let on = mfa_user(&app).await;
    // A second user with only a pending secret.
    let pending_user = app.signed_up_user().await;
    let pending = enrol(&app, &pending_user.token).await;
    let pending = pending["secret"].as_str().unwrap().to_owned();

    let contents = crate::api_keys::raw_database_contents(&app).await;
    let raw_secret = secret_bytes(&on.secret);
    for blob in &contents {
        for needle in [on.secret.as_bytes(), pending.as_bytes(), &raw_secret] {
            assert!(
                !blob.windows(needle.len()).any(|w| w == needle),
                "a TOTP secret found in the raw database"
            );
        }
        for c in &on.recovery {
            let bare = c.replace('-', "");
            for needle in [c.as_bytes(), bare.as_bytes()] {
                assert!(
                    !blob.windows(needle.len()).any(|w| w == needle),
                    "a recovery code found"
                );
            }
        }
    }

    let db = app.db.clone();
    app.stop().await;
    drop(app);
    let rotating = spawn_app_on(db.clone(), &[("AUTHVAULT_ENCRYPTION_KEYS", K1)]).await;
    let (ok, output) = crate::api_keys::run_rotate(&rotating, &format!("{K2},{K1}"));
    assert!(ok, "{output}");
    assert!(output.contains("2 keys stored"), "{output}");
    assert!(
        output.contains("done: 2 re-sealed, 0 already current, 0 failed"),
        "{output}"
    );
    let record = rotating
        .store
        .mfa(on.user.id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.secret.unwrap().key_id, "k2");
    rotating.stop().await;
    drop(rotating);

    // Without k1, the secrets still work: sign in with a code, confirm the pending one.
    let app = spawn_app_on(db, &[("AUTHVAULT_ENCRYPTION_KEYS", K2)]).await;
    let step = settled_step().await;
    let token = first_factor(&app, &on.user).await;
    assert_eq!(
        verify(&app, &token, &code(&on.secret, step)).await.status(),
        200
    );
    let res = confirm(&app, &pending_user.token, &code(&pending, step)).await;
    assert_eq!(res.status(), 200);
}

async fn malformed_second_steps_are_clear_problems(backend: Backend) {
    let app = spawn_app(backend).await;
    let on = mfa_user(&app).await;
    let token = first_factor(&app, &on.user).await;
    for body in [
        json!({}),
        json!({"mfaToken": token}),
        json!({"code": "123456"}),
        json!({"mfaToken": token, "code": 123456}),
        json!({"mfaToken": token, "code": "123456", "extra": true}),
        json!({"mfaToken": token, "code": "123456", "client": "robot"}),
    ] {
        let res = app.post_json("/api/auth/mfa/verify", &body).await;
        app.assert_problem(res, 400, "validation_failed").await;
    }
    let res = verify(&app, &"x".repeat(5000), "123456").await;
    assert_eq!(res.status(), 400);
    let res = verify(&app, &token, &"9".repeat(5000)).await;
    assert!([400, 401].contains(&res.status().as_u16()));
    let res = app
        .client
        .post(app.url("/api/auth/mfa/verify"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // None of that spent the token.
    let step = settled_step().await;
    assert_eq!(
        verify(&app, &token, &code(&on.secret, step)).await.status(),
        200
    );
    // The confirm and step-up bodies are checked the same way.
    let res = post_bearer(
        &app,
        "/api/user/mfa/totp/confirm",
        &on.user.token,
        &json!({"code": 1}),
    )
    .await;
    app.assert_problem(res, 400, "validation_failed").await;
}
