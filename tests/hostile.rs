//! The hostile-connector suite: what a malicious connector author tries,
//! and what the host promises about each attempt.
//!
//! Every call-time case asserts that the host stays up, that the error is
//! classified (its kind) and names the limit it hit, that nothing the guest
//! chose reaches the caller with a control character in it, and that a
//! well-behaved connection answers while the attack runs, within
//! [`NEIGHBOUR_BOUND`]. Load-time cases assert the file is refused before
//! the compiler runs, naming the `[limits]` key. Real guests are built from
//! source in the test run (`tests/guests`); bombs are encoded here.

use std::path::Path;
use std::time::{Duration, Instant};
use switchyard_runtime::{InvokeError, Limits, LoadError, Runtime};
use switchyard_tests::{guest, runtime_with};

/// How long a well-behaved echo may take while an attack runs beside it:
/// far above its ~1 ms alone, far below the attack's own deadline, so only
/// starvation fails it. The benchmark suite measures the real figures.
const NEIGHBOUR_BOUND: Duration = Duration::from_millis(750);

/// One attack: a call and what the host must answer.
struct Attack {
    name: &'static str,
    connection: &'static str,
    action: &'static str,
    input: &'static [u8],
    /// [`InvokeError::kind`] of the answer, or `"ok"` for an attack the
    /// host answers harmlessly.
    kind: &'static str,
    /// Text the answer (error or output) must contain: the limit it names,
    /// or what the guest found.
    names: &'static str,
}

const ATTACKS: &[Attack] = &[
    Attack {
        name: "spin until the deadline",
        connection: "guest-misbehave",
        action: "loop",
        input: b"",
        kind: "timeout",
        names: "deadline of 1500 ms",
    },
    Attack {
        name: "flood the host with calls",
        connection: "guest-misbehave",
        action: "call-flood",
        input: b"",
        kind: "timeout",
        names: "deadline of 1500 ms",
    },
    Attack {
        name: "allocate without bound",
        connection: "guest-misbehave",
        action: "alloc",
        input: b"",
        kind: "resource_limit",
        names: "memory",
    },
    Attack {
        name: "recurse without bound",
        connection: "guest-misbehave",
        action: "recurse",
        input: b"",
        kind: "trap",
        names: "limits.wasm_stack_bytes",
    },
    Attack {
        name: "return more than the output limit",
        connection: "guest-misbehave",
        action: "big-output",
        input: b"5",
        kind: "output_too_large",
        names: "byte output limit",
    },
    Attack {
        name: "hold resource handles until refused",
        connection: "guest-wasi-probe",
        action: "handles",
        input: b"",
        kind: "resource_limit",
        names: "limits.resource_handles",
    },
    Attack {
        name: "ask for 2^32 random bytes",
        connection: "guest-wasi-probe",
        action: "random",
        input: b"4294967296",
        kind: "resource_limit",
        names: "wasi:random",
    },
    Attack {
        name: "append a million header fields",
        connection: "guest-wasi-probe",
        action: "headers",
        input: b"1000000",
        kind: "resource_limit",
        names: "HTTP header fields",
    },
    Attack {
        name: "forge a log record in a panic",
        connection: "guest-misbehave",
        action: "panic-with",
        input: b"x\n2026-12-01T00:00:00Z  INFO switchyard::runtime: plugin loaded plugin=\"admin\"",
        kind: "trap",
        names: "\\n2026-12-01",
    },
    Attack {
        name: "forge a log record and colours in an error",
        connection: "guest-misbehave",
        action: "leak",
        input: b"x\r\n\x1b[31mERROR forged\x1b[0m",
        kind: "permanent",
        names: "\\r\\n\\u{1b}[31m",
    },
    Attack {
        name: "allocate 200 MiB in small pieces",
        connection: "guest-misbehave",
        action: "heap",
        input: b"204800",
        kind: "resource_limit",
        names: "memory",
    },
    Attack {
        name: "flood the log",
        connection: "guest-misbehave",
        action: "log-flood",
        input: b"",
        kind: "ok",
        names: "done",
    },
    Attack {
        name: "look for the host's environment, arguments and directory",
        connection: "guest-wasi-probe",
        action: "environment",
        input: b"",
        kind: "ok",
        names: "env=0 args=0 cwd=None",
    },
    Attack {
        name: "read settings it was not given",
        connection: "guest-misbehave",
        action: "config",
        input: b"",
        kind: "ok",
        names: "",
    },
    Attack {
        name: "find state left by an earlier call in the same slot",
        connection: "guest-misbehave",
        action: "count",
        input: b"",
        kind: "ok",
        names: "1",
    },
    Attack {
        name: "panic after logging",
        connection: "guest-misbehave",
        action: "panic",
        input: b"",
        kind: "trap",
        names: "deliberate panic",
    },
    Attack {
        name: "claim a retry-after of its choosing",
        connection: "guest-misbehave",
        action: "fail",
        input: b"rate-limited",
        kind: "rate_limited",
        names: "retry after 1500 ms",
    },
    Attack {
        name: "call an action that does not exist",
        connection: "guest-misbehave",
        action: "../../admin",
        input: b"",
        kind: "permanent",
        names: "../../admin",
    },
];

fn limits() -> Limits {
    Limits {
        deadline_ms: 1_500,
        ..Limits::default()
    }
}

/// Calls echo while `attack` runs; the slowest answer, and the attack's.
async fn slowest_echo_beside(
    runtime: &Runtime,
    attack: &Attack,
) -> (Duration, Result<Vec<u8>, InvokeError>) {
    let attacker = {
        let runtime = runtime.clone();
        let (connection, action, input) = (attack.connection, attack.action, attack.input);
        tokio::spawn(async move { runtime.call_action(connection, action, input).await })
    };
    let mut slowest = Duration::ZERO;
    while !attacker.is_finished() {
        let started = Instant::now();
        let out = runtime
            .call_action("echo", "greet", br#"{"name":"neighbour"}"#)
            .await
            .expect("the neighbour is served");
        assert_eq!(out, br#"{"message":"Hello, neighbour!"}"#);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (slowest, attacker.await.expect("the attack's task"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_time_attack_is_contained_classified_and_named() {
    let runtime = runtime_with(limits(), &["echo", "guest-misbehave", "guest-wasi-probe"]).await;
    let mut failures = Vec::new();
    for attack in ATTACKS {
        let (slowest, answer) = slowest_echo_beside(&runtime, attack).await;
        let (kind, text) = match &answer {
            Ok(out) => ("ok", String::from_utf8_lossy(out).into_owned()),
            Err(err) => (err.kind(), err.to_string()),
        };
        if kind != attack.kind || !text.contains(attack.names) {
            failures.push(format!(
                "{}: got {kind} `{text}`, want {} naming `{}`",
                attack.name, attack.kind, attack.names
            ));
        }
        if text.chars().any(char::is_control) {
            failures.push(format!("{}: control characters in `{text:?}`", attack.name));
        }
        if slowest > NEIGHBOUR_BOUND {
            failures.push(format!(
                "{}: the neighbour waited {slowest:?} (bound {NEIGHBOUR_BOUND:?})",
                attack.name
            ));
        }
        // The host is up and the attacker's plugin serves its next call.
        let after = runtime
            .call_action(attack.connection, "echo", b"again")
            .await;
        if attack.connection == "guest-misbehave" && after.as_deref().ok() != Some(b"again") {
            failures.push(format!("{}: the next call got {after:?}", attack.name));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A host error is the host's fault; the guest's overreach must not be
/// counted as one.
#[tokio::test]
async fn overreach_is_the_guests_fault_not_the_hosts() {
    let runtime = runtime_with(limits(), &["guest-wasi-probe"]).await;
    for (action, input) in [("handles", &b""[..]), ("random", b"4294967296")] {
        let err = runtime
            .call_action("guest-wasi-probe", action, input)
            .await
            .unwrap_err();
        assert!(!matches!(err, InvokeError::Host(_)), "{action}: {err}");
    }
    // Within the limit the same calls work.
    let out = runtime
        .call_action("guest-wasi-probe", "random", b"1024")
        .await
        .unwrap();
    assert_eq!(out, b"1024");
    let out = runtime
        .call_action("guest-wasi-probe", "headers", b"100")
        .await
        .unwrap();
    assert_eq!(out, b"appended");
}

/// A component wrapping one core module of `functions` bodies, each
/// `nesting` blocks deep and padded with `padding` `nop`s.
fn bomb(functions: u32, nesting: u32, padding: u32) -> Vec<u8> {
    use wasm_encoder::{BlockType, Instruction};
    component_of((0..functions).map(|_| {
        let mut f = wasm_encoder::Function::new([]);
        for _ in 0..nesting {
            f.instruction(&Instruction::Block(BlockType::Empty));
        }
        for _ in 0..padding {
            f.instruction(&Instruction::Nop);
        }
        for _ in 0..nesting {
            f.instruction(&Instruction::End);
        }
        f.instruction(&Instruction::End);
        f
    }))
}

/// A component wrapping one core module of `functions`, each of type
/// `[] -> []`.
fn component_of(functions: impl Iterator<Item = wasm_encoder::Function>) -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, Component, FunctionSection, Module, ModuleSection, TypeSection,
    };
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut funcs = FunctionSection::new();
    let mut code = CodeSection::new();
    for f in functions {
        funcs.function(0);
        code.function(&f);
    }
    let mut module = Module::new();
    module.section(&types).section(&funcs).section(&code);
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    component.finish()
}

/// Files an attacker (or an accident) drops in: each refused with the
/// error that names the fix, while the loaded plugins keep serving.
#[tokio::test]
async fn malformed_and_foreign_files_are_refused_with_the_fix_named() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime_with(limits(), &["echo"]).await;
    let echo = std::fs::read(guest("echo")).unwrap();
    let core_module = {
        let mut module = wasm_encoder::Module::new();
        module.section(&wasm_encoder::TypeSection::new());
        module.finish()
    };
    let from_guest = |package: &str| std::fs::read(guest(package)).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "the file is empty"),
        (
            "text",
            b"#!/bin/sh\nrm -rf /\n".to_vec(),
            "not a WebAssembly file",
        ),
        (
            "core",
            core_module,
            "core WebAssembly module, not a component",
        ),
        (
            "truncated",
            echo[..echo.len() / 2].to_vec(),
            "invalid component",
        ),
        (
            "wrong-world",
            from_guest("guest-wrong-world"),
            "wrong world",
        ),
        (
            "foreign",
            from_guest("guest-extra-import"),
            "which this host does not provide",
        ),
        (
            "future",
            from_guest("guest-future-version"),
            "does not support",
        ),
        (
            "incomplete",
            from_guest("guest-missing-export"),
            "is incomplete",
        ),
    ];
    for (name, bytes, says) in cases {
        let err = load_bytes(&runtime, dir.path(), name, &bytes).await;
        assert!(err.to_string().contains(says), "{name}: {err}");
        greets(&runtime, "echo", "still").await;
    }
    assert_eq!(runtime.plugins().len(), 1);
}

/// A component of one function holding `repeats` nests of `depth` blocks.
fn nested_repeats(depth: u32, repeats: u32) -> Vec<u8> {
    use wasm_encoder::{BlockType, Instruction};
    let mut f = wasm_encoder::Function::new([]);
    for _ in 0..repeats {
        for _ in 0..depth {
            f.instruction(&Instruction::Block(BlockType::Empty));
        }
        for _ in 0..depth {
            f.instruction(&Instruction::End);
        }
    }
    f.instruction(&Instruction::End);
    component_of(std::iter::once(f))
}

async fn load_bytes(runtime: &Runtime, dir: &Path, name: &str, bytes: &[u8]) -> LoadError {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    runtime.load_plugin(name, &path).await.unwrap_err()
}

fn too_costly(err: &LoadError, key: &str) -> bool {
    matches!(err, LoadError::TooCostly { key: k, .. } if k == key)
        && err.to_string().contains(&format!("limits.{key}"))
}

#[tokio::test]
async fn compile_bombs_are_refused_before_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder().build().unwrap();
    // One 2 MiB function (the report's took 76 s and 5.1 GiB at 6 MB).
    let err = load_bytes(&runtime, dir.path(), "huge", &bomb(1, 0, 2 << 20)).await;
    assert!(too_costly(&err, "compile_function_bytes"), "{err}");
    // 200 001 small functions (the report's 200 000 took 31 s, 1.2 GiB).
    let err = load_bytes(&runtime, dir.path(), "many", &bomb(200_001, 0, 0)).await;
    assert!(too_costly(&err, "compile_functions"), "{err}");
    // Blocks nested 100 000 deep (the report's still compiled at 300 s).
    let err = load_bytes(&runtime, dir.path(), "deep", &bomb(1, 100_000, 0)).await;
    assert!(too_costly(&err, "compile_nesting_depth"), "{err}");
    // 340 000 blocks in one function, 1 000 deep: 1 MiB that took over
    // 3 minutes to compile before the block cost was bounded.
    let err = load_bytes(&runtime, dir.path(), "blocks", &nested_repeats(1_000, 340)).await;
    assert!(too_costly(&err, "compile_block_cost"), "{err}");
    // The operator can lower the bounds; the message says which key.
    let strict = Runtime::builder()
        .limits(Limits {
            compile_nesting_depth: 10,
            ..Limits::default()
        })
        .build()
        .unwrap();
    let err = load_bytes(&strict, dir.path(), "eleven", &bomb(1, 11, 0)).await;
    assert!(too_costly(&err, "compile_nesting_depth"), "{err}");
    assert!(runtime.plugins().is_empty() && strict.plugins().is_empty());
}

#[tokio::test]
async fn an_oversized_file_is_refused_from_its_length_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.wasm");
    // 210 MB, sparse: nothing is written, so a host that read it whole
    // would still spend the time; the check must not need to.
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(210 << 20).unwrap();
    let runtime = Runtime::builder().build().unwrap();
    let err = runtime.load_plugin("big", &path).await.unwrap_err();
    assert!(too_costly(&err, "component_bytes"), "{err}");
    assert!(err.to_string().contains("220200960 bytes"), "{err}");
}

#[tokio::test]
async fn a_forged_describe_is_refused_and_quoted_escaped() {
    let runtime = Runtime::builder().build().unwrap();
    let err = runtime
        .load_plugin("forged", &guest("guest-forged-describe"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("not semver"), "{text}");
    assert!(!text.chars().any(char::is_control), "{text:?}");
    assert!(text.contains("1.0.0\\n2026-12-01"), "{text}");
    assert!(runtime.plugins().is_empty());
    let failures = runtime.load_failures();
    assert!(!failures[0].error.chars().any(char::is_control));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiles_in_flight_are_bounded() {
    let runtime = Runtime::builder().build().unwrap();
    let loads: Vec<_> = [
        "echo",
        "field-mapper",
        "guest-misbehave",
        "guest-wasi-probe",
    ]
    .into_iter()
    .map(|package| {
        let runtime = runtime.clone();
        tokio::spawn(async move { runtime.load_plugin(package, &guest(package)).await })
    })
    .collect();
    let mut most = 0;
    while !loads.iter().all(|l| l.is_finished()) {
        most = most.max(runtime.compiles_running());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for load in loads {
        load.await.unwrap().unwrap();
    }
    assert_eq!(most, 1, "limits.compiles_in_flight = 1");
}

/// Reads every file of `dir` `times` times, as `cat` or a backup would.
fn read_all(dir: &Path, times: usize) {
    for _ in 0..times {
        for entry in std::fs::read_dir(dir).unwrap() {
            let _ = std::fs::read(entry.unwrap().path());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_plugin_files_reloads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path();
    let runtime = Runtime::builder().build().unwrap();
    let _watch = switchyard_runtime::watch::watch_plugin_dir(runtime.clone(), plugins).unwrap();
    std::fs::copy(guest("echo"), plugins.join("echo.wasm")).unwrap();
    std::fs::write(plugins.join("junk.wasm"), b"not wasm at all").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (runtime.plugin("echo").is_none() || runtime.load_failures().is_empty())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let loaded_at = runtime.plugin("echo").expect("echo loaded").loaded_at_ms();
    let failed_at = runtime.load_failures()[0].at_ms;
    // Several debounce windows of reads, then quiet.
    for _ in 0..10 {
        read_all(plugins, 3);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(switchyard_runtime::watch::DEBOUNCE * 6).await;
    assert_eq!(runtime.plugin("echo").unwrap().loaded_at_ms(), loaded_at);
    assert_eq!(runtime.load_failures()[0].at_ms, failed_at, "junk re-read");
    // A real change is still seen.
    std::fs::write(plugins.join("junk.wasm"), b"still not wasm").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while runtime.load_failures()[0].at_ms == failed_at && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(runtime.load_failures()[0].at_ms, failed_at);
}

fn config_with_a_bad_file(dir: &Path, strict: bool) -> switchyard_host::SwitchyardConfig {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(guest("echo"), plugins.join("echo.wasm")).unwrap();
    std::fs::write(plugins.join("broken.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
    let text = format!(
        r#"
data_dir = "data"
plugin_dir = "plugins"
strict_plugins = {strict}
[connections.broken-one]
plugin = "broken"
[access]
public = ["echo"]
"#
    );
    switchyard_host::SwitchyardConfig::parse(&text, dir).unwrap()
}

#[tokio::test]
async fn a_bad_plugin_file_does_not_keep_a_restarted_host_down() {
    let dir = tempfile::tempdir().unwrap();
    let host = switchyard_host::Host::from_config(&config_with_a_bad_file(dir.path(), false))
        .await
        .expect("the host starts beside a bad file");
    greets(&host.runtime, "echo", "again").await;
    let failures = host.runtime.load_failures();
    assert_eq!(failures.len(), 1);
    assert!(failures[0].path.ends_with("broken.wasm"), "{failures:?}");
    // Its connection waits for it, configured but not callable.
    assert!(host.runtime.has_connection("broken-one"));
    let err = host
        .runtime
        .call_action("broken-one", "greet", b"{}")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "unknown_connection");
    // Once the file is fixed, the waiting connection runs it.
    std::fs::copy(guest("echo"), dir.path().join("plugins/broken.wasm")).unwrap();
    switchyard_runtime::watch::sync_file(&host.runtime, &dir.path().join("plugins/broken.wasm"))
        .await;
    greets(&host.runtime, "broken-one", "fixed").await;
}

/// Asserts `connection` (an echo) greets `name`.
async fn greets(runtime: &Runtime, connection: &str, name: &str) {
    let input = format!(r#"{{"name":"{name}"}}"#);
    let out = runtime
        .call_action(connection, "greet", input.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{connection}: {e}"));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(r#"{{"message":"Hello, {name}!"}}"#)
    );
}

#[tokio::test]
async fn strict_plugins_refuses_to_start_on_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = switchyard_host::Host::from_config(&config_with_a_bad_file(dir.path(), true))
        .await
        .expect_err("strict start-up refuses");
    assert!(err.to_string().contains("broken.wasm"), "{err}");
}

#[tokio::test]
async fn unknown_plugins_of_connections_are_still_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        "data_dir = \"data\"\nplugin_dir = \"plugins\"\n[connections.c]\nplugin = \"nowhere\"\n";
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    let config = switchyard_host::SwitchyardConfig::parse(text, dir.path()).unwrap();
    let err = switchyard_host::Host::from_config(&config)
        .await
        .expect_err("a typo is refused");
    assert!(err.to_string().contains("`nowhere`"), "{err}");
}

/// The report: with 32 calls of one plugin spinning, a well-behaved
/// plugin's median went from 0.8 ms to 312 ms. Spinning calls now take
/// turns on `cpu_bound_per_plugin` hot slots instead of the run queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_calls_of_one_plugin_leave_the_executor_to_the_others() {
    let limits = Limits {
        deadline_ms: 4_000,
        max_concurrent_per_connection: 32,
        ..Limits::default()
    };
    let runtime = runtime_with(limits, &["echo", "guest-misbehave"]).await;
    let spinners: Vec<_> = (0..32)
        .map(|_| {
            let runtime = runtime.clone();
            tokio::spawn(async move { runtime.call_action("guest-misbehave", "loop", b"").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut times = Vec::new();
    for _ in 0..60 {
        // On a worker, as a server's request handler runs.
        let started = Instant::now();
        let echo = runtime.clone();
        tokio::spawn(async move { echo.call_action("echo", "greet", br#"{"name":"n"}"#).await })
            .await
            .unwrap()
            .expect("served beside the spinners");
        times.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let still_spinning = spinners.iter().filter(|s| !s.is_finished()).count();
    let plugin = runtime.plugin("guest-misbehave").unwrap();
    let bound = Limits::default().cpu_bound_calls();
    assert!(plugin.cpu_bound_running() <= bound, "at most {bound} hot");
    for spinner in spinners {
        let err = spinner.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), "timeout", "{err}");
    }
    times.sort();
    let (p50, p99) = (times[times.len() / 2], times[times.len() * 99 / 100]);
    assert_eq!(still_spinning, 32, "the echoes ran while all 32 spun");
    assert!(
        p50 < Duration::from_millis(100),
        "p50 {p50:?} (p99 {p99:?})"
    );
    assert!(p99 < NEIGHBOUR_BOUND, "p99 {p99:?}");
}

/// What the largest bomb each default bound admits costs to compile: run
/// one at a time (`cargo test -p switchyard-tests --test hostile
/// admissible_bomb -- --ignored --nocapture --exact hostile::admissible_bomb_KIND`)
/// and read the elapsed time and the process's peak resident memory.
async fn admissible_bomb(bytes: Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder().build().unwrap();
    let started = Instant::now();
    let err = load_bytes(&runtime, dir.path(), "bomb", &bytes).await;
    let peak = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or_default()
        .to_owned();
    eprintln!(
        "{} bytes: compiled and refused in {:?} ({peak}): {err}",
        bytes.len(),
        started.elapsed()
    );
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err}");
}

#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn admissible_bomb_one_huge_function() {
    admissible_bomb(straight_line((1 << 20) / 7)).await;
}

/// A component of one function doing `repeats` additions on a local.
fn straight_line(repeats: u32) -> Vec<u8> {
    use wasm_encoder::{Instruction, ValType};
    let mut f = wasm_encoder::Function::new([(4, ValType::I32)]);
    for i in 0..repeats {
        f.instruction(&Instruction::LocalGet(i % 4));
        f.instruction(&Instruction::I32Const(1));
        f.instruction(&Instruction::I32Add);
        f.instruction(&Instruction::LocalSet((i + 1) % 4));
    }
    f.instruction(&Instruction::End);
    component_of(std::iter::once(f))
}

#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn admissible_bomb_many_functions() {
    admissible_bomb(bomb(100_000, 0, 0)).await;
}

#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn admissible_bomb_deep_nesting() {
    // 1 000 deep, 100 times over: the most blocks one function may have
    // at the default block cost. `BOMB=depth,repeats` measures others.
    let (depth, repeats) = std::env::var("BOMB")
        .ok()
        .and_then(|b| {
            let (d, r) = b.split_once(',')?;
            Some((d.parse().ok()?, r.parse().ok()?))
        })
        .unwrap_or((1_000, 100));
    admissible_bomb(nested_repeats(depth, repeats)).await;
}

/// A long-lived session gives its hot slot up when a call ends, even one
/// stopped at its deadline while it held the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_holds_no_hot_slot_between_calls() {
    let runtime = runtime_with(
        Limits {
            deadline_ms: 300,
            ..Limits::default()
        },
        &["guest-misbehave"],
    )
    .await;
    let mut session = runtime.session("guest-misbehave").await.unwrap();
    let err = session.call_action("loop", b"").await.unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    let plugin = runtime.plugin("guest-misbehave").unwrap();
    assert_eq!(plugin.cpu_bound_running(), 0);
    // A trapped instance cannot be entered again; a new session serves.
    let mut fresh = runtime.session("guest-misbehave").await.unwrap();
    assert_eq!(fresh.call_action("echo", b"x").await.unwrap(), b"x");
}
