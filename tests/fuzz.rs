//! Fuzzing in the test suite: time-boxed mutation harnesses over what a
//! stranger controls (plugin files, `switchyard.toml`, manifests, webhook
//! requests), with no nightly toolchain. Each target runs for
//! `SWITCHYARD_FUZZ_SECONDS` (default 6) and prints its exec count; CI runs
//! them as part of `./dev test`, and a longer run is
//! `SWITCHYARD_FUZZ_SECONDS=600 cargo test -p switchyard-tests --test fuzz -- --nocapture --test-threads 1`.
//!
//! Inputs come from a seeded generator (the seed is printed, and
//! `SWITCHYARD_FUZZ_SEED` replays it): byte mutations of real inputs,
//! `wasm-smith` modules and `wasm-mutate` variants of real connectors'
//! code, at the wasm-tools version wasmtime 48 uses. A panic, a hang past
//! the deadline or a broken property fails the test with the seed.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};
use switchyard_runtime::{Limits, Runtime};
use switchyard_tests::guest;

/// A small, seedable generator (xorshift64*): the harness only needs
/// reproducible bytes, not cryptographic ones.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Up to `max` bytes.
    fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        self.bytes(n)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Interesting values a mutation may write.
const MAGIC: &[&[u8]] = &[
    b"\0asm",
    b"\x0d\0\x01\0",
    b"\xff\xff\xff\xff\x0f",
    b"\x80\x80\x80\x80\x80",
    b"\0",
    b"\"",
    b"\n",
    b"\x1b[31m",
    b"=",
    b"[",
    b"]]",
    b"{",
    b"99999999999999999999",
    b"-1",
];

/// `seed` with one to four stacked byte-level mutations.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = rng.next() as u8;
            }
            2 => {
                let n = rng.below(16) + 1;
                let bytes = rng.bytes(n);
                out.splice(at..at, bytes);
            }
            3 => {
                let end = (at + rng.below(64) + 1).min(out.len());
                out.drain(at.min(end)..end);
            }
            4 => out.truncate(at),
            5 => {
                let magic = MAGIC[rng.below(MAGIC.len())];
                out.splice(at..at, magic.iter().copied());
            }
            _ => {
                let end = (at + rng.below(256) + 1).min(out.len());
                let copy = out[at.min(end)..end].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, copy);
            }
        }
    }
    out
}

fn budget() -> Duration {
    let seconds = std::env::var("SWITCHYARD_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6.0);
    Duration::from_secs_f64(seconds)
}

fn seed() -> u64 {
    std::env::var("SWITCHYARD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// Runs `one` with fresh randomness until the budget is spent; returns
/// and prints the exec count.
fn fuzz(target: &str, mut one: impl FnMut(&mut Rng)) -> u64 {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut execs = 0u64;
    while started.elapsed() < budget() {
        let case = rng.next();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            one(&mut Rng::new(case));
        }));
        if outcome.is_err() {
            panic!("fuzz target {target}: case {case} failed (run seed {seed})");
        }
        execs += 1;
    }
    eprintln!(
        "fuzz {target}: {execs} execs in {:.1} s, 0 failures (seed {seed})",
        started.elapsed().as_secs_f64()
    );
    execs
}

/// Every guest component the tests build: the loader's seeds.
fn seed_components() -> Vec<Vec<u8>> {
    [
        "echo",
        "field-mapper",
        "guest-misbehave",
        "guest-wasi-probe",
    ]
    .iter()
    .map(|p| std::fs::read(guest(p)).unwrap())
    .collect()
}

/// The byte range of the first core module inside a component, and the
/// start of its section header, so it can be replaced.
fn first_module(component: &[u8]) -> (usize, std::ops::Range<usize>) {
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        if let Ok(wasmparser::Payload::ModuleSection {
            unchecked_range, ..
        }) = payload
        {
            let len = unchecked_range.len();
            let leb = leb128_len(len as u64);
            return (unchecked_range.start - leb - 1, unchecked_range);
        }
    }
    panic!("a connector has a core module");
}

fn leb128_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// `component` with its first core module replaced by `module`.
fn with_module(component: &[u8], module: &[u8]) -> Vec<u8> {
    let (header, range) = first_module(component);
    let mut out = component[..header].to_vec();
    out.push(1); // the core module section id
    let mut n = module.len() as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        out.push(if n == 0 { byte } else { byte | 0x80 });
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(module);
    out.extend_from_slice(&component[range.end..]);
    out
}

/// A runtime with short deadlines, so a mutated connector that spins
/// costs little.
fn fuzz_runtime() -> (tokio::runtime::Runtime, Runtime) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::builder()
        .limits(Limits {
            deadline_ms: 300,
            ..Limits::default()
        })
        .build()
        .unwrap();
    (tokio, runtime)
}

/// Loads `bytes` as a plugin file and, if it loads, calls it once: the
/// loader answers `Ok` or a [`switchyard_runtime::LoadError`] with a
/// message, and a call answers or fails classified; nothing panics.
fn load_and_call(tokio: &tokio::runtime::Runtime, runtime: &Runtime, dir: &Path, bytes: &[u8]) {
    let path = dir.join("fuzzed.wasm");
    std::fs::write(&path, bytes).unwrap();
    match tokio.block_on(runtime.load_plugin("fuzzed", &path)) {
        Ok(plugin) => {
            runtime.ensure_default_connection("fuzzed");
            if let Some(action) = plugin.info().actions.first() {
                let out = tokio.block_on(runtime.call_action("fuzzed", &action.name, b"{}"));
                if let Err(e) = out {
                    assert!(!e.kind().is_empty());
                }
            }
            runtime.remove_plugin("fuzzed", None);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[test]
fn component_loader_front_door() {
    let seeds = seed_components();
    let limits = Limits::default();
    let dir = tempfile::tempdir().unwrap();
    let (tokio, runtime) = fuzz_runtime();
    let mut round = 0u64;
    let execs = fuzz("component-loader", |rng| {
        round += 1;
        let bytes = match rng.below(8) {
            0 => rng.some_bytes(4096),
            _ => {
                let seed = rng.pick(&seeds);
                mutate(rng, seed)
            }
        };
        // The admission check runs on every input: it must measure or
        // refuse whatever it is given.
        let _ = switchyard_runtime::admission::check_code(Path::new("f.wasm"), &bytes, &limits);
        // A full load (validation, compile, link, describe) every 32nd.
        if round.is_multiple_of(32) {
            load_and_call(&tokio, &runtime, dir.path(), &bytes);
        }
    });
    assert!(execs > 0);
}

#[test]
fn wasm_smith_modules_as_components() {
    let dir = tempfile::tempdir().unwrap();
    let (tokio, runtime) = fuzz_runtime();
    let limits = Limits::default();
    fuzz("wasm-smith", |rng| {
        let entropy = rng.bytes(4096);
        let mut u = arbitrary::Unstructured::new(&entropy);
        let Ok(module) = wasm_smith::Module::new(wasm_smith::Config::default(), &mut u) else {
            return;
        };
        let module = module.to_bytes();
        let mut component = wasm_encoder::Component::new();
        component.section(&wasm_encoder::RawSection {
            id: wasm_encoder::ComponentSectionId::CoreModule as u8,
            data: &module,
        });
        let bytes = component.finish();
        let _ = switchyard_runtime::admission::check_code(Path::new("f.wasm"), &bytes, &limits);
        load_and_call(&tokio, &runtime, dir.path(), &bytes);
    });
}

#[test]
fn wasm_mutate_variants_of_real_connectors() {
    let seeds = seed_components();
    let dir = tempfile::tempdir().unwrap();
    let (tokio, runtime) = fuzz_runtime();
    fuzz("wasm-mutate", |rng| {
        let component = rng.pick(&seeds);
        let (_, range) = first_module(component);
        let module = &component[range];
        let mut mutator = wasm_mutate::WasmMutate::default();
        mutator
            .seed(rng.next())
            .fuel(1_000)
            .preserve_semantics(rng.below(2) == 0);
        let Ok(mut variants) = mutator.run(module) else {
            return;
        };
        let Some(Ok(variant)) = variants.next() else {
            return;
        };
        load_and_call(
            &tokio,
            &runtime,
            dir.path(),
            &with_module(component, &variant),
        );
    });
}

#[test]
fn config_parser() {
    let root = switchyard_tests::workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    // Every TOML block of the README, and the repo's own switchyard.toml.
    let mut seeds: Vec<Vec<u8>> = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .map(|block| block.as_bytes().to_vec())
        .collect();
    seeds.push(std::fs::read(root.join("switchyard.toml")).unwrap());
    let base = tempfile::tempdir().unwrap();
    let execs = fuzz("config", |rng| {
        let seed = rng.pick(&seeds);
        let text = mutate(rng, seed);
        let text = String::from_utf8_lossy(&text);
        if let Err(e) = switchyard_host::SwitchyardConfig::parse(&text, base.path()) {
            assert!(!e.is_empty());
        }
    });
    assert!(execs > 0);
}

#[test]
fn manifest_parser() {
    let seeds: &[&[u8]] = &[
        b"secrets = [\"token\"]\n",
        b"http = [\"https://api.example.com\"]\nstate = true\nrate_limits = [\"api\"]\n",
        b"[publisher]\nname = \"acme\"\n",
    ];
    fuzz("manifest", |rng| {
        let seed = rng.pick(seeds);
        let text = mutate(rng, seed);
        let text = String::from_utf8_lossy(&text);
        if let Err(e) = switchyard_broker::capabilities::PluginManifest::parse(&text) {
            assert!(!e.is_empty());
        }
    });
}

#[test]
fn webhook_verifiers_accept_only_what_was_signed() {
    use switchyard_broker::secrets::SecretValue;
    use switchyard_flows::webhooks::{SignatureScheme, sign_standard_webhooks, verify};
    let secret = SecretValue::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
    let now = SystemTime::now();
    let unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = br#"{"type":"invoice.paid","id":"evt_1"}"#.to_vec();
    let signed: Vec<(String, String)> = sign_standard_webhooks(&secret, "msg_1", unix, &body)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let schemes = [
        SignatureScheme::StandardWebhooks { tolerance_s: 300 },
        SignatureScheme::Github,
        SignatureScheme::Stripe { tolerance_s: 300 },
        SignatureScheme::HmacSha256 {
            header: "x-signature".into(),
            id_header: Some("x-id".into()),
        },
    ];
    fuzz("webhooks", |rng| {
        let mut headers = signed.clone();
        let mut changed_body = body.clone();
        match rng.below(4) {
            0 => changed_body = mutate(rng, &body),
            1 => {
                let i = rng.below(headers.len());
                let value = mutate(rng, headers[i].1.as_bytes());
                headers[i].1 = String::from_utf8_lossy(&value).into_owned();
            }
            2 => {
                let name = String::from_utf8_lossy(&rng.some_bytes(24)).into_owned();
                let value = String::from_utf8_lossy(&rng.some_bytes(64)).into_owned();
                headers.push((name, value));
            }
            _ => {
                changed_body = mutate(rng, &body);
                headers.retain(|_| rng.below(3) != 0);
            }
        }
        for scheme in &schemes {
            let verdict = verify(scheme, &secret, &headers, &changed_body, now);
            if let (SignatureScheme::StandardWebhooks { .. }, Ok(verified)) = (scheme, &verdict) {
                // Accepted only if what the signature covers is unchanged.
                assert_eq!(changed_body, body, "a changed body verified");
                assert_eq!(verified.delivery_id, "msg_1");
            }
        }
    });
}
