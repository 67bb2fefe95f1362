//! `POST /api/generate`: code from Together AI with the user's own stored key.

use actix_web::{http::header, web, HttpResponse};
use bytes::Bytes;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{json::ApiJson, problems};
use crate::{
    auth::CurrentUser,
    domain::{FieldError, FieldErrors, KeyProvider},
    error::ApiError,
    state::AppState,
    upstream::{
        self,
        together::{strip_fences, ChatRequest, ChatStream, StreamItem, Usage},
        UpstreamError,
    },
};

/// Longest prompt accepted, in characters.
pub const MAX_PROMPT_CHARS: usize = 16_000;
/// Largest `maxTokens`, and the default.
pub const MAX_TOKENS: u32 = 8_192;
pub const DEFAULT_MAX_TOKENS: u32 = 1_024;
/// Most text kept to build the final `code` of a stream.
const MAX_STREAM_TEXT: usize = 1 << 20;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"prompt": "A function that reverses a string", "language": "rust"}))]
pub struct GenerateRequest {
    /// What to write; 1-16000 characters.
    #[schema(min_length = 1, max_length = 16000)]
    pub prompt: String,
    /// A Together AI model id; defaults to `AUTHVAULT_GENERATE_MODEL`.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub model: Option<String>,
    /// The programming language to answer in, e.g. `rust` or `python`.
    #[serde(default)]
    #[schema(max_length = 40)]
    pub language: Option<String>,
    /// 1-8192; default 1024.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 8192)]
    pub max_tokens: Option<u32>,
    /// Answer as `text/event-stream` deltas.
    #[serde(default)]
    pub stream: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"promptTokens": 31, "completionTokens": 18}))]
pub struct UsageBody {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl From<Usage> for UsageBody {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"code": "fn reverse(s: &str) -> String { s.chars().rev().collect() }",
    "model": "Qwen/Qwen2.5-Coder-32B-Instruct", "usage": {"promptTokens": 31, "completionTokens": 18}}))]
pub struct GenerateResponse {
    /// The answer with markdown code fences stripped.
    pub code: String,
    pub model: String,
    pub usage: UsageBody,
}

struct Parsed {
    prompt: String,
    model: Option<String>,
    language: Option<String>,
    max_tokens: u32,
    stream: bool,
}

fn parse(body: GenerateRequest) -> Result<Parsed, FieldErrors> {
    let mut errors = FieldErrors::new();
    let chars = body.prompt.chars().count();
    if body.prompt.trim().is_empty() {
        errors.push(FieldError::new("prompt", "is required"));
    } else if chars > MAX_PROMPT_CHARS {
        errors.push(FieldError::new(
            "prompt",
            "must be at most 16000 characters",
        ));
    }
    if let Some(model) = &body.model {
        if model.is_empty()
            || model.len() > 200
            || model.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            errors.push(FieldError::new(
                "model",
                "must be a model id of 1-200 characters without spaces",
            ));
        }
    }
    if let Some(language) = &body.language {
        let ok = !language.trim().is_empty()
            && language.len() <= 40
            && language
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " +#._-".contains(c));
        if !ok {
            errors.push(FieldError::new(
                "language",
                "must be a language name of 1-40 letters, digits, spaces or +#._-",
            ));
        }
    }
    let max_tokens = body.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if !(1..=MAX_TOKENS).contains(&max_tokens) {
        errors.push(FieldError::new("maxTokens", "must be from 1 to 8192"));
    }
    errors.finish()?;
    Ok(Parsed {
        prompt: body.prompt,
        model: body.model,
        language: body.language.map(|l| l.trim().to_owned()),
        max_tokens,
        stream: body.stream.unwrap_or(false),
    })
}

fn system_prompt(language: Option<&str>) -> String {
    let mut text = String::from(
        "You are a code generator. Answer with code only: no explanations, no prose before or \
         after it.",
    );
    if let Some(language) = language {
        text.push_str(" Write the code in ");
        text.push_str(language);
        text.push('.');
    }
    text
}

/// The user's Together AI key, opened.
async fn together_key(state: &AppState, current: &CurrentUser) -> Result<SecretString, ApiError> {
    let key = state
        .store
        .api_keys(current.id)
        .await?
        .into_iter()
        .find(|k| k.provider == KeyProvider::TogetherAi)
        .ok_or(ApiError::MissingApiKey)?;
    state
        .vault
        .open(current.id, key.provider, &key.sealed)
        .map_err(|e| {
            log::error!(
                "user {}: stored togetherAI key (key id {}) does not open: {e}",
                current.id,
                key.sealed.key_id
            );
            ApiError::VaultOpenFailed
        })
}

/// Generate code with the user's Together AI key.
#[utoipa::path(post, path = "/api/generate", tag = "generate",
    security(("bearer" = []), ("cookie" = [])),
    request_body = GenerateRequest,
    responses(
        (status = 200, description = "The generated code; with `stream: true` a `text/event-stream` of \
            `event: delta` frames (`{\"content\"}`) and a final `event: done` frame \
            (`{\"code\",\"model\",\"usage\"}`), or, when the provider fails after the first delta, \
            a final `event: error` frame (`{\"code\",\"detail\"}`)",
            content((GenerateResponse = "application/json"), (String = "text/event-stream"))),
        problems::JsonBody, problems::SignedIn, problems::CookieWrite, problems::Stored,
        (status = 400, description = "`validation_failed` or `missing_api_key`"),
        (status = 422, description = "`upstream_key_rejected`: Together AI refused the stored key"),
        (status = 429, description = "`rate_limited` (per-user limit) or `upstream_rate_limited`"),
        (status = 500, description = "`vault_open_failed` (the stored key does not decrypt) or `internal`"),
        (status = 502, description = "`upstream_error`"),
        (status = 504, description = "`upstream_timeout`"),
    ))]
pub async fn generate(
    state: web::Data<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<GenerateRequest>,
) -> Result<HttpResponse, ApiError> {
    let req = parse(body)?;
    let key = together_key(&state, &current).await?;
    state
        .limiter
        .generate_request(&current.id.to_string())
        .await?;
    let system = system_prompt(req.language.as_deref());
    let model = req
        .model
        .as_deref()
        .unwrap_or(&state.settings.together.model);
    let chat = ChatRequest {
        model,
        system: &system,
        prompt: &req.prompt,
        max_tokens: req.max_tokens,
    };
    if !req.stream {
        let answer = state.together.complete(&key, &chat).await;
        upstream::observe(TOGETHER, answer.as_ref().map(|_| ()));
        let answer = answer?;
        log::info!(
            "user {} generated {} completion tokens",
            current.id,
            answer.usage.completion_tokens
        );
        return Ok(HttpResponse::Ok().json(GenerateResponse {
            code: strip_fences(&answer.content),
            model: answer.model,
            usage: answer.usage.into(),
        }));
    }

    let stream = state.together.stream(&key, &chat).await;
    if let Err(e) = &stream {
        upstream::observe(TOGETHER, Err(e));
    }
    let mut stream = stream?;
    // Wait for the first delta: a failure before it still gets a real status and problem+json.
    let first = match stream.next().await {
        Some(Ok(item)) => item,
        Some(Err(e)) => {
            upstream::observe(TOGETHER, Err(&e));
            return Err(e.into());
        }
        None => {
            let e = UpstreamError::Failed("the stream ended before its first delta".into());
            upstream::observe(TOGETHER, Err(&e));
            return Err(e.into());
        }
    };
    upstream::observe(TOGETHER, Ok(()));
    let relay = Relay {
        stream,
        first: Some(first),
        text: String::new(),
        done: false,
    };
    let frames = futures_util::stream::unfold(relay, |mut relay| async move {
        let frame = relay.next_frame().await?;
        Some((Ok::<Bytes, actix_web::Error>(frame), relay))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(frames))
}

/// The provider label of Together AI's calls in the metrics.
const TOGETHER: &str = "together";

/// Turns the provider's stream into our frames, one at a time.
struct Relay {
    stream: ChatStream,
    first: Option<StreamItem>,
    text: String,
    done: bool,
}

fn frame(event: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

impl Relay {
    async fn next_frame(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let item = match self.first.take() {
            Some(item) => Ok(item),
            None => match self.stream.next().await {
                Some(item) => item,
                None => Err(UpstreamError::Failed("stream ended early".into())),
            },
        };
        Some(match item {
            Ok(StreamItem::Delta(text)) => {
                if self.text.len() + text.len() <= MAX_STREAM_TEXT {
                    self.text.push_str(&text);
                }
                frame("delta", &json!({ "content": text }))
            }
            Ok(StreamItem::Done { model, usage }) => {
                self.done = true;
                frame(
                    "done",
                    &json!({
                        "code": strip_fences(&self.text),
                        "model": model,
                        "usage": UsageBody::from(usage),
                    }),
                )
            }
            Err(e) => {
                self.done = true;
                upstream::observe(TOGETHER, Err(&e));
                let api = ApiError::from(e);
                let problem = crate::error::Problem::from(&api);
                frame(
                    "error",
                    &json!({ "code": problem.code, "detail": problem.detail }),
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> GenerateRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn bounds_are_checked_field_by_field() {
        let errors = parse(request(json!({
            "prompt": "x".repeat(16_001),
            "model": "has space",
            "language": "rust; drop table",
            "maxTokens": 0
        })))
        .err()
        .unwrap()
        .into_map();
        for field in ["prompt", "model", "language", "maxTokens"] {
            assert!(errors.contains_key(field), "{field}");
        }
        assert!(parse(request(json!({"prompt": "   "}))).is_err());
        let ok = parse(request(json!({"prompt": "hi", "language": "C++"})))
            .ok()
            .unwrap();
        assert_eq!(ok.max_tokens, DEFAULT_MAX_TOKENS);
        assert!(!ok.stream);
    }

    #[test]
    fn the_system_prompt_names_the_language() {
        assert!(system_prompt(Some("Go")).ends_with("Write the code in Go."));
        assert!(!system_prompt(None).contains("Write the code in"));
    }
}
