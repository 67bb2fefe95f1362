//! Conformance cases: rate events.

use super::*;

conformance!(
    count_events_counts_only_events_strictly_after_since_and_reports_the_oldest,
    events_at_the_same_instant_count_separately,
    reserve_event_admits_up_to_max_in_the_window_and_a_refusal_records_nothing,
    a_released_event_gives_its_slot_back_and_only_its_own,
    concurrent_reservations_admit_exactly_max,
    rate_event_keys_are_independent_and_clear_events_empties_one_key_only,
);

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
