//! The MongoDB store: `users` as in the seed design, plus `sessions`, `accounts` and
//! `rate_events`, with TTL indexes that only clean up (every window is computed from stored
//! timestamps). Writes a user is told about are journaled.

use std::time::Duration;

use anyhow::anyhow;
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
    CredentialChange, EventSlot, EventWindow, IdentityStore, KeyChange, KeyStore, MfaEnable,
    MfaRecord, MfaStore, NewUser, PasskeyDeletion, PasskeyRecord, PasskeyStore, PasskeyUse,
    ProfileUpdate, RateLimitStore, RefreshState, Reserved, SessionRecord, SessionStore, Store,
    StoreError, StoredKey, TokenKind, TokenRecord, TokenStore, TotpSeal, UserStore,
};
use crate::{
    clock::{from_millis, to_millis},
    domain::{AuthProvider, Email, KeyProvider, SealedKey, User, UserId},
};

mod docs;

use docs::{
    to_bson, AccountDoc, KeyEntry, MfaDoc, PasskeyDoc, RateEvent, RateWindowDoc, SealedDoc,
    SessionDoc, SessionEntry, SessionOwner, TokenDoc, UserDoc, UserHandle, UserKeys, UserMfa,
    UserParts,
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
        let plan: [(&str, Vec<IndexModel>); 6] = [
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
                "passkeys",
                vec![
                    index(doc! {"credentialId": 1}, Some(unique())),
                    index(doc! {"userId": 1, "createdAt": 1}, None),
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

    fn users(&self) -> Collection<UserDoc> {
        self.db.collection("users")
    }

    /// The users collection, read as the parts that session and credential changes need.
    fn user_parts(&self) -> Collection<UserParts> {
        self.users().clone_with_type()
    }

    /// The users collection, read as their API keys.
    fn user_keys(&self) -> Collection<UserKeys> {
        self.users().clone_with_type()
    }

    fn sessions(&self) -> Collection<SessionDoc> {
        self.db.collection("sessions")
    }

    fn accounts(&self) -> Collection<AccountDoc> {
        self.db.collection("accounts")
    }

    fn passkeys(&self) -> Collection<PasskeyDoc> {
        self.db.collection("passkeys")
    }

    fn tokens(&self) -> Collection<TokenDoc> {
        self.db.collection("tokens")
    }

    /// One document per rate-limit key: `ev`, its newest events (at most the limit, oldest
    /// first), so that "is there room" and "record it" are one conditional update.
    fn rate_windows(&self) -> Collection<RateWindowDoc> {
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

/// An update that removes the entries of these sessions.
fn unset_entries(ids: impl IntoIterator<Item = Uuid>) -> Document {
    let paths: Document = ids
        .into_iter()
        .map(|id| (entry_path(id), Bson::String(String::new())))
        .collect();
    doc! {"$unset": paths}
}

fn optional(value: Option<&str>) -> Bson {
    value.map_or(Bson::Null, |v| Bson::String(v.to_owned()))
}

#[async_trait]
impl UserStore for MongoStore {
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        self.bounded(self.users().insert_one(UserDoc::new(&user, None)))
            .await?;
        Ok(user.into_created(None))
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let found = self
            .bounded(self.users().find_one(doc! {"_id": id.to_string()}))
            .await?;
        found.map(User::try_from).transpose()
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let found = self
            .bounded(self.users().find_one(doc! {"email": email.as_str()}))
            .await?;
        found.map(User::try_from).transpose()
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
            Some(d) => User::try_from(d).map(Some),
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
                    self.user_parts()
                        .find_one(doc! {"_id": &uid})
                        .projection(doc! {"sessions": 1, "credVersion": 1}),
                )
                .await?
            else {
                return Ok(false);
            };
            let version = user_doc.credential_version();
            if change.expected_version.is_some_and(|v| v != version) {
                return Ok(false);
            }
            let ended: Vec<Uuid> = user_doc
                .sessions
                .iter()
                .map(|(sid, _)| sid)
                .filter(|sid| Some(*sid) != keep)
                .collect();
            let kept = match keep {
                Some(k) => match user_doc.sessions.iter().find(|(sid, _)| *sid == k) {
                    Some((sid, entry)) => Some((sid, to_bson(entry)?)),
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
            .bounded(self.user_parts().find_one(doc! {"_id": &uid}).projection(
                doc! {"emailVerified": 1, "sessions": 1, "providers": 1, "password": 1},
            ))
            .await?
        else {
            return Ok(None);
        };
        if user_doc.email_verified.is_some() {
            return Ok(None);
        }
        // What goes: the identities the user document lists, and those the accounts collection
        // holds (one identity per provider per user), but the one that proves the address.
        let keep_provider = keep.map(|(p, _)| p);
        let mut removed: Vec<AuthProvider> = user_doc.providers().collect();
        let mut accounts = self
            .bounded(self.accounts().find(doc! {"userId": &uid}))
            .await?;
        while let Some(account) = self.bounded(accounts.try_next()).await? {
            if let Some(provider) = AuthProvider::parse(&account.provider) {
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
        if self
            .bounded(self.passkeys().delete_many(doc! {"userId": &uid}))
            .await?
            .deleted_count
            > 0
        {
            removed.push(AuthProvider::Passkey);
        }
        if remove_password && user_doc.password.is_some() {
            removed.push(AuthProvider::Credentials);
        }
        removed.sort();
        let mut set = doc! {"emailVerified": bdt(at), "updatedAt": bdt(at)};
        let mut update = Document::new();
        if !removed.is_empty() {
            if removed.contains(&AuthProvider::Credentials) {
                set.insert("password", Bson::Null);
            }
            if removed.contains(&AuthProvider::Passkey) {
                set.insert("passkeyCount", 0i64);
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
            let ended: Vec<String> = user_doc
                .sessions
                .iter()
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
        let users = self.users();
        // A delete reads no document, so one type serves the four other collections.
        let owned: [Collection<Document>; 4] = [
            self.sessions().clone_with_type(),
            self.accounts().clone_with_type(),
            self.passkeys().clone_with_type(),
            self.tokens().clone_with_type(),
        ];
        self.transaction(async move |session| {
            let deleted = users
                .delete_one(filter.clone())
                .session(&mut *session)
                .await?
                .deleted_count;
            if deleted == 0 && expected_version.is_some() {
                return Ok(false);
            }
            for collection in &owned {
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
        // The record first (a duplicate id is refused here), the entry that makes it live last.
        self.bounded(self.sessions().insert_one(SessionDoc::new(s, refresh_hash)))
            .await?;
        let found = self.user_parts_of(s.user_id, true).await?;
        let matched = match found {
            Some(user_doc) => {
                // Expired entries are dead weight: sweep them as new ones arrive; past the cap,
                // the oldest sessions end too.
                let ended = user_doc.sessions.ended_at(s.created_at);
                let mut update = unset_entries(ended.iter().copied());
                if update.get_document("$unset").is_ok_and(|u| u.is_empty()) {
                    update.clear();
                }
                update.insert(
                    "$set",
                    doc! {entry_path(s.id): to_bson(&SessionEntry::new(s))?},
                );
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

    /// What session changes read of the user document: only its session entries when
    /// `entries_only`, else the whole document is read.
    async fn user_parts_of(
        &self,
        user: UserId,
        entries_only: bool,
    ) -> Result<Option<UserParts>, StoreError> {
        let users = self.user_parts();
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
        let Some(record) = self.bounded(self.sessions().find_one(filter)).await? else {
            return Ok(None);
        };
        // Only a session with a live entry is refreshed; the entry has its current details.
        let (user, id) = record.ids()?;
        let state = record.refresh_state();
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
            "successor": to_bson(&SealedDoc::new(successor))?,
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
        let Some(user_doc) = self.user_parts_of(user, true).await? else {
            return Ok(Vec::new());
        };
        let mut live: Vec<SessionRecord> = user_doc
            .sessions
            .iter()
            .map(|(id, entry)| entry.record(user, id))
            .filter(|session| session.expires_at > now)
            .collect();
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
        let user_doc = self.user_parts_of(user, false).await?;
        Ok(user_doc.and_then(|d| d.sessions.live(user, id, now)))
    }

    async fn session_with_user(
        &self,
        user: UserId,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<(SessionRecord, User)>, StoreError> {
        let Some(user_doc) = self
            .bounded(self.users().find_one(doc! {"_id": user.to_string()}))
            .await?
        else {
            return Ok(None);
        };
        match user_doc.sessions.live(user, id, now) {
            Some(session) => Ok(Some((session, User::try_from(user_doc)?))),
            None => Ok(None),
        }
    }

    async fn end_session(&self, id: Uuid) -> Result<bool, StoreError> {
        let record = self
            .bounded(
                self.sessions()
                    .clone_with_type::<SessionOwner>()
                    .find_one(doc! {"_id": id.to_string()})
                    .projection(doc! {"userId": 1}),
            )
            .await?;
        let Some(user) = record.as_ref().and_then(SessionOwner::user) else {
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
        let ended: Vec<Uuid> = match self.user_parts_of(user, true).await? {
            Some(user_doc) => user_doc
                .sessions
                .iter()
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
        let entry = RateEvent {
            t: bdt(slot.at),
            id: slot.id.to_string(),
        };
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
            "$push": {"ev": {"$each": [to_bson(&entry)?], "$slice": -i64::from(slot.max)}},
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
        let first = RateWindowDoc {
            key: key.to_owned(),
            ev: vec![entry],
            expires_at: bdt(slot.expires_at),
        };
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
        let found = self
            .bounded(self.rate_windows().find_one(doc! {"_id": key}))
            .await?;
        Ok(found.map_or_else(EventWindow::default, |w| w.window(since)))
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

#[async_trait]
impl KeyStore for MongoStore {
    async fn api_keys(&self, user: UserId) -> Result<Vec<StoredKey>, StoreError> {
        let found = self
            .bounded(
                self.user_keys()
                    .find_one(doc! {"_id": user.to_string()})
                    .projection(doc! {"apiKeys": 1}),
            )
            .await?;
        found.map_or(Ok(Vec::new()), |d| d.api_keys.stored())
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
                    set.insert(path, to_bson(&KeyEntry::new(s, now))?);
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
                self.user_keys()
                    .find(filter)
                    .projection(doc! {"apiKeys": 1})
                    .sort(doc! {"_id": 1})
                    .limit(i64::from(limit)),
            )
            .await?;
        let docs: Vec<UserKeys> = self.bounded(cursor.try_collect()).await?;
        docs.into_iter()
            .map(|d| {
                let Ok(id) = d.id.parse::<UserId>() else {
                    return Err(StoreError::Other(anyhow!("a user document has a bad _id")));
                };
                Ok((id, d.api_keys.stored()?))
            })
            .collect()
    }

    async fn count_api_keys(&self) -> Result<u64, StoreError> {
        let cursor = self
            .bounded(
                self.user_keys()
                    .find(doc! {"apiKeys": {"$exists": true}})
                    .projection(doc! {"apiKeys": 1}),
            )
            .await?;
        let docs: Vec<UserKeys> = self.bounded(cursor.try_collect()).await?;
        Ok(docs.iter().map(|d| d.api_keys.len() as u64).sum())
    }
}

/// A filter on a user document with MFA on.
fn mfa_on(uid: &str) -> Document {
    doc! {"_id": uid, "mfa.secret": {"$ne": null}}
}

#[async_trait]
impl MfaStore for MongoStore {
    async fn mfa(&self, user: UserId) -> Result<Option<MfaRecord>, StoreError> {
        let found = self
            .bounded(
                self.users()
                    .clone_with_type::<UserMfa>()
                    .find_one(doc! {"_id": user.to_string()})
                    .projection(doc! {"mfa": 1}),
            )
            .await?;
        found.and_then(|d| d.mfa).map(MfaDoc::record).transpose()
    }

    async fn set_pending_totp(&self, user: UserId, sealed: &SealedKey) -> Result<bool, StoreError> {
        let result = self
            .bounded(self.users().update_one(
                doc! {"_id": user.to_string(), "mfa.secret": null},
                doc! {"$set": {"mfa.pending": to_bson(&SealedDoc::new(sealed))?}},
            ))
            .await?;
        Ok(result.matched_count == 1)
    }

    async fn enable_mfa(&self, user: UserId, enable: MfaEnable<'_>) -> Result<bool, StoreError> {
        let uid = user.to_string();
        let keep = enable.keep;
        // One update of the user document turns MFA on, moves the version and ends the other
        // sessions (their entries), as a password change does.
        for _ in 0..5 {
            let Some(user_doc) = self
                .bounded(
                    self.user_parts()
                        .find_one(doc! {"_id": &uid})
                        .projection(doc! {"sessions": 1, "credVersion": 1, "mfa": 1}),
                )
                .await?
            else {
                return Ok(false);
            };
            let mfa = user_doc.mfa.clone().unwrap_or_default();
            let pending = match mfa.pending {
                Some(p) if mfa.secret.is_none() && p.nonce.bytes == enable.pending_nonce => p,
                _ => return Ok(false),
            };
            let Some((sid, entry)) = user_doc.sessions.iter().find(|(sid, _)| *sid == keep) else {
                return Ok(false);
            };
            let ended: Vec<String> = user_doc
                .sessions
                .iter()
                .map(|(sid, _)| sid)
                .filter(|sid| *sid != keep)
                .map(|sid| sid.to_string())
                .collect();
            let mut filter = at_version(&uid, user_doc.credential_version());
            filter.insert("mfa.secret", Bson::Null);
            filter.insert("mfa.pending.nonce", binary(enable.pending_nonce));
            filter.insert(entry_path(sid), doc! {"$exists": true});
            let update = doc! {
                "$set": {
                    "mfa.secret": to_bson(&pending)?,
                    "mfa.lastStep": enable.step,
                    "mfa.recovery": enable.recovery.to_vec(),
                    "sessions": {sid.hyphenated().to_string(): to_bson(entry)?},
                },
                "$unset": {"mfa.pending": ""},
                "$inc": {"credVersion": 1i64},
            };
            let result = self
                .bounded(self.users().update_one(filter, update))
                .await?;
            if result.matched_count != 1 {
                // The document changed meanwhile: look again.
                continue;
            }
            self.bounded(
                self.sessions()
                    .delete_many(doc! {"userId": &uid, "_id": {"$in": ended}}),
            )
            .await?;
            return Ok(true);
        }
        Err(StoreError::Unavailable(anyhow!(
            "the user's document kept changing while MFA was turned on"
        )))
    }

    async fn disable_mfa(&self, user: UserId) -> Result<bool, StoreError> {
        let result = self
            .bounded(
                self.users()
                    .update_one(mfa_on(&user.to_string()), doc! {"$unset": {"mfa": ""}}),
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    async fn accept_totp_step(&self, user: UserId, step: i64) -> Result<bool, StoreError> {
        let mut filter = mfa_on(&user.to_string());
        filter.insert(
            "$or",
            vec![
                doc! {"mfa.lastStep": null},
                doc! {"mfa.lastStep": {"$lt": step}},
            ],
        );
        let result = self
            .bounded(
                self.users()
                    .update_one(filter, doc! {"$set": {"mfa.lastStep": step}}),
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    async fn spend_recovery_code(
        &self,
        user: UserId,
        hash: &str,
    ) -> Result<Option<u32>, StoreError> {
        let uid = user.to_string();
        let mut filter = mfa_on(&uid);
        filter.insert("mfa.recovery", hash);
        let result = self
            .bounded(
                self.users()
                    .update_one(filter, doc! {"$pull": {"mfa.recovery": hash}}),
            )
            .await?;
        if result.matched_count != 1 {
            return Ok(None);
        }
        Ok(Some(self.mfa(user).await?.map_or(0, |m| m.recovery_left)))
    }

    async fn replace_recovery_codes(
        &self,
        user: UserId,
        hashes: &[String],
    ) -> Result<bool, StoreError> {
        let result = self
            .bounded(self.users().update_one(
                mfa_on(&user.to_string()),
                doc! {"$set": {"mfa.recovery": hashes.to_vec()}},
            ))
            .await?;
        Ok(result.matched_count == 1)
    }

    async fn totp_page(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<(UserId, Vec<(TotpSeal, SealedKey)>)>, StoreError> {
        // MongoDB reads a limit of 0 as "no limit".
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut filter =
            doc! {"$or": [{"mfa.secret": {"$ne": null}}, {"mfa.pending": {"$ne": null}}]};
        if let Some(after) = after {
            filter.insert("_id", doc! {"$gt": after.to_string()});
        }
        let cursor = self
            .bounded(
                self.users()
                    .clone_with_type::<UserMfa>()
                    .find(filter)
                    .projection(doc! {"mfa": 1})
                    .sort(doc! {"_id": 1})
                    .limit(i64::from(limit)),
            )
            .await?;
        let docs: Vec<UserMfa> = self.bounded(cursor.try_collect()).await?;
        docs.into_iter()
            .map(|d| {
                let Ok(id) = d.id.parse::<UserId>() else {
                    return Err(StoreError::Other(anyhow!("a user document has a bad _id")));
                };
                Ok((id, d.mfa.map_or(Ok(Vec::new()), MfaDoc::seals)?))
            })
            .collect()
    }

    async fn reseal_totp(
        &self,
        user: UserId,
        which: TotpSeal,
        expected_nonce: &[u8],
        sealed: &SealedKey,
    ) -> Result<bool, StoreError> {
        let path = match which {
            TotpSeal::Confirmed => "mfa.secret",
            TotpSeal::Pending => "mfa.pending",
        };
        let filter =
            doc! {"_id": user.to_string(), format!("{path}.nonce"): binary(expected_nonce)};
        let update = doc! {"$set": {path: to_bson(&SealedDoc::new(sealed))?}};
        let result = self
            .bounded(self.users().update_one(filter, update))
            .await?;
        Ok(result.matched_count == 1)
    }

    async fn count_totp(&self) -> Result<u64, StoreError> {
        let users = self.users();
        let secrets = self
            .bounded(users.count_documents(doc! {"mfa.secret": {"$ne": null}}))
            .await?;
        let pending = self
            .bounded(users.count_documents(doc! {"mfa.pending": {"$ne": null}}))
            .await?;
        Ok(secrets + pending)
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
        let Ok(user) = account.user_id.parse() else {
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
        let user_doc = UserDoc::new(&user, Some(provider));
        let account = AccountDoc::new(&id, provider, account_id, user.created_at);
        let (users, accounts) = (self.users(), self.accounts());
        // Both documents or neither: one transaction (a unique index refusing either aborts it).
        self.transaction(async move |session| {
            users.insert_one(&user_doc).session(&mut *session).await?;
            accounts.insert_one(&account).session(&mut *session).await?;
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
                .insert_one(AccountDoc::new(&id, provider, account_id, now)),
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
impl PasskeyStore for MongoStore {
    async fn webauthn_handle(
        &self,
        user: UserId,
        candidate: [u8; 16],
    ) -> Result<Option<[u8; 16]>, StoreError> {
        let id = user.to_string();
        // Set once: a concurrent first registration keeps the handle stored first.
        self.bounded(self.users().update_one(
            doc! {"_id": &id, "webauthnHandle": {"$in": [Bson::Null]}},
            doc! {"$set": {"webauthnHandle": binary(&candidate)}},
        ))
        .await?;
        let found = self
            .bounded(
                self.users()
                    .clone_with_type::<UserHandle>()
                    .find_one(doc! {"_id": &id})
                    .projection(doc! {"webauthnHandle": 1}),
            )
            .await?;
        Ok(found.map(|u| u.handle().unwrap_or(candidate)))
    }

    async fn add_passkey(&self, passkey: &PasskeyRecord) -> Result<bool, StoreError> {
        let (users, passkeys) = (self.users(), self.passkeys());
        let uid = passkey.user_id.to_string();
        let document = PasskeyDoc::new(passkey);
        // The count moves with the insert; a taken credential ID aborts both.
        self.transaction(async move |session| {
            let counted = users
                .update_one(doc! {"_id": &uid}, doc! {"$inc": {"passkeyCount": 1i64}})
                .session(&mut *session)
                .await?;
            if counted.matched_count == 0 {
                return Ok(false);
            }
            passkeys
                .insert_one(document.clone())
                .session(&mut *session)
                .await?;
            Ok(true)
        })
        .await
    }

    async fn passkeys(&self, user: UserId) -> Result<Vec<PasskeyRecord>, StoreError> {
        let cursor = self
            .bounded(
                self.passkeys()
                    .find(doc! {"userId": user.to_string()})
                    .sort(doc! {"createdAt": 1, "_id": 1}),
            )
            .await?;
        let docs: Vec<PasskeyDoc> = self.bounded(cursor.try_collect()).await?;
        docs.into_iter().map(PasskeyRecord::try_from).collect()
    }

    async fn passkey_by_credential(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<(PasskeyRecord, Option<[u8; 16]>)>, StoreError> {
        let Some(found) = self
            .bounded(
                self.passkeys()
                    .find_one(doc! {"credentialId": binary(credential_id)}),
            )
            .await?
        else {
            return Ok(None);
        };
        let passkey = PasskeyRecord::try_from(found)?;
        let handle = self
            .bounded(
                self.users()
                    .clone_with_type::<UserHandle>()
                    .find_one(doc! {"_id": passkey.user_id.to_string()})
                    .projection(doc! {"webauthnHandle": 1}),
            )
            .await?
            .and_then(UserHandle::handle);
        Ok(Some((passkey, handle)))
    }

    async fn rename_passkey(
        &self,
        user: UserId,
        id: Uuid,
        name: &str,
    ) -> Result<Option<PasskeyRecord>, StoreError> {
        let filter = doc! {"_id": id.to_string(), "userId": user.to_string()};
        let result = self
            .bounded(
                self.passkeys()
                    .update_one(filter.clone(), doc! {"$set": {"name": name}}),
            )
            .await?;
        if result.matched_count == 0 {
            return Ok(None);
        }
        self.bounded(self.passkeys().find_one(filter))
            .await?
            .map(PasskeyRecord::try_from)
            .transpose()
    }

    async fn delete_passkey(&self, user: UserId, id: Uuid) -> Result<PasskeyDeletion, StoreError> {
        let (users, passkeys, accounts) = (self.users(), self.passkeys(), self.accounts());
        let (uid, pid) = (user.to_string(), id.to_string());
        // Read and write in one transaction: of two concurrent deletes of a user's last two
        // ways to sign in, the second one's update of the user conflicts and it runs again.
        self.transaction(async move |session| {
            let found = passkeys
                .find_one(doc! {"_id": &pid, "userId": &uid})
                .session(&mut *session)
                .await?;
            if found.is_none() {
                return Ok(PasskeyDeletion::NotFound);
            }
            let owner = users
                .clone_with_type::<UserParts>()
                .find_one(doc! {"_id": &uid})
                .projection(doc! {"password": 1, "providers": 1})
                .session(&mut *session)
                .await?;
            let Some(owner) = owner else {
                return Ok(PasskeyDeletion::NotFound);
            };
            let other_passkeys = passkeys
                .count_documents(doc! {"userId": &uid, "_id": {"$ne": &pid}})
                .session(&mut *session)
                .await?;
            let identities = accounts
                .count_documents(doc! {"userId": &uid})
                .session(&mut *session)
                .await?;
            if owner.password.is_none()
                && owner.providers().next().is_none()
                && identities == 0
                && other_passkeys == 0
            {
                return Ok(PasskeyDeletion::LastSignInMethod);
            }
            passkeys
                .delete_one(doc! {"_id": &pid, "userId": &uid})
                .session(&mut *session)
                .await?;
            users
                .update_one(
                    doc! {"_id": &uid},
                    // The credential version moves: a sign-in in flight with it starts no session.
                    doc! {
                        "$set": {"passkeyCount": other_passkeys as i64},
                        "$inc": {"credVersion": 1i64},
                    },
                )
                .session(&mut *session)
                .await?;
            Ok(PasskeyDeletion::Deleted)
        })
        .await
    }

    async fn record_passkey_use(&self, id: Uuid, used: PasskeyUse) -> Result<bool, StoreError> {
        let result = self
            .bounded(self.passkeys().update_one(
                doc! {"_id": id.to_string(), "counter": i64::from(used.previous_counter)},
                doc! {"$set": {
                    "counter": i64::from(used.counter),
                    "backupEligible": used.backup_eligible,
                    "backupState": used.backup_state,
                    "lastUsedAt": bdt(used.at),
                }},
            ))
            .await?;
        Ok(result.matched_count == 1)
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
        let token = TokenDoc::new(kind, hash, user, data, expires_at);
        self.bounded(self.tokens().insert_one(token)).await?;
        Ok(())
    }

    async fn peek_token(
        &self,
        kind: TokenKind,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let filter = doc! {"_id": TokenDoc::id(kind, hash), "expiresAt": {"$gt": bdt(now)}};
        let found = self.bounded(self.tokens().find_one(filter)).await?;
        Ok(found.map(TokenDoc::record))
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
                    .find_one_and_delete(doc! {"_id": TokenDoc::id(kind, hash)}),
            )
            .await?;
        Ok(found
            .map(TokenDoc::record)
            .filter(|record| record.expires_at > now))
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
