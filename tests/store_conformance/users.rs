//! Conformance cases: users.

use super::*;

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
    delete_user_removes_the_user_and_its_sessions_and_is_false_the_second_time,
);

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
        mfa_enabled: false,
        passkeys: 0,
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
