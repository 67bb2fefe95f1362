//! The embedded store: one SQLite file in WAL mode, connections pooled, every call on the
//! blocking pool and bounded by the store timeout.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row};
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::{
    CredentialChange, EventSlot, EventWindow, IdentityStore, KeyChange, KeyStore, MfaEnable,
    MfaRecord, MfaStore, NewUser, PasskeyDeletion, PasskeyRecord, PasskeyStore, PasskeyUse,
    ProfileUpdate, RateLimitStore, RefreshState, Reserved, SessionRecord, SessionStore, Store,
    StoreError, StoredKey, TokenKind, TokenRecord, TokenStore, TotpSeal, UserStore,
    MAX_LIVE_SESSIONS,
};
use crate::{
    clock::{from_millis, to_millis},
    domain::{Amr, AuthProvider, Email, KeyProvider, SealedKey, User, UserId, UserName},
};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_api_keys.sql"),
    include_str!("../../migrations/sqlite/0003_identities_tokens.sql"),
    include_str!("../../migrations/sqlite/0004_email_verified.sql"),
    include_str!("../../migrations/sqlite/0005_refresh_tokens.sql"),
    include_str!("../../migrations/sqlite/0006_credential_version.sql"),
    include_str!("../../migrations/sqlite/0007_session_amr.sql"),
    include_str!("../../migrations/sqlite/0008_mfa.sql"),
    include_str!("../../migrations/sqlite/0009_passkeys.sql"),
];
const MAX_CONNECTIONS: usize = 8;

/// SQLite-backed store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path, timeout: Duration) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating {}", dir.display()))
                .map_err(StoreError::Other)?;
        }
        create_private(path)?;
        let store = Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                timeout,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(MAX_CONNECTIONS),
            }),
        };
        store.run(migrate).await?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` with a pooled connection on the blocking pool, within the store timeout.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let work = async move {
            let _permit = inner
                .permits
                .acquire()
                .await
                .map_err(|e| StoreError::Other(e.into()))?;
            let pool = inner.clone();
            tokio::task::spawn_blocking(move || {
                let mut conn = match pool.take_idle() {
                    Some(conn) => conn,
                    None => open_connection(&pool.path, pool.timeout).map_err(map_error)?,
                };
                let result = f(&mut conn).map_err(map_error);
                pool.put_idle(conn);
                result
            })
            .await
            .map_err(|e| StoreError::Other(anyhow::anyhow!("sqlite task failed: {e}")))?
        };
        match tokio::time::timeout(self.inner.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(anyhow::anyhow!(
                "sqlite did not answer within {:?}",
                self.inner.timeout
            ))),
        }
    }
}

/// Creates the database file readable by its owner only, before SQLite opens it (SQLite gives
/// the `-wal` and `-shm` files it makes beside it the same mode), and narrows the mode of files
/// an older version made readable by others.
fn create_private(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))
            .map_err(StoreError::Other)?;
        let private = std::fs::Permissions::from_mode(0o600);
        file.set_permissions(private.clone())
            .with_context(|| format!("making {} private", path.display()))
            .map_err(StoreError::Other)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            if std::fs::metadata(&side).is_ok() {
                std::fs::set_permissions(&side, private.clone())
                    .with_context(|| format!("making {} private", Path::new(&side).display()))
                    .map_err(StoreError::Other)?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

thread_local! {
    /// Each worker thread's read-only connections, by database file.
    static READERS: std::cell::RefCell<Vec<(PathBuf, Connection)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// How many databases one thread keeps a reader for (one in production; tests open many).
const READERS_PER_THREAD: usize = 4;

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // A reader in WAL mode never waits for the writer; anything else is handed to the pool.
    conn.busy_timeout(Duration::from_millis(10))?;
    Ok(conn)
}

impl SqliteStore {
    /// Runs a point read on the calling thread's own read-only connection: in WAL mode it takes
    /// microseconds and never waits for a writer, so the hot path (the session check of every
    /// request) skips the hop to the blocking pool. Falls back to the pool when the database is
    /// busy or the reader cannot be opened.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<T> + Clone + Send + 'static,
    {
        let path = &self.inner.path;
        let inline = READERS.with(|cell| {
            let mut readers = cell.borrow_mut();
            let index = match readers.iter().position(|(p, _)| p == path) {
                Some(i) => i,
                None => {
                    let conn = open_reader(path)?;
                    if readers.len() >= READERS_PER_THREAD {
                        readers.remove(0);
                    }
                    readers.push((path.clone(), conn));
                    readers.len() - 1
                }
            };
            f(&readers[index].1)
        });
        match inline {
            Ok(value) => Ok(value),
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(
                        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen
                    )
                ) =>
            {
                self.run(move |conn| f(conn)).await
            }
            Err(e) => Err(map_error(e)),
        }
    }
}

impl Inner {
    fn take_idle(&self) -> Option<Connection> {
        self.idle.lock().ok()?.pop()
    }

    fn put_idle(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }
}

fn open_connection(path: &Path, timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(timeout)?;
    // WAL lets readers run beside the writer; FULL syncs each commit so that a write the user was
    // told about survives a crash of the process or the machine.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()
}

fn map_error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => StoreError::Conflict,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen) => {
            StoreError::Unavailable(e.into())
        }
        _ => StoreError::Other(e.into()),
    }
}

/// The columns `user_from_row_at` reads, of the users table under the alias given.
macro_rules! user_columns {
    ($t:literal) => {
        concat!(
            $t,
            ".id, ",
            $t,
            ".email, ",
            $t,
            ".name, ",
            $t,
            ".image, ",
            $t,
            ".password_hash, ",
            $t,
            ".created_at, ",
            $t,
            ".updated_at, ",
            "(SELECT group_concat(provider) FROM identities WHERE identities.user_id = ",
            $t,
            ".id), ",
            $t,
            ".email_verified_at, ",
            $t,
            ".credential_version, ",
            "EXISTS (SELECT 1 FROM mfa WHERE mfa.user_id = ",
            $t,
            ".id AND mfa.secret_nonce IS NOT NULL), ",
            "(SELECT COUNT(*) FROM passkeys WHERE passkeys.user_id = ",
            $t,
            ".id)"
        )
    };
}

const USER_COLUMNS: &str = user_columns!("users");

/// A UUID as the 36 characters the tables store, bound without a heap allocation.
#[derive(Clone, Copy)]
struct IdText([u8; 36]);

impl IdText {
    fn new(id: Uuid) -> Self {
        let mut text = [0u8; 36];
        id.hyphenated().encode_lower(&mut text);
        Self(text)
    }
}

impl rusqlite::ToSql for IdText {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(
            rusqlite::types::ValueRef::Text(&self.0),
        ))
    }
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    user_from_row_at(row, 0)
}

/// A user from the columns of `user_columns!`, starting at column `at`.
fn user_from_row_at(row: &Row<'_>, at: usize) -> rusqlite::Result<User> {
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("stored {what} is invalid").into(),
        )
    };
    let id: String = row.get(at)?;
    let email: String = row.get(at + 1)?;
    let name: String = row.get(at + 2)?;
    let linked: Option<String> = row.get(at + 7)?;
    let mut linked: Vec<AuthProvider> = linked
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter_map(AuthProvider::parse)
        .collect();
    linked.sort();
    linked.dedup();
    Ok(User {
        id: id.parse().map_err(|_| bad(at, "user id"))?,
        email: Email::from_stored(email).map_err(|_| bad(at + 1, "email"))?,
        name: UserName::parse(&name).map_err(|_| bad(at + 2, "name"))?,
        image: row.get(at + 3)?,
        password_hash: row.get(at + 4)?,
        created_at: from_millis(row.get(at + 5)?),
        updated_at: from_millis(row.get(at + 6)?),
        linked,
        email_verified: row.get::<_, Option<i64>>(at + 8)?.map(from_millis),
        credential_version: row.get::<_, i64>(at + 9)? as u64,
        mfa_enabled: row.get(at + 10)?,
        passkeys: row.get::<_, i64>(at + 11)?.clamp(0, i64::from(u32::MAX)) as u32,
    })
}

fn insert_user(conn: &Connection, user: NewUser) -> rusqlite::Result<User> {
    let at = to_millis(user.created_at);
    conn.prepare_cached(
        "INSERT INTO users (id, email, name, image, password_hash, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )?
    .execute(params![
        user.id.to_string(),
        user.email.as_str(),
        user.name.as_str(),
        user.image,
        user.password_hash,
        at
    ])?;
    Ok(user.into_created(None))
}

fn insert_identity(
    conn: &Connection,
    user: &str,
    provider: AuthProvider,
    account_id: &str,
    at: i64,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO identities (provider, provider_account_id, user_id, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![provider.as_str(), account_id, user, at])
}

fn user_by_id(conn: &Connection, id: &str) -> rusqlite::Result<Option<User>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        user_columns!("users"),
        " FROM users WHERE id = ?1"
    ))?
    .query_row([id], user_from_row)
    .optional()
}

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    let bad = |i: usize| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            "stored id is invalid".into(),
        )
    };
    let id: String = row.get(0)?;
    let user_id: String = row.get(1)?;
    Ok(SessionRecord {
        id: id.parse().map_err(|_| bad(0))?,
        user_id: user_id.parse().map_err(|_| bad(1))?,
        created_at: from_millis(row.get(2)?),
        last_used_at: from_millis(row.get(3)?),
        expires_at: from_millis(row.get(4)?),
        auth_time: from_millis(row.get(5)?),
        // Every query selects it last, after whatever else it reads (an index, not a name: a
        // lookup by name compares every column's name on each session check).
        amr: {
            let last = row.as_ref().column_count() - 1;
            Amr::from_stored(row.get_ref(last)?.as_str().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    last,
                    rusqlite::types::Type::Text,
                    e.into(),
                )
            })?)
        },
        user_agent: row.get(6)?,
        ip: row.get(7)?,
    })
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        self.run(move |conn| insert_user(conn, user)).await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| user_by_id(conn, &id)).await
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let email = email.as_str().to_owned();
        self.run(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE email = ?1"
            ))?
            .query_row([email], user_from_row)
            .optional()
        })
        .await
    }

    async fn update_profile(
        &self,
        id: UserId,
        update: ProfileUpdate,
        now: OffsetDateTime,
    ) -> Result<Option<User>, StoreError> {
        self.run(move |conn| {
            let id = id.to_string();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let changed = tx.execute(
                "UPDATE users SET \
                   name = COALESCE(?2, name), \
                   image = CASE WHEN ?3 THEN ?4 ELSE image END, \
                   updated_at = ?5 \
                 WHERE id = ?1",
                params![
                    id,
                    update.name.as_ref().map(UserName::as_str),
                    update.image.is_some(),
                    update.image.flatten(),
                    to_millis(now)
                ],
            )?;
            let user = if changed == 1 {
                user_by_id(&tx, &id)?
            } else {
                None
            };
            tx.commit()?;
            Ok(user)
        })
        .await
    }

    async fn change_password(
        &self,
        id: UserId,
        change: CredentialChange<'_>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let hash = change.hash.map(str::to_owned);
        let (keep, expected) = (change.keep, change.expected_version);
        self.run(move |conn| {
            let id = id.to_string();
            let keep = keep.map(|k| k.to_string());
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let changed = tx
                .prepare_cached(
                    "UPDATE users SET password_hash = ?2, updated_at = ?3, \
                     credential_version = credential_version + 1 \
                     WHERE id = ?1 AND (?4 IS NULL OR credential_version = ?4) \
                     AND (?5 IS NULL OR EXISTS (SELECT 1 FROM sessions WHERE id = ?5 AND user_id = ?1))",
                )?
                .execute(params![id, hash, to_millis(now), expected.map(|v| v as i64), keep])?;
            if changed == 1 {
                tx.prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND id IS NOT ?2")?
                    .execute(params![id, keep])?;
                tx.prepare_cached("DELETE FROM tokens WHERE user_id = ?1 AND kind = ?2")?
                    .execute(params![id, TokenKind::PasswordReset.as_str()])?;
            }
            tx.commit()?;
            Ok(changed == 1)
        })
        .await
    }

    async fn rehash_password(
        &self,
        id: UserId,
        hash: &str,
        version: u64,
    ) -> Result<bool, StoreError> {
        let hash = hash.to_owned();
        self.run(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE users SET password_hash = ?2 \
                     WHERE id = ?1 AND credential_version = ?3 AND password_hash IS NOT NULL",
                )?
                .execute(params![id.to_string(), hash, version as i64])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn mark_email_verified(
        &self,
        id: UserId,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE users SET email_verified_at = COALESCE(email_verified_at, ?2), updated_at = ?2 \
                     WHERE id = ?1",
                )?
                .execute(params![id.to_string(), to_millis(at)])?;
            Ok(n == 1)
        })
        .await
    }

    async fn prove_email(
        &self,
        id: UserId,
        at: OffsetDateTime,
        keep: Option<(AuthProvider, &str)>,
        remove_password: bool,
    ) -> Result<Option<Vec<AuthProvider>>, StoreError> {
        let keep = keep.map(|(p, a)| (p.as_str(), a.to_owned()));
        self.run(move |conn| {
            let id = id.to_string();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let first = tx
                .prepare_cached(
                    "UPDATE users SET email_verified_at = ?2, updated_at = ?2 \
                     WHERE id = ?1 AND email_verified_at IS NULL",
                )?
                .execute(params![id, to_millis(at)])?;
            if first != 1 {
                return Ok(None);
            }
            let (keep_provider, keep_account) = match &keep {
                Some((p, a)) => (Some(*p), Some(a.as_str())),
                None => (None, None),
            };
            let mut removed: Vec<AuthProvider> = tx
                .prepare_cached(
                    "DELETE FROM identities WHERE user_id = ?1 \
                     AND NOT (provider IS ?2 AND provider_account_id IS ?3) RETURNING provider",
                )?
                .query_map(params![id, keep_provider, keep_account], |row| {
                    row.get::<_, String>(0)
                })?
                .filter_map(|p| p.map(|p| AuthProvider::parse(&p)).transpose())
                .collect::<rusqlite::Result<_>>()?;
            if tx
                .prepare_cached("DELETE FROM passkeys WHERE user_id = ?1")?
                .execute([&id])?
                > 0
            {
                removed.push(AuthProvider::Passkey);
            }
            if remove_password
                && tx
                    .prepare_cached(
                        "UPDATE users SET password_hash = NULL \
                         WHERE id = ?1 AND password_hash IS NOT NULL",
                    )?
                    .execute([&id])?
                    == 1
            {
                removed.push(AuthProvider::Credentials);
            }
            removed.sort();
            if !removed.is_empty() {
                tx.prepare_cached(
                    "UPDATE users SET credential_version = credential_version + 1 WHERE id = ?1",
                )?
                .execute([&id])?;
                tx.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?
                    .execute([&id])?;
            }
            tx.commit()?;
            Ok(Some(removed))
        })
        .await
    }

    async fn delete_user(
        &self,
        id: UserId,
        expected_version: Option<u64>,
    ) -> Result<bool, StoreError> {
        // Identities and sessions go with the user through ON DELETE CASCADE.
        self.run(move |conn| {
            let changed = conn
                .prepare_cached(
                    "DELETE FROM users WHERE id = ?1 AND (?2 IS NULL OR credential_version = ?2)",
                )?
                .execute(params![id.to_string(), expected_version.map(|v| v as i64)])?;
            Ok(changed == 1)
        })
        .await
    }
}

impl SqliteStore {
    async fn insert_session(
        &self,
        session: &SessionRecord,
        refresh_hash: Option<String>,
        credential_version: Option<u64>,
    ) -> Result<(), StoreError> {
        let s = session.clone();
        self.run(move |conn| {
            // One statement: the row goes in only while the user has the credential version the
            // sign-in checked (writes are serialised, so no change can slip in between).
            let inserted = conn.prepare_cached(
                "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, auth_time, user_agent, ip, refresh_hash, amr) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?11 \
                 WHERE ?10 IS NULL OR EXISTS (SELECT 1 FROM users WHERE id = ?2 AND credential_version = ?10)",
            )?
            .execute(params![
                s.id.to_string(),
                s.user_id.to_string(),
                to_millis(s.created_at),
                to_millis(s.last_used_at),
                to_millis(s.expires_at),
                to_millis(s.auth_time),
                s.user_agent,
                s.ip,
                refresh_hash,
                credential_version.map(|v| v as i64),
                s.amr.to_stored()
            ])?;
            if inserted != 1 {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
                    Some("the user's credential changed".into()),
                ));
            }
            // Expired rows are dead weight; sweep them as new ones arrive.
            conn.prepare_cached("DELETE FROM sessions WHERE expires_at < ?1")?
                .execute([to_millis(s.created_at)])?;
            // Past the cap, the user's oldest sessions end.
            conn.prepare_cached(
                "DELETE FROM sessions WHERE user_id = ?1 AND id NOT IN \
                 (SELECT id FROM sessions WHERE user_id = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2)",
            )?
            .execute(params![s.user_id.to_string(), MAX_LIVE_SESSIONS as i64])?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.insert_session(session, None, None).await
    }

    async fn create_session_with_refresh(
        &self,
        session: &SessionRecord,
        refresh_hash: &str,
        credential_version: u64,
    ) -> Result<(), StoreError> {
        self.insert_session(
            session,
            Some(refresh_hash.to_owned()),
            Some(credential_version),
        )
        .await
    }

    async fn session_by_refresh(
        &self,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(SessionRecord, RefreshState)>, StoreError> {
        let (hash, now) = (hash.to_owned(), to_millis(now));
        self.run(move |conn| {
            conn.prepare_cached(
                "SELECT id, user_id, created_at, last_used_at, expires_at, auth_time, user_agent, ip, \
                   refresh_hash, previous_hash, rotated_at, successor_key_id, successor_nonce, successor_ciphertext, amr \
                 FROM sessions WHERE (refresh_hash = ?1 OR previous_hash = ?1) AND expires_at > ?2",
            )?
            .query_row(params![hash, now], |row| {
                let session = session_from_row(row)?;
                let key_id: Option<String> = row.get(11)?;
                let successor = match key_id {
                    Some(key_id) => Some(SealedKey {
                        key_id,
                        nonce: row.get(12)?,
                        ciphertext: row.get(13)?,
                    }),
                    None => None,
                };
                Ok((
                    session,
                    RefreshState {
                        hash: row.get(8)?,
                        previous_hash: row.get(9)?,
                        rotated_at: row.get::<_, Option<i64>>(10)?.map(from_millis),
                        successor,
                    },
                ))
            })
            .optional()
        })
        .await
    }

    async fn rotate_refresh(
        &self,
        _user: UserId,
        session: Uuid,
        old_hash: &str,
        new_hash: &str,
        successor: &SealedKey,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (old, new, successor) = (old_hash.to_owned(), new_hash.to_owned(), successor.clone());
        self.run(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE sessions SET refresh_hash = ?3, previous_hash = ?2, rotated_at = ?4, \
                       last_used_at = ?4, successor_key_id = ?5, successor_nonce = ?6, successor_ciphertext = ?7 \
                     WHERE id = ?1 AND refresh_hash = ?2",
                )?
                .execute(params![
                    session.to_string(),
                    old,
                    new,
                    to_millis(now),
                    successor.key_id,
                    successor.nonce,
                    successor.ciphertext
                ])?;
            Ok(n == 1)
        })
        .await
    }

    async fn user_sessions(
        &self,
        user: UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let (user, now) = (user.to_string(), to_millis(now));
        self.run(move |conn| {
            conn.prepare_cached(
                "SELECT id, user_id, created_at, last_used_at, expires_at, auth_time, user_agent, ip, amr \
                 FROM sessions WHERE user_id = ?1 AND expires_at > ?2 ORDER BY created_at DESC, id",
            )?
            .query_map(params![user, now], session_from_row)?
            .collect()
        })
        .await
    }

    async fn end_user_session(&self, user: UserId, session: Uuid) -> Result<bool, StoreError> {
        self.run(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM sessions WHERE id = ?1 AND user_id = ?2")?
                .execute(params![session.to_string(), user.to_string()])?;
            Ok(n == 1)
        })
        .await
    }

    async fn session(
        &self,
        user: UserId,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let (id, user, now) = (IdText::new(id), IdText::new(user.as_uuid()), to_millis(now));
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT id, user_id, created_at, last_used_at, expires_at, auth_time, user_agent, ip, amr \
                 FROM sessions WHERE id = ?1 AND user_id = ?2 AND expires_at > ?3",
            )?
            .query_row(params![id, user, now], session_from_row)
            .optional()
        })
        .await
    }

    async fn session_with_user(
        &self,
        user: UserId,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<(SessionRecord, User)>, StoreError> {
        let (id, user, now) = (IdText::new(id), IdText::new(user.as_uuid()), to_millis(now));
        self.read(move |conn| {
            // One statement, so one read transaction (and one round of file locks) for both.
            conn.prepare_cached(concat!(
                "SELECT s.id, s.user_id, s.created_at, s.last_used_at, s.expires_at, s.auth_time, \
                   s.user_agent, s.ip, ",
                user_columns!("u"),
                ", s.amr FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.id = ?1 AND s.user_id = ?2 AND s.expires_at > ?3"
            ))?
            .query_row(params![id, user, now], |row| {
                Ok((session_from_row(row)?, user_from_row_at(row, 8)?))
            })
            .optional()
        })
        .await
    }

    async fn end_session(&self, id: Uuid) -> Result<bool, StoreError> {
        self.run(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM sessions WHERE id = ?1")?
                .execute([id.to_string()])?;
            Ok(n == 1)
        })
        .await
    }

    async fn end_user_sessions(
        &self,
        user: UserId,
        except: Option<Uuid>,
    ) -> Result<u64, StoreError> {
        self.run(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND id IS NOT ?2")?
                .execute(params![user.to_string(), except.map(|id| id.to_string())])?;
            Ok(n as u64)
        })
        .await
    }
}

#[async_trait]
impl RateLimitStore for SqliteStore {
    async fn reserve_event(&self, key: &str, slot: EventSlot) -> Result<Reserved, StoreError> {
        let key = key.to_owned();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let at = to_millis(slot.at);
            let (count, oldest): (i64, Option<i64>) = tx
                .prepare_cached(
                    "SELECT count(*), min(at) FROM rate_events WHERE key = ?1 AND at > ?2",
                )?
                .query_row(params![key, to_millis(slot.since)], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            if count >= i64::from(slot.max) {
                return Ok(Reserved::Full {
                    oldest: oldest.map(from_millis),
                });
            }
            tx.prepare_cached(
                "INSERT INTO rate_events (key, at, expires_at, id) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                key,
                at,
                to_millis(slot.expires_at),
                IdText::new(slot.id)
            ])?;
            tx.prepare_cached("DELETE FROM rate_events WHERE expires_at < ?1")?
                .execute([at])?;
            tx.commit()?;
            Ok(Reserved::Yes)
        })
        .await
    }

    async fn release_event(&self, key: &str, id: Uuid) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.run(move |conn| {
            conn.prepare_cached("DELETE FROM rate_events WHERE key = ?1 AND id = ?2")?
                .execute(params![key, IdText::new(id)])?;
            Ok(())
        })
        .await
    }

    async fn count_events(
        &self,
        key: &str,
        since: OffsetDateTime,
    ) -> Result<EventWindow, StoreError> {
        let key = key.to_owned();
        self.run(move |conn| {
            conn.prepare_cached(
                "SELECT count(*), min(at) FROM rate_events WHERE key = ?1 AND at > ?2",
            )?
            .query_row(params![key, to_millis(since)], |row| {
                let count: i64 = row.get(0)?;
                let oldest: Option<i64> = row.get(1)?;
                Ok(EventWindow {
                    count: count as u64,
                    oldest: oldest.map(from_millis),
                })
            })
        })
        .await
    }

    async fn clear_events(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.run(move |conn| {
            conn.prepare_cached("DELETE FROM rate_events WHERE key = ?1")?
                .execute([key])?;
            Ok(())
        })
        .await
    }
}

fn stored_key_from_row(row: &Row<'_>) -> rusqlite::Result<StoredKey> {
    let provider: String = row.get(0)?;
    let provider = KeyProvider::parse(&provider).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            "stored provider is unknown".into(),
        )
    })?;
    Ok(StoredKey {
        provider,
        sealed: SealedKey {
            key_id: row.get(1)?,
            nonce: row.get(2)?,
            ciphertext: row.get(3)?,
        },
        updated_at: from_millis(row.get(4)?),
    })
}

fn sort_keys(keys: &mut [StoredKey]) {
    keys.sort_by_key(|k| k.provider);
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn api_keys(&self, user: UserId) -> Result<Vec<StoredKey>, StoreError> {
        let user = user.to_string();
        self.read(move |conn| {
            let mut keys = conn
                .prepare_cached(
                    "SELECT provider, key_id, nonce, ciphertext, updated_at FROM api_keys WHERE user_id = ?1",
                )?
                .query_map([&user], stored_key_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            sort_keys(&mut keys);
            Ok(keys)
        })
        .await
    }

    async fn update_api_keys(
        &self,
        user: UserId,
        changes: &[KeyChange],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let changes = changes.to_vec();
        self.run(move |conn| {
            let user = user.to_string();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let exists = tx
                .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
                .exists([&user])?;
            if !exists {
                return Ok(false);
            }
            for (provider, sealed) in &changes {
                match sealed {
                    Some(s) => {
                        tx.prepare_cached(
                            "INSERT INTO api_keys (user_id, provider, key_id, nonce, ciphertext, updated_at) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                             ON CONFLICT (user_id, provider) DO UPDATE SET key_id = excluded.key_id, \
                               nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
                               updated_at = excluded.updated_at",
                        )?
                        .execute(params![
                            user,
                            provider.as_str(),
                            s.key_id,
                            s.nonce,
                            s.ciphertext,
                            to_millis(now)
                        ])?;
                    }
                    None => {
                        tx.prepare_cached("DELETE FROM api_keys WHERE user_id = ?1 AND provider = ?2")?
                            .execute(params![user, provider.as_str()])?;
                    }
                }
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn reseal_api_key(
        &self,
        user: UserId,
        provider: KeyProvider,
        expected_nonce: &[u8],
        sealed: &SealedKey,
    ) -> Result<bool, StoreError> {
        let expected = expected_nonce.to_vec();
        let sealed = sealed.clone();
        self.run(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE api_keys SET key_id = ?4, nonce = ?5, ciphertext = ?6 \
                     WHERE user_id = ?1 AND provider = ?2 AND nonce = ?3",
                )?
                .execute(params![
                    user.to_string(),
                    provider.as_str(),
                    expected,
                    sealed.key_id,
                    sealed.nonce,
                    sealed.ciphertext
                ])?;
            Ok(n == 1)
        })
        .await
    }

    async fn api_keys_page(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<(UserId, Vec<StoredKey>)>, StoreError> {
        self.run(move |conn| {
            let after = after.map(|id| id.to_string()).unwrap_or_default();
            let users: Vec<String> = conn
                .prepare_cached(
                    "SELECT DISTINCT user_id FROM api_keys WHERE user_id > ?1 ORDER BY user_id LIMIT ?2",
                )?
                .query_map(params![after, limit], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut page = Vec::with_capacity(users.len());
            for user in users {
                let mut keys = conn
                    .prepare_cached(
                        "SELECT provider, key_id, nonce, ciphertext, updated_at FROM api_keys WHERE user_id = ?1",
                    )?
                    .query_map([&user], stored_key_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                sort_keys(&mut keys);
                let id = user.parse().map_err(|_| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Text,
                        "stored user id is invalid".into(),
                    )
                })?;
                page.push((id, keys));
            }
            Ok(page)
        })
        .await
    }

    async fn count_api_keys(&self) -> Result<u64, StoreError> {
        self.run(|conn| {
            conn.query_row("SELECT count(*) FROM api_keys", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|n| n as u64)
        })
        .await
    }
}

/// A seal from three nullable columns starting at `at`.
fn seal_at(row: &Row<'_>, at: usize) -> rusqlite::Result<Option<SealedKey>> {
    let key_id: Option<String> = row.get(at)?;
    let nonce: Option<Vec<u8>> = row.get(at + 1)?;
    let ciphertext: Option<Vec<u8>> = row.get(at + 2)?;
    Ok(match (key_id, nonce, ciphertext) {
        (Some(key_id), Some(nonce), Some(ciphertext)) => Some(SealedKey {
            key_id,
            nonce,
            ciphertext,
        }),
        _ => None,
    })
}

fn parse_user_id(raw: &str) -> rusqlite::Result<UserId> {
    raw.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            "stored user id is invalid".into(),
        )
    })
}

/// Whether the user has MFA on, inside a transaction.
fn mfa_on(conn: &Connection, user: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM mfa WHERE user_id = ?1 AND secret_nonce IS NOT NULL")?
        .exists([user])
}

fn insert_recovery_codes(conn: &Connection, user: &str, hashes: &[String]) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM recovery_codes WHERE user_id = ?1")?
        .execute([user])?;
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO recovery_codes (user_id, code_hash) VALUES (?1, ?2)",
    )?;
    for hash in hashes {
        insert.execute(params![user, hash])?;
    }
    Ok(())
}

#[async_trait]
impl MfaStore for SqliteStore {
    async fn mfa(&self, user: UserId) -> Result<Option<MfaRecord>, StoreError> {
        let user = user.to_string();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT secret_key_id, secret_nonce, secret_ciphertext, \
                   pending_key_id, pending_nonce, pending_ciphertext, last_step, \
                   (SELECT count(*) FROM recovery_codes r WHERE r.user_id = mfa.user_id) \
                 FROM mfa WHERE user_id = ?1",
            )?
            .query_row([&user], |row| {
                Ok(MfaRecord {
                    secret: seal_at(row, 0)?,
                    pending: seal_at(row, 3)?,
                    last_step: row.get(6)?,
                    recovery_left: row.get::<_, i64>(7)? as u32,
                })
            })
            .optional()
        })
        .await
    }

    async fn set_pending_totp(&self, user: UserId, sealed: &SealedKey) -> Result<bool, StoreError> {
        let sealed = sealed.clone();
        self.run(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO mfa (user_id, pending_key_id, pending_nonce, pending_ciphertext) \
                     SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?1) \
                     ON CONFLICT (user_id) DO UPDATE SET pending_key_id = excluded.pending_key_id, \
                       pending_nonce = excluded.pending_nonce, \
                       pending_ciphertext = excluded.pending_ciphertext \
                     WHERE mfa.secret_nonce IS NULL",
                )?
                .execute(params![
                    user.to_string(),
                    sealed.key_id,
                    sealed.nonce,
                    sealed.ciphertext
                ])?;
            Ok(n == 1)
        })
        .await
    }

    async fn enable_mfa(&self, user: UserId, enable: MfaEnable<'_>) -> Result<bool, StoreError> {
        let nonce = enable.pending_nonce.to_vec();
        let recovery = enable.recovery.to_vec();
        let (step, keep) = (enable.step, enable.keep.to_string());
        self.run(move |conn| {
            let user = user.to_string();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let changed = tx
                .prepare_cached(
                    "UPDATE mfa SET secret_key_id = pending_key_id, secret_nonce = pending_nonce, \
                       secret_ciphertext = pending_ciphertext, pending_key_id = NULL, \
                       pending_nonce = NULL, pending_ciphertext = NULL, last_step = ?3 \
                     WHERE user_id = ?1 AND pending_nonce = ?2 AND secret_nonce IS NULL \
                       AND EXISTS (SELECT 1 FROM sessions WHERE id = ?4 AND user_id = ?1)",
                )?
                .execute(params![user, nonce, step, keep])?;
            if changed == 1 {
                insert_recovery_codes(&tx, &user, &recovery)?;
                tx.prepare_cached(
                    "UPDATE users SET credential_version = credential_version + 1 WHERE id = ?1",
                )?
                .execute([&user])?;
                tx.prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND id IS NOT ?2")?
                    .execute(params![user, keep])?;
            }
            tx.commit()?;
            Ok(changed == 1)
        })
        .await
    }

    async fn disable_mfa(&self, user: UserId) -> Result<bool, StoreError> {
        self.run(move |conn| {
            let user = user.to_string();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx
                .prepare_cached("DELETE FROM mfa WHERE user_id = ?1 AND secret_nonce IS NOT NULL")?
                .execute([&user])?;
            if n == 1 {
                tx.prepare_cached("DELETE FROM recovery_codes WHERE user_id = ?1")?
                    .execute([&user])?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn accept_totp_step(&self, user: UserId, step: i64) -> Result<bool, StoreError> {
        self.run(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE mfa SET last_step = ?2 WHERE user_id = ?1 \
                     AND secret_nonce IS NOT NULL AND (last_step IS NULL OR last_step < ?2)",
                )?
                .execute(params![user.to_string(), step])?;
            Ok(n == 1)
        })
        .await
    }

    async fn spend_recovery_code(
        &self,
        user: UserId,
        hash: &str,
    ) -> Result<Option<u32>, StoreError> {
        let hash = hash.to_owned();
        self.run(move |conn| {
            let user = user.to_string();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if !mfa_on(&tx, &user)? {
                return Ok(None);
            }
            let n = tx
                .prepare_cached("DELETE FROM recovery_codes WHERE user_id = ?1 AND code_hash = ?2")?
                .execute(params![user, hash])?;
            let left = if n == 1 {
                let left: i64 = tx
                    .prepare_cached("SELECT count(*) FROM recovery_codes WHERE user_id = ?1")?
                    .query_row([&user], |row| row.get(0))?;
                Some(left as u32)
            } else {
                None
            };
            tx.commit()?;
            Ok(left)
        })
        .await
    }

    async fn replace_recovery_codes(
        &self,
        user: UserId,
        hashes: &[String],
    ) -> Result<bool, StoreError> {
        let hashes = hashes.to_vec();
        self.run(move |conn| {
            let user = user.to_string();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if !mfa_on(&tx, &user)? {
                return Ok(false);
            }
            insert_recovery_codes(&tx, &user, &hashes)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn totp_page(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<(UserId, Vec<(TotpSeal, SealedKey)>)>, StoreError> {
        self.run(move |conn| {
            let after = after.map(|id| id.to_string()).unwrap_or_default();
            let mut stmt = conn.prepare_cached(
                "SELECT user_id, secret_key_id, secret_nonce, secret_ciphertext, \
                   pending_key_id, pending_nonce, pending_ciphertext FROM mfa \
                 WHERE user_id > ?1 AND (secret_nonce IS NOT NULL OR pending_nonce IS NOT NULL) \
                 ORDER BY user_id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit], |row| {
                let id: String = row.get(0)?;
                let mut seals = Vec::with_capacity(2);
                if let Some(s) = seal_at(row, 1)? {
                    seals.push((TotpSeal::Confirmed, s));
                }
                if let Some(s) = seal_at(row, 4)? {
                    seals.push((TotpSeal::Pending, s));
                }
                Ok((parse_user_id(&id)?, seals))
            })?;
            rows.collect()
        })
        .await
    }

    async fn reseal_totp(
        &self,
        user: UserId,
        which: TotpSeal,
        expected_nonce: &[u8],
        sealed: &SealedKey,
    ) -> Result<bool, StoreError> {
        let expected = expected_nonce.to_vec();
        let sealed = sealed.clone();
        self.run(move |conn| {
            let sql = match which {
                TotpSeal::Confirmed => {
                    "UPDATE mfa SET secret_key_id = ?3, secret_nonce = ?4, secret_ciphertext = ?5 \
                     WHERE user_id = ?1 AND secret_nonce = ?2"
                }
                TotpSeal::Pending => {
                    "UPDATE mfa SET pending_key_id = ?3, pending_nonce = ?4, pending_ciphertext = ?5 \
                     WHERE user_id = ?1 AND pending_nonce = ?2"
                }
            };
            let n = conn.prepare_cached(sql)?.execute(params![
                user.to_string(),
                expected,
                sealed.key_id,
                sealed.nonce,
                sealed.ciphertext
            ])?;
            Ok(n == 1)
        })
        .await
    }

    async fn count_totp(&self) -> Result<u64, StoreError> {
        self.run(|conn| {
            conn.query_row(
                "SELECT count(secret_nonce) + count(pending_nonce) FROM mfa",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
        .await
    }
}

const PASSKEY_COLUMNS: &str = "id, user_id, credential_id, name, credential, counter, \
    backup_eligible, backup_state, transports, created_at, last_used_at";

fn passkey_from_row(row: &Row<'_>) -> rusqlite::Result<PasskeyRecord> {
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("stored passkey {what} is invalid").into(),
        )
    };
    let id: String = row.get(0)?;
    let user: String = row.get(1)?;
    let transports: String = row.get(8)?;
    Ok(PasskeyRecord {
        id: id.parse().map_err(|_| bad(0, "id"))?,
        user_id: user.parse().map_err(|_| bad(1, "user id"))?,
        credential_id: row.get(2)?,
        name: row.get(3)?,
        credential: row.get(4)?,
        counter: u32::try_from(row.get::<_, i64>(5)?).map_err(|_| bad(5, "counter"))?,
        backup_eligible: row.get(6)?,
        backup_state: row.get(7)?,
        transports: serde_json::from_str(&transports).map_err(|_| bad(8, "transports"))?,
        created_at: from_millis(row.get(9)?),
        last_used_at: row.get::<_, Option<i64>>(10)?.map(from_millis),
    })
}

fn handle_from(bytes: Option<Vec<u8>>) -> Option<[u8; 16]> {
    bytes.and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
}

#[async_trait]
impl PasskeyStore for SqliteStore {
    async fn webauthn_handle(
        &self,
        user: UserId,
        candidate: [u8; 16],
    ) -> Result<Option<[u8; 16]>, StoreError> {
        self.run(move |conn| {
            let id = user.to_string();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "UPDATE users SET webauthn_handle = ?2 WHERE id = ?1 AND webauthn_handle IS NULL",
            )?
            .execute(params![id, candidate.as_slice()])?;
            let handle: Option<Option<Vec<u8>>> = tx
                .prepare_cached("SELECT webauthn_handle FROM users WHERE id = ?1")?
                .query_row([&id], |row| row.get(0))
                .optional()?;
            tx.commit()?;
            Ok(handle.map(handle_from).map(|h| h.unwrap_or(candidate)))
        })
        .await
    }

    async fn add_passkey(&self, passkey: &PasskeyRecord) -> Result<bool, StoreError> {
        let p = passkey.clone();
        self.run(move |conn| {
            let transports = serde_json::to_string(&p.transports)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
            // One statement: the row goes in only while the user exists.
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO passkeys (id, user_id, credential_id, name, credential, counter, \
                       backup_eligible, backup_state, transports, created_at, last_used_at) \
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11 \
                     WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2)",
                )?
                .execute(params![
                    p.id.to_string(),
                    p.user_id.to_string(),
                    p.credential_id,
                    p.name,
                    p.credential,
                    i64::from(p.counter),
                    p.backup_eligible,
                    p.backup_state,
                    transports,
                    to_millis(p.created_at),
                    p.last_used_at.map(to_millis),
                ])?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn passkeys(&self, user: UserId) -> Result<Vec<PasskeyRecord>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = ?1 \
                 ORDER BY created_at, id"
            ))?
            .query_map([user.to_string()], passkey_from_row)?
            .collect()
        })
        .await
    }

    async fn passkey_by_credential(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<(PasskeyRecord, Option<[u8; 16]>)>, StoreError> {
        let credential_id = credential_id.to_vec();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {PASSKEY_COLUMNS}, (SELECT webauthn_handle FROM users \
                   WHERE users.id = passkeys.user_id) \
                 FROM passkeys WHERE credential_id = ?1"
            ))?
            .query_row([&credential_id], |row| {
                Ok((passkey_from_row(row)?, handle_from(row.get(11)?)))
            })
            .optional()
        })
        .await
    }

    async fn rename_passkey(
        &self,
        user: UserId,
        id: Uuid,
        name: &str,
    ) -> Result<Option<PasskeyRecord>, StoreError> {
        let name = name.to_owned();
        self.run(move |conn| {
            conn.prepare_cached(&format!(
                "UPDATE passkeys SET name = ?3 WHERE id = ?1 AND user_id = ?2 \
                 RETURNING {PASSKEY_COLUMNS}"
            ))?
            .query_row(
                params![id.to_string(), user.to_string(), name],
                passkey_from_row,
            )
            .optional()
        })
        .await
    }

    async fn delete_passkey(&self, user: UserId, id: Uuid) -> Result<PasskeyDeletion, StoreError> {
        self.run(move |conn| {
            let (id, user) = (id.to_string(), user.to_string());
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let exists = tx
                .prepare_cached("SELECT 1 FROM passkeys WHERE id = ?1 AND user_id = ?2")?
                .exists(params![id, user])?;
            if !exists {
                return Ok(PasskeyDeletion::NotFound);
            }
            // Another way to sign in: a password, an identity, or another passkey.
            let others: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1 AND password_hash IS NOT NULL) \
                       OR EXISTS (SELECT 1 FROM identities WHERE user_id = ?1) \
                       OR EXISTS (SELECT 1 FROM passkeys WHERE user_id = ?1 AND id <> ?2)",
                )?
                .query_row(params![user, id], |row| row.get(0))?;
            if !others {
                return Ok(PasskeyDeletion::LastSignInMethod);
            }
            tx.prepare_cached("DELETE FROM passkeys WHERE id = ?1 AND user_id = ?2")?
                .execute(params![id, user])?;
            // A sign-in in flight with it starts no session.
            tx.prepare_cached(
                "UPDATE users SET credential_version = credential_version + 1 WHERE id = ?1",
            )?
            .execute([&user])?;
            tx.commit()?;
            Ok(PasskeyDeletion::Deleted)
        })
        .await
    }

    async fn record_passkey_use(&self, id: Uuid, used: PasskeyUse) -> Result<bool, StoreError> {
        self.run(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE passkeys SET counter = ?3, backup_eligible = ?4, backup_state = ?5, \
                       last_used_at = ?6 WHERE id = ?1 AND counter = ?2",
                )?
                .execute(params![
                    id.to_string(),
                    i64::from(used.previous_counter),
                    i64::from(used.counter),
                    used.backup_eligible,
                    used.backup_state,
                    to_millis(used.at),
                ])?;
            Ok(changed == 1)
        })
        .await
    }
}

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn user_by_identity(
        &self,
        provider: AuthProvider,
        account_id: &str,
    ) -> Result<Option<User>, StoreError> {
        let account_id = account_id.to_owned();
        self.run(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE id = \
                 (SELECT user_id FROM identities WHERE provider = ?1 AND provider_account_id = ?2)"
            ))?
            .query_row(params![provider.as_str(), account_id], user_from_row)
            .optional()
        })
        .await
    }

    async fn create_user_with_identity(
        &self,
        user: NewUser,
        provider: AuthProvider,
        account_id: &str,
    ) -> Result<User, StoreError> {
        let account_id = account_id.to_owned();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let at = to_millis(user.created_at);
            let mut created = insert_user(&tx, user)?;
            insert_identity(&tx, &created.id.to_string(), provider, &account_id, at)?;
            tx.commit()?;
            created.linked = vec![provider];
            Ok(created)
        })
        .await
    }

    async fn link_identity(
        &self,
        user: UserId,
        provider: AuthProvider,
        account_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let account_id = account_id.to_owned();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let user = user.to_string();
            let exists = tx
                .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
                .exists([&user])?;
            if !exists {
                return Ok(false);
            }
            insert_identity(&tx, &user, provider, &account_id, to_millis(now))?;
            tx.execute(
                "UPDATE users SET updated_at = ?2 WHERE id = ?1",
                params![user, to_millis(now)],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn unlink_identity(
        &self,
        user: UserId,
        provider: AuthProvider,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| {
            let user = user.to_string();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx
                .prepare_cached("DELETE FROM identities WHERE user_id = ?1 AND provider = ?2")?
                .execute(params![user, provider.as_str()])?;
            // A sign-in with that identity still in flight starts no session.
            if n == 1 {
                tx.prepare_cached(
                    "UPDATE users SET credential_version = credential_version + 1 WHERE id = ?1",
                )?
                .execute([&user])?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn put_token(
        &self,
        kind: TokenKind,
        hash: &str,
        user: Option<UserId>,
        data: &str,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (kind, hash, data) = (kind.as_str(), hash.to_owned(), data.to_owned());
        self.run(move |conn| {
            let expires = to_millis(expires_at);
            conn.prepare_cached(
                "INSERT INTO tokens (kind, hash, user_id, data, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![kind, hash, user.map(|u| u.to_string()), data, expires])?;
            // Spent or expired rows are dead weight; sweep some as new ones arrive.
            conn.prepare_cached(
                "DELETE FROM tokens WHERE rowid IN \
                 (SELECT rowid FROM tokens WHERE expires_at < ?1 LIMIT 100)",
            )?
            .execute([to_millis(crate::clock::now())])?;
            Ok(())
        })
        .await
    }

    async fn peek_token(
        &self,
        kind: TokenKind,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let (kind, hash, now) = (kind.as_str(), hash.to_owned(), to_millis(now));
        self.run(move |conn| {
            conn.prepare_cached(
                "SELECT user_id, data, expires_at FROM tokens WHERE kind = ?1 AND hash = ?2 AND expires_at > ?3",
            )?
            .query_row(params![kind, hash, now], |row| {
                let user: Option<String> = row.get(0)?;
                Ok(TokenRecord {
                    user_id: user.and_then(|u| u.parse().ok()),
                    data: row.get(1)?,
                    expires_at: from_millis(row.get(2)?),
                })
            })
            .optional()
        })
        .await
    }

    async fn take_token(
        &self,
        kind: TokenKind,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let (kind, hash) = (kind.as_str(), hash.to_owned());
        self.run(move |conn| {
            let row = conn
                .prepare_cached(
                    "DELETE FROM tokens WHERE kind = ?1 AND hash = ?2 \
                     RETURNING user_id, data, expires_at",
                )?
                .query_row(params![kind, hash], |row| {
                    let user: Option<String> = row.get(0)?;
                    Ok((user, row.get::<_, String>(1)?, row.get::<_, i64>(2)?))
                })
                .optional()?;
            Ok(row.and_then(|(user, data, expires)| {
                let expires_at = from_millis(expires);
                (expires_at > now).then(|| TokenRecord {
                    user_id: user.and_then(|u| u.parse().ok()),
                    data,
                    expires_at,
                })
            }))
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        // A write lock proves that requests which write can proceed too.
        self.run(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.query_row("SELECT 1", [], |_| Ok(()))?;
            tx.rollback()
        })
        .await
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[tokio::test]
    async fn the_database_and_its_wal_and_shm_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        // A permissive umask, as a service manager may leave it: the mode must not depend on it.
        let old = unsafe { libc::umask(0o022) };
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("authvault.db");
        let store = SqliteStore::open(&path, Duration::from_secs(5))
            .await
            .expect("store opens");
        // A write, so that the -wal and -shm files exist.
        store
            .reserve_event(
                "k",
                crate::store::EventSlot {
                    id: Uuid::new_v4(),
                    at: crate::clock::now(),
                    since: crate::clock::now() - time::Duration::minutes(1),
                    max: 5,
                    expires_at: crate::clock::now() + time::Duration::minutes(1),
                },
            )
            .await
            .expect("write");
        unsafe { libc::umask(old) };
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("authvault.db{suffix}"));
            let mode = std::fs::metadata(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "{} has mode {:o}",
                file.display(),
                mode
            );
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn files_an_older_version_left_readable_by_others_are_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("authvault.db");
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("authvault.db{suffix}"));
            std::fs::write(&file, b"").expect("write");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        // Empty -wal and -shm files are what SQLite finds beside a database it opens anew.
        let _store = SqliteStore::open(&path, Duration::from_secs(5))
            .await
            .expect("store opens");
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("authvault.db{suffix}"));
            let mode = std::fs::metadata(&file)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "{} has mode {:o}",
                file.display(),
                mode
            );
        }
    }
}
