//! The web console: one static page (HTML, JavaScript, CSS) compiled into the binary and served
//! at `/`. It talks to the server only through the public API (REST under `/api/v1` and the
//! WebSocket `/api/v1/ws`), so it doubles as a reference client.

use actix_web::http::header::{self, ContentType};
use actix_web::{web, HttpResponse};

/// The page itself.
const INDEX_HTML: &str = include_str!("console/index.html");
/// The application, one ES module with no imports.
const APP_JS: &str = include_str!("console/app.js");
/// The stylesheet.
const APP_CSS: &str = include_str!("console/app.css");

/// `no-cache` makes browsers revalidate, so a new binary's console shows up at once.
const CACHE_CONTROL: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-cache");

/// Mounts the console: `GET /` (and `/index.html`), `/app.js` and `/app.css`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(web::get().to(index)))
        .service(web::resource("/index.html").route(web::get().to(index)))
        .service(web::resource("/app.js").route(web::get().to(app_js)))
        .service(web::resource("/app.css").route(web::get().to(app_css)));
}

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header(CACHE_CONTROL)
        .body(INDEX_HTML)
}

async fn app_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(CACHE_CONTROL)
        .body(APP_JS)
}

async fn app_css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(CACHE_CONTROL)
        .body(APP_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, App};

    async fn fetch(path: &str) -> (u16, String, String) {
        let app = test::init_service(App::new().configure(configure)).await;
        let res = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap_or_default();
        (status, content_type, body)
    }

    #[actix_web::test]
    async fn serves_the_page_and_its_assets_with_their_types() {
        let (status, ct, body) = fetch("/").await;
        assert_eq!(status, 200);
        assert!(ct.starts_with("text/html"), "{ct}");
        assert!(body.contains(r#"src="app.js""#));

        let (status, ct, body) = fetch("/app.js").await;
        assert_eq!(status, 200);
        assert!(ct.starts_with("text/javascript"), "{ct}");
        assert!(body.contains("/api/v1/ws"));

        let (status, ct, _) = fetch("/app.css").await;
        assert_eq!(status, 200);
        assert!(ct.starts_with("text/css"), "{ct}");
    }
}
