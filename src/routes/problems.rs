//! The problem answers that handlers share, as sets for the `responses(...)` of
//! `#[utoipa::path]`.
//!
//! A handler lists the sets whose cause applies to it, then its own problem answers as
//! `(status = N, description = "...")`; one of its own wins over a set's answer for the same
//! status. Every 4xx and 5xx answer is `application/problem+json` with a `Problem` body, and every
//! 429 carries `Retry-After`: `crate::openapi` adds both to each such answer of the document, so
//! neither is written here or in a handler. The same pass checks each description against the
//! error table (`crate::error`): every code it names must answer with that status.

use std::collections::BTreeMap;

use utoipa::{
    openapi::{RefOr, Response, ResponseBuilder},
    IntoResponses,
};

macro_rules! problem_sets {
    ($(
        $(#[$doc:meta])*
        $name:ident { $($status:literal => $description:literal),+ $(,)? }
    )+) => {
        $(
            $(#[$doc])*
            pub struct $name;

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    [$(($status, $description)),+]
                        .into_iter()
                        .map(|(status, description): (u16, &str)| {
                            (status.to_string(), ResponseBuilder::new().description(description).build().into())
                        })
                        .collect()
                }
            }
        )+
    };
}

problem_sets! {
    /// A handler that reads or writes the store.
    Stored { 500 => "`internal`", 503 => "`store_unavailable`" }
    /// A JSON request body (`routes::json`): malformed, too large, or not JSON.
    JsonBody {
        400 => "`validation_failed`",
        413 => "`payload_too_large`",
        415 => "`unsupported_media_type`",
    }
    /// A signed-in caller (`auth::CurrentUser`).
    SignedIn { 401 => "`unauthenticated`" }
    /// A write that a session cookie can authenticate: the CSRF token and the Origin guard.
    CookieWrite { 403 => "`csrf_failed` or `origin_forbidden`" }
    /// A write without a session: the Origin guard only.
    OriginChecked { 403 => "`origin_forbidden`" }
    /// A rate limit (`auth::rate_limit`).
    Limited { 429 => "`rate_limited`" }
}
