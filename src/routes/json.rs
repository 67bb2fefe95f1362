//! JSON bodies: `ApiJson<T>` reads a bounded body, insists on `application/json`, and reports a
//! bad field by its path (`email`, `apiKeys.togetherAI`) without echoing the value.

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::{domain::FieldError, error::ApiError};

/// Largest JSON body any endpoint accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A required JSON body.
pub struct ApiJson<T>(pub T);

/// A JSON body that may be absent (empty), in which case `T::default()` is used.
pub struct OptionalJson<T>(pub T);

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|essence| {
            let essence = essence.trim().to_ascii_lowercase();
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        })
        .unwrap_or(false)
}

async fn read_body(req: HttpRequest, mut payload: Payload) -> Result<web::Bytes, ApiError> {
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge);
        }
    }
    let mut body = web::BytesMut::new();
    use futures_util::StreamExt;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => ApiError::PayloadTooLarge,
            _ => ApiError::field("body", "could not be read"),
        })?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Deserializes `bytes`, a JSON object (every request body is one), naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde's derived structs also accept a JSON array of the fields in order (`[null, null]`
    // would be read as `{"name": null, "image": null}`): refuse anything but an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::field("body", "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::Validation(describe(&path, e.inner()).into())
    })?;
    de.end()
        .map_err(|_| ApiError::field("body", "has trailing characters after the JSON value"))?;
    Ok(value)
}

fn describe(path: &str, e: &serde_json::Error) -> FieldError {
    use serde_json::error::Category;
    let field = if path.is_empty() || path == "." {
        "body"
    } else {
        path
    };
    match e.classify() {
        Category::Syntax | Category::Eof => FieldError::new(
            "body",
            format!(
                "is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        ),
        Category::Io => FieldError::new("body", "could not be read"),
        Category::Data => {
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or("");
            if let Some(rest) = msg.strip_prefix("missing field `") {
                let name = rest.trim_end_matches('`');
                let full = if field == "body" {
                    name.to_owned()
                } else {
                    format!("{field}.{name}")
                };
                FieldError::new(full, "is required")
            } else if let Some(rest) = msg.strip_prefix("unknown field `") {
                let name = rest.split('`').next().unwrap_or("");
                // The name is the client's own text: keep it short and printable.
                // The path already ends with the unknown name.
                let full = if field == "body" { name } else { field };
                let full: String = full.chars().filter(|c| !c.is_control()).take(100).collect();
                FieldError::new(full, "is not a known field")
            } else if let Some(rest) = msg.strip_prefix("invalid type: ") {
                // "invalid type: map, expected a string": types only, never the value.
                let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
                let found = found.split(' ').next().unwrap_or("value");
                FieldError::new(field, format!("must be {expected}, not a {found}"))
            } else {
                FieldError::new(field, "has an invalid value")
            }
        }
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            if !is_json(&req) {
                return Err(ApiError::UnsupportedMediaType);
            }
            let body = read_body(req, payload).await?;
            if body.is_empty() {
                return Err(ApiError::field("body", "is required"));
            }
            parse_json(&body).map(ApiJson)
        })
    }
}

impl<T: DeserializeOwned + Default + 'static> FromRequest for OptionalJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            let body = read_body(req.clone(), payload).await?;
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalJson(T::default()));
            }
            if !is_json(&req) {
                return Err(ApiError::UnsupportedMediaType);
            }
            parse_json(&body).map(OptionalJson)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        email: String,
        password: String,
    }

    fn errors(json: &str) -> std::collections::BTreeMap<String, Vec<String>> {
        match parse_json::<Body>(json.as_bytes()) {
            Err(ApiError::Validation(e)) => e.into_map(),
            other => panic!("expected a validation error, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_nosql_operator_is_a_type_error_on_its_field() {
        let e = errors(r#"{"email":{"$ne":null},"password":"x"}"#);
        assert_eq!(e["email"], vec!["must be a string, not a map".to_string()]);
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        assert!(errors(r#"{"email":"a@b.c"}"#).contains_key("password"));
        assert!(errors(r#"{"email":"a@b.c","password":"p","admin":true}"#).contains_key("admin"));
    }

    #[test]
    fn a_wrong_value_is_never_echoed() {
        let e = errors(r#"{"email":"a@b.c","password":12345678901}"#);
        let text = format!("{e:?}");
        assert!(!text.contains("12345678901"), "{text}");
    }

    #[test]
    fn only_an_object_is_a_body() {
        for body in [r#"["a@b.c", "password"]"#, "null", "\"x\"", "42"] {
            assert_eq!(
                errors(body)["body"],
                vec!["must be a JSON object".to_string()],
                "{body}"
            );
        }
    }

    #[test]
    fn broken_json_is_reported_on_the_body() {
        assert!(errors(r#"{"email":"#).contains_key("body"));
        assert!(errors(r#"{"email":"a","password":"b"} x"#).contains_key("body"));
    }
}
