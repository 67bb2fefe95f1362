//! The session and CSRF cookies, named and flagged as the contract says.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite as CookieSameSite};

use crate::config::{SameSite, Settings};

/// The refresh cookie's name; it cannot take the `__Host-` prefix, which demands `Path=/`.
pub const REFRESH_COOKIE: &str = "authvault.refresh";
pub const REFRESH_PATH: &str = "/api/auth/refresh";

/// Cookie names and attributes, fixed at start-up.
#[derive(Debug, Clone)]
pub struct CookieConfig {
    pub secure: bool,
    pub same_site: SameSite,
    pub session_name: &'static str,
    pub csrf_name: &'static str,
    pub flow_name: &'static str,
}

impl CookieConfig {
    pub fn from_settings(settings: &Settings) -> Self {
        let secure = settings.browser.cookie_secure;
        Self {
            secure,
            same_site: settings.browser.cookie_samesite,
            // `__Host-` makes the browser refuse the cookie unless it is Secure, host-only and
            // Path=/, so a sibling subdomain cannot plant one.
            session_name: if secure {
                "__Host-authvault.session"
            } else {
                "authvault.session"
            },
            csrf_name: if secure {
                "__Host-authvault.csrf"
            } else {
                "authvault.csrf"
            },
            flow_name: if secure {
                "__Host-authvault.oauth"
            } else {
                "authvault.oauth"
            },
        }
    }

    fn build<'a>(&self, name: &'a str, value: String, max_age_secs: i64) -> Cookie<'a> {
        let same_site = match self.same_site {
            SameSite::Lax => CookieSameSite::Lax,
            SameSite::Strict => CookieSameSite::Strict,
            SameSite::None => CookieSameSite::None,
        };
        Cookie::build(name, value)
            .http_only(true)
            .secure(self.secure)
            .same_site(same_site)
            .path("/")
            .max_age(CookieDuration::seconds(max_age_secs))
            .finish()
    }

    /// The session cookie carrying an access token.
    pub fn session(&self, token: String, max_age_secs: u64) -> Cookie<'static> {
        self.build(self.session_name, token, max_age_secs as i64)
    }

    /// The session cookie with `Max-Age=0`, which clears it.
    pub fn clear_session(&self) -> Cookie<'static> {
        self.build(self.session_name, String::new(), 0)
    }

    /// The OAuth flow cookie. Always `SameSite=Lax`: the provider sends the browser back with a
    /// cross-site top-level navigation, which `Strict` cookies do not follow.
    pub fn flow(&self, value: String, max_age_secs: i64) -> Cookie<'static> {
        let mut cookie = self.build(self.flow_name, value, max_age_secs);
        cookie.set_same_site(CookieSameSite::Lax);
        cookie
    }

    /// The refresh-token cookie of browser clients: `SameSite=Strict` and sent only to
    /// `/api/auth/refresh`, so no other request ever carries it.
    pub fn refresh(&self, token: String, max_age_secs: u64) -> Cookie<'static> {
        let mut cookie = self.build(REFRESH_COOKIE, token, max_age_secs as i64);
        cookie.set_same_site(CookieSameSite::Strict);
        cookie.set_path(REFRESH_PATH);
        cookie
    }

    /// The refresh cookie with `Max-Age=0`.
    pub fn clear_refresh(&self) -> Cookie<'static> {
        self.refresh(String::new(), 0)
    }

    /// The CSRF cookie of the double-submit pair.
    pub fn csrf(&self, token: String) -> Cookie<'static> {
        self.build(self.csrf_name, token, 60 * 60 * 24)
    }
}
