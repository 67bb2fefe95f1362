//! The middleware around every route: CORS, the origin guard of writes, the security headers,
//! and request metrics.

use std::sync::Arc;

use actix_cors::Cors;
use actix_web::{
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{self, HeaderValue},
        Method, StatusCode,
    },
    middleware::Next,
    ResponseError,
};

use crate::{auth::csrf, config::Settings, error::ApiError, routes};

pub fn cors(settings: &Settings) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allowed_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static(csrf::HEADER),
        ])
        .expose_headers([header::RETRY_AFTER])
        .supports_credentials()
        .max_age(600)
        // Other origins get no CORS headers, so browsers keep the answer from them.
        .block_on_origin_mismatch(false);
    for origin in &settings.browser.cors_origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

fn is_state_changing(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::OPTIONS
    )
}

/// Refuses writes (and their preflights) from origins that are neither allowed nor our own.
pub async fn origin_guard(
    allowed: Arc<Vec<String>>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if is_state_changing(req.method()) {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let ok = origin
                .to_str()
                .map(|o| {
                    allowed
                        .iter()
                        .any(|a| a.eq_ignore_ascii_case(o.trim_end_matches('/')))
                })
                .unwrap_or(false);
            if !ok {
                let res = ApiError::OriginForbidden.error_response();
                return Ok(req.into_response(res));
            }
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

/// The last layer of every answer: turns an error that is not yet problem+json (from a framework
/// layer) into one, adds the contract's security headers, and records the metrics.
pub async fn finish_response(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let method = metric_method(req.method());
    let is_api = req.path().starts_with("/api/");
    let res = with_headers(next.call(req).await?.map_into_boxed_body(), is_api);
    record_metrics(&res, method, started);
    Ok(res)
}

/// Adds the contract's security headers, and turns any error answer that is not yet
/// problem+json into one.
fn with_headers(res: ServiceResponse<BoxBody>, is_api: bool) -> ServiceResponse<BoxBody> {
    let status = res.status();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    let mut res = if (status.is_client_error() || status.is_server_error()) && !is_problem {
        let error = match status {
            StatusCode::NOT_FOUND => ApiError::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed { allow: None },
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            StatusCode::UNAUTHORIZED => ApiError::Unauthenticated,
            StatusCode::FORBIDDEN => ApiError::OriginForbidden,
            s if s.is_client_error() => ApiError::field("request", "is not valid"),
            _ => ApiError::internal(anyhow::anyhow!("framework answered {status}")),
        };
        let (req, _) = res.into_parts();
        ServiceResponse::new(req, error.error_response())
    } else {
        res
    };
    let headers = res.headers_mut();
    if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        // actix-cors adds these for every origin; without an allowed origin they only confuse.
        headers.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
        headers.remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if is_api && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The method as a metric label: a fixed set, so any other method (they are free-form) counts as
/// `OTHER`.
fn metric_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        _ => "OTHER",
    }
}

/// Counts an answer by route pattern (never the raw path: ids and codes stay out), method and
/// status, and times it.
fn record_metrics(res: &ServiceResponse<BoxBody>, method: &str, started: std::time::Instant) {
    // Our resources carry their pattern; anything else (the docs assets, unmatched paths) is
    // matched again here.
    let label = res.request().app_data::<routes::RouteLabel>();
    let found;
    let route = match label {
        Some(label) => label.0.as_ref(),
        None => {
            found = res.request().match_pattern();
            found.as_deref().unwrap_or("unmatched")
        }
    };
    let m = crate::metrics::metrics();
    m.requests
        .with_label_values(&[route, method, res.status().as_str()])
        .inc();
    m.latency
        .with_label_values(&[route, method])
        .observe(started.elapsed().as_secs_f64());
}
