//! The mails authvault sends, rendered with minijinja from templates: the built-in ones of
//! `templates/mail/`, each of which an operator may replace with a file of the same name in the
//! directory `AUTHVAULT_MAIL_TEMPLATES` names.
//!
//! Every mail has three templates: `<name>.subject.txt`, `<name>.txt` (the text part) and
//! `<name>.html` (the HTML part). They extend `layout.txt` / `layout.html`, the frame with the one
//! call to action, and the security notices extend `notice.txt` / `notice.html`. HTML templates
//! are autoescaped; text templates and subjects are not. Every template is parsed, and rendered
//! against a sample of each mail, once at start-up: a broken one stops the start naming its file.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use minijinja::{context, syntax::SyntaxConfig, AutoEscape, Environment, UndefinedBehavior, Value};

use crate::config::{var, ConfigError};

macro_rules! built_in {
    ($($name:literal),+ $(,)?) => {
        /// Every template authvault uses, as shipped: (file name, source).
        const BUILT_IN: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../templates/mail/", $name)))),+
        ];
    };
}

built_in!(
    "layout.txt",
    "layout.html",
    "notice.txt",
    "notice.html",
    "verify_email.subject.txt",
    "verify_email.txt",
    "verify_email.html",
    "password_reset.subject.txt",
    "password_reset.txt",
    "password_reset.html",
    "signin_link.subject.txt",
    "signin_link.txt",
    "signin_link.html",
    "password_changed.subject.txt",
    "password_changed.txt",
    "password_changed.html",
    "session_revoked.subject.txt",
    "session_revoked.txt",
    "session_revoked.html",
    "mfa_enabled.subject.txt",
    "mfa_enabled.txt",
    "mfa_enabled.html",
    "mfa_disabled.subject.txt",
    "mfa_disabled.txt",
    "mfa_disabled.html",
    "recovery_code_used.subject.txt",
    "recovery_code_used.txt",
    "recovery_code_used.html",
    "methods_removed.subject.txt",
    "methods_removed.txt",
    "methods_removed.html",
    "provider_linked.subject.txt",
    "provider_linked.txt",
    "provider_linked.html",
    "passkey_added.subject.txt",
    "passkey_added.txt",
    "passkey_added.html",
);

/// One mail authvault sends, with what its templates are given (besides `service`, the
/// `AUTHVAULT_MFA_ISSUER` name, and `subject` in the text and HTML parts).
#[derive(Debug, Clone, Copy)]
pub enum Letter<'a> {
    /// `verify_email`: `link`.
    VerifyEmail { link: &'a str },
    /// `password_reset`: `link`, and `minutes` it works for.
    PasswordReset { link: &'a str, minutes: u64 },
    /// `signin_link`: `link`, and `minutes` it works for.
    SigninLink { link: &'a str, minutes: u64 },
    /// A security notice, sent in the background.
    Notice(Notice<'a>),
}

/// The security notices: what happened to an account.
#[derive(Debug, Clone, Copy)]
pub enum Notice<'a> {
    /// `password_changed`: `how` is `changed`, `set` or `reset`.
    PasswordChanged(PasswordChange),
    /// `session_revoked`: a spent refresh token came back and its session ended.
    SessionRevoked,
    /// `mfa_enabled`.
    MfaEnabled,
    /// `mfa_disabled`.
    MfaDisabled,
    /// `recovery_code_used`: how many codes are `left`.
    RecoveryCodeUsed { left: u32 },
    /// `methods_removed`: the sign-in `methods` the first proof of the address removed.
    MethodsRemoved { methods: &'a [&'a str] },
    /// `provider_linked`: the `provider`'s name (`GitHub`, `Google`).
    ProviderLinked { provider: &'a str },
    /// `passkey_added`: the passkey's `name`.
    PasskeyAdded { name: &'a str },
}

/// How a password changed, for the `password_changed` notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordChange {
    /// A new password replaced the old one.
    Changed,
    /// An account without a password got one.
    Set,
    /// A mailed reset link chose it.
    Reset,
}

impl Letter<'_> {
    /// The name its three templates start with.
    pub fn template(&self) -> &'static str {
        match self {
            Letter::VerifyEmail { .. } => "verify_email",
            Letter::PasswordReset { .. } => "password_reset",
            Letter::SigninLink { .. } => "signin_link",
            Letter::Notice(notice) => match notice {
                Notice::PasswordChanged(_) => "password_changed",
                Notice::SessionRevoked => "session_revoked",
                Notice::MfaEnabled => "mfa_enabled",
                Notice::MfaDisabled => "mfa_disabled",
                Notice::RecoveryCodeUsed { .. } => "recovery_code_used",
                Notice::MethodsRemoved { .. } => "methods_removed",
                Notice::ProviderLinked { .. } => "provider_linked",
                Notice::PasskeyAdded { .. } => "passkey_added",
            },
        }
    }

    /// What its templates are given. `link` is always there (`none` in a notice), so that the
    /// layout can ask whether there is a call to action.
    fn context(&self) -> Value {
        let none = Value::from(());
        match *self {
            Letter::VerifyEmail { link } => context! { link },
            Letter::PasswordReset { link, minutes } | Letter::SigninLink { link, minutes } => {
                context! { link, minutes }
            }
            Letter::Notice(notice) => {
                let what = match notice {
                    Notice::PasswordChanged(how) => context! { how => match how {
                        PasswordChange::Changed => "changed",
                        PasswordChange::Set => "set",
                        PasswordChange::Reset => "reset",
                    } },
                    Notice::RecoveryCodeUsed { left } => context! { left },
                    Notice::MethodsRemoved { methods } => {
                        context! { methods => Value::from_iter(methods.iter().copied()) }
                    }
                    Notice::ProviderLinked { provider } => context! { provider },
                    Notice::PasskeyAdded { name } => context! { name },
                    Notice::SessionRevoked | Notice::MfaEnabled | Notice::MfaDisabled => {
                        context! {}
                    }
                };
                context! { link => none, ..what }
            }
        }
    }

    /// One of each mail (and of each variant its templates tell apart), with values that
    /// need escaping, for the check at start-up.
    fn samples() -> Vec<Letter<'static>> {
        const LINK: &str = "https://app.example.com/auth/callback?next=/a&token=c2FtcGxl";
        const NAME: &str = "<b>\"Tom & Jerry's\"</b>";
        vec![
            Letter::VerifyEmail { link: LINK },
            Letter::PasswordReset {
                link: LINK,
                minutes: 30,
            },
            Letter::SigninLink {
                link: LINK,
                minutes: 15,
            },
            Letter::Notice(Notice::PasswordChanged(PasswordChange::Changed)),
            Letter::Notice(Notice::PasswordChanged(PasswordChange::Set)),
            Letter::Notice(Notice::PasswordChanged(PasswordChange::Reset)),
            Letter::Notice(Notice::SessionRevoked),
            Letter::Notice(Notice::MfaEnabled),
            Letter::Notice(Notice::MfaDisabled),
            Letter::Notice(Notice::RecoveryCodeUsed { left: 1 }),
            Letter::Notice(Notice::RecoveryCodeUsed { left: 9 }),
            Letter::Notice(Notice::MethodsRemoved {
                methods: &["password", "GitHub"],
            }),
            Letter::Notice(Notice::ProviderLinked { provider: "GitHub" }),
            Letter::Notice(Notice::PasskeyAdded { name: NAME }),
        ]
    }
}

/// A rendered mail: its subject (one line), text part and HTML part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A template that does not parse or render: the file, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct TemplateError {
    /// The operator's file, or `built-in <name>`.
    pub file: String,
    pub message: String,
}

/// The mail templates, parsed and checked; rendering one of them does not fail on its own.
pub struct Templates {
    env: Environment<'static>,
    /// The name mails call the service by (`AUTHVAULT_MFA_ISSUER`).
    service: String,
    /// The operator's file each replaced template was read from.
    files: BTreeMap<&'static str, PathBuf>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("service", &self.service)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// The built-in templates, checked.
    pub fn built_in(service: &str) -> Result<Self, ConfigError> {
        Self::load(None, service)
    }

    /// The templates, each from `dir` when it has a file of that name, else the built-in one;
    /// every one parsed and rendered against the samples. A directory that is not there, a file
    /// that cannot be read, parsed or rendered stops the start: the error names the variable and
    /// the file.
    pub fn load(dir: Option<&Path>, service: &str) -> Result<Self, ConfigError> {
        let error = |message: String| ConfigError {
            variable: var::MAIL_TEMPLATES.name,
            message,
        };
        let mut env = environment().map_err(|e| error(format!("setting up minijinja: {e}")))?;
        let mut files = BTreeMap::new();
        if let Some(dir) = dir {
            if !dir.is_dir() {
                let what = if dir.exists() {
                    "is not a directory"
                } else {
                    "does not exist"
                };
                return Err(error(format!("{} {what}", dir.display())));
            }
            warn_of_unused_files(dir);
        }
        for &(name, source) in BUILT_IN {
            let file = dir.map(|d| d.join(name)).filter(|f| f.exists());
            let added = match &file {
                Some(file) => std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot be read: {e}"))
                    .and_then(|source| {
                        env.add_template_owned(name, source)
                            .map_err(|e| e.to_string())
                    }),
                None => env.add_template(name, source).map_err(|e| e.to_string()),
            };
            if let Err(message) = added {
                let shown = match &file {
                    Some(file) => file.display().to_string(),
                    None => format!("built-in {name}"),
                };
                return Err(error(format!("{shown}: {message}")));
            }
            if let Some(file) = file {
                log::info!("mail template {name} is read from {}", file.display());
                files.insert(name, file);
            }
        }
        let templates = Self {
            env,
            service: service.to_owned(),
            files,
        };
        for letter in Letter::samples() {
            templates
                .render(&letter)
                .map_err(|e| error(e.to_string()))?;
        }
        Ok(templates)
    }

    /// Renders `letter`: the subject on one line, the text part with single blank lines between
    /// paragraphs, the HTML part as its template writes it.
    pub fn render(&self, letter: &Letter<'_>) -> Result<Rendered, TemplateError> {
        let base = letter.template();
        let ctx = context! { service => &self.service, ..letter.context() };
        let subject = self.render_one(&format!("{base}.subject.txt"), &ctx)?;
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        if subject.is_empty() {
            return Err(TemplateError {
                file: self.shown(&format!("{base}.subject.txt")),
                message: "the subject is empty".into(),
            });
        }
        let ctx = context! { subject => &subject, ..ctx };
        let text = tidy_text(&self.render_one(&format!("{base}.txt"), &ctx)?);
        let html = self.render_one(&format!("{base}.html"), &ctx)?;
        Ok(Rendered {
            subject,
            text,
            html,
        })
    }

    fn render_one(&self, name: &str, ctx: &Value) -> Result<String, TemplateError> {
        let failed = |e: minijinja::Error| TemplateError {
            // The file the error is in: the template itself, or one it extends or includes.
            file: self.shown(e.name().unwrap_or(name)),
            message: e.to_string(),
        };
        self.env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(failed)
    }

    /// The operator's file a template was read from, or `built-in <name>`.
    fn shown(&self, name: &str) -> String {
        match self.files.get(name) {
            Some(file) => file.display().to_string(),
            None => format!("built-in {name}"),
        }
    }
}

fn environment() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    // A misspelt variable fails the check at start-up instead of printing nothing.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()?,
    );
    env.set_formatter(|out, state, value| {
        // minijinja's HTML escaping also writes `/` as `&#x2f;`, which garbles the links a
        // reader copies from the HTML part; these five characters are the ones HTML needs.
        if matches!(state.auto_escape(), AutoEscape::Html) && !value.is_safe() {
            if let Some(s) = value.as_str() {
                return out
                    .write_str(&escape_html(s))
                    .map_err(minijinja::Error::from);
            }
        }
        minijinja::escape_formatter(out, state, value)
    });
    Ok(env)
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// Paragraphs separated by one blank line, no blank lines around them, one final newline.
fn tidy_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut blank = false;
    for line in raw.lines() {
        if line.trim().is_empty() {
            blank = !out.is_empty();
            continue;
        }
        if blank {
            out.push('\n');
            blank = false;
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

/// Logs the files of the operator's directory that replace no template (a misspelt name).
fn warn_of_unused_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let template = name.ends_with(".html") || name.ends_with(".txt");
        if template && !BUILT_IN.iter().any(|(known, _)| *known == name) {
            log::warn!(
                "{}: not a mail template authvault uses; ignored",
                entry.path().display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built_in() -> Templates {
        Templates::built_in("Example Vault").unwrap()
    }

    /// A directory with `files` in it.
    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, source) in files {
            std::fs::write(dir.path().join(name), source).unwrap();
        }
        dir
    }

    #[test]
    fn every_mail_has_its_three_templates_and_a_sample() {
        let names: Vec<_> = BUILT_IN.iter().map(|(n, _)| *n).collect();
        for letter in Letter::samples() {
            let base = letter.template();
            for part in ["subject.txt", "txt", "html"] {
                let name = format!("{base}.{part}");
                assert!(names.contains(&name.as_str()), "{name} is not built in");
            }
        }
        let samples: Vec<_> = Letter::samples().iter().map(Letter::template).collect();
        for name in names {
            let base = name.split('.').next().unwrap();
            assert!(
                ["layout", "notice"].contains(&base) || samples.contains(&base),
                "{name} has no sample"
            );
        }
    }

    #[test]
    fn html_parts_escape_what_they_are_given_and_text_parts_do_not() {
        let name = "<script>alert(1)</script> \"&'";
        let mail = built_in()
            .render(&Letter::Notice(Notice::PasskeyAdded { name }))
            .unwrap();
        assert!(!mail.html.contains("<script>"), "{}", mail.html);
        assert!(
            mail.html
                .contains("&lt;script&gt;alert(1)&lt;/script&gt; &quot;&amp;&#x27;"),
            "{}",
            mail.html
        );
        assert!(
            mail.text
                .contains(&format!("A passkey named \"{name}\" can now sign in")),
            "{}",
            mail.text
        );
        assert_eq!(mail.subject, "A passkey was added to your account");
    }

    #[test]
    fn a_link_keeps_its_slashes_and_escapes_its_ampersands_in_html() {
        let link = "https://app.example.com/reset?a=1&token=abc_DEF-123";
        let mail = built_in()
            .render(&Letter::PasswordReset { link, minutes: 30 })
            .unwrap();
        let escaped = "https://app.example.com/reset?a=1&amp;token=abc_DEF-123";
        assert!(
            mail.html
                .contains(&format!("<a href=\"{escaped}\">Choose a new password</a>")),
            "{}",
            mail.html
        );
        assert!(mail.text.contains(link), "{}", mail.text);
    }

    #[test]
    fn the_built_in_mails_keep_their_wording_and_layout() {
        let t = built_in();
        let reset = t
            .render(&Letter::PasswordReset {
                link: "https://app.example.com/reset?token=abc",
                minutes: 30,
            })
            .unwrap();
        assert_eq!(reset.subject, "Reset your password");
        assert_eq!(
            reset.text,
            "Someone asked to reset the password of your account. The link works once, for 30 \
             minutes.\n\nChoose a new password:\nhttps://app.example.com/reset?token=abc\n\n\
             If you did not ask for this, you can ignore this message.\n"
        );
        assert!(reset.html.starts_with("<!doctype html>"), "{}", reset.html);
        assert!(
            reset.html.contains("<title>Reset your password</title>"),
            "{}",
            reset.html
        );

        let notice = t
            .render(&Letter::Notice(Notice::RecoveryCodeUsed { left: 1 }))
            .unwrap();
        assert_eq!(notice.subject, "A recovery code was used");
        assert_eq!(
            notice.text,
            "A recovery code was just used to sign in to your account; 1 of them is left. Make \
             a new set from your account settings when you run low.\n\nIf this was not you, \
             reset your password and sign out everywhere.\n\nIf you did not ask for this, you \
             can ignore this message.\n"
        );
        assert!(!notice.html.contains("<a "), "{}", notice.html);

        let changed = |how| {
            t.render(&Letter::Notice(Notice::PasswordChanged(how)))
                .unwrap()
                .text
        };
        assert!(changed(PasswordChange::Changed)
            .starts_with("The password of your account was just changed.\n"));
        assert!(changed(PasswordChange::Set).starts_with("A password was just set"));
        assert!(changed(PasswordChange::Reset).contains("reset with a link sent to this address"));
        let removed = t
            .render(&Letter::Notice(Notice::MethodsRemoved {
                methods: &["password", "GitHub"],
            }))
            .unwrap();
        assert!(
            removed.text.contains("were removed (password, GitHub)"),
            "{}",
            removed.text
        );
    }

    #[test]
    fn the_sign_in_link_names_the_service_and_its_lifetime() {
        let mail = built_in()
            .render(&Letter::SigninLink {
                link: "https://app.example.com/signin?token=abc",
                minutes: 15,
            })
            .unwrap();
        assert_eq!(mail.subject, "Sign in to Example Vault");
        assert!(
            mail.text.starts_with(
                "Use this link to sign in. It works once, for 15 minutes.\n\nSign in:\n\
                 https://app.example.com/signin?token=abc\n"
            ),
            "{}",
            mail.text
        );
    }

    #[test]
    fn an_operators_file_replaces_its_template_and_the_others_stay_built_in() {
        let dir = dir_with(&[(
            "verify_email.html",
            "{% extends \"layout.html\" %}{% block message %}<p>Bonjour {{ service }}</p>\
             {% endblock %}{% block action %}Vérifier{% endblock %}",
        )]);
        let t = Templates::load(Some(dir.path()), "Tom & Jerry").unwrap();
        let mail = t
            .render(&Letter::VerifyEmail {
                link: "https://a.example/v?token=x",
            })
            .unwrap();
        assert!(
            mail.html.contains("<p>Bonjour Tom &amp; Jerry</p>"),
            "{}",
            mail.html
        );
        assert!(mail.html.contains(">Vérifier</a>"), "{}", mail.html);
        // The text part and the subject are still the built-in ones.
        assert_eq!(mail.subject, "Verify your email address");
        assert!(mail.text.starts_with("Please confirm that this address"));
    }

    #[test]
    fn a_template_that_does_not_parse_stops_the_start_naming_its_file() {
        let dir = dir_with(&[("password_reset.txt", "{% if link %}never closed")]);
        let err = Templates::load(Some(dir.path()), "authvault").unwrap_err();
        let shown = err.to_string();
        assert_eq!(err.variable, "AUTHVAULT_MAIL_TEMPLATES");
        let file = dir.path().join("password_reset.txt");
        assert!(shown.contains(&file.display().to_string()), "{shown}");
    }

    #[test]
    fn a_template_that_fails_to_render_stops_the_start_naming_its_file() {
        for (name, source) in [
            // A misspelt variable.
            ("mfa_enabled.txt", "{{ lnik }}"),
            // A template that is not there.
            ("layout.html", "{% include \"header.html\" %}"),
            // A subject that renders to nothing.
            ("session_revoked.subject.txt", "{% if false %}x{% endif %}"),
        ] {
            let dir = dir_with(&[(name, source)]);
            let err = Templates::load(Some(dir.path()), "authvault").unwrap_err();
            let shown = err.to_string();
            let file = dir.path().join(name);
            assert!(
                shown.contains(&file.display().to_string()),
                "{name}: {shown}"
            );
        }
    }

    #[test]
    fn a_missing_directory_stops_the_start_naming_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = Templates::load(Some(&missing), "authvault").unwrap_err();
        assert_eq!(err.variable, "AUTHVAULT_MAIL_TEMPLATES");
        let shown = err.to_string();
        assert!(shown.contains("AUTHVAULT_MAIL_TEMPLATES"), "{shown}");
        assert!(shown.contains(&missing.display().to_string()), "{shown}");
    }

    #[test]
    fn text_is_tidied_to_paragraphs() {
        assert_eq!(tidy_text("\n\n a\n\n\n  \nb\nc\n\n"), " a\n\nb\nc\n");
        assert_eq!(tidy_text(""), "");
    }
}
