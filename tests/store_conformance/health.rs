//! Conformance cases: health.

use super::*;

conformance!(ping_succeeds,);

async fn ping_succeeds(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}
