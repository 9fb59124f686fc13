//! Server tests: the router driven without sockets, plus one real socket.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchyard_runtime::{Limits, Runtime};
use switchyard_tests::runtime_with;
use tower::ServiceExt;

async fn runtime() -> Runtime {
    let limits = Limits {
        deadline_ms: 1_000,
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    runtime_with(limits, &["echo", "guest-misbehave"]).await
}

async fn send(
    runtime: &Runtime,
    method: &str,
    uri: &str,
    body: &str,
) -> (StatusCode, Value, Option<String>) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = switchyard_server::router(runtime.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value, retry_after)
}

async fn post(runtime: &Runtime, uri: &str, body: &str) -> (StatusCode, Value, Option<String>) {
    send(runtime, "POST", uri, body).await
}

#[tokio::test]
async fn healthz_and_listing() {
    let runtime = runtime().await;
    let (status, body, _) = send(&runtime, "GET", "/healthz", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok", "connections": 2}));
    let (status, body, _) = send(&runtime, "GET", "/v1/connectors", "").await;
    assert_eq!(status, StatusCode::OK);
    let echo = &body["connections"][0];
    assert_eq!(echo["name"], "echo");
    assert_eq!(echo["wit"], "0.1.1");
    assert_eq!(echo["actions"][1]["name"], "greet");
}

#[tokio::test]
async fn an_action_round_trips_as_json() {
    let runtime = runtime().await;
    let (status, body, _) = post(
        &runtime,
        "/v1/connectors/echo/actions/greet",
        r#"{"name":"Ada"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"message": "Hello, Ada!"}));
}

#[tokio::test]
async fn guest_errors_map_to_statuses_and_bodies() {
    let runtime = runtime().await;
    let uri = "/v1/connectors/guest-misbehave/actions/fail";
    // The misbehave guest reads its raw input; JSON strings are fine input.
    let cases = [
        ("\"invalid\"", StatusCode::BAD_REQUEST, "invalid_input"),
        (
            "\"retryable\"",
            StatusCode::SERVICE_UNAVAILABLE,
            "retryable",
        ),
        (
            "\"rate-limited\"",
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
        ),
        ("\"other\"", StatusCode::UNPROCESSABLE_ENTITY, "permanent"),
    ];
    for (input, status, kind) in cases {
        let (got, body, _) = post(&runtime, uri, input).await;
        assert_eq!(got, status, "{input}: {body}");
        assert_eq!(body["error"]["kind"], kind, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().len() > 2,
            "{body}"
        );
    }
}

#[tokio::test]
async fn rate_limited_sets_retry_after() {
    let runtime = runtime().await;
    // Input reaches the guest as the raw JSON text, quotes included, so use
    // the echo-style bare word through a JSON string the guest matches on.
    let (status, body, retry_after) = post(
        &runtime,
        "/v1/connectors/guest-misbehave/actions/fail",
        "\"rate-limited\"",
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(retry_after.as_deref(), Some("2"));
    assert_eq!(body["error"]["message"], "slow down");
}

#[tokio::test]
async fn a_crash_is_a_502_and_the_server_keeps_serving() {
    let runtime = runtime().await;
    let (status, body, _) = post(
        &runtime,
        "/v1/connectors/guest-misbehave/actions/panic",
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"]["kind"], "trap");
    let (status, _, _) = post(
        &runtime,
        "/v1/connectors/guest-misbehave/actions/loop",
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let (status, body, _) = post(&runtime, "/v1/connectors/echo/actions/echo", "[1,2]").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!([1, 2]));
}

#[tokio::test]
async fn bad_requests_are_named() {
    let runtime = runtime().await;
    let (status, body, _) = post(&runtime, "/v1/connectors/nope/actions/echo", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["kind"], "unknown_connection");
    let (status, body, _) = post(&runtime, "/v1/connectors/echo/actions/nope", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["kind"], "unknown_action");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("echo, greet"),
        "{body}"
    );
    let (status, body, _) = post(&runtime, "/v1/connectors/echo/actions/echo", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["kind"], "invalid_input");
    let (status, _, _) = send(&runtime, "GET", "/v1/connectors/echo/actions/echo", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn serves_over_a_real_loopback_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = runtime().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard_server::serve(
        switchyard_server::router(runtime),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let body = r#"{"name":"socket"}"#;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/connectors/echo/actions/greet HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.ends_with(r#"{"message":"Hello, socket!"}"#),
        "{response}"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_configured_token() {
    let runtime = runtime().await;
    for (method, uri) in [
        ("GET", "/admin/v1/plugins"),
        ("DELETE", "/admin/v1/plugins/echo"),
    ] {
        let (status, body, _) = send(&runtime, method, uri, "").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}");
        assert_eq!(body["error"]["kind"], "admin_disabled");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("[admin] token"), "{message}");
    }
    // Nothing was removed.
    let (status, _, _) = post(&runtime, "/v1/connectors/echo/actions/echo", "{}").await;
    assert_eq!(status, StatusCode::OK);
}
