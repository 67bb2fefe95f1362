//! Conformance cases: identities.

use super::*;

conformance!(
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
);

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
        mfa_enabled: false,
        passkeys: 0,
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
