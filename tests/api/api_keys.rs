//! The key vault: masked reads, partial updates, isolation between users, sealing at rest,
//! and rotation of the encryption keys.

use std::process::Command;

use authvault::{
    config::parse_encryption_keys,
    domain::{KeyProvider, UserId},
    vault::{
        rotate::{rotate_all, Progress},
        KeyRing,
    },
};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::helpers::*;

backend_tests!(
    a_new_user_has_no_keys,
    keys_come_back_masked_as_the_contract_says,
    a_partial_update_sets_removes_and_leaves_keys,
    only_the_changed_key_gets_a_new_updated_at,
    invalid_keys_and_unknown_providers_are_refused_and_nothing_is_stored,
    delete_removes_one_key_and_unknown_providers_are_404,
    key_writes_by_cookie_need_the_csrf_token,
    users_never_see_or_touch_each_others_keys,
    no_plaintext_key_is_anywhere_in_the_raw_database,
    ciphertexts_swapped_between_users_fail_to_open,
    deleting_the_account_deletes_its_keys,
    rotate_keys_reseals_everything_and_the_old_key_can_then_go,
    rotate_keys_reports_keys_it_cannot_open_and_exits_non_zero,
    rotation_concurrent_with_updates_loses_no_update,
);

pub(crate) const K1: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
pub(crate) const K2: &str = "k2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

async fn keys(app: &TestApp, token: &str) -> Value {
    let res = app.get_bearer("/api/user/api-keys", token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    res.json().await.unwrap()
}

async fn set_keys(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.send_bearer(Method::POST, "/api/user/api-keys", token, Some(body))
        .await
}

async fn a_new_user_has_no_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    let body = keys(&app, &user.token).await;

    assert_eq!(
        body,
        json!({"apiKeys": {"togetherAI": null, "codeRabbit": null, "oumi": null, "kestra": null}})
    );
}

async fn keys_come_back_masked_as_the_contract_says(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    let res = set_keys(
        &app,
        &user.token,
        &json!({
            "togetherAI": "sk-abc12-0123456789-wxyz",
            "codeRabbit": "cr-12345wxyz",
            "oumi": "short",
        }),
    )
    .await;

    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let k = &body["apiKeys"];
    assert_eq!(k["togetherAI"]["masked"], "sk-abc12...wxyz");
    assert_eq!(k["codeRabbit"]["masked"], "...wxyz");
    assert_eq!(k["oumi"]["masked"], "********");
    assert_eq!(k["kestra"], Value::Null);
    assert!(k["togetherAI"]["updatedAt"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(keys(&app, &user.token).await, body, "GET shows the same");
    let text = body.to_string();
    assert!(!text.contains("0123456789") && !text.contains("cr-12345"));
}

async fn a_partial_update_sets_removes_and_leaves_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    set_keys(
        &app,
        &user.token,
        &json!({"togetherAI": "tg-000000000001", "codeRabbit": "cr-000000000001", "oumi": "ou-000000000001"}),
    )
    .await;

    let res = set_keys(
        &app,
        &user.token,
        &json!({"togetherAI": null, "codeRabbit": "", "kestra": "ke-000000000001"}),
    )
    .await;

    let body: Value = res.json().await.unwrap();
    let k = &body["apiKeys"];
    assert_eq!(k["togetherAI"], Value::Null);
    assert_eq!(k["codeRabbit"], Value::Null);
    assert_eq!(
        k["oumi"]["masked"], "...0001",
        "absent fields are left alone"
    );
    assert_eq!(k["kestra"]["masked"], "...0001");
    let empty = set_keys(&app, &user.token, &json!({})).await;
    assert_eq!(empty.status(), 200);
    assert_eq!(empty.json::<Value>().await.unwrap(), body);
}

async fn only_the_changed_key_gets_a_new_updated_at(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    let first: Value = set_keys(
        &app,
        &user.token,
        &json!({"togetherAI": "tg-000000000001", "oumi": "ou-000000000001"}),
    )
    .await
    .json()
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let second: Value = set_keys(&app, &user.token, &json!({"togetherAI": "tg-000000000002"}))
        .await
        .json()
        .await
        .unwrap();

    let (a, b) = (&first["apiKeys"], &second["apiKeys"]);
    assert_ne!(a["togetherAI"]["updatedAt"], b["togetherAI"]["updatedAt"]);
    assert_eq!(a["oumi"]["updatedAt"], b["oumi"]["updatedAt"]);
    assert_eq!(b["togetherAI"]["masked"], "...0002");
}

async fn invalid_keys_and_unknown_providers_are_refused_and_nothing_is_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;

    for (body, field) in [
        (json!({"openAI": "sk-000000000000"}), "openAI"),
        (json!({"togetherAI": "has a space"}), "togetherAI"),
        (json!({"togetherAI": "x".repeat(513)}), "togetherAI"),
        (json!({"togetherAI": "naïve-key-123"}), "togetherAI"),
        (json!({"togetherAI": "tab\tkey"}), "togetherAI"),
        (json!({"togetherAI": 12345}), "togetherAI"),
        (json!({"togetherAI": {"$ne": null}}), "togetherAI"),
        (
            json!({"oumi": "fine-key-00001", "kestra": "bad key"}),
            "kestra",
        ),
    ] {
        let res = set_keys(&app, &user.token, &body).await;
        let problem = app.assert_problem(res, 400, "validation_failed").await;
        assert!(problem.errors.unwrap().contains_key(field), "{body}");
    }
    assert_eq!(
        keys(&app, &user.token).await["apiKeys"],
        json!({"togetherAI": null, "codeRabbit": null, "oumi": null, "kestra": null}),
        "a refused request changes nothing"
    );
    let max = set_keys(&app, &user.token, &json!({"kestra": "k".repeat(512)})).await;
    assert_eq!(max.status(), 200);
}

async fn delete_removes_one_key_and_unknown_providers_are_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    set_keys(
        &app,
        &user.token,
        &json!({"togetherAI": "tg-000000000001", "oumi": "ou-000000000001"}),
    )
    .await;

    let res = app
        .send_bearer(
            Method::DELETE,
            "/api/user/api-keys/togetherAI",
            &user.token,
            None,
        )
        .await;
    assert_eq!(res.status(), 204);
    let again = app
        .send_bearer(
            Method::DELETE,
            "/api/user/api-keys/togetherAI",
            &user.token,
            None,
        )
        .await;
    assert_eq!(again.status(), 204);
    let unknown = app
        .send_bearer(
            Method::DELETE,
            "/api/user/api-keys/openAI",
            &user.token,
            None,
        )
        .await;
    app.assert_problem(unknown, 404, "unknown_provider").await;

    let k = keys(&app, &user.token).await;
    assert_eq!(k["apiKeys"]["togetherAI"], Value::Null);
    assert_eq!(k["apiKeys"]["oumi"]["masked"], "...0001");
}

async fn key_writes_by_cookie_need_the_csrf_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    let (csrf, csrf_cookie) = app.csrf_for(&user.cookie).await;

    let without = app
        .client
        .post(app.url("/api/user/api-keys"))
        .header("cookie", &user.cookie)
        .json(&json!({"togetherAI": "tg-000000000001"}))
        .send()
        .await
        .unwrap();
    app.assert_problem(without, 403, "csrf_failed").await;
    let delete_without = app
        .client
        .delete(app.url("/api/user/api-keys/oumi"))
        .header("cookie", &user.cookie)
        .send()
        .await
        .unwrap();
    app.assert_problem(delete_without, 403, "csrf_failed").await;

    let with = app
        .client
        .post(app.url("/api/user/api-keys"))
        .header("cookie", format!("{}; {csrf_cookie}", user.cookie))
        .header("x-csrf-token", csrf)
        .json(&json!({"togetherAI": "tg-000000000001"}))
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    let anonymous = app.get("/api/user/api-keys").await;
    app.assert_problem(anonymous, 401, "unauthenticated").await;
}

async fn users_never_see_or_touch_each_others_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.signed_up_user().await;
    let bob = app.signed_up_user().await;
    set_keys(
        &app,
        &alice.token,
        &json!({"togetherAI": "alice-key-000000000000001"}),
    )
    .await;

    assert_eq!(
        keys(&app, &bob.token).await["apiKeys"]["togetherAI"],
        Value::Null
    );
    set_keys(
        &app,
        &bob.token,
        &json!({"togetherAI": "bob-key-0000000000000000002"}),
    )
    .await;
    app.send_bearer(
        Method::DELETE,
        "/api/user/api-keys/togetherAI",
        &bob.token,
        None,
    )
    .await;
    set_keys(
        &app,
        &bob.token,
        &json!({"togetherAI": null, "oumi": "bob-oumi-0001"}),
    )
    .await;

    let k = keys(&app, &alice.token).await;
    assert_eq!(k["apiKeys"]["togetherAI"]["masked"], "alice-ke...0001");
    assert_eq!(k["apiKeys"]["oumi"], Value::Null);
    // There is no way to name another user: the routes take no user id at all.
    let res = app
        .send_bearer(
            Method::GET,
            &format!("/api/user/api-keys?userId={}", alice.id),
            &bob.token,
            None,
        )
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["apiKeys"]["togetherAI"], Value::Null);
}

/// Every string and blob in the raw database, as bytes.
pub(crate) async fn raw_database_contents(app: &TestApp) -> Vec<Vec<u8>> {
    let url = &app.db.url;
    if let Some(path) = url.strip_prefix("sqlite://") {
        let conn = rusqlite::Connection::open(path).unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(tables.contains(&"api_keys".to_string()));
        let mut out = Vec::new();
        for table in tables {
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
            let columns = stmt.column_count();
            let mut rows = stmt.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                for i in 0..columns {
                    use rusqlite::types::ValueRef;
                    match row.get_ref(i).unwrap() {
                        ValueRef::Text(t) | ValueRef::Blob(t) => out.push(t.to_vec()),
                        _ => {}
                    }
                }
            }
        }
        // And the files themselves, write-ahead log included.
        for suffix in ["", "-wal"] {
            if let Ok(bytes) = std::fs::read(format!("{path}{suffix}")) {
                out.push(bytes);
            }
        }
        out
    } else {
        use futures_util::TryStreamExt;
        let options = mongodb::options::ClientOptions::parse(url).await.unwrap();
        let name = options.default_database.clone().unwrap();
        let client = mongodb::Client::with_options(options).unwrap();
        let db = client.database(&name);
        let mut out = Vec::new();
        let collections = db.list_collection_names().await.unwrap();
        assert!(collections.contains(&"users".to_string()));
        for collection in collections {
            let docs: Vec<mongodb::bson::Document> = db
                .collection(&collection)
                .find(mongodb::bson::doc! {})
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            for d in docs {
                let mut bytes = Vec::new();
                d.to_writer(&mut bytes).unwrap();
                out.push(bytes);
                out.push(
                    mongodb::bson::Bson::Document(d)
                        .into_relaxed_extjson()
                        .to_string()
                        .into_bytes(),
                );
            }
        }
        out
    }
}

async fn no_plaintext_key_is_anywhere_in_the_raw_database(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    let secrets = [
        "tgp_v1_SECRETtogether0123456789",
        "cr_SECRETcoderabbit987654",
        "oumi-SECRET-42424242",
        "kestra.SECRET.~!@#$%",
    ];
    set_keys(
        &app,
        &user.token,
        &json!({"togetherAI": secrets[0], "codeRabbit": secrets[1], "oumi": secrets[2], "kestra": secrets[3]}),
    )
    .await;
    // And once more, so that old values had a chance to linger.
    set_keys(
        &app,
        &user.token,
        &json!({"togetherAI": format!("{}-v2", secrets[0])}),
    )
    .await;

    let contents = raw_database_contents(&app).await;

    assert!(!contents.is_empty());
    for secret in secrets {
        // The distinctive middle of each key, so that a stored mask would not hide a leak.
        let needle = &secret.as_bytes()[4..secret.len() - 4];
        for blob in &contents {
            assert!(
                !blob.windows(needle.len()).any(|w| w == needle),
                "plaintext of a key found in the raw database"
            );
        }
    }
    assert_eq!(app.store.count_api_keys().await.unwrap(), 4);
}

async fn ciphertexts_swapped_between_users_fail_to_open(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.signed_up_user().await;
    let bob = app.signed_up_user().await;
    set_keys(
        &app,
        &alice.token,
        &json!({"togetherAI": "alice-key-000000000000001"}),
    )
    .await;
    set_keys(
        &app,
        &bob.token,
        &json!({"togetherAI": "bob-key-0000000000000000002"}),
    )
    .await;
    let (a_id, b_id): (UserId, UserId) = (alice.id.parse().unwrap(), bob.id.parse().unwrap());
    let a = app.store.api_keys(a_id).await.unwrap().remove(0).sealed;
    let b = app.store.api_keys(b_id).await.unwrap().remove(0).sealed;
    let now = authvault::clock::now();
    app.store
        .update_api_keys(a_id, &[(KeyProvider::TogetherAi, Some(b))], now)
        .await
        .unwrap();
    app.store
        .update_api_keys(b_id, &[(KeyProvider::TogetherAi, Some(a.clone()))], now)
        .await
        .unwrap();
    // Moving a ciphertext to another provider of the same user fails too.
    app.store
        .update_api_keys(a_id, &[(KeyProvider::Kestra, Some(a))], now)
        .await
        .unwrap();

    for token in [&alice.token, &bob.token] {
        let res = app.get_bearer("/api/user/api-keys", token).await;
        let problem = app.assert_problem(res, 500, "vault_open_failed").await;
        assert!(!problem.detail.contains("key-0000"));
    }
}

async fn deleting_the_account_deletes_its_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.signed_up_user().await;
    let other = app.signed_up_user().await;
    set_keys(
        &app,
        &user.token,
        &json!({"togetherAI": "tg-000000000001", "oumi": "ou-000000000001"}),
    )
    .await;
    set_keys(&app, &other.token, &json!({"oumi": "ou-000000000002"})).await;

    let res = app
        .send_bearer(
            Method::DELETE,
            "/api/user",
            &user.token,
            Some(&json!({"password": user.password})),
        )
        .await;

    assert_eq!(res.status(), 204);
    assert_eq!(app.store.count_api_keys().await.unwrap(), 1);
    assert!(app
        .store
        .api_keys(user.id.parse().unwrap())
        .await
        .unwrap()
        .is_empty());
}

/// Runs `authvault rotate-keys` on the app's database with `keys`.
pub(crate) fn run_rotate(app: &TestApp, keys: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_authvault"))
        .arg("rotate-keys")
        .current_dir(dir.path())
        .env_clear()
        .env("AUTHVAULT_DATABASE_URL", &app.db.url)
        .env("AUTHVAULT_JWT_SECRET", JWT_SECRET)
        .env("AUTHVAULT_ENCRYPTION_KEYS", keys)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn rotate_keys_reseals_everything_and_the_old_key_can_then_go(backend: Backend) {
    let app = spawn_app_with(backend, &[("AUTHVAULT_ENCRYPTION_KEYS", K1)]).await;
    let mut users = Vec::new();
    for i in 0..3 {
        let user = app.signed_up_user().await;
        set_keys(
            &app,
            &user.token,
            &json!({"togetherAI": format!("tg-rotate-user-{i}-0000000001"), "oumi": format!("ou-rotate-{i}-0001")}),
        )
        .await;
        users.push(user);
    }
    let before = keys(&app, &users[0].token).await;
    let db = app.db.clone();
    app.stop().await;
    drop(app);

    let rotating = spawn_app_on(db.clone(), &[("AUTHVAULT_ENCRYPTION_KEYS", K1)]).await;
    let (ok, output) = run_rotate(&rotating, &format!("{K2},{K1}"));
    assert!(ok, "{output}");
    assert!(output.contains("6 keys stored"), "{output}");
    assert!(
        output.contains("done: 6 re-sealed, 0 already current, 0 failed"),
        "{output}"
    );
    for user in &users {
        for key in rotating
            .store
            .api_keys(user.id.parse().unwrap())
            .await
            .unwrap()
        {
            assert_eq!(key.sealed.key_id, "k2");
        }
    }
    let (ok, output) = run_rotate(&rotating, &format!("{K2},{K1}"));
    assert!(
        ok && output.contains("done: 0 re-sealed, 6 already current, 0 failed"),
        "{output}"
    );
    rotating.stop().await;
    drop(rotating);

    let app = spawn_app_on(db, &[("AUTHVAULT_ENCRYPTION_KEYS", K2)]).await;
    let after = keys(&app, &users[0].token).await;
    assert_eq!(
        after, before,
        "same masks and updatedAt after rotation, without k1"
    );
}

async fn rotate_keys_reports_keys_it_cannot_open_and_exits_non_zero(backend: Backend) {
    let app = spawn_app_with(backend, &[("AUTHVAULT_ENCRYPTION_KEYS", K1)]).await;
    let user = app.signed_up_user().await;
    set_keys(
        &app,
        &user.token,
        &json!({"togetherAI": "tg-000000000001", "kestra": "ke-000000000001"}),
    )
    .await;

    // k1 is missing from the ring: nothing can be opened.
    let (ok, output) = run_rotate(&app, K2);

    assert!(!ok, "{output}");
    assert!(
        output.contains("done: 0 re-sealed, 0 already current, 2 failed"),
        "{output}"
    );
    assert!(
        output.contains(&format!("failed: user {}", user.id)),
        "{output}"
    );
    assert!(!output.contains("tg-000000000001"));
    // Nothing was damaged: with k1 back, the keys still open.
    let k = keys(&app, &user.token).await;
    assert_eq!(k["apiKeys"]["togetherAI"]["masked"], "...0001");
}

async fn rotation_concurrent_with_updates_loses_no_update(backend: Backend) {
    let app = spawn_app_with(
        backend,
        // An instance not yet switched over: it knows k2 but still seals with k1, the harshest
        // case for the rotation, which re-seals with k2 meanwhile.
        &[
            ("AUTHVAULT_ENCRYPTION_KEYS", &format!("{K1},{K2}")),
            ("AUTHVAULT_IP_RATE_LIMIT_PER_MIN", "0"),
        ],
    )
    .await;
    let mut users = Vec::new();
    for i in 0..6 {
        let user = app.signed_up_user().await;
        let body = json!({
            "togetherAI": format!("tg-{i}-v0-000000000000"),
            "codeRabbit": format!("cr-{i}-v0-000000000000"),
            "oumi": format!("ou-{i}-v0-000000000000"),
            "kestra": format!("ke-{i}-v0-000000000000"),
        });
        set_keys(&app, &user.token, &body).await;
        users.push(user);
    }
    let ring = KeyRing::new(&parse_encryption_keys(&format!("{K2},{K1}")).unwrap());
    // Users are visited in id order; the writes land after the rotation has read its page
    // (every user's old seals) and before it re-seals anyone but the first.
    users.sort_by(|a, b| a.id.cmp(&b.id));
    let (address, later_tokens): (String, Vec<String>) = (
        app.address.clone(),
        users[1..].iter().map(|u| u.token.clone()).collect(),
    );
    let mut written = false;

    let report = rotate_all(app.store.as_ref(), &ring, |event| {
        if matches!(event, Progress::Advanced { .. }) && !written {
            written = true;
            write_meanwhile(&address, &later_tokens);
        }
    })
    .await
    .unwrap();

    assert!(written);
    assert_eq!(report.failed, 0);
    assert_eq!(report.resealed + report.current, 24);
    for (i, user) in users.iter().enumerate() {
        let id: UserId = user.id.parse().unwrap();
        let stored = app.store.api_keys(id).await.unwrap();
        assert_eq!(stored.len(), 4);
        for key in stored {
            let plain = ring.open(id, key.provider, &key.sealed).unwrap();
            let version = if i > 0 && key.provider == KeyProvider::TogetherAi {
                1
            } else {
                0
            };
            let prefix = match key.provider {
                KeyProvider::TogetherAi => "tg",
                KeyProvider::CodeRabbit => "cr",
                KeyProvider::Oumi => "ou",
                KeyProvider::Kestra => "ke",
            };
            let marker = format!("-v{version}-");
            assert!(
                plain.expose_secret().starts_with(prefix)
                    && plain.expose_secret().contains(&marker),
                "user {i} {} lost an update",
                key.provider
            );
            assert_eq!(key.sealed.key_id, "k2", "re-sealed after the retry too");
        }
    }
}

/// Sets a new Together AI key for each token, from another thread, while the caller waits.
fn write_meanwhile(address: &str, tokens: &[String]) {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(async {
                    let client = reqwest::Client::new();
                    for token in tokens {
                        let res = client
                            .post(format!("{address}/api/user/api-keys"))
                            .bearer_auth(token)
                            .json(&json!({"togetherAI": "tg-x-v1-000000000000"}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(res.status(), 200);
                    }
                });
            })
            .join()
            .unwrap();
    });
}
