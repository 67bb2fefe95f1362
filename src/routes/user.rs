//! `/api/user`: the signed-in user's profile, password and account.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{
    json::{ApiJson, OptionalJson},
    problems, UserBody,
};
use crate::{
    accounts,
    auth::{ClientIp, CurrentUser},
    clock,
    domain::{FieldError, FieldErrors, Password, UserName},
    error::ApiError,
    state::AppState,
    store::ProfileUpdate,
};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"name": "Ada King", "image": "https://example.com/ada.png"}))]
pub struct UpdateUserRequest {
    /// 1-100 characters after trimming, without control characters.
    #[serde(default)]
    #[schema(pattern = r"^\s*\S(.{0,98}\S)?\s*$")]
    pub name: Option<String>,
    /// An http(s) URL of at most 2048 characters; `null` removes the image.
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<String>, format = "uri", max_length = 2048)]
    pub image: Option<Option<String>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"currentPassword": "correct horse battery", "newPassword": "another long passphrase"}))]
pub struct ChangePasswordRequest {
    /// Required when the user already has a password.
    #[serde(default)]
    #[schema(format = Password)]
    pub current_password: Option<String>,
    /// At least 8 characters and at most 72 bytes of UTF-8.
    #[schema(min_length = 8, max_length = 72, format = Password)]
    pub new_password: String,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"password": "correct horse battery"}))]
pub struct DeleteUserRequest {
    /// Required when the user has a password.
    #[serde(default)]
    #[schema(format = Password)]
    pub password: Option<String>,
}

fn parse_image(raw: &str) -> Result<String, FieldError> {
    let raw = raw.trim();
    let ok = raw.len() <= 2048
        && url::Url::parse(raw)
            .map(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .unwrap_or(false);
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(FieldError::new(
            "image",
            "must be an http(s) URL of at most 2048 characters",
        ))
    }
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/user", tag = "user",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = UserBody),
        problems::SignedIn, problems::Stored,
    ))]
pub async fn get_user(
    state: web::Data<AppState>,
    current: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    let user = current.load(&state).await?;
    Ok(HttpResponse::Ok().json(UserBody::from(&user)))
}

/// Change the name or image.
#[utoipa::path(patch, path = "/api/user", tag = "user",
    security(("bearer" = []), ("cookie" = [])),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "The updated user", body = UserBody),
        problems::JsonBody, problems::SignedIn, problems::CookieWrite, problems::Stored,
    ))]
pub async fn update_user(
    state: web::Data<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<UpdateUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let mut errors = FieldErrors::new();
    let name = match body.name.as_deref() {
        Some(raw) => errors.take(UserName::parse(raw)),
        None => None,
    };
    let image = match body.image {
        Some(Some(raw)) => errors.take(parse_image(&raw)).map(Some),
        Some(None) => Some(None),
        None => None,
    };
    errors.finish()?;
    let update = ProfileUpdate { name, image };
    let user = state
        .store
        .update_profile(current.id, update, clock::now())
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    Ok(HttpResponse::Ok().json(UserBody::from(&user)))
}

/// Set or change the password; every other session of the user ends.
#[utoipa::path(post, path = "/api/user/password", tag = "user",
    security(("bearer" = []), ("cookie" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Password changed; every other token of the user is revoked"),
        problems::JsonBody, problems::CookieWrite, problems::Stored,
        (status = 401, description = "`unauthenticated`, `invalid_credentials` (wrong current password) or `reauth_required` (a first password needs a sign-in within 10 minutes)"),
        (status = 429, description = "`rate_limited`: too many wrong passwords for this account from this client (they count as failed sign-ins)"),
    ))]
pub async fn change_password(
    state: web::Data<AppState>,
    current: CurrentUser,
    ip: ClientIp,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    let new_password = Password::parse(&body.new_password, "newPassword")?;
    let user = current.load(&state).await?;
    accounts::change_password(
        &state,
        &current,
        ip,
        &user,
        body.current_password.as_deref(),
        &new_password,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Delete the account with everything stored for it.
#[utoipa::path(delete, path = "/api/user", tag = "user",
    security(("bearer" = []), ("cookie" = [])),
    request_body(content = Option<DeleteUserRequest>, description = "The password, when the user has one"),
    responses(
        (status = 204, description = "Account, identities, sessions and stored keys deleted; the cookie is cleared"),
        problems::JsonBody, problems::CookieWrite, problems::Stored,
        (status = 400, description = "`validation_failed` (password missing)"),
        (status = 401, description = "`unauthenticated`, `invalid_credentials` or `reauth_required`"),
        (status = 429, description = "`rate_limited`: too many wrong passwords for this account from this client (they count as failed sign-ins)"),
    ))]
pub async fn delete_user(
    state: web::Data<AppState>,
    current: CurrentUser,
    ip: ClientIp,
    OptionalJson(body): OptionalJson<DeleteUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = current.load(&state).await?;
    accounts::delete_account(&state, &current, ip, &user, body.password.as_deref()).await?;
    Ok(HttpResponse::NoContent()
        .cookie(state.cookies.clear_session())
        .cookie(state.cookies.clear_refresh())
        .finish())
}
