//! Access token claims and keys: `amr`, asymmetric tokens (EdDSA, ES256), the JWKS, rotation,
//! forged tokens, the access token lifetime, and a third-party resource server (`tests/resource-server`, jose) that verifies
//! tokens from the JWKS URL alone.

use authvault::signing::{JwtAlg, SigningKey};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use reqwest::header;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::*;

backend_tests!(
    hs256_publishes_no_keys_and_its_tokens_name_no_kid,
    each_algorithm_signs_with_its_first_key_and_publishes_every_key_without_private_parts,
    a_rotation_keeps_tokens_valid_until_their_key_is_dropped_across_restarts,
    forged_tokens_are_refused,
    the_access_token_lifetime_sets_the_token_and_the_cookie,
    a_resource_server_verifies_tokens_from_the_jwks_url_alone,
    amr_says_how_the_user_signed_in_and_survives_refreshes,
);

fn key(kid: &str, alg: JwtAlg) -> SigningKey {
    SigningKey::generate(kid, alg).expect("key")
}

fn keys_var(keys: &[&SigningKey]) -> String {
    keys.iter()
        .map(|k| k.to_entry().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn alg_var(alg: JwtAlg) -> &'static str {
    alg.as_str()
}

/// A token's header and payload, decoded.
fn parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let mut next = || -> Value {
        let part = it.next().expect("a part");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
    };
    (next(), next())
}

fn encode(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

async fn jwks(app: &TestApp) -> Value {
    let res = app.get("/.well-known/jwks.json").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()[header::CACHE_CONTROL].to_str().unwrap(),
        "public, max-age=300"
    );
    assert!(res.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    res.json().await.unwrap()
}

async fn status_with(app: &TestApp, token: &str) -> u16 {
    app.get_bearer("/api/user", token).await.status().as_u16()
}

async fn hs256_publishes_no_keys_and_its_tokens_name_no_kid(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(jwks(&app).await, json!({"keys": []}));
    let user = app.signed_up_user().await;
    let (header, _) = parts(&user.token);
    assert_eq!(header["alg"], "HS256");
    assert!(header.get("kid").is_none(), "{header}");
    assert_eq!(status_with(&app, &user.token).await, 200);
}

async fn each_algorithm_signs_with_its_first_key_and_publishes_every_key_without_private_parts(
    backend: Backend,
) {
    for alg in [JwtAlg::EdDsa, JwtAlg::Es256] {
        let (a, b) = (key("a", alg), key("b", alg));
        let app = spawn_app_with(
            backend,
            &[
                ("AUTHVAULT_JWT_ALG", alg_var(alg)),
                ("AUTHVAULT_SIGNING_KEYS", &keys_var(&[&a, &b])),
            ],
        )
        .await;
        let set = jwks(&app).await;
        let published = set["keys"].as_array().unwrap();
        assert_eq!(published.len(), 2, "{set}");
        for (jwk, key) in published.iter().zip([&a, &b]) {
            let mut members: Vec<&str> = jwk
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            members.sort_unstable();
            let expected: &[&str] = match alg {
                JwtAlg::Es256 => &["alg", "crv", "kid", "kty", "use", "x", "y"],
                _ => &["alg", "crv", "kid", "kty", "use", "x"],
            };
            assert_eq!(members, expected, "{jwk}");
            assert_eq!(jwk["kid"], key.kid.as_str());
            assert_eq!(jwk["alg"], alg.as_str());
            assert_eq!(jwk["use"], "sig");
        }

        let user = app.signed_up_user().await;
        let (header, payload) = parts(&user.token);
        assert_eq!(header["alg"], alg.as_str());
        assert_eq!(header["kid"], "a", "the first key signs");
        assert_eq!(status_with(&app, &user.token).await, 200);

        // The library verifies the token from the published JWK alone.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(published[0].clone()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let lib_alg = match alg {
            JwtAlg::Es256 => jsonwebtoken::Algorithm::ES256,
            _ => jsonwebtoken::Algorithm::EdDSA,
        };
        let mut validation = jsonwebtoken::Validation::new(lib_alg);
        validation.set_audience(&["authvault"]);
        validation.set_issuer(&[PUBLIC_URL]);
        let verified = jsonwebtoken::decode::<Value>(&user.token, &decoding, &validation)
            .expect("the published key verifies the token");
        assert_eq!(verified.claims, payload);
        // ... and the other published key does not.
        let other: jsonwebtoken::jwk::Jwk = serde_json::from_value(published[1].clone()).unwrap();
        let other = jsonwebtoken::DecodingKey::from_jwk(&other).unwrap();
        assert!(jsonwebtoken::decode::<Value>(&user.token, &other, &validation).is_err());
    }
}

async fn a_rotation_keeps_tokens_valid_until_their_key_is_dropped_across_restarts(
    backend: Backend,
) {
    let db = Database::fresh(backend);
    let (old, new) = (key("old", JwtAlg::EdDsa), key("new", JwtAlg::EdDsa));
    let with = |keys: &[&SigningKey]| {
        vec![
            ("AUTHVAULT_JWT_ALG".to_owned(), "EdDSA".to_owned()),
            ("AUTHVAULT_SIGNING_KEYS".to_owned(), keys_var(keys)),
        ]
    };
    async fn start(db: &Database, vars: &[(String, String)]) -> TestApp {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        spawn_app_on(db.clone(), &vars).await
    }

    let app = start(&db, &with(&[&old])).await;
    let first = app.signed_up_user().await;
    app.stop().await;

    // Step 1: the new key is published second; the old one still signs.
    let app = start(&db, &with(&[&old, &new])).await;
    assert_eq!(jwks(&app).await["keys"].as_array().unwrap().len(), 2);
    let res = app.signin(&first.email, &first.password).await;
    let token: Value = res.json().await.unwrap();
    let during = token["session"]["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(parts(&during).0["kid"], "old");
    app.stop().await;

    // Step 2: the new key signs; tokens of the old one still verify.
    let app = start(&db, &with(&[&new, &old])).await;
    assert_eq!(status_with(&app, &first.token).await, 200);
    let res = app.signin(&first.email, &first.password).await;
    let token: Value = res.json().await.unwrap();
    let after = token["session"]["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(parts(&after).0["kid"], "new");
    app.stop().await;

    // Step 3: the old key is dropped, and with it every token it signed.
    let app = start(&db, &with(&[&new])).await;
    let set = jwks(&app).await;
    assert_eq!(set["keys"].as_array().unwrap().len(), 1);
    assert_eq!(set["keys"][0]["kid"], "new");
    assert_eq!(status_with(&app, &first.token).await, 401);
    assert_eq!(status_with(&app, &during).await, 401);
    assert_eq!(status_with(&app, &after).await, 200);
}

fn hs256(key: &[u8], signed: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(signed.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// `header.payload` signed by `key` with the library.
fn signed_by(key: &SigningKey, header_kid: &str, payload: &Value) -> String {
    let alg = match key.alg() {
        JwtAlg::Es256 => jsonwebtoken::Algorithm::ES256,
        _ => jsonwebtoken::Algorithm::EdDSA,
    };
    let encoding = match key.alg() {
        JwtAlg::Es256 => jsonwebtoken::EncodingKey::from_ec_der(key.der()),
        _ => jsonwebtoken::EncodingKey::from_ed_der(key.der()),
    };
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(header_kid.to_owned());
    jsonwebtoken::encode(&header, payload, &encoding).unwrap()
}

async fn forged_tokens_are_refused(backend: Backend) {
    let real = key("a", JwtAlg::EdDsa);
    let app = spawn_app_with(
        backend,
        &[
            ("AUTHVAULT_JWT_ALG", "EdDSA"),
            ("AUTHVAULT_SIGNING_KEYS", &keys_var(&[&real])),
        ],
    )
    .await;
    let user = app.signed_up_user().await;
    assert_eq!(status_with(&app, &user.token).await, 200);
    let (_, payload) = parts(&user.token);
    let jwk = jwks(&app).await["keys"][0].clone();
    let public_x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();

    let mut forged: Vec<(&str, String)> = Vec::new();
    // Algorithm confusion: HS256 keyed with what a verifier knows of the public key.
    for (what, secret) in [
        ("HS256 keyed with the raw public key", public_x.clone()),
        ("HS256 keyed with the JWK", jwk.to_string().into_bytes()),
        (
            "HS256 keyed with x",
            jwk["x"].as_str().unwrap().as_bytes().to_vec(),
        ),
    ] {
        let signed = format!(
            "{}.{}",
            encode(&json!({"alg": "HS256", "typ": "JWT", "kid": "a"})),
            encode(&payload)
        );
        forged.push((what, format!("{signed}.{}", hs256(&secret, &signed))));
    }
    // HS256 with the server's own JWT secret (it still signs CSRF and flow cookies).
    let signed = format!(
        "{}.{}",
        encode(&json!({"alg": "HS256", "typ": "JWT"})),
        encode(&payload)
    );
    forged.push((
        "HS256 with the server secret",
        format!("{signed}.{}", hs256(JWT_SECRET.as_bytes(), &signed)),
    ));
    // alg none, with and without a kid.
    for header in [json!({"alg": "none", "kid": "a"}), json!({"alg": "none"})] {
        forged.push((
            "alg none",
            format!("{}.{}.", encode(&header), encode(&payload)),
        ));
    }
    // A foreign key: under an unknown kid, under the known kid, and of the other curve.
    let foreign = key("zzz", JwtAlg::EdDsa);
    forged.push((
        "a foreign key, unknown kid",
        signed_by(&foreign, "zzz", &payload),
    ));
    forged.push((
        "a foreign key, known kid",
        signed_by(&foreign, "a", &payload),
    ));
    forged.push((
        "ES256, known kid",
        signed_by(&key("a", JwtAlg::Es256), "a", &payload),
    ));
    // The real signature under another header.
    let real_sig = user.token.rsplit('.').next().unwrap();
    let other_header = encode(&json!({"alg": "EdDSA", "typ": "JWT", "kid": "zzz"}));
    forged.push((
        "the real signature, another kid",
        format!("{other_header}.{}.{real_sig}", encode(&payload)),
    ));
    // The real key over a changed payload.
    let mut changed = payload.clone();
    changed["sub"] = json!(uuid::Uuid::new_v4().to_string());
    let (header, _) = parts(&user.token);
    forged.push((
        "a changed payload",
        format!("{}.{}.{real_sig}", encode(&header), encode(&changed)),
    ));

    for (what, token) in forged {
        assert_eq!(status_with(&app, &token).await, 401, "{what} was accepted");
    }
    // The real token is still fine.
    assert_eq!(status_with(&app, &user.token).await, 200);
}

async fn the_access_token_lifetime_sets_the_token_and_the_cookie(backend: Backend) {
    let app = spawn_app_with(backend, &[("AUTHVAULT_ACCESS_TTL_SECS", "120")]).await;
    let res = app
        .post_json(
            "/api/auth/signup",
            &json!({"name": "Ada", "email": "ada-ttl@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let cookie = set_cookie(res.headers(), "authvault.session")
        .unwrap()
        .to_owned();
    assert!(cookie.contains("Max-Age=120"), "{cookie}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["session"]["expiresIn"], 120);
    let (_, payload) = parts(body["session"]["accessToken"].as_str().unwrap());
    assert_eq!(
        payload["exp"].as_i64().unwrap() - payload["iat"].as_i64().unwrap(),
        120
    );
}

fn resource_server() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resource-server");
    assert!(
        dir.join("node_modules/jose").is_dir(),
        "tests/resource-server/node_modules is missing: run the tests with scripts/test, which \
         installs it (npm ci --prefix tests/resource-server)"
    );
    dir
}

/// What the jose resource server makes of `token`: the verified header and payload, or why not.
async fn verify_with_jose(app: &TestApp, token: &str) -> Result<Value, String> {
    let script = resource_server().join("verify.mjs");
    let (jwks_url, token) = (app.url("/.well-known/jwks.json"), token.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .arg(jwks_url)
            .arg(PUBLIC_URL)
            .arg("authvault")
            .arg(token)
            .output()
    })
    .await
    .unwrap()
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(serde_json::from_str(&stdout).expect("a JSON line"))
    } else {
        Err(format!("{stdout} {}", String::from_utf8_lossy(&out.stderr)))
    }
}

async fn a_resource_server_verifies_tokens_from_the_jwks_url_alone(backend: Backend) {
    for alg in [JwtAlg::EdDsa, JwtAlg::Es256] {
        let app = spawn_app_with(
            backend,
            &[
                ("AUTHVAULT_JWT_ALG", alg_var(alg)),
                ("AUTHVAULT_SIGNING_KEYS", &keys_var(&[&key("rs1", alg)])),
            ],
        )
        .await;
        let user = app.signed_up_user().await;
        let verified = verify_with_jose(&app, &user.token)
            .await
            .unwrap_or_else(|e| panic!("{}: jose refused the token: {e}", alg.as_str()));
        assert_eq!(verified["header"]["alg"], alg.as_str());
        assert_eq!(verified["header"]["kid"], "rs1");
        assert_eq!(verified["payload"]["sub"], user.id.as_str());

        // A token signed by someone else's key under the same kid is refused.
        let (_, payload) = parts(&user.token);
        let forged = signed_by(&key("rs1", alg), "rs1", &payload);
        let refused = verify_with_jose(&app, &forged)
            .await
            .expect_err("jose accepted a forged token");
        assert!(refused.contains("refused"), "{refused}");
    }
}

async fn amr_says_how_the_user_signed_in_and_survives_refreshes(backend: Backend) {
    use crate::helpers::providers::{browser_sign_in, FakeProviders, GithubAccount};
    let fake = FakeProviders::start().await;
    let vars = fake.vars();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = spawn_app_with(backend, &vars).await;

    // A password: sign-up and sign-in say `pwd`, in the token and in the session answer.
    let user = app.signed_up_user().await;
    assert_eq!(parts(&user.token).1["amr"], json!(["pwd"]));
    let res = app
        .post_json(
            "/api/auth/signin",
            &json!({"email": user.email, "password": user.password, "client": "app"}),
        )
        .await;
    let body: Value = res.json().await.unwrap();
    let token = body["session"]["accessToken"].as_str().unwrap();
    assert_eq!(parts(token).1["amr"], json!(["pwd"]));
    let session: Value = app
        .get_bearer("/api/auth/session", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(session["amr"], json!(["pwd"]));

    // Kept across two refreshes.
    let mut refresh = body["session"]["refreshToken"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let res = app
            .post_json("/api/auth/refresh", &json!({"refreshToken": refresh}))
            .await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        let token = body["session"]["accessToken"].as_str().unwrap();
        assert_eq!(parts(token).1["amr"], json!(["pwd"]));
        let session: Value = app
            .get_bearer("/api/auth/session", token)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(session["amr"], json!(["pwd"]));
        refresh = body["session"]["refreshToken"].as_str().unwrap().to_owned();
    }

    // A provider: `fed`.
    fake.next_github(GithubAccount {
        id: 4242,
        login: "octo4242".into(),
        name: Some("Octo".into()),
        email: "octo-amr@example.com".into(),
        verified: true,
    });
    let res = browser_sign_in(&app, "github").await;
    assert_eq!(res.status(), 302);
    let cookie = cookie_pair(set_cookie(res.headers(), "authvault.session").expect("cookie"));
    let session: Value = app
        .client
        .get(app.url("/api/auth/session"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["amr"], json!(["fed"]), "{session}");
}
