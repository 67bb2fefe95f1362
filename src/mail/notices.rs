//! The security notices that go out in the background, rendered from their templates.

use crate::domain::User;

use super::{Letter, Mailer, Notice};

/// Mails a security notice without holding up the request; a failure is logged.
pub fn notify(mailer: &Mailer, user: &User, notice: Notice<'_>) {
    if mailer.mail_unavailable() {
        return;
    }
    let id = user.id;
    let mail = match mailer.compose(&user.email, &Letter::Notice(notice)) {
        Ok(mail) => mail,
        Err(e) => {
            log::error!("notice to user {id} not rendered: {e}");
            return;
        }
    };
    let mailer = mailer.clone();
    tokio::spawn(async move {
        if let Err(e) = mailer.send(mail).await {
            log::warn!("notice to user {id} not delivered: {e}");
        }
    });
}
