//! A guest that does, on request, everything a hostile or buggy connector
//! might: panic, spin, allocate without bound, recurse, flood the log.

use switchyard_sdk::{
    Connector, ConnectorInfo, Error, Message, Page, ReadRequest, Role, WriteOutcome, config, log,
};

struct Misbehave;

/// Counts calls on this instance; a fresh instance always answers 1.
static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[inline(never)]
#[allow(unconditional_recursion)] // the point of the test
fn recurse(depth: u64, trail: &mut [u8; 64]) -> u64 {
    trail[(depth % 64) as usize] = depth as u8;
    // The addition after the call keeps this from becoming a loop.
    recurse(depth + 1, trail) + u64::from(trail[0])
}

impl Connector for Misbehave {
    fn describe() -> ConnectorInfo {
        ConnectorInfo::new("misbehave", "0.1.0")
            .action("echo", "returns the input")
            .action("panic", "panics")
            .action("loop", "never returns")
            .action("alloc", "allocates until stopped")
            .action("recurse", "recurses without bound")
            .action("big-output", "returns `input` MiB")
            .action("log-flood", "logs 5000 events")
            .action("config", "returns every setting as k=v lines")
            .action("fail", "returns the error named by the input")
            .action("count", "calls seen by this instance")
            .action("leak", "logs its input and fails with it")
            .action("panic-with", "panics with its input")
            .action("call-flood", "calls the host without end")
            .action(
                "tally",
                "answers {\"count\": <the `tally` setting>} and the `leak` setting beside it",
            )
            .role(Role::Transform)
            .role(Role::Source)
            .role(Role::Sink)
    }

    fn call_action(action: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        match action {
            "echo" => Ok(input.to_vec()),
            "leak" => {
                let text = String::from_utf8_lossy(input);
                log::event(
                    log::Level::Warn,
                    &format!("leaking {text}"),
                    &[("copy", &text)],
                );
                Err(Error::permanent(format!("leaked {text}")))
            }
            "tally" => {
                let count: u64 = config::get_or("tally", "0").parse().unwrap_or(0);
                let note = config::get_or("leak", "nothing");
                Ok(format!("{{\"count\":{count},\"note\":\"{note}\"}}").into_bytes())
            }
            "count" => {
                let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                Ok(n.to_string().into_bytes())
            }
            "panic" => panic!("deliberate panic for the test"),
            "panic-with" => panic!("deliberate panic: {}", String::from_utf8_lossy(input)),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "heap" => {
                // Allocates the input's KiB in 1 KiB pieces; answers the
                // memory size in 64 KiB pages before and after.
                let kib: usize = String::from_utf8_lossy(input).trim().parse().unwrap_or(1);
                let before = memory_pages();
                let pieces: Vec<Vec<u8>> = (0..kib).map(|i| vec![i as u8; 1024]).collect();
                std::hint::black_box(&pieces);
                let after = memory_pages();
                Ok(format!("{before} {after}").into_bytes())
            }
            "recurse" => {
                let mut trail = [0u8; 64];
                Ok(recurse(0, &mut trail).to_le_bytes().to_vec())
            }
            "call-flood" => loop {
                std::hint::black_box(config::get("anything"));
            },
            "big-output" => {
                let mib: usize = String::from_utf8_lossy(input).trim().parse().unwrap_or(1);
                Ok(vec![b'x'; mib << 20])
            }
            "log-flood" => {
                for i in 0..5000 {
                    log::event(log::Level::Info, "flood\nline", &[("i", &i.to_string())]);
                }
                Ok(b"done".to_vec())
            }
            "config" => Ok(config::all()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect::<String>()
                .into_bytes()),
            "fail" => {
                // Accepts a bare word or a JSON string.
                let kind = String::from_utf8_lossy(input);
                Err(match kind.trim().trim_matches('"') {
                    "retryable" => Error::retryable("try again"),
                    "rate-limited" => Error::rate_limited("slow down", Some(1500)),
                    "invalid" => Error::invalid_input("field `x` is required"),
                    _ => Error::permanent("nope"),
                })
            }
            other => Err(Error::unknown_action(other)),
        }
    }

    /// Reverses payloads; with a `leak` setting, puts it in every string a
    /// message carries (id, key, a header).
    fn transform(messages: Vec<Message>) -> Result<Vec<Message>, Error> {
        let leak = config::get("leak");
        Ok(messages
            .into_iter()
            .map(|mut m| {
                m.payload.reverse();
                if let Some(leak) = &leak {
                    smuggle(&mut m, leak);
                }
                m
            })
            .collect())
    }

    /// By the `read` setting: `stuck-after-first` answers one page of
    /// `p1` with cursor `1` and more to come, then spins on any later page;
    /// `no-cursor` answers more to come without a cursor; `spin` spins.
    /// Otherwise one page of one message carrying the `leak` setting
    /// everywhere, and a cursor made of it.
    fn read(request: ReadRequest) -> Result<Page, Error> {
        let spin = || -> ! {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        };
        match config::get_or("read", "leak").as_str() {
            "stuck-after-first" if request.cursor.is_some() => spin(),
            "stuck-after-first" => Ok(Page {
                messages: vec![Message::new("p1", request.stream, b"{}".to_vec())],
                next_cursor: Some("1".into()),
                has_more: true,
            }),
            "no-cursor" => Ok(Page {
                messages: vec![Message::new("p1", request.stream, b"{}".to_vec())],
                next_cursor: None,
                has_more: true,
            }),
            "spin" => spin(),
            _ => {
                let leak = config::get_or("leak", "nothing");
                let mut message = Message::new("m-1", request.stream, b"{}".to_vec());
                smuggle(&mut message, &leak);
                Ok(Page {
                    messages: vec![message],
                    next_cursor: Some(format!("cursor-{leak}")),
                    has_more: false,
                })
            }
        }
    }

    /// By the `write` setting: `ack` acks every message;
    /// `ack-all-but-last` acks all but the last, which it names no
    /// outcome for, and answers for a message it was never given.
    /// Otherwise refuses every message, naming the `leak` setting in the
    /// error.
    fn write(messages: Vec<Message>) -> Result<Vec<WriteOutcome>, Error> {
        let ack = |m: &Message| WriteOutcome {
            id: m.id.clone(),
            outcome: Ok(()),
        };
        match config::get_or("write", "refuse").as_str() {
            "ack" => Ok(messages.iter().map(ack).collect()),
            "ack-all-but-last" => {
                let given = messages.len().saturating_sub(1);
                let mut outcomes: Vec<WriteOutcome> = messages[..given].iter().map(ack).collect();
                outcomes.push(WriteOutcome {
                    id: "never-given".into(),
                    outcome: Ok(()),
                });
                Ok(outcomes)
            }
            _ => {
                let leak = config::get_or("leak", "nothing");
                Ok(messages
                    .into_iter()
                    .map(|m| WriteOutcome {
                        id: m.id.clone(),
                        outcome: Err(Error::permanent(format!("refused {} with {leak}", m.id))),
                    })
                    .collect())
            }
        }
    }
}

/// Puts `leak` into a message's id, key and headers.
fn smuggle(message: &mut Message, leak: &str) {
    message.id = format!("{}-{leak}", message.id);
    message.key = Some(leak.to_owned());
    message.headers.push(("x-leak".into(), leak.to_owned()));
    message.headers.push((leak.to_owned(), "as a name".into()));
}

switchyard_sdk::export!(Misbehave);

/// Linear memory size in 64 KiB pages (0 when built natively for clippy
/// and unit tests).
fn memory_pages() -> usize {
    #[cfg(target_arch = "wasm32")]
    return core::arch::wasm32::memory_size(0);
    #[cfg(not(target_arch = "wasm32"))]
    0
}
