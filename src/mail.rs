//! Mail delivery for verification links, reset links and account notices.
//!
//! One `Mailer` per process, chosen at start by the contract's rule: SMTP when
//! `AUTHVAULT_SMTP_URL` is set; otherwise `.eml` files in the data dir's `outbox/` (the embedded
//! SQLite default, development only); otherwise (MongoDB) nothing, and every send is
//! [`MailError::Unavailable`], which the endpoints answer with 503 `mail_unavailable`.

use std::{
    fmt, io,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use lettre::{
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::Credentials,
        client::{Tls, TlsParameters},
    },
    Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use percent_encoding::percent_decode_str;
use secrecy::{ExposeSecret, SecretString};
use time::{macros::format_description, OffsetDateTime};
use url::{Host, Url};

use crate::{
    config::{ConfigError, Settings},
    domain::Email,
};

pub mod notices;
pub mod templates;

pub use templates::{Letter, Notice, PasswordChange, Templates};

/// How long one send may take, from connecting to the server's last answer.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// One message to one user: the same content as plain text and as HTML.
pub struct Mail {
    pub to: Email,
    pub subject: String,
    pub text: String,
    pub html: String,
}

// The bodies carry one-time links: keep them out of debug output.
impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Why a message was not delivered. Neither variant carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// No delivery is configured (MongoDB without `AUTHVAULT_SMTP_URL`): 503 `mail_unavailable`.
    #[error("mail delivery is not configured: set AUTHVAULT_SMTP_URL")]
    Unavailable,
    /// Delivery was tried and failed (refused, unreachable, timed out, outbox not writable).
    #[error("mail delivery failed: {0}")]
    Failed(String),
    /// The mail could not be rendered from its (checked) template; nothing was sent.
    #[error("mail template failed: {0}")]
    Template(String),
}

/// Sends [`Mail`] the way the configuration says. `Debug` never shows the SMTP password.
#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
    timeout: Duration,
    templates: Arc<Templates>,
}

#[derive(Clone)]
enum Transport {
    Smtp {
        target: SmtpTarget,
        client: Box<AsyncSmtpTransport<Tokio1Executor>>,
    },
    Outbox(PathBuf),
    Unavailable,
}

impl Mailer {
    /// Picks the delivery the contract prescribes and checks `AUTHVAULT_MAIL_FROM` and
    /// `AUTHVAULT_SMTP_URL`; an unusable value is an error naming its variable.
    ///
    /// TLS rule for `AUTHVAULT_SMTP_URL`:
    /// - `smtps://host[:port]`: implicit TLS from the first byte (default port 465).
    /// - `smtp://host[:port]` with a remote host: STARTTLS is required (default port 25); a
    ///   server that does not offer it is refused before any credentials or mail are sent, so a
    ///   stripped STARTTLS cannot downgrade the connection to plain text.
    /// - `smtp://` with a loopback host (`localhost`, `127.0.0.0/8`, `[::1]`): plain SMTP with no
    ///   TLS, for a local relay or a development mail catcher; the traffic never leaves the host.
    ///
    /// Certificates are checked against the bundled Mozilla roots (webpki-roots), like every
    /// other outgoing TLS connection of authvault. `user:pass@` is percent-decoded and used for
    /// AUTH PLAIN or LOGIN.
    ///
    /// The mail templates are loaded and checked here too (see [`Templates::load`]).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let from = settings.mail.from.trim().parse::<Mailbox>().map_err(|_| {
            config_error(
                "AUTHVAULT_MAIL_FROM",
                "must be an address such as `authvault <no-reply@example.com>`",
            )
        })?;
        let transport = if let Some(url) = &settings.mail.smtp_url {
            let target = SmtpTarget::parse(url.expose_secret())
                .map_err(|m| config_error("AUTHVAULT_SMTP_URL", m))?;
            let client = target
                .client(SEND_TIMEOUT)
                .map(Box::new)
                .map_err(|m| config_error("AUTHVAULT_SMTP_URL", m))?;
            log::info!("mail is sent through {}", target.redacted());
            Transport::Smtp { target, client }
        } else if let Some(data_dir) = settings.data_dir() {
            let outbox = data_dir.join("outbox");
            log::warn!(
                "AUTHVAULT_SMTP_URL is not set: mail is written to {} as .eml files and not sent \
                 (development only)",
                outbox.display()
            );
            Transport::Outbox(outbox)
        } else {
            log::warn!(
                "AUTHVAULT_SMTP_URL is not set: no mail can be sent with MongoDB, and the email \
                 endpoints answer 503 mail_unavailable"
            );
            Transport::Unavailable
        };
        let templates = Templates::load(
            settings.mail.templates_dir.as_deref(),
            &settings.sessions.mfa_issuer,
        )?;
        Ok(Self {
            from,
            transport,
            timeout: SEND_TIMEOUT,
            templates: Arc::new(templates),
        })
    }

    /// The same mailer with another bound on each send (tests use a short one).
    pub fn with_timeout(mut self, timeout: Duration) -> anyhow::Result<Self> {
        if let Transport::Smtp { target, client } = &mut self.transport {
            *client = target
                .client(timeout)
                .map(Box::new)
                .map_err(|m| config_error("AUTHVAULT_SMTP_URL", m))?;
        }
        self.timeout = timeout;
        Ok(self)
    }

    /// True when every send fails with [`MailError::Unavailable`]: answer 503 before any work.
    pub fn mail_unavailable(&self) -> bool {
        matches!(self.transport, Transport::Unavailable)
    }

    /// The folder `.eml` files go to when there is no SMTP server (development only).
    pub fn outbox_dir(&self) -> Option<&Path> {
        match &self.transport {
            Transport::Outbox(dir) => Some(dir),
            _ => None,
        }
    }

    /// `letter` to `to`, rendered from the templates. A checked template does not fail here;
    /// should one, the error is [`MailError::Template`] and nothing is sent.
    pub fn compose(&self, to: &Email, letter: &Letter<'_>) -> Result<Mail, MailError> {
        let rendered = self
            .templates
            .render(letter)
            .map_err(|e| MailError::Template(e.to_string()))?;
        Ok(Mail {
            to: to.clone(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        })
    }

    /// Renders `letter` to `to` and delivers it (see [`Mailer::compose`], [`Mailer::send`]).
    pub async fn deliver(&self, to: &Email, letter: &Letter<'_>) -> Result<(), MailError> {
        if self.mail_unavailable() {
            return Err(MailError::Unavailable);
        }
        let mail = self.compose(to, letter)?;
        self.send(mail).await
    }

    /// Delivers one multipart/alternative message (text and HTML) with `From`, `To`,
    /// `Subject`, `Date` and `Message-ID`, within the mailer's timeout.
    pub async fn send(&self, mail: Mail) -> Result<(), MailError> {
        if self.mail_unavailable() {
            return Err(MailError::Unavailable);
        }
        let message = self.message(mail)?;
        let delivery = async {
            match &self.transport {
                Transport::Smtp { client, .. } => client
                    .send(message)
                    .await
                    .map(drop)
                    .map_err(|e| MailError::Failed(format!("SMTP: {e}"))),
                Transport::Outbox(dir) => write_to_outbox(dir.clone(), message.formatted())
                    .await
                    .map(drop)
                    .map_err(|e| MailError::Failed(format!("writing to {}: {e}", dir.display()))),
                Transport::Unavailable => Err(MailError::Unavailable),
            }
        };
        tokio::time::timeout(self.timeout, delivery)
            .await
            .unwrap_or_else(|_| {
                Err(MailError::Failed(format!(
                    "not delivered within {:?}",
                    self.timeout
                )))
            })
    }

    fn message(&self, mail: Mail) -> Result<Message, MailError> {
        let to = mail.to.as_str().parse::<Address>().map_err(|_| {
            MailError::Failed("the recipient's address cannot be used in a message".into())
        })?;
        let message_id = format!(
            "<{}@{}>",
            uuid::Uuid::new_v4().simple(),
            self.from.email.domain()
        );
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(mail.subject)
            .date_now()
            .message_id(Some(message_id))
            .multipart(MultiPart::alternative_plain_html(mail.text, mail.html))
            .map_err(|e| MailError::Failed(format!("building the message: {e}")))
    }
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match &self.transport {
            Transport::Smtp { target, .. } => target.redacted(),
            Transport::Outbox(dir) => format!("outbox {}", dir.display()),
            Transport::Unavailable => "unavailable".into(),
        };
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("transport", &transport)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn config_error(variable: &'static str, message: impl Into<String>) -> anyhow::Error {
    ConfigError {
        variable,
        message: message.into(),
    }
    .into()
}

/// How the connection to the SMTP server is protected (see [`Mailer::from_settings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    Plain,
    StartTls,
    ImplicitTls,
}

/// `AUTHVAULT_SMTP_URL`, parsed. Only `redacted()` may be shown.
#[derive(Clone)]
struct SmtpTarget {
    security: Security,
    host: String,
    port: u16,
    credentials: Option<(String, SecretString)>,
}

impl SmtpTarget {
    // Messages never repeat the URL: it may hold the password.
    fn parse(raw: &str) -> Result<Self, String> {
        let url = Url::parse(raw.trim())
            .map_err(|_| "is not a URL such as smtp://user:pass@host:port".to_string())?;
        let implicit_tls = match url.scheme() {
            "smtp" => false,
            "smtps" => true,
            _ => return Err("unknown scheme: use smtp://user:pass@host:port or smtps://".into()),
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err("must be scheme://[user:pass@]host[:port], without path or query".into());
        }
        let host = match url.host() {
            Some(Host::Domain(name))
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) =>
            {
                name.to_owned()
            }
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err("needs a host name or IP address".into()),
        };
        let decode = |part: &str, what: &str| {
            percent_decode_str(part)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| format!("the {what} is not UTF-8 once percent-decoded"))
        };
        let user = decode(url.username(), "user")?;
        let credentials = match (user.is_empty(), url.password()) {
            (true, None) => None,
            (false, Some(password)) => {
                Some((user, SecretString::from(decode(password, "password")?)))
            }
            (false, None) => return Err("has a user but no password: use user:pass@host".into()),
            (true, Some(_)) => return Err("has a password but no user: use user:pass@host".into()),
        };
        let security = if implicit_tls {
            Security::ImplicitTls
        } else if is_loopback(&host) {
            Security::Plain
        } else {
            Security::StartTls
        };
        let port = url.port().unwrap_or(if implicit_tls { 465 } else { 25 });
        Ok(Self {
            security,
            host,
            port,
            credentials,
        })
    }

    fn client(&self, timeout: Duration) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let tls_parameters =
            || TlsParameters::new(self.host.clone()).map_err(|e| format!("TLS set-up failed: {e}"));
        let tls = match self.security {
            Security::Plain => Tls::None,
            Security::StartTls => Tls::Required(tls_parameters()?),
            Security::ImplicitTls => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .tls(tls)
            .timeout(Some(timeout));
        if let Some((user, password)) = &self.credentials {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        Ok(builder.build())
    }

    /// The URL with the password as `***`, and how the connection is protected.
    fn redacted(&self) -> String {
        let scheme = match self.security {
            Security::ImplicitTls => "smtps",
            Security::Plain | Security::StartTls => "smtp",
        };
        let userinfo = match &self.credentials {
            Some((user, _)) => format!("{user}:***@"),
            None => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let protection = match self.security {
            Security::Plain => "plain text, loopback only",
            Security::StartTls => "STARTTLS required",
            Security::ImplicitTls => "implicit TLS",
        };
        format!("{scheme}://{userinfo}{host}:{} ({protection})", self.port)
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

static OUTBOX_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Writes `<UTC time>-<sequence>-<random>.eml` (names sort in writing order), readable by the
/// owner only (the links in it are live), under a temporary name first so that a reader never
/// sees half a message.
async fn write_to_outbox(dir: PathBuf, bytes: Vec<u8>) -> io::Result<PathBuf> {
    let stamp = OffsetDateTime::now_utc()
        .format(format_description!(
            "[year][month][day]T[hour][minute][second].[subsecond digits:3]Z"
        ))
        .map_err(io::Error::other)?;
    let sequence = OUTBOX_SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let random = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("{stamp}-{sequence:06}-{}.eml", &random[..8]);
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        let partial = dir.join(format!(".{name}.partial"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&partial)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        let path = dir.join(name);
        std::fs::rename(&partial, &path)?;
        Ok(path)
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        io::{BufRead, BufReader},
        net::TcpListener,
        sync::{Arc, Mutex},
    };

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned()).unwrap()
    }

    fn mongo_settings(vars: &[(&str, &str)]) -> Settings {
        let mut all = vec![
            ("AUTHVAULT_DATABASE_URL", "mongodb://127.0.0.1:9/authvault"),
            (
                "AUTHVAULT_JWT_SECRET",
                "test-secret-test-secret-test-secret-0123456789",
            ),
            (
                "AUTHVAULT_ENCRYPTION_KEYS",
                "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            ),
        ];
        all.extend_from_slice(vars);
        settings(&all)
    }

    fn mail(to: &str) -> Mail {
        Mail {
            to: Email::parse(to).unwrap(),
            subject: "Reset your password".into(),
            text: "Open https://app.example.com/reset?token=abc_DEF-123 within 30 minutes.\n"
                .into(),
            html: "<p><a href=\"https://app.example.com/reset?token=abc_DEF-123\">Reset</a></p>"
                .into(),
        }
    }

    /// Headers (unfolded, names lower-cased) and body of a raw message.
    fn split_message(raw: &str) -> (HashMap<String, String>, String) {
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .expect("a blank line ends the headers");
        let mut headers = HashMap::new();
        let mut last: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                let name = last.clone().expect("a continuation follows a header");
                headers
                    .entry(name)
                    .and_modify(|v: &mut String| v.push_str(line));
            } else {
                let (name, value) = line.split_once(':').expect("a header has a colon");
                let name = name.to_ascii_lowercase();
                headers.insert(name.clone(), value.trim().to_owned());
                last = Some(name);
            }
        }
        (headers, body.to_owned())
    }

    #[tokio::test]
    async fn the_outbox_holds_one_multipart_alternative_eml_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/authvault.db", dir.path().display());
        let mailer = Mailer::from_settings(&settings(&[
            ("AUTHVAULT_DATABASE_URL", &db),
            ("AUTHVAULT_MAIL_FROM", "Example Vault <vault@example.com>"),
        ]))
        .unwrap();
        assert!(!mailer.mail_unavailable());
        let outbox = dir.path().join("outbox");
        assert_eq!(mailer.outbox_dir(), Some(outbox.as_path()));

        mailer.send(mail("Ada@Example.com")).await.unwrap();

        let files: Vec<_> = std::fs::read_dir(&outbox)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].extension().unwrap(), "eml");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let raw = std::fs::read_to_string(&files[0]).unwrap();
        let (headers, body) = split_message(&raw);
        assert_eq!(headers["from"], "\"Example Vault\" <vault@example.com>");
        assert_eq!(headers["to"], "ada@example.com");
        assert_eq!(headers["subject"], "Reset your password");
        assert!(headers.contains_key("date"));
        assert!(headers["message-id"].ends_with("@example.com>"));
        assert_eq!(headers["mime-version"], "1.0");
        let content_type = &headers["content-type"];
        assert!(
            content_type.starts_with("multipart/alternative;"),
            "{content_type}"
        );
        let boundary = content_type
            .split("boundary=")
            .nth(1)
            .unwrap()
            .trim_matches('"');

        let parts: Vec<_> = body
            .split(&format!("--{boundary}"))
            .map(str::trim)
            .filter(|p| !p.is_empty() && *p != "--")
            .collect();
        assert_eq!(parts.len(), 2, "{body}");
        let (text_headers, text) = split_message(parts[0]);
        let (html_headers, html) = split_message(parts[1]);
        assert!(text_headers["content-type"].starts_with("text/plain"));
        assert!(html_headers["content-type"].starts_with("text/html"));
        assert!(text.contains("token=abc_DEF-123"), "{text}");
        assert!(html.contains("<a href="), "{html}");
    }

    #[tokio::test]
    async fn outbox_files_sort_in_sending_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/authvault.db", dir.path().display());
        let mailer = Mailer::from_settings(&settings(&[("AUTHVAULT_DATABASE_URL", &db)])).unwrap();
        for subject in ["first", "second", "third"] {
            let mut m = mail("a@example.com");
            m.subject = subject.into();
            mailer.send(m).await.unwrap();
        }
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        let subjects: Vec<_> = names
            .iter()
            .map(|p| split_message(&std::fs::read_to_string(p).unwrap()).0["subject"].clone())
            .collect();
        assert_eq!(subjects, ["first", "second", "third"]);
    }

    #[tokio::test]
    async fn with_mongodb_and_no_smtp_every_send_is_unavailable() {
        let mailer = Mailer::from_settings(&mongo_settings(&[])).unwrap();
        assert!(mailer.mail_unavailable());
        assert_eq!(mailer.outbox_dir(), None);
        assert_eq!(
            mailer.send(mail("a@example.com")).await,
            Err(MailError::Unavailable)
        );
    }

    #[test]
    fn smtp_wins_over_the_outbox_and_the_debug_output_hides_the_password() {
        let url = "smtps://mailer%40example.com:hunter2%2Fsecret@smtp.example.com";
        for s in [
            settings(&[("AUTHVAULT_SMTP_URL", url)]),
            mongo_settings(&[("AUTHVAULT_SMTP_URL", url)]),
        ] {
            let mailer = Mailer::from_settings(&s).unwrap();
            assert!(!mailer.mail_unavailable());
            assert_eq!(mailer.outbox_dir(), None);
            let shown = format!("{mailer:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(
                shown.contains("smtps://mailer@example.com:***@smtp.example.com:465"),
                "{shown}"
            );
        }
    }

    #[test]
    fn an_invalid_mail_from_or_smtp_url_names_its_variable_and_not_the_password() {
        for (vars, variable) in [
            (
                vec![("AUTHVAULT_MAIL_FROM", "not an address")],
                "AUTHVAULT_MAIL_FROM",
            ),
            (
                vec![("AUTHVAULT_MAIL_FROM", "a@b.c\r\nBcc: x@y.z")],
                "AUTHVAULT_MAIL_FROM",
            ),
            (
                vec![("AUTHVAULT_SMTP_URL", "smtp://user:hunter2@")],
                "AUTHVAULT_SMTP_URL",
            ),
            (
                vec![("AUTHVAULT_SMTP_URL", "smtp://user:hunter2@host/path")],
                "AUTHVAULT_SMTP_URL",
            ),
            (
                vec![("AUTHVAULT_SMTP_URL", "smtp://user:hunter2@host?tls=none")],
                "AUTHVAULT_SMTP_URL",
            ),
            (
                vec![("AUTHVAULT_SMTP_URL", "smtp://user@host")],
                "AUTHVAULT_SMTP_URL",
            ),
        ] {
            let err = Mailer::from_settings(&settings(&vars)).unwrap_err();
            let shown = format!("{err:#}");
            assert!(shown.contains(variable), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn the_default_mail_from_is_accepted() {
        let mailer = Mailer::from_settings(&settings(&[])).unwrap();
        assert_eq!(mailer.from.to_string(), "authvault <no-reply@localhost>");
    }

    #[test]
    fn smtp_urls_pick_tls_ports_and_credentials() {
        let cases = [
            (
                "smtp://mail.example.com",
                Security::StartTls,
                "mail.example.com",
                25,
                None,
            ),
            (
                "smtp://mail.example.com:587",
                Security::StartTls,
                "mail.example.com",
                587,
                None,
            ),
            (
                "smtp://u:p@mail.example.com:2525",
                Security::StartTls,
                "mail.example.com",
                2525,
                Some(("u", "p")),
            ),
            (
                "smtps://mail.example.com",
                Security::ImplicitTls,
                "mail.example.com",
                465,
                None,
            ),
            (
                "smtps://me%40example.com:p%40ss%3Aw%2Frd@mail.example.com:4650",
                Security::ImplicitTls,
                "mail.example.com",
                4650,
                Some(("me@example.com", "p@ss:w/rd")),
            ),
            (
                "smtp://localhost:1025",
                Security::Plain,
                "localhost",
                1025,
                None,
            ),
            ("smtp://LOCALHOST", Security::Plain, "LOCALHOST", 25, None),
            (
                "smtp://127.0.0.1:2525",
                Security::Plain,
                "127.0.0.1",
                2525,
                None,
            ),
            (
                "smtp://u:p@127.0.0.2",
                Security::Plain,
                "127.0.0.2",
                25,
                Some(("u", "p")),
            ),
            ("smtp://[::1]:2525", Security::Plain, "::1", 2525, None),
            ("smtp://10.0.0.5", Security::StartTls, "10.0.0.5", 25, None),
            (
                "smtp://[2001:db8::1]",
                Security::StartTls,
                "2001:db8::1",
                25,
                None,
            ),
            (
                "smtp://localhost.example.com",
                Security::StartTls,
                "localhost.example.com",
                25,
                None,
            ),
            (
                "smtps://localhost",
                Security::ImplicitTls,
                "localhost",
                465,
                None,
            ),
        ];
        for (raw, security, host, port, credentials) in cases {
            let target = SmtpTarget::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(target.security, security, "{raw}");
            assert_eq!(target.host, host, "{raw}");
            assert_eq!(target.port, port, "{raw}");
            let got = target
                .credentials
                .as_ref()
                .map(|(u, p)| (u.as_str(), p.expose_secret()));
            assert_eq!(got, credentials, "{raw}");
        }
    }

    #[test]
    fn malformed_smtp_urls_are_refused() {
        for raw in [
            "http://mail.example.com",
            "smtp://",
            "smtp:///",
            "smtp://mail.example.com:99999",
            "smtp://mail.example.com/helo-name",
            "smtp://mail.example.com?tls=opportunistic",
            "smtp://:secret@mail.example.com",
            "smtp://user@mail.example.com",
            "smtp://u:%FF@mail.example.com",
            "smtp://mail%20host",
        ] {
            assert!(SmtpTarget::parse(raw).is_err(), "{raw} was accepted");
        }
    }

    #[test]
    fn redacted_urls_show_how_the_connection_is_protected() {
        let shown = |raw: &str| SmtpTarget::parse(raw).unwrap().redacted();
        assert_eq!(
            shown("smtp://u:secret@mail.example.com:587"),
            "smtp://u:***@mail.example.com:587 (STARTTLS required)"
        );
        assert_eq!(
            shown("smtps://mail.example.com"),
            "smtps://mail.example.com:465 (implicit TLS)"
        );
        assert_eq!(
            shown("smtp://[::1]:25"),
            "smtp://[::1]:25 (plain text, loopback only)"
        );
    }

    #[test]
    fn mail_debug_output_leaves_out_the_bodies() {
        let shown = format!("{:?}", mail("a@example.com"));
        assert!(!shown.contains("token"), "{shown}");
        assert!(!shown.contains("a@example.com"), "{shown}");
    }

    /// A server that speaks ESMTP without offering STARTTLS, recording every command.
    fn server_without_starttls() -> (u16, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let commands = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&commands);
        std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut writer = stream.try_clone().unwrap();
            let _ = writer.write_all(b"220 plain.test ESMTP\r\n");
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                seen.lock().unwrap().push(line.clone());
                let reply: &[u8] = match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                    Some("EHLO") => b"250-plain.test\r\n250 AUTH PLAIN LOGIN\r\n",
                    Some("QUIT") => b"221 bye\r\n",
                    _ => b"250 OK\r\n",
                };
                if writer.write_all(reply).is_err() {
                    break;
                }
            }
        });
        (port, commands)
    }

    #[tokio::test]
    async fn a_remote_smtp_server_without_starttls_gets_neither_credentials_nor_mail() {
        let (port, commands) = server_without_starttls();
        // The rule would pick plain text for 127.0.0.1: build a remote-style target by hand.
        let target = SmtpTarget {
            security: Security::StartTls,
            host: "127.0.0.1".into(),
            port,
            credentials: Some(("user".into(), SecretString::from("hunter2"))),
        };
        let mailer = Mailer {
            from: "authvault <no-reply@localhost>".parse().unwrap(),
            transport: Transport::Smtp {
                client: Box::new(target.client(Duration::from_secs(5)).unwrap()),
                target,
            },
            timeout: Duration::from_secs(5),
            templates: Arc::new(Templates::built_in("authvault").unwrap()),
        };

        let err = mailer.send(mail("a@example.com")).await.unwrap_err();

        assert!(matches!(err, MailError::Failed(_)), "{err:?}");
        assert!(!err.to_string().contains("hunter2"));
        let commands = commands.lock().unwrap().clone();
        assert!(
            commands.iter().any(|c| c.starts_with("EHLO")),
            "{commands:?}"
        );
        assert!(
            commands
                .iter()
                .all(|c| !c.starts_with("AUTH") && !c.starts_with("MAIL")),
            "{commands:?}"
        );
    }
}
