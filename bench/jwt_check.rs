//! The access-token check on one core: the hand-written fast path (`JwtKeys::verify_access`, run
//! by every signed-in request) against the library path (`JwtKeys::verify`, `jsonwebtoken`'s
//! `decode` with the same rules), on a token of the service, for HS256, EdDSA and ES256. Prints
//! the nanoseconds per check of each path, fast then library, one per line, in that order of
//! algorithms. `bench/run` pins it to the server's core and relates the HS256 difference to the
//! time one session check takes.
use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use authvault::{
    auth::jwt::JwtKeys,
    domain::{Email, User, UserId, UserName},
    signing::{JwtAlg, SigningKey},
    store::SessionRecord,
};
use secrecy::SecretString;
use time::OffsetDateTime;
use uuid::Uuid;

fn per_check(seconds: f64, mut check: impl FnMut() -> bool) -> f64 {
    // Warm up, then count checks for the given time.
    for _ in 0..10_000 {
        assert!(check());
    }
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        for _ in 0..1000 {
            assert!(check());
        }
        n += 1000;
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let keys = JwtKeys::new(
        &SecretString::from("bench-secret-bench-secret-bench-secret-0123456789"),
        "http://127.0.0.1:8080",
        Duration::from_secs(3600),
    );
    let now = OffsetDateTime::now_utc();
    let (Ok(email), Ok(name)) = (Email::parse("bench@example.com"), UserName::parse("Bench"))
    else {
        panic!("constant email and name are valid");
    };
    let user = User {
        id: UserId::new(),
        name,
        email,
        image: None,
        password_hash: None,
        linked: Vec::new(),
        email_verified: None,
        credential_version: 0,
        mfa_enabled: false,
        passkeys: 0,
        created_at: now,
        updated_at: now,
    };
    let session = SessionRecord {
        id: Uuid::new_v4(),
        user_id: user.id,
        created_at: now,
        last_used_at: now,
        expires_at: now + time::Duration::days(30),
        auth_time: now,
        amr: authvault::domain::Amr::one(authvault::domain::AuthMethod::Pwd),
        user_agent: None,
        ip: None,
    };
    let issuer = "http://127.0.0.1:8080";
    let asymmetric = |alg| {
        let key = SigningKey::generate("bench", alg).expect("a key");
        JwtKeys::asymmetric(&[key], issuer, Duration::from_secs(3600)).expect("keys")
    };
    for keys in [keys, asymmetric(JwtAlg::EdDsa), asymmetric(JwtAlg::Es256)] {
        let token = keys.issue(&user, &session, now).expect("issue").token;
        let fast = per_check(seconds, || {
            black_box(keys.verify_access(black_box(&token))).is_ok()
        });
        let library = per_check(seconds, || {
            black_box(keys.verify(black_box(&token))).is_ok()
        });
        println!("{fast:.0}\n{library:.0}");
    }
}
