//! Sign-in with GitHub and Google: the start, the provider's callback, the one-time code
//! exchange for apps, and unlinking a provider.

use actix_web::{
    cookie::Cookie,
    http::{header, StatusCode},
    web, HttpRequest, HttpResponse, ResponseError,
};
use oauth2::PkceCodeChallenge;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::{
    answers::{origin, session_cookies, sign_in_answer, ClientKind, SignInResponse},
    json::ApiJson,
    problems, UserBody,
};
use crate::{
    accounts::{self, ProviderIdentity},
    auth::{
        oauth_flow::{Flow, FLOW_TTL_SECS},
        pkce, ClientIp, CredentialBudget, CurrentUser,
    },
    clock,
    domain::{Amr, AuthMethod, AuthProvider, Email},
    error::ApiError,
    signin::{self, SignIn},
    state::AppState,
    store::{StoreError, TokenKind},
};

/// How long a one-time code for an app lives.
const CODE_TTL_SECS: i64 = 60;

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct SigninQuery {
    /// Where to send the browser afterwards; must be on the allow-list. Default: the public URL.
    #[param(format = "uri")]
    pub callback_url: Option<String>,
    /// S256 challenge of the app's own code verifier (base64url, 43 characters); required
    /// when `callbackUrl` is an app callback.
    pub code_challenge: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The authorization code from the provider.
    pub code: Option<String>,
    /// The state sent at the start.
    pub state: Option<String>,
    /// Set by the provider when the user declined (`access_denied`).
    pub error: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"code": "x3Jq...", "codeVerifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"}))]
pub struct TokenRequest {
    /// The one-time code appended to the app callback.
    pub code: String,
    /// The app's PKCE code verifier (RFC 7636) whose S256 challenge started the sign-in.
    pub code_verifier: String,
    /// `browser` (default): tokens in cookies only; `app`: tokens in the body only.
    #[serde(default)]
    pub client: Option<ClientKind>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CodeData {
    challenge: String,
    auth_time: i64,
    /// The user's credential version at the callback: the exchange starts a session only while
    /// it holds (a takeover clean-up in between spends the code's worth).
    #[serde(default)]
    credential_version: u64,
}

/// The enabled provider named in the path.
fn enabled(state: &AppState, raw: &str) -> Result<AuthProvider, ApiError> {
    match AuthProvider::parse(raw) {
        Some(AuthProvider::Github) if state.github.is_some() => Ok(AuthProvider::Github),
        Some(AuthProvider::Google) if state.google.is_some() => Ok(AuthProvider::Google),
        _ => Err(ApiError::UnknownProvider),
    }
}

/// Start a sign-in with a provider: redirects to its authorize page.
#[utoipa::path(get, path = "/api/auth/signin/{provider}", tag = "oauth",
    params(("provider" = inline(super::OAuthProviderName), Path, description = "`github` or `google`"), SigninQuery),
    responses(
        (status = 302, description = "To the provider's authorize URL (with `state`, PKCE S256 `code_challenge`, and for Google a `nonce`); the flow cookie is set",
            headers(("Location" = String, description = "The provider's authorize URL"))),
        problems::Limited, problems::Stored,
        (status = 400, description = "`invalid_callback_url`, or `validation_failed` (an app callback without `codeChallenge`)"),
        (status = 404, description = "`unknown_provider`: not `github` or `google`, or that provider is not configured"),
    ))]
pub async fn oauth_signin(
    state: web::Data<AppState>,
    provider: web::Path<String>,
    query: web::Query<SigninQuery>,
    _budget: CredentialBudget,
) -> Result<HttpResponse, ApiError> {
    let provider = enabled(&state, &provider)?;

    let callback = match &query.callback_url {
        Some(raw) => url::Url::parse(raw).map_err(|_| ApiError::InvalidCallbackUrl)?,
        None => state.settings.server.public_url.clone(),
    };
    if !state.settings.callback_allowed(&callback) {
        return Err(ApiError::InvalidCallbackUrl);
    }
    let is_app = state
        .settings
        .browser
        .app_callbacks
        .contains(&callback.to_string());
    let app_challenge = match (&query.code_challenge, is_app) {
        (Some(c), true) => Some(pkce::parse_challenge(c)?),
        (None, true) => {
            return Err(ApiError::field(
                "codeChallenge",
                "is required for an app callback",
            ))
        }
        (_, false) => None,
    };

    let flow_state = crate::random::token();
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (authorize, nonce) = match provider {
        AuthProvider::Github => {
            let github = state.github.as_ref().ok_or(ApiError::UnknownProvider)?;
            (github.authorize_url(&flow_state, challenge), None)
        }
        AuthProvider::Google => {
            let google = state.google.as_ref().ok_or(ApiError::UnknownProvider)?;
            let nonce = crate::random::token();
            let url = google
                .authorize_url(&flow_state, &nonce, challenge)
                .map_err(ApiError::internal)?;
            (url, Some(nonce))
        }
        AuthProvider::Credentials | AuthProvider::Passkey | AuthProvider::Email => {
            return Err(ApiError::UnknownProvider)
        }
    };
    let flow = Flow {
        provider: provider.as_str().to_owned(),
        state: flow_state,
        verifier: verifier.secret().clone(),
        nonce,
        callback_url: callback.to_string(),
        app_challenge,
        expires_at: clock::now().unix_timestamp() + FLOW_TTL_SECS,
    };
    let cookie = state
        .cookies
        .flow(state.oauth_flow.seal(&flow), FLOW_TTL_SECS);
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, authorize.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie)
        .finish())
}

fn provider_failed(provider: AuthProvider, e: crate::upstream::UpstreamError) -> ApiError {
    crate::upstream::observe(provider.as_str(), Err(&e));
    ApiError::ProviderError
}

async fn fetch_identity(
    state: &AppState,
    provider: AuthProvider,
    code: &str,
    flow: &Flow,
) -> Result<ProviderIdentity, ApiError> {
    match provider {
        AuthProvider::Github => {
            let github = state.github.as_ref().ok_or(ApiError::UnknownProvider)?;
            let token = github
                .exchange(code, &flow.verifier)
                .await
                .map_err(|e| provider_failed(provider, e))?;
            let profile = github
                .profile(&token)
                .await
                .map_err(|e| provider_failed(provider, e))?;
            let (email, vouched) = match &profile.email {
                Some((raw, verified)) => (Email::parse(raw).ok(), *verified),
                None => (None, false),
            };
            Ok(ProviderIdentity {
                provider,
                account_id: profile.id,
                email,
                // GitHub: the primary address, verified in `/user/emails`.
                email_verified: vouched,
                vouched,
                name: profile.name.or(Some(profile.login)),
                image: profile.avatar_url,
            })
        }
        AuthProvider::Google => {
            let google = state.google.as_ref().ok_or(ApiError::UnknownProvider)?;
            let nonce = flow.nonce.as_deref().ok_or(ApiError::InvalidState)?;
            let profile = google
                .sign_in(code, &flow.verifier, nonce)
                .await
                .map_err(|e| provider_failed(provider, e))?;
            let email = profile.email.as_deref().and_then(|e| Email::parse(e).ok());
            // Google vouches only for its own addresses and for Workspace domains (`hd`).
            let vouched = profile.email_verified
                && email
                    .as_ref()
                    .is_some_and(|e| e.as_str().ends_with("@gmail.com") || profile.hd.is_some());
            Ok(ProviderIdentity {
                provider,
                account_id: profile.sub,
                email,
                email_verified: profile.email_verified,
                vouched,
                name: profile.name,
                image: profile.picture,
            })
        }
        AuthProvider::Credentials | AuthProvider::Passkey | AuthProvider::Email => {
            Err(ApiError::UnknownProvider)
        }
    }
}

/// `url` with `key=value` appended to its query.
fn with_param(url: &str, key: &str, value: &str) -> Result<String, ApiError> {
    let mut url = url::Url::parse(url).map_err(|_| ApiError::InvalidState)?;
    url.query_pairs_mut().append_pair(key, value);
    Ok(url.to_string())
}

fn redirect(location: &str) -> actix_web::HttpResponseBuilder {
    let mut res = HttpResponse::Found();
    res.insert_header((header::LOCATION, location.to_owned()))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    res
}

/// The provider sends the browser back here.
#[utoipa::path(get, path = "/api/auth/callback/{provider}", tag = "oauth",
    params(("provider" = inline(super::OAuthProviderName), Path, description = "`github` or `google`"), CallbackQuery),
    responses(
        (status = 302, description = "To the callbackUrl: with the session cookie set; for a user with MFA on with `?mfaToken=` (for `POST /api/auth/mfa/verify`) and no cookie; for an app callback with `?code=` (a one-time code for `POST /api/auth/token`) and no cookie; with `?error=` when the user declined",
            headers(("Location" = String, description = "The callbackUrl"))),
        problems::Stored,
        (status = 400, description = "`invalid_state` (forged, missing, expired or already used), or `validation_failed` (no `code`)"),
        (status = 401, description = "`unauthenticated`: the account was deleted before its session could start"),
        (status = 404, description = "`unknown_provider`: not `github` or `google`, or that provider is not configured"),
        (status = 409, description = "`account_not_linked`: an account has this email and the provider does not vouch for it; `email_not_verified`: no account has this email and the provider does not report it verified, so none is made"),
        (status = 502, description = "`provider_error`: the provider failed, timed out, or sent an ID token that does not verify"),
    ))]
pub async fn oauth_callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    provider: web::Path<String>,
    query: web::Query<CallbackQuery>,
) -> HttpResponse {
    // The flow cookie is spent whatever happens.
    let clear = state.cookies.flow(String::new(), 0);
    let mut res = match callback(&state, &req, &provider, &query).await {
        Ok(res) => res,
        Err(e) => e.error_response(),
    };
    let _ = res.add_cookie(&clear);
    res
}

async fn callback(
    state: &AppState,
    req: &HttpRequest,
    provider: &str,
    query: &CallbackQuery,
) -> Result<HttpResponse, ApiError> {
    let provider = enabled(state, provider)?;
    let now = clock::now();
    let flow = req
        .cookie(state.cookies.flow_name)
        .and_then(|c: Cookie<'_>| state.oauth_flow.open(c.value(), now))
        .ok_or(ApiError::InvalidState)?;
    let given = query.state.as_deref().unwrap_or("");
    if flow.provider != provider.as_str()
        || !bool::from(given.as_bytes().ct_eq(flow.state.as_bytes()))
    {
        return Err(ApiError::InvalidState);
    }
    // A state is accepted once, across every instance.
    let expires = OffsetDateTime::from_unix_timestamp(flow.expires_at).unwrap_or(now);
    match state
        .store
        .put_token(
            TokenKind::OauthState,
            &crate::random::token_hash(&flow.state),
            None,
            "",
            expires,
        )
        .await
    {
        Err(StoreError::Conflict) => return Err(ApiError::InvalidState),
        other => other?,
    }
    if let Some(error) = &query.error {
        // Relay the provider's error code (only its safe characters) to the app.
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        log::info!(
            "{} sign-in ended by the provider: {code}",
            provider.as_str()
        );
        return Ok(redirect(&with_param(&flow.callback_url, "error", &code)?).finish());
    }
    let code = query
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 2048)
        .ok_or_else(|| ApiError::field("code", "is required"))?;

    let identity = fetch_identity(state, provider, code, &flow).await?;
    crate::upstream::observe(provider.as_str(), Ok(()));
    let user = accounts::resolve_identity(state, &identity).await?;
    let ip = ClientIp::resolve(req, &state.settings.server.trusted_proxies);

    if let Some(challenge) = &flow.app_challenge {
        // An app gets a one-time code bound to its own PKCE challenge, never a cookie.
        let one_time = crate::random::token();
        let data = serde_json::to_string(&CodeData {
            challenge: challenge.clone(),
            auth_time: now.unix_timestamp(),
            credential_version: user.credential_version,
        })
        .map_err(ApiError::internal)?;
        state
            .store
            .put_token(
                TokenKind::OauthCode,
                &crate::random::token_hash(&one_time),
                Some(user.id),
                &data,
                now + time::Duration::seconds(CODE_TTL_SECS),
            )
            .await?;
        log::info!(
            "user {} signed in with {} (app)",
            user.id,
            provider.as_str()
        );
        return Ok(redirect(&with_param(&flow.callback_url, "code", &one_time)?).finish());
    }
    let fed = Amr::one(AuthMethod::Fed);
    match signin::sign_in(state, &origin(req, ip), &user, now, fed).await? {
        SignIn::Started(started) => {
            log::info!("user {} signed in with {}", user.id, provider.as_str());
            let mut res = redirect(&flow.callback_url);
            for cookie in session_cookies(state, &started) {
                res.cookie(cookie);
            }
            Ok(res.finish())
        }
        // The second step comes back to the app's page, which asks for the code.
        SignIn::MfaRequired(challenge) => Ok(redirect(&with_param(
            &flow.callback_url,
            "mfaToken",
            &challenge.token,
        )?)
        .finish()),
    }
}

/// Exchange an app's one-time code for a session.
#[utoipa::path(post, path = "/api/auth/token", tag = "oauth",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "Signed in (`{user, session}`), or, when the user has MFA on, `{mfaRequired: true, mfaToken, ...}` with no session: complete it with `POST /api/auth/mfa/verify`", body = SignInResponse),
        problems::JsonBody, problems::Limited, problems::Stored,
        (status = 400, description = "`invalid_code` (unknown, used, older than 60 s, or the verifier does not match; a failed exchange spends the code) or `validation_failed`"),
        (status = 401, description = "`unauthenticated`: the account was deleted before its session could start"),
        (status = 403, description = "`origin_forbidden`: the `Origin` header names a site that is not allowed"),
    ))]
pub async fn exchange_code(
    state: web::Data<AppState>,
    req: HttpRequest,
    ApiJson(body): ApiJson<TokenRequest>,
    CredentialBudget(ip): CredentialBudget,
) -> Result<HttpResponse, ApiError> {
    if body.code.is_empty() || body.code.len() > 256 {
        return Err(ApiError::InvalidCode);
    }
    let now = clock::now();
    let record = state
        .store
        .take_token(
            TokenKind::OauthCode,
            &crate::random::token_hash(&body.code),
            now,
        )
        .await?
        .ok_or(ApiError::InvalidCode)?;
    let data: CodeData = serde_json::from_str(&record.data).map_err(|_| ApiError::InvalidCode)?;
    if !pkce::verifies(&data.challenge, &body.code_verifier) {
        log::warn!("a one-time code was presented with the wrong verifier; it is spent");
        return Err(ApiError::InvalidCode);
    }
    let user_id = record.user_id.ok_or(ApiError::InvalidCode)?;
    let mut user = state
        .store
        .user_by_id(user_id)
        .await?
        .ok_or(ApiError::InvalidCode)?;
    // The session may start only at the version the callback saw.
    user.credential_version = data.credential_version;
    let auth_time = OffsetDateTime::from_unix_timestamp(data.auth_time).unwrap_or(now);
    // The code was issued by a provider sign-in.
    let fed = Amr::one(AuthMethod::Fed);
    let signed_in = signin::sign_in(&state, &origin(&req, ip), &user, auth_time, fed).await?;
    log::info!("user {} exchanged a one-time code", user.id);
    Ok(sign_in_answer(
        &state,
        &user,
        &signed_in,
        body.client.unwrap_or_default(),
        StatusCode::OK,
    ))
}

/// Unlink a provider from the signed-in user.
#[utoipa::path(delete, path = "/api/user/providers/{provider}", tag = "oauth",
    security(("bearer" = []), ("cookie" = [])),
    params(("provider" = inline(super::OAuthProviderName), Path, description = "`github` or `google`")),
    responses(
        (status = 200, description = "The user without that provider", body = UserBody),
        problems::SignedIn, problems::CookieWrite, problems::Stored,
        (status = 404, description = "`not_found`: no such provider is linked"),
        (status = 409, description = "`last_sign_in_method`: the user would have no way left to sign in"),
    ))]
pub async fn unlink_provider(
    state: web::Data<AppState>,
    current: CurrentUser,
    provider: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let provider = match AuthProvider::parse(&provider) {
        Some(p @ (AuthProvider::Github | AuthProvider::Google)) => p,
        _ => return Err(ApiError::NotFound),
    };
    let user = state
        .store
        .user_by_id(current.id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    if !user.linked.contains(&provider) {
        return Err(ApiError::NotFound);
    }
    if user.providers().len() <= 1 {
        return Err(ApiError::LastSignInMethod);
    }
    if !state.store.unlink_identity(user.id, provider).await? {
        return Err(ApiError::NotFound);
    }
    log::info!("user {} unlinked {}", user.id, provider.as_str());
    let user = state
        .store
        .user_by_id(current.id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    Ok(HttpResponse::Ok().json(UserBody::from(&user)))
}
