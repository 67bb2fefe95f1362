//! Together AI's OpenAI-compatible chat completions, plain and streamed.

use std::{collections::VecDeque, pin::Pin, time::Duration};

use futures_util::{Stream, StreamExt};
use reqwest::{header, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{sse::SseParser, UpstreamError};

/// One code-generation request.
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub system: &'a str,
    pub prompt: &'a str,
    pub max_tokens: u32,
}

/// Token counts as the provider reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A whole answer.
#[derive(Debug)]
pub struct Completion {
    pub content: String,
    pub model: String,
    pub usage: Usage,
}

/// One step of a streamed answer.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamItem {
    Delta(String),
    Done { model: String, usage: Usage },
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: [WireMessage<'a>; 2],
    max_tokens: u32,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        }
    }
}

#[derive(Deserialize)]
struct WireMessageOut {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    message: Option<WireMessageOut>,
    #[serde(default)]
    delta: Option<WireMessageOut>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// The client, shared by all requests (one connection pool).
pub struct TogetherClient {
    http: reqwest::Client,
    endpoint: String,
    timeout: Duration,
}

/// Retry-After from a 429, in seconds (HTTP dates are rare here; they get the default).
fn retry_after(headers: &header::HeaderMap) -> Duration {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.clamp(1, 3600)))
        .unwrap_or(Duration::from_secs(10))
}

impl TogetherClient {
    /// `base_url` is e.g. `https://api.together.xyz/v1`; `timeout` bounds each whole call.
    pub fn new(http: reqwest::Client, base_url: &url::Url, timeout: Duration) -> Self {
        Self {
            http,
            endpoint: format!(
                "{}/chat/completions",
                base_url.as_str().trim_end_matches('/')
            ),
            timeout,
        }
    }

    async fn send(
        &self,
        key: &SecretString,
        req: &ChatRequest<'_>,
        stream: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        let body = WireRequest {
            model: req.model,
            messages: [
                WireMessage {
                    role: "system",
                    content: req.system,
                },
                WireMessage {
                    role: "user",
                    content: req.prompt,
                },
            ],
            max_tokens: req.max_tokens,
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
        };
        let res = self
            .http
            .post(&self.endpoint)
            .bearer_auth(key.expose_secret())
            .header(
                header::ACCEPT,
                if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .timeout(self.timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| UpstreamError::from_transport(&e))?;
        match res.status() {
            s if s.is_success() => Ok(res),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(UpstreamError::KeyRejected),
            StatusCode::TOO_MANY_REQUESTS => Err(UpstreamError::RateLimited {
                retry_after: retry_after(res.headers()),
            }),
            s => Err(UpstreamError::Failed(format!("status {}", s.as_u16()))),
        }
    }

    /// Asks for a whole answer.
    pub async fn complete(
        &self,
        key: &SecretString,
        req: &ChatRequest<'_>,
    ) -> Result<Completion, UpstreamError> {
        let res = self.send(key, req, false).await?;
        let bytes = res
            .bytes()
            .await
            .map_err(|e| UpstreamError::from_transport(&e))?;
        let body: WireResponse = serde_json::from_slice(&bytes)
            .map_err(|_| UpstreamError::Failed("unreadable answer".into()))?;
        if body.error.is_some() {
            return Err(UpstreamError::Failed("error object in answer".into()));
        }
        let content = body
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message)
            .and_then(|m| m.content)
            .ok_or_else(|| UpstreamError::Failed("answer without content".into()))?;
        Ok(Completion {
            content,
            model: body.model.unwrap_or_else(|| req.model.to_owned()),
            usage: body.usage.map(Usage::from).unwrap_or_default(),
        })
    }

    /// Starts a streamed answer; errors that arrive with the status come back here, later ones
    /// from `ChatStream::next`.
    pub async fn stream(
        &self,
        key: &SecretString,
        req: &ChatRequest<'_>,
    ) -> Result<ChatStream, UpstreamError> {
        let res = self.send(key, req, true).await?;
        Ok(ChatStream {
            bytes: Box::pin(res.bytes_stream()),
            parser: SseParser::default(),
            pending: VecDeque::new(),
            model: req.model.to_owned(),
            usage: Usage::default(),
            saw_finish: false,
            finished: false,
            failure: None,
        })
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// A streamed answer; dropping it closes the connection, which stops the provider.
pub struct ChatStream {
    bytes: ByteStream,
    parser: SseParser,
    pending: VecDeque<StreamItem>,
    model: String,
    usage: Usage,
    saw_finish: bool,
    finished: bool,
    /// A failure found while deltas before it were still pending; reported after them.
    failure: Option<UpstreamError>,
}

impl ChatStream {
    fn take_event(&mut self, data: &str) -> Result<(), UpstreamError> {
        if data.trim() == "[DONE]" {
            self.finish();
            return Ok(());
        }
        let chunk: WireResponse = serde_json::from_str(data)
            .map_err(|_| UpstreamError::Failed("unreadable stream event".into()))?;
        if chunk.error.is_some() {
            return Err(UpstreamError::Failed("error event in stream".into()));
        }
        if let Some(model) = chunk.model {
            self.model = model;
        }
        if let Some(usage) = chunk.usage {
            self.usage = usage.into();
        }
        for choice in chunk.choices {
            if choice.finish_reason.is_some() {
                self.saw_finish = true;
            }
            if let Some(text) = choice.delta.and_then(|d| d.content) {
                if !text.is_empty() {
                    self.pending.push_back(StreamItem::Delta(text));
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.pending.push_back(StreamItem::Done {
                model: std::mem::take(&mut self.model),
                usage: self.usage,
            });
        }
    }

    /// The next delta, or the final `Done`; `None` after that.
    pub async fn next(&mut self) -> Option<Result<StreamItem, UpstreamError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(Ok(item));
            }
            if let Some(failure) = self.failure.take() {
                return Some(Err(failure));
            }
            if self.finished {
                return None;
            }
            match self.bytes.next().await {
                Some(Ok(chunk)) => {
                    let events = match self.parser.push(&chunk) {
                        Ok(events) => events,
                        Err(e) => {
                            self.finished = true;
                            return Some(Err(UpstreamError::Failed(e.into())));
                        }
                    };
                    for data in events {
                        if let Err(e) = self.take_event(&data) {
                            // Deltas that arrived before the failure still go out first.
                            self.finished = true;
                            self.failure = Some(e);
                            break;
                        }
                    }
                }
                Some(Err(e)) => {
                    self.finished = true;
                    return Some(Err(UpstreamError::from_transport(&e)));
                }
                None if self.saw_finish => self.finish(),
                None => {
                    self.finished = true;
                    return Some(Err(UpstreamError::Failed("stream ended early".into())));
                }
            }
        }
    }
}

/// The code in an answer: the contents of its fenced blocks when it has any, else the text.
pub fn strip_fences(text: &str) -> String {
    let mut blocks: Vec<String> = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        let is_fence = line.trim_start().starts_with("```");
        match (&mut current, is_fence) {
            (None, true) => current = Some(Vec::new()),
            (Some(lines), true) => {
                blocks.push(lines.join("\n"));
                current = None;
            }
            (Some(lines), false) => lines.push(line),
            (None, false) => {}
        }
    }
    // An unclosed last fence (a cut-off answer) still counts.
    if let Some(lines) = current {
        blocks.push(lines.join("\n"));
    }
    if blocks.is_empty() {
        text.trim().to_owned()
    } else {
        blocks.join("\n\n").trim_end().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_are_stripped_and_plain_code_is_kept() {
        assert_eq!(strip_fences("```rust\nfn main() {}\n```"), "fn main() {}");
        assert_eq!(
            strip_fences("Here you go:\n```py\nprint(1)\n```\nand\n```\nprint(2)\n```\nBye"),
            "print(1)\n\nprint(2)"
        );
        assert_eq!(strip_fences("  x = 1\n"), "x = 1");
        assert_eq!(strip_fences("```js\nlet a = 1;"), "let a = 1;");
    }
}
