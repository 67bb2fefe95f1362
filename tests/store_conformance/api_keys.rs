//! Conformance cases: api keys.

use super::*;

conformance!(
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
);

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
