//! The messages authvault sends: a one-call-to-action layout in text and HTML, and the security
//! notices that go out in the background.

use crate::domain::{Email, User};

use super::{Mail, Mailer};

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A message with one call to action, in text and HTML.
pub fn message(to: &Email, subject: &str, lines: &[&str], link: Option<(&str, &str)>) -> Mail {
    let mut text = lines.join("\n\n");
    let mut html = lines
        .iter()
        .map(|l| format!("<p>{}</p>", html_escape(l)))
        .collect::<String>();
    if let Some((label, url)) = link {
        text.push_str(&format!("\n\n{label}:\n{url}\n"));
        html.push_str(&format!(
            "<p><a href=\"{0}\">{1}</a></p><p>{0}</p>",
            html_escape(url),
            html_escape(label)
        ));
    }
    text.push_str("\n\nIf you did not ask for this, you can ignore this message.\n");
    html.push_str("<p>If you did not ask for this, you can ignore this message.</p>");
    Mail {
        to: to.clone(),
        subject: subject.to_owned(),
        text,
        html: format!("<!doctype html><html><body>{html}</body></html>"),
    }
}

/// Mails a security notice without holding up the request; a failure is logged.
pub fn notify(mailer: &Mailer, user: &User, subject: &'static str, what: &str) {
    if mailer.mail_unavailable() {
        return;
    }
    let mail = message(
        &user.email,
        subject,
        &[
            what,
            "If this was not you, reset your password and sign out everywhere.",
        ],
        None,
    );
    let (mailer, id) = (mailer.clone(), user.id);
    tokio::spawn(async move {
        if let Err(e) = mailer.send(mail).await {
            log::warn!("notice to user {id} not delivered: {e}");
        }
    });
}
