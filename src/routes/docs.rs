//! The OpenAPI document and the API reference page. The page's scripts and styles (Swagger UI,
//! vendored under `assets/docs/vendor/`) are served from here, so it renders with no network.

use actix_web::{http::header, middleware::Compress, web, HttpResponse};

use crate::state::AppState;

const INDEX: &str = include_str!("../../assets/docs/index.html");
const INIT: &str = include_str!("../../assets/docs/init.js");
const BUNDLE: &[u8] = include_bytes!("../../assets/docs/vendor/swagger-ui/swagger-ui-bundle.js");
const CSS: &[u8] = include_bytes!("../../assets/docs/vendor/swagger-ui/swagger-ui.css");

/// Scripts and styles come only from this server; nothing is fetched elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; font-src 'self' data:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The reference page's scripts and styles (not API operations, so not in the document).
pub fn assets(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/docs")
            .wrap(Compress::default())
            .service(
                web::resource("/init.js")
                    .route(web::get().to(|| asset(INIT.as_bytes(), "text/javascript"))),
            )
            .service(
                web::resource("/swagger-ui-bundle.js")
                    .route(web::get().to(|| asset(BUNDLE, "text/javascript"))),
            )
            .service(
                web::resource("/swagger-ui.css").route(web::get().to(|| asset(CSS, "text/css"))),
            ),
    );
}

async fn asset(bytes: &'static [u8], content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(bytes)
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "docs",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json",
        body = Object)))]
pub async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(state.openapi.clone())
}

/// The API reference, rendered from `/openapi.json` in the browser.
#[utoipa::path(get, path = "/docs", tag = "docs",
    responses((status = 200, description = "An HTML page; its scripts and styles are served by authvault itself",
        content_type = "text/html", body = String)))]
pub async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .body(INDEX)
}
