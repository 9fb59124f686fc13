//! Component tests: real guests built from source, run through the runtime.

use std::collections::BTreeMap;
use std::time::Duration;
use switchyard_runtime::{ConnectorError, InvokeError, Limits, Message, Runtime};
use switchyard_tests::{guest, runtime_with};

fn small_limits() -> Limits {
    Limits {
        deadline_ms: 1_000,
        memory_bytes: 32 << 20,
        output_bytes: 1 << 20,
        ..Limits::default()
    }
}

async fn misbehave() -> Runtime {
    runtime_with(small_limits(), &["guest-misbehave"]).await
}

async fn call(runtime: &Runtime, action: &str, input: &[u8]) -> Result<Vec<u8>, InvokeError> {
    runtime.call_action("guest-misbehave", action, input).await
}

/// The host still serves after whatever went before.
async fn assert_still_serving(runtime: &Runtime) {
    let out = call(runtime, "echo", b"still here")
        .await
        .expect("echo after failure");
    assert_eq!(out, b"still here");
}

#[tokio::test]
async fn echo_round_trips_and_describe_is_recorded() {
    let runtime = runtime_with(Limits::default(), &["echo"]).await;
    let out = runtime
        .call_action("echo", "echo", br#"{"a":[1,2,{"b":null}]}"#)
        .await
        .unwrap();
    assert_eq!(out, br#"{"a":[1,2,{"b":null}]}"#);
    let plugin = runtime.plugin("echo").unwrap();
    assert_eq!(plugin.info().name, "echo");
    assert_eq!(plugin.summary().wit_version.as_deref(), Some("0.1.1"));
    let actions: Vec<_> = plugin
        .info()
        .actions
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(actions, ["echo", "greet"]);
}

#[tokio::test]
async fn two_connections_of_one_plugin_have_their_own_config() {
    let runtime = Runtime::builder().build().unwrap();
    runtime.load_plugin("echo", &guest("echo")).await.unwrap();
    let fr = BTreeMap::from([("greeting".to_owned(), "Bonjour".to_owned())]);
    let de = BTreeMap::from([("greeting".to_owned(), "Hallo".to_owned())]);
    runtime.add_connection("echo-fr", "echo", fr).unwrap();
    runtime.add_connection("echo-de", "echo", de).unwrap();
    let input = br#"{"name":"Ada"}"#;
    let fr = runtime
        .call_action("echo-fr", "greet", input)
        .await
        .unwrap();
    let de = runtime
        .call_action("echo-de", "greet", input)
        .await
        .unwrap();
    assert_eq!(fr, br#"{"message":"Bonjour, Ada!"}"#);
    assert_eq!(de, br#"{"message":"Hallo, Ada!"}"#);
}

#[tokio::test]
async fn config_reaches_the_guest_sorted() {
    let runtime = Runtime::builder().build().unwrap();
    runtime
        .load_plugin("m", &guest("guest-misbehave"))
        .await
        .unwrap();
    let settings = BTreeMap::from([
        ("zeta".to_owned(), "1".to_owned()),
        ("alpha".to_owned(), "two words".to_owned()),
    ]);
    runtime.add_connection("m", "m", settings).unwrap();
    let out = runtime.call_action("m", "config", b"").await.unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "alpha=two words\nzeta=1\n");
}

#[tokio::test]
async fn guest_errors_keep_their_kind() {
    let runtime = misbehave().await;
    let cases: [(&[u8], &str); 4] = [
        (b"retryable", "retryable"),
        (b"rate-limited", "rate_limited"),
        (b"invalid", "invalid_input"),
        (b"other", "permanent"),
    ];
    for (input, kind) in cases {
        let err = call(&runtime, "fail", input).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
    }
    match call(&runtime, "fail", b"rate-limited").await.unwrap_err() {
        InvokeError::Guest(ConnectorError::RateLimited(r)) => {
            assert_eq!(r.retry_after_ms, Some(1500));
            assert_eq!(r.message, "slow down");
        }
        other => panic!("expected rate-limited, got {other:?}"),
    }
    let unknown = call(&runtime, "no-such-action", b"").await.unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "permanent: unknown action `no-such-action`"
    );
}

#[tokio::test]
async fn a_panicking_guest_is_an_error_and_the_host_keeps_serving() {
    let runtime = misbehave().await;
    let err = call(&runtime, "panic", b"").await.unwrap_err();
    assert!(matches!(err, InvokeError::Trap { .. }), "{err:?}");
    // The SDK's panic hook reports the message; the host quotes it.
    let msg = err.to_string();
    assert!(
        msg.contains("panicked at") && msg.contains("deliberate panic for the test"),
        "{msg}"
    );
    assert_still_serving(&runtime).await;
}

/// The SDK's allocator starts in the 1 MiB initial heap `switchyard
/// plugin build` links in, so a call that fits never grows memory (each
/// growth costs the host two page-protection changes); a bigger one grows.
#[tokio::test]
async fn small_calls_allocate_without_growing_memory() {
    let runtime = misbehave().await;
    let pages = |out: Vec<u8>| -> (u32, u32) {
        let text = String::from_utf8(out).unwrap();
        let (before, after) = text.split_once(' ').unwrap();
        (before.parse().unwrap(), after.parse().unwrap())
    };
    let (before, after) = pages(call(&runtime, "heap", b"512").await.unwrap());
    assert_eq!(before, after, "512 KiB fit the initial heap");
    let (before, after) = pages(call(&runtime, "heap", b"4096").await.unwrap());
    assert!(
        after > before,
        "4 MiB grows memory: {before} -> {after} pages"
    );
    assert_still_serving(&runtime).await;
}

#[tokio::test]
async fn a_memory_bomb_hits_the_memory_limit() {
    let runtime = misbehave().await;
    let err = call(&runtime, "alloc", b"").await.unwrap_err();
    match &err {
        InvokeError::ResourceLimit(msg) => {
            assert!(msg.contains("limits.memory_bytes"), "{msg}");
            assert!(msg.contains(&(32u64 << 20).to_string()), "{msg}");
        }
        other => panic!("expected a memory limit error, got {other:?}"),
    }
    assert_still_serving(&runtime).await;
}

#[tokio::test]
async fn unbounded_recursion_traps_cleanly() {
    let runtime = misbehave().await;
    let err = call(&runtime, "recurse", b"").await.unwrap_err();
    assert!(matches!(err, InvokeError::Trap { .. }), "{err:?}");
    assert!(err.to_string().contains("stack overflow"), "{err}");
    assert_still_serving(&runtime).await;
}

#[tokio::test]
async fn oversized_output_is_refused() {
    let runtime = misbehave().await;
    let err = call(&runtime, "big-output", b"2").await.unwrap_err();
    match err {
        InvokeError::OutputTooLarge { size, limit } => {
            assert_eq!(size, 2 << 20);
            assert_eq!(limit, 1 << 20);
        }
        other => panic!("expected output too large, got {other:?}"),
    }
    assert_still_serving(&runtime).await;
}

#[tokio::test]
async fn a_log_flood_is_absorbed() {
    let runtime = misbehave().await;
    assert_eq!(call(&runtime, "log-flood", b"").await.unwrap(), b"done");
}

#[tokio::test]
async fn wasi_is_linked_with_nothing_granted() {
    let runtime = runtime_with(Limits::default(), &["guest-wasi-probe"]).await;
    let out = runtime
        .call_action("guest-wasi-probe", "environment", b"")
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "env=0 args=0 cwd=None");
    let out = runtime
        .call_action("guest-wasi-probe", "print", b"")
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "stdout=true stderr=true");
    let plugin = runtime.plugin("guest-wasi-probe").unwrap();
    let imports = &plugin.summary().imports;
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("wasi:cli/environment")),
        "{imports:?}"
    );
}

#[tokio::test]
async fn each_invocation_gets_a_fresh_instance() {
    let runtime = misbehave().await;
    for _ in 0..3 {
        assert_eq!(call(&runtime, "count", b"").await.unwrap(), b"1");
    }
    let out = runtime
        .transform(
            "guest-misbehave",
            vec![message("1", b"abc"), message("2", b"xyz")],
        )
        .await
        .unwrap();
    let payloads: Vec<_> = out.iter().map(|m| m.payload.clone()).collect();
    assert_eq!(payloads, [b"cba".to_vec(), b"zyx".to_vec()]);
}

#[tokio::test]
async fn two_hundred_concurrent_calls_are_all_correct() {
    let runtime = misbehave().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let runtime = runtime.clone();
        tasks.spawn(async move {
            let input = format!("call-{i}-{}", "x".repeat(i as usize));
            let out = call(&runtime, "echo", input.as_bytes()).await;
            (input, out)
        });
    }
    let mut ok = 0;
    while let Some(joined) = tasks.join_next().await {
        let (input, out) = joined.unwrap();
        assert_eq!(out.expect("concurrent call failed"), input.as_bytes());
        ok += 1;
    }
    assert_eq!(ok, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_as_busy() {
    let limits = Limits {
        deadline_ms: 2_000,
        max_concurrent: 1,
        max_queued: 0,
        ..Limits::default()
    };
    let runtime = runtime_with(limits, &["guest-misbehave"]).await;
    let spinner = {
        let runtime = runtime.clone();
        tokio::spawn(async move { call(&runtime, "loop", b"").await })
    };
    // Wait until the spinner holds the only slot; then calls are refused.
    let plugin = runtime.plugin("guest-misbehave").unwrap();
    for _ in 0..400 {
        if plugin.in_flight() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = call(&runtime, "echo", b"x").await.err();
    let err = refused.expect("the spinner never took the slot");
    assert!(matches!(err, InvokeError::Busy { .. }), "{err:?}");
    assert!(err.to_string().contains("limits.max_concurrent"), "{err}");
    let spun = spinner.await.unwrap().unwrap_err();
    assert!(matches!(spun, InvokeError::Timeout { .. }), "{spun:?}");
    assert_still_serving(&runtime).await;
}

#[tokio::test]
async fn a_spinning_guest_does_not_starve_other_calls_on_its_thread() {
    // current_thread runtime: the spinner and the echo share one thread, so
    // the echo finishes first only if the spinner yields.
    let runtime = misbehave().await;
    let spinner = {
        let runtime = runtime.clone();
        tokio::spawn(async move { call(&runtime, "loop", b"").await })
    };
    tokio::task::yield_now().await;
    let out = call(&runtime, "echo", b"meanwhile").await.unwrap();
    assert_eq!(out, b"meanwhile");
    assert!(
        !spinner.is_finished(),
        "the echo should not wait for the spinner"
    );
    let spun = spinner.await.unwrap().unwrap_err();
    assert!(matches!(spun, InvokeError::Timeout { .. }), "{spun:?}");
}

#[tokio::test]
async fn queued_calls_wait_for_a_slot() {
    let limits = Limits {
        max_concurrent: 2,
        max_queued: 100,
        ..Limits::default()
    };
    let runtime = runtime_with(limits, &["guest-misbehave"]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let runtime = runtime.clone();
        tasks.spawn(async move { call(&runtime, "echo", format!("{i}").as_bytes()).await });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap().expect("queued call should succeed");
    }
}

#[tokio::test]
async fn a_session_reuses_one_instance() {
    let runtime = misbehave().await;
    let mut session = runtime.session("guest-misbehave").await.unwrap();
    for expected in ["1", "2", "3"] {
        let out = session.call_action("count", b"").await.unwrap();
        assert_eq!(out, expected.as_bytes());
    }
}

#[tokio::test]
async fn unknown_connections_are_named() {
    let runtime = misbehave().await;
    let err = runtime.call_action("nope", "echo", b"").await.unwrap_err();
    assert_eq!(err.to_string(), "no connection named `nope`");
}

#[tokio::test]
async fn the_compile_cache_is_used_and_survives_corruption() {
    let dir = tempfile::tempdir().unwrap();
    // A subdirectory: the cache's key file lives beside it.
    let cache = dir.path().join("cache");
    let load = || async {
        let runtime = Runtime::builder().cache_dir(&cache).build().unwrap();
        let plugin = runtime.load_plugin("echo", &guest("echo")).await.unwrap();
        plugin.from_cache()
    };
    assert!(!load().await, "first load compiles");
    assert!(load().await, "second load comes from the cache");
    for entry in std::fs::read_dir(&cache).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    assert!(!load().await, "a corrupt entry is recompiled");
    assert!(load().await, "and rewritten");
}

#[tokio::test]
async fn from_config_gives_unconfigured_plugins_a_default_connection() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(guest("echo"), plugins.join("echo.wasm")).unwrap();
    std::fs::copy(guest("field-mapper"), plugins.join("field_mapper.wasm")).unwrap();
    std::fs::write(
        plugins.join("field_mapper.manifest.toml"),
        "http = [\"https://api.crm.example\"]\nstate = true\nrate_limits = [\"api\", \"bulk\"]\n",
    )
    .unwrap();
    let text = r#"
        plugin_dir = "plugins"
        [connections.crm]
        plugin = "field-mapper"
        config = { rename = "a=b" }
        grants = { allow = ["https://api.crm.example", "https://other.example"], rate_limits = { api = { per_second = 5, burst = 2 }, unrequested = { per_second = 1 } } }
    "#;
    let config = switchyard_host::SwitchyardConfig::parse(text, dir.path()).unwrap();
    let runtime = switchyard_host::Host::from_config(&config)
        .await
        .unwrap()
        .runtime;
    let names: Vec<String> = runtime
        .connections()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    assert_eq!(names, ["crm", "echo"]);
    let out = runtime
        .call_action("crm", "map", br#"{"a":1}"#)
        .await
        .unwrap();
    assert_eq!(out, br#"{"b":1}"#);
}

fn message(id: &str, payload: &[u8]) -> Message {
    Message {
        id: id.into(),
        stream: "s".into(),
        key: None,
        headers: vec![],
        payload: payload.to_vec(),
        timestamp_ms: 0,
    }
}

/// Issue 14: a CPU budget beside the wall clock. A spinning guest under a
/// long deadline is stopped by its fuel, as a resource limit naming the
/// key, and the plugin keeps serving.
#[tokio::test]
async fn a_spinning_guest_spends_its_cpu_budget_before_a_long_deadline() {
    let limits = Limits {
        deadline_ms: 60_000,
        fuel: 50_000_000,
        ..Limits::default()
    };
    let runtime = runtime_with(limits, &["guest-misbehave"]).await;
    let started = std::time::Instant::now();
    let err = runtime
        .call_action("guest-misbehave", "loop", b"")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, InvokeError::ResourceLimit(m) if m.contains("limits.fuel")),
        "{err:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let echoed = runtime
        .call_action("guest-misbehave", "echo", b"still here")
        .await
        .unwrap();
    assert_eq!(echoed, b"still here");
}

/// Issue 14: a busy connection leaves slots to its plugin's other
/// connections. A holds its whole share (2 of 3 slots); its next call is
/// busy, while B's call runs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_take_every_slot_of_its_plugin() {
    let limits = Limits {
        deadline_ms: 2_000,
        max_concurrent: 3,
        max_concurrent_per_connection: 2,
        max_queued: 0,
        ..Limits::default()
    };
    let runtime = Runtime::builder().limits(limits).build().unwrap();
    runtime
        .load_plugin("m", &guest("guest-misbehave"))
        .await
        .unwrap();
    for name in ["a", "b"] {
        runtime.add_connection(name, "m", BTreeMap::new()).unwrap();
    }
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let runtime = runtime.clone();
            tokio::spawn(async move { runtime.call_action("a", "loop", b"").await })
        })
        .collect();
    let plugin = runtime.plugin("m").unwrap();
    for _ in 0..400 {
        if plugin.in_flight() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(plugin.in_flight(), 2, "both spinners run");
    let err = runtime.call_action("a", "echo", b"x").await.unwrap_err();
    assert!(matches!(err, InvokeError::Busy { .. }), "{err:?}");
    let out = runtime.call_action("b", "echo", b"b runs").await.unwrap();
    assert_eq!(out, b"b runs");
    for spinner in spinners {
        assert!(matches!(
            spinner.await.unwrap(),
            Err(InvokeError::Timeout { .. })
        ));
    }
}
