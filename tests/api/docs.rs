//! The OpenAPI document against the running router, and the reference page.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

backend_tests!(
    every_route_is_documented_and_every_documented_operation_is_routed,
    the_served_document_is_the_committed_one,
    the_reference_page_and_its_assets_come_from_authvault_itself,
);

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

fn concrete(path: &str) -> String {
    path.replace("{provider}", "github")
        .replace("{id}", "00000000-0000-0000-0000-000000000000")
}

async fn every_route_is_documented_and_every_documented_operation_is_routed(backend: Backend) {
    let app = spawn_app(backend).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    let routed: BTreeSet<String> = authvault::routes::registered_paths().into_iter().collect();

    assert_eq!(routed, documented, "router and document disagree");
    for (path, item) in paths {
        let allowed: Vec<String> = METHODS
            .iter()
            .filter(|m| item.get(m.as_str().to_lowercase()).is_some())
            .map(|m| m.to_string())
            .collect();
        for method in METHODS {
            let res = app
                .client
                .request(method.clone(), app.url(&concrete(path)))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            if allowed.contains(&method.to_string()) {
                assert_ne!(
                    res.status(),
                    405,
                    "{method} {path} is documented but not routed"
                );
            } else {
                assert_eq!(
                    res.status(),
                    405,
                    "{method} {path} is routed but not documented"
                );
                assert_eq!(res.headers()["allow"].to_str().unwrap(), allowed.join(", "));
                app.assert_problem(res, 405, "method_not_allowed").await;
            }
        }
    }
}

async fn the_served_document_is_the_committed_one(backend: Backend) {
    let app = spawn_app(backend).await;

    let served: Value = app.get("/openapi.json").await.json().await.unwrap();

    let committed: Value =
        serde_json::from_str(include_str!("../../openapi/openapi.json")).unwrap();
    assert_eq!(served, committed);
    assert!(served["openapi"].as_str().unwrap().starts_with("3.1"));
}

async fn the_reference_page_and_its_assets_come_from_authvault_itself(backend: Backend) {
    let app = spawn_app(backend).await;

    let page = app.get("/docs").await;
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no outside URLs"
    );
    for (asset, kind) in [
        ("/docs/swagger-ui-bundle.js", "text/javascript"),
        ("/docs/swagger-ui.css", "text/css"),
        ("/docs/init.js", "text/javascript"),
    ] {
        assert!(html.contains(asset), "{asset} not referenced");
        let res = app.get(asset).await;
        assert_eq!(res.status(), 200, "{asset}");
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        assert!(res.bytes().await.unwrap().len() > 100);
    }
}
