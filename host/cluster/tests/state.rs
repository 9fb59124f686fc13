//! Connection state on the cluster, against a real nats-server: two
//! `Cluster`s on one server stand for two hosts, and a connection must
//! behave the same on either: the same keys, compare-and-swap that loses
//! no increment when both hosts race, the quota enforced for both at once,
//! and connections that cannot see each other.

use std::sync::Arc;
use switchyard_broker::kv::{ConnectionState, MAX_KEY_BYTES, StateBackend, StateQuota};
use switchyard_broker::secrets::EnvOrFile;
use switchyard_cluster::{Cluster, ClusterConfig};
use switchyard_tests::nats::NatsServer;

async fn host(server: &NatsServer, name: &str, quota: StateQuota) -> Arc<dyn StateBackend> {
    let config: ClusterConfig = toml::from_str(&format!(
        "nats = [\"{}\"]\nprefix = \"st\"\nhost_id = \"{name}\"",
        server.url()
    ))
    .unwrap();
    let cluster = Cluster::connect(&config, &EnvOrFile).await.unwrap();
    Arc::new(cluster.state(quota))
}

#[tokio::test]
async fn a_connection_sees_the_same_state_from_every_host() {
    let server = NatsServer::start();
    let a = ConnectionState::new(host(&server, "a", StateQuota::default()).await, "stripe-eu");
    let b = ConnectionState::new(host(&server, "b", StateQuota::default()).await, "stripe-eu");
    assert_eq!(a.get("cursor").await.unwrap(), None);
    a.set("cursor", b"evt_1").await.unwrap();
    assert_eq!(b.get("cursor").await.unwrap().unwrap(), b"evt_1");
    b.set("cursor", b"evt_2").await.unwrap();
    assert_eq!(a.get("cursor").await.unwrap().unwrap(), b"evt_2");
    // Compare-and-swap compares values, whichever host wrote them.
    assert!(
        !a.compare_and_swap("cursor", Some(b"evt_1"), Some(b"x"))
            .await
            .unwrap()
    );
    assert!(
        a.compare_and_swap("cursor", Some(b"evt_2"), Some(b"evt_3"))
            .await
            .unwrap()
    );
    assert!(
        !b.compare_and_swap("cursor", None, Some(b"y"))
            .await
            .unwrap(),
        "present"
    );
    assert!(
        b.compare_and_swap("cursor", Some(b"evt_3"), None)
            .await
            .unwrap(),
        "delete"
    );
    assert_eq!(a.get("cursor").await.unwrap(), None);
    assert!(
        a.compare_and_swap("cursor", None, Some(b"again"))
            .await
            .unwrap(),
        "create after delete"
    );
    assert!(
        a.compare_and_swap("gone", None, None).await.unwrap(),
        "absent stays absent"
    );
    assert!(b.delete("cursor").await.unwrap());
    assert!(!a.delete("cursor").await.unwrap(), "deleted once");
    // Keys: literal prefixes, sorted, limited; any key text survives the
    // trip through NATS subject names, however long.
    let long = "é".repeat(MAX_KEY_BYTES / 2);
    for key in [
        "cursor/a",
        "cursor/b",
        "cursor%x",
        "ünï code.key",
        "other",
        long.as_str(),
    ] {
        a.set(key, b"1").await.unwrap();
    }
    assert_eq!(
        b.keys("cursor/", 10).await.unwrap(),
        ["cursor/a", "cursor/b"]
    );
    assert_eq!(b.keys("cursor%", 10).await.unwrap(), ["cursor%x"]);
    assert_eq!(b.keys("", 2).await.unwrap(), ["cursor%x", "cursor/a"]);
    assert_eq!(b.keys("ü", 10).await.unwrap(), ["ünï code.key"]);
    assert_eq!(b.get(&long).await.unwrap().unwrap(), b"1");
    assert_eq!(b.keys("éé", 10).await.unwrap(), [long]);
    // Another connection sees none of it.
    let other = ConnectionState::new(host(&server, "c", StateQuota::default()).await, "stripe-us");
    assert_eq!(other.get("cursor/a").await.unwrap(), None);
    assert!(other.keys("", 10).await.unwrap().is_empty());
}

/// Two hosts incrementing one counter by compare-and-swap, eagerly and
/// at once: every increment lands exactly once.
#[tokio::test]
async fn racing_hosts_lose_no_increment() {
    let server = NatsServer::start();
    let mut tasks = Vec::new();
    for name in ["a", "b"] {
        let backend = host(&server, name, StateQuota::default()).await;
        for _ in 0..3 {
            let ns = ConnectionState::new(backend.clone(), "counter");
            tasks.push(tokio::spawn(async move {
                for _ in 0..20 {
                    loop {
                        let current = ns.get("n").await.unwrap();
                        let n: u64 = (current.as_deref())
                            .map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap());
                        let next = (n + 1).to_string();
                        if (ns.compare_and_swap("n", current.as_deref(), Some(next.as_bytes())))
                            .await
                            .unwrap()
                        {
                            break;
                        }
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let ns = ConnectionState::new(host(&server, "c", StateQuota::default()).await, "counter");
    assert_eq!(ns.get("n").await.unwrap().unwrap(), b"120");
}

/// The quota binds the connection across hosts: keys written on one host
/// count on the other; a refused write names the limit and evicts
/// nothing; deleting frees room (no marker left counting).
#[tokio::test]
async fn the_quota_holds_across_hosts_and_deleting_frees_room() {
    let server = NatsServer::start();
    let quota = StateQuota {
        max_keys: 3,
        max_bytes: 1 << 20,
    };
    let a = ConnectionState::new(host(&server, "a", quota).await, "small");
    let b = ConnectionState::new(host(&server, "b", quota).await, "small");
    a.set("k1", b"v").await.unwrap();
    b.set("k2", b"v").await.unwrap();
    a.set("k3", b"v").await.unwrap();
    let err = b.set("k4", b"v").await.unwrap_err().to_string();
    assert!(err.contains("limits.state_keys_per_connection"), "{err}");
    let err = (a.compare_and_swap("k4", None, Some(b"v")).await).unwrap_err();
    assert!(err.to_string().contains("state quota"), "{err}");
    for key in ["k1", "k2", "k3"] {
        assert_eq!(b.get(key).await.unwrap().unwrap(), b"v", "{key} kept");
    }
    for _ in 0..5 {
        // Delete and write again, more often than the quota has keys.
        assert!(b.delete("k3").await.unwrap());
        a.set("k4", b"v").await.unwrap();
        assert!(a.compare_and_swap("k4", Some(b"v"), None).await.unwrap());
        b.set("k3", b"v").await.unwrap();
    }
    // Another connection has a quota of its own.
    let other = ConnectionState::new(host(&server, "c", quota).await, "other");
    other.set("k1", b"v").await.unwrap();
    // The byte quota too.
    let tight = StateQuota {
        max_keys: 100,
        max_bytes: 4_096,
    };
    let c = ConnectionState::new(host(&server, "c", tight).await, "tight");
    c.set("a", &[b'x'; 1_000]).await.unwrap();
    let err = c.set("b", &[b'x'; 4_000]).await.unwrap_err().to_string();
    assert!(err.contains("limits.state_bytes_per_connection"), "{err}");
    assert_eq!(c.get("a").await.unwrap().unwrap().len(), 1_000);
}

/// Through the sandbox: the same connector and connection on two hosts'
/// runtimes, each with the cluster's state; what the guest writes on one
/// host it reads on the other, and another connection still sees nothing.
#[tokio::test]
async fn a_connector_on_two_hosts_shares_its_state_through_the_sandbox() {
    use serde_json::{Value, json};
    use switchyard_runtime::Runtime;
    let server = NatsServer::start();
    // A secret the probe needs granted; long, so the output redactor has
    // nothing to mistake for it. SAFETY: set before any runtime reads it;
    // nothing else writes it.
    unsafe { std::env::set_var("SWITCHYARD_TEST_STATE_TOKEN", "unused-secret-0f3a9c27e41b") };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.wasm");
    std::fs::copy(switchyard_tests::guest("guest-http-probe"), &path).unwrap();
    std::fs::write(
        dir.path().join("probe.manifest.toml"),
        "http = [\"http://127.0.0.1:9\"]\nsecrets = [\"base-token\"]\nrate_limits = [\"spare\"]\nstate = true\n",
    )
    .unwrap();
    let grants: switchyard_broker::capabilities::Grants = toml::from_str(
        "allow = [\"http://127.0.0.1:9\"]\nstate = true\nsecrets.base-token = { env = \"SWITCHYARD_TEST_STATE_TOKEN\" }\nrate_limits.spare = { per_second = 1000, burst = 1000 }",
    )
    .unwrap();
    let mut hosts = Vec::new();
    for name in ["a", "b"] {
        let runtime = Runtime::builder()
            .state_backend(host(&server, name, StateQuota::default()).await)
            .build()
            .unwrap();
        runtime.load_plugin("probe", &path).await.unwrap();
        for connection in ["tenant-a", "tenant-b"] {
            (runtime.add_connection_with_grants(connection, "probe", Default::default(), &grants))
                .unwrap();
        }
        hosts.push(runtime);
    }
    let call = |host: usize, connection: &'static str, op: Value| {
        let runtime = hosts[host].clone();
        async move {
            let out = (runtime.call_action(connection, "state", op.to_string().as_bytes()))
                .await
                .unwrap();
            let out: Value = serde_json::from_slice(&out).unwrap();
            assert!(out.get("error").is_none(), "{op}: {out}");
            out["result"].clone()
        }
    };
    let set = json!({ "op": "set", "key": "cursor", "value": "a-42" });
    assert_eq!(call(0, "tenant-a", set).await, Value::Null);
    let get = json!({ "op": "get", "key": "cursor" });
    assert_eq!(call(1, "tenant-a", get.clone()).await, "a-42");
    assert_eq!(call(1, "tenant-b", get.clone()).await, Value::Null);
    let cas = json!({ "op": "cas", "key": "cursor", "expected": "a-42", "new": "a-43" });
    assert_eq!(call(1, "tenant-a", cas.clone()).await, true);
    assert_eq!(
        call(0, "tenant-a", cas).await,
        false,
        "stale on the other host"
    );
    assert_eq!(call(0, "tenant-a", get).await, "a-43");
    let keys = json!({ "op": "keys", "prefix": "", "limit": 10 });
    assert_eq!(call(0, "tenant-b", keys).await, json!([]));
}
