//! `host/server/openapi.json` against the real router: every route in the
//! server's source is documented and every documented operation is routed
//! (with the methods documented and no others), behind the admin token
//! exactly when the document says so.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::collections::BTreeSet;
use switchyard_broker::secrets::SecretValue;
use switchyard_runtime::Limits;
use switchyard_server::{OPENAPI_JSON, Services};
use switchyard_tests::{runtime_with, workspace_root};
use tower::ServiceExt;

const TOKEN: &str = "openapi-test-token";
const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

fn document() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

/// Every `.route("…"` path in the server crate's source.
fn routes_in_source() -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    let mut dirs = vec![workspace_root().join("host/server/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for piece in text.split(".route(").skip(1) {
                let piece = piece.trim_start();
                if let Some(rest) = piece.strip_prefix('"') {
                    routes.insert(rest.split('"').next().unwrap().to_owned());
                }
            }
        }
    }
    routes
}

/// A documented path with its parameters filled in: names that match
/// nothing, so no request changes state.
fn concrete(path: &str) -> String {
    path.replace("{name}", "nope")
        .replace("{action}", "nope")
        .replace("{plugin}", "nope")
        .replace("{seq}", "999999")
}

async fn send(
    router: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Vec<u8>) {
    let mut request = Request::builder()
        .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
        .uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

#[test]
fn every_route_in_the_source_is_documented_and_nothing_else() {
    let doc = document();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routed = routes_in_source();
    assert_eq!(
        documented, routed,
        "openapi.json paths (left) differ from the server's routes (right)"
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(METHODS.contains(&method.as_str()), "{method} {path}");
            assert!(op["summary"].is_string(), "{method} {path} has a summary");
            assert!(op["responses"].is_object(), "{method} {path} has responses");
            for param in path
                .split('{')
                .skip(1)
                .map(|p| p.split('}').next().unwrap())
            {
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == param && p["in"] == "path"));
                assert!(declared, "{method} {path} declares path parameter {param}");
            }
        }
    }
}

#[tokio::test]
async fn every_documented_operation_is_routed_as_documented() {
    let runtime = runtime_with(Limits::default(), &["echo"]).await;
    let router = switchyard_server::app(Services {
        admin_token: Some(SecretValue::new(TOKEN.into())),
        ..Services::new(runtime)
    });
    let doc = document();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let uri = concrete(path);
        let item = item.as_object().unwrap();
        for method in METHODS {
            let (status, body) = send(&router, method, &uri, Some(TOKEN)).await;
            let Some(op) = item.get(method) else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is routed but not documented"
                );
                continue;
            };
            // axum's own "no such route" is an empty 404; every handler's
            // 404 explains itself in a JSON body.
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED
                    && !(status == StatusCode::NOT_FOUND && body.is_empty()),
                "{method} {path} is documented but not routed ({status})"
            );
            let documented_codes: Vec<&String> =
                op["responses"].as_object().unwrap().keys().collect();
            assert!(
                documented_codes.contains(&&status.as_u16().to_string()),
                "{method} {uri} answered {status}, not among its documented responses {documented_codes:?}: {}",
                String::from_utf8_lossy(&body)
            );
            let secured = op.get("security").is_some();
            let (anonymous, _) = send(&router, method, &uri, None).await;
            if secured {
                assert_eq!(anonymous, StatusCode::UNAUTHORIZED, "{method} {path}");
            } else {
                assert_ne!(anonymous, StatusCode::UNAUTHORIZED, "{method} {path}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} operations checked");
}
