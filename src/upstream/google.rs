//! Google sign-in: OpenID Connect (`openidconnect` crate), authorization code with PKCE and a
//! nonce; the ID token is verified against the JWKS (cached, re-fetched on an unknown key id).

use std::sync::Arc;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use openidconnect::{
    core::{CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet},
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::RwLock;

use super::UpstreamError;
use crate::config::{GoogleSettings, OAuthClient};

/// What authvault takes from a Google account.
#[derive(Debug, Clone)]
pub struct GoogleProfile {
    pub sub: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// The Workspace domain, when the account belongs to one.
    pub hd: Option<String>,
    pub name: Option<String>,
    pub picture: Option<String>,
}

pub struct GoogleClient {
    client_id: String,
    client_secret: SecretString,
    auth_url: String,
    token_url: String,
    userinfo_url: String,
    jwks_url: String,
    issuer: String,
    redirect: String,
    http: reqwest::Client,
    jwks: RwLock<Option<Arc<CoreJsonWebKeySet>>>,
}

fn provider_error(what: &str) -> UpstreamError {
    UpstreamError::Failed(format!("google: {what}"))
}

#[derive(Deserialize, Default)]
struct Extra {
    #[serde(default)]
    hd: Option<String>,
}

#[derive(Deserialize, Default)]
struct UserInfo {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    picture: Option<String>,
}

enum Verified {
    Profile(GoogleProfile),
    UnknownKey,
}

impl GoogleClient {
    pub fn new(
        settings: &GoogleSettings,
        client: &OAuthClient,
        redirect: &str,
        http: reqwest::Client,
    ) -> Self {
        Self {
            client_id: client.client_id.clone(),
            client_secret: client.client_secret.clone(),
            auth_url: settings.auth_url.to_string(),
            token_url: settings.token_url.to_string(),
            userinfo_url: settings.userinfo_url.to_string(),
            jwks_url: settings.jwks_url.to_string(),
            issuer: settings.issuer.clone(),
            redirect: redirect.to_owned(),
            http,
            jwks: RwLock::new(None),
        }
    }

    fn client(
        &self,
        jwks: CoreJsonWebKeySet,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
        >,
        UpstreamError,
    > {
        let bad = |_| provider_error("endpoint configuration");
        Ok(CoreClient::new(
            ClientId::new(self.client_id.clone()),
            IssuerUrl::new(self.issuer.clone()).map_err(bad)?,
            jwks,
        )
        .set_client_secret(ClientSecret::new(
            self.client_secret.expose_secret().to_owned(),
        ))
        .set_auth_uri(AuthUrl::new(self.auth_url.clone()).map_err(bad)?)
        .set_token_uri(TokenUrl::new(self.token_url.clone()).map_err(bad)?)
        .set_redirect_uri(RedirectUrl::new(self.redirect.clone()).map_err(bad)?))
    }

    /// The authorize URL for `state`, `nonce` and the PKCE challenge.
    pub fn authorize_url(
        &self,
        state: &str,
        nonce: &str,
        challenge: PkceCodeChallenge,
    ) -> Result<url::Url, UpstreamError> {
        let (state, nonce) = (state.to_owned(), nonce.to_owned());
        let (url, _, _) = self
            .client(CoreJsonWebKeySet::new(Vec::new()))?
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(url)
    }

    async fn fetch_jwks(&self) -> Result<Arc<CoreJsonWebKeySet>, UpstreamError> {
        let res = self
            .http
            .get(&self.jwks_url)
            .send()
            .await
            .map_err(|e| UpstreamError::from_transport(&e))?;
        if !res.status().is_success() {
            return Err(provider_error("JWKS unavailable"));
        }
        let jwks: CoreJsonWebKeySet = res
            .json()
            .await
            .map_err(|_| provider_error("JWKS unreadable"))?;
        let jwks = Arc::new(jwks);
        *self.jwks.write().await = Some(jwks.clone());
        Ok(jwks)
    }

    async fn cached_jwks(&self) -> Result<Arc<CoreJsonWebKeySet>, UpstreamError> {
        if let Some(jwks) = self.jwks.read().await.clone() {
            return Ok(jwks);
        }
        self.fetch_jwks().await
    }

    fn verify(
        &self,
        jwks: &CoreJsonWebKeySet,
        id_token: &openidconnect::core::CoreIdToken,
        nonce: &str,
    ) -> Result<Verified, UpstreamError> {
        use openidconnect::{ClaimsVerificationError as C, SignatureVerificationError as S};
        let client = self.client(jwks.clone())?;
        // Google's tokens carry `iss` with or without the scheme; checked below.
        let verifier = client.id_token_verifier().require_issuer_match(false);
        let claims = match id_token.claims(&verifier, &Nonce::new(nonce.to_owned())) {
            Ok(claims) => claims,
            Err(C::SignatureVerification(S::NoMatchingKey)) => return Ok(Verified::UnknownKey),
            Err(e) => {
                // Names the failed check (expired, audience, nonce, signature), never the token.
                let reason = match e {
                    C::Expired(_) => "expired",
                    C::InvalidAudience(_) => "wrong audience",
                    C::InvalidIssuer(_) => "wrong issuer",
                    C::InvalidNonce(_) => "wrong nonce",
                    C::SignatureVerification(_) => "bad signature",
                    _ => "invalid claims",
                };
                return Err(provider_error(&format!("ID token refused: {reason}")));
            }
        };
        let issuer = claims.issuer().as_str();
        if issuer != self.issuer && Some(issuer) != self.issuer.strip_prefix("https://") {
            return Err(provider_error("ID token refused: wrong issuer"));
        }
        // The signature is verified: the payload's other claims can be read as they are.
        let extra: Extra = id_token
            .to_string()
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Ok(Verified::Profile(GoogleProfile {
            sub: claims.subject().as_str().to_owned(),
            email: claims.email().map(|e| e.as_str().to_owned()),
            email_verified: claims.email_verified().unwrap_or(false),
            hd: extra.hd,
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_owned()),
            picture: claims
                .picture()
                .and_then(|p| p.get(None))
                .map(|p| p.as_str().to_owned()),
        }))
    }

    /// Exchanges the code (with the PKCE verifier) and verifies the ID token (signature, `iss`,
    /// `aud`, `exp`, `nonce`); userinfo fills a missing name or picture.
    pub async fn sign_in(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<GoogleProfile, UpstreamError> {
        let jwks = self.cached_jwks().await?;
        let token = self
            .client((*jwks).clone())?
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                openidconnect::RequestTokenError::Request(
                    openidconnect::HttpClientError::Reqwest(e),
                ) if e.is_timeout() => UpstreamError::Timeout,
                openidconnect::RequestTokenError::ServerResponse(r) => {
                    provider_error(&format!("token endpoint refused: {}", r.error()))
                }
                _ => provider_error("token exchange failed"),
            })?;
        let id_token = openidconnect::TokenResponse::id_token(&token)
            .ok_or_else(|| provider_error("no ID token"))?;
        let mut profile = match self.verify(&jwks, id_token, nonce)? {
            Verified::Profile(p) => p,
            // Google rotates its keys: fetch them again once.
            Verified::UnknownKey => {
                match self.verify(&*self.fetch_jwks().await?, id_token, nonce)? {
                    Verified::Profile(p) => p,
                    Verified::UnknownKey => return Err(provider_error("ID token key unknown")),
                }
            }
        };
        if profile.name.is_none() || profile.picture.is_none() {
            let access = SecretString::from(token.access_token().secret().to_owned());
            // Userinfo speaks for the ID token's subject only (OIDC Core 5.3.2).
            if let Ok(info) = self.userinfo(&access).await {
                if info.sub.as_deref() == Some(profile.sub.as_str()) {
                    profile.name = profile.name.or(info.name);
                    profile.picture = profile.picture.or(info.picture);
                }
            }
        }
        Ok(profile)
    }

    async fn userinfo(&self, token: &SecretString) -> Result<UserInfo, UpstreamError> {
        let res = self
            .http
            .get(&self.userinfo_url)
            .bearer_auth(token.expose_secret())
            .send()
            .await
            .map_err(|e| UpstreamError::from_transport(&e))?;
        if !res.status().is_success() {
            return Err(provider_error("userinfo refused"));
        }
        res.json()
            .await
            .map_err(|_| provider_error("userinfo unreadable"))
    }
}
