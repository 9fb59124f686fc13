//! Who may call actions: `[access]` on a host built from config, tried the
//! way a stranger on the network and a caller with a narrow key would.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use switchyard_broker::secrets::SecretValue;
use switchyard_host::{Host, SwitchyardConfig};
use switchyard_ops::audit::{AuditFilter, AuditKind};
use switchyard_tests::guest;
use tower::ServiceExt;

const ADMIN_TOKEN: &str = "access-test-admin-token";
const OPS_KEY: &str = "ops-key-0f3a9c";
const BILLING_KEY: &str = "billing-key-77d1e2";

struct Fixture {
    host: Host,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ops.key"), format!("{OPS_KEY}\n")).unwrap();
    // SAFETY: only this test binary reads it; set before any host starts.
    unsafe { std::env::set_var("SWITCHYARD_TEST_BILLING_KEY", BILLING_KEY) };
    let text = format!(
        r#"
data_dir = "data"
plugin_dir = "none"
[plugins.echo]
path = "{echo}"
[connections.echo-public]
plugin = "echo"
[connections.echo-private]
plugin = "echo"
[connections.echo-billing]
plugin = "echo"
[access]
public = ["echo-public"]
[access.keys.ops]
secret = {{ file = "ops.key" }}
connections = ["echo-private"]
[access.keys.billing]
secret = {{ env = "SWITCHYARD_TEST_BILLING_KEY" }}
actions = ["echo-billing/greet"]
"#,
        echo = guest("echo").display()
    );
    let config = SwitchyardConfig::parse(&text, dir.path()).unwrap();
    let host = Host::from_config(&config).await.unwrap();
    let router = switchyard_server::app(switchyard_server::Services {
        admin_token: Some(SecretValue::new(ADMIN_TOKEN.into())),
        ..switchyard_server::Services::from_host(&host)
    });
    Fixture {
        host,
        router,
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    body: Value,
    www_authenticate: Option<String>,
}

impl Fixture {
    async fn call(&self, path: &str, authorization: Option<&str>) -> Answer {
        let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = request.body(Body::from(r#"{"name":"Ada"}"#)).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let www_authenticate = (response.headers().get(header::WWW_AUTHENTICATE))
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            www_authenticate,
        }
    }

    async fn call_as(&self, path: &str, key: &str) -> Answer {
        self.call(path, Some(&format!("Bearer {key}"))).await
    }
}

fn kind(answer: &Answer) -> &str {
    answer.body["error"]["kind"].as_str().unwrap_or("")
}

#[tokio::test]
async fn actions_are_default_deny_unless_public() {
    let f = fixture().await;
    let private = "/v1/connectors/echo-private/actions/greet";
    let a = f.call(private, None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    assert_eq!(kind(&a), "missing_key");
    assert_eq!(a.www_authenticate.as_deref(), Some("Bearer"));
    let message = a.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("[access.keys]"),
        "names the fix: {message}"
    );
    // A version address is the same connection, not a way around it.
    let a = f
        .call("/v1/connectors/echo-private@0.1.0/actions/greet", None)
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // A connection that does not exist looks the same as a private one to
    // a stranger: 401, not 404.
    let a = f.call("/v1/connectors/nope/actions/greet", None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // The public one answers anyone.
    let a = f
        .call("/v1/connectors/echo-public/actions/greet", None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["message"], "Hello, Ada!");
}

#[tokio::test]
async fn a_key_reaches_its_scope_and_nothing_else() {
    let f = fixture().await;
    let private = "/v1/connectors/echo-private/actions/greet";
    let a = f.call_as(private, OPS_KEY).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["message"], "Hello, Ada!");
    // Scoped to one action of echo-billing.
    let a = f
        .call_as("/v1/connectors/echo-billing/actions/greet", BILLING_KEY)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = f
        .call_as("/v1/connectors/echo-billing/actions/echo", BILLING_KEY)
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(kind(&a), "out_of_scope");
    let message = a.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("[access.keys.billing]") && message.contains("echo-billing/echo"),
        "{message}"
    );
    let a = f.call_as(private, BILLING_KEY).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Near misses of a real key, other schemes and the admin token are
    // not keys.
    for authorization in [
        format!("Bearer {OPS_KEY}x"),
        format!("Bearer {}", &OPS_KEY[..OPS_KEY.len() - 1]),
        format!("Bearer  {OPS_KEY}"),
        format!("bearer{OPS_KEY}"),
        format!("Basic {OPS_KEY}"),
        format!("Bearer {}", OPS_KEY.to_uppercase()),
        format!("Bearer {ADMIN_TOKEN}"),
        "Bearer ".to_owned(),
    ] {
        let a = f.call(private, Some(&authorization)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{authorization}");
        assert_eq!(kind(&a), "unknown_key", "{authorization}");
    }
    // A wrong key on a public connection is refused too, not ignored.
    let a = f
        .call_as("/v1/connectors/echo-public/actions/greet", "wrong")
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_decision_is_audited_and_counted_by_key_id() {
    let f = fixture().await;
    let private = "/v1/connectors/echo-private/actions/greet";
    assert_eq!(f.call_as(private, OPS_KEY).await.status, StatusCode::OK);
    assert_eq!(
        f.call_as(private, BILLING_KEY).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(f.call(private, None).await.status, StatusCode::UNAUTHORIZED);
    let stranger = "/v1/connectors/made-up-by-a-stranger/actions/x";
    assert_eq!(
        f.call(stranger, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let public = "/v1/connectors/echo-public/actions/greet";
    assert_eq!(f.call(public, None).await.status, StatusCode::OK);

    let audit = f.host.audit.as_ref().unwrap();
    audit.flush();
    let filter = AuditFilter {
        kind: Some(AuditKind::Access),
        ..AuditFilter::default()
    };
    let mut records = audit.query(&filter).unwrap();
    records.reverse();
    let seen: Vec<(&str, &str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r.caller.as_deref().unwrap(),
                r.decision.as_deref().unwrap(),
                r.connection.as_str(),
                r.name.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ops", "allowed", "echo-private", "greet"),
            ("billing", "out_of_scope", "echo-private", "greet"),
            ("anonymous", "missing_key", "echo-private", "greet"),
            // Names nobody configured are not recorded as given.
            ("anonymous", "missing_key", "", ""),
            ("public", "allowed", "echo-public", "greet"),
        ]
    );
    // An allowed call's record is its invocation's, which links it to the
    // egress, secret and state records of the same invocation.
    assert!(records[0].invocation > 0 && records[0].plugin == "echo");
    assert_eq!(records[0].error, None);

    let metrics = f.host.metrics.encode([], None);
    for line in [
        r#"switchyard_api_requests_total{caller="ops",target="action",name="echo-private",decision="allowed"} 1"#,
        r#"switchyard_api_requests_total{caller="billing",target="action",name="echo-private",decision="out_of_scope"} 1"#,
        r#"switchyard_api_requests_total{caller="anonymous",target="action",name="echo-private",decision="missing_key"} 1"#,
        r#"switchyard_api_requests_total{caller="anonymous",target="action",name="unknown",decision="missing_key"} 1"#,
        r#"switchyard_api_requests_total{caller="public",target="action",name="echo-public",decision="allowed"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert!(!metrics.contains("made-up-by-a-stranger"), "{metrics}");
}

#[tokio::test]
async fn a_key_that_cannot_be_resolved_stops_start_up_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = "data_dir = \"data\"\nplugin_dir = \"none\"\n\
        [access.keys.ci]\nsecret = { env = \"SWITCHYARD_TEST_UNSET_KEY_VAR\" }\n";
    let config = SwitchyardConfig::parse(text, dir.path()).unwrap();
    let err = Host::from_config(&config).await.unwrap_err().to_string();
    assert!(
        err.contains("access.keys.ci.secret") && err.contains("SWITCHYARD_TEST_UNSET_KEY_VAR"),
        "{err}"
    );
}
