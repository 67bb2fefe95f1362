//! A local fake of Together AI's chat-completions endpoint, speaking its wire format (JSON and
//! server-sent events), with behaviours a test can switch.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// What the fake answers.
#[derive(Clone, Debug)]
pub enum Mode {
    /// 200 with this content.
    Complete(String),
    /// This status with a JSON error body (and Retry-After when given).
    Status(u16, Option<u64>),
    /// Waits this long, then answers like `Complete`.
    Slow(Duration),
    /// 200 with a body that is not JSON.
    Garbage,
    /// Streams these deltas; after `hold_after` of them it waits for `release()`.
    Stream {
        deltas: Vec<String>,
        hold_after: usize,
    },
    /// Streams `n` deltas, then an error event.
    StreamThenError(usize),
    /// Sends the stream headers, then nothing for this long.
    StreamStall(Duration),
    /// Streams `count` deltas, one every `interval` (a long generation).
    Drip { count: usize, interval: Duration },
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Received {
    pub authorization: Option<String>,
    pub body: Value,
}

pub struct FakeState {
    mode: Mutex<Mode>,
    received: Mutex<Vec<Received>>,
    release: Notify,
    pub stream_dropped: AtomicBool,
    pub stream_finished: AtomicBool,
    pub calls: AtomicUsize,
}

pub struct FakeTogether {
    /// The base URL to give authvault as `TOGETHER_API_URL`.
    pub base_url: String,
    pub state: Arc<FakeState>,
}

/// Sets a flag when the streamed body is dropped (the client went away).
struct DropFlag(Arc<FakeState>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.stream_dropped.store(true, Ordering::SeqCst);
    }
}

fn chunk(model: &str, delta: Option<&str>, finish: Option<&str>, usage: Option<Value>) -> Bytes {
    let choices = match delta {
        Some(text) => {
            json!([{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": finish}])
        }
        None => json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
    };
    let body = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": choices,
        "usage": usage,
    });
    Bytes::from(format!("data: {body}\n\n"))
}

async fn chat(
    state: web::Data<Arc<FakeState>>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let state = state.get_ref().clone();
    state.calls.fetch_add(1, Ordering::SeqCst);
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().json(json!({"error": {"message": "invalid JSON"}}));
    };
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.received.lock().unwrap().push(Received {
        authorization: authorization.clone(),
        body: body.clone(),
    });
    // What the real API checks first.
    if !authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Bearer "))
    {
        return HttpResponse::Unauthorized().json(json!({"error": {"message": "missing key"}}));
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    if model.is_empty() || !body["messages"].is_array() {
        return HttpResponse::BadRequest().json(json!({"error": {"message": "bad request"}}));
    }
    let mode = state.mode.lock().unwrap().clone();
    let complete = |content: String| {
        HttpResponse::Ok().json(json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46},
        }))
    };
    match mode {
        Mode::Complete(content) => complete(content),
        Mode::Slow(delay) => {
            tokio::time::sleep(delay).await;
            complete("late".into())
        }
        Mode::Garbage => HttpResponse::Ok()
            .content_type("application/json")
            .body("<html>oops"),
        Mode::Status(status, retry_after) => {
            let mut res =
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
            if let Some(secs) = retry_after {
                res.insert_header(("retry-after", secs.to_string()));
            }
            res.json(json!({"error": {"message": "upstream says no: SECRET-UPSTREAM-DETAIL", "type": "fake"}}))
        }
        Mode::Stream { deltas, hold_after } => {
            let frames = futures_util::stream::unfold(
                (0usize, false, DropFlag(state.clone())),
                move |(i, done, guard)| {
                    let deltas = deltas.clone();
                    let model = model.clone();
                    async move {
                        if done {
                            guard.0.stream_finished.store(true, Ordering::SeqCst);
                            return None;
                        }
                        if i == hold_after && hold_after < deltas.len() {
                            guard.0.release.notified().await;
                        }
                        let bytes = if i < deltas.len() {
                            chunk(&model, Some(&deltas[i]), None, None)
                        } else {
                            let usage = json!({"prompt_tokens": 12, "completion_tokens": deltas.len(), "total_tokens": 12 + deltas.len()});
                            let mut last = chunk(&model, None, Some("stop"), Some(usage)).to_vec();
                            last.extend_from_slice(b"data: [DONE]\n\n");
                            Bytes::from(last)
                        };
                        Some((
                            Ok::<_, actix_web::Error>(bytes),
                            (i + 1, i >= deltas.len(), guard),
                        ))
                    }
                },
            );
            HttpResponse::Ok()
                .content_type("text/event-stream")
                .streaming(frames)
        }
        Mode::StreamThenError(n) => {
            let mut body = Vec::new();
            for i in 0..n {
                body.extend_from_slice(&chunk(&model, Some(&format!("part{i} ")), None, None));
            }
            body.extend_from_slice(
                b"data: {\"error\": {\"message\": \"SECRET-UPSTREAM-DETAIL\"}}\n\n",
            );
            HttpResponse::Ok()
                .content_type("text/event-stream")
                .body(body)
        }
        Mode::Drip { count, interval } => {
            let frames = futures_util::stream::unfold(
                (0usize, DropFlag(state.clone())),
                move |(i, guard)| {
                    let model = model.clone();
                    async move {
                        if i > count {
                            guard.0.stream_finished.store(true, Ordering::SeqCst);
                            return None;
                        }
                        if i > 0 {
                            tokio::time::sleep(interval).await;
                        }
                        let bytes = if i < count {
                            chunk(&model, Some(&format!("d{i} ")), None, None)
                        } else {
                            Bytes::from_static(b"data: [DONE]\n\n")
                        };
                        Some((Ok::<_, actix_web::Error>(bytes), (i + 1, guard)))
                    }
                },
            );
            HttpResponse::Ok()
                .content_type("text/event-stream")
                .streaming(frames)
        }
        Mode::StreamStall(delay) => {
            let frames = futures_util::stream::once(async move {
                tokio::time::sleep(delay).await;
                Ok::<_, actix_web::Error>(Bytes::from_static(b"data: [DONE]\n\n"))
            });
            HttpResponse::Ok()
                .content_type("text/event-stream")
                .streaming(frames)
        }
    }
}

impl FakeTogether {
    pub async fn start() -> Self {
        let state = Arc::new(FakeState {
            mode: Mutex::new(Mode::Complete("```rust\nfn main() {}\n```".into())),
            received: Mutex::new(Vec::new()),
            release: Notify::new(),
            stream_dropped: AtomicBool::new(false),
            stream_finished: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
        });
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/v1/chat/completions", web::post().to(chat))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        tokio::spawn(server.run());
        Self {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            state,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Lets a held stream go on.
    pub fn release(&self) {
        self.state.release.notify_one();
    }
}
