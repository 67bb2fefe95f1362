//! The behaviour every storage backend owes the service: each case runs once against SQLite and
//! once against MongoDB, each time on a fresh database.

use std::sync::Arc;

use authvault::{
    clock,
    domain::{AuthProvider, Email, KeyProvider, SealedKey, User, UserId, UserName},
    store::*,
};
use secrecy::SecretString;
use tempfile::TempDir;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A fresh SQLite store; the directory holding its file lives as long as the returned guard.
async fn sqlite_store() -> (TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("authvault.db"), STORE_TIMEOUT)
        .await
        .expect("SQLite store opens");
    (dir, Arc::new(store))
}

/// A fresh MongoDB store on a database of its own.
async fn mongo_store() -> Arc<dyn Store> {
    let base = std::env::var("AUTHVAULT_TEST_MONGODB_URL").unwrap_or_else(|_| {
        panic!(
            "AUTHVAULT_TEST_MONGODB_URL is not set: run the tests with scripts/test, which starts \
             a MongoDB-compatible server and sets it"
        )
    });
    let mut url = url::Url::parse(&base).expect("AUTHVAULT_TEST_MONGODB_URL is a URL");
    url.set_path(&format!("/conf_{}", Uuid::new_v4().simple()));
    let store = MongoStore::connect(&SecretString::from(url.to_string()), STORE_TIMEOUT)
        .await
        .expect("MongoDB store connects");
    Arc::new(store)
}

/// Expands each case into a module with a `sqlite` and a `mongo` test.
macro_rules! conformance {
    ($($case:ident),+ $(,)?) => {
        $(
            mod $case {
                #[tokio::test]
                async fn sqlite() {
                    let (_dir, store) = super::sqlite_store().await;
                    super::$case(store).await;
                }

                #[tokio::test]
                async fn mongo() {
                    let store = super::mongo_store().await;
                    super::$case(store).await;
                }
            }
        )+
    };
}

mod api_keys;
mod credentials;
mod health;
mod identities;
mod mfa;
mod passkeys;
mod rate_limits;
mod sessions;
mod tokens;
mod users;

/// `backend()` gives each store's own name, as logs and metrics show it.
mod backend_names {
    #[tokio::test]
    async fn sqlite_store_is_named_sqlite() {
        let (_dir, store) = super::sqlite_store().await;
        assert_eq!(store.backend(), "sqlite");
    }

    #[tokio::test]
    async fn mongo_store_is_named_mongodb() {
        let store = super::mongo_store().await;
        assert_eq!(store.backend(), "mongodb");
    }
}

// ---- helpers ----

/// A moment with a non-zero millisecond part, so that losing milliseconds would show.
fn moment() -> OffsetDateTime {
    clock::now()
        .replace_millisecond(123)
        .expect("123 is a valid millisecond")
}

fn email(raw: &str) -> Email {
    Email::parse(raw).expect("valid email")
}

fn name(raw: &str) -> UserName {
    UserName::parse(raw).expect("valid name")
}

fn new_user(address: &str, created_at: OffsetDateTime) -> NewUser {
    NewUser {
        id: UserId::new(),
        name: name("Ada Lovelace"),
        email: email(address),
        image: Some("https://example.com/ada.png".into()),
        password_hash: Some("$2b$12$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXY".into()),
        created_at,
    }
}

async fn create(store: &Arc<dyn Store>, address: &str, at: OffsetDateTime) -> User {
    store
        .create_user(new_user(address, at))
        .await
        .expect("user is created")
}

fn session_for(user: UserId, now: OffsetDateTime) -> SessionRecord {
    SessionRecord {
        id: Uuid::new_v4(),
        user_id: user,
        created_at: now,
        last_used_at: now + Duration::seconds(5),
        expires_at: now + Duration::days(7),
        auth_time: now - Duration::minutes(1),
        amr: authvault::domain::Amr::one(authvault::domain::AuthMethod::Pwd),
        user_agent: Some("conformance/1.0".into()),
        ip: Some("192.0.2.7".into()),
    }
}

/// A sealed key of arbitrary bytes (the store never looks inside); `n` tells seals apart, and
/// the bytes span the whole range so that a store mangling zeros or high bytes would show.
fn sealed(n: u8) -> SealedKey {
    SealedKey {
        key_id: format!("k{n}"),
        nonce: (0..24)
            .map(|i: u8| i.wrapping_mul(11).wrapping_add(n))
            .collect(),
        ciphertext: (0..40)
            .map(|i: u8| 255u8.wrapping_sub(i.wrapping_mul(7)).wrapping_add(n))
            .collect(),
    }
}

fn stored(provider: KeyProvider, sealed: &SealedKey, updated_at: OffsetDateTime) -> StoredKey {
    StoredKey {
        provider,
        sealed: sealed.clone(),
        updated_at,
    }
}

/// Applies `changes` to a user that exists.
async fn update_keys(
    store: &Arc<dyn Store>,
    user: UserId,
    changes: &[KeyChange],
    now: OffsetDateTime,
) {
    assert!(
        store.update_api_keys(user, changes, now).await.unwrap(),
        "update_api_keys of an existing user is true"
    );
}

/// Every page of `api_keys_page` with `limit`, from the start until an empty page.
async fn all_key_pages(store: &Arc<dyn Store>, limit: u32) -> Vec<Vec<(UserId, Vec<StoredKey>)>> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store.api_keys_page(after, limit).await.unwrap();
        assert!(
            page.len() <= limit as usize,
            "a page holds at most `limit` users"
        );
        let Some((last, _)) = page.last() else {
            return pages;
        };
        after = Some(*last);
        pages.push(page);
        assert!(pages.len() <= 100, "paging does not end");
    }
}

/// A user signing up through a provider: no password.
fn oauth_user(address: &str, created_at: OffsetDateTime) -> NewUser {
    NewUser {
        password_hash: None,
        ..new_user(address, created_at)
    }
}

/// Creates a user linked to `(provider, account_id)` from the start.
async fn create_with_identity(
    store: &Arc<dyn Store>,
    address: &str,
    provider: AuthProvider,
    account_id: &str,
    at: OffsetDateTime,
) -> User {
    store
        .create_user_with_identity(oauth_user(address, at), provider, account_id)
        .await
        .expect("user with identity is created")
}

/// Links an identity to a user that exists.
async fn link(
    store: &Arc<dyn Store>,
    user: UserId,
    provider: AuthProvider,
    account_id: &str,
    now: OffsetDateTime,
) {
    assert!(
        store
            .link_identity(user, provider, account_id, now)
            .await
            .unwrap(),
        "link_identity of an existing user is true"
    );
}

/// The id of the user an identity is linked to, if any.
async fn identity_owner(
    store: &Arc<dyn Store>,
    provider: AuthProvider,
    account_id: &str,
) -> Option<UserId> {
    store
        .user_by_identity(provider, account_id)
        .await
        .unwrap()
        .map(|u| u.id)
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::Conflict)),
        "expected Conflict, got {result:?}"
    );
}

async fn put(
    store: &Arc<dyn Store>,
    kind: TokenKind,
    hash: &str,
    user: Option<UserId>,
    data: &str,
    expires_at: OffsetDateTime,
) {
    store
        .put_token(kind, hash, user, data, expires_at)
        .await
        .expect("token is stored");
}

fn token(user: Option<UserId>, data: &str, expires_at: OffsetDateTime) -> TokenRecord {
    TokenRecord {
        user_id: user,
        data: data.into(),
        expires_at,
    }
}

/// Asserts that two users agree on every field (`User` has no `PartialEq` on purpose).
#[track_caller]
fn assert_same_user(actual: &User, expected: &User) {
    assert_eq!(actual.id, expected.id, "id");
    assert_eq!(actual.name, expected.name, "name");
    assert_eq!(actual.email, expected.email, "email");
    assert_eq!(actual.image, expected.image, "image");
    assert_eq!(
        actual.password_hash, expected.password_hash,
        "password hash"
    );
    assert_eq!(actual.linked, expected.linked, "linked providers");
    assert_eq!(
        actual.email_verified, expected.email_verified,
        "email_verified"
    );
    assert_eq!(actual.created_at, expected.created_at, "created_at");
    assert_eq!(actual.updated_at, expected.updated_at, "updated_at");
}
