//! bcrypt verifications per second at a cost (default 10) on the cores this process may use;
//! `bench/run` pins it to the server's core.
use std::time::{Duration, Instant};

fn main() {
    let cost: u32 = std::env::args()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(10);
    let seconds: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let hash = bcrypt::hash("correct horse battery", cost).expect("hash");
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        assert!(bcrypt::verify("correct horse battery", &hash).expect("verify"));
        n += 1;
    }
    println!("{:.2}", n as f64 / started.elapsed().as_secs_f64());
}
