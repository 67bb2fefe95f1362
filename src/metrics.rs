//! Prometheus metrics: requests by route and status, latency, sign-in outcomes, rate-limit hits,
//! store errors and upstream outcomes. One process-wide registry, rendered at `GET /metrics`.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub signins: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub store_errors: IntCounterVec,
    pub upstream: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable_metric(name, e));
    if let Err(e) = registry.register(Box::new(counter.clone())) {
        log::error!("metric {name} not registered: {e}");
    }
    counter
}

#[allow(clippy::panic)]
fn unreachable_metric(name: &str, e: prometheus::Error) -> ! {
    // The names and labels are constants of this file; a failure is a programming error.
    panic!("metric {name} is malformed: {e}")
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new_custom(Some("authvault".into()), None)
        .unwrap_or_else(|e| unreachable_metric("registry", e));
    let latency = HistogramVec::new(
        HistogramOpts::new(
            "http_request_duration_seconds",
            "Time to answer a request, by route and method",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]),
        &["route", "method"],
    )
    .unwrap_or_else(|e| unreachable_metric("latency", e));
    if let Err(e) = registry.register(Box::new(latency.clone())) {
        log::error!("latency metric not registered: {e}");
    }
    Metrics {
        requests: counter(
            &registry,
            "http_requests_total",
            "Requests answered, by route, method and status",
            &["route", "method", "status"],
        ),
        latency,
        signins: counter(
            &registry,
            "signins_total",
            "Password sign-in attempts by outcome (success, invalid_credentials, rate_limited)",
            &["outcome"],
        ),
        rate_limited: counter(
            &registry,
            "rate_limited_total",
            "Requests refused by a rate limit, by limit",
            &["limit"],
        ),
        store_errors: counter(
            &registry,
            "store_errors_total",
            "Store calls that failed, by kind (unavailable, other)",
            &["kind"],
        ),
        upstream: counter(
            &registry,
            "upstream_requests_total",
            "Calls to outside services by provider and outcome",
            &["provider", "outcome"],
        ),
        registry,
    }
});

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&METRICS.registry.gather(), &mut out) {
        log::error!("metrics could not be encoded: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}
