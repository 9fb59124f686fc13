//! What an OAuth token costs per request once the host holds it: the http
//! probe guest sends `GET /api` to a loopback upstream with
//! `Authorization: Bearer {{oauth:g}}` (subject: the grant's cached access
//! token put in at egress, every token the host handed out scrubbed from
//! the answer) against the same request with `Bearer {{secret:s}}`
//! (baseline: a static secret put in the same way). Both run in one
//! runtime, fresh instance per call, interleaved.
//!
//! The token endpoint is a loopback axum route answering a one-hour token;
//! it must be asked exactly once in the whole run.

use super::Bench;
use super::stats::{Goal, Row, interleave};
use axum::Router;
use axum::routing::{get, post};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use switchyard_broker::capabilities::Grants;
use switchyard_broker::egress::Network;
use switchyard_broker::oauth::OAuthGrant;
use switchyard_broker::secrets::{EnvOrFile, SecretGrant};
use switchyard_oauth::OAuthManager;
use switchyard_oauth::seal::SealKey;
use switchyard_oauth::store::SqliteTokenStore;
use switchyard_runtime::{Limits, Runtime};

pub fn cached_token(b: &Bench) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let token_requests = Arc::new(AtomicUsize::new(0));
    let counted = token_requests.clone();
    let app = Router::new()
        .route(
            "/token",
            post(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async {
                    axum::Json(serde_json::json!({
                        "access_token": "bench-access-token-0123456789abcdef",
                        "token_type": "bearer",
                        "expires_in": 3600,
                    }))
                }
            }),
        )
        .route("/api", get(|| async { "ok" }));
    let addr = b.tokio.block_on(switchyard_tests::serve_on_loopback(app));
    let origin = format!("http://{addr}");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "bench-static-secret-0123456789abcdef").unwrap();
    let runtime = b.tokio.block_on(async {
        // A pace far above what one caller sends: the default (75/s per
        // connection) would be all the figure measured.
        let limits = Limits {
            http_destination_per_second: 1_000_000,
            http_destination_per_second_per_connection: 0,
            ..Limits::default()
        };
        let manager = OAuthManager::new(
            Arc::new(SqliteTokenStore::open(&dir.path().join("oauth.sqlite")).unwrap()),
            SealKey::from_bytes(&[9; 32]).unwrap(),
            Arc::new(EnvOrFile),
            Network::default(),
            (&limits).into(),
            "http://127.0.0.1:1",
            None,
        );
        let runtime = Runtime::builder()
            .limits(limits)
            .tokens(Arc::new(manager))
            .build()
            .unwrap();
        let plugin = dir.path().join("probe.wasm");
        std::fs::copy(switchyard_tests::guest("guest-http-probe"), &plugin).unwrap();
        std::fs::write(
            dir.path().join("probe.manifest.toml"),
            format!(
                "http = [\"{origin}\"]\nsecrets = [\"s\"]\nrate_limits = [\"spare\"]\nstate = true\noauth = [\"g\"]\n"
            ),
        )
        .unwrap();
        runtime.load_plugin("probe", &plugin).await.unwrap();
        runtime
    });
    let bound = SecretGrant {
        file: Some(secret_file.clone()),
        destinations: vec![origin.clone()],
        ..SecretGrant::default()
    };
    let grant: OAuthGrant = toml::from_str(&format!(
        "token_url = \"{origin}/token\"\nclient_id = \"bench\"\nclient_secret = {{ file = \"{}\" }}\ndestinations = [\"{origin}\"]\n",
        secret_file.display()
    ))
    .unwrap();
    let grants = Grants {
        allow: vec![origin.clone()],
        secrets: BTreeMap::from([("s".to_owned(), bound)]),
        rate_limits: BTreeMap::from([(
            "spare".to_owned(),
            toml::from_str("per_second = 1000000\nburst = 1000000").unwrap(),
        )]),
        state: true,
        oauth: BTreeMap::from([("g".to_owned(), grant)]),
        ..Grants::default()
    };
    runtime
        .add_connection_with_grants("probe", "probe", BTreeMap::new(), &grants)
        .unwrap();
    let call = |authorization: &str| {
        let input = serde_json::json!({
            "url": format!("{origin}/api"),
            "headers": [["authorization", authorization]],
        });
        let out = b
            .tokio
            .block_on(runtime.call_action("probe", "fetch", input.to_string().as_bytes()))
            .unwrap();
        let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["status"], 200, "{out}");
    };
    let (rounds, chunk) = if b.quick { (10, 20) } else { (40, 25) };
    let mut secret = || call("Bearer {{secret:s}}");
    let mut oauth = || call("Bearer {{oauth:g}}");
    let s = interleave(&mut [&mut secret, &mut oauth], 20, rounds, chunk);
    assert_eq!(
        token_requests.load(Ordering::SeqCst),
        1,
        "one token request"
    );
    vec![Row {
        figure: "OAuth access token put in at egress (cached), per request".into(),
        subject: format!("`Bearer {{{{oauth:g}}}}`: {}", s[1].time_text()),
        baseline: format!("`Bearer {{{{secret:s}}}}`, same run: {}", s[0].time_text()),
        value: s[1].median() / s[0].median(),
        unit: "×",
        goal: Goal::AtMost(1.1),
    }]
}
