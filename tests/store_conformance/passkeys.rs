//! Conformance cases: passkeys (WebAuthn credentials) and users' WebAuthn handles.

use super::*;

conformance!(
    a_user_handle_is_set_once_and_kept,
    added_passkeys_are_listed_oldest_first_and_counted_on_the_user,
    a_credential_id_is_registered_once_across_users,
    a_passkey_of_an_unknown_user_is_not_added,
    a_passkey_is_found_by_its_credential_id_with_its_users_handle,
    rename_touches_only_the_users_own_passkey,
    delete_refuses_the_last_way_to_sign_in_and_moves_the_credential_version,
    concurrent_deletes_of_the_last_two_passkeys_leave_one,
    a_use_is_recorded_only_at_the_expected_counter,
    concurrent_uses_at_one_counter_record_exactly_one,
    the_first_proof_of_the_address_removes_every_passkey,
    delete_user_removes_the_users_passkeys_and_frees_their_credential_ids,
);

fn passkey(user: UserId, credential_id: &[u8], at: OffsetDateTime) -> PasskeyRecord {
    PasskeyRecord {
        id: Uuid::new_v4(),
        user_id: user,
        credential_id: credential_id.to_vec(),
        name: "Laptop".into(),
        credential: r#"{"cred":"opaque to the store"}"#.into(),
        counter: 3,
        backup_eligible: true,
        backup_state: false,
        transports: vec!["internal".into(), "hybrid".into()],
        created_at: at,
        last_used_at: None,
    }
}

async fn add(store: &Arc<dyn Store>, record: &PasskeyRecord) {
    assert!(store.add_passkey(record).await.unwrap(), "added");
}

fn used(previous: u32, counter: u32, at: OffsetDateTime) -> PasskeyUse {
    PasskeyUse {
        previous_counter: previous,
        counter,
        backup_eligible: true,
        backup_state: true,
        at,
    }
}

async fn a_user_handle_is_set_once_and_kept(store: Arc<dyn Store>) {
    let user = create(&store, "ada@example.com", moment()).await;
    let first = store.webauthn_handle(user.id, [1; 16]).await.unwrap();
    assert_eq!(first, Some([1; 16]));
    let again = store.webauthn_handle(user.id, [2; 16]).await.unwrap();
    assert_eq!(again, Some([1; 16]), "the first handle stays");
    let other = create(&store, "grace@example.com", moment()).await;
    assert_eq!(
        store.webauthn_handle(other.id, [3; 16]).await.unwrap(),
        Some([3; 16])
    );
    assert_eq!(
        store.webauthn_handle(UserId::new(), [4; 16]).await.unwrap(),
        None
    );
}

async fn added_passkeys_are_listed_oldest_first_and_counted_on_the_user(store: Arc<dyn Store>) {
    let at = moment();
    let user = create(&store, "ada@example.com", at).await;
    assert!(store.passkeys(user.id).await.unwrap().is_empty());
    let second = passkey(user.id, b"cred-2", at + Duration::seconds(2));
    let first = PasskeyRecord {
        last_used_at: Some(at + Duration::seconds(9)),
        ..passkey(user.id, b"cred-1", at + Duration::seconds(1))
    };
    add(&store, &second).await;
    add(&store, &first).await;
    assert_eq!(
        store.passkeys(user.id).await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    let stored = store.user_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(stored.passkeys, 2);
    assert_eq!(
        stored.providers(),
        vec![AuthProvider::Credentials, AuthProvider::Passkey]
    );
    // The session check's read counts them too.
    let session = session_for(user.id, at);
    store.create_session(&session).await.unwrap();
    let (_, with_user) = store
        .session_with_user(user.id, session.id, at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(with_user.passkeys, 2);
    let other = create(&store, "grace@example.com", at).await;
    assert!(store.passkeys(other.id).await.unwrap().is_empty());
    assert_eq!(
        store.user_by_id(other.id).await.unwrap().unwrap().passkeys,
        0
    );
}

async fn a_credential_id_is_registered_once_across_users(store: Arc<dyn Store>) {
    let at = moment();
    let ada = create(&store, "ada@example.com", at).await;
    let grace = create(&store, "grace@example.com", at).await;
    add(&store, &passkey(ada.id, b"shared", at)).await;
    assert_conflict(store.add_passkey(&passkey(grace.id, b"shared", at)).await);
    assert_conflict(store.add_passkey(&passkey(ada.id, b"shared", at)).await);
    assert!(store.passkeys(grace.id).await.unwrap().is_empty());
    assert_eq!(store.passkeys(ada.id).await.unwrap().len(), 1);
    // A refused add leaves the counts as they were.
    assert_eq!(store.user_by_id(ada.id).await.unwrap().unwrap().passkeys, 1);
    assert_eq!(
        store.user_by_id(grace.id).await.unwrap().unwrap().passkeys,
        0
    );
}

async fn a_passkey_of_an_unknown_user_is_not_added(store: Arc<dyn Store>) {
    let ghost = UserId::new();
    assert!(!store
        .add_passkey(&passkey(ghost, b"cred", moment()))
        .await
        .unwrap());
    assert!(store
        .passkey_by_credential(b"cred")
        .await
        .unwrap()
        .is_none());
}

async fn a_passkey_is_found_by_its_credential_id_with_its_users_handle(store: Arc<dyn Store>) {
    let at = moment();
    let user = create(&store, "ada@example.com", at).await;
    let record = passkey(user.id, b"cred-1", at);
    add(&store, &record).await;
    assert_eq!(
        store.passkey_by_credential(b"cred-1").await.unwrap(),
        Some((record.clone(), None)),
        "no handle yet"
    );
    store.webauthn_handle(user.id, [7; 16]).await.unwrap();
    assert_eq!(
        store.passkey_by_credential(b"cred-1").await.unwrap(),
        Some((record, Some([7; 16])))
    );
    assert!(store
        .passkey_by_credential(b"cred-")
        .await
        .unwrap()
        .is_none());
    assert!(store.passkey_by_credential(b"").await.unwrap().is_none());
}

async fn rename_touches_only_the_users_own_passkey(store: Arc<dyn Store>) {
    let at = moment();
    let ada = create(&store, "ada@example.com", at).await;
    let grace = create(&store, "grace@example.com", at).await;
    let record = passkey(ada.id, b"cred-1", at);
    add(&store, &record).await;
    assert_eq!(
        store
            .rename_passkey(grace.id, record.id, "Mine")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .rename_passkey(ada.id, Uuid::new_v4(), "Mine")
            .await
            .unwrap(),
        None
    );
    let renamed = store
        .rename_passkey(ada.id, record.id, "Phone")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        renamed,
        PasskeyRecord {
            name: "Phone".into(),
            ..record
        }
    );
    assert_eq!(store.passkeys(ada.id).await.unwrap(), vec![renamed]);
}

async fn delete_refuses_the_last_way_to_sign_in_and_moves_the_credential_version(
    store: Arc<dyn Store>,
) {
    let at = moment();
    // Only passkeys: the last one stays.
    let user = store
        .create_user(oauth_user("ada@example.com", at))
        .await
        .unwrap();
    let (one, two) = (
        passkey(user.id, b"cred-1", at),
        passkey(user.id, b"cred-2", at + Duration::seconds(1)),
    );
    add(&store, &one).await;
    add(&store, &two).await;
    let version = store
        .user_by_id(user.id)
        .await
        .unwrap()
        .unwrap()
        .credential_version;
    assert_eq!(
        store.delete_passkey(user.id, one.id).await.unwrap(),
        PasskeyDeletion::Deleted
    );
    let after = store.user_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(after.passkeys, 1);
    assert!(
        after.credential_version > version,
        "a sign-in in flight with it starts no session"
    );
    assert_eq!(
        store.delete_passkey(user.id, two.id).await.unwrap(),
        PasskeyDeletion::LastSignInMethod
    );
    assert_eq!(store.passkeys(user.id).await.unwrap(), vec![two.clone()]);
    assert_eq!(
        store.delete_passkey(user.id, one.id).await.unwrap(),
        PasskeyDeletion::NotFound
    );
    // Another user's passkey is not found.
    let other = create(&store, "grace@example.com", at).await;
    assert_eq!(
        store.delete_passkey(other.id, two.id).await.unwrap(),
        PasskeyDeletion::NotFound
    );
    // A linked identity, or a password, is another way in.
    link(&store, user.id, AuthProvider::Github, "gh-1", at).await;
    assert_eq!(
        store.delete_passkey(user.id, two.id).await.unwrap(),
        PasskeyDeletion::Deleted
    );
    let last = passkey(other.id, b"cred-3", at);
    add(&store, &last).await;
    assert_eq!(
        store.delete_passkey(other.id, last.id).await.unwrap(),
        PasskeyDeletion::Deleted
    );
    assert_eq!(
        store.user_by_id(other.id).await.unwrap().unwrap().passkeys,
        0
    );
}

async fn concurrent_deletes_of_the_last_two_passkeys_leave_one(store: Arc<dyn Store>) {
    let at = moment();
    for round in 0..5 {
        let user = store
            .create_user(oauth_user(&format!("u{round}@example.com"), at))
            .await
            .unwrap();
        let ids: Vec<Uuid> = futures_util::future::join_all((0..2u8).map(|i| {
            let record = passkey(user.id, format!("r{round}-{i}").as_bytes(), at);
            let store = store.clone();
            async move {
                add(&store, &record).await;
                record.id
            }
        }))
        .await;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| {
                let (store, barrier, id, user) = (store.clone(), barrier.clone(), *id, user.id);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.delete_passkey(user, id).await.unwrap()
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results.sort_by_key(|r| *r == PasskeyDeletion::Deleted);
        assert_eq!(
            results,
            vec![PasskeyDeletion::LastSignInMethod, PasskeyDeletion::Deleted]
        );
        assert_eq!(store.passkeys(user.id).await.unwrap().len(), 1);
        assert_eq!(
            store.user_by_id(user.id).await.unwrap().unwrap().passkeys,
            1
        );
    }
}

async fn a_use_is_recorded_only_at_the_expected_counter(store: Arc<dyn Store>) {
    let at = moment();
    let user = create(&store, "ada@example.com", at).await;
    let record = passkey(user.id, b"cred-1", at);
    add(&store, &record).await;
    let later = at + Duration::seconds(30);
    assert!(!store
        .record_passkey_use(record.id, used(2, 9, later))
        .await
        .unwrap());
    assert!(!store
        .record_passkey_use(Uuid::new_v4(), used(3, 9, later))
        .await
        .unwrap());
    assert!(store
        .record_passkey_use(record.id, used(3, 9, later))
        .await
        .unwrap());
    assert!(!store
        .record_passkey_use(record.id, used(3, 10, later))
        .await
        .unwrap());
    let stored = store.passkeys(user.id).await.unwrap();
    assert_eq!(
        stored,
        vec![PasskeyRecord {
            counter: 9,
            backup_state: true,
            last_used_at: Some(later),
            ..record
        }]
    );
}

async fn concurrent_uses_at_one_counter_record_exactly_one(store: Arc<dyn Store>) {
    let at = moment();
    let user = create(&store, "ada@example.com", at).await;
    let record = passkey(user.id, b"cred-1", at);
    add(&store, &record).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (store, barrier, id) = (store.clone(), barrier.clone(), record.id);
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .record_passkey_use(id, used(3, 4 + i, at))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut recorded = 0;
    for task in tasks {
        recorded += usize::from(task.await.unwrap());
    }
    assert_eq!(recorded, 1);
}

async fn the_first_proof_of_the_address_removes_every_passkey(store: Arc<dyn Store>) {
    let at = moment();
    let user = create(&store, "ada@example.com", at).await;
    add(&store, &passkey(user.id, b"cred-1", at)).await;
    add(&store, &passkey(user.id, b"cred-2", at)).await;
    let session = session_for(user.id, at);
    store.create_session(&session).await.unwrap();
    let removed = store.prove_email(user.id, at, None, false).await.unwrap();
    assert_eq!(removed, Some(vec![AuthProvider::Passkey]));
    let stored = store.user_by_id(user.id).await.unwrap().unwrap();
    assert_eq!(stored.passkeys, 0);
    assert_eq!(stored.providers(), vec![AuthProvider::Credentials]);
    assert!(store.passkeys(user.id).await.unwrap().is_empty());
    assert!(store
        .session(user.id, session.id, at)
        .await
        .unwrap()
        .is_none());
    // Added after the proof, a passkey stays through another verification.
    let kept = passkey(user.id, b"cred-3", at);
    add(&store, &kept).await;
    assert_eq!(
        store.prove_email(user.id, at, None, false).await.unwrap(),
        None
    );
    assert_eq!(store.passkeys(user.id).await.unwrap(), vec![kept]);
}

async fn delete_user_removes_the_users_passkeys_and_frees_their_credential_ids(
    store: Arc<dyn Store>,
) {
    let at = moment();
    let user = create(&store, "ada@example.com", at).await;
    add(&store, &passkey(user.id, b"cred-1", at)).await;
    assert!(store.delete_user(user.id, None).await.unwrap());
    assert!(store
        .passkey_by_credential(b"cred-1")
        .await
        .unwrap()
        .is_none());
    let other = create(&store, "grace@example.com", at).await;
    add(&store, &passkey(other.id, b"cred-1", at)).await;
}
