//! `/.well-known/jwks.json`: the public keys that verify access tokens.

use actix_web::{http::header, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// A JSON Web Key Set (RFC 7517).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"keys": [{"kty": "OKP", "crv": "Ed25519",
    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "k1", "alg": "EdDSA", "use": "sig"}]}))]
pub struct JwksBody {
    /// One public key per configured signing key; empty with HS256.
    pub keys: Vec<JwkBody>,
}

/// A public key: `kty`, `crv`, `x` (and `y` for P-256), `kid`, `alg`, `use`. Never a private
/// member.
#[derive(Serialize, ToSchema)]
pub struct JwkBody {
    /// `OKP` (Ed25519) or `EC` (P-256).
    pub kty: String,
    /// `Ed25519` or `P-256`.
    pub crv: String,
    /// The public key (Ed25519) or its x coordinate (P-256), base64url.
    pub x: String,
    /// The y coordinate, P-256 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// The `kid` of tokens this key verifies.
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// The public keys that verify access tokens, for resource servers that check them offline.
/// Cached for 300 s: a new key is published before it signs (see the README on rotation).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "The key set; `{\"keys\": []}` with HS256", body = JwksBody,
        content_type = "application/json",
        headers(("Cache-Control" = String, description = "`public, max-age=300`")))))]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(state.jwks.clone())
}
