//! GitHub sign-in: OAuth 2.0 authorization code with PKCE (`oauth2` crate), then the profile
//! and the primary verified email from the REST API.

use oauth2::{
    basic::BasicClient, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointNotSet, EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::UpstreamError;
use crate::config::{GithubSettings, OAuthClient};

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// What authvault takes from a GitHub account.
#[derive(Debug, Clone)]
pub struct GithubProfile {
    pub id: String,
    pub login: String,
    pub name: Option<String>,
    pub avatar_url: Option<String>,
    /// The primary email, and whether GitHub verified it.
    pub email: Option<(String, bool)>,
}

pub struct GithubClient {
    oauth: Client,
    http: reqwest::Client,
    api: String,
}

#[derive(Deserialize)]
struct WireUser {
    id: u64,
    login: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    avatar_url: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
struct WireEmail {
    email: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

fn provider_error(what: &str) -> UpstreamError {
    UpstreamError::Failed(format!("github: {what}"))
}

impl GithubClient {
    /// `http` must not follow redirects (token and API calls never need to).
    pub fn new(
        settings: &GithubSettings,
        client: &OAuthClient,
        redirect: &str,
        http: reqwest::Client,
    ) -> anyhow::Result<Self> {
        let base = settings.url.as_str().trim_end_matches('/');
        let oauth = BasicClient::new(ClientId::new(client.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                client.client_secret.expose_secret().to_owned(),
            ))
            .set_auth_uri(AuthUrl::new(format!("{base}/login/oauth/authorize"))?)
            .set_token_uri(TokenUrl::new(format!("{base}/login/oauth/access_token"))?)
            .set_redirect_uri(RedirectUrl::new(redirect.to_owned())?);
        Ok(Self {
            oauth,
            http,
            api: settings.api_url.as_str().trim_end_matches('/').to_owned(),
        })
    }

    /// The authorize URL for `state` and the PKCE challenge.
    pub fn authorize_url(&self, state: &str, challenge: PkceCodeChallenge) -> url::Url {
        let state = state.to_owned();
        let (url, _) = self
            .oauth
            .authorize_url(move || CsrfToken::new(state))
            .add_scope(Scope::new("read:user".into()))
            .add_scope(Scope::new("user:email".into()))
            .set_pkce_challenge(challenge)
            .url();
        url
    }

    /// Exchanges the code (with the PKCE verifier) for an access token.
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
    ) -> Result<SecretString, UpstreamError> {
        let token = self
            .oauth
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                oauth2::RequestTokenError::Request(oauth2::HttpClientError::Reqwest(e))
                    if e.is_timeout() =>
                {
                    UpstreamError::Timeout
                }
                oauth2::RequestTokenError::ServerResponse(r) => {
                    provider_error(&format!("token endpoint refused: {}", r.error()))
                }
                _ => provider_error("token exchange failed"),
            })?;
        Ok(SecretString::from(token.access_token().secret().to_owned()))
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: &SecretString,
    ) -> Result<T, UpstreamError> {
        let res = self
            .http
            .get(format!("{}{path}", self.api))
            .bearer_auth(token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .send()
            .await
            .map_err(|e| UpstreamError::from_transport(&e))?;
        if !res.status().is_success() {
            return Err(provider_error(&format!(
                "{path} answered {}",
                res.status().as_u16()
            )));
        }
        res.json()
            .await
            .map_err(|_| provider_error(&format!("{path} unreadable")))
    }

    /// The account's id, names, avatar and primary email.
    pub async fn profile(&self, token: &SecretString) -> Result<GithubProfile, UpstreamError> {
        let user: WireUser = self.get("/user", token).await?;
        let emails: Vec<WireEmail> = self.get("/user/emails", token).await?;
        let email = emails
            .iter()
            .find(|e| e.primary)
            .map(|e| (e.email.clone(), e.verified))
            .or_else(|| user.email.clone().map(|e| (e, false)));
        Ok(GithubProfile {
            id: user.id.to_string(),
            login: user.login,
            name: user.name,
            avatar_url: user.avatar_url,
            email,
        })
    }
}
