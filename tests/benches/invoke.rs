//! Per-call cost of a JSON field mapping, side by side in one run:
//!
//! 1. native: the field-mapper's own Rust code, called directly;
//! 2. fresh instance: `Runtime::call_action`, a new store and instance per
//!    call (what the server does);
//! 3. reused instance: a `Session`, one instance for every call.
//!
//! Run: `cargo bench -p switchyard-tests --bench invoke`
//! (`-- --iterations N` to change the sample count).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use switchyard_runtime::{Limits, Runtime};

const RENAME: &str = "first_name=firstName,last_name=lastName,address.city=city,address.postal_code=postalCode,company.name=companyName";
const DROP: &str = "ssn,internal_notes";
const DEFAULTS: &str = "tier=\"free\",source=\"crm\"";

/// A realistic ~800-byte contact record.
fn payload() -> Vec<u8> {
    let value = serde_json::json!({
        "id": "cus_9s6XKzkNRiz8i3",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada.lovelace@example.com",
        "phone": "+44 20 7946 0958",
        "website": "https://analytical-engines.example.com/team/ada-lovelace",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "ssn": "078-05-1120",
        "address": {
            "line1": "12 St James's Square",
            "line2": "Flat 3",
            "city": "London",
            "postal_code": "SW1Y 4JH",
            "country": "GB"
        },
        "company": { "name": "Analytical Engines Ltd", "size": 42, "industry": "computing" },
        "tags": ["vip", "newsletter", "beta-tester", "conference-2026"],
        "created_at": "2026-11-23T20:22:28Z",
        "updated_at": "2026-11-23T21:05:00Z",
        "lifetime_value_cents": 1_284_500,
        "marketing_opt_in": true,
        "internal_notes": "Prefers email. Met at the 2026 integration summit; follow up on the enterprise plan in Q1.",
        "metadata": { "crm_id": "0035e00000B8fWxAAJ", "segment": "enterprise", "score": 87.5 }
    });
    serde_json::to_vec(&value).unwrap()
}

fn native_map(input: &[u8]) -> Vec<u8> {
    // The same steps as the connector's `map` action: parse the settings,
    // parse the input, map, serialise.
    let mapping = field_mapper::mapping::Mapping::parse(RENAME, DROP, DEFAULTS).unwrap();
    mapping.apply_bytes(input).unwrap()
}

struct Figures {
    mean: Duration,
    median: Duration,
    p99: Duration,
}

fn measure(iterations: usize, mut f: impl FnMut()) -> Figures {
    for _ in 0..iterations / 10 + 10 {
        f();
    }
    let mut samples: Vec<Duration> = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    samples.sort();
    let total: Duration = samples.iter().sum();
    Figures {
        mean: total / iterations as u32,
        median: samples[iterations / 2],
        p99: samples[iterations * 99 / 100],
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iterations = args
        .iter()
        .position(|a| a == "--iterations")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000usize);
    let input = payload();
    let expected = native_map(&input);

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let component = switchyard_tests::guest("field-mapper");
    let runtime = {
        tokio.block_on(async {
            let runtime = Runtime::builder()
                .limits(Limits::default())
                .build()
                .unwrap();
            runtime
                .load_plugin("field-mapper", &component)
                .await
                .unwrap();
            let settings = BTreeMap::from([
                ("rename".to_owned(), RENAME.to_owned()),
                ("drop".to_owned(), DROP.to_owned()),
                ("defaults".to_owned(), DEFAULTS.to_owned()),
            ]);
            runtime
                .add_connection("bench", "field-mapper", settings)
                .unwrap();
            runtime
        })
    };
    let fresh_out = tokio
        .block_on(runtime.call_action("bench", "map", &input))
        .unwrap();
    assert_eq!(fresh_out, expected, "component and native disagree");

    println!(
        "field mapping of a {}-byte JSON object, {iterations} calls each",
        input.len()
    );
    let native = measure(iterations, || {
        std::hint::black_box(native_map(std::hint::black_box(&input)));
    });
    let fresh = measure(iterations, || {
        let out = tokio.block_on(runtime.call_action("bench", "map", &input));
        std::hint::black_box(out.unwrap());
    });

    let broker = switchyard_runtime::state::BrokerCtx::deny_all("c".into(), &Limits::default());
    let state_only = measure(iterations, || {
        let log = switchyard_runtime::host::log::LogCtx {
            plugin: "p".into(),
            plugin_version: "1".into(),
            connection: "c".into(),
            invocation_id: 1,
            redactor: Default::default(),
            rate: Default::default(),
        };
        let state =
            switchyard_runtime::state::InvocationState::new(log, &broker, &Limits::default());
        drop(std::hint::black_box(state));
    });
    println!(
        "store data alone: {:.2} µs",
        state_only.median.as_secs_f64() * 1e6
    );
    let instantiate = measure(iterations, || {
        let session = tokio.block_on(runtime.session("bench"));
        drop(std::hint::black_box(session.unwrap()));
    });
    let mut session = tokio.block_on(runtime.session("bench")).unwrap();
    let reused = measure(iterations, || {
        let out = tokio.block_on(session.call_action("map", &input));
        std::hint::black_box(out.unwrap());
    });

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>12}",
        "", "mean µs", "median µs", "p99 µs", "vs native"
    );
    for (name, f) in [
        ("native Rust", &native),
        ("component, fresh instance", &fresh),
        ("component, reused instance", &reused),
    ] {
        println!(
            "{name:<28} {:>10.2} {:>10.2} {:>10.2} {:>11.2}x",
            us(f.mean),
            us(f.median),
            us(f.p99),
            us(f.median) / us(native.median)
        );
    }
    println!(
        "instantiate + drop alone: {:.2} µs median; fresh-instance overhead over reused: {:.2} µs",
        us(instantiate.median),
        us(fresh.median) - us(reused.median)
    );
}
