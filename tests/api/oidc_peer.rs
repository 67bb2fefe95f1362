//! Google sign-in against an OpenID Connect provider nobody here wrote: the npm package
//! oauth2-mock-server, run by `tests/oidc-peer/server.js`, which scripts/test starts and names in
//! `AUTHVAULT_TEST_OIDC_PEER_URL`. The peer checks PKCE S256, client_secret_basic, single-use
//! codes and the redirect_uri, and signs RS256 ID tokens with the nonce it was given.

use authvault::domain::{AuthProvider, Email};
use reqwest::{header, Response};
use serde_json::{json, Value};

use crate::helpers::*;

/// The client registered in `tests/oidc-peer/server.js`.
const CLIENT_ID: &str = "authvault-peer-client.apps.example";
const CLIENT_SECRET: &str = "authvault-peer-secret";
/// The account the peer signs in (`ACCOUNT` in server.js).
const PEER_SUB: &str = "104217799340111111111";
const PEER_EMAIL: &str = "peer.user@gmail.com";
/// Where the app wants the browser afterwards (allowed: an origin of AUTHVAULT_CORS_ORIGINS).
const AFTER: &str = "http://app.test/welcome";

backend_tests!(
    a_google_sign_in_through_the_peer_creates_the_user_and_signs_them_in_again,
    an_id_token_from_another_issuer_is_refused_and_creates_no_user,
    a_wrong_client_secret_is_refused_by_the_peer_and_creates_no_user,
);

/// The peer's URL; the tests never skip without it.
fn peer_url() -> String {
    std::env::var("AUTHVAULT_TEST_OIDC_PEER_URL").unwrap_or_else(|_| {
        panic!(
            "AUTHVAULT_TEST_OIDC_PEER_URL is not set: run the tests with scripts/test, which \
             installs and starts the OIDC peer (tests/oidc-peer) and sets it"
        )
    })
}

/// An app whose Google client points at the peer, with some variables changed.
async fn spawn_with_peer(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    let peer = peer_url();
    let urls = [
        ("GOOGLE_AUTH_URL", format!("{peer}/authorize")),
        ("GOOGLE_TOKEN_URL", format!("{peer}/token")),
        ("GOOGLE_USERINFO_URL", format!("{peer}/userinfo")),
        ("GOOGLE_JWKS_URL", format!("{peer}/jwks")),
        ("GOOGLE_ISSUER", peer.clone()),
    ];
    let mut vars: Vec<(&str, &str)> = vec![
        ("GOOGLE_CLIENT_ID", CLIENT_ID),
        ("GOOGLE_CLIENT_SECRET", CLIENT_SECRET),
    ];
    vars.extend(urls.iter().map(|(k, v)| (*k, v.as_str())));
    vars.extend_from_slice(overrides);
    spawn_app_with(backend, &vars).await
}

fn query_param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn location(res: &Response) -> url::Url {
    let raw = res.headers()[header::LOCATION]
        .to_str()
        .expect("ascii Location");
    url::Url::parse(raw).expect("Location is a URL")
}

/// Starts a Google sign-in, lets the peer authorize it, and brings its answer back to the app:
/// the provider's redirect goes to the public URL (nothing listens there), so its path and query
/// are sent to the app's own address with the flow cookie. Returns the callback's response.
async fn sign_in_through_the_peer(app: &TestApp) -> Response {
    let peer = peer_url();
    let res = app
        .get(&format!("/api/auth/signin/google?callbackUrl={AFTER}"))
        .await;
    assert_eq!(res.status(), 302, "sign-in start");
    let flow = cookie_pair(set_cookie(res.headers(), "authvault.oauth").expect("flow cookie"));
    let authorize = location(&res);
    assert!(
        authorize
            .as_str()
            .starts_with(&format!("{peer}/authorize?")),
        "{authorize}"
    );
    let redirect_uri = format!("{PUBLIC_URL}/api/auth/callback/google");
    for (name, expected) in [
        ("client_id", CLIENT_ID),
        ("redirect_uri", redirect_uri.as_str()),
        ("response_type", "code"),
        ("scope", "openid email profile"),
        ("code_challenge_method", "S256"),
    ] {
        assert_eq!(
            query_param(&authorize, name).as_deref(),
            Some(expected),
            "{name} in {authorize}"
        );
    }
    let state = query_param(&authorize, "state").expect("state");
    assert!(query_param(&authorize, "nonce").is_some_and(|n| !n.is_empty()));
    assert_eq!(
        query_param(&authorize, "code_challenge").map(|c| c.len()),
        Some(43)
    );

    let res = app
        .client
        .get(authorize.as_str())
        .send()
        .await
        .expect("the peer answers");
    assert_eq!(res.status(), 302, "the peer's authorize");
    let back = location(&res);
    assert!(
        back.as_str().starts_with(&format!("{redirect_uri}?")),
        "{back}"
    );
    assert_eq!(
        query_param(&back, "error"),
        None,
        "the peer refused: {back}"
    );
    assert_eq!(query_param(&back, "state").as_deref(), Some(state.as_str()));
    assert!(query_param(&back, "code").is_some(), "{back}");

    let path_and_query = &back[url::Position::BeforePath..];
    app.client
        .get(app.url(path_and_query))
        .header(header::COOKIE, flow)
        .send()
        .await
        .expect("request")
}

/// `GET /api/user` with a session cookie.
async fn user_with_cookie(app: &TestApp, session: &str) -> Value {
    let res = app
        .client
        .get(app.url("/api/user"))
        .header(header::COOKIE, session)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    res.json().await.expect("json")
}

async fn assert_no_user(app: &TestApp) {
    let email = Email::parse(PEER_EMAIL).unwrap();
    assert!(app.store.user_by_email(&email).await.unwrap().is_none());
    assert!(app
        .store
        .user_by_identity(AuthProvider::Google, PEER_SUB)
        .await
        .unwrap()
        .is_none());
}

async fn a_google_sign_in_through_the_peer_creates_the_user_and_signs_them_in_again(
    backend: Backend,
) {
    let app = spawn_with_peer(backend, &[]).await;

    let res = sign_in_through_the_peer(&app).await;

    assert_eq!(res.status(), 302, "callback");
    assert_eq!(res.headers()[header::LOCATION], AFTER);
    let flow_cleared = set_cookie(res.headers(), "authvault.oauth").expect("flow cookie cleared");
    assert!(flow_cleared.contains("Max-Age=0"), "{flow_cleared}");
    let session =
        cookie_pair(set_cookie(res.headers(), "authvault.session").expect("session cookie"));
    let user = user_with_cookie(&app, &session).await;
    assert_eq!(user["email"], PEER_EMAIL);
    assert_eq!(user["providers"], json!(["google"]));
    assert_eq!(user["name"], "Peer User");
    let id = user["id"].as_str().expect("id").to_owned();
    let linked = app
        .store
        .user_by_identity(AuthProvider::Google, PEER_SUB)
        .await
        .unwrap()
        .expect("the identity is stored under the peer's sub");
    assert_eq!(linked.id.to_string(), id);

    let res = sign_in_through_the_peer(&app).await;

    assert_eq!(res.status(), 302, "second callback");
    assert_eq!(res.headers()[header::LOCATION], AFTER);
    let again =
        cookie_pair(set_cookie(res.headers(), "authvault.session").expect("session cookie"));
    assert_ne!(again, session);
    let user = user_with_cookie(&app, &again).await;
    assert_eq!(user["id"], id.as_str());
    assert_eq!(user["providers"], json!(["google"]));
}

async fn an_id_token_from_another_issuer_is_refused_and_creates_no_user(backend: Backend) {
    // The peer always puts the client id it authenticated into `aud`, so the ID token is made
    // foreign by its issuer instead: authvault expects Google's.
    let app = spawn_with_peer(backend, &[("GOOGLE_ISSUER", "https://accounts.google.com")]).await;

    let res = sign_in_through_the_peer(&app).await;

    assert!(set_cookie(res.headers(), "authvault.session").is_none());
    app.assert_problem(res, 502, "provider_error").await;
    assert_no_user(&app).await;
}

async fn a_wrong_client_secret_is_refused_by_the_peer_and_creates_no_user(backend: Backend) {
    let app = spawn_with_peer(backend, &[("GOOGLE_CLIENT_SECRET", "not-the-secret")]).await;

    let res = sign_in_through_the_peer(&app).await;

    assert!(set_cookie(res.headers(), "authvault.session").is_none());
    app.assert_problem(res, 502, "provider_error").await;
    assert_no_user(&app).await;
}
