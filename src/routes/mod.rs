//! HTTP resources, one module per area of the contract, and the bodies they exchange.

use actix_web::{http::Method, web, HttpResponse};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::{clock::rfc3339, domain::User, error::ApiError};

pub mod answers;
pub mod api_keys;
pub mod auth;
pub mod docs;
pub mod email;
pub mod generate;
pub mod health;
pub mod json;
pub mod jwks;
pub mod mfa;
pub mod oauth;
pub mod passkeys;
pub mod problems;
pub mod sessions;
pub mod user;

/// Every operation of the API, in the order of the document: the one list from which the router
/// is built ([`configure`]) and the document's paths are taken ([`document`]). Each handler's
/// path and method come from its `#[utoipa::path]`, so the two cannot disagree.
macro_rules! operations {
    ($($module:ident::$handler:ident),+ $(,)?) => {
        pastey::paste! {
            fn operations() -> Vec<Operation> {
                vec![$(Operation::of::<$module::[<__path_ $handler>]>(|| web::to($module::$handler))),+]
            }

            /// Adds every operation, and the schemas it refers to, to `openapi`.
            pub(crate) fn document(openapi: &mut utoipa::openapi::OpenApi) {
                $(add_to_document::<$module::[<__path_ $handler>]>(openapi);)+
            }
        }
    };
}

operations![
    auth::signup,
    auth::signin,
    auth::session,
    auth::signout,
    auth::csrf,
    auth::providers,
    jwks::jwks,
    user::get_user,
    user::update_user,
    user::delete_user,
    user::change_password,
    mfa::enrol_totp,
    mfa::confirm_totp,
    mfa::disable_mfa,
    mfa::regenerate_recovery_codes,
    mfa::verify_mfa,
    passkeys::register_start,
    passkeys::register_finish,
    passkeys::list_passkeys,
    passkeys::rename_passkey,
    passkeys::delete_passkey,
    passkeys::signin_start,
    passkeys::signin_finish,
    api_keys::list_api_keys,
    api_keys::update_api_keys,
    api_keys::delete_api_key,
    generate::generate,
    oauth::oauth_signin,
    oauth::oauth_callback,
    oauth::exchange_code,
    oauth::unlink_provider,
    sessions::refresh,
    sessions::list_sessions,
    sessions::end_session,
    email::request_verification,
    email::verify_email,
    email::forgot_password,
    email::reset_password,
    email::request_email_link,
    email::verify_email_link,
    health::healthz,
    health::readyz,
    health::metrics,
    docs::openapi_json,
    docs::docs,
];

/// One routed operation: where it is served and how to make its route.
struct Operation {
    path: String,
    methods: Vec<Method>,
    route: fn() -> actix_web::Route,
}

impl Operation {
    fn of<P: utoipa::Path>(route: fn() -> actix_web::Route) -> Self {
        use utoipa::openapi::path::HttpMethod as H;
        let methods = P::methods()
            .into_iter()
            .map(|m| match m {
                H::Get => Method::GET,
                H::Post => Method::POST,
                H::Put => Method::PUT,
                H::Delete => Method::DELETE,
                H::Options => Method::OPTIONS,
                H::Head => Method::HEAD,
                H::Patch => Method::PATCH,
                H::Trace => Method::TRACE,
            })
            .collect();
        Self {
            path: P::path(),
            methods,
            route,
        }
    }
}

/// What `#[derive(OpenApi)]` does for each of its `paths(...)`: the operation with its tags, and
/// the schemas it refers to. (The traits are utoipa's own, hidden from its documentation.)
fn add_to_document<P>(openapi: &mut utoipa::openapi::OpenApi)
where
    P: utoipa::Path + utoipa::__dev::SchemaReferences + utoipa::__dev::Tags<'static>,
{
    let mut operation = P::operation();
    operation
        .tags
        .get_or_insert_with(Vec::new)
        .extend(P::tags().into_iter().map(str::to_owned));
    openapi
        .paths
        .add_path_operation(P::path(), P::methods(), operation);
    let mut schemas = Vec::new();
    P::schemas(&mut schemas);
    let components = openapi.components.get_or_insert_with(Default::default);
    components.schemas.extend(schemas);
}

/// Registers every route of the service: one resource per path of [`operations!`], whose
/// unsupported methods answer 405, then the reference page's assets.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for (path, routes) in grouped_by_path() {
        let resource = routes
            .into_iter()
            .fold(resource(&path), |resource, route| resource.route(route));
        cfg.service(resource);
    }
    docs::assets(cfg);
}

fn grouped_by_path() -> Vec<(String, Vec<actix_web::Route>)> {
    let mut paths: Vec<(String, Vec<actix_web::Route>)> = Vec::new();
    for operation in operations() {
        let routes = operation
            .methods
            .iter()
            .map(|method| (operation.route)().method(method.clone()));
        match paths.iter_mut().find(|(path, _)| *path == operation.path) {
            Some((_, existing)) => existing.extend(routes),
            None => paths.push((operation.path, routes.collect())),
        }
    }
    paths
}

/// The path patterns the router serves, in the order they are registered.
pub fn registered_paths() -> Vec<String> {
    grouped_by_path()
        .into_iter()
        .map(|(path, _)| path)
        .collect()
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
pub(crate) fn double_option<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// The answer for a method a resource does not support, with its `Allow` list.
pub async fn method_not_allowed(
    req: actix_web::HttpRequest,
    state: web::Data<crate::state::AppState>,
) -> Result<HttpResponse, ApiError> {
    let allow = req
        .match_pattern()
        .and_then(|pattern| state.allowed_methods.get(&pattern).cloned());
    Err(ApiError::MethodNotAllowed { allow })
}

/// The answer for a path no resource serves.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// The path pattern of the resource that answered, for metrics (reading it back from the router
/// would match the path again).
pub struct RouteLabel(pub std::sync::Arc<str>);

/// A resource at `path` whose unsupported methods answer 405 problem+json.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path)
        .app_data(RouteLabel(path.into()))
        .default_service(web::to(method_not_allowed))
}

/// A string that is always one of `values`.
fn string_enum(values: &[&str], description: &str) -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
}

/// A user as clients see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": "2f0c6f5e-8d1c-4b9a-9c57-1b1f0f6a3e21",
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "image": null,
    "providers": ["credentials"],
    "emailVerified": null,
    "mfaEnabled": false,
    "createdAt": "2026-11-25T15:16:03.123Z",
    "updatedAt": "2026-11-25T15:16:03.123Z"
}))]
pub struct UserBody {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    #[schema(format = Email)]
    pub email: String,
    #[schema(format = "uri", required = true)]
    pub image: Option<String>,
    /// Ways this user can sign in: `credentials` when a password is set, then linked providers,
    /// then `passkey` when the user has registered one; `email` for an account an emailed
    /// sign-in link created.
    #[schema(inline)]
    pub providers: Vec<ProviderId>,
    /// When the user proved the address (a verification link, a reset link, or a provider that
    /// vouches for it); `null` until then.
    #[schema(format = DateTime, required = true)]
    pub email_verified: Option<String>,
    /// Whether sign-ins ask for a second factor (an authenticator app code or a recovery code).
    pub mfa_enabled: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A sign-in method.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderId {
    Credentials,
    Github,
    Google,
    Passkey,
    Email,
}

/// An OAuth provider as named in a path: `/api/auth/signin/{provider}`.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OAuthProviderName {
    Github,
    Google,
}

/// A key-vault provider as named in a path: `/api/user/api-keys/{provider}`.
#[derive(ToSchema)]
pub enum KeyProviderName {
    #[serde(rename = "togetherAI")]
    TogetherAi,
    #[serde(rename = "codeRabbit")]
    CodeRabbit,
    #[serde(rename = "oumi")]
    Oumi,
    #[serde(rename = "kestra")]
    Kestra,
}

impl From<&User> for UserBody {
    fn from(user: &User) -> Self {
        use crate::domain::AuthProvider as P;
        Self {
            id: user.id.to_string(),
            name: user.name.as_str().to_owned(),
            email: user.email.as_str().to_owned(),
            image: user.image.clone(),
            email_verified: user.email_verified.map(rfc3339),
            mfa_enabled: user.mfa_enabled,
            providers: user
                .providers()
                .into_iter()
                .map(|p| match p {
                    P::Credentials => ProviderId::Credentials,
                    P::Github => ProviderId::Github,
                    P::Google => ProviderId::Google,
                    P::Passkey => ProviderId::Passkey,
                    P::Email => ProviderId::Email,
                })
                .collect(),
            created_at: rfc3339(user.created_at),
            updated_at: rfc3339(user.updated_at),
        }
    }
}
