//! `/api/generate` against a local fake Together AI.

use std::time::Duration;

use authvault::upstream::sse::SseParser;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{together::*, *};

backend_tests!(
    generate_sends_the_users_own_key_and_returns_stripped_code,
    generate_without_a_stored_key_is_400_missing_api_key,
    an_unauthenticated_call_is_401_and_never_reaches_upstream,
    upstream_failures_map_to_the_contract_codes,
    a_slow_upstream_is_504_upstream_timeout,
    bad_generate_requests_are_400_before_any_upstream_call,
    the_per_user_limit_is_429_with_retry_after,
    streaming_relays_deltas_before_upstream_finishes,
    a_stream_failing_before_its_first_delta_gets_a_problem,
    a_stream_failing_after_its_first_delta_ends_with_an_error_event,
    a_client_that_disconnects_stops_the_upstream_stream,
);

const TOGETHER_KEY: &str = "tgp_v1_user-own-key-0123456789abcdef";

/// An app wired to a fresh fake, and a user with a stored Together AI key.
async fn setup(backend: Backend, extra: &[(&str, &str)]) -> (TestApp, FakeTogether, TestUser) {
    let fake = FakeTogether::start().await;
    let mut vars = vec![("TOGETHER_API_URL", fake.base_url.as_str())];
    vars.extend_from_slice(extra);
    let app = spawn_app_with(backend, &vars).await;
    let user = app.signed_up_user().await;
    let res = app
        .send_bearer(
            Method::POST,
            "/api/user/api-keys",
            &user.token,
            Some(&json!({"togetherAI": TOGETHER_KEY})),
        )
        .await;
    assert_eq!(res.status(), 200);
    (app, fake, user)
}

async fn generate(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.send_bearer(Method::POST, "/api/generate", token, Some(&body))
        .await
}

/// Reads SSE events (name, data) from a response until it ends or `limit` events arrived.
async fn read_events(res: &mut reqwest::Response, limit: usize) -> Vec<(String, Value)> {
    let mut parser = SseParser::default();
    let mut raw = String::new();
    let mut events = Vec::new();
    while events.len() < limit {
        let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), res.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
        else {
            break;
        };
        raw.push_str(&String::from_utf8_lossy(&chunk));
        for data in parser.push(&chunk).unwrap() {
            events.push(data);
        }
    }
    // Our frames carry `event:` lines; pair each data with its name.
    let names: Vec<String> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("event: ").map(str::to_owned))
        .collect();
    names
        .into_iter()
        .zip(events)
        .map(|(name, data)| (name, serde_json::from_str(&data).unwrap()))
        .collect()
}

async fn generate_sends_the_users_own_key_and_returns_stripped_code(backend: Backend) {
    let (app, fake, user) = setup(backend, &[]).await;
    fake.set_mode(Mode::Complete(
        "Sure:\n```rust\nfn add(a: i32, b: i32) -> i32 { a + b }\n```\n".into(),
    ));

    let res = generate(
        &app,
        &user.token,
        json!({"prompt": "add two numbers", "language": "rust", "maxTokens": 200, "model": "my/model"}),
    )
    .await;

    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "fn add(a: i32, b: i32) -> i32 { a + b }");
    assert_eq!(body["model"], "my/model");
    assert_eq!(
        body["usage"],
        json!({"promptTokens": 12, "completionTokens": 34})
    );
    let received = fake.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].authorization.as_deref(),
        Some(format!("Bearer {TOGETHER_KEY}").as_str())
    );
    let sent = &received[0].body;
    assert_eq!(sent["model"], "my/model");
    assert_eq!(sent["max_tokens"], 200);
    assert_eq!(sent["stream"], false);
    assert_eq!(sent["messages"][0]["role"], "system");
    assert!(sent["messages"][0]["content"]
        .as_str()
        .unwrap()
        .contains("rust"));
    assert_eq!(
        sent["messages"][1],
        json!({"role": "user", "content": "add two numbers"})
    );

    let default_model = generate(&app, &user.token, json!({"prompt": "x"})).await;
    assert_eq!(default_model.status(), 200);
    assert_eq!(
        fake.received()[1].body["model"],
        authvault::config::DEFAULT_GENERATE_MODEL
    );
}

async fn generate_without_a_stored_key_is_400_missing_api_key(backend: Backend) {
    let fake = FakeTogether::start().await;
    let app = spawn_app_with(backend, &[("TOGETHER_API_URL", &fake.base_url)]).await;
    let user = app.signed_up_user().await;

    let res = generate(&app, &user.token, json!({"prompt": "hello"})).await;

    let problem = app.assert_problem(res, 400, "missing_api_key").await;
    assert!(problem.detail.contains("/api/user/api-keys"));
    assert_eq!(fake.calls(), 0);
}

async fn an_unauthenticated_call_is_401_and_never_reaches_upstream(backend: Backend) {
    let (app, fake, _user) = setup(backend, &[]).await;

    let res = app
        .post_json("/api/generate", &json!({"prompt": "hello"}))
        .await;
    app.assert_problem(res, 401, "unauthenticated").await;
    let res = generate(&app, "not-a-token", json!({"prompt": "hello"})).await;
    app.assert_problem(res, 401, "unauthenticated").await;

    assert_eq!(fake.calls(), 0);
}

async fn upstream_failures_map_to_the_contract_codes(backend: Backend) {
    let (app, fake, user) = setup(backend, &[]).await;

    for (mode, status, code, retry) in [
        (Mode::Status(401, None), 422, "upstream_key_rejected", None),
        (Mode::Status(403, None), 422, "upstream_key_rejected", None),
        (
            Mode::Status(429, Some(7)),
            429,
            "upstream_rate_limited",
            Some("7"),
        ),
        (
            Mode::Status(429, None),
            429,
            "upstream_rate_limited",
            Some("10"),
        ),
        (Mode::Status(500, None), 502, "upstream_error", None),
        (Mode::Status(503, None), 502, "upstream_error", None),
        (Mode::Status(400, None), 502, "upstream_error", None),
        (Mode::Garbage, 502, "upstream_error", None),
    ] {
        fake.set_mode(mode.clone());
        for stream in [false, true] {
            let res = generate(&app, &user.token, json!({"prompt": "x", "stream": stream})).await;
            let retry_after = res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let text_status = res.status().as_u16();
            let problem = app.assert_problem(res, status, code).await;
            assert_eq!(retry_after.as_deref(), retry, "{mode:?} stream={stream}");
            assert!(text_status == status);
            let shown = format!("{problem:?}");
            assert!(!shown.contains("SECRET-UPSTREAM-DETAIL") && !shown.contains(TOGETHER_KEY));
        }
    }
    // Nothing reachable at all is an upstream error too.
    let dead = spawn_app_with(backend, &[("TOGETHER_API_URL", "http://127.0.0.1:9/v1")]).await;
    let user = dead.signed_up_user().await;
    dead.send_bearer(
        Method::POST,
        "/api/user/api-keys",
        &user.token,
        Some(&json!({"togetherAI": TOGETHER_KEY})),
    )
    .await;
    let res = generate(&dead, &user.token, json!({"prompt": "x"})).await;
    dead.assert_problem(res, 502, "upstream_error").await;
}

async fn a_slow_upstream_is_504_upstream_timeout(backend: Backend) {
    let (app, fake, user) = setup(backend, &[("AUTHVAULT_GENERATE_TIMEOUT_SECS", "1")]).await;

    fake.set_mode(Mode::Slow(Duration::from_secs(3)));
    let res = generate(&app, &user.token, json!({"prompt": "x"})).await;
    app.assert_problem(res, 504, "upstream_timeout").await;

    fake.set_mode(Mode::StreamStall(Duration::from_secs(3)));
    let res = generate(&app, &user.token, json!({"prompt": "x", "stream": true})).await;
    app.assert_problem(res, 504, "upstream_timeout").await;
}

async fn bad_generate_requests_are_400_before_any_upstream_call(backend: Backend) {
    let (app, fake, user) = setup(backend, &[]).await;

    for body in [
        json!({}),
        json!({"prompt": ""}),
        json!({"prompt": "   "}),
        json!({"prompt": "x".repeat(16_001)}),
        json!({"prompt": "x", "maxTokens": 0}),
        json!({"prompt": "x", "maxTokens": 100_000}),
        json!({"prompt": "x", "maxTokens": -1}),
        json!({"prompt": "x", "model": "two words"}),
        json!({"prompt": "x", "language": "<script>"}),
        json!({"prompt": "x", "stream": "yes"}),
        json!({"prompt": "x", "temperature": 2}),
        json!({"prompt": {"$gt": ""}}),
    ] {
        let res = generate(&app, &user.token, body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        app.assert_problem(res, 400, "validation_failed").await;
    }
    let huge = generate(&app, &user.token, json!({"prompt": "x".repeat(100_000)})).await;
    app.assert_problem(huge, 413, "payload_too_large").await;
    assert_eq!(fake.calls(), 0);
}

async fn the_per_user_limit_is_429_with_retry_after(backend: Backend) {
    let (app, fake, user) = setup(backend, &[("AUTHVAULT_GENERATE_PER_MIN", "2")]).await;
    let other = app.signed_up_user().await;
    app.send_bearer(
        Method::POST,
        "/api/user/api-keys",
        &other.token,
        Some(&json!({"togetherAI": TOGETHER_KEY})),
    )
    .await;

    assert_eq!(
        generate(&app, &user.token, json!({"prompt": "1"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        generate(&app, &user.token, json!({"prompt": "2"}))
            .await
            .status(),
        200
    );
    let res = generate(&app, &user.token, json!({"prompt": "3"})).await;

    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    app.assert_problem(res, 429, "rate_limited").await;
    assert_eq!(fake.calls(), 2, "the refused call never reached upstream");
    assert_eq!(
        generate(&app, &other.token, json!({"prompt": "4"}))
            .await
            .status(),
        200
    );
}

async fn streaming_relays_deltas_before_upstream_finishes(backend: Backend) {
    let (app, fake, user) = setup(backend, &[]).await;
    let deltas: Vec<String> = ["```py\n", "print(", "'hi')", "\n```"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    fake.set_mode(Mode::Stream {
        deltas,
        hold_after: 3,
    });

    let mut res = generate(&app, &user.token, json!({"prompt": "hi", "stream": true})).await;

    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(fake.received()[0].body["stream"], true);
    let early = read_events(&mut res, 3).await;
    assert_eq!(
        early.len(),
        3,
        "three deltas arrive while upstream is still held"
    );
    assert!(!fake
        .state
        .stream_finished
        .load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(
        early[0],
        ("delta".to_string(), json!({"content": "```py\n"}))
    );

    fake.release();
    let rest = read_events(&mut res, 10).await;
    assert_eq!(rest[0], ("delta".to_string(), json!({"content": "\n```"})));
    let (name, done) = rest.last().unwrap();
    assert_eq!(name, "done");
    assert_eq!(done["code"], "print('hi')");
    assert_eq!(
        done["usage"],
        json!({"promptTokens": 12, "completionTokens": 4})
    );
    assert_eq!(done["model"], authvault::config::DEFAULT_GENERATE_MODEL);
}

async fn a_stream_failing_before_its_first_delta_gets_a_problem(backend: Backend) {
    let (app, fake, user) = setup(backend, &[]).await;
    fake.set_mode(Mode::StreamThenError(0));

    let res = generate(&app, &user.token, json!({"prompt": "x", "stream": true})).await;

    app.assert_problem(res, 502, "upstream_error").await;
}

async fn a_stream_failing_after_its_first_delta_ends_with_an_error_event(backend: Backend) {
    let (app, fake, user) = setup(backend, &[]).await;
    fake.set_mode(Mode::StreamThenError(2));

    let mut res = generate(&app, &user.token, json!({"prompt": "x", "stream": true})).await;

    assert_eq!(res.status(), 200);
    let events = read_events(&mut res, 10).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0].0, "delta");
    assert_eq!(events[1].0, "delta");
    assert_eq!(events[2].0, "error");
    assert_eq!(events[2].1["code"], "upstream_error");
    assert!(!events[2].1.to_string().contains("SECRET-UPSTREAM-DETAIL"));
}

async fn a_client_that_disconnects_stops_the_upstream_stream(backend: Backend) {
    let (app, fake, user) = setup(backend, &[]).await;
    // A long generation: 200 deltas, one every 50 ms.
    fake.set_mode(Mode::Drip {
        count: 200,
        interval: Duration::from_millis(50),
    });

    let mut res = generate(&app, &user.token, json!({"prompt": "x", "stream": true})).await;
    let first = read_events(&mut res, 1).await;
    assert_eq!(first.len(), 1);
    drop(res);

    let stopped = async {
        while !fake
            .state
            .stream_dropped
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the upstream stream was closed after the client left");
    assert!(!fake
        .state
        .stream_finished
        .load(std::sync::atomic::Ordering::SeqCst));
}
