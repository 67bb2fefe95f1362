//! The MongoDB server's own ceiling for the session check's shape of query: a bare driver loop
//! of find-by-_id with `CONCURRENCY` tasks, for `SECONDS`. Prints finds per second.
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use mongodb::{bson::doc, Client};

#[tokio::main]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .expect("usage: mongo_ceiling URL [CONCURRENCY] [SECONDS]");
    let concurrency: usize = std::env::args()
        .nth(2)
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    let seconds: u64 = std::env::args()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let client = Client::with_uri_str(&url).await.expect("connect");
    let coll = client
        .database("bench_ceiling")
        .collection::<mongodb::bson::Document>("sessions");
    coll.drop().await.ok();
    coll.insert_one(
        doc! {"_id": "s1", "userId": "u1", "expiresAt": mongodb::bson::DateTime::now()},
    )
    .await
    .expect("insert");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks = (0..concurrency).map(|_| {
        let coll = coll.clone();
        async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                coll.find_one(doc! {"_id": "s1"}).await.expect("find");
                n += 1;
            }
            n
        }
    });
    let total: u64 = join_all(tasks).await.into_iter().sum();
    println!("{:.2}", total as f64 / started.elapsed().as_secs_f64());
}
