//! Conformance cases: tokens.

use super::*;

conformance!(
    a_put_token_is_taken_once_with_its_record_then_is_gone,
    a_second_put_token_with_the_same_kind_and_hash_is_a_conflict,
    tokens_of_different_kinds_with_the_same_hash_are_independent,
    an_expired_token_is_not_taken_and_is_gone,
    a_token_without_a_user_is_taken_without_one,
    concurrent_takes_of_one_token_give_it_exactly_once,
    delete_user_removes_the_users_tokens,
);

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
