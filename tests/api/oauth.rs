//! Sign-in with GitHub and Google against local fakes of both providers.

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{providers::*, *};

backend_tests!(
    providers_lists_the_enabled_oauth_providers,
    github_sign_in_creates_a_passwordless_user_and_sets_the_session_cookie,
    a_known_identity_signs_in_the_same_user,
    a_vouched_github_email_links_to_the_existing_account,
    an_unvouched_github_email_matching_an_account_is_409,
    google_links_only_addresses_it_vouches_for,
    google_id_tokens_that_fail_verification_are_502,
    a_rotated_google_key_is_fetched_again,
    forged_missing_and_replayed_states_are_400_invalid_state,
    a_denied_consent_redirects_back_with_the_error,
    only_allow_listed_callback_urls_are_accepted,
    an_app_callback_gets_a_one_time_code_bound_to_its_verifier,
    a_failing_provider_is_502_provider_error,
    unknown_and_disabled_providers_are_404,
    unlinking_keeps_at_least_one_way_to_sign_in,
);

const APP_CALLBACK: &str = "com.example.app:/oauth/callback";
const SPA: &str = "http://app.test";

async fn app_with_providers(backend: Backend) -> (TestApp, FakeProviders) {
    let fake = FakeProviders::start().await;
    let mut vars = fake.vars();
    vars.push(("AUTHVAULT_APP_CALLBACKS".into(), APP_CALLBACK.into()));
    vars.push(("AUTHVAULT_IP_RATE_LIMIT_PER_MIN".into(), "0".into()));
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    (spawn_app_with(backend, &borrowed).await, fake)
}

fn location(res: &Response) -> String {
    res.headers()["location"].to_str().unwrap().to_owned()
}

fn github(id: u64, email: &str, verified: bool) -> GithubAccount {
    GithubAccount {
        id,
        login: format!("octo{id}"),
        name: Some(format!("Octo {id}")),
        email: email.into(),
        verified,
    }
}

fn google(sub: &str, email: &str, verified: bool, hd: Option<&str>) -> GoogleAccount {
    GoogleAccount {
        sub: sub.into(),
        email: email.into(),
        email_verified: verified,
        hd: hd.map(str::to_owned),
        name: Some("Goo Gle".into()),
    }
}

/// A sign-in in progress: the provider has answered and the browser is about to come back.
struct Returning {
    callback: String,
    flow_cookie: String,
}

/// Starts a sign-in and lets the fake provider approve it.
async fn through_provider(app: &TestApp, provider: &str, query: &str) -> Returning {
    let start = app
        .get(&format!("/api/auth/signin/{provider}?{query}"))
        .await;
    assert_eq!(start.status(), 302, "start of the {provider} sign-in");
    let flow_cookie =
        cookie_pair(set_cookie(start.headers(), "authvault.oauth").expect("flow cookie"));
    let approved = app.client.get(location(&start)).send().await.unwrap();
    assert_eq!(approved.status(), 302, "the fake approved");
    let back = url::Url::parse(&location(&approved)).unwrap();
    assert_eq!(
        back.as_str().split('?').next().unwrap(),
        format!("{PUBLIC_URL}/api/auth/callback/{provider}")
    );
    Returning {
        callback: format!("{}?{}", back.path(), back.query().unwrap_or("")),
        flow_cookie,
    }
}

async fn come_back(app: &TestApp, returning: &Returning) -> Response {
    app.client
        .get(app.url(&returning.callback))
        .header("cookie", &returning.flow_cookie)
        .send()
        .await
        .unwrap()
}

async fn sign_in(app: &TestApp, provider: &str, query: &str) -> Response {
    let returning = through_provider(app, provider, query).await;
    come_back(app, &returning).await
}

/// The session cookie a successful browser callback set.
fn session_cookie(res: &Response) -> String {
    cookie_pair(set_cookie(res.headers(), "authvault.session").expect("session cookie"))
}

async fn me(app: &TestApp, cookie: &str) -> Value {
    let res = app
        .client
        .get(app.url("/api/user"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn providers_lists_the_enabled_oauth_providers(backend: Backend) {
    let (app, _fake) = app_with_providers(backend).await;

    let body: Value = app.get("/api/auth/providers").await.json().await.unwrap();

    assert_eq!(body["github"]["type"], "oauth");
    assert_eq!(
        body["github"]["signinUrl"],
        format!("{PUBLIC_URL}/api/auth/signin/github")
    );
    assert_eq!(
        body["github"]["callbackUrl"],
        format!("{PUBLIC_URL}/api/auth/callback/github")
    );
    assert_eq!(body["google"]["name"], "Google");
    assert_eq!(body["credentials"]["type"], "credentials");
}

async fn github_sign_in_creates_a_passwordless_user_and_sets_the_session_cookie(backend: Backend) {
    let (app, fake) = app_with_providers(backend).await;
    fake.next_github(github(101, "octo@example.com", true));

    let start = app
        .get(&format!("/api/auth/signin/github?callbackUrl={SPA}/after"))
        .await;
    assert_eq!(start.status(), 302);
    let authorize = url::Url::parse(&location(&start)).unwrap();
    let params: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert!(authorize
        .as_str()
        .starts_with(&format!("{}/login/oauth/authorize?", fake.base)));
    assert_eq!(params["client_id"], GITHUB_CLIENT_ID);
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(
        params["redirect_uri"],
        format!("{PUBLIC_URL}/api/auth/callback/github")
    );
    assert!(params["state"].len() >= 40);
    let flow = set_cookie(start.headers(), "authvault.oauth").unwrap();
    for attribute in ["HttpOnly", "SameSite=Lax", "Max-Age=600", "Path=/"] {
        assert!(flow.contains(attribute), "{flow} lacks {attribute}");
    }
    let res = sign_in(&app, "github", &format!("callbackUrl={SPA}/after")).await;

    assert_eq!(res.status(), 302);
    assert_eq!(location(&res), format!("{SPA}/after"));
    let cleared = set_cookie(res.headers(), "authvault.oauth").unwrap();
    assert!(cleared.contains("Max-Age=0"));
    let user = me(&app, &session_cookie(&res)).await;
    assert_eq!(user["email"], "octo@example.com");
    assert_eq!(user["name"], "Octo 101");
    assert_eq!(user["image"], "https://avatars.example/101.png");
    assert_eq!(user["providers"], json!(["github"]));
    assert!(fake.complaints().is_empty(), "{:?}", fake.complaints());
}

async fn a_known_identity_signs_in_the_same_user(backend: Backend) {
    let (app, fake) = app_with_providers(backend).await;
    fake.next_github(github(102, "twice@example.com", true));
    let first = me(&app, &session_cookie(&sign_in(&app, "github", "").await)).await;
    // The address changed at GitHub meanwhile: the identity still decides.
    fake.next_github(github(102, "renamed@example.com", true));

    let second = me(&app, &session_cookie(&sign_in(&app, "github", "").await)).await;

    assert_eq!(first["id"], second["id"]);
    assert_eq!(
        location(&sign_in(&app, "github", "").await),
        format!("{PUBLIC_URL}/")
    );
}

/// Marks the user's address verified, as a verification link would.
async fn verified(app: &TestApp, user: &TestUser) {
    let id = user.id.parse().unwrap();
    assert!(app
        .store
        .mark_email_verified(id, authvault::clock::now())
        .await
        .unwrap());
}

async fn a_vouched_github_email_links_to_the_existing_account(backend: Backend) {
    let (app, fake) = app_with_providers(backend).await;
    let existing = app.signed_up_user().await;
    verified(&app, &existing).await;
    fake.next_github(github(103, &existing.email, true));

    let res = sign_in(&app, "github", "").await;

    assert_eq!(res.status(), 302);
    let user = me(&app, &session_cookie(&res)).await;
    assert_eq!(user["id"], existing.id.as_str());
    assert_eq!(user["providers"], json!(["credentials", "github"]));
}

async fn an_unvouched_github_email_matching_an_account_is_409(backend: Backend) {
    let (app, fake) = app_with_providers(backend).await;
    let existing = app.signed_up_user().await;
    fake.next_github(github(104, &existing.email, false));

    let res = sign_in(&app, "github", "").await;

    assert!(set_cookie(res.headers(), "authvault.session").is_none());
    app.assert_problem(res, 409, "account_not_linked").await;
    let unchanged: Value = app
        .get_bearer("/api/user", &existing.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unchanged["providers"], json!(["credentials"]));
}

async fn google_links_only_addresses_it_vouches_for(backend: Backend) {
    let (app, fake) = app_with_providers(backend).await;
    let gmail = app
        .signup("G", "someone@gmail.com", "correct horse battery")
        .await;
    assert_eq!(gmail.status(), 201);
    let gmail: Value = gmail.json().await.unwrap();
    let id = gmail["user"]["id"].as_str().unwrap().parse().unwrap();
    app.store
        .mark_email_verified(id, authvault::clock::now())
        .await
        .unwrap();
    let corp = app
        .signup("C", "boss@corp.example", "correct horse battery")
        .await;
    assert_eq!(corp.status(), 201);
    let other = app
        .signup("O", "me@other.example", "correct horse battery")
        .await;
    assert_eq!(other.status(), 201);

    fake.next_google(google("g-1", "someone@gmail.com", true, None));
    let res = sign_in(&app, "google", "").await;
    assert_eq!(res.status(), 302);
    assert_eq!(
        me(&app, &session_cookie(&res)).await["providers"],
        json!(["credentials", "google"])
    );

    fake.next_google(google(
        "g-2",
        "boss@corp.example",
        true,
        Some("corp.example"),
    ));
    let res = sign_in(&app, "google", "").await;
    assert_eq!(
        me(&app, &session_cookie(&res)).await["email"],
        "boss@corp.example"
    );

    fake.next_google(google("g-3", "me@other.example", true, None));
    app.assert_problem(sign_in(&app, "google", "").await, 409, "account_not_linked")
        .await;

    fake.next_google(google("g-4", "someone@gmail.com", false, None));
    app.assert_problem(sign_in(&app, "google", "").await, 409, "account_not_linked")
        .await;

    fake.next_google(google("g-5", "brand.new@gmail.com", true, None));
    let res = sign_in(&app, "google", "").await;
    let user = me(&app, &session_cookie(&res)).await;
    assert_eq!(user["providers"], json!(["google"]));
    assert_eq!(user["name"], "Goo Gle");
    assert!(fake.complaints().is_empty(), "{:?}", fake.complaints());
}

async fn google_id_tokens_that_fail_verification_are_502(backend: Backend) {
    let (app, fake) = app_with_providers(backend).await;

    for mode in [
        IdToken::WrongKey,
        IdToken::WrongAudience,
        IdToken::WrongNonce,
        IdToken::WrongIssuer,
        IdToken::Expired,
    ] {
        fake.id_token(mode);
        fake.next_google(google(
            &format!("forged-{mode:?}"),
            "victim@gmail.com",
            true,
            None,
        ));
        let res = sign_in(&app, "google", "").await;
        assert!(
            set_cookie(res.headers(), "authvault.session").is_none(),
            "{mode:?}"
        );
        app.assert_problem(res, 502, "provider_error").await;
    }
    let email = authvault::domain::Email::parse("victim@gmail.com").unwrap();
    assert!(app.store.user_by_email(&email).await.unwrap().is_none());
    fake.id_token(IdToken::Good);
    assert_eq!(sign_in(&app, "google", "").await.status(), 302);
}

async fn a_rotated_google_key_is_fetched_again(backend: Backend) {
    let (app, fake) = app_with_providers(backend).await;
    fake.next_google(google("g-rot", "rot@gmail.com", true, None));
    assert_eq!(sign_in(&app, "google", "").await.status(), 302);
    assert_eq!(sign_in(&app, "google", "").await.status(), 302);
    assert_eq!(fake.jwks_fetches(), 1, "the JWKS is cached");

    fake.rotate_key_id("key-2");
    let res = sign_in(&app, "google", "").await;

    assert_eq!(res.status(), 302);
    assert_eq!(
        fake.jwks_fetches(),
        2,
        "an unknown kid fetched the JWKS again"
    );
}

async fn forged_missing_and_replayed_states_are_400_invalid_state(backend: Backend) {
    let (app, fake) = app_with_providers(backend).await;
    fake.next_github(github(105, "state@example.com", true));

    let returning = through_provider(&app, "github", "").await;
    let no_cookie = app.get(&returning.callback).await;
    app.assert_problem(no_cookie, 400, "invalid_state").await;

    let forged_state = returning.callback.replace("state=", "state=x");
    let res = app
        .client
        .get(app.url(&forged_state))
        .header("cookie", &returning.flow_cookie)
        .send()
        .await
        .unwrap();
    app.assert_problem(res, 400, "invalid_state").await;

    let forged_cookie = Returning {
        callback: returning.callback.clone(),
        flow_cookie: format!("{}x", returning.flow_cookie),
    };
    app.assert_problem(come_back(&app, &forged_cookie).await, 400, "invalid_state")
        .await;

    // Another provider's callback with this flow.
    let res = app
        .client
        .get(app.url(&returning.callback.replace("/github", "/google")))
        .header("cookie", &returning.flow_cookie)
        .send()
        .await
        .unwrap();
    app.assert_problem(res, 400, "invalid_state").await;

    assert_eq!(come_back(&app, &returning).await.status(), 302);
    let replay = come_back(&app, &returning).await;
    app.assert_problem(replay, 400, "invalid_state").await;
}

async fn a_denied_consent_redirects_back_with_the_error(backend: Backend) {
    let (app, _fake) = app_with_providers(backend).await;
    let start = app
        .get(&format!(
            "/api/auth/signin/github?callbackUrl={SPA}/done?x=1"
        ))
        .await;
    let flow_cookie = cookie_pair(set_cookie(start.headers(), "authvault.oauth").unwrap());
    let state = url::Url::parse(&location(&start))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .to_string();

    let res = app
        .client
        .get(app.url(&format!(
            "/api/auth/callback/github?error=access_denied&error_description=The+user+said+no&state={state}"
        )))
        .header("cookie", flow_cookie)
        .send()
        .await
        .unwrap();

    assert_eq!(res.status(), 302);
    assert_eq!(
        location(&res),
        format!("{SPA}/done?x=1&error=access_denied")
    );
    assert!(set_cookie(res.headers(), "authvault.session").is_none());
}

async fn only_allow_listed_callback_urls_are_accepted(backend: Backend) {
    let (app, _fake) = app_with_providers(backend).await;

    for bad in [
        "https://evil.example/",
        "http://app.test.evil.example/",
        "http://app.test@evil.example/",
        "//evil.example",
        "javascript:alert(1)",
        "not a url",
        "com.example.app:/other",
        "http://app.test:8080/",
    ] {
        let res = app
            .get(&format!(
                "/api/auth/signin/github?callbackUrl={}",
                url::form_urlencoded::byte_serialize(bad.as_bytes()).collect::<String>()
            ))
            .await;
        assert!(res.headers().get("location").is_none(), "{bad} redirected");
        app.assert_problem(res, 400, "invalid_callback_url").await;
    }
    for good in [
        format!("{SPA}/"),
        format!("{SPA}/deep/path?q=1"),
        format!("{PUBLIC_URL}/"),
    ] {
        let res = app
            .get(&format!(
                "/api/auth/signin/github?callbackUrl={}",
                url::form_urlencoded::byte_serialize(good.as_bytes()).collect::<String>()
            ))
            .await;
        assert_eq!(res.status(), 302, "{good}");
    }
}

async fn an_app_callback_gets_a_one_time_code_bound_to_its_verifier(backend: Backend) {
    let (app, fake) = app_with_providers(backend).await;
    let verifier = "app-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
    let challenge = {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
        use sha2::{Digest, Sha256};
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
    };
    let callback =
        url::form_urlencoded::byte_serialize(APP_CALLBACK.as_bytes()).collect::<String>();

    let missing = app
        .get(&format!("/api/auth/signin/github?callbackUrl={callback}"))
        .await;
    let problem = app.assert_problem(missing, 400, "validation_failed").await;
    assert!(problem.errors.unwrap().contains_key("codeChallenge"));

    let exchange = |code: String, verifier: &'static str| {
        let app = &app;
        async move {
            app.post_json(
                "/api/auth/token",
                &json!({"code": code, "codeVerifier": verifier, "client": "app"}),
            )
            .await
        }
    };
    let code_of = |res: &Response| {
        let back = url::Url::parse(&location(res)).unwrap();
        assert!(back.as_str().starts_with(APP_CALLBACK));
        back.query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .to_string()
    };

    fake.next_github(github(106, "mobile@example.com", true));
    let query = format!("callbackUrl={callback}&codeChallenge={challenge}");
    let res = sign_in(&app, "github", &query).await;
    assert_eq!(res.status(), 302);
    assert!(
        set_cookie(res.headers(), "authvault.session").is_none(),
        "apps get no cookie"
    );
    let code = code_of(&res);

    let ok = exchange(code.clone(), verifier).await;
    assert_eq!(ok.status(), 200);
    assert!(set_cookie(ok.headers(), "authvault.session").is_none());
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["user"]["email"], "mobile@example.com");
    let token = body["session"]["accessToken"].as_str().unwrap();
    assert_eq!(app.get_bearer("/api/user", token).await.status(), 200);
    app.assert_problem(exchange(code, verifier).await, 400, "invalid_code")
        .await;

    // A wrong verifier spends the code: the real app cannot use it afterwards either.
    let res = sign_in(&app, "github", &query).await;
    let code = code_of(&res);
    let thief = exchange(
        code.clone(),
        "some-other-verifier-0123456789-abcdefghijklmn",
    )
    .await;
    app.assert_problem(thief, 400, "invalid_code").await;
    app.assert_problem(exchange(code, verifier).await, 400, "invalid_code")
        .await;
    app.assert_problem(
        exchange("made-up".into(), verifier).await,
        400,
        "invalid_code",
    )
    .await;
}

async fn a_failing_provider_is_502_provider_error(backend: Backend) {
    let (app, fake) = app_with_providers(backend).await;
    fake.next_github(github(107, "fail@example.com", true));
    fake.next_google(google("g-fail", "fail@gmail.com", true, None));

    fake.token_endpoint(TokenEndpoint::Fails);
    for provider in ["github", "google"] {
        app.assert_problem(sign_in(&app, provider, "").await, 502, "provider_error")
            .await;
    }
    fake.token_endpoint(TokenEndpoint::Slow);
    let started = std::time::Instant::now();
    app.assert_problem(sign_in(&app, "github", "").await, 502, "provider_error")
        .await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(12),
        "bounded by the client timeout"
    );
    fake.token_endpoint(TokenEndpoint::Normal);

    // A provider that is not there at all.
    let dead = spawn_app_with(
        backend,
        &[
            ("GITHUB_CLIENT_ID", GITHUB_CLIENT_ID),
            ("GITHUB_CLIENT_SECRET", GITHUB_CLIENT_SECRET),
            ("GITHUB_URL", &fake.base),
            ("GITHUB_API_URL", "http://127.0.0.1:9"),
        ],
    )
    .await;
    app.assert_problem(sign_in(&dead, "github", "").await, 502, "provider_error")
        .await;
}

async fn unknown_and_disabled_providers_are_404(backend: Backend) {
    let (app, _fake) = app_with_providers(backend).await;
    let plain = spawn_app(backend).await;

    app.assert_problem(
        app.get("/api/auth/signin/facebook").await,
        404,
        "unknown_provider",
    )
    .await;
    app.assert_problem(
        app.get("/api/auth/signin/credentials").await,
        404,
        "unknown_provider",
    )
    .await;
    plain
        .assert_problem(
            plain.get("/api/auth/signin/github").await,
            404,
            "unknown_provider",
        )
        .await;
    plain
        .assert_problem(
            plain.get("/api/auth/callback/github?code=x&state=y").await,
            404,
            "unknown_provider",
        )
        .await;
}

async fn unlinking_keeps_at_least_one_way_to_sign_in(backend: Backend) {
    let (app, fake) = app_with_providers(backend).await;
    let existing = app.signed_up_user().await;
    verified(&app, &existing).await;
    fake.next_github(github(108, &existing.email, true));
    assert_eq!(sign_in(&app, "github", "").await.status(), 302);
    let unlink = |token: String, provider: &'static str| {
        let app = &app;
        async move {
            app.send_bearer(
                Method::DELETE,
                &format!("/api/user/providers/{provider}"),
                &token,
                None,
            )
            .await
        }
    };

    let res = unlink(existing.token.clone(), "github").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["providers"],
        json!(["credentials"])
    );
    app.assert_problem(
        unlink(existing.token.clone(), "github").await,
        404,
        "not_found",
    )
    .await;
    app.assert_problem(
        unlink(existing.token.clone(), "facebook").await,
        404,
        "not_found",
    )
    .await;

    fake.next_github(github(109, "only-github@example.com", true));
    let res = sign_in(&app, "github", "").await;
    let cookie = session_cookie(&res);
    let me = me(&app, &cookie).await;
    let user = app
        .store
        .user_by_id(me["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let token = app.token_for(&user, authvault::clock::now()).await;
    app.assert_problem(unlink(token, "github").await, 409, "last_sign_in_method")
        .await;
}
