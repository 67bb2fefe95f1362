//! Multi-factor sign-in: enrolling an authenticator app, turning MFA off, new recovery codes
//! (`/api/user/mfa/*`), and the second step of a sign-in (`POST /api/auth/mfa/verify`).

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    answers::{no_store, origin, session_answer, AuthResponse, ClientKind},
    json::ApiJson,
    problems,
};
use crate::{
    auth::{ClientIp, CredentialBudget, CurrentUser},
    error::ApiError,
    mfa,
    state::AppState,
};

/// A new pending TOTP secret, for the authenticator app.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "otpauthUrl": "otpauth://totp/authvault:ada@example.com?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=authvault&algorithm=SHA1&digits=6&period=30", "qrSvg": "<?xml version=\"1.0\" standalone=\"yes\"?><svg xmlns=\"http://www.w3.org/2000/svg\" ...</svg>"}))]
pub struct TotpEnrolment {
    /// 20 random bytes, base32 without padding, for typing into the app.
    pub secret: String,
    /// The `otpauth://totp/...` URL the QR code holds.
    #[schema(format = "uri")]
    pub otpauth_url: String,
    /// An SVG document of a QR code of `otpauthUrl`.
    pub qr_svg: String,
}

/// A code from the authenticator app (6 digits), or an unused recovery code.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"code": "123456"}))]
pub struct CodeRequest {
    #[schema(min_length = 1, max_length = 64)]
    pub code: String,
}

/// Recovery codes, shown once: each signs in once in place of an authenticator code.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"recoveryCodes": ["k3d9-x7qa-mn2p", "..."]}))]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
}

/// The second step of a sign-in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"mfaToken": "Q2hhbGxlbmdlVG9rZW5FeGFtcGxlMTIzNDU2Nzg5MGFi", "code": "123456"}))]
pub struct MfaVerifyRequest {
    /// From the sign-in's `mfaRequired` answer (or the `mfaToken=` of an OAuth redirect).
    #[schema(min_length = 1, max_length = 256)]
    pub mfa_token: String,
    /// A 6-digit code of the authenticator app, or an unused recovery code (case, spaces and
    /// dashes do not matter).
    #[schema(min_length = 1, max_length = 64)]
    pub code: String,
    /// `browser` (default): tokens in cookies only; `app`: tokens in the body only.
    #[serde(default)]
    pub client: Option<ClientKind>,
}

fn recovery(codes: Vec<String>) -> HttpResponse {
    no_store().json(RecoveryCodes {
        recovery_codes: codes,
    })
}

/// Start enrolling an authenticator app: a new pending TOTP secret (replacing a pending one).
#[utoipa::path(post, path = "/api/user/mfa/totp", tag = "mfa",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "A pending secret; confirm it with a code from the app", body = TotpEnrolment),
        problems::SignedIn, problems::CookieWrite, problems::Stored,
        (status = 401, description = "`reauth_required`: needs a sign-in within the last 10 minutes (`unauthenticated` without a valid session)"),
        (status = 409, description = "`mfa_already_enabled`: turn MFA off first"),
    ))]
pub async fn enrol_totp(
    state: web::Data<AppState>,
    current: CurrentUser,
) -> Result<HttpResponse, ApiError> {
    let user = current.load(&state).await?;
    let enrolment = mfa::enrol(&state, &current, &user).await?;
    Ok(no_store().json(TotpEnrolment {
        secret: enrolment.secret,
        otpauth_url: enrolment.otpauth_url,
        qr_svg: enrolment.qr_svg,
    }))
}

/// Confirm the pending secret with a code from the app: MFA is on.
#[utoipa::path(post, path = "/api/user/mfa/totp/confirm", tag = "mfa",
    security(("bearer" = []), ("cookie" = [])),
    request_body = CodeRequest,
    responses(
        (status = 200, description = "MFA is on: 10 recovery codes, shown once; every other session of the user ended; a notice is mailed", body = RecoveryCodes),
        problems::JsonBody, problems::SignedIn, problems::CookieWrite, problems::Stored,
        (status = 400, description = "`invalid_code`: the code is wrong, or no secret is pending (`validation_failed` for a malformed body)"),
    ))]
pub async fn confirm_totp(
    state: web::Data<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<CodeRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = current.load(&state).await?;
    let codes = mfa::confirm(&state, &current, &user, &body.code).await?;
    Ok(recovery(codes))
}

/// Turn MFA off, with a current code.
#[utoipa::path(delete, path = "/api/user/mfa", tag = "mfa",
    security(("bearer" = []), ("cookie" = [])),
    request_body = CodeRequest,
    responses(
        (status = 204, description = "MFA is off: the secret and the recovery codes are removed; a notice is mailed"),
        problems::JsonBody, problems::CookieWrite, problems::Stored,
        (status = 400, description = "`invalid_code`: wrong or used code (`validation_failed` for a malformed body)"),
        (status = 401, description = "`reauth_required`: needs a sign-in within the last 10 minutes (`unauthenticated` without a valid session)"),
        (status = 404, description = "`not_found`: MFA is off"),
        (status = 429, description = "`rate_limited`: too many wrong codes for this account from this client (they count as failed sign-ins)"),
    ))]
pub async fn disable_mfa(
    state: web::Data<AppState>,
    current: CurrentUser,
    ip: ClientIp,
    ApiJson(body): ApiJson<CodeRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = current.load(&state).await?;
    mfa::disable(&state, &current, &user, ip, &body.code).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A new set of recovery codes, with a current code; the old set stops working.
#[utoipa::path(post, path = "/api/user/mfa/recovery-codes", tag = "mfa",
    security(("bearer" = []), ("cookie" = [])),
    request_body = CodeRequest,
    responses(
        (status = 200, description = "10 new recovery codes, shown once", body = RecoveryCodes),
        problems::JsonBody, problems::CookieWrite, problems::Stored,
        (status = 400, description = "`invalid_code`: wrong or used code (`validation_failed` for a malformed body)"),
        (status = 401, description = "`reauth_required`: needs a sign-in within the last 10 minutes (`unauthenticated` without a valid session)"),
        (status = 404, description = "`not_found`: MFA is off"),
        (status = 429, description = "`rate_limited`: too many wrong codes for this account from this client (they count as failed sign-ins)"),
    ))]
pub async fn regenerate_recovery_codes(
    state: web::Data<AppState>,
    current: CurrentUser,
    ip: ClientIp,
    ApiJson(body): ApiJson<CodeRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = current.load(&state).await?;
    let codes = mfa::regenerate(&state, &current, &user, ip, &body.code).await?;
    Ok(recovery(codes))
}

/// Complete a sign-in that answered `mfaRequired`, with a code of the authenticator app or a
/// recovery code.
#[utoipa::path(post, path = "/api/auth/mfa/verify", tag = "mfa",
    request_body = MfaVerifyRequest,
    responses(
        (status = 200, description = "Signed in; `amr` adds `otp` and `mfa`; for browser clients the session cookie is set", body = AuthResponse,
            headers(("Set-Cookie" = String, description = "The session cookie"))),
        problems::JsonBody, problems::Limited, problems::Stored,
        (status = 400, description = "`invalid_mfa_token`: unknown, used, expired, or spent by 5 wrong codes; sign in again (`validation_failed` for a malformed body)"),
        (status = 401, description = "`invalid_code`: wrong or already used code (it counts as a failed sign-in; `unauthenticated` if the account's credential changed meanwhile)"),
        (status = 403, description = "`origin_forbidden`: the `Origin` header names a site that is not allowed"),
    ))]
pub async fn verify_mfa(
    state: web::Data<AppState>,
    req: HttpRequest,
    ApiJson(body): ApiJson<MfaVerifyRequest>,
    CredentialBudget(ip): CredentialBudget,
) -> Result<HttpResponse, ApiError> {
    let (user, started) =
        mfa::verify(&state, &origin(&req, ip), &body.mfa_token, &body.code).await?;
    Ok(session_answer(
        &state,
        &user,
        &started,
        body.client.unwrap_or_default(),
        StatusCode::OK,
    ))
}
