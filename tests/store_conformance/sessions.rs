//! Conformance cases: sessions.

use super::*;

conformance!(
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
);

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
