//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::{
    openapi::{
        schema::SchemaType,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
        ObjectBuilder, RefOr, Required, Schema, Type,
    },
    Modify, OpenApi,
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
    paths(
        routes::auth::signup,
        routes::auth::signin,
        routes::auth::session,
        routes::auth::signout,
        routes::auth::csrf,
        routes::auth::providers,
        routes::user::get_user,
        routes::user::update_user,
        routes::user::delete_user,
        routes::user::change_password,
        routes::api_keys::list_api_keys,
        routes::api_keys::update_api_keys,
        routes::api_keys::delete_api_key,
        routes::generate::generate,
        routes::oauth::oauth_signin,
        routes::oauth::oauth_callback,
        routes::oauth::exchange_code,
        routes::oauth::unlink_provider,
        routes::sessions::refresh,
        routes::sessions::list_sessions,
        routes::sessions::end_session,
        routes::email::request_verification,
        routes::email::verify_email,
        routes::email::forgot_password,
        routes::email::reset_password,
        routes::health::healthz,
        routes::health::readyz,
        routes::health::metrics,
        routes::docs::openapi_json,
        routes::docs::docs,
    ),
    components(schemas(error::Problem, routes::UserBody)),
    modifiers(&Security, &ErrorCodes, &OptionalBodies),
    tags(
        (name = "auth", description = "Sign-up, sign-in, sessions"),
        (name = "user", description = "The signed-in user's account"),
        (name = "api-keys", description = "The user's third-party API keys, encrypted at rest and shown masked"),
        (name = "oauth", description = "Sign-in with GitHub and Google, for browsers and apps"),
        (name = "sessions", description = "Refresh tokens and the list of signed-in devices"),
        (name = "email", description = "Email verification and password recovery"),
        (name = "generate", description = "Code generation with the user's own Together AI key"),
        (name = "health", description = "Liveness and readiness"),
        (name = "docs", description = "This document"),
    )
)]
pub struct ApiDoc;

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
            .enum_values(Some(error::ALL_CODES.iter().copied()))
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
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
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
