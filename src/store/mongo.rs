//! The MongoDB store: `users` as in the seed design, plus `sessions`, `accounts` and
//! `rate_events`, with TTL indexes that only clean up (every window is computed from stored
//! timestamps). Writes a user is told about are journaled.

use std::time::Duration;

use anyhow::{anyhow, Context};
use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::{
    bson::{doc, spec::BinarySubtype, Binary, Bson, DateTime, Document},
    error::{ErrorKind, WriteFailure},
    options::{
        Acknowledgment, ClientOptions, DatabaseOptions, IndexOptions, ReturnDocument, WriteConcern,
    },
    Client, ClientSession, Collection, Database, IndexModel,
};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    CredentialChange, EventSlot, EventWindow, IdentityStore, KeyChange, KeyStore, NewUser,
    ProfileUpdate, RateLimitStore, RefreshState, Reserved, SessionRecord, SessionStore, Store,
    StoreError, StoredKey, TokenKind, TokenRecord, TokenStore, UserStore, MAX_LIVE_SESSIONS,
};
use crate::{
    clock::{from_millis, to_millis},
    domain::{Amr, AuthProvider, Email, KeyProvider, SealedKey, User, UserId, UserName},
};

const DEFAULT_DATABASE: &str = "authvault";

/// MongoDB-backed store.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    timeout: Duration,
}

fn bdt(t: OffsetDateTime) -> DateTime {
    DateTime::from_millis(to_millis(t))
}

fn odt(t: DateTime) -> OffsetDateTime {
    from_millis(t.timestamp_millis())
}

fn map_error(e: mongodb::error::Error) -> StoreError {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000 => StoreError::Conflict,
        ErrorKind::Command(c) if c.code == 11000 => StoreError::Conflict,
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. } => StoreError::Unavailable(e.into()),
        _ => StoreError::Other(e.into()),
    }
}

impl MongoStore {
    /// Connects, picks the URL's database (default `authvault`) and creates the indexes.
    pub async fn connect(url: &SecretString, timeout: Duration) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(url.expose_secret())
            .await
            .map_err(|e| StoreError::Other(anyhow!("invalid MongoDB URL: {}", e.kind)))?;
        options.app_name = Some("authvault".into());
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        let name = options
            .default_database
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE.into());
        let client = Client::with_options(options).map_err(map_error)?;
        Self::with_database(&client, &name, timeout).await
    }

    /// Uses database `name` of an existing client (tests give each run its own).
    pub async fn with_database(
        client: &Client,
        name: &str,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        // Journaled: an acknowledged write survives a crash of the database process.
        let concern = WriteConcern::builder()
            .w(Acknowledgment::Nodes(1))
            .journal(true)
            .build();
        let db = client.database_with_options(
            name,
            DatabaseOptions::builder().write_concern(concern).build(),
        );
        let store = Self { db, timeout };
        store.create_indexes().await?;
        Ok(store)
    }

    async fn create_indexes(&self) -> Result<(), StoreError> {
        let unique = || IndexOptions::builder().unique(true).build();
        let ttl = || {
            IndexOptions::builder()
                .expire_after(Duration::from_secs(0))
                .build()
        };
        let index = |keys: Document, options: Option<IndexOptions>| {
            IndexModel::builder().keys(keys).options(options).build()
        };
        let plan: [(&str, Vec<IndexModel>); 5] = [
            (
                "users",
                vec![
                    index(doc! {"email": 1}, Some(unique())),
                    index(doc! {"createdAt": -1}, None),
                ],
            ),
            (
                "accounts",
                vec![
                    index(doc! {"provider": 1, "providerAccountId": 1}, Some(unique())),
                    index(doc! {"userId": 1, "provider": 1}, Some(unique())),
                ],
            ),
            (
                "tokens",
                vec![
                    index(doc! {"userId": 1}, None),
                    index(doc! {"expiresAt": 1}, Some(ttl())),
                ],
            ),
            (
                "sessions",
                vec![
                    index(doc! {"userId": 1}, None),
                    index(doc! {"expiresAt": 1}, Some(ttl())),
                    index(doc! {"refreshHash": 1}, None),
                    index(doc! {"previousHash": 1}, None),
                ],
            ),
            (
                "rate_windows",
                vec![index(doc! {"expiresAt": 1}, Some(ttl()))],
            ),
        ];
        for (collection, models) in plan {
            self.bounded(
                self.db
                    .collection::<Document>(collection)
                    .create_indexes(models),
            )
            .await?;
        }
        Ok(())
    }

    fn users(&self) -> Collection<Document> {
        self.db.collection("users")
    }

    fn sessions(&self) -> Collection<Document> {
        self.db.collection("sessions")
    }

    fn accounts(&self) -> Collection<Document> {
        self.db.collection("accounts")
    }

    fn tokens(&self) -> Collection<Document> {
        self.db.collection("tokens")
    }

    /// One document per rate-limit key: `ev`, its newest events (at most the limit, oldest
    /// first), so that "is there room" and "record it" are one conditional update.
    fn rate_windows(&self) -> Collection<Document> {
        self.db.collection("rate_windows")
    }

    /// Runs `work` in a transaction (journaled, like every write a user is told about), retried by
    /// the driver on transient errors, within the store timeout.
    async fn transaction<R>(
        &self,
        work: impl for<'s> AsyncFnMut(&'s mut ClientSession) -> mongodb::error::Result<R>,
    ) -> Result<R, StoreError> {
        let mut session = self.bounded(self.db.client().start_session()).await?;
        let concern = WriteConcern::builder()
            .w(Acknowledgment::Majority)
            .journal(true)
            .build();
        self.bounded(
            session
                .start_transaction()
                .write_concern(concern)
                .and_run2(work),
        )
        .await
    }

    /// Awaits one driver call within the store timeout.
    async fn bounded<T>(
        &self,
        op: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op.into_future()).await {
            Ok(result) => result.map_err(map_error),
            Err(_) => Err(StoreError::Unavailable(anyhow!(
                "MongoDB did not answer within {:?}",
                self.timeout
            ))),
        }
    }
}

fn user_from_doc(d: &Document) -> Result<User, StoreError> {
    let inner = || -> anyhow::Result<User> {
        let id: UserId = d.get_str("_id")?.parse().context("user _id")?;
        // One rule for stored addresses on both backends (they were parsed when written).
        let email = Email::from_stored(d.get_str("email")?.to_owned())
            .map_err(|_| anyhow!("stored email"))?;
        let name = UserName::parse(d.get_str("name")?).map_err(|_| anyhow!("stored name"))?;
        let image = match d.get("image") {
            Some(Bson::String(s)) => Some(s.clone()),
            _ => None,
        };
        let password_hash = match d.get("password") {
            Some(Bson::String(s)) => Some(s.clone()),
            _ => None,
        };
        let mut linked: Vec<AuthProvider> = match d.get("providers") {
            Some(Bson::Array(items)) => items
                .iter()
                .filter_map(Bson::as_str)
                .filter_map(AuthProvider::parse)
                .collect(),
            _ => Vec::new(),
        };
        linked.sort();
        linked.dedup();
        let email_verified = match d.get("emailVerified") {
            Some(Bson::DateTime(t)) => Some(odt(*t)),
            _ => None,
        };
        let credential_version = cred_version(d);
        Ok(User {
            id,
            name,
            email,
            image,
            password_hash,
            linked,
            email_verified,
            credential_version,
            created_at: odt(*d.get_datetime("createdAt")?),
            updated_at: odt(*d.get_datetime("updatedAt")?),
        })
    };
    inner().map_err(|e| StoreError::Other(e.context("reading a user document")))
}

/// A user document's credential version (documents written before it existed have none: 0).
fn cred_version(d: &Document) -> u64 {
    match d.get("credVersion") {
        Some(Bson::Int64(v)) => *v as u64,
        Some(Bson::Int32(v)) => *v as u64,
        _ => 0,
    }
}

/// A filter on the user document `id` at credential version `version`.
fn at_version(id: &str, version: u64) -> Document {
    if version == 0 {
        doc! {"_id": id, "$or": [{"credVersion": 0i64}, {"credVersion": {"$exists": false}}]}
    } else {
        doc! {"_id": id, "credVersion": version as i64}
    }
}

// A session lives in two places. Its entry `sessions.<id>` in the user's document is the truth:
// the access-token check of every request reads the user by `_id` once and finds it there, and
// ending a session removes the entry first. The `sessions` collection keeps each session's
// refresh-token state, found by hash; a record without an entry belongs to an ended session.

/// The `sessions.<id>` path of a session's entry in its user's document.
fn entry_path(id: Uuid) -> String {
    format!("sessions.{}", id.hyphenated())
}

/// A session's entry in its user's document.
fn session_entry(s: &SessionRecord) -> Document {
    doc! {
        "createdAt": bdt(s.created_at),
        "lastUsedAt": bdt(s.last_used_at),
        "expiresAt": bdt(s.expires_at),
        "authTime": bdt(s.auth_time),
        "amr": s.amr.to_stored(),
        "userAgent": optional(s.user_agent.as_deref()),
        "ip": optional(s.ip.as_deref()),
    }
}

fn session_from_entry(user: UserId, id: Uuid, e: &Document) -> Result<SessionRecord, StoreError> {
    let inner = || -> anyhow::Result<SessionRecord> {
        let text = |key: &str| match e.get(key) {
            Some(Bson::String(s)) => Some(s.clone()),
            _ => None,
        };
        Ok(SessionRecord {
            id,
            user_id: user,
            created_at: odt(*e.get_datetime("createdAt")?),
            last_used_at: odt(*e.get_datetime("lastUsedAt")?),
            expires_at: odt(*e.get_datetime("expiresAt")?),
            auth_time: odt(*e.get_datetime("authTime")?),
            // Absent in entries written before it existed.
            amr: Amr::from_stored(e.get_str("amr").unwrap_or_default()),
            user_agent: text("userAgent"),
            ip: text("ip"),
        })
    };
    inner().map_err(|e| StoreError::Other(e.context("reading a session entry")))
}

/// The session entries of a user document, by id (entries whose key is no id are skipped).
fn session_entries(user_doc: &Document) -> impl Iterator<Item = (Uuid, &Document)> {
    user_doc
        .get_document("sessions")
        .into_iter()
        .flat_map(|map| map.iter())
        .filter_map(|(key, value)| Some((key.parse().ok()?, value.as_document()?)))
}

/// The live session `id` of a user document.
fn live_session_in(
    user_doc: &Document,
    user: UserId,
    id: Uuid,
    now: OffsetDateTime,
) -> Result<Option<SessionRecord>, StoreError> {
    let mut key = [0u8; 36];
    let key = id.hyphenated().encode_lower(&mut key);
    let entry = match user_doc
        .get_document("sessions")
        .ok()
        .and_then(|m| m.get(key))
    {
        Some(Bson::Document(entry)) => entry,
        _ => return Ok(None),
    };
    let session = session_from_entry(user, id, entry)?;
    Ok((session.expires_at > now).then_some(session))
}

/// The ids of the entries of a user document that end as a session starts at `now`: those that
/// expired, and the oldest live ones past the cap (one place is kept for the new session).
fn ended_entries(user_doc: &Document, now: OffsetDateTime) -> Vec<Uuid> {
    let mut ended = Vec::new();
    let mut live = Vec::new();
    for (id, e) in session_entries(user_doc) {
        match (e.get_datetime("expiresAt"), e.get_datetime("createdAt")) {
            (Ok(expires), Ok(created)) if odt(*expires) > now => live.push((odt(*created), id)),
            _ => ended.push(id),
        }
    }
    if live.len() >= MAX_LIVE_SESSIONS {
        // Newest first, as SQLite orders them (creation, then id, both descending).
        live.sort_by(|a, b| b.cmp(a));
        ended.extend(live.drain(MAX_LIVE_SESSIONS - 1..).map(|(_, id)| id));
    }
    ended
}

/// An update that removes the entries of these sessions.
fn unset_entries(ids: impl IntoIterator<Item = Uuid>) -> Document {
    let paths: Document = ids
        .into_iter()
        .map(|id| (entry_path(id), Bson::String(String::new())))
        .collect();
    doc! {"$unset": paths}
}

fn new_user_doc(user: &NewUser, provider: Option<AuthProvider>) -> Document {
    let at = bdt(user.created_at);
    let providers: Vec<&str> = provider.iter().map(|p| p.as_str()).collect();
    doc! {
        "_id": user.id.to_string(),
        "email": user.email.as_str(),
        "name": user.name.as_str(),
        "image": optional(user.image.as_deref()),
        "password": optional(user.password_hash.as_deref()),
        "providers": providers,
        "emailVerified": Bson::Null,
        "credVersion": 0i64,
        "createdAt": at,
        "updatedAt": at,
    }
}

fn optional(value: Option<&str>) -> Bson {
    value.map_or(Bson::Null, |v| Bson::String(v.to_owned()))
}

#[async_trait]
impl UserStore for MongoStore {
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        self.bounded(self.users().insert_one(new_user_doc(&user, None)))
            .await?;
        Ok(user.into_created(None))
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let found = self
            .bounded(self.users().find_one(doc! {"_id": id.to_string()}))
            .await?;
        found.as_ref().map(user_from_doc).transpose()
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let found = self
            .bounded(self.users().find_one(doc! {"email": email.as_str()}))
            .await?;
        found.as_ref().map(user_from_doc).transpose()
    }

    async fn update_profile(
        &self,
        id: UserId,
        update: ProfileUpdate,
        now: OffsetDateTime,
    ) -> Result<Option<User>, StoreError> {
        let mut set = doc! {"updatedAt": bdt(now)};
        if let Some(name) = &update.name {
            set.insert("name", name.as_str());
        }
        if let Some(image) = &update.image {
            set.insert("image", optional(image.as_deref()));
        }
        let found = self
            .bounded(
                self.users()
                    .find_one_and_update(doc! {"_id": id.to_string()}, doc! {"$set": set})
                    .return_document(ReturnDocument::After),
            )
            .await?;
        match found {
            Some(d) => user_from_doc(&d).map(Some),
            // The driver can answer None although the write happened: read it back.
            None => self.user_by_id(id).await,
        }
    }

    async fn change_password(
        &self,
        id: UserId,
        change: CredentialChange<'_>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let uid = id.to_string();
        let keep = change.keep;
        // One update of the user document changes the hash, moves the version and ends the
        // sessions (their entries), so a session started meanwhile either went in before it and
        // is ended by it, or comes after it and is refused for its old version. It is made at
        // the version read (or the one expected), so a concurrent change makes it read again
        // (or, when a version was expected, refuses).
        for _ in 0..5 {
            let Some(user_doc) = self
                .bounded(
                    self.users()
                        .find_one(doc! {"_id": &uid})
                        .projection(doc! {"sessions": 1, "credVersion": 1}),
                )
                .await?
            else {
                return Ok(false);
            };
            let version = cred_version(&user_doc);
            if change.expected_version.is_some_and(|v| v != version) {
                return Ok(false);
            }
            let ended: Vec<Uuid> = session_entries(&user_doc)
                .map(|(sid, _)| sid)
                .filter(|sid| Some(*sid) != keep)
                .collect();
            let kept = match keep {
                Some(k) => match session_entries(&user_doc).find(|(sid, _)| *sid == k) {
                    Some((sid, entry)) => Some((sid, entry.clone())),
                    // The session that asked has ended: it changes nothing.
                    None => return Ok(false),
                },
                None => None,
            };
            let mut filter = at_version(&uid, version);
            let mut set = doc! {"password": optional(change.hash), "updatedAt": bdt(now)};
            let mut update = doc! {"$inc": {"credVersion": 1i64}};
            match kept {
                Some((sid, entry)) => {
                    filter.insert(entry_path(sid), doc! {"$exists": true});
                    set.insert("sessions", doc! {sid.hyphenated().to_string(): entry});
                }
                None => {
                    update.insert("$unset", doc! {"sessions": ""});
                }
            }
            update.insert("$set", set);
            let result = self
                .bounded(self.users().update_one(filter, update))
                .await?;
            if result.matched_count != 1 {
                if change.expected_version.is_some() {
                    return Ok(false);
                }
                continue;
            }
            let ids: Vec<String> = ended.iter().map(Uuid::to_string).collect();
            self.bounded(
                self.sessions()
                    .delete_many(doc! {"userId": &uid, "_id": {"$in": ids}}),
            )
            .await?;
            // Tokens written before they carried their kind are found by their id's prefix.
            self.bounded(self.tokens().delete_many(doc! {
                "userId": &uid,
                "$or": [
                    {"kind": TokenKind::PasswordReset.as_str()},
                    {"_id": {"$regex": format!("^{}:", TokenKind::PasswordReset.as_str())}},
                ],
            }))
            .await?;
            return Ok(true);
        }
        Err(StoreError::Unavailable(anyhow!(
            "the user's credential kept changing during a password change"
        )))
    }

    async fn rehash_password(
        &self,
        id: UserId,
        hash: &str,
        version: u64,
    ) -> Result<bool, StoreError> {
        let mut filter = at_version(&id.to_string(), version);
        filter.insert("password", doc! {"$type": "string"});
        let result = self
            .bounded(
                self.users()
                    .update_one(filter, doc! {"$set": {"password": hash}}),
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    async fn mark_email_verified(
        &self,
        id: UserId,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        // Keep the first proof: only an unset (or null) field is written.
        let result = self
            .bounded(self.users().update_one(
                doc! {"_id": &id, "emailVerified": {"$in": [Bson::Null]}},
                doc! {"$set": {"emailVerified": bdt(at), "updatedAt": bdt(at)}},
            ))
            .await?;
        if result.matched_count == 1 {
            return Ok(true);
        }
        let exists = self
            .bounded(self.users().count_documents(doc! {"_id": &id}))
            .await?;
        Ok(exists == 1)
    }

    async fn prove_email(
        &self,
        id: UserId,
        at: OffsetDateTime,
        keep: Option<(AuthProvider, &str)>,
        remove_password: bool,
    ) -> Result<Option<Vec<AuthProvider>>, StoreError> {
        let uid = id.to_string();
        let Some(user_doc) = self
            .bounded(self.users().find_one(doc! {"_id": &uid}).projection(
                doc! {"emailVerified": 1, "sessions": 1, "providers": 1, "password": 1},
            ))
            .await?
        else {
            return Ok(None);
        };
        if matches!(user_doc.get("emailVerified"), Some(Bson::DateTime(_))) {
            return Ok(None);
        }
        // What goes: the identities the user document lists, and those the accounts collection
        // holds (one identity per provider per user), but the one that proves the address.
        let keep_provider = keep.map(|(p, _)| p);
        let mut removed: Vec<AuthProvider> = match user_doc.get("providers") {
            Some(Bson::Array(items)) => items
                .iter()
                .filter_map(Bson::as_str)
                .filter_map(AuthProvider::parse)
                .collect(),
            _ => Vec::new(),
        };
        let mut accounts = self
            .bounded(self.accounts().find(doc! {"userId": &uid}))
            .await?;
        while let Some(account) = self.bounded(accounts.try_next()).await? {
            if let Some(provider) = account
                .get_str("provider")
                .ok()
                .and_then(AuthProvider::parse)
            {
                removed.push(provider);
            }
        }
        removed.retain(|p| Some(*p) != keep_provider);
        removed.sort();
        removed.dedup();
        let names: Vec<&str> = removed.iter().map(|p| p.as_str()).collect();
        // The identities first, the user document last: a crash half-way leaves the address
        // unproven and the document still listing them, so the next proof does it all again.
        if !removed.is_empty() {
            self.bounded(
                self.accounts()
                    .delete_many(doc! {"userId": &uid, "provider": {"$in": names.clone()}}),
            )
            .await?;
        }
        if remove_password && matches!(user_doc.get("password"), Some(Bson::String(_))) {
            removed.push(AuthProvider::Credentials);
            removed.sort();
        }
        let mut set = doc! {"emailVerified": bdt(at), "updatedAt": bdt(at)};
        let mut update = Document::new();
        if !removed.is_empty() {
            if removed.contains(&AuthProvider::Credentials) {
                set.insert("password", Bson::Null);
            }
            update.insert("$pull", doc! {"providers": {"$in": names}});
            update.insert("$inc", doc! {"credVersion": 1i64});
            update.insert("$unset", doc! {"sessions": ""});
        }
        update.insert("$set", set);
        // Only the first proof: an address proven meanwhile is left as it is.
        let result = self
            .bounded(self.users().update_one(
                doc! {"_id": &uid, "emailVerified": {"$in": [Bson::Null]}},
                update,
            ))
            .await?;
        if result.matched_count != 1 {
            return Ok(None);
        }
        if !removed.is_empty() {
            let ended: Vec<String> = session_entries(&user_doc)
                .map(|(sid, _)| sid.to_string())
                .collect();
            self.bounded(
                self.sessions()
                    .delete_many(doc! {"userId": &uid, "_id": {"$in": ended}}),
            )
            .await?;
        }
        Ok(Some(removed))
    }

    async fn delete_user(
        &self,
        id: UserId,
        expected_version: Option<u64>,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        // The user (with their keys and session entries), their session records, identities
        // and tokens, in one transaction; with an expected version nothing goes unless it holds.
        let filter = match expected_version {
            Some(version) => at_version(&id, version),
            None => doc! {"_id": &id},
        };
        let (users, sessions, accounts, tokens) = (
            self.users(),
            self.sessions(),
            self.accounts(),
            self.tokens(),
        );
        self.transaction(async move |session| {
            let deleted = users
                .delete_one(filter.clone())
                .session(&mut *session)
                .await?
                .deleted_count;
            if deleted == 0 && expected_version.is_some() {
                return Ok(false);
            }
            for collection in [&sessions, &accounts, &tokens] {
                collection
                    .delete_many(doc! {"userId": &id})
                    .session(&mut *session)
                    .await?;
            }
            Ok(deleted == 1)
        })
        .await
    }
}

impl MongoStore {
    async fn insert_session(
        &self,
        s: &SessionRecord,
        refresh_hash: Option<&str>,
        credential_version: Option<u64>,
    ) -> Result<(), StoreError> {
        let id = s.id.to_string();
        let user = s.user_id.to_string();
        let mut document = session_entry(s);
        document.insert("_id", &id);
        document.insert("userId", &user);
        document.insert("refreshHash", optional(refresh_hash));
        // The record first (a duplicate id is refused here), the entry that makes it live last.
        self.bounded(self.sessions().insert_one(document)).await?;
        let found = self
            .bounded(
                self.users()
                    .find_one(doc! {"_id": &user})
                    .projection(doc! {"sessions": 1}),
            )
            .await?;
        let matched = match found {
            Some(user_doc) => {
                // Expired entries are dead weight: sweep them as new ones arrive; past the cap,
                // the oldest sessions end too.
                let ended = ended_entries(&user_doc, s.created_at);
                let mut update = unset_entries(ended.iter().copied());
                if update.get_document("$unset").is_ok_and(|u| u.is_empty()) {
                    update.clear();
                }
                update.insert("$set", doc! {entry_path(s.id): session_entry(s)});
                // The entry goes in only at the credential version the sign-in checked.
                let filter = match credential_version {
                    Some(version) => at_version(&user, version),
                    None => doc! {"_id": &user},
                };
                let result = self
                    .bounded(self.users().update_one(filter, update))
                    .await?;
                if !ended.is_empty() {
                    let ids: Vec<String> = ended.iter().map(Uuid::to_string).collect();
                    self.bounded(self.sessions().delete_many(doc! {"_id": {"$in": ids}}))
                        .await?;
                }
                result.matched_count == 1
            }
            None => false,
        };
        if !matched {
            // The user is gone (deleted while signing in), or their credential changed: refuse.
            self.bounded(self.sessions().delete_one(doc! {"_id": &id}))
                .await?;
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    /// The user document, with only its session entries when `entries_only`.
    async fn user_doc(
        &self,
        user: UserId,
        entries_only: bool,
    ) -> Result<Option<Document>, StoreError> {
        let users = self.users();
        let find = users.find_one(doc! {"_id": user.to_string()});
        if entries_only {
            self.bounded(find.projection(doc! {"sessions": 1})).await
        } else {
            self.bounded(find).await
        }
    }
}

#[async_trait]
impl SessionStore for MongoStore {
    async fn create_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        self.insert_session(s, None, None).await
    }

    async fn create_session_with_refresh(
        &self,
        session: &SessionRecord,
        refresh_hash: &str,
        credential_version: u64,
    ) -> Result<(), StoreError> {
        self.insert_session(session, Some(refresh_hash), Some(credential_version))
            .await
    }

    async fn session_by_refresh(
        &self,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(SessionRecord, RefreshState)>, StoreError> {
        let filter = doc! {
            "$or": [{"refreshHash": hash}, {"previousHash": hash}],
            "expiresAt": {"$gt": bdt(now)},
        };
        let Some(d) = self.bounded(self.sessions().find_one(filter)).await? else {
            return Ok(None);
        };
        let text = |key: &str| d.get_str(key).ok().map(str::to_owned);
        let successor = d.get_document("successor").ok().and_then(|s| {
            Some(SealedKey {
                key_id: s.get_str("keyId").ok()?.to_owned(),
                nonce: s.get_binary_generic("nonce").ok()?.clone(),
                ciphertext: s.get_binary_generic("ciphertext").ok()?.clone(),
            })
        });
        let state = RefreshState {
            hash: text("refreshHash"),
            previous_hash: text("previousHash"),
            rotated_at: d.get_datetime("rotatedAt").ok().map(|t| odt(*t)),
            successor,
        };
        // Only a session with a live entry is refreshed; the entry has its current details.
        let (Some(user), Some(id)) = (
            d.get_str("userId").ok().and_then(|u| u.parse().ok()),
            d.get_str("_id").ok().and_then(|i| i.parse().ok()),
        ) else {
            return Err(StoreError::Other(anyhow!(
                "a session document has a bad id"
            )));
        };
        Ok(self.session(user, id, now).await?.map(|s| (s, state)))
    }

    async fn rotate_refresh(
        &self,
        user: UserId,
        session: Uuid,
        old_hash: &str,
        new_hash: &str,
        successor: &SealedKey,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let filter =
            doc! {"_id": session.to_string(), "userId": user.to_string(), "refreshHash": old_hash};
        let update = doc! {"$set": {
            "refreshHash": new_hash,
            "previousHash": old_hash,
            "rotatedAt": bdt(now),
            "lastUsedAt": bdt(now),
            "successor": sealed_doc(successor),
        }};
        let result = self
            .bounded(self.sessions().update_one(filter, update))
            .await?;
        if result.modified_count != 1 {
            return Ok(false);
        }
        let path = entry_path(session);
        let entry = self
            .bounded(self.users().update_one(
                doc! {"_id": user.to_string(), &path: {"$exists": true}},
                doc! {"$set": {format!("{path}.lastUsedAt"): bdt(now)}},
            ))
            .await?;
        // No entry: the session ended meanwhile, and the new token would be refused anyway.
        Ok(entry.matched_count == 1)
    }

    async fn user_sessions(
        &self,
        user: UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let Some(user_doc) = self.user_doc(user, true).await? else {
            return Ok(Vec::new());
        };
        let mut live = Vec::new();
        for (id, entry) in session_entries(&user_doc) {
            let session = session_from_entry(user, id, entry)?;
            if session.expires_at > now {
                live.push(session);
            }
        }
        live.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(live)
    }

    async fn end_user_session(&self, user: UserId, session: Uuid) -> Result<bool, StoreError> {
        let (user, path) = (user.to_string(), entry_path(session));
        // The entry first: from then on the session's tokens are refused.
        let result = self
            .bounded(self.users().update_one(
                doc! {"_id": &user, &path: {"$exists": true}},
                doc! {"$unset": {&path: ""}},
            ))
            .await?;
        self.bounded(
            self.sessions()
                .delete_one(doc! {"_id": session.to_string(), "userId": &user}),
        )
        .await?;
        Ok(result.matched_count == 1)
    }

    async fn session(
        &self,
        user: UserId,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<SessionRecord>, StoreError> {
        // One find by `_id`; the expiry is judged here (nothing sweeps entries on time).
        match self.user_doc(user, false).await? {
            Some(user_doc) => live_session_in(&user_doc, user, id, now),
            None => Ok(None),
        }
    }

    async fn session_with_user(
        &self,
        user: UserId,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<(SessionRecord, User)>, StoreError> {
        let Some(user_doc) = self.user_doc(user, false).await? else {
            return Ok(None);
        };
        match live_session_in(&user_doc, user, id, now)? {
            Some(session) => Ok(Some((session, user_from_doc(&user_doc)?))),
            None => Ok(None),
        }
    }

    async fn end_session(&self, id: Uuid) -> Result<bool, StoreError> {
        let record = self
            .bounded(
                self.sessions()
                    .find_one(doc! {"_id": id.to_string()})
                    .projection(doc! {"userId": 1}),
            )
            .await?;
        let Some(user) = record
            .as_ref()
            .and_then(|d| d.get_str("userId").ok())
            .and_then(|u| u.parse().ok())
        else {
            return Ok(false);
        };
        self.end_user_session(user, id).await
    }

    async fn end_user_sessions(
        &self,
        user: UserId,
        except: Option<Uuid>,
    ) -> Result<u64, StoreError> {
        let uid = user.to_string();
        let ended: Vec<Uuid> = match self.user_doc(user, true).await? {
            Some(user_doc) => session_entries(&user_doc)
                .map(|(id, _)| id)
                .filter(|id| Some(*id) != except)
                .collect(),
            None => Vec::new(),
        };
        // Without an exception the whole map goes, so that a session started meanwhile (after
        // the read above) is ended too, as one DELETE ends it on SQLite.
        let update = match except {
            None => doc! {"$unset": {"sessions": ""}},
            Some(_) => unset_entries(ended.iter().copied()),
        };
        if !ended.is_empty() || except.is_none() {
            self.bounded(self.users().update_one(doc! {"_id": &uid}, update))
                .await?;
        }
        // Only the records of the entries removed: a session starting meanwhile keeps its record
        // (a record whose entry went is dead, and its TTL index removes it in time).
        let ids: Vec<String> = ended.iter().map(Uuid::to_string).collect();
        self.bounded(
            self.sessions()
                .delete_many(doc! {"userId": &uid, "_id": {"$in": ids}}),
        )
        .await?;
        Ok(ended.len() as u64)
    }
}

#[async_trait]
impl RateLimitStore for MongoStore {
    async fn reserve_event(&self, key: &str, slot: EventSlot) -> Result<Reserved, StoreError> {
        if slot.max == 0 {
            return Ok(Reserved::Full { oldest: None });
        }
        let entry = doc! {"t": bdt(slot.at), "id": slot.id.to_string()};
        // Room: fewer than `max` events kept, or the oldest of the `max` newest is out of the
        // window. The push keeps the `max` newest, so the check and the write are one update.
        let room = doc! {
            "_id": key,
            "$or": [
                {format!("ev.{}", slot.max - 1): {"$exists": false}},
                {"ev.0.t": {"$lte": bdt(slot.since)}},
            ],
        };
        let push = doc! {
            "$push": {"ev": {"$each": [entry.clone()], "$slice": -i64::from(slot.max)}},
            "$set": {"expiresAt": bdt(slot.expires_at)},
        };
        let windows = self.rate_windows();
        if self
            .bounded(windows.update_one(room.clone(), push.clone()))
            .await?
            .matched_count
            == 1
        {
            return Ok(Reserved::Yes);
        }
        let first = doc! {"_id": key, "ev": [entry], "expiresAt": bdt(slot.expires_at)};
        match self.bounded(windows.insert_one(first)).await {
            Ok(_) => return Ok(Reserved::Yes),
            // The key has a document: full, or made by a concurrent caller a moment ago.
            Err(StoreError::Conflict) => {}
            Err(e) => return Err(e),
        }
        if self
            .bounded(windows.update_one(room, push))
            .await?
            .matched_count
            == 1
        {
            return Ok(Reserved::Yes);
        }
        let window = self.count_events(key, slot.since).await?;
        Ok(Reserved::Full {
            oldest: window.oldest,
        })
    }

    async fn release_event(&self, key: &str, id: Uuid) -> Result<(), StoreError> {
        self.bounded(self.rate_windows().update_one(
            doc! {"_id": key},
            doc! {"$pull": {"ev": {"id": id.to_string()}}},
        ))
        .await?;
        Ok(())
    }

    async fn count_events(
        &self,
        key: &str,
        since: OffsetDateTime,
    ) -> Result<EventWindow, StoreError> {
        let Some(d) = self
            .bounded(self.rate_windows().find_one(doc! {"_id": key}))
            .await?
        else {
            return Ok(EventWindow::default());
        };
        let mut window = EventWindow::default();
        for t in d
            .get_array("ev")
            .into_iter()
            .flatten()
            .filter_map(Bson::as_document)
            .filter_map(|e| e.get_datetime("t").ok())
            .map(|t| odt(*t))
            .filter(|t| *t > since)
        {
            window.count += 1;
            window.oldest = Some(window.oldest.map_or(t, |o| o.min(t)));
        }
        Ok(window)
    }

    async fn clear_events(&self, key: &str) -> Result<(), StoreError> {
        self.bounded(self.rate_windows().delete_one(doc! {"_id": key}))
            .await?;
        Ok(())
    }
}

fn binary(bytes: &[u8]) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    }
}

fn sealed_doc(sealed: &SealedKey) -> Document {
    doc! {
        "keyId": &sealed.key_id,
        "nonce": binary(&sealed.nonce),
        "ciphertext": binary(&sealed.ciphertext),
    }
}

/// The `apiKeys` sub-document of a user, in `KeyProvider::ALL` order.
fn keys_from_doc(user: &Document) -> Result<Vec<StoredKey>, StoreError> {
    let Ok(keys) = user.get_document("apiKeys") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(keys.len());
    for provider in KeyProvider::ALL {
        let Ok(entry) = keys.get_document(provider.as_str()) else {
            continue;
        };
        let read = || -> anyhow::Result<StoredKey> {
            Ok(StoredKey {
                provider,
                sealed: SealedKey {
                    key_id: entry.get_str("keyId")?.to_owned(),
                    nonce: entry.get_binary_generic("nonce")?.clone(),
                    ciphertext: entry.get_binary_generic("ciphertext")?.clone(),
                },
                updated_at: odt(*entry.get_datetime("updatedAt")?),
            })
        };
        out.push(read().map_err(|e| StoreError::Other(e.context("reading a stored key")))?);
    }
    Ok(out)
}

#[async_trait]
impl KeyStore for MongoStore {
    async fn api_keys(&self, user: UserId) -> Result<Vec<StoredKey>, StoreError> {
        let found = self
            .bounded(
                self.users()
                    .find_one(doc! {"_id": user.to_string()})
                    .projection(doc! {"apiKeys": 1}),
            )
            .await?;
        found.as_ref().map_or(Ok(Vec::new()), keys_from_doc)
    }

    async fn update_api_keys(
        &self,
        user: UserId,
        changes: &[KeyChange],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut set = Document::new();
        let mut unset = Document::new();
        for (provider, sealed) in changes {
            let path = format!("apiKeys.{}", provider.as_str());
            match sealed {
                Some(s) => {
                    let mut entry = sealed_doc(s);
                    entry.insert("updatedAt", bdt(now));
                    set.insert(path, entry);
                }
                None => {
                    unset.insert(path, "");
                }
            }
        }
        let filter = doc! {"_id": user.to_string()};
        if set.is_empty() && unset.is_empty() {
            let found = self.bounded(self.users().count_documents(filter)).await?;
            return Ok(found == 1);
        }
        let mut update = Document::new();
        if !set.is_empty() {
            update.insert("$set", set);
        }
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        let result = self
            .bounded(self.users().update_one(filter, update))
            .await?;
        Ok(result.matched_count == 1)
    }

    async fn reseal_api_key(
        &self,
        user: UserId,
        provider: KeyProvider,
        expected_nonce: &[u8],
        sealed: &SealedKey,
    ) -> Result<bool, StoreError> {
        let path = format!("apiKeys.{}", provider.as_str());
        let filter =
            doc! {"_id": user.to_string(), format!("{path}.nonce"): binary(expected_nonce)};
        let update = doc! {"$set": {
            format!("{path}.keyId"): &sealed.key_id,
            format!("{path}.nonce"): binary(&sealed.nonce),
            format!("{path}.ciphertext"): binary(&sealed.ciphertext),
        }};
        let result = self
            .bounded(self.users().update_one(filter, update))
            .await?;
        Ok(result.modified_count == 1 || result.matched_count == 1)
    }

    async fn api_keys_page(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<(UserId, Vec<StoredKey>)>, StoreError> {
        // MongoDB reads a limit of 0 as "no limit".
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut filter = doc! {"apiKeys": {"$exists": true, "$ne": {}}};
        if let Some(after) = after {
            filter.insert("_id", doc! {"$gt": after.to_string()});
        }
        let cursor = self
            .bounded(
                self.users()
                    .find(filter)
                    .projection(doc! {"apiKeys": 1})
                    .sort(doc! {"_id": 1})
                    .limit(i64::from(limit)),
            )
            .await?;
        let docs: Vec<Document> = self.bounded(cursor.try_collect()).await?;
        docs.iter()
            .map(|d| {
                let id: UserId = d
                    .get_str("_id")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| StoreError::Other(anyhow!("a user document has a bad _id")))?;
                Ok((id, keys_from_doc(d)?))
            })
            .collect()
    }

    async fn count_api_keys(&self) -> Result<u64, StoreError> {
        let cursor = self
            .bounded(
                self.users()
                    .find(doc! {"apiKeys": {"$exists": true}})
                    .projection(doc! {"apiKeys": 1}),
            )
            .await?;
        let docs: Vec<Document> = self.bounded(cursor.try_collect()).await?;
        Ok(docs
            .iter()
            .filter_map(|d| d.get_document("apiKeys").ok())
            .map(|keys| keys.len() as u64)
            .sum())
    }
}

fn account_doc(user: &str, provider: AuthProvider, account_id: &str, at: DateTime) -> Document {
    doc! {
        "provider": provider.as_str(),
        "providerAccountId": account_id,
        "userId": user,
        "createdAt": at,
    }
}

#[async_trait]
impl IdentityStore for MongoStore {
    async fn user_by_identity(
        &self,
        provider: AuthProvider,
        account_id: &str,
    ) -> Result<Option<User>, StoreError> {
        let filter = doc! {"provider": provider.as_str(), "providerAccountId": account_id};
        let Some(account) = self.bounded(self.accounts().find_one(filter)).await? else {
            return Ok(None);
        };
        let Some(user) = account.get_str("userId").ok().and_then(|u| u.parse().ok()) else {
            return Err(StoreError::Other(anyhow!(
                "an account document has a bad userId"
            )));
        };
        // An identity whose user is gone (a crash half-way through a delete) counts as unknown,
        // and so does one the user document no longer lists: an address clean-up removes it
        // from there in the same update that moves the credential version, so a sign-in that
        // read the account before the clean-up cannot start a session at the new version.
        Ok(self
            .user_by_id(user)
            .await?
            .filter(|u| u.linked.contains(&provider)))
    }

    async fn create_user_with_identity(
        &self,
        user: NewUser,
        provider: AuthProvider,
        account_id: &str,
    ) -> Result<User, StoreError> {
        let id = user.id.to_string();
        let user_doc = new_user_doc(&user, Some(provider));
        let account = account_doc(&id, provider, account_id, bdt(user.created_at));
        let (users, accounts) = (self.users(), self.accounts());
        // Both documents or neither: one transaction (a unique index refusing either aborts it).
        self.transaction(async move |session| {
            users
                .insert_one(user_doc.clone())
                .session(&mut *session)
                .await?;
            accounts
                .insert_one(account.clone())
                .session(&mut *session)
                .await?;
            Ok(())
        })
        .await?;
        Ok(user.into_created(Some(provider)))
    }

    async fn link_identity(
        &self,
        user: UserId,
        provider: AuthProvider,
        account_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let id = user.to_string();
        // The unique indexes on `accounts` decide; the user's `providers` list follows.
        self.bounded(
            self.accounts()
                .insert_one(account_doc(&id, provider, account_id, bdt(now))),
        )
        .await?;
        let update = doc! {
            "$addToSet": {"providers": provider.as_str()},
            "$set": {"updatedAt": bdt(now)},
        };
        let result = self
            .bounded(self.users().update_one(doc! {"_id": &id}, update))
            .await?;
        if result.matched_count == 0 {
            self.bounded(
                self.accounts()
                    .delete_one(doc! {"userId": &id, "provider": provider.as_str()}),
            )
            .await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn unlink_identity(
        &self,
        user: UserId,
        provider: AuthProvider,
    ) -> Result<bool, StoreError> {
        let id = user.to_string();
        let result = self
            .bounded(
                self.accounts()
                    .delete_one(doc! {"userId": &id, "provider": provider.as_str()}),
            )
            .await?;
        // A sign-in with that identity still in flight starts no session.
        self.bounded(self.users().update_one(
            doc! {"_id": &id},
            doc! {"$pull": {"providers": provider.as_str()}, "$inc": {"credVersion": 1i64}},
        ))
        .await?;
        Ok(result.deleted_count == 1)
    }
}

#[async_trait]
impl TokenStore for MongoStore {
    async fn put_token(
        &self,
        kind: TokenKind,
        hash: &str,
        user: Option<UserId>,
        data: &str,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let document = doc! {
            "_id": format!("{}:{hash}", kind.as_str()),
            "kind": kind.as_str(),
            "userId": optional(user.map(|u| u.to_string()).as_deref()),
            "data": data,
            "expiresAt": bdt(expires_at),
        };
        self.bounded(self.tokens().insert_one(document)).await?;
        Ok(())
    }

    async fn peek_token(
        &self,
        kind: TokenKind,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let filter =
            doc! {"_id": format!("{}:{hash}", kind.as_str()), "expiresAt": {"$gt": bdt(now)}};
        let Some(d) = self.bounded(self.tokens().find_one(filter)).await? else {
            return Ok(None);
        };
        Ok(Some(TokenRecord {
            user_id: d.get_str("userId").ok().and_then(|u| u.parse().ok()),
            data: d.get_str("data").unwrap_or_default().to_owned(),
            expires_at: d
                .get_datetime("expiresAt")
                .map(|t| odt(*t))
                .map_err(|e| StoreError::Other(e.into()))?,
        }))
    }

    async fn take_token(
        &self,
        kind: TokenKind,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let found = self
            .bounded(
                self.tokens()
                    .find_one_and_delete(doc! {"_id": format!("{}:{hash}", kind.as_str())}),
            )
            .await?;
        let Some(d) = found else {
            return Ok(None);
        };
        let expires_at = d
            .get_datetime("expiresAt")
            .map(|t| odt(*t))
            .map_err(|e| StoreError::Other(e.into()))?;
        if expires_at <= now {
            return Ok(None);
        }
        Ok(Some(TokenRecord {
            user_id: d.get_str("userId").ok().and_then(|u| u.parse().ok()),
            data: d.get_str("data").unwrap_or_default().to_owned(),
            expires_at,
        }))
    }
}

#[async_trait]
impl Store for MongoStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(self.db.run_command(doc! {"ping": 1})).await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "mongodb"
    }
}
