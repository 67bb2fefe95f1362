//! Conformance cases: credentials.

use super::*;

conformance!(
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
);

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
