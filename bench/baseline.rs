//! The ceiling for `bench/run`: a bare actix-web server answering a small JSON object, with the
//! same worker setup as authvault (one worker per core it may run on).
use actix_web::{web, App, HttpResponse, HttpServer};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18700".into());
    HttpServer::new(|| {
        App::new().route(
            "/",
            web::get()
                .to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }),
        )
    })
    .bind(addr)?
    .run()
    .await
}
