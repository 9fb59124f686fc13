//! Smoke tests of the example connectors in plugins/, as operators run them.

use std::collections::BTreeMap;
use switchyard_runtime::{InvokeError, Message, Runtime};
use switchyard_tests::guest;

async fn runtime() -> Runtime {
    let runtime = Runtime::builder().build().unwrap();
    runtime.load_plugin("echo", &guest("echo")).await.unwrap();
    runtime
        .load_plugin("field-mapper", &guest("field-mapper"))
        .await
        .unwrap();
    runtime
        .add_connection("echo", "echo", BTreeMap::new())
        .unwrap();
    let settings = BTreeMap::from([
        (
            "rename".to_owned(),
            "first_name=firstName,address.city=city".to_owned(),
        ),
        ("drop".to_owned(), "ssn".to_owned()),
        ("defaults".to_owned(), "tier=\"free\"".to_owned()),
    ]);
    runtime
        .add_connection("crm", "field-mapper", settings)
        .unwrap();
    runtime
}

#[tokio::test]
async fn echo_echoes_and_greets() {
    let runtime = runtime().await;
    let out = runtime
        .call_action("echo", "echo", b"[true]")
        .await
        .unwrap();
    assert_eq!(out, b"[true]");
    let out = runtime
        .call_action("echo", "greet", br#"{"name":"Grace"}"#)
        .await
        .unwrap();
    assert_eq!(out, br#"{"message":"Hello, Grace!"}"#);
    let err = runtime
        .call_action("echo", "greet", b"{}")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "invalid_input", "{err}");
    assert!(err.to_string().contains("missing field `name`"), "{err}");
}

#[tokio::test]
async fn field_mapper_maps_actions_and_batches() {
    let runtime = runtime().await;
    let out = runtime
        .call_action(
            "crm",
            "map",
            br#"{"first_name":"Ada","ssn":"1","address":{"city":"London"}}"#,
        )
        .await
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"firstName": "Ada", "address": {}, "city": "London", "tier": "free"})
    );
    let batch = vec![
        message("1", br#"{"first_name":"A"}"#),
        message("2", br#"{"first_name":"B","tier":"pro"}"#),
    ];
    let out = runtime.transform("crm", batch).await.unwrap();
    assert_eq!(out[0].payload, br#"{"firstName":"A","tier":"free"}"#);
    assert_eq!(out[1].payload, br#"{"firstName":"B","tier":"pro"}"#);
    assert_eq!(out[1].id, "2");
}

#[tokio::test]
async fn field_mapper_names_the_bad_message() {
    let runtime = runtime().await;
    let batch = vec![message("ok", b"{}"), message("broken", b"{oops")];
    let err = runtime.transform("crm", batch).await.unwrap_err();
    assert!(matches!(err, InvokeError::Guest(_)), "{err:?}");
    assert!(err.to_string().contains("message broken"), "{err}");
}

fn message(id: &str, payload: &[u8]) -> Message {
    Message {
        id: id.into(),
        stream: "contacts".into(),
        key: None,
        headers: vec![],
        payload: payload.to_vec(),
        timestamp_ms: 1_700_000_000_000,
    }
}
