//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::{
    openapi::{
        header::HeaderBuilder,
        path::Operation,
        schema::SchemaType,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
        Content, ObjectBuilder, Ref, RefOr, Required, Schema, Type,
    },
    Modify, OpenApi, PartialSchema,
};

use crate::{error, routes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "authvault",
        description = "Headless JSON authentication and key-vault API.\n\n\
            Errors are `application/problem+json` (RFC 9457) with a stable `code`; see the \
            `ErrorCode` schema for every code. A signed-in caller sends either the session cookie \
            or `Authorization: Bearer <accessToken>`. Cookie-authenticated writes (POST, PUT, \
            PATCH, DELETE) must also send `X-CSRF-Token` with the token from `GET /api/auth/csrf`.",
        license(name = "MIT"),
    ),
    components(schemas(error::Problem, routes::UserBody)),
    modifiers(&Operations, &ProblemAnswers, &Security, &ErrorCodes, &OptionalBodies),
    tags(
        (name = "auth", description = "Sign-up, sign-in, sessions"),
        (name = "user", description = "The signed-in user's account"),
        (name = "api-keys", description = "The user's third-party API keys, encrypted at rest and shown masked"),
        (name = "oauth", description = "Sign-in with GitHub and Google, for browsers and apps"),
        (name = "mfa", description = "Two-factor sign-in: authenticator apps (TOTP) and recovery codes"),
        (name = "passkeys", description = "Passkeys (WebAuthn): registering them, and signing in without a password"),
        (name = "sessions", description = "Refresh tokens and the list of signed-in devices"),
        (name = "email", description = "Email verification and password recovery"),
        (name = "generate", description = "Code generation with the user's own Together AI key"),
        (name = "health", description = "Liveness and readiness"),
        (name = "docs", description = "This document"),
    )
)]
pub struct ApiDoc;

/// The paths come from the one list of operations the router is built from.
struct Operations;

impl Modify for Operations {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        routes::document(openapi);
    }
}

/// The operations of every path, for passes that change each.
fn operations_mut(openapi: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
    })
}

/// Every 4xx and 5xx answer is `application/problem+json` with a `Problem` body, and every 429
/// says when to retry: both are added here, once, to each such answer that a handler or a
/// `routes::problems` set documents with a status and a description.
struct ProblemAnswers;

impl Modify for ProblemAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for operation in operations_mut(openapi) {
            for (status, response) in operation.responses.responses.iter_mut() {
                let (Ok(status), RefOr::T(response)) = (status.parse::<u16>(), response) else {
                    continue;
                };
                if status < 400 {
                    continue;
                }
                if response.content.is_empty() {
                    response.content.insert(
                        "application/problem+json".into(),
                        Content::new(Some(Ref::from_schema_name("Problem"))),
                    );
                }
                if status == 429 && !response.headers.contains_key("Retry-After") {
                    response.headers.insert(
                        "Retry-After".into(),
                        HeaderBuilder::new()
                            .schema(u64::schema())
                            .description(Some("Seconds to wait"))
                            .build(),
                    );
                }
            }
        }
    }
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("The `session.accessToken` from sign-up or sign-in."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-authvault.session",
                "The session cookie (`authvault.session` when Secure cookies are off). Writes \
                 also need the `X-CSRF-Token` header from `GET /api/auth/csrf`.",
            ))),
        );
    }
}

struct ErrorCodes;

impl Modify for ErrorCodes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("Every stable `code` a problem document can carry."))
            .enum_values(Some(error::codes()))
            .build();
        components.schemas.insert("ErrorCode".into(), schema.into());
    }
}

/// utoipa documents an optional body (`Option<T>`) as "`T` or JSON `null`"; the server takes `T`
/// or no body at all, never a literal `null`. So such a body is `T`, and not required.
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let is_null = |schema: &RefOr<Schema>| {
            matches!(schema, RefOr::T(Schema::Object(o))
                if o.schema_type == SchemaType::Type(Type::Null))
        };
        for operation in operations_mut(openapi) {
            let Some(body) = operation.request_body.as_mut() else {
                continue;
            };
            if body.required == Some(Required::True) {
                continue;
            }
            for content in body.content.values_mut() {
                if let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema {
                    let mut rest = one_of.items.iter().filter(|s| !is_null(s));
                    if let (Some(only), None) = (rest.next(), rest.next()) {
                        content.schema = Some(only.clone());
                    }
                }
            }
        }
    }
}

/// The document as pretty JSON, as committed in `openapi/openapi.json`.
pub fn document_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Each documented path's methods as an `Allow` value (`GET, PATCH, DELETE`).
pub fn allowed_methods() -> std::collections::HashMap<String, String> {
    ApiDoc::openapi()
        .paths
        .paths
        .iter()
        .map(|(path, item)| {
            let mut methods: Vec<&str> = Vec::new();
            for (present, name) in [
                (item.get.is_some(), "GET"),
                (item.post.is_some(), "POST"),
                (item.put.is_some(), "PUT"),
                (item.patch.is_some(), "PATCH"),
                (item.delete.is_some(), "DELETE"),
            ] {
                if present {
                    methods.push(name);
                }
            }
            (path.clone(), methods.join(", "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;

    /// The codes a problem answer's description names (its backquoted words that are codes).
    fn codes_in(description: &str) -> Vec<&str> {
        description
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|word| error::ALL_CODES.contains(word))
            .collect()
    }

    #[test]
    fn every_problem_answer_names_codes_of_its_own_status() {
        let openapi = ApiDoc::openapi();
        let mut answers = 0;
        for (path, item) in &openapi.paths.paths {
            for operation in [&item.get, &item.put, &item.post, &item.delete, &item.patch]
                .into_iter()
                .flatten()
            {
                for (status, response) in &operation.responses.responses {
                    let (Ok(status), RefOr::T(response)) = (status.parse::<u16>(), response) else {
                        continue;
                    };
                    if status < 400 {
                        continue;
                    }
                    answers += 1;
                    let codes = codes_in(&response.description);
                    assert!(
                        !codes.is_empty()
                            && response.description.starts_with(&format!("`{}`", codes[0])),
                        "{path} {status}: the description must start with a code: {}",
                        response.description
                    );
                    for code in codes {
                        assert!(
                            error::answers_with(code, StatusCode::from_u16(status).unwrap()),
                            "{path}: `{code}` is documented under {status}"
                        );
                    }
                    assert!(
                        response.content.contains_key("application/problem+json"),
                        "{path} {status} is not problem+json"
                    );
                }
            }
        }
        assert!(answers > 100, "only {answers} problem answers documented");
    }

    #[test]
    fn a_code_under_the_wrong_status_is_caught() {
        assert_eq!(
            codes_in("`rate_limited` (per `Origin`) or `internal`"),
            ["rate_limited", "internal"]
        );
        assert!(error::answers_with(
            "rate_limited",
            StatusCode::TOO_MANY_REQUESTS
        ));
        assert!(!error::answers_with(
            "rate_limited",
            StatusCode::BAD_REQUEST
        ));
        assert!(!error::answers_with(
            "no_such_code",
            StatusCode::BAD_REQUEST
        ));
        // One code, two statuses.
        assert!(error::answers_with("invalid_code", StatusCode::BAD_REQUEST));
        assert!(error::answers_with(
            "invalid_code",
            StatusCode::UNAUTHORIZED
        ));
    }
}
