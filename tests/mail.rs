//! The mail delivery layer against a real SMTP server (aiosmtpd, see `tests/smtp-sink`), the
//! development outbox, and MongoDB's "no mail" mode.

#[path = "api/helpers/smtp.rs"]
mod smtp;

use std::{
    collections::HashMap,
    net::TcpListener,
    time::{Duration, Instant},
};

use authvault::{
    config::Settings,
    domain::Email,
    mail::{Letter, Mail, MailError, Mailer, Notice},
};
use smtp::{decoded_part, header, SmtpSink};

const LINK: &str = "https://app.example.com/auth/reset-password?token=\
                    Zm9vYmFyYmF6cXV1eC1hLWxvbmctb25lLXRpbWUtdG9rZW4";

fn settings(vars: &[(&str, &str)]) -> Settings {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|name| map.get(name).cloned()).unwrap()
}

fn smtp_mailer(url: &str) -> Mailer {
    Mailer::from_settings(&settings(&[
        ("AUTHVAULT_SMTP_URL", url),
        ("AUTHVAULT_MAIL_FROM", "Example Vault <vault@example.com>"),
    ]))
    .unwrap()
}

/// A reset message whose text needs quoted-printable or base64 (a long line, non-ASCII).
fn reset_mail(to: &str) -> Mail {
    Mail {
        to: Email::parse(to).unwrap(),
        subject: "Réinitialisez votre mot de passe".into(),
        text: format!("Grüße! Open this link within 30 minutes to choose a new password: {LINK}\n"),
        html: format!("<p>Grüße! <a href=\"{LINK}\">Choose a new password</a></p>"),
    }
}

fn assert_is_the_reset_mail(raw: &str, to: &str) {
    assert_eq!(header(raw, "to").as_deref(), Some(to), "{raw}");
    assert_eq!(
        header(raw, "from").as_deref(),
        Some("\"Example Vault\" <vault@example.com>")
    );
    assert!(header(raw, "subject").is_some_and(|s| !s.is_empty()));
    assert!(header(raw, "date").is_some(), "{raw}");
    assert!(header(raw, "message-id").is_some_and(|id| id.ends_with("@example.com>")));
    assert!(header(raw, "content-type").is_some_and(|t| t.starts_with("multipart/alternative")));
    let text = decoded_part(raw, "text/plain").expect("a text/plain part");
    let html = decoded_part(raw, "text/html").expect("a text/html part");
    assert!(text.contains(LINK), "{text}");
    assert!(text.contains("Grüße"), "{text}");
    assert!(html.contains(&format!("href=\"{LINK}\"")), "{html}");
}

#[tokio::test]
async fn messages_reach_an_smtp_server_without_auth_in_order() {
    let sink = SmtpSink::start(false);
    let mailer = smtp_mailer(&sink.url());
    assert!(!mailer.mail_unavailable());

    mailer.send(reset_mail("Ada@Example.com")).await.unwrap();
    mailer.send(reset_mail("grace@example.com")).await.unwrap();

    let messages = sink.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 2);
    assert_is_the_reset_mail(&messages[0], "ada@example.com");
    assert_is_the_reset_mail(&messages[1], "grace@example.com");
    assert_ne!(
        header(&messages[0], "message-id"),
        header(&messages[1], "message-id")
    );
}

#[tokio::test]
async fn a_message_reaches_an_smtp_server_that_requires_auth() {
    let sink = SmtpSink::start(true);
    // The credentials hold '@', ':', '/', '%' and a space: they arrive percent-decoded.
    assert!(sink.url().contains('%'));
    let mailer = smtp_mailer(&sink.url());

    mailer.send(reset_mail("ada@example.com")).await.unwrap();

    let messages = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_is_the_reset_mail(&messages[0], "ada@example.com");
}

#[tokio::test]
async fn a_wrong_smtp_password_fails_without_showing_it_and_delivers_nothing() {
    let sink = SmtpSink::start(true);
    let mailer = smtp_mailer(&sink.url_with(SmtpSink::USER, "not-the-password"));

    let err = mailer
        .send(reset_mail("ada@example.com"))
        .await
        .unwrap_err();

    let MailError::Failed(reason) = &err else {
        panic!("expected Failed, got {err:?}");
    };
    assert!(!reason.contains("not-the-password"), "{reason}");
    assert!(!format!("{mailer:?}").contains("not-the-password"));
    assert!(sink.log().contains("refused AUTH"), "{}", sink.log());
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_server_that_requires_auth_refuses_a_mailer_without_credentials() {
    let sink = SmtpSink::start(true);
    let mailer = smtp_mailer(&format!("smtp://127.0.0.1:{}", sink.port()));

    let err = mailer
        .send(reset_mail("ada@example.com"))
        .await
        .unwrap_err();

    assert!(matches!(err, MailError::Failed(_)), "{err:?}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn an_smtp_server_that_never_answers_fails_within_the_timeout() {
    // Connections queue in the backlog and never get a greeting.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("smtp://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let mailer = smtp_mailer(&url)
        .with_timeout(Duration::from_millis(500))
        .unwrap();

    let started = Instant::now();
    let err = mailer
        .send(reset_mail("ada@example.com"))
        .await
        .unwrap_err();

    assert!(matches!(err, MailError::Failed(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_smtp_server_fails() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mailer = smtp_mailer(&format!("smtp://127.0.0.1:{port}"));

    let err = mailer
        .send(reset_mail("ada@example.com"))
        .await
        .unwrap_err();

    assert!(matches!(err, MailError::Failed(_)), "{err:?}");
}

#[tokio::test]
async fn without_smtp_the_embedded_default_writes_eml_files_to_the_outbox() {
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

    mailer.send(reset_mail("ada@example.com")).await.unwrap();

    let files: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().ends_with(".eml"));
    assert_is_the_reset_mail(
        &std::fs::read_to_string(&files[0]).unwrap(),
        "ada@example.com",
    );
}

#[tokio::test]
async fn without_smtp_mongodb_has_no_mail_delivery() {
    let mailer = Mailer::from_settings(&settings(&[
        ("AUTHVAULT_DATABASE_URL", "mongodb://127.0.0.1:9/authvault"),
        (
            "AUTHVAULT_JWT_SECRET",
            "test-secret-test-secret-test-secret-0123456789",
        ),
        (
            "AUTHVAULT_ENCRYPTION_KEYS",
            "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        ),
    ]))
    .unwrap();

    assert!(mailer.mail_unavailable());
    assert_eq!(mailer.outbox_dir(), None);
    assert_eq!(
        mailer.send(reset_mail("ada@example.com")).await,
        Err(MailError::Unavailable)
    );
}

/// A mail-template directory holding `files`.
fn template_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, source) in files {
        std::fs::write(dir.path().join(name), source).unwrap();
    }
    dir
}

#[tokio::test]
async fn an_operators_template_replaces_the_built_in_one_and_html_is_escaped() {
    let sink = SmtpSink::start(false);
    let dir = template_dir(&[(
        "passkey_added.subject.txt",
        "{{ service }}: new passkey {{ name }}",
    )]);
    let mailer = Mailer::from_settings(&settings(&[
        ("AUTHVAULT_SMTP_URL", &sink.url()),
        (
            "AUTHVAULT_MAIL_TEMPLATES",
            &dir.path().display().to_string(),
        ),
        ("AUTHVAULT_MFA_ISSUER", "Example Vault"),
    ]))
    .unwrap();
    let to = Email::parse("ada@example.com").unwrap();
    let name = "<script>\"&";

    let letter = Letter::Notice(Notice::PasskeyAdded { name });
    mailer.deliver(&to, &letter).await.unwrap();

    let raw = &sink.wait_for(1, Duration::from_secs(10)).await[0];
    assert_eq!(
        header(raw, "subject").as_deref(),
        Some("Example Vault: new passkey <script>\"&")
    );
    let text = decoded_part(raw, "text/plain").unwrap();
    let html = decoded_part(raw, "text/html").unwrap();
    assert!(
        text.contains("A passkey named \"<script>\"&\" can now sign in"),
        "{text}"
    );
    assert!(html.contains("&lt;script&gt;&quot;&amp;"), "{html}");
    assert!(!html.contains("<script>"), "{html}");
}

#[test]
fn a_broken_template_stops_the_start_naming_its_file() {
    let dir = template_dir(&[("reset_password.txt", "unused"), ("layout.txt", "{% if %}")]);
    let err = Mailer::from_settings(&settings(&[(
        "AUTHVAULT_MAIL_TEMPLATES",
        &dir.path().display().to_string(),
    )]))
    .unwrap_err();
    let shown = format!("{err:#}");
    assert!(shown.contains("AUTHVAULT_MAIL_TEMPLATES"), "{shown}");
    assert!(
        shown.contains(&dir.path().join("layout.txt").display().to_string()),
        "{shown}"
    );
}

#[test]
fn a_missing_template_directory_stops_the_start_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("mail");
    let err = Mailer::from_settings(&settings(&[(
        "AUTHVAULT_MAIL_TEMPLATES",
        &missing.display().to_string(),
    )]))
    .unwrap_err();
    let shown = format!("{err:#}");
    assert!(
        shown.contains(&format!(
            "AUTHVAULT_MAIL_TEMPLATES: {} does not exist",
            missing.display()
        )),
        "{shown}"
    );
}
