//! A real SMTP server for tests: aiosmtpd (`tests/smtp-sink/server.py`) on 127.0.0.1, run with
//! the Python of `AUTHVAULT_TEST_PYTHON` (set by `scripts/test`). It keeps every message it
//! accepts as raw RFC 5322 text, in arrival order, and stops when the `SmtpSink` is dropped.

// Included by more than one test binary, each of which uses a part of it.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    fs::File,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD, Engine};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use tempfile::TempDir;

/// A running SMTP sink.
pub struct SmtpSink {
    child: Child,
    port: u16,
    with_auth: bool,
    dir: TempDir,
}

impl SmtpSink {
    /// The user a sink started `with_auth` accepts (an address, as many providers use).
    pub const USER: &'static str = "mailer@example.com";
    /// Its password, with characters that must be percent-encoded in a URL.
    pub const PASSWORD: &'static str = "s3cret p@ss:w/rd%";

    /// Starts a sink on a free port; `with_auth` requires AUTH PLAIN or LOGIN with
    /// `USER`/`PASSWORD` before any mail is taken.
    pub fn start(with_auth: bool) -> Self {
        let python = std::env::var("AUTHVAULT_TEST_PYTHON").unwrap_or_else(|_| {
            panic!(
                "AUTHVAULT_TEST_PYTHON is not set: run the tests with scripts/test, which \
                 installs aiosmtpd into .venv and sets it to .venv/bin/python"
            )
        });
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp-sink/server.py");
        let dir = tempfile::tempdir().expect("a temporary folder for the SMTP sink");
        let log = dir.path().join("server.log");
        let mut command = Command::new(&python);
        command
            .arg(script)
            .arg("0")
            .arg(dir.path().join("messages"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("the SMTP sink's log file"));
        if with_auth {
            command.arg(Self::USER).arg(Self::PASSWORD);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python} for the SMTP sink: {e}"));

        // Read stdout on a thread, so that a server that hangs cannot hang the test.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = received.recv_timeout(Duration::from_secs(30));
        let port = ready.as_deref().ok().and_then(|line| {
            line.strip_prefix("READY ")
                .and_then(|port| port.trim().parse::<u16>().ok())
        });
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the SMTP sink did not print READY <port> (got {ready:?}); is aiosmtpd installed \
                 in {python}'s environment (scripts/test installs it)? Its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Self {
            child,
            port,
            with_auth,
            dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL to give authvault as `AUTHVAULT_SMTP_URL`, with the credentials when required.
    pub fn url(&self) -> String {
        if self.with_auth {
            self.url_with(Self::USER, Self::PASSWORD)
        } else {
            format!("smtp://127.0.0.1:{}", self.port)
        }
    }

    /// The sink's URL with other credentials (percent-encoded here).
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!(
            "smtp://{}:{}@127.0.0.1:{}",
            utf8_percent_encode(user, NON_ALPHANUMERIC),
            utf8_percent_encode(password, NON_ALPHANUMERIC),
            self.port
        )
    }

    /// The raw text of every message received so far, in arrival order.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("messages")) else {
            return Vec::new();
        };
        let mut numbered: Vec<(u64, PathBuf)> = entries
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let n = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".eml")?
                    .parse()
                    .ok()?;
                Some((n, path))
            })
            .collect();
        numbered.sort();
        numbered
            .into_iter()
            .map(|(_, path)| String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned())
            .collect()
    }

    /// Waits until at least `n` messages have arrived and returns all of them; panics (with
    /// the server's log) when they do not within `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let started = Instant::now();
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if started.elapsed() >= timeout {
                panic!(
                    "the SMTP sink received {} of {n} messages within {timeout:?}; its log:\n{}",
                    messages.len(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the server wrote to stderr (refused AUTH attempts, errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A header of a raw message (the first with that name, unfolded), or of one MIME part.
pub fn header(raw: &str, name: &str) -> Option<String> {
    headers(raw).remove(&name.to_ascii_lowercase())
}

/// The decoded body of the first part whose type is `mime` (`text/plain`, `text/html`), in a
/// single-part or multipart message; transfer encodings 7bit, 8bit, quoted-printable and base64.
pub fn decoded_part(raw: &str, mime: &str) -> Option<String> {
    let content_type = header(raw, "content-type").unwrap_or_else(|| "text/plain".into());
    if content_type.to_ascii_lowercase().starts_with("multipart/") {
        let boundary = parameter(&content_type, "boundary")?;
        let delimiter = format!("--{boundary}");
        let body = body(raw);
        return body
            .split(delimiter.as_str())
            .skip(1)
            .take_while(|part| !part.starts_with("--"))
            .find_map(|part| decoded_part(part.trim_start_matches(['\r', '\n']), mime));
    }
    if !content_type.to_ascii_lowercase().starts_with(mime) {
        return None;
    }
    let encoding = header(raw, "content-transfer-encoding")
        .unwrap_or_else(|| "7bit".into())
        .to_ascii_lowercase();
    let body = body(raw);
    let bytes = match encoding.as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            STANDARD.decode(compact).ok()?
        }
        _ => body.as_bytes().to_vec(),
    };
    Some(String::from_utf8_lossy(&bytes).replace("\r\n", "\n"))
}

fn headers(raw: &str) -> HashMap<String, String> {
    let head = raw
        .split_once("\r\n\r\n")
        .or_else(|| raw.split_once("\n\n"))
        .map_or(raw, |(head, _)| head);
    let mut headers: HashMap<String, String> = HashMap::new();
    let mut last: Option<String> = None;
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(value) = last.as_ref().and_then(|name| headers.get_mut(name)) {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            last = (!headers.contains_key(&name)).then(|| name.clone());
            headers
                .entry(name)
                .or_insert_with(|| value.trim().to_owned());
        }
    }
    headers
}

fn body(raw: &str) -> &str {
    raw.split_once("\r\n\r\n")
        .or_else(|| raw.split_once("\n\n"))
        .map_or("", |(_, body)| body)
}

fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (key, v) = p.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn decode_quoted_printable(body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut lines = body.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        let line = line.trim_end_matches([' ', '\t']);
        let (line, soft_break) = match line.strip_suffix('=') {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'=', Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        if !soft_break && lines.peek().is_some() {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// The link in the text part of a mail that carries a `token=`, and that token.
pub fn token_link(raw: &str) -> (String, String) {
    let text = decoded_part(raw, "text/plain").expect("a text part");
    let link = text
        .split_whitespace()
        .find(|w| w.contains("token="))
        .expect("a link")
        .to_owned();
    let token = url::Url::parse(&link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "token")
        .unwrap()
        .1
        .to_string();
    (link, token)
}
