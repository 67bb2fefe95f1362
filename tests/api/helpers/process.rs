//! authvault as a child process (for SIGTERM and SIGKILL), and a SecantusDB server of a test's
//! own (to stop and restart it).

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{Database, ENCRYPTION_KEYS, JWT_SECRET};

/// A free port on 127.0.0.1 (the listener is closed again before it is used).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
pub async fn wait_for_port(port: u16, within: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A running `authvault` binary.
pub struct ChildApp {
    pub child: Child,
    pub address: String,
    pub port: u16,
    pub log: std::path::PathBuf,
}

impl ChildApp {
    /// Starts the binary on `db` with the test defaults and `extra` variables.
    pub async fn start(db: &Database, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap().keep();
        let log = dir.join("authvault.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_authvault"));
        cmd.current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AUTHVAULT_LISTEN", format!("127.0.0.1:{port}"))
            .env("AUTHVAULT_PUBLIC_URL", super::PUBLIC_URL)
            .env("AUTHVAULT_DATABASE_URL", &db.url)
            .env("AUTHVAULT_JWT_SECRET", JWT_SECRET)
            .env("AUTHVAULT_ENCRYPTION_KEYS", ENCRYPTION_KEYS)
            .env("AUTHVAULT_COOKIE_SECURE", "false")
            .env("AUTHVAULT_BCRYPT_COST", "4")
            .env("AUTHVAULT_IP_RATE_LIMIT_PER_MIN", "0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        assert!(
            wait_for_port(port, Duration::from_secs(30)).await,
            "authvault did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
            port,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Sends a signal by name (`TERM`, `KILL`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit code, or None if it did not exit in time.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for ChildApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A SecantusDB server of this test's own, on a fixed port and storage folder, so that it can
/// be stopped and started again.
pub struct OwnMongo {
    child: Option<Child>,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl OwnMongo {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap().keep();
        let mut mongo = Self {
            child: None,
            port: free_port(),
            dir,
        };
        mongo.resume().await;
        mongo
    }

    /// The URL of a database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!(
            "mongodb://127.0.0.1:{}/{name}?directConnection=true",
            self.port
        )
    }

    pub async fn resume(&mut self) {
        let bin = std::env::var("AUTHVAULT_TEST_SECANTUSD").unwrap_or_else(|_| {
            panic!("AUTHVAULT_TEST_SECANTUSD is not set: run the tests with scripts/test")
        });
        let child = Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--storage-path",
            ])
            .arg(self.dir.join("data"))
            .args(["--log-level", "WARNING"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(30)).await,
            "SecantusDB did not start"
        );
    }

    /// Stops the server (SIGTERM) and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let started = Instant::now();
            while child.try_wait().unwrap().is_none() {
                if started.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for OwnMongo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
