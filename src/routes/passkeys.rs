//! Passkeys: registering and managing them (`/api/user/passkeys/*`), and signing in with one
//! (`/api/auth/passkey/*`). The options and answers are WebAuthn Level 3's JSON forms, which
//! `PublicKeyCredential.parseCreationOptionsFromJSON` / `parseRequestOptionsFromJSON` and
//! `PublicKeyCredential.toJSON()` speak in browsers.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};
use webauthn_rs_proto::{PublicKeyCredentialCreationOptions, PublicKeyCredentialRequestOptions};

use super::{
    answers::{no_store, origin, session_answer, AuthResponse, ClientKind},
    json::{ApiJson, OptionalJson},
    problems,
};
use crate::{
    auth::{CredentialBudget, CurrentUser},
    clock::rfc3339,
    error::ApiError,
    passkeys,
    state::AppState,
    store::PasskeyRecord,
};

/// A passkey of the signed-in user.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"id": "0b8f8e55-3c1a-4f7e-9a41-2d6c5b9e7f10", "name": "MacBook Touch ID", "createdAt": "2026-12-03T10:15:00Z", "lastUsedAt": null}))]
pub struct PasskeyBody {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The last sign-in with it; `null` until then.
    #[schema(format = DateTime, required = true)]
    pub last_used_at: Option<String>,
}

impl From<&PasskeyRecord> for PasskeyBody {
    fn from(p: &PasskeyRecord) -> Self {
        Self {
            id: p.id.to_string(),
            name: p.name.clone(),
            created_at: rfc3339(p.created_at),
            last_used_at: p.last_used_at.map(rfc3339),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PasskeyList {
    pub passkeys: Vec<PasskeyBody>,
}

/// A new name.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Work laptop"}))]
pub struct RenameRequest {
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
}

/// The start of a ceremony takes nothing: an empty body or `{}`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {}

/// A registration begun: pass `publicKey` to `navigator.credentials.create`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationStart {
    /// Names the ceremony at its finish: single use, 5 minutes, this user's only.
    pub flow_id: String,
    #[schema(value_type = CreationOptionsJson)]
    pub public_key: PublicKeyCredentialCreationOptions,
}

/// A sign-in begun: pass `publicKey` to `navigator.credentials.get`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignInStart {
    /// Names the ceremony at its finish: single use, 5 minutes.
    pub flow_id: String,
    #[schema(value_type = RequestOptionsJson)]
    pub public_key: PublicKeyCredentialRequestOptions,
}

/// The end of a registration.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistrationFinish {
    #[schema(min_length = 1, max_length = 256)]
    pub flow_id: String,
    /// What `navigator.credentials.create` gave, as `PublicKeyCredential.toJSON()` writes it.
    #[schema(value_type = RegistrationResponseJson)]
    pub credential: RegisterPublicKeyCredential,
    /// 1-64 characters; default `Passkey`.
    #[schema(min_length = 1, max_length = 64)]
    pub name: Option<String>,
}

/// The end of a sign-in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignInFinish {
    #[schema(min_length = 1, max_length = 256)]
    pub flow_id: String,
    /// What `navigator.credentials.get` gave, as `PublicKeyCredential.toJSON()` writes it.
    #[schema(value_type = AuthenticationResponseJson)]
    pub credential: PublicKeyCredential,
    /// `browser` (default): tokens in cookies only; `app`: tokens in the body only.
    #[serde(default)]
    pub client: Option<ClientKind>,
}

// The WebAuthn Level 3 JSON forms, for the document only (the bodies are the relying-party
// library's own types). Binary fields are base64url without padding.

/// PublicKeyCredentialCreationOptionsJSON.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
#[schema(example = json!({"rp": {"id": "example.com", "name": "example.com"}, "user": {"id": "q1lN3m3B0kqg2x7ZrT0yUw", "name": "ada@example.com", "displayName": "Ada Lovelace"}, "challenge": "Vw8o3CX1k1mA9n1LZ0p4yQkFq2l0oN3r5sT7uV9wXyA", "pubKeyCredParams": [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -257}], "timeout": 300000, "excludeCredentials": [], "authenticatorSelection": {"residentKey": "required", "requireResidentKey": true, "userVerification": "required"}, "attestation": "none", "extensions": {"credentialProtectionPolicy": "userVerificationRequired", "enforceCredentialProtectionPolicy": false, "uvm": true, "credProps": true}}))]
pub struct CreationOptionsJson {
    rp: RelyingPartyJson,
    user: UserEntityJson,
    /// 32 random bytes, accepted once.
    challenge: String,
    pub_key_cred_params: Vec<CredentialParameterJson>,
    /// Milliseconds.
    timeout: Option<u32>,
    /// The user's passkeys: an authenticator holding one of them makes no second.
    exclude_credentials: Vec<CredentialDescriptorJson>,
    authenticator_selection: AuthenticatorSelectionJson,
    /// `none`.
    attestation: Option<String>,
    #[schema(value_type = Option<Object>)]
    extensions: Option<()>,
}

/// PublicKeyCredentialRequestOptionsJSON, for a discoverable credential.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
#[schema(example = json!({"challenge": "a0Zq1pL8rM2nO4kJ6hG9fD3sA5wE7tY1uI0oP2lK4jH", "timeout": 300000, "rpId": "example.com", "allowCredentials": [], "userVerification": "required", "extensions": {"uvm": true}}))]
pub struct RequestOptionsJson {
    challenge: String,
    timeout: Option<u32>,
    rp_id: String,
    /// Empty: the authenticator offers the user's passkeys for this RP.
    allow_credentials: Vec<CredentialDescriptorJson>,
    /// `required`.
    user_verification: String,
    #[schema(value_type = Option<Object>)]
    extensions: Option<()>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RelyingPartyJson {
    /// The RP ID (`AUTHVAULT_WEBAUTHN_RP_ID`).
    id: String,
    name: String,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct UserEntityJson {
    /// The user's WebAuthn user handle: 16 random bytes, the same for all their passkeys.
    id: String,
    /// The user's email.
    name: String,
    display_name: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CredentialParameterJson {
    /// `public-key`.
    #[schema(rename = "type")]
    type_: String,
    /// A COSE algorithm: -7 (ES256), -257 (RS256), ...
    alg: i64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CredentialDescriptorJson {
    /// `public-key`.
    #[schema(rename = "type")]
    type_: String,
    /// The credential ID.
    id: String,
    transports: Option<Vec<String>>,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AuthenticatorSelectionJson {
    /// `required`: a discoverable credential, for sign-in without a username.
    resident_key: String,
    require_resident_key: bool,
    /// `required`.
    user_verification: String,
    authenticator_attachment: Option<String>,
}

/// RegistrationResponseJSON (`PublicKeyCredential.toJSON()` after `create`).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct RegistrationResponseJson {
    id: String,
    raw_id: String,
    response: AttestationResponseJson,
    /// `public-key`.
    #[schema(rename = "type")]
    type_: String,
    #[schema(value_type = Option<Object>)]
    client_extension_results: Option<()>,
    authenticator_attachment: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AttestationResponseJson {
    #[schema(rename = "clientDataJSON")]
    client_data_json: String,
    #[schema(rename = "attestationObject")]
    attestation_object: String,
    transports: Option<Vec<String>>,
}

/// AuthenticationResponseJSON (`PublicKeyCredential.toJSON()` after `get`).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AuthenticationResponseJson {
    id: String,
    raw_id: String,
    response: AssertionResponseJson,
    /// `public-key`.
    #[schema(rename = "type")]
    type_: String,
    #[schema(value_type = Option<Object>)]
    client_extension_results: Option<()>,
    authenticator_attachment: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AssertionResponseJson {
    #[schema(rename = "clientDataJSON")]
    client_data_json: String,
    #[schema(rename = "authenticatorData")]
    authenticator_data: String,
    signature: String,
    /// The user handle the credential was made for; required (the credential is discoverable).
    #[schema(rename = "userHandle")]
    user_handle: Option<String>,
}

/// Begin registering a passkey for the signed-in user.
#[utoipa::path(post, path = "/api/user/passkeys/register/start", tag = "passkeys",
    security(("bearer" = []), ("cookie" = [])),
    request_body(content = Option<StartRequest>, description = "Empty, or `{}`"),
    responses(
        (status = 200, description = "The creation options and the ceremony's id", body = RegistrationStart),
        problems::JsonBody, problems::SignedIn, problems::CookieWrite, problems::Stored,
        (status = 401, description = "`reauth_required`: needs a sign-in within the last 10 minutes (`unauthenticated` without a valid session)"),
        (status = 404, description = "`not_found`: passkeys are off (the RP ID is an IP address)"),
    ))]
pub async fn register_start(
    state: web::Data<AppState>,
    current: CurrentUser,
    _body: OptionalJson<StartRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = current.load(&state).await?;
    let ceremony = passkeys::start_registration(&state, &current, &user).await?;
    Ok(no_store().json(RegistrationStart {
        flow_id: ceremony.flow_id,
        public_key: ceremony.options,
    }))
}

/// Finish registering a passkey with the authenticator's answer.
#[utoipa::path(post, path = "/api/user/passkeys/register/finish", tag = "passkeys",
    security(("bearer" = []), ("cookie" = [])),
    request_body = RegistrationFinish,
    responses(
        (status = 201, description = "The passkey is registered; a notice is mailed", body = PasskeyBody),
        problems::JsonBody, problems::SignedIn, problems::CookieWrite, problems::Stored,
        (status = 400, description = "`invalid_passkey`: the attestation, origin, RP ID, challenge or user verification did not verify, the credential is registered already, or the ceremony is unknown, used, older than 5 minutes or another user's (`validation_failed` for a malformed body)"),
        (status = 404, description = "`not_found`: passkeys are off"),
    ))]
pub async fn register_finish(
    state: web::Data<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<RegistrationFinish>,
) -> Result<HttpResponse, ApiError> {
    let record = passkeys::finish_registration(
        &state,
        &current,
        &body.flow_id,
        &body.credential,
        body.name.as_deref(),
    )
    .await?;
    Ok(HttpResponse::Created().json(PasskeyBody::from(&record)))
}

/// The signed-in user's passkeys, oldest first.
#[utoipa::path(get, path = "/api/user/passkeys", tag = "passkeys",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The passkeys", body = PasskeyList),
        problems::SignedIn, problems::Stored,
        (status = 404, description = "`not_found`: passkeys are off"),
    ))]
pub async fn list_passkeys(
    state: web::Data<AppState>,
    current: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    let list = passkeys::list(&state, &current).await?;
    Ok(HttpResponse::Ok().json(PasskeyList {
        passkeys: list.iter().map(PasskeyBody::from).collect(),
    }))
}

/// Rename one of the signed-in user's passkeys.
#[utoipa::path(patch, path = "/api/user/passkeys/{id}", tag = "passkeys",
    security(("bearer" = []), ("cookie" = [])),
    params(("id" = String, Path, description = "The passkey's id")),
    request_body = RenameRequest,
    responses(
        (status = 200, description = "The renamed passkey", body = PasskeyBody),
        problems::JsonBody, problems::SignedIn, problems::CookieWrite, problems::Stored,
        (status = 404, description = "`not_found`: no such passkey of this user (or passkeys are off)"),
    ))]
pub async fn rename_passkey(
    state: web::Data<AppState>,
    current: CurrentUser,
    id: web::Path<String>,
    ApiJson(body): ApiJson<RenameRequest>,
) -> Result<HttpResponse, ApiError> {
    let record = passkeys::rename(&state, &current, &id, &body.name).await?;
    Ok(HttpResponse::Ok().json(PasskeyBody::from(&record)))
}

/// Delete one of the signed-in user's passkeys.
#[utoipa::path(delete, path = "/api/user/passkeys/{id}", tag = "passkeys",
    security(("bearer" = []), ("cookie" = [])),
    params(("id" = String, Path, description = "The passkey's id")),
    responses(
        (status = 204, description = "Deleted"),
        problems::SignedIn, problems::CookieWrite, problems::Stored,
        (status = 404, description = "`not_found`: no such passkey of this user (or passkeys are off)"),
        (status = 409, description = "`last_sign_in_method`: the user would have no way left to sign in"),
    ))]
pub async fn delete_passkey(
    state: web::Data<AppState>,
    current: CurrentUser,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    passkeys::delete(&state, &current, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Begin a sign-in with a passkey (no username: the authenticator offers the user's passkeys).
#[utoipa::path(post, path = "/api/auth/passkey/start", tag = "passkeys",
    request_body(content = Option<StartRequest>, description = "Empty, or `{}`"),
    responses(
        (status = 200, description = "The request options and the ceremony's id", body = SignInStart),
        problems::JsonBody, problems::OriginChecked, problems::Limited, problems::Stored,
        (status = 404, description = "`not_found`: passkeys are off"),
    ))]
pub async fn signin_start(
    state: web::Data<AppState>,
    _body: OptionalJson<StartRequest>,
    CredentialBudget(_ip): CredentialBudget,
) -> Result<HttpResponse, ApiError> {
    let ceremony = passkeys::start_sign_in(&state).await?;
    Ok(no_store().json(SignInStart {
        flow_id: ceremony.flow_id,
        public_key: ceremony.options,
    }))
}

/// Finish a passkey sign-in with the authenticator's answer. No second factor is asked.
#[utoipa::path(post, path = "/api/auth/passkey/finish", tag = "passkeys",
    request_body = SignInFinish,
    responses(
        (status = 200, description = "Signed in, `amr` `[\"hwk\",\"mfa\"]`; for browser clients the session cookie is set", body = AuthResponse,
            headers(("Set-Cookie" = String, description = "The session cookie"))),
        problems::JsonBody, problems::OriginChecked, problems::Limited, problems::Stored,
        (status = 400, description = "`invalid_passkey`: the ceremony is unknown, used or expired; start again (`validation_failed` for a malformed body)"),
        (status = 401, description = "`invalid_credentials`: unknown credential, bad signature, wrong origin or RP ID, no user verification, sign counter gone backwards, or a user handle that is not the credential's user"),
        (status = 404, description = "`not_found`: passkeys are off"),
    ))]
pub async fn signin_finish(
    state: web::Data<AppState>,
    req: HttpRequest,
    ApiJson(body): ApiJson<SignInFinish>,
    CredentialBudget(ip): CredentialBudget,
) -> Result<HttpResponse, ApiError> {
    let (user, started) =
        passkeys::finish_sign_in(&state, &origin(&req, ip), &body.flow_id, &body.credential)
            .await?;
    Ok(session_answer(
        &state,
        &user,
        &started,
        body.client.unwrap_or_default(),
        StatusCode::OK,
    ))
}
