//! HTTP resources, one module per area of the contract, and the bodies they exchange.

use actix_web::{web, HttpResponse};
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
pub mod oauth;
pub mod sessions;
pub mod user;

/// Registers every route of the service.
pub fn configure(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    docs::configure(cfg);
    auth::configure(cfg);
    user::configure(cfg);
    api_keys::configure(cfg);
    generate::configure(cfg);
    oauth::configure(cfg);
    email::configure(cfg);
    sessions::configure(cfg);
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

/// Every path pattern given to `resource`, so tests can compare the router with the document.
static REGISTERED: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// The path pattern of the resource that answered, for metrics (reading it back from the router
/// would match the path again).
pub struct RouteLabel(pub std::sync::Arc<str>);

/// A resource at `path` whose unsupported methods answer 405 problem+json.
pub fn resource(path: &str) -> actix_web::Resource {
    if let Ok(mut registered) = REGISTERED.lock() {
        registered.insert(path.to_owned());
    }
    web::resource(path)
        .app_data(RouteLabel(path.into()))
        .default_service(web::to(method_not_allowed))
}

/// The path patterns registered so far (complete once an app has been built).
pub fn registered_paths() -> Vec<String> {
    REGISTERED
        .lock()
        .map(|r| r.iter().cloned().collect())
        .unwrap_or_default()
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
    /// Ways this user can sign in: `credentials` when a password is set, then linked providers.
    #[schema(inline)]
    pub providers: Vec<ProviderId>,
    /// When the user proved the address (a verification link, a reset link, or a provider that
    /// vouches for it); `null` until then.
    #[schema(format = DateTime, required = true)]
    pub email_verified: Option<String>,
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
            providers: user
                .providers()
                .into_iter()
                .map(|p| match p {
                    P::Credentials => ProviderId::Credentials,
                    P::Github => ProviderId::Github,
                    P::Google => ProviderId::Google,
                })
                .collect(),
            created_at: rfc3339(user.created_at),
            updated_at: rfc3339(user.updated_at),
        }
    }
}
