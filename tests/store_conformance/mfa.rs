//! Conformance cases: multi-factor sign-in (TOTP seals, accepted steps, recovery codes).

use super::*;

conformance!(
    a_user_without_mfa_has_no_record_and_reads_as_mfa_off,
    a_pending_secret_is_stored_and_replaced_until_mfa_is_on,
    enable_mfa_turns_it_on_in_one_step_and_ends_every_other_session,
    enable_mfa_with_a_replaced_secret_or_an_ended_session_changes_nothing,
    a_totp_step_is_accepted_once_and_never_an_earlier_one,
    concurrent_accepts_of_one_step_accept_it_exactly_once,
    a_recovery_code_is_spent_once_and_the_rest_are_counted,
    concurrent_spends_of_one_recovery_code_spend_it_exactly_once,
    replaced_recovery_codes_end_the_old_set,
    disable_mfa_removes_the_secret_and_the_codes,
    totp_seals_page_by_user_and_reseal_only_at_the_expected_nonce,
    delete_user_removes_the_mfa_record,
);

fn hashes(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:02}")).collect()
}

/// Enrols `sealed` and turns MFA on at `step` with `codes`, keeping session `keep`.
async fn turn_on(
    store: &Arc<dyn Store>,
    user: UserId,
    sealed: &SealedKey,
    step: i64,
    codes: &[String],
    keep: Uuid,
) {
    assert!(store.set_pending_totp(user, sealed).await.unwrap());
    assert!(store
        .enable_mfa(
            user,
            MfaEnable {
                pending_nonce: &sealed.nonce,
                step,
                recovery: codes,
                keep,
            },
        )
        .await
        .unwrap());
}

/// A user with MFA on (secret `sealed(1)`, last step 100, recovery codes `r00`..`r09`) and the
/// session that turned it on.
async fn user_with_mfa(store: &Arc<dyn Store>, address: &str) -> (User, SessionRecord) {
    let now = moment();
    let user = create(store, address, now).await;
    let session = session_for(user.id, now);
    store.create_session(&session).await.unwrap();
    turn_on(
        store,
        user.id,
        &sealed(1),
        100,
        &hashes("r", 10),
        session.id,
    )
    .await;
    (user, session)
}

async fn a_user_without_mfa_has_no_record_and_reads_as_mfa_off(store: Arc<dyn Store>) {
    let user = create(&store, "ada@example.com", moment()).await;
    assert!(!user.mfa_enabled);
    assert_eq!(store.mfa(user.id).await.unwrap(), None);
    assert!(!store.accept_totp_step(user.id, 1).await.unwrap());
    assert_eq!(
        store.spend_recovery_code(user.id, "r00").await.unwrap(),
        None
    );
    assert!(!store
        .replace_recovery_codes(user.id, &hashes("r", 10))
        .await
        .unwrap());
    assert!(!store.disable_mfa(user.id).await.unwrap());
    assert_eq!(store.count_totp().await.unwrap(), 0);
    // An unknown user neither.
    assert!(!store
        .set_pending_totp(UserId::new(), &sealed(1))
        .await
        .unwrap());
    assert_eq!(store.mfa(UserId::new()).await.unwrap(), None);
}

async fn a_pending_secret_is_stored_and_replaced_until_mfa_is_on(store: Arc<dyn Store>) {
    let user = create(&store, "ada@example.com", moment()).await;
    assert!(store.set_pending_totp(user.id, &sealed(1)).await.unwrap());
    assert!(store.set_pending_totp(user.id, &sealed(2)).await.unwrap());

    let record = store.mfa(user.id).await.unwrap().expect("a record");
    assert_eq!(
        record,
        MfaRecord {
            secret: None,
            pending: Some(sealed(2)),
            last_step: None,
            recovery_left: 0,
        }
    );
    // Pending is not on.
    let read = store.user_by_id(user.id).await.unwrap().unwrap();
    assert!(!read.mfa_enabled);
    assert_eq!(read.credential_version, user.credential_version);
    assert!(!store.accept_totp_step(user.id, 5).await.unwrap());
    assert_eq!(store.count_totp().await.unwrap(), 1);
}

async fn enable_mfa_turns_it_on_in_one_step_and_ends_every_other_session(store: Arc<dyn Store>) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let other_user = create(&store, "grace@example.com", now).await;
    let keep = session_for(user.id, now);
    let other = session_for(user.id, now);
    let foreign = session_for(other_user.id, now);
    for session in [&keep, &other, &foreign] {
        store.create_session(session).await.unwrap();
    }

    turn_on(
        &store,
        user.id,
        &sealed(3),
        55_000_000,
        &hashes("r", 10),
        keep.id,
    )
    .await;

    assert_eq!(
        store.mfa(user.id).await.unwrap(),
        Some(MfaRecord {
            secret: Some(sealed(3)),
            pending: None,
            last_step: Some(55_000_000),
            recovery_left: 10,
        })
    );
    let read = store.user_by_id(user.id).await.unwrap().unwrap();
    assert!(read.mfa_enabled);
    assert_eq!(read.credential_version, user.credential_version + 1);
    let by_email = store.user_by_email(&user.email).await.unwrap().unwrap();
    assert!(by_email.mfa_enabled);
    let (_, with_user) = store
        .session_with_user(user.id, keep.id, now)
        .await
        .unwrap()
        .expect("the confirming session stays");
    assert!(with_user.mfa_enabled);
    assert!(store
        .session(user.id, other.id, now)
        .await
        .unwrap()
        .is_none());
    // Another user's sessions and MFA are untouched.
    assert!(store
        .session(other_user.id, foreign.id, now)
        .await
        .unwrap()
        .is_some());
    assert!(
        !store
            .user_by_id(other_user.id)
            .await
            .unwrap()
            .unwrap()
            .mfa_enabled
    );
    // While it is on, nothing new can be enrolled over it.
    assert!(!store.set_pending_totp(user.id, &sealed(4)).await.unwrap());
    assert_eq!(store.mfa(user.id).await.unwrap().unwrap().pending, None);
}

async fn enable_mfa_with_a_replaced_secret_or_an_ended_session_changes_nothing(
    store: Arc<dyn Store>,
) {
    let now = moment();
    let user = create(&store, "ada@example.com", now).await;
    let session = session_for(user.id, now);
    store.create_session(&session).await.unwrap();
    fn enable(nonce: &[u8], keep: Uuid) -> MfaEnable<'_> {
        MfaEnable {
            pending_nonce: nonce,
            step: 7,
            recovery: &[],
            keep,
        }
    }

    // Nothing pending.
    let first = sealed(1).nonce;
    assert!(!store
        .enable_mfa(user.id, enable(&first, session.id))
        .await
        .unwrap());

    // Enrolled twice: the first secret is no longer the pending one.
    store.set_pending_totp(user.id, &sealed(1)).await.unwrap();
    store.set_pending_totp(user.id, &sealed(2)).await.unwrap();
    assert!(!store
        .enable_mfa(user.id, enable(&first, session.id))
        .await
        .unwrap());

    // The confirming session ended meanwhile.
    let second = sealed(2).nonce;
    store.end_session(session.id).await.unwrap();
    assert!(!store
        .enable_mfa(user.id, enable(&second, session.id))
        .await
        .unwrap());

    let read = store.user_by_id(user.id).await.unwrap().unwrap();
    assert!(!read.mfa_enabled);
    assert_eq!(read.credential_version, user.credential_version);
    assert_eq!(
        store.mfa(user.id).await.unwrap().unwrap().pending,
        Some(sealed(2))
    );

    // With a live session it goes through; a second time it does not.
    let live = session_for(user.id, now);
    store.create_session(&live).await.unwrap();
    assert!(store
        .enable_mfa(user.id, enable(&second, live.id))
        .await
        .unwrap());
    assert!(!store
        .enable_mfa(user.id, enable(&second, live.id))
        .await
        .unwrap());
    assert_eq!(
        store
            .user_by_id(user.id)
            .await
            .unwrap()
            .unwrap()
            .credential_version,
        user.credential_version + 1
    );
}

async fn a_totp_step_is_accepted_once_and_never_an_earlier_one(store: Arc<dyn Store>) {
    let (user, _) = user_with_mfa(&store, "ada@example.com").await;
    // The confirming step (100) is spent.
    assert!(!store.accept_totp_step(user.id, 100).await.unwrap());
    assert!(!store.accept_totp_step(user.id, 99).await.unwrap());
    assert!(store.accept_totp_step(user.id, 101).await.unwrap());
    assert!(!store.accept_totp_step(user.id, 101).await.unwrap());
    assert!(store.accept_totp_step(user.id, 103).await.unwrap());
    assert!(!store.accept_totp_step(user.id, 102).await.unwrap());
    assert_eq!(
        store.mfa(user.id).await.unwrap().unwrap().last_step,
        Some(103)
    );
    // Another user's steps are their own.
    let (grace, _) = user_with_mfa(&store, "grace@example.com").await;
    assert!(store.accept_totp_step(grace.id, 101).await.unwrap());
}

async fn concurrent_accepts_of_one_step_accept_it_exactly_once(store: Arc<dyn Store>) {
    let (user, _) = user_with_mfa(&store, "ada@example.com").await;
    let barrier = Arc::new(tokio::sync::Barrier::new(12));
    let racers: Vec<_> = (0..12)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.accept_totp_step(user.id, 101).await.unwrap()
            })
        })
        .collect();
    let mut accepted = 0;
    for racer in racers {
        accepted += usize::from(racer.await.unwrap());
    }
    assert_eq!(accepted, 1);
}

async fn a_recovery_code_is_spent_once_and_the_rest_are_counted(store: Arc<dyn Store>) {
    let (user, _) = user_with_mfa(&store, "ada@example.com").await;
    let (grace, _) = user_with_mfa(&store, "grace@example.com").await;

    assert_eq!(
        store.spend_recovery_code(user.id, "r03").await.unwrap(),
        Some(9)
    );
    assert_eq!(
        store.spend_recovery_code(user.id, "r03").await.unwrap(),
        None
    );
    assert_eq!(
        store.spend_recovery_code(user.id, "r07").await.unwrap(),
        Some(8)
    );
    assert_eq!(
        store.spend_recovery_code(user.id, "unknown").await.unwrap(),
        None
    );
    assert_eq!(store.mfa(user.id).await.unwrap().unwrap().recovery_left, 8);
    // The same digest of another user is theirs alone.
    assert_eq!(
        store.spend_recovery_code(grace.id, "r03").await.unwrap(),
        Some(9)
    );
    for i in [0, 1, 2, 4, 5, 6, 8] {
        store
            .spend_recovery_code(user.id, &format!("r{i:02}"))
            .await
            .unwrap()
            .expect("unused");
    }
    assert_eq!(
        store.spend_recovery_code(user.id, "r09").await.unwrap(),
        Some(0)
    );
    assert_eq!(store.mfa(user.id).await.unwrap().unwrap().recovery_left, 0);
    // Out of codes, MFA stays on.
    assert!(
        store
            .user_by_id(user.id)
            .await
            .unwrap()
            .unwrap()
            .mfa_enabled
    );
}

async fn concurrent_spends_of_one_recovery_code_spend_it_exactly_once(store: Arc<dyn Store>) {
    let (user, _) = user_with_mfa(&store, "ada@example.com").await;
    let barrier = Arc::new(tokio::sync::Barrier::new(12));
    let racers: Vec<_> = (0..12)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.spend_recovery_code(user.id, "r05").await.unwrap()
            })
        })
        .collect();
    let mut spent = Vec::new();
    for racer in racers {
        spent.extend(racer.await.unwrap());
    }
    assert_eq!(spent, [9]);
    assert_eq!(store.mfa(user.id).await.unwrap().unwrap().recovery_left, 9);
}

async fn replaced_recovery_codes_end_the_old_set(store: Arc<dyn Store>) {
    let (user, _) = user_with_mfa(&store, "ada@example.com").await;
    store.spend_recovery_code(user.id, "r00").await.unwrap();

    assert!(store
        .replace_recovery_codes(user.id, &hashes("n", 10))
        .await
        .unwrap());

    assert_eq!(store.mfa(user.id).await.unwrap().unwrap().recovery_left, 10);
    assert_eq!(
        store.spend_recovery_code(user.id, "r01").await.unwrap(),
        None
    );
    assert_eq!(
        store.spend_recovery_code(user.id, "n01").await.unwrap(),
        Some(9)
    );
    // The secret and the accepted step stay as they were.
    let record = store.mfa(user.id).await.unwrap().unwrap();
    assert_eq!(record.secret, Some(sealed(1)));
    assert_eq!(record.last_step, Some(100));
}

async fn disable_mfa_removes_the_secret_and_the_codes(store: Arc<dyn Store>) {
    let (user, session) = user_with_mfa(&store, "ada@example.com").await;
    let before = store.user_by_id(user.id).await.unwrap().unwrap();

    assert!(store.disable_mfa(user.id).await.unwrap());
    assert!(!store.disable_mfa(user.id).await.unwrap());

    let read = store.user_by_id(user.id).await.unwrap().unwrap();
    assert!(!read.mfa_enabled);
    assert_eq!(
        store.mfa(user.id).await.unwrap().unwrap_or_default().secret,
        None
    );
    assert_eq!(
        store
            .mfa(user.id)
            .await
            .unwrap()
            .unwrap_or_default()
            .recovery_left,
        0
    );
    assert_eq!(
        store.spend_recovery_code(user.id, "r01").await.unwrap(),
        None
    );
    assert!(!store.accept_totp_step(user.id, 500).await.unwrap());
    assert_eq!(store.count_totp().await.unwrap(), 0);
    // The session that turned it off stays, at the same credential.
    assert!(store
        .session(user.id, session.id, moment())
        .await
        .unwrap()
        .is_some());
    assert_eq!(read.credential_version, before.credential_version);

    // It can be enrolled and turned on again, and steps start over from the new confirmation.
    turn_on(
        &store,
        user.id,
        &sealed(9),
        50,
        &hashes("z", 10),
        session.id,
    )
    .await;
    assert!(store.accept_totp_step(user.id, 51).await.unwrap());
    assert_eq!(
        store.spend_recovery_code(user.id, "z00").await.unwrap(),
        Some(9)
    );
}

async fn totp_seals_page_by_user_and_reseal_only_at_the_expected_nonce(store: Arc<dyn Store>) {
    let now = moment();
    let mut ids = Vec::new();
    for i in 0..5u8 {
        let user = create(&store, &format!("user{i}@example.com"), now).await;
        let session = session_for(user.id, now);
        store.create_session(&session).await.unwrap();
        if i % 2 == 0 {
            turn_on(&store, user.id, &sealed(i), 10, &hashes("r", 2), session.id).await;
        }
        // One of them also enrols again after turning off: only a pending seal.
        if i == 4 {
            store.disable_mfa(user.id).await.unwrap();
            store.set_pending_totp(user.id, &sealed(40)).await.unwrap();
        }
        if i != 1 && i != 3 {
            ids.push(user.id);
        }
    }
    // A user with a pending seal next to nothing else.
    let pending_only = create(&store, "pending@example.com", now).await;
    store
        .set_pending_totp(pending_only.id, &sealed(50))
        .await
        .unwrap();
    ids.push(pending_only.id);
    ids.sort();
    assert_eq!(store.count_totp().await.unwrap(), 4);

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.totp_page(after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        seen.extend(page);
        assert!(seen.len() <= 10, "paging does not end");
    }
    assert_eq!(seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    for (_, seals) in &seen {
        assert_eq!(seals.len(), 1);
    }
    let (id, seals) = seen
        .iter()
        .find(|(id, _)| *id == pending_only.id)
        .unwrap()
        .clone();
    assert_eq!(seals, [(TotpSeal::Pending, sealed(50))]);

    // Reseal the pending seal: only at the nonce it carries.
    let resealed = SealedKey {
        key_id: "k2".into(),
        ..sealed(51)
    };
    assert!(!store
        .reseal_totp(id, TotpSeal::Pending, &sealed(49).nonce, &resealed)
        .await
        .unwrap());
    assert!(!store
        .reseal_totp(id, TotpSeal::Confirmed, &sealed(50).nonce, &resealed)
        .await
        .unwrap());
    assert!(store
        .reseal_totp(id, TotpSeal::Pending, &sealed(50).nonce, &resealed)
        .await
        .unwrap());
    assert_eq!(
        store.mfa(id).await.unwrap().unwrap().pending,
        Some(resealed.clone())
    );

    // A confirmed seal likewise, and the rest of the record stays.
    let confirmed_seals: Vec<_> = seen
        .iter()
        .filter(|(_, seals)| seals[0].0 == TotpSeal::Confirmed)
        .collect();
    assert_eq!(confirmed_seals.len(), 2);
    let (confirmed, seals) = confirmed_seals[0].clone();
    let old = seals[0].1.clone();
    assert!(store
        .reseal_totp(confirmed, TotpSeal::Confirmed, &old.nonce, &resealed)
        .await
        .unwrap());
    let record = store.mfa(confirmed).await.unwrap().unwrap();
    assert_eq!(record.secret, Some(resealed));
    assert_eq!(record.last_step, Some(10));
    assert_eq!(record.recovery_left, 2);
    assert_eq!(store.count_totp().await.unwrap(), 4);
}

async fn delete_user_removes_the_mfa_record(store: Arc<dyn Store>) {
    let (user, _) = user_with_mfa(&store, "ada@example.com").await;
    let (grace, _) = user_with_mfa(&store, "grace@example.com").await;
    assert_eq!(store.count_totp().await.unwrap(), 2);

    assert!(store.delete_user(user.id, None).await.unwrap());

    assert_eq!(store.mfa(user.id).await.unwrap(), None);
    assert_eq!(store.count_totp().await.unwrap(), 1);
    assert_eq!(
        store.spend_recovery_code(user.id, "r00").await.unwrap(),
        None
    );
    assert_eq!(
        store.spend_recovery_code(grace.id, "r00").await.unwrap(),
        Some(9)
    );
}
