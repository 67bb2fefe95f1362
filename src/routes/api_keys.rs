//! `/api/user/api-keys`: the signed-in user's third-party API keys, sealed at rest and shown
//! masked.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{json::ApiJson, problems};
use crate::{
    auth::CurrentUser,
    clock::{self, rfc3339},
    domain::{ApiKeyValue, FieldErrors, KeyProvider, UserId},
    error::ApiError,
    state::AppState,
    store::{KeyChange, StoredKey},
    vault::{KeyRing, Masked},
};

/// A stored key as it may be shown.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"masked": "sk-abc12...wxyz", "updatedAt": "2026-11-25T15:16:03.123Z"}))]
pub struct MaskedKey {
    /// 24+ characters: first 8 and last 4; 12-23: `...` and the last 4; shorter: `********`.
    pub masked: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// Every supported provider; `null` where no key is stored.
#[derive(Serialize, ToSchema, Default)]
#[schema(example = json!({"togetherAI": {"masked": "sk-abc12...wxyz", "updatedAt": "2026-11-25T15:16:03.123Z"}, "codeRabbit": null, "oumi": null, "kestra": null}))]
pub struct ApiKeysMap {
    #[serde(rename = "togetherAI")]
    #[schema(required = true)]
    pub together_ai: Option<MaskedKey>,
    #[serde(rename = "codeRabbit")]
    #[schema(required = true)]
    pub code_rabbit: Option<MaskedKey>,
    #[schema(required = true)]
    pub oumi: Option<MaskedKey>,
    #[schema(required = true)]
    pub kestra: Option<MaskedKey>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"apiKeys": {"togetherAI": {"masked": "sk-abc12...wxyz", "updatedAt": "2026-11-25T15:16:03.123Z"},
    "codeRabbit": null, "oumi": null, "kestra": null}}))]
pub struct ApiKeysBody {
    pub api_keys: ApiKeysMap,
}

/// A partial update: a string sets the key, `null` or `""` removes it, an absent field leaves
/// it as it is. Keys are 1-512 printable ASCII characters without spaces.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"togetherAI": "tgp_v1_0123456789abcdefghijklmnop", "oumi": null}))]
pub struct UpdateApiKeysRequest {
    #[serde(
        rename = "togetherAI",
        default,
        deserialize_with = "super::double_option"
    )]
    #[schema(value_type = Option<String>, max_length = 512, pattern = "^[!-~]*$")]
    pub together_ai: Option<Option<String>>,
    #[serde(
        rename = "codeRabbit",
        default,
        deserialize_with = "super::double_option"
    )]
    #[schema(value_type = Option<String>, max_length = 512, pattern = "^[!-~]*$")]
    pub code_rabbit: Option<Option<String>>,
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<String>, max_length = 512, pattern = "^[!-~]*$")]
    pub oumi: Option<Option<String>>,
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<String>, max_length = 512, pattern = "^[!-~]*$")]
    pub kestra: Option<Option<String>>,
}

/// Opens and masks every stored key; a key that does not open fails the whole answer.
fn masked_body(vault: &KeyRing, user: UserId, keys: &[StoredKey]) -> Result<ApiKeysBody, ApiError> {
    let mut map = ApiKeysMap::default();
    for key in keys {
        let plaintext = vault.open(user, key.provider, &key.sealed).map_err(|e| {
            log::error!(
                "user {user}: stored {} key (sealed with key id {}) does not open: {e}",
                key.provider,
                key.sealed.key_id
            );
            ApiError::VaultOpenFailed
        })?;
        let shown = Some(MaskedKey {
            masked: Masked::of(secrecy::ExposeSecret::expose_secret(&plaintext)).to_string(),
            updated_at: rfc3339(key.updated_at),
        });
        match key.provider {
            KeyProvider::TogetherAi => map.together_ai = shown,
            KeyProvider::CodeRabbit => map.code_rabbit = shown,
            KeyProvider::Oumi => map.oumi = shown,
            KeyProvider::Kestra => map.kestra = shown,
        }
    }
    Ok(ApiKeysBody { api_keys: map })
}

async fn answer(state: &AppState, user: UserId) -> Result<HttpResponse, ApiError> {
    let keys = state.store.api_keys(user).await?;
    Ok(HttpResponse::Ok().json(masked_body(&state.vault, user, &keys)?))
}

/// The user's keys, masked.
#[utoipa::path(get, path = "/api/user/api-keys", tag = "api-keys",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Every provider, masked or null", body = ApiKeysBody),
        problems::SignedIn, problems::Stored,
        (status = 500, description = "`vault_open_failed` (a stored key does not decrypt) or `internal`"),
    ))]
pub async fn list_api_keys(
    state: web::Data<AppState>,
    current: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    answer(&state, current.id).await
}

/// Set or remove keys.
#[utoipa::path(post, path = "/api/user/api-keys", tag = "api-keys",
    security(("bearer" = []), ("cookie" = [])),
    request_body = UpdateApiKeysRequest,
    responses(
        (status = 200, description = "Every provider after the update, masked or null", body = ApiKeysBody),
        problems::JsonBody, problems::SignedIn, problems::CookieWrite, problems::Stored,
        (status = 400, description = "`validation_failed`: an unknown provider or an invalid key"),
        (status = 500, description = "`vault_open_failed` (a stored key does not decrypt) or `internal`"),
    ))]
pub async fn update_api_keys(
    state: web::Data<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<UpdateApiKeysRequest>,
) -> Result<HttpResponse, ApiError> {
    let requested = [
        (KeyProvider::TogetherAi, body.together_ai),
        (KeyProvider::CodeRabbit, body.code_rabbit),
        (KeyProvider::Oumi, body.oumi),
        (KeyProvider::Kestra, body.kestra),
    ];
    let mut errors = FieldErrors::new();
    let mut changes: Vec<KeyChange> = Vec::with_capacity(4);
    for (provider, value) in requested {
        match value {
            None => {}
            Some(None) => changes.push((provider, None)),
            Some(Some(raw)) if raw.is_empty() => changes.push((provider, None)),
            Some(Some(raw)) => {
                if let Some(key) = errors.take(ApiKeyValue::parse(&raw, provider.as_str())) {
                    let sealed = state
                        .vault
                        .seal(current.id, provider, key.expose())
                        .map_err(ApiError::internal)?;
                    changes.push((provider, Some(sealed)));
                }
            }
        }
    }
    errors.finish()?;
    if !changes.is_empty()
        && !state
            .store
            .update_api_keys(current.id, &changes, clock::now())
            .await?
    {
        return Err(ApiError::Unauthenticated);
    }
    log::info!("user {} updated {} api key(s)", current.id, changes.len());
    answer(&state, current.id).await
}

/// Remove one key.
#[utoipa::path(delete, path = "/api/user/api-keys/{provider}", tag = "api-keys",
    security(("bearer" = []), ("cookie" = [])),
    params(("provider" = inline(super::KeyProviderName), Path, description = "`togetherAI`, `codeRabbit`, `oumi` or `kestra`; any other name is 404 `unknown_provider`")),
    responses(
        (status = 204, description = "The key is gone (or was never set)"),
        problems::SignedIn, problems::CookieWrite, problems::Stored,
        (status = 404, description = "`unknown_provider`"),
    ))]
pub async fn delete_api_key(
    state: web::Data<AppState>,
    current: CurrentUser,
    provider: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let provider = KeyProvider::parse(&provider).ok_or(ApiError::UnknownProvider)?;
    if !state
        .store
        .update_api_keys(current.id, &[(provider, None)], clock::now())
        .await?
    {
        return Err(ApiError::Unauthenticated);
    }
    log::info!("user {} removed their {provider} key", current.id);
    Ok(HttpResponse::NoContent().finish())
}
