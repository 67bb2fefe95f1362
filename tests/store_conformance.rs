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

conformance!(
    a_created_user_reads_back_by_id_and_by_email,
    mark_email_verified_keeps_the_first_proof,
    a_user_without_image_or_password_reads_back_without_them,
    an_unknown_user_reads_as_absent,
    a_second_user_with_the_same_email_is_a_conflict,
    concurrent_sign_ups_with_one_email_create_exactly_one_user,
    update_profile_changes_the_name_sets_and_clears_the_image_and_bumps_updated_at,
    update_profile_of_an_unknown_user_is_none,
    change_password_sets_and_removes_the_hash,
    change_password_of_an_unknown_user_is_false,
    change_password_moves_the_version_ends_other_sessions_and_spends_reset_tokens,
    rehash_password_replaces_the_hash_only_at_the_version_read,
    a_session_starts_only_at_the_users_current_credential_version,
    no_session_started_at_the_old_version_survives_a_concurrent_password_change,
    the_first_proof_removes_identities_attached_while_unproven_and_ends_sessions,
    a_proof_that_removes_nothing_keeps_the_sessions_and_a_second_proof_does_nothing,
    a_vouching_proof_removes_the_password_with_the_identities_in_one_step,
    a_change_expecting_an_old_version_or_keeping_an_ended_session_changes_nothing,
    delete_user_expecting_an_old_version_deletes_nothing,
    unlinking_an_identity_moves_the_credential_version,
    delete_user_removes_the_user_and_its_sessions_and_is_false_the_second_time,
    a_created_session_reads_back_equal,
    a_session_reads_as_absent_from_its_expiry_on,
    a_session_created_already_expired_reads_as_absent,
    a_second_session_with_the_same_id_is_a_conflict,
    end_session_is_true_once_then_false,
    end_user_sessions_ends_all_but_the_kept_one_and_spares_other_users,
    end_user_sessions_without_an_exception_ends_every_session_of_the_user,
    a_session_is_found_only_with_its_own_user,
    a_session_of_an_unknown_user_is_a_conflict_and_is_not_found,
    session_with_user_reads_the_session_and_the_current_user_together,
    session_with_user_is_absent_once_the_session_ends_expires_or_the_user_is_deleted,
    user_sessions_lists_the_live_sessions_of_the_user_newest_first,
    end_user_session_ends_only_a_session_of_that_user,
    a_refresh_token_finds_its_live_session_by_its_current_or_previous_hash,
    rotate_refresh_succeeds_once_for_the_live_hash_and_marks_the_session_used,
    an_ended_session_is_not_found_by_its_refresh_token,
    past_the_cap_a_new_session_ends_the_users_oldest_ones,
    count_events_counts_only_events_strictly_after_since_and_reports_the_oldest,
    events_at_the_same_instant_count_separately,
    reserve_event_admits_up_to_max_in_the_window_and_a_refusal_records_nothing,
    a_released_event_gives_its_slot_back_and_only_its_own,
    concurrent_reservations_admit_exactly_max,
    rate_event_keys_are_independent_and_clear_events_empties_one_key_only,
    a_user_without_keys_has_none_and_set_keys_read_back_equal_in_provider_order,
    update_api_keys_applies_sets_and_removals_at_once_and_stamps_only_the_changed_keys,
    removing_an_unset_key_and_an_empty_change_list_succeed_and_change_nothing,
    update_api_keys_of_an_unknown_user_is_false_and_stores_nothing,
    reseal_api_key_replaces_only_a_seal_with_the_expected_nonce_and_keeps_updated_at,
    reseal_api_key_of_an_unset_provider_or_an_unknown_user_is_false_and_changes_nothing,
    api_keys_page_lists_only_users_with_keys_in_id_order_without_repeats_or_gaps,
    api_keys_page_starts_after_any_id_and_honours_small_limits,
    count_api_keys_counts_keys_over_all_users_and_drops_after_removals,
    delete_user_deletes_the_users_api_keys,
    create_user_with_identity_creates_a_user_linked_to_it_and_found_by_it,
    an_unknown_identity_reads_as_absent,
    the_same_identity_for_a_second_new_user_is_a_conflict_and_leaves_no_user_behind,
    create_user_with_identity_with_a_taken_email_is_a_conflict_and_leaves_no_identity_behind,
    concurrent_sign_ups_with_one_identity_create_exactly_one_user,
    link_identity_adds_providers_to_a_password_user_in_order_and_bumps_updated_at,
    link_identity_of_an_unknown_user_is_false_and_links_nothing,
    linking_an_identity_that_is_linked_already_is_a_conflict_and_changes_nothing,
    a_user_cannot_link_two_identities_of_one_provider,
    unlink_identity_removes_the_identity_once_then_is_false,
    an_unlinked_identity_can_be_linked_to_another_user,
    delete_user_removes_the_users_identities_and_frees_them,
    a_put_token_is_taken_once_with_its_record_then_is_gone,
    a_second_put_token_with_the_same_kind_and_hash_is_a_conflict,
    tokens_of_different_kinds_with_the_same_hash_are_independent,
    an_expired_token_is_not_taken_and_is_gone,
    a_token_without_a_user_is_taken_without_one,
    concurrent_takes_of_one_token_give_it_exactly_once,
    delete_user_removes_the_users_tokens,
    ping_succeeds,
);

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

// ---- users ----

async fn mark_email_verified_keeps_the_first_proof(store: Arc<dyn Store>) {
    let at = moment();
    let user = store
        .create_user(new_user("proof@example.com", at))
        .await
        .unwrap();
    assert_eq!(user.email_verified, None);
    let first = at + Duration::seconds(5);

    assert!(store.mark_email_verified(user.id, first).await.unwrap());
    assert!(store
        .mark_email_verified(user.id, first + Duration::seconds(5))
        .await
        .unwrap());

    let read = store.user_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(read.email_verified, Some(first));
    let by_email = store.user_by_email(&read.email).await.unwrap().unwrap();
    assert_eq!(by_email.email_verified, Some(first));
    assert!(!store
        .mark_email_verified(UserId::new(), first)
        .await
        .unwrap());
}

async fn a_created_user_reads_back_by_id_and_by_email(store: Arc<dyn Store>) {
    let at = moment();
    let new = new_user("ada@example.com", at);
    let expected = User {
        id: new.id,
        name: new.name.clone(),
        email: new.email.clone(),
        image: new.image.clone(),
        password_hash: new.password_hash.clone(),
        linked: Vec::new(),
        email_verified: None,
        credential_version: 0,
        created_at: at,
        updated_at: at,
    };

    let created = store.create_user(new).await.unwrap();
    assert_same_user(&created, &expected);

    let by_id = store.user_by_id(expected.id).await.unwrap().unwrap();
    assert_same_user(&by_id, &expected);

    let by_email = store.user_by_email(&expected.email).await.unwrap().unwrap();
    assert_same_user(&by_email, &expected);
    assert_eq!(by_email.providers(), vec![AuthProvider::Credentials]);
}

async fn a_user_without_image_or_password_reads_back_without_them(store: Arc<dyn Store>) {
    let mut new = new_user("grace@example.com", moment());
    new.image = None;
    new.password_hash = None;
    let id = new.id;

    store.create_user(new).await.unwrap();

    let user = store.user_by_id(id).await.unwrap().unwrap();
    assert_eq!(user.image, None);
    assert_eq!(user.password_hash, None);
    assert!(user.providers().is_empty());
}

async fn an_unknown_user_reads_as_absent(store: Arc<dyn Store>) {
    create(&store, "ada@example.com", moment()).await;

    assert!(store.user_by_id(UserId::new()).await.unwrap().is_none());
    let unknown = email("nobody@example.com");
    assert!(store.user_by_email(&unknown).await.unwrap().is_none());
}

async fn a_second_user_with_the_same_email_is_a_conflict(store: Arc<dyn Store>) {
    let first = create(&store, "ada@example.com", moment()).await;

    let mut second = new_user("ada@example.com", moment());
    second.name = name("Someone Else");
    let second_id = second.id;
    let result = store.create_user(second).await;

    assert!(
        matches!(result, Err(StoreError::Conflict)),
        "expected Conflict, got {result:?}"
    );
    assert!(store.user_by_id(second_id).await.unwrap().is_none());
    let owner = store.user_by_email(&first.email).await.unwrap().unwrap();
    assert_same_user(&owner, &first);
}

async fn concurrent_sign_ups_with_one_email_create_exactly_one_user(store: Arc<dyn Store>) {
    let at = moment();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            let new = new_user("race@example.com", at);
            let id = new.id;
            tokio::spawn(async move { (id, store.create_user(new).await) })
        })
        .collect();

    let mut winners = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            (id, Ok(user)) => {
                assert_eq!(user.id, id);
                winners.push(id);
            }
            (_, Err(StoreError::Conflict)) => conflicts += 1,
            (_, Err(other)) => panic!("expected Ok or Conflict, got {other:?}"),
        }
    }

    assert_eq!(winners.len(), 1, "exactly one create succeeds");
    assert_eq!(conflicts, 19, "every other create is a conflict");
    let stored = store
        .user_by_email(&email("race@example.com"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.id, winners[0]);
}

async fn update_profile_changes_the_name_sets_and_clears_the_image_and_bumps_updated_at(
    store: Arc<dyn Store>,
) {
    let t0 = moment();
    let created = create(&store, "ada@example.com", t0).await;

    // Only the name: the image stays.
    let t1 = t0 + Duration::seconds(1);
    let update = ProfileUpdate {
        name: Some(name("Countess of Lovelace")),
        image: None,
    };
    let user = store
        .update_profile(created.id, update, t1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.name, name("Countess of Lovelace"));
    assert_eq!(user.image, created.image);
    assert_eq!(user.created_at, t0);
    assert_eq!(user.updated_at, t1);

    // A new image: the name stays.
    let t2 = t1 + Duration::seconds(1);
    let update = ProfileUpdate {
        name: None,
        image: Some(Some("https://example.com/new.png".into())),
    };
    let user = store
        .update_profile(created.id, update, t2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.name, name("Countess of Lovelace"));
    assert_eq!(user.image.as_deref(), Some("https://example.com/new.png"));
    assert_eq!(user.updated_at, t2);

    // `Some(None)` clears the image.
    let t3 = t2 + Duration::seconds(1);
    let update = ProfileUpdate {
        name: None,
        image: Some(None),
    };
    let user = store
        .update_profile(created.id, update, t3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.image, None);
    assert_eq!(user.updated_at, t3);

    // What update_profile returned is what is stored; nothing else changed.
    let stored = store.user_by_id(created.id).await.unwrap().unwrap();
    assert_same_user(&stored, &user);
    assert_eq!(stored.email, created.email);
    assert_eq!(stored.password_hash, created.password_hash);
    assert_eq!(stored.created_at, t0);
}

async fn update_profile_of_an_unknown_user_is_none(store: Arc<dyn Store>) {
    create(&store, "ada@example.com", moment()).await;

    let update = ProfileUpdate {
        name: Some(name("Nobody")),
        image: Some(None),
    };
    let result = store
        .update_profile(UserId::new(), update, moment())
        .await
        .unwrap();

    assert!(result.is_none());
}

async fn change_password_sets_and_removes_the_hash(store: Arc<dyn Store>) {
    let t0 = moment();
    let mut new = new_user("ada@example.com", t0);
    new.password_hash = None;
    let id = new.id;
    store.create_user(new).await.unwrap();

    let t1 = t0 + Duration::seconds(1);
    assert!(store
        .change_password(
            id,
            CredentialChange {
                hash: Some("$2b$12$new-hash"),
                ..CredentialChange::default()
            },
            t1,
        )
        .await
        .unwrap());
    let user = store.user_by_id(id).await.unwrap().unwrap();
    assert_eq!(user.password_hash.as_deref(), Some("$2b$12$new-hash"));
    assert_eq!(user.providers(), vec![AuthProvider::Credentials]);
    assert_eq!(user.updated_at, t1);

    let t2 = t1 + Duration::seconds(1);
    assert!(store
        .change_password(
            id,
            CredentialChange {
                ..CredentialChange::default()
            },
            t2,
        )
        .await
        .unwrap());
    let user = store.user_by_id(id).await.unwrap().unwrap();
    assert_eq!(user.password_hash, None);
    assert!(!user.providers().contains(&AuthProvider::Credentials));
    assert_eq!(user.updated_at, t2);
    assert_eq!(user.created_at, t0);
}

async fn change_password_of_an_unknown_user_is_false(store: Arc<dyn Store>) {
    let known = create(&store, "ada@example.com", moment()).await;

    let changed = store
        .change_password(
            UserId::new(),
            CredentialChange {
                hash: Some("$2b$12$new-hash"),
                ..CredentialChange::default()
            },
            moment(),
        )
        .await
        .unwrap();

    assert!(!changed);
    let untouched = store.user_by_id(known.id).await.unwrap().unwrap();
    assert_eq!(untouched.password_hash, known.password_hash);
}

async fn delete_user_removes_the_user_and_its_sessions_and_is_false_the_second_time(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let doomed = create(&store, "ada@example.com", now).await;
    let other = create(&store, "grace@example.com", now).await;
    let doomed_sessions = [session_for(doomed.id, now), session_for(doomed.id, now)];
    for s in &doomed_sessions {
        store.create_session(s).await.unwrap();
    }
    let other_session = session_for(other.id, now);
    store.create_session(&other_session).await.unwrap();

    assert!(store.delete_user(doomed.id, None).await.unwrap());

    assert!(store.user_by_id(doomed.id).await.unwrap().is_none());
    assert!(store.user_by_email(&doomed.email).await.unwrap().is_none());
    for s in &doomed_sessions {
        assert!(store.session(s.user_id, s.id, now).await.unwrap().is_none());
    }
    assert_eq!(store.end_user_sessions(doomed.id, None).await.unwrap(), 0);
    assert!(!store.delete_user(doomed.id, None).await.unwrap());

    // Someone else's user and session are untouched.
    assert!(store.user_by_id(other.id).await.unwrap().is_some());
    assert_eq!(
        store
            .session(other_session.user_id, other_session.id, now)
            .await
            .unwrap(),
        Some(other_session)
    );
    // The freed email can be used again.
    create(&store, "ada@example.com", now).await;
}

// ---- sessions ----

async fn a_created_session_reads_back_equal(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let with_details = session_for(user.id, now);
    let bare = SessionRecord {
        user_agent: None,
        ip: None,
        ..session_for(user.id, now)
    };

    store.create_session(&with_details).await.unwrap();
    store.create_session(&bare).await.unwrap();

    assert_eq!(
        store
            .session(with_details.user_id, with_details.id, now)
            .await
            .unwrap(),
        Some(with_details)
    );
    assert_eq!(
        store.session(bare.user_id, bare.id, now).await.unwrap(),
        Some(bare)
    );
    assert_eq!(
        store.session(user.id, Uuid::new_v4(), now).await.unwrap(),
        None
    );
}

async fn a_session_reads_as_absent_from_its_expiry_on(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let session = SessionRecord {
        expires_at: now + Duration::hours(1),
        ..session_for(user.id, now)
    };
    store.create_session(&session).await.unwrap();
    let expiry = session.expires_at;

    // Expiry is judged against the `now` given, not the clock on the wall.
    let just_before = expiry - Duration::milliseconds(1);
    assert_eq!(
        store
            .session(session.user_id, session.id, just_before)
            .await
            .unwrap(),
        Some(session.clone())
    );
    assert_eq!(
        store
            .session(session.user_id, session.id, expiry)
            .await
            .unwrap(),
        None
    );
    let later = expiry + Duration::minutes(1);
    assert_eq!(
        store
            .session(session.user_id, session.id, later)
            .await
            .unwrap(),
        None
    );
}

async fn a_session_created_already_expired_reads_as_absent(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let session = SessionRecord {
        created_at: now - Duration::hours(2),
        last_used_at: now - Duration::hours(2),
        auth_time: now - Duration::hours(2),
        expires_at: now - Duration::hours(1),
        ..session_for(user.id, now)
    };

    store.create_session(&session).await.unwrap();

    assert_eq!(
        store
            .session(session.user_id, session.id, now)
            .await
            .unwrap(),
        None
    );
}

async fn a_second_session_with_the_same_id_is_a_conflict(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let session = session_for(user.id, now);
    store.create_session(&session).await.unwrap();

    let result = store.create_session(&session).await;

    assert!(
        matches!(result, Err(StoreError::Conflict)),
        "expected Conflict, got {result:?}"
    );
}

async fn end_session_is_true_once_then_false(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let ended = session_for(user.id, now);
    let kept = session_for(user.id, now);
    store.create_session(&ended).await.unwrap();
    store.create_session(&kept).await.unwrap();

    assert!(store.end_session(ended.id).await.unwrap());
    assert!(!store.end_session(ended.id).await.unwrap());
    assert!(!store.end_session(Uuid::new_v4()).await.unwrap());

    assert_eq!(
        store.session(ended.user_id, ended.id, now).await.unwrap(),
        None
    );
    assert_eq!(
        store.session(kept.user_id, kept.id, now).await.unwrap(),
        Some(kept)
    );
}

async fn end_user_sessions_ends_all_but_the_kept_one_and_spares_other_users(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let other = create(&store, "grace@example.com", now).await;
    let keep = session_for(user.id, now);
    let doomed: Vec<_> = (0..3).map(|_| session_for(user.id, now)).collect();
    let others: Vec<_> = (0..2).map(|_| session_for(other.id, now)).collect();
    for s in std::iter::once(&keep).chain(&doomed).chain(&others) {
        store.create_session(s).await.unwrap();
    }

    let ended = store
        .end_user_sessions(user.id, Some(keep.id))
        .await
        .unwrap();

    assert_eq!(ended, 3);
    assert_eq!(
        store.session(keep.user_id, keep.id, now).await.unwrap(),
        Some(keep.clone())
    );
    for s in &doomed {
        assert_eq!(store.session(s.user_id, s.id, now).await.unwrap(), None);
    }
    for s in &others {
        assert_eq!(
            store.session(s.user_id, s.id, now).await.unwrap(),
            Some(s.clone())
        );
    }
    // Nothing is left to end but the kept session.
    let again = store.end_user_sessions(user.id, Some(keep.id)).await;
    assert_eq!(again.unwrap(), 0);
}

async fn end_user_sessions_without_an_exception_ends_every_session_of_the_user(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let other = create(&store, "grace@example.com", now).await;
    let sessions: Vec<_> = (0..3).map(|_| session_for(user.id, now)).collect();
    for s in &sessions {
        store.create_session(s).await.unwrap();
    }
    let others_session = session_for(other.id, now);
    store.create_session(&others_session).await.unwrap();

    assert_eq!(store.end_user_sessions(user.id, None).await.unwrap(), 3);

    for s in &sessions {
        assert_eq!(store.session(s.user_id, s.id, now).await.unwrap(), None);
    }
    assert_eq!(
        store
            .session(others_session.user_id, others_session.id, now)
            .await
            .unwrap(),
        Some(others_session)
    );
    assert_eq!(store.end_user_sessions(user.id, None).await.unwrap(), 0);
}

async fn a_session_of_an_unknown_user_is_a_conflict_and_is_not_found(store: Arc<dyn Store>) {
    let now = moment();
    let nobody = UserId::new();
    let session = session_for(nobody, now);

    let plain = store.create_session(&session).await;
    let with_refresh = store
        .create_session_with_refresh(
            &SessionRecord {
                id: Uuid::new_v4(),
                ..session.clone()
            },
            "h",
            0,
        )
        .await;

    assert!(matches!(plain, Err(StoreError::Conflict)), "{plain:?}");
    assert!(
        matches!(with_refresh, Err(StoreError::Conflict)),
        "{with_refresh:?}"
    );
    assert_eq!(store.session(nobody, session.id, now).await.unwrap(), None);
    assert!(store.session_by_refresh("h", now).await.unwrap().is_none());
}

async fn a_session_is_found_only_with_its_own_user(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let other = create(&store, "grace@example.com", now).await;
    let session = session_for(user.id, now);
    store.create_session(&session).await.unwrap();

    assert_eq!(
        store.session(other.id, session.id, now).await.unwrap(),
        None
    );
    assert_eq!(
        store.session(UserId::new(), session.id, now).await.unwrap(),
        None
    );
    assert!(store
        .session_with_user(other.id, session.id, now)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store.session(user.id, session.id, now).await.unwrap(),
        Some(session)
    );
}

async fn session_with_user_reads_the_session_and_the_current_user_together(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let session = session_for(user.id, now);
    store.create_session(&session).await.unwrap();

    let (found, found_user) = store
        .session_with_user(user.id, session.id, now)
        .await
        .unwrap()
        .expect("the session and its user");
    assert_eq!(found, session);
    assert_same_user(&found_user, &user);

    // Later changes to the user show at once.
    let later = now + Duration::seconds(1);
    let update = ProfileUpdate {
        name: Some(name("Ada King")),
        image: Some(None),
    };
    store.update_profile(user.id, update, later).await.unwrap();
    store
        .link_identity(user.id, AuthProvider::Github, "gh-1", later)
        .await
        .unwrap();
    store.mark_email_verified(user.id, later).await.unwrap();
    let (_, changed) = store
        .session_with_user(user.id, session.id, later)
        .await
        .unwrap()
        .expect("the session and its user");
    assert_same_user(&changed, &store.user_by_id(user.id).await.unwrap().unwrap());
    assert_eq!(changed.name.as_str(), "Ada King");
    assert_eq!(changed.image, None);
    assert_eq!(changed.linked, vec![AuthProvider::Github]);
    assert_eq!(changed.email_verified, Some(later));
}

async fn session_with_user_is_absent_once_the_session_ends_expires_or_the_user_is_deleted(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let ended = session_for(user.id, now);
    let short = SessionRecord {
        expires_at: now + Duration::minutes(5),
        ..session_for(user.id, now)
    };
    let kept = session_for(user.id, now);
    for s in [&ended, &short, &kept] {
        store.create_session(s).await.unwrap();
    }

    assert!(store.end_session(ended.id).await.unwrap());
    let absent = |id: Uuid, at: OffsetDateTime| {
        let store = store.clone();
        async move {
            store
                .session_with_user(user.id, id, at)
                .await
                .unwrap()
                .is_none()
                && store.session(user.id, id, at).await.unwrap().is_none()
        }
    };
    assert!(absent(ended.id, now).await);
    assert!(!absent(short.id, now).await);
    assert!(absent(short.id, short.expires_at).await);
    assert!(!absent(kept.id, now).await);

    assert!(store.delete_user(user.id, None).await.unwrap());
    assert!(absent(kept.id, now).await);
}

async fn user_sessions_lists_the_live_sessions_of_the_user_newest_first(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let other = create(&store, "grace@example.com", now).await;
    let oldest = session_for(user.id, now - Duration::hours(2));
    let newest = session_for(user.id, now);
    let middle = SessionRecord {
        user_agent: None,
        ip: None,
        ..session_for(user.id, now - Duration::hours(1))
    };
    let expired = SessionRecord {
        expires_at: now - Duration::seconds(1),
        ..session_for(user.id, now - Duration::hours(3))
    };
    let ended = session_for(user.id, now);
    for s in [&oldest, &newest, &middle, &expired, &ended] {
        store.create_session(s).await.unwrap();
    }
    store
        .create_session(&session_for(other.id, now))
        .await
        .unwrap();
    store.end_user_session(user.id, ended.id).await.unwrap();

    let listed = store.user_sessions(user.id, now).await.unwrap();

    assert_eq!(listed, vec![newest, middle, oldest]);
    assert!(store
        .user_sessions(UserId::new(), now)
        .await
        .unwrap()
        .is_empty());
}

async fn end_user_session_ends_only_a_session_of_that_user(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let other = create(&store, "grace@example.com", now).await;
    let mine = session_for(user.id, now);
    let theirs = session_for(other.id, now);
    store.create_session(&mine).await.unwrap();
    store.create_session(&theirs).await.unwrap();

    assert!(!store.end_user_session(user.id, theirs.id).await.unwrap());
    assert_eq!(
        store.session(other.id, theirs.id, now).await.unwrap(),
        Some(theirs)
    );
    assert!(store.end_user_session(user.id, mine.id).await.unwrap());
    assert!(!store.end_user_session(user.id, mine.id).await.unwrap());
    assert_eq!(store.session(user.id, mine.id, now).await.unwrap(), None);
}

async fn a_refresh_token_finds_its_live_session_by_its_current_or_previous_hash(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let session = session_for(user.id, now);
    store
        .create_session_with_refresh(&session, "hash-1", 0)
        .await
        .unwrap();

    let (found, state) = store
        .session_by_refresh("hash-1", now)
        .await
        .unwrap()
        .expect("found by the live hash");
    assert_eq!(found, session);
    assert_eq!(state.hash.as_deref(), Some("hash-1"));
    assert_eq!(state.previous_hash, None);
    assert_eq!(state.successor, None);

    let later = now + Duration::seconds(30);
    assert!(store
        .rotate_refresh(user.id, session.id, "hash-1", "hash-2", &sealed(1), later)
        .await
        .unwrap());
    for hash in ["hash-1", "hash-2"] {
        let (found, state) = store
            .session_by_refresh(hash, later)
            .await
            .unwrap()
            .expect("found by the live and the previous hash");
        assert_eq!(found.id, session.id);
        assert_eq!(state.hash.as_deref(), Some("hash-2"));
        assert_eq!(state.previous_hash.as_deref(), Some("hash-1"));
        assert_eq!(state.rotated_at, Some(later));
        assert_eq!(state.successor, Some(sealed(1)));
    }
    assert!(store
        .session_by_refresh("hash-3", later)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .session_by_refresh("hash-2", session.expires_at)
        .await
        .unwrap()
        .is_none());
}

async fn rotate_refresh_succeeds_once_for_the_live_hash_and_marks_the_session_used(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let session = session_for(user.id, now);
    store
        .create_session_with_refresh(&session, "hash-1", 0)
        .await
        .unwrap();
    let later = now + Duration::minutes(10);

    let rotations = futures_util::future::join_all((0..4).map(|i| {
        let store = store.clone();
        async move {
            store
                .rotate_refresh(
                    user.id,
                    session.id,
                    "hash-1",
                    &format!("next-{i}"),
                    &sealed(i),
                    later,
                )
                .await
                .unwrap()
        }
    }))
    .await;

    assert_eq!(rotations.iter().filter(|r| **r).count(), 1);
    assert!(!store
        .rotate_refresh(user.id, session.id, "hash-1", "again", &sealed(9), later)
        .await
        .unwrap());
    let used = store
        .session(user.id, session.id, later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.last_used_at, later);
    assert_eq!(
        store.user_sessions(user.id, later).await.unwrap()[0].last_used_at,
        later
    );
}

async fn an_ended_session_is_not_found_by_its_refresh_token(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let ended_one = session_for(user.id, now);
    let ended_all = session_for(user.id, now);
    let by_user = session_for(user.id, now);
    store
        .create_session_with_refresh(&ended_one, "one", 0)
        .await
        .unwrap();
    store
        .create_session_with_refresh(&ended_all, "all", 0)
        .await
        .unwrap();
    store
        .create_session_with_refresh(&by_user, "mine", 0)
        .await
        .unwrap();

    store.end_session(ended_one.id).await.unwrap();
    store.end_user_session(user.id, by_user.id).await.unwrap();
    store.end_user_sessions(user.id, None).await.unwrap();

    for hash in ["one", "all", "mine"] {
        assert!(
            store.session_by_refresh(hash, now).await.unwrap().is_none(),
            "{hash}"
        );
    }
}

async fn past_the_cap_a_new_session_ends_the_users_oldest_ones(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let other = create(&store, "grace@example.com", now).await;
    let theirs = session_for(other.id, now - Duration::hours(5));
    store.create_session(&theirs).await.unwrap();
    let total = MAX_LIVE_SESSIONS + 2;
    let sessions: Vec<SessionRecord> = (0..total)
        .map(|i| session_for(user.id, now - Duration::seconds((total - i) as i64)))
        .collect();
    for s in &sessions {
        store.create_session(s).await.unwrap();
    }

    let live = store.user_sessions(user.id, now).await.unwrap();

    assert_eq!(live.len(), MAX_LIVE_SESSIONS);
    for s in &sessions[..2] {
        assert_eq!(store.session(user.id, s.id, now).await.unwrap(), None);
    }
    for s in [&sessions[2], &sessions[total - 1]] {
        assert_eq!(
            store.session(user.id, s.id, now).await.unwrap(),
            Some(s.clone())
        );
    }
    // Another user's sessions do not count.
    assert_eq!(
        store.session(other.id, theirs.id, now).await.unwrap(),
        Some(theirs)
    );
}

// ---- credentials ----

async fn change_password_moves_the_version_ends_other_sessions_and_spends_reset_tokens(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let other = create(&store, "grace@example.com", now).await;
    assert_eq!(user.credential_version, 0);
    let (kept, ended) = (session_for(user.id, now), session_for(user.id, now));
    let theirs = session_for(other.id, now);
    for (s, h) in [
        (&kept, "h-kept"),
        (&ended, "h-ended"),
        (&theirs, "h-theirs"),
    ] {
        store.create_session_with_refresh(s, h, 0).await.unwrap();
    }
    let until = now + Duration::minutes(30);
    for (kind, hash, owner) in [
        (TokenKind::PasswordReset, "reset-1", user.id),
        (TokenKind::PasswordReset, "reset-2", user.id),
        (TokenKind::VerifyEmail, "verify-1", user.id),
        (TokenKind::PasswordReset, "reset-theirs", other.id),
    ] {
        store
            .put_token(kind, hash, Some(owner), "ada@example.com", until)
            .await
            .unwrap();
    }

    assert!(store
        .change_password(
            user.id,
            CredentialChange {
                hash: Some("$2b$12$changed"),
                keep: Some(kept.id),
                expected_version: None
            },
            now,
        )
        .await
        .unwrap());

    let changed = store.user_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(changed.password_hash.as_deref(), Some("$2b$12$changed"));
    assert!(changed.credential_version > user.credential_version);
    let live: Vec<Uuid> = store
        .user_sessions(user.id, now)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live, vec![kept.id]);
    assert!(store
        .session_by_refresh("h-ended", now)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .session_by_refresh("h-kept", now)
        .await
        .unwrap()
        .is_some());
    for hash in ["reset-1", "reset-2"] {
        assert!(store
            .take_token(TokenKind::PasswordReset, hash, now)
            .await
            .unwrap()
            .is_none());
    }
    // Other kinds, and other users' reset tokens, stay.
    assert!(store
        .take_token(TokenKind::VerifyEmail, "verify-1", now)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .take_token(TokenKind::PasswordReset, "reset-theirs", now)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .session(other.id, theirs.id, now)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store
            .user_by_id(other.id)
            .await
            .unwrap()
            .unwrap()
            .credential_version,
        0
    );

    // Without a session to keep, every session ends.
    assert!(store
        .change_password(
            user.id,
            CredentialChange {
                ..CredentialChange::default()
            },
            now,
        )
        .await
        .unwrap());
    assert!(store.user_sessions(user.id, now).await.unwrap().is_empty());
}

async fn rehash_password_replaces_the_hash_only_at_the_version_read(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    assert!(store
        .rehash_password(user.id, "$2b$13$same-password", user.credential_version)
        .await
        .unwrap());
    let rehashed = store.user_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(
        rehashed.password_hash.as_deref(),
        Some("$2b$13$same-password")
    );
    assert_eq!(rehashed.credential_version, user.credential_version);

    store
        .change_password(
            user.id,
            CredentialChange {
                hash: Some("$2b$12$new-password"),
                ..CredentialChange::default()
            },
            now,
        )
        .await
        .unwrap();
    // A re-hash of the old password that comes late never overwrites the new one.
    assert!(!store
        .rehash_password(user.id, "$2b$13$old-password", user.credential_version)
        .await
        .unwrap());
    let after = store.user_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(after.password_hash.as_deref(), Some("$2b$12$new-password"));
    assert!(!store
        .rehash_password(UserId::new(), "$2b$13$x", 0)
        .await
        .unwrap());
}

async fn a_session_starts_only_at_the_users_current_credential_version(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    store
        .change_password(
            user.id,
            CredentialChange {
                hash: Some("$2b$12$new"),
                ..CredentialChange::default()
            },
            now,
        )
        .await
        .unwrap();
    let current = store.user_by_id(user.id).await.unwrap().unwrap();

    let stale = session_for(user.id, now);
    let result = store
        .create_session_with_refresh(&stale, "stale", user.credential_version)
        .await;
    assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
    assert!(store
        .session(user.id, stale.id, now)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .session_by_refresh("stale", now)
        .await
        .unwrap()
        .is_none());

    let fresh = session_for(user.id, now);
    store
        .create_session_with_refresh(&fresh, "fresh", current.credential_version)
        .await
        .unwrap();
    assert!(store
        .session(user.id, fresh.id, now)
        .await
        .unwrap()
        .is_some());
}

async fn no_session_started_at_the_old_version_survives_a_concurrent_password_change(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(13));
    let signins: Vec<_> = (0..12)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            let session = session_for(user.id, now);
            let version = user.credential_version;
            tokio::spawn(async move {
                barrier.wait().await;
                let hash = format!("racer-{i}");
                let started = store
                    .create_session_with_refresh(&session, &hash, version)
                    .await;
                (session.id, started.is_ok())
            })
        })
        .collect();
    barrier.wait().await;
    assert!(store
        .change_password(
            user.id,
            CredentialChange {
                hash: Some("$2b$12$changed"),
                ..CredentialChange::default()
            },
            now,
        )
        .await
        .unwrap());
    let mut results = Vec::new();
    for task in signins {
        results.push(task.await.unwrap());
    }
    // Whatever order they ran in, none of the sessions of the old credential is live now.
    for (id, _) in &results {
        assert!(
            store.session(user.id, *id, now).await.unwrap().is_none(),
            "a session of the old credential survived the change"
        );
    }
    assert!(store.user_sessions(user.id, now).await.unwrap().is_empty());
}

async fn the_first_proof_removes_identities_attached_while_unproven_and_ends_sessions(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    store
        .link_identity(user.id, AuthProvider::Github, "gh-attacker", now)
        .await
        .unwrap();
    store
        .link_identity(user.id, AuthProvider::Google, "google-owner", now)
        .await
        .unwrap();
    let session = session_for(user.id, now);
    store
        .create_session_with_refresh(&session, "h", 0)
        .await
        .unwrap();

    let at = now + Duration::seconds(1);
    let removed = store
        .prove_email(
            user.id,
            at,
            Some((AuthProvider::Google, "google-owner")),
            false,
        )
        .await
        .unwrap();

    assert_eq!(removed, Some(vec![AuthProvider::Github]));
    let proven = store.user_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(proven.email_verified, Some(at));
    assert_eq!(proven.linked, vec![AuthProvider::Google]);
    assert!(proven.password_hash.is_some(), "the password stays");
    assert!(proven.credential_version > user.credential_version);
    assert!(store
        .session(user.id, session.id, now)
        .await
        .unwrap()
        .is_none());
    assert!(store.session_by_refresh("h", now).await.unwrap().is_none());
    assert!(store
        .user_by_identity(AuthProvider::Github, "gh-attacker")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .user_by_identity(AuthProvider::Google, "google-owner")
        .await
        .unwrap()
        .is_some());
    // The removed identity is free again.
    let other = create(&store, "grace@example.com", now).await;
    assert!(store
        .link_identity(other.id, AuthProvider::Github, "gh-attacker", now)
        .await
        .unwrap());
}

async fn a_proof_that_removes_nothing_keeps_the_sessions_and_a_second_proof_does_nothing(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let session = session_for(user.id, now);
    store
        .create_session_with_refresh(&session, "h", 0)
        .await
        .unwrap();

    assert_eq!(
        store.prove_email(user.id, now, None, false).await.unwrap(),
        Some(vec![])
    );
    let proven = store.user_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(proven.email_verified, Some(now));
    assert_eq!(proven.credential_version, user.credential_version);
    assert!(store
        .session(user.id, session.id, now)
        .await
        .unwrap()
        .is_some());

    // Identities linked after the proof are no longer "unproven": a later proof leaves them.
    store
        .link_identity(user.id, AuthProvider::Github, "gh", now)
        .await
        .unwrap();
    let later = now + Duration::seconds(5);
    assert_eq!(
        store
            .prove_email(user.id, later, None, false)
            .await
            .unwrap(),
        None
    );
    let after = store.user_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(after.email_verified, Some(now));
    assert_eq!(after.linked, vec![AuthProvider::Github]);
    assert_eq!(
        store
            .prove_email(UserId::new(), now, None, false)
            .await
            .unwrap(),
        None
    );
}

async fn a_vouching_proof_removes_the_password_with_the_identities_in_one_step(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    store
        .link_identity(user.id, AuthProvider::Github, "gh-owner", now)
        .await
        .unwrap();
    store
        .link_identity(user.id, AuthProvider::Google, "google-early", now)
        .await
        .unwrap();
    let session = session_for(user.id, now);
    store
        .create_session_with_refresh(&session, "h", 0)
        .await
        .unwrap();

    let removed = store
        .prove_email(user.id, now, Some((AuthProvider::Github, "gh-owner")), true)
        .await
        .unwrap();

    assert_eq!(
        removed,
        Some(vec![AuthProvider::Credentials, AuthProvider::Google])
    );
    let proven = store.user_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(proven.password_hash, None);
    assert_eq!(proven.providers(), vec![AuthProvider::Github]);
    assert!(proven.credential_version > user.credential_version);
    assert!(store.user_sessions(user.id, now).await.unwrap().is_empty());

    // Without a password to remove, a vouching proof removes nothing more and ends nothing.
    let other = store
        .create_user_with_identity(
            NewUser {
                password_hash: None,
                ..new_user("grace@example.com", now)
            },
            AuthProvider::Github,
            "gh-grace",
        )
        .await
        .unwrap();
    let kept = session_for(other.id, now);
    store
        .create_session_with_refresh(&kept, "k", 0)
        .await
        .unwrap();
    assert_eq!(
        store
            .prove_email(
                other.id,
                now,
                Some((AuthProvider::Github, "gh-grace")),
                true
            )
            .await
            .unwrap(),
        Some(vec![])
    );
    assert!(store
        .session(other.id, kept.id, now)
        .await
        .unwrap()
        .is_some());
}

async fn a_change_expecting_an_old_version_or_keeping_an_ended_session_changes_nothing(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let session = session_for(user.id, now);
    store
        .create_session_with_refresh(&session, "h", 0)
        .await
        .unwrap();
    // A reset answers first...
    assert!(store
        .change_password(
            user.id,
            CredentialChange {
                hash: Some("$2b$12$owner"),
                ..CredentialChange::default()
            },
            now,
        )
        .await
        .unwrap());
    // ...then a change that verified the old password lands: it changes nothing.
    assert!(!store
        .change_password(
            user.id,
            CredentialChange {
                hash: Some("$2b$12$attacker"),
                keep: None,
                expected_version: Some(user.credential_version),
            },
            now,
        )
        .await
        .unwrap());
    let after = store.user_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(after.password_hash.as_deref(), Some("$2b$12$owner"));

    // Keeping a session that has ended: nothing changes either.
    assert!(!store
        .change_password(
            user.id,
            CredentialChange {
                hash: Some("$2b$12$attacker"),
                keep: Some(session.id),
                expected_version: Some(after.credential_version),
            },
            now,
        )
        .await
        .unwrap());
    let still = store.user_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(still.password_hash.as_deref(), Some("$2b$12$owner"));
    assert_eq!(still.credential_version, after.credential_version);

    // At the right version and with a live session, it goes through and keeps that session.
    let live = session_for(user.id, now);
    store
        .create_session_with_refresh(&live, "live", after.credential_version)
        .await
        .unwrap();
    assert!(store
        .change_password(
            user.id,
            CredentialChange {
                hash: Some("$2b$12$next"),
                keep: Some(live.id),
                expected_version: Some(after.credential_version),
            },
            now,
        )
        .await
        .unwrap());
    assert!(store
        .session(user.id, live.id, now)
        .await
        .unwrap()
        .is_some());
}

async fn delete_user_expecting_an_old_version_deletes_nothing(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    store
        .change_password(user.id, CredentialChange::default(), now)
        .await
        .unwrap();
    assert!(!store
        .delete_user(user.id, Some(user.credential_version))
        .await
        .unwrap());
    let current = store.user_by_id(user.id).await.unwrap().unwrap();
    assert!(store
        .delete_user(user.id, Some(current.credential_version))
        .await
        .unwrap());
    assert!(store.user_by_id(user.id).await.unwrap().is_none());
}

async fn unlinking_an_identity_moves_the_credential_version(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    store
        .link_identity(user.id, AuthProvider::Github, "gh", now)
        .await
        .unwrap();
    let before = store.user_by_id(user.id).await.unwrap().unwrap();
    assert!(store
        .unlink_identity(user.id, AuthProvider::Github)
        .await
        .unwrap());
    let after = store.user_by_id(user.id).await.unwrap().unwrap();
    assert!(after.credential_version > before.credential_version);
    // A sign-in with the unlinked identity that was in flight starts no session.
    let late = session_for(user.id, now);
    assert!(matches!(
        store
            .create_session_with_refresh(&late, "late", before.credential_version)
            .await,
        Err(StoreError::Conflict)
    ));
}

// ---- rate events ----

/// Records an event under `key` in a window with room to spare.
async fn record(store: &Arc<dyn Store>, key: &str, at: OffsetDateTime, keep_until: OffsetDateTime) {
    let slot = EventSlot {
        id: Uuid::new_v4(),
        at,
        since: at - Duration::hours(2),
        max: 100,
        expires_at: keep_until,
    };
    assert_eq!(
        store.reserve_event(key, slot).await.unwrap(),
        Reserved::Yes,
        "a window with room records the event"
    );
}

/// A slot of a window of `max` events over the 15 minutes before `at`.
fn slot(at: OffsetDateTime, max: u32) -> EventSlot {
    EventSlot {
        id: Uuid::new_v4(),
        at,
        since: at - Duration::minutes(15),
        max,
        expires_at: at + Duration::minutes(15),
    }
}

async fn reserve_event_admits_up_to_max_in_the_window_and_a_refusal_records_nothing(
    store: Arc<dyn Store>,
) {
    let t0 = moment();
    let at = |s: i64| t0 + Duration::seconds(s);
    for s in 0..3 {
        assert_eq!(
            store.reserve_event("k", slot(at(s), 3)).await.unwrap(),
            Reserved::Yes
        );
    }
    for s in 3..6 {
        assert_eq!(
            store.reserve_event("k", slot(at(s), 3)).await.unwrap(),
            Reserved::Full {
                oldest: Some(at(0))
            },
            "a full window refuses and names its oldest event"
        );
    }
    // The refusals added nothing.
    let window = store
        .count_events("k", t0 - Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(window.count, 3);
    // Once the oldest event leaves the window, there is room for one more.
    let later = slot(t0 + Duration::minutes(15) + Duration::milliseconds(500), 3);
    assert_eq!(
        store.reserve_event("k", later).await.unwrap(),
        Reserved::Yes
    );
    assert_eq!(
        store.reserve_event("k", slot(later.at, 3)).await.unwrap(),
        Reserved::Full {
            oldest: Some(at(1))
        }
    );
    // Other keys are independent.
    assert_eq!(
        store.reserve_event("other", slot(t0, 3)).await.unwrap(),
        Reserved::Yes
    );
}

async fn a_released_event_gives_its_slot_back_and_only_its_own(store: Arc<dyn Store>) {
    let t0 = moment();
    let first = slot(t0, 2);
    let second = slot(t0 + Duration::seconds(1), 2);
    assert_eq!(
        store.reserve_event("k", first).await.unwrap(),
        Reserved::Yes
    );
    assert_eq!(
        store.reserve_event("k", second).await.unwrap(),
        Reserved::Yes
    );
    assert!(matches!(
        store
            .reserve_event("k", slot(t0 + Duration::seconds(2), 2))
            .await
            .unwrap(),
        Reserved::Full { .. }
    ));
    store.release_event("k", second.id).await.unwrap();
    // Releasing an unknown event, or under an unknown key, changes nothing.
    store.release_event("k", Uuid::new_v4()).await.unwrap();
    store.release_event("unknown", first.id).await.unwrap();
    let window = store
        .count_events("k", t0 - Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(
        window,
        EventWindow {
            count: 1,
            oldest: Some(t0)
        }
    );
    assert_eq!(
        store
            .reserve_event("k", slot(t0 + Duration::seconds(3), 2))
            .await
            .unwrap(),
        Reserved::Yes
    );
}

async fn concurrent_reservations_admit_exactly_max(store: Arc<dyn Store>) {
    let t0 = moment();
    let barrier = Arc::new(tokio::sync::Barrier::new(24));
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .reserve_event("burst", slot(t0 + Duration::milliseconds(i), 5))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        if task.await.unwrap() == Reserved::Yes {
            admitted += 1;
        }
    }
    assert_eq!(
        admitted, 5,
        "of 24 concurrent attempts exactly the limit got a slot"
    );
    let window = store
        .count_events("burst", t0 - Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(window.count, 5);
}

async fn count_events_counts_only_events_strictly_after_since_and_reports_the_oldest(
    store: Arc<dyn Store>,
) {
    let t0 = moment();
    let keep_until = t0 + Duration::hours(1);
    let at = |s: i64| t0 + Duration::seconds(s);
    for s in [1, 2, 3] {
        record(&store, "signin:ada", at(s), keep_until).await;
    }

    let window = store.count_events("signin:ada", t0).await.unwrap();
    assert_eq!(window.count, 3);
    assert_eq!(window.oldest, Some(at(1)));

    // An event exactly at `since` is outside the window.
    let window = store.count_events("signin:ada", at(1)).await.unwrap();
    assert_eq!(window.count, 2);
    assert_eq!(window.oldest, Some(at(2)));

    let window = store
        .count_events("signin:ada", at(2) + Duration::milliseconds(-1))
        .await
        .unwrap();
    assert_eq!(window.count, 2);
    assert_eq!(window.oldest, Some(at(2)));

    let window = store.count_events("signin:ada", at(3)).await.unwrap();
    assert_eq!(window, EventWindow::default());
    assert_eq!(window.oldest, None);
}

async fn events_at_the_same_instant_count_separately(store: Arc<dyn Store>) {
    let t0 = moment();
    let keep_until = t0 + Duration::hours(1);
    for _ in 0..4 {
        record(&store, "signup:ip", t0, keep_until).await;
    }

    let window = store
        .count_events("signup:ip", t0 - Duration::milliseconds(1))
        .await
        .unwrap();

    assert_eq!(
        window,
        EventWindow {
            count: 4,
            oldest: Some(t0)
        }
    );
}

async fn rate_event_keys_are_independent_and_clear_events_empties_one_key_only(
    store: Arc<dyn Store>,
) {
    let t0 = moment();
    let keep_until = t0 + Duration::hours(1);
    let since = t0 - Duration::seconds(1);
    record(&store, "a", t0, keep_until).await;
    record(&store, "a", t0, keep_until).await;
    let b_at = t0 + Duration::milliseconds(250);
    record(&store, "b", b_at, keep_until).await;

    assert_eq!(store.count_events("a", since).await.unwrap().count, 2);
    let b = store.count_events("b", since).await.unwrap();
    assert_eq!(
        b,
        EventWindow {
            count: 1,
            oldest: Some(b_at)
        }
    );
    let unknown = store.count_events("c", since).await.unwrap();
    assert_eq!(unknown, EventWindow::default());

    store.clear_events("a").await.unwrap();

    assert_eq!(
        store.count_events("a", since).await.unwrap(),
        EventWindow::default()
    );
    assert_eq!(store.count_events("b", since).await.unwrap(), b);
    // Clearing an empty or unknown key is fine, and new events count from zero.
    store.clear_events("a").await.unwrap();
    store.clear_events("never-used").await.unwrap();
    record(&store, "a", t0, keep_until).await;
    assert_eq!(store.count_events("a", since).await.unwrap().count, 1);
}

// ---- api keys ----

async fn a_user_without_keys_has_none_and_set_keys_read_back_equal_in_provider_order(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    assert_eq!(store.api_keys(user.id).await.unwrap(), vec![]);
    assert_eq!(store.api_keys(UserId::new()).await.unwrap(), vec![]);

    // Given in reverse order: reads come back in `KeyProvider::ALL` order all the same.
    let (kestra, together) = (sealed(1), sealed(2));
    let changes = [
        (KeyProvider::Kestra, Some(kestra.clone())),
        (KeyProvider::TogetherAi, Some(together.clone())),
    ];
    update_keys(&store, user.id, &changes, now).await;

    assert_eq!(
        store.api_keys(user.id).await.unwrap(),
        vec![
            stored(KeyProvider::TogetherAi, &together, now),
            stored(KeyProvider::Kestra, &kestra, now),
        ]
    );

    // All four come back in order too.
    let (code_rabbit, oumi) = (sealed(3), sealed(4));
    let changes = [
        (KeyProvider::Oumi, Some(oumi.clone())),
        (KeyProvider::CodeRabbit, Some(code_rabbit.clone())),
    ];
    update_keys(&store, user.id, &changes, now).await;
    let keys = store.api_keys(user.id).await.unwrap();
    let providers: Vec<_> = keys.iter().map(|k| k.provider).collect();
    assert_eq!(providers, KeyProvider::ALL);
    assert_eq!(keys[1], stored(KeyProvider::CodeRabbit, &code_rabbit, now));
    assert_eq!(keys[2], stored(KeyProvider::Oumi, &oumi, now));
}

async fn update_api_keys_applies_sets_and_removals_at_once_and_stamps_only_the_changed_keys(
    store: Arc<dyn Store>,
) {
    let t0 = moment();
    let user = create(&store, "ada@example.com", t0).await;
    let other = create(&store, "grace@example.com", t0).await;
    let (together, code_rabbit, oumi) = (sealed(1), sealed(2), sealed(3));
    let initial = [
        (KeyProvider::TogetherAi, Some(together.clone())),
        (KeyProvider::CodeRabbit, Some(code_rabbit.clone())),
        (KeyProvider::Oumi, Some(oumi.clone())),
    ];
    update_keys(&store, user.id, &initial, t0).await;
    update_keys(&store, other.id, &initial, t0).await;

    // One call replaces one key, removes another, adds a third and leaves the fourth alone.
    let t1 = t0 + Duration::seconds(1);
    let (together_2, kestra) = (sealed(11), sealed(12));
    let changes = [
        (KeyProvider::TogetherAi, Some(together_2.clone())),
        (KeyProvider::CodeRabbit, None),
        (KeyProvider::Kestra, Some(kestra.clone())),
    ];
    update_keys(&store, user.id, &changes, t1).await;

    assert_eq!(
        store.api_keys(user.id).await.unwrap(),
        vec![
            stored(KeyProvider::TogetherAi, &together_2, t1),
            stored(KeyProvider::Oumi, &oumi, t0),
            stored(KeyProvider::Kestra, &kestra, t1),
        ]
    );

    // Setting an existing key to a new seal bumps its `updated_at` only.
    let t2 = t1 + Duration::seconds(1);
    let oumi_2 = sealed(13);
    update_keys(
        &store,
        user.id,
        &[(KeyProvider::Oumi, Some(oumi_2.clone()))],
        t2,
    )
    .await;
    assert_eq!(
        store.api_keys(user.id).await.unwrap(),
        vec![
            stored(KeyProvider::TogetherAi, &together_2, t1),
            stored(KeyProvider::Oumi, &oumi_2, t2),
            stored(KeyProvider::Kestra, &kestra, t1),
        ]
    );

    // Someone else's keys are untouched.
    assert_eq!(
        store.api_keys(other.id).await.unwrap(),
        vec![
            stored(KeyProvider::TogetherAi, &together, t0),
            stored(KeyProvider::CodeRabbit, &code_rabbit, t0),
            stored(KeyProvider::Oumi, &oumi, t0),
        ]
    );
}

async fn removing_an_unset_key_and_an_empty_change_list_succeed_and_change_nothing(
    store: Arc<dyn Store>,
) {
    let t0 = moment();
    let user = create(&store, "ada@example.com", t0).await;
    let bare = create(&store, "grace@example.com", t0).await;
    let together = sealed(1);
    update_keys(
        &store,
        user.id,
        &[(KeyProvider::TogetherAi, Some(together.clone()))],
        t0,
    )
    .await;
    let expected = vec![stored(KeyProvider::TogetherAi, &together, t0)];
    let t1 = t0 + Duration::seconds(1);

    update_keys(&store, user.id, &[(KeyProvider::Kestra, None)], t1).await;
    assert_eq!(store.api_keys(user.id).await.unwrap(), expected);

    update_keys(&store, user.id, &[], t1).await;
    assert_eq!(store.api_keys(user.id).await.unwrap(), expected);

    // The same for a user who never had a key.
    update_keys(&store, bare.id, &[(KeyProvider::Oumi, None)], t1).await;
    update_keys(&store, bare.id, &[], t1).await;
    assert_eq!(store.api_keys(bare.id).await.unwrap(), vec![]);

    assert_eq!(store.count_api_keys().await.unwrap(), 1);
    let page = store.api_keys_page(None, 10).await.unwrap();
    assert_eq!(page, vec![(user.id, expected)]);
}

async fn update_api_keys_of_an_unknown_user_is_false_and_stores_nothing(store: Arc<dyn Store>) {
    let now = moment();
    let known = create(&store, "ada@example.com", now).await;
    let together = sealed(1);
    update_keys(
        &store,
        known.id,
        &[(KeyProvider::TogetherAi, Some(together.clone()))],
        now,
    )
    .await;
    let unknown = UserId::new();

    let attempts: [&[KeyChange]; 4] = [
        &[(KeyProvider::Oumi, Some(sealed(2)))],
        &[(KeyProvider::TogetherAi, None)],
        &[
            (KeyProvider::CodeRabbit, Some(sealed(3))),
            (KeyProvider::Kestra, None),
        ],
        &[],
    ];
    for changes in attempts {
        let changed = store.update_api_keys(unknown, changes, now).await.unwrap();
        assert!(
            !changed,
            "update_api_keys of an unknown user with {changes:?}"
        );
    }

    assert_eq!(store.api_keys(unknown).await.unwrap(), vec![]);
    assert!(store.user_by_id(unknown).await.unwrap().is_none());
    assert_eq!(store.count_api_keys().await.unwrap(), 1);
    let expected = vec![stored(KeyProvider::TogetherAi, &together, now)];
    assert_eq!(store.api_keys(known.id).await.unwrap(), expected);
    let page = store.api_keys_page(None, 10).await.unwrap();
    assert_eq!(page, vec![(known.id, expected)]);
}

async fn reseal_api_key_replaces_only_a_seal_with_the_expected_nonce_and_keeps_updated_at(
    store: Arc<dyn Store>,
) {
    let t0 = moment();
    let user = create(&store, "ada@example.com", t0).await;
    let other = create(&store, "grace@example.com", t0).await;
    let (together, oumi) = (sealed(1), sealed(2));
    let keys = [
        (KeyProvider::TogetherAi, Some(together.clone())),
        (KeyProvider::Oumi, Some(oumi.clone())),
    ];
    update_keys(&store, user.id, &keys, t0).await;
    // Another user's key carries the very same nonce: it must not be touched.
    update_keys(&store, other.id, &keys, t0).await;

    let resealed = SealedKey {
        key_id: "k2".into(),
        ..sealed(21)
    };
    let replaced = store
        .reseal_api_key(user.id, KeyProvider::TogetherAi, &together.nonce, &resealed)
        .await
        .unwrap();
    assert!(replaced);
    let expected = vec![
        stored(KeyProvider::TogetherAi, &resealed, t0),
        stored(KeyProvider::Oumi, &oumi, t0),
    ];
    assert_eq!(store.api_keys(user.id).await.unwrap(), expected);

    // The old nonce is stale now: a second reseal with it loses.
    let again = store
        .reseal_api_key(
            user.id,
            KeyProvider::TogetherAi,
            &together.nonce,
            &sealed(22),
        )
        .await
        .unwrap();
    assert!(!again);
    assert_eq!(store.api_keys(user.id).await.unwrap(), expected);

    // The user changed the key meanwhile: the seal read before the change is stale.
    let t1 = t0 + Duration::seconds(1);
    let oumi_2 = sealed(3);
    update_keys(
        &store,
        user.id,
        &[(KeyProvider::Oumi, Some(oumi_2.clone()))],
        t1,
    )
    .await;
    let stale = store
        .reseal_api_key(user.id, KeyProvider::Oumi, &oumi.nonce, &sealed(23))
        .await
        .unwrap();
    assert!(!stale);
    let expected = vec![
        stored(KeyProvider::TogetherAi, &resealed, t0),
        stored(KeyProvider::Oumi, &oumi_2, t1),
    ];
    assert_eq!(store.api_keys(user.id).await.unwrap(), expected);

    assert_eq!(
        store.api_keys(other.id).await.unwrap(),
        vec![
            stored(KeyProvider::TogetherAi, &together, t0),
            stored(KeyProvider::Oumi, &oumi, t0),
        ]
    );
}

async fn reseal_api_key_of_an_unset_provider_or_an_unknown_user_is_false_and_changes_nothing(
    store: Arc<dyn Store>,
) {
    let t0 = moment();
    let user = create(&store, "ada@example.com", t0).await;
    let (together, kestra) = (sealed(1), sealed(2));
    let keys = [
        (KeyProvider::TogetherAi, Some(together.clone())),
        (KeyProvider::Kestra, Some(kestra.clone())),
    ];
    update_keys(&store, user.id, &keys, t0).await;
    let resealed = sealed(21);

    // A provider that was never set, even with a nonce the user has under another provider.
    let unset = store
        .reseal_api_key(user.id, KeyProvider::Oumi, &together.nonce, &resealed)
        .await
        .unwrap();
    assert!(!unset);

    // A provider whose key was removed.
    update_keys(&store, user.id, &[(KeyProvider::Kestra, None)], t0).await;
    let removed = store
        .reseal_api_key(user.id, KeyProvider::Kestra, &kestra.nonce, &resealed)
        .await
        .unwrap();
    assert!(!removed);

    // A user who does not exist.
    let unknown = UserId::new();
    let nobody = store
        .reseal_api_key(unknown, KeyProvider::TogetherAi, &together.nonce, &resealed)
        .await
        .unwrap();
    assert!(!nobody);

    assert_eq!(
        store.api_keys(user.id).await.unwrap(),
        vec![stored(KeyProvider::TogetherAi, &together, t0)]
    );
    assert_eq!(store.api_keys(unknown).await.unwrap(), vec![]);
    assert_eq!(store.count_api_keys().await.unwrap(), 1);
}

async fn api_keys_page_lists_only_users_with_keys_in_id_order_without_repeats_or_gaps(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let mut expected = Vec::new();
    for i in 0..7u8 {
        let user = create(&store, &format!("user{i}@example.com"), now).await;
        // One to four keys each, so that pages carry every key of every user.
        let keys: Vec<StoredKey> = KeyProvider::ALL
            .into_iter()
            .take(usize::from(i % 4) + 1)
            .map(|p| stored(p, &sealed(i * 4 + p as u8), now))
            .collect();
        let changes: Vec<KeyChange> = keys
            .iter()
            .rev()
            .map(|k| (k.provider, Some(k.sealed.clone())))
            .collect();
        update_keys(&store, user.id, &changes, now).await;
        expected.push((user.id, keys));
    }
    // Neither a user who never had a key nor one whose keys were all removed is listed.
    create(&store, "bare@example.com", now).await;
    let emptied = create(&store, "emptied@example.com", now).await;
    let keys = [
        (KeyProvider::Oumi, Some(sealed(100))),
        (KeyProvider::Kestra, Some(sealed(101))),
    ];
    update_keys(&store, emptied.id, &keys, now).await;
    update_keys(
        &store,
        emptied.id,
        &[(KeyProvider::Oumi, None), (KeyProvider::Kestra, None)],
        now,
    )
    .await;
    expected.sort_by_key(|(id, _)| *id);

    let pages = all_key_pages(&store, 3).await;

    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(pages.concat(), expected);

    // One page large enough holds everything; an exact fit is followed by an empty page.
    assert_eq!(store.api_keys_page(None, 100).await.unwrap(), expected);
    let sizes: Vec<usize> = all_key_pages(&store, 7)
        .await
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(sizes, [7]);
    let last = expected.last().unwrap().0;
    assert_eq!(store.api_keys_page(Some(last), 3).await.unwrap(), vec![]);
}

async fn api_keys_page_starts_after_any_id_and_honours_small_limits(store: Arc<dyn Store>) {
    let now = moment();
    let mut with_keys = Vec::new();
    let mut without_keys = Vec::new();
    for i in 0..10u8 {
        let user = create(&store, &format!("user{i}@example.com"), now).await;
        if i % 2 == 0 {
            update_keys(
                &store,
                user.id,
                &[(KeyProvider::Oumi, Some(sealed(i)))],
                now,
            )
            .await;
            with_keys.push(user.id);
        } else {
            without_keys.push(user.id);
        }
    }
    with_keys.sort();
    let ids = |page: Vec<(UserId, Vec<StoredKey>)>| -> Vec<UserId> {
        page.into_iter().map(|(id, _)| id).collect()
    };

    // `after` need not name a listed user: paging resumes at the next larger id with keys.
    for after in without_keys.iter().chain(&[UserId::new(), UserId::new()]) {
        let expected: Vec<UserId> = with_keys.iter().copied().filter(|id| id > after).collect();
        let page = store.api_keys_page(Some(*after), 100).await.unwrap();
        assert_eq!(ids(page), expected, "after {after}");
    }

    // Limit 1 walks the users one by one.
    let pages = all_key_pages(&store, 1).await;
    let walked: Vec<UserId> = pages.into_iter().flat_map(ids).collect();
    assert_eq!(walked, with_keys);

    // Limit 0 asks for nothing and gets nothing.
    assert_eq!(store.api_keys_page(None, 0).await.unwrap(), vec![]);
}

async fn count_api_keys_counts_keys_over_all_users_and_drops_after_removals(store: Arc<dyn Store>) {
    let now = moment();
    assert_eq!(store.count_api_keys().await.unwrap(), 0);
    let ada = create(&store, "ada@example.com", now).await;
    let grace = create(&store, "grace@example.com", now).await;
    create(&store, "bare@example.com", now).await;
    assert_eq!(store.count_api_keys().await.unwrap(), 0);

    let three = [
        (KeyProvider::TogetherAi, Some(sealed(1))),
        (KeyProvider::CodeRabbit, Some(sealed(2))),
        (KeyProvider::Kestra, Some(sealed(3))),
    ];
    update_keys(&store, ada.id, &three, now).await;
    update_keys(
        &store,
        grace.id,
        &[(KeyProvider::Oumi, Some(sealed(4)))],
        now,
    )
    .await;
    assert_eq!(store.count_api_keys().await.unwrap(), 4);

    // Replacing a key or resealing it does not add one.
    update_keys(
        &store,
        ada.id,
        &[(KeyProvider::Kestra, Some(sealed(5)))],
        now,
    )
    .await;
    let resealed = store
        .reseal_api_key(grace.id, KeyProvider::Oumi, &sealed(4).nonce, &sealed(6))
        .await
        .unwrap();
    assert!(resealed);
    assert_eq!(store.count_api_keys().await.unwrap(), 4);

    let remove_two = [(KeyProvider::TogetherAi, None), (KeyProvider::Kestra, None)];
    update_keys(&store, ada.id, &remove_two, now).await;
    assert_eq!(store.count_api_keys().await.unwrap(), 2);

    update_keys(&store, grace.id, &[(KeyProvider::Oumi, None)], now).await;
    assert_eq!(store.count_api_keys().await.unwrap(), 1);
    update_keys(&store, ada.id, &[(KeyProvider::CodeRabbit, None)], now).await;
    assert_eq!(store.count_api_keys().await.unwrap(), 0);
}

async fn delete_user_deletes_the_users_api_keys(store: Arc<dyn Store>) {
    let now = moment();
    let doomed = create(&store, "ada@example.com", now).await;
    let other = create(&store, "grace@example.com", now).await;
    let two = [
        (KeyProvider::TogetherAi, Some(sealed(1))),
        (KeyProvider::Oumi, Some(sealed(2))),
    ];
    update_keys(&store, doomed.id, &two, now).await;
    let kept = sealed(3);
    update_keys(
        &store,
        other.id,
        &[(KeyProvider::Kestra, Some(kept.clone()))],
        now,
    )
    .await;
    assert_eq!(store.count_api_keys().await.unwrap(), 3);

    assert!(store.delete_user(doomed.id, None).await.unwrap());

    assert_eq!(store.api_keys(doomed.id).await.unwrap(), vec![]);
    assert_eq!(store.count_api_keys().await.unwrap(), 1);
    let expected = vec![stored(KeyProvider::Kestra, &kept, now)];
    assert_eq!(
        store.api_keys_page(None, 10).await.unwrap(),
        vec![(other.id, expected.clone())]
    );
    assert_eq!(store.api_keys(other.id).await.unwrap(), expected);
    // The deleted user's keys cannot come back through an update or a reseal either.
    assert!(!store.update_api_keys(doomed.id, &two, now).await.unwrap());
    let reseal = store
        .reseal_api_key(
            doomed.id,
            KeyProvider::TogetherAi,
            &sealed(1).nonce,
            &sealed(4),
        )
        .await
        .unwrap();
    assert!(!reseal);
    assert_eq!(store.count_api_keys().await.unwrap(), 1);
}

// ---- identities ----

async fn create_user_with_identity_creates_a_user_linked_to_it_and_found_by_it(
    store: Arc<dyn Store>,
) {
    let at = moment();
    let new = oauth_user("ada@example.com", at);
    let expected = User {
        id: new.id,
        name: new.name.clone(),
        email: new.email.clone(),
        image: new.image.clone(),
        password_hash: None,
        linked: vec![AuthProvider::Github],
        email_verified: None,
        credential_version: 0,
        created_at: at,
        updated_at: at,
    };

    let created = store
        .create_user_with_identity(new, AuthProvider::Github, "gh-1")
        .await
        .unwrap();
    assert_same_user(&created, &expected);
    assert_eq!(created.providers(), vec![AuthProvider::Github]);

    let by_identity = store
        .user_by_identity(AuthProvider::Github, "gh-1")
        .await
        .unwrap()
        .unwrap();
    assert_same_user(&by_identity, &expected);
    let by_id = store.user_by_id(expected.id).await.unwrap().unwrap();
    assert_same_user(&by_id, &expected);
    let by_email = store.user_by_email(&expected.email).await.unwrap().unwrap();
    assert_same_user(&by_email, &expected);

    // With a password as well, the user can sign in both ways.
    let with_password = new_user("grace@example.com", at);
    let both = store
        .create_user_with_identity(with_password, AuthProvider::Google, "g-1")
        .await
        .unwrap();
    let stored = store.user_by_id(both.id).await.unwrap().unwrap();
    assert_same_user(&stored, &both);
    assert_eq!(
        stored.providers(),
        vec![AuthProvider::Credentials, AuthProvider::Google]
    );
}

async fn an_unknown_identity_reads_as_absent(store: Arc<dyn Store>) {
    assert_eq!(
        identity_owner(&store, AuthProvider::Github, "gh-1").await,
        None
    );
    let now = moment();
    create_with_identity(&store, "ada@example.com", AuthProvider::Github, "gh-1", now).await;
    create(&store, "grace@example.com", now).await;

    // Another account id of the provider, and the same account id at another provider.
    assert_eq!(
        identity_owner(&store, AuthProvider::Github, "gh-2").await,
        None
    );
    assert_eq!(
        identity_owner(&store, AuthProvider::Google, "gh-1").await,
        None
    );
    assert_eq!(identity_owner(&store, AuthProvider::Github, "").await, None);
}

async fn the_same_identity_for_a_second_new_user_is_a_conflict_and_leaves_no_user_behind(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let first =
        create_with_identity(&store, "ada@example.com", AuthProvider::Github, "gh-1", now).await;

    let second = oauth_user("grace@example.com", now);
    let second_id = second.id;
    let result = store
        .create_user_with_identity(second, AuthProvider::Github, "gh-1")
        .await;

    assert_conflict(result);
    assert!(store.user_by_id(second_id).await.unwrap().is_none());
    let grace = email("grace@example.com");
    assert!(store.user_by_email(&grace).await.unwrap().is_none());
    let owner = store
        .user_by_identity(AuthProvider::Github, "gh-1")
        .await
        .unwrap()
        .unwrap();
    assert_same_user(&owner, &first);
    // The email is free: nothing half-made holds it.
    create(&store, "grace@example.com", now).await;
}

async fn create_user_with_identity_with_a_taken_email_is_a_conflict_and_leaves_no_identity_behind(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let ada = create(&store, "ada@example.com", now).await;

    let result = store
        .create_user_with_identity(
            oauth_user("ada@example.com", now),
            AuthProvider::Github,
            "gh-1",
        )
        .await;

    assert_conflict(result);
    assert_eq!(
        identity_owner(&store, AuthProvider::Github, "gh-1").await,
        None
    );
    let stored = store.user_by_id(ada.id).await.unwrap().unwrap();
    assert_same_user(&stored, &ada);
    // The identity is free: nothing half-made holds it.
    let grace = create_with_identity(
        &store,
        "grace@example.com",
        AuthProvider::Github,
        "gh-1",
        now,
    )
    .await;
    assert_eq!(
        identity_owner(&store, AuthProvider::Github, "gh-1").await,
        Some(grace.id)
    );
}

async fn concurrent_sign_ups_with_one_identity_create_exactly_one_user(store: Arc<dyn Store>) {
    let at = moment();
    let addresses: Vec<String> = (0..20).map(|i| format!("race{i}@example.com")).collect();
    let tasks: Vec<_> = addresses
        .iter()
        .map(|address| {
            let store = store.clone();
            let new = oauth_user(address, at);
            let id = new.id;
            tokio::spawn(async move {
                let result = store
                    .create_user_with_identity(new, AuthProvider::Github, "gh-race")
                    .await;
                (id, result)
            })
        })
        .collect();

    let mut winners = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            (id, Ok(user)) => {
                assert_eq!(user.id, id);
                assert_eq!(user.linked, vec![AuthProvider::Github]);
                winners.push(id);
            }
            (_, Err(StoreError::Conflict)) => conflicts += 1,
            (_, Err(other)) => panic!("expected Ok or Conflict, got {other:?}"),
        }
    }

    assert_eq!(winners.len(), 1, "exactly one create succeeds");
    assert_eq!(conflicts, 19, "every other create is a conflict");
    assert_eq!(
        identity_owner(&store, AuthProvider::Github, "gh-race").await,
        Some(winners[0])
    );
    let mut existing = Vec::new();
    for address in &addresses {
        if let Some(user) = store.user_by_email(&email(address)).await.unwrap() {
            existing.push(user.id);
        }
    }
    assert_eq!(existing, winners, "only the winner's user exists");
}

async fn link_identity_adds_providers_to_a_password_user_in_order_and_bumps_updated_at(
    store: Arc<dyn Store>,
) {
    let t0 = moment();
    let ada = create(&store, "ada@example.com", t0).await;
    let grace = create(&store, "grace@example.com", t0).await;

    let t1 = t0 + Duration::seconds(1);
    link(&store, ada.id, AuthProvider::Github, "gh-1", t1).await;
    let user = store.user_by_id(ada.id).await.unwrap().unwrap();
    assert_eq!(user.linked, vec![AuthProvider::Github]);
    assert_eq!(
        user.providers(),
        vec![AuthProvider::Credentials, AuthProvider::Github]
    );
    assert_eq!(user.updated_at, t1);
    assert_eq!(user.created_at, t0);
    assert_eq!(user.password_hash, ada.password_hash);
    let by_identity = store
        .user_by_identity(AuthProvider::Github, "gh-1")
        .await
        .unwrap()
        .unwrap();
    assert_same_user(&by_identity, &user);

    let t2 = t1 + Duration::seconds(1);
    link(&store, ada.id, AuthProvider::Google, "g-1", t2).await;
    let user = store.user_by_id(ada.id).await.unwrap().unwrap();
    let all = vec![
        AuthProvider::Credentials,
        AuthProvider::Github,
        AuthProvider::Google,
    ];
    assert_eq!(user.providers(), all);
    assert_eq!(user.updated_at, t2);

    // Linked the other way round, the providers come out in the same order.
    link(&store, grace.id, AuthProvider::Google, "g-2", t1).await;
    link(&store, grace.id, AuthProvider::Github, "gh-2", t2).await;
    let user = store.user_by_id(grace.id).await.unwrap().unwrap();
    assert_eq!(user.providers(), all);
    let by_email = store.user_by_email(&grace.email).await.unwrap().unwrap();
    assert_same_user(&by_email, &user);
    assert_eq!(
        identity_owner(&store, AuthProvider::Google, "g-2").await,
        Some(grace.id)
    );
}

async fn link_identity_of_an_unknown_user_is_false_and_links_nothing(store: Arc<dyn Store>) {
    let now = moment();
    let ada = create(&store, "ada@example.com", now).await;

    let linked = store
        .link_identity(UserId::new(), AuthProvider::Github, "gh-1", now)
        .await
        .unwrap();

    assert!(!linked);
    assert_eq!(
        identity_owner(&store, AuthProvider::Github, "gh-1").await,
        None
    );
    // The identity is free for a user who exists.
    link(&store, ada.id, AuthProvider::Github, "gh-1", now).await;
    assert_eq!(
        identity_owner(&store, AuthProvider::Github, "gh-1").await,
        Some(ada.id)
    );
}

async fn linking_an_identity_that_is_linked_already_is_a_conflict_and_changes_nothing(
    store: Arc<dyn Store>,
) {
    let t0 = moment();
    let ada =
        create_with_identity(&store, "ada@example.com", AuthProvider::Github, "gh-1", t0).await;
    let grace = create(&store, "grace@example.com", t0).await;
    let t1 = t0 + Duration::seconds(1);

    // To another user, and again to its own user.
    assert_conflict(
        store
            .link_identity(grace.id, AuthProvider::Github, "gh-1", t1)
            .await,
    );
    assert_conflict(
        store
            .link_identity(ada.id, AuthProvider::Github, "gh-1", t1)
            .await,
    );

    let owner = store
        .user_by_identity(AuthProvider::Github, "gh-1")
        .await
        .unwrap()
        .unwrap();
    assert_same_user(&owner, &ada);
    let stored = store.user_by_id(grace.id).await.unwrap().unwrap();
    assert_same_user(&stored, &grace);
}

async fn a_user_cannot_link_two_identities_of_one_provider(store: Arc<dyn Store>) {
    let t0 = moment();
    let ada = create(&store, "ada@example.com", t0).await;
    let grace = create(&store, "grace@example.com", t0).await;
    link(&store, ada.id, AuthProvider::Github, "gh-1", t0).await;

    let t1 = t0 + Duration::seconds(1);
    assert_conflict(
        store
            .link_identity(ada.id, AuthProvider::Github, "gh-2", t1)
            .await,
    );

    assert_eq!(
        identity_owner(&store, AuthProvider::Github, "gh-2").await,
        None
    );
    let user = store.user_by_id(ada.id).await.unwrap().unwrap();
    assert_eq!(user.linked, vec![AuthProvider::Github]);
    assert_eq!(user.updated_at, t0);
    assert_eq!(
        identity_owner(&store, AuthProvider::Github, "gh-1").await,
        Some(ada.id)
    );
    // The same holds for a user created with an identity.
    let alan =
        create_with_identity(&store, "alan@example.com", AuthProvider::Google, "g-1", t0).await;
    assert_conflict(
        store
            .link_identity(alan.id, AuthProvider::Google, "g-2", t1)
            .await,
    );
    // The refused identity is still free for someone else.
    link(&store, grace.id, AuthProvider::Github, "gh-2", t1).await;
    assert_eq!(
        identity_owner(&store, AuthProvider::Github, "gh-2").await,
        Some(grace.id)
    );
}

async fn unlink_identity_removes_the_identity_once_then_is_false(store: Arc<dyn Store>) {
    let now = moment();
    let ada = create(&store, "ada@example.com", now).await;
    let grace = create(&store, "grace@example.com", now).await;
    link(&store, ada.id, AuthProvider::Github, "gh-1", now).await;
    link(&store, ada.id, AuthProvider::Google, "g-1", now).await;
    link(&store, grace.id, AuthProvider::Github, "gh-2", now).await;

    assert!(store
        .unlink_identity(ada.id, AuthProvider::Github)
        .await
        .unwrap());
    assert!(!store
        .unlink_identity(ada.id, AuthProvider::Github)
        .await
        .unwrap());

    assert_eq!(
        identity_owner(&store, AuthProvider::Github, "gh-1").await,
        None
    );
    let user = store.user_by_id(ada.id).await.unwrap().unwrap();
    assert_eq!(user.linked, vec![AuthProvider::Google]);
    assert_eq!(
        user.providers(),
        vec![AuthProvider::Credentials, AuthProvider::Google]
    );
    assert_eq!(
        identity_owner(&store, AuthProvider::Google, "g-1").await,
        Some(ada.id)
    );
    // Someone else's identity of the same provider is untouched.
    assert_eq!(
        identity_owner(&store, AuthProvider::Github, "gh-2").await,
        Some(grace.id)
    );
    let other = store.user_by_id(grace.id).await.unwrap().unwrap();
    assert_eq!(other.linked, vec![AuthProvider::Github]);

    // The last identity goes the same way; a provider never linked and an unknown user are false.
    assert!(store
        .unlink_identity(ada.id, AuthProvider::Google)
        .await
        .unwrap());
    let user = store.user_by_id(ada.id).await.unwrap().unwrap();
    assert_eq!(user.linked, vec![]);
    assert_eq!(user.providers(), vec![AuthProvider::Credentials]);
    assert!(!store
        .unlink_identity(ada.id, AuthProvider::Google)
        .await
        .unwrap());
    assert!(!store
        .unlink_identity(UserId::new(), AuthProvider::Github)
        .await
        .unwrap());
}

async fn an_unlinked_identity_can_be_linked_to_another_user(store: Arc<dyn Store>) {
    let t0 = moment();
    let ada =
        create_with_identity(&store, "ada@example.com", AuthProvider::Github, "gh-1", t0).await;
    let grace = create(&store, "grace@example.com", t0).await;
    assert!(store
        .unlink_identity(ada.id, AuthProvider::Github)
        .await
        .unwrap());

    let t1 = t0 + Duration::seconds(1);
    link(&store, grace.id, AuthProvider::Github, "gh-1", t1).await;

    let owner = store
        .user_by_identity(AuthProvider::Github, "gh-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.id, grace.id);
    assert_eq!(owner.linked, vec![AuthProvider::Github]);
    assert_eq!(owner.updated_at, t1);
    // The first user may link another identity of that provider now.
    link(&store, ada.id, AuthProvider::Github, "gh-3", t1).await;
    let user = store.user_by_id(ada.id).await.unwrap().unwrap();
    assert_eq!(user.linked, vec![AuthProvider::Github]);
    assert_eq!(
        identity_owner(&store, AuthProvider::Github, "gh-3").await,
        Some(ada.id)
    );
}

async fn delete_user_removes_the_users_identities_and_frees_them(store: Arc<dyn Store>) {
    let now = moment();
    let doomed =
        create_with_identity(&store, "ada@example.com", AuthProvider::Github, "gh-1", now).await;
    link(&store, doomed.id, AuthProvider::Google, "g-1", now).await;
    let other = create_with_identity(
        &store,
        "grace@example.com",
        AuthProvider::Github,
        "gh-2",
        now,
    )
    .await;

    assert!(store.delete_user(doomed.id, None).await.unwrap());

    assert_eq!(
        identity_owner(&store, AuthProvider::Github, "gh-1").await,
        None
    );
    assert_eq!(
        identity_owner(&store, AuthProvider::Google, "g-1").await,
        None
    );
    assert!(!store
        .unlink_identity(doomed.id, AuthProvider::Github)
        .await
        .unwrap());
    let kept = store
        .user_by_identity(AuthProvider::Github, "gh-2")
        .await
        .unwrap()
        .unwrap();
    assert_same_user(&kept, &other);

    // The freed identities can be used again, by a new user and by an existing one.
    let again = create_with_identity(
        &store,
        "alan@example.com",
        AuthProvider::Github,
        "gh-1",
        now,
    )
    .await;
    assert_eq!(
        identity_owner(&store, AuthProvider::Github, "gh-1").await,
        Some(again.id)
    );
    link(&store, other.id, AuthProvider::Google, "g-1", now).await;
    assert_eq!(
        identity_owner(&store, AuthProvider::Google, "g-1").await,
        Some(other.id)
    );
}

// ---- tokens ----

async fn a_put_token_is_taken_once_with_its_record_then_is_gone(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let expires_at = now + Duration::minutes(15);
    let data = r#"{"redirect":"/settings","verifier":"ünïcødé"}"#;
    put(
        &store,
        TokenKind::OauthState,
        "h1",
        Some(user.id),
        data,
        expires_at,
    )
    .await;

    let taken = store
        .take_token(TokenKind::OauthState, "h1", now)
        .await
        .unwrap();
    assert_eq!(taken, Some(token(Some(user.id), data, expires_at)));

    assert_eq!(
        store
            .take_token(TokenKind::OauthState, "h1", now)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .take_token(TokenKind::OauthState, "h2", now)
            .await
            .unwrap(),
        None
    );
}

async fn a_second_put_token_with_the_same_kind_and_hash_is_a_conflict(store: Arc<dyn Store>) {
    let now = moment();
    let expires_at = now + Duration::minutes(15);
    put(
        &store,
        TokenKind::OauthState,
        "h1",
        None,
        "first",
        expires_at,
    )
    .await;

    let later = expires_at + Duration::minutes(5);
    assert_conflict(
        store
            .put_token(TokenKind::OauthState, "h1", None, "second", later)
            .await,
    );

    // The first one stands, unchanged.
    let taken = store
        .take_token(TokenKind::OauthState, "h1", now)
        .await
        .unwrap();
    assert_eq!(taken, Some(token(None, "first", expires_at)));
}

async fn tokens_of_different_kinds_with_the_same_hash_are_independent(store: Arc<dyn Store>) {
    let now = moment();
    let expires_at = now + Duration::minutes(15);
    put(
        &store,
        TokenKind::OauthState,
        "h1",
        None,
        "state",
        expires_at,
    )
    .await;
    put(&store, TokenKind::OauthCode, "h1", None, "code", expires_at).await;

    let state = store
        .take_token(TokenKind::OauthState, "h1", now)
        .await
        .unwrap();
    assert_eq!(state, Some(token(None, "state", expires_at)));
    assert_eq!(
        store
            .take_token(TokenKind::OauthState, "h1", now)
            .await
            .unwrap(),
        None
    );

    // Spending one kind left the other in place; an unknown kind finds nothing.
    assert_eq!(
        store
            .take_token(TokenKind::VerifyEmail, "h1", now)
            .await
            .unwrap(),
        None
    );
    let code = store
        .take_token(TokenKind::OauthCode, "h1", now)
        .await
        .unwrap();
    assert_eq!(code, Some(token(None, "code", expires_at)));
}

async fn an_expired_token_is_not_taken_and_is_gone(store: Arc<dyn Store>) {
    let now = moment();
    let expires_at = now + Duration::hours(1);
    put(
        &store,
        TokenKind::OauthCode,
        "live",
        None,
        "live",
        expires_at,
    )
    .await;
    put(
        &store,
        TokenKind::OauthCode,
        "dead",
        None,
        "dead",
        expires_at,
    )
    .await;

    // Expiry is judged against the `now` given: one millisecond before it the token is good...
    let just_before = expires_at - Duration::milliseconds(1);
    let live = store
        .take_token(TokenKind::OauthCode, "live", just_before)
        .await
        .unwrap();
    assert_eq!(live, Some(token(None, "live", expires_at)));

    // ...from its expiry on it is not, and a failed take spends it all the same.
    let dead = store
        .take_token(TokenKind::OauthCode, "dead", expires_at)
        .await;
    assert_eq!(dead.unwrap(), None);
    let after = store.take_token(TokenKind::OauthCode, "dead", now).await;
    assert_eq!(after.unwrap(), None);

    // The same for a token taken long after its expiry.
    put(&store, TokenKind::OauthCode, "old", None, "old", expires_at).await;
    let much_later = expires_at + Duration::days(1);
    let old = store
        .take_token(TokenKind::OauthCode, "old", much_later)
        .await;
    assert_eq!(old.unwrap(), None);
    assert_eq!(
        store
            .take_token(TokenKind::OauthCode, "old", now)
            .await
            .unwrap(),
        None
    );
}

async fn a_token_without_a_user_is_taken_without_one(store: Arc<dyn Store>) {
    let now = moment();
    let expires_at = now + Duration::minutes(10);
    put(&store, TokenKind::OauthState, "anon", None, "", expires_at).await;

    let taken = store
        .take_token(TokenKind::OauthState, "anon", now)
        .await
        .unwrap();

    assert_eq!(taken, Some(token(None, "", expires_at)));
    assert_eq!(
        store
            .take_token(TokenKind::OauthState, "anon", now)
            .await
            .unwrap(),
        None
    );
}

async fn concurrent_takes_of_one_token_give_it_exactly_once(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let expires_at = now + Duration::minutes(10);
    put(
        &store,
        TokenKind::OauthCode,
        "race",
        Some(user.id),
        "once",
        expires_at,
    )
    .await;

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.take_token(TokenKind::OauthCode, "race", now).await })
        })
        .collect();
    let mut taken = Vec::new();
    for task in tasks {
        if let Some(record) = task.await.unwrap().unwrap() {
            taken.push(record);
        }
    }

    assert_eq!(taken, vec![token(Some(user.id), "once", expires_at)]);
    assert_eq!(
        store
            .take_token(TokenKind::OauthCode, "race", now)
            .await
            .unwrap(),
        None
    );
}

async fn delete_user_removes_the_users_tokens(store: Arc<dyn Store>) {
    let now = moment();
    let doomed = create(&store, "ada@example.com", now).await;
    let other = create(&store, "grace@example.com", now).await;
    let expires_at = now + Duration::minutes(10);
    put(
        &store,
        TokenKind::OauthCode,
        "d1",
        Some(doomed.id),
        "d1",
        expires_at,
    )
    .await;
    put(
        &store,
        TokenKind::VerifyEmail,
        "d2",
        Some(doomed.id),
        "d2",
        expires_at,
    )
    .await;
    put(
        &store,
        TokenKind::OauthCode,
        "o1",
        Some(other.id),
        "o1",
        expires_at,
    )
    .await;
    put(&store, TokenKind::OauthState, "a1", None, "a1", expires_at).await;

    assert!(store.delete_user(doomed.id, None).await.unwrap());

    assert_eq!(
        store
            .take_token(TokenKind::OauthCode, "d1", now)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .take_token(TokenKind::VerifyEmail, "d2", now)
            .await
            .unwrap(),
        None
    );
    let kept = store
        .take_token(TokenKind::OauthCode, "o1", now)
        .await
        .unwrap();
    assert_eq!(kept, Some(token(Some(other.id), "o1", expires_at)));
    let anonymous = store
        .take_token(TokenKind::OauthState, "a1", now)
        .await
        .unwrap();
    assert_eq!(anonymous, Some(token(None, "a1", expires_at)));
}

// ---- health ----

async fn ping_succeeds(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}
