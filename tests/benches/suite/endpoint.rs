// Over 500 lines: the load generator and both servers (app and native
// baseline) for two routes belong together.
//! The HTTP endpoints under load: requests per second and p99 latency of
//! the action route and the webhook route of the real server
//! (`switchyard_server::app`), against an axum server with the same route
//! doing the same work natively.
//!
//! Subject and baseline are both served by `switchyard_server::serve` (the
//! same hyper server) on 127.0.0.1:0 in a tokio runtime of their own with
//! [`SERVER_THREADS`] worker thread(s); the load generator runs on another,
//! single-threaded runtime: [`CONCURRENCY`] keep-alive HTTP/1.1
//! connections (hyper's client), each sending its next request as soon as
//! the previous answer is read. After a warm-up window each, subject and
//! baseline alternate windows of fixed duration, so drift and noisy
//! neighbours hit both alike. req/s is requests completed over the time
//! of all windows; p99 is over every request's latency.
//!
//! - **Action**: `POST /v1/connectors/bench/actions/map` with one ~1 KiB
//!   record; the subject runs the `bench-transform` guest in a fresh
//!   instance per request (as in production), the baseline calls
//!   `transform_record` in the handler.
//! - **Webhook**: `POST /v1/hooks/bench` with the same record as the event,
//!   Standard Webhooks-signed with a fresh delivery id per request. Subject:
//!   the app with a configured webhook (`Pipelines::ingest`: verify, refuse
//!   replays, enqueue durably, 202). Baseline: a handler that verifies the
//!   same signature with the same function (`webhooks::verify`) and
//!   enqueues with the same call (`SqliteQueue::enqueue_delivery`: delivery id
//!   remembered and event stored in one SQLite WAL commit,
//!   synchronous=FULL, on a real disk) off the async workers, then 202.
//!   Both answer 202 only once the event is on disk. The receiver workers
//!   (`Pipelines::start`) are not started: the figure is the intake.

use super::Bench;
use super::stats::{Goal, Row, Samples, human_time};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bench_transform::record::{sample_record, transform_record};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchyard_broker::secrets::{EnvOrFile, SecretGrant, SecretValue};
use switchyard_flows::pipelines::{
    PipelineConfig, Pipelines, SignatureConfig, WebhookConfig, hook_queue,
};
use switchyard_flows::queue::{DeliveryOutcome, SqliteQueue};
use switchyard_flows::webhooks::{self, SignatureScheme};
use switchyard_runtime::{Limits, Message, Runtime};

/// Requests in flight (one per keep-alive connection).
pub const CONCURRENCY: usize = 32;
/// Worker threads of each server's tokio runtime (the machine has 2 cores;
/// the generator takes the other).
pub const SERVER_THREADS: usize = 1;

const HOOK: &str = "bench";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SCHEME: SignatureScheme = SignatureScheme::StandardWebhooks { tolerance_s: 300 };

/// A server on its own runtime, stopped on drop.
struct Server {
    tokio: tokio::runtime::Runtime,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    /// `name` names its threads (for `perf report --comm`).
    fn start(name: &str, router: Router) -> Server {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(SERVER_THREADS)
            .thread_name(name)
            .enable_all()
            .build()
            .unwrap();
        let listener = tokio
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio.spawn(switchyard_server::serve(router, listener, async move {
            let _ = stopped.await;
        }));
        Server {
            tokio,
            addr,
            stop: Some(stop),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stop.take());
        // Keep-alive connections would hold a graceful shutdown open.
        let tokio = std::mem::replace(
            &mut self.tokio,
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
        );
        tokio.shutdown_timeout(Duration::from_secs(1));
    }
}

/// Builds request number `n` (a path and its headers and body).
type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// [`CONCURRENCY`] keep-alive connections to one server.
struct Client {
    addr: SocketAddr,
    senders: Vec<SendRequest<Full<Bytes>>>,
    make: MakeRequest,
    expect: StatusCode,
}

/// Numbers requests across all clients (fresh webhook delivery ids).
static NEXT: AtomicU64 = AtomicU64::new(0);

impl Client {
    async fn connect(addr: SocketAddr, make: MakeRequest, expect: StatusCode) -> Client {
        let mut senders = Vec::new();
        for _ in 0..CONCURRENCY {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(connection);
            senders.push(sender);
        }
        Client {
            addr,
            senders,
            make,
            expect,
        }
    }

    /// Sends requests on every connection for `window`; adds each latency
    /// to `samples` and returns (requests, elapsed).
    async fn run(&mut self, window: Duration, samples: &mut Samples) -> (u64, Duration) {
        let start = Instant::now();
        let deadline = start + window;
        let tasks: Vec<_> = self
            .senders
            .drain(..)
            .map(|mut sender| {
                let make = self.make.clone();
                let expect = self.expect;
                let addr = self.addr;
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let request = make(NEXT.fetch_add(1, Ordering::Relaxed));
                        let sent = Instant::now();
                        sender.ready().await.unwrap();
                        let response = sender.send_request(request).await.unwrap();
                        let status = response.status();
                        let body = response.into_body().collect().await.unwrap().to_bytes();
                        latencies.push(sent.elapsed());
                        assert_eq!(status, expect, "{addr}: {}", String::from_utf8_lossy(&body));
                    }
                    (sender, latencies)
                })
            })
            .collect();
        let mut count = 0;
        for task in tasks {
            let (sender, latencies) = task.await.unwrap();
            self.senders.push(sender);
            count += latencies.len() as u64;
            for l in latencies {
                samples.push(l);
            }
        }
        (count, start.elapsed())
    }
}

/// One request on a new connection and its whole answer, for the
/// correctness checks.
async fn once(addr: SocketAddr, request: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// Throughput and latency of one server over all its windows.
struct Measured {
    requests: u64,
    elapsed: Duration,
    latency: Samples,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn text(&self, what: &str) -> String {
        format!(
            "{what}: {:.0} req/s, p99 {} (median {}, n={})",
            self.rate(),
            human_time(self.latency.p99()),
            human_time(self.latency.median()),
            self.latency.len()
        )
    }
}

/// The load generator's runtime: one thread, driving every connection.
fn generator() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Alternating windows of load on `subject` and `baseline`, after one
/// warm-up window each; also returns how many requests each got in all.
fn measure(
    b: &Bench,
    generator: &tokio::runtime::Runtime,
    subject: &mut Client,
    baseline: &mut Client,
) -> ([Measured; 2], [u64; 2]) {
    let (warmup, window, rounds) = if b.quick {
        (Duration::from_millis(500), Duration::from_millis(500), 4)
    } else {
        (Duration::from_secs(1), Duration::from_secs(1), 10)
    };
    generator.block_on(async {
        let mut ignored = Samples::default();
        let mut total = [0; 2];
        total[0] += subject.run(warmup, &mut ignored).await.0;
        total[1] += baseline.run(warmup, &mut ignored).await.0;
        let mut m = [(); 2].map(|()| Measured {
            requests: 0,
            elapsed: Duration::ZERO,
            latency: Samples::default(),
        });
        for _ in 0..rounds {
            for (i, client) in [&mut *subject, &mut *baseline].into_iter().enumerate() {
                let (n, t) = client.run(window, &mut m[i].latency).await;
                m[i].requests += n;
                m[i].elapsed += t;
                total[i] += n;
            }
        }
        (m, total)
    })
}

fn rows(figure: &str, m: &[Measured; 2], subject: &str, baseline: &str) -> Vec<Row> {
    vec![Row {
        figure: figure.to_owned(),
        subject: m[0].text(subject),
        baseline: m[1].text(baseline),
        value: m[0].rate() / m[1].rate(),
        unit: "×",
        goal: Goal::AtLeast(0.5),
    }]
}

// ---- action ----

async fn native_action(Path((_name, _action)): Path<(String, String)>, body: Bytes) -> Response {
    match transform_record(&body) {
        Ok(out) => ([(header::CONTENT_TYPE, "application/json")], out).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

pub fn action(b: &Bench) -> Vec<Row> {
    let input = Bytes::from(sample_record(0));
    let path = format!(
        "/v1/connectors/{}/actions/map",
        super::transform::CONNECTION
    );
    let subject = Server::start(
        "action-app",
        switchyard_server::app(switchyard_server::Services::new(b.runtime.clone())),
    );
    let baseline = Server::start(
        "action-native",
        Router::new().route(
            "/v1/connectors/{name}/actions/{action}",
            post(native_action),
        ),
    );
    let make: MakeRequest = Arc::new(move |_| {
        Request::post(path.as_str())
            .header(header::HOST, "127.0.0.1")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(input.clone()))
            .unwrap()
    });
    // Both answer 200 with the same bytes before either is timed.
    let expected = transform_record(&sample_record(0)).unwrap();
    let generator = generator();
    for server in [&subject, &baseline] {
        let (status, body) = generator.block_on(once(server.addr, make(0)));
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, expected, "component and native answers differ");
    }
    let mut s = generator.block_on(Client::connect(subject.addr, make.clone(), StatusCode::OK));
    let mut n = generator.block_on(Client::connect(baseline.addr, make, StatusCode::OK));
    let (m, _) = measure(b, &generator, &mut s, &mut n);
    rows(
        &format!(
            "action endpoint under load ({} B record, {CONCURRENCY} in flight, server {SERVER_THREADS} thread)",
            sample_record(0).len()
        ),
        &m,
        "switchyard app, `map` in a fresh instance",
        "axum, native `transform_record`",
    )
}

// ---- webhook ----

/// The native webhook handler's state.
struct NativeHook {
    queue: Arc<SqliteQueue>,
    secret: SecretValue,
}

async fn native_hook(
    State(hook): State<Arc<NativeHook>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let verified = match webhooks::verify(&SCHEME, &hook.secret, &headers, &body, SystemTime::now())
    {
        Ok(v) => v,
        Err(e) => return (StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
    };
    let event = Message {
        id: verified.delivery_id.clone(),
        stream: "webhook".into(),
        key: None,
        headers,
        payload: body.to_vec(),
        timestamp_ms: 0,
    };
    let queue = hook.queue.clone();
    let stored = tokio::task::spawn_blocking(move || {
        queue.enqueue_delivery(
            &hook_queue(&name),
            &format!("webhook:{name}"),
            Duration::from_secs(600),
            &verified.replay_key,
            &event,
        )
    })
    .await
    .unwrap();
    match stored {
        Ok(DeliveryOutcome::Queued | DeliveryOutcome::Duplicate) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({ "id": verified.delivery_id })),
        )
            .into_response(),
        Ok(DeliveryOutcome::Replayed) => StatusCode::CONFLICT.into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// A runtime with `webhook-receiver` as connection `receiver` (the
/// webhook's) and `bench-transform` as `bench` (its pipeline's sink), and
/// pipelines with webhook [`HOOK`] on a queue in `dir`.
fn webhook_app(b: &Bench, dir: &std::path::Path) -> (Runtime, Arc<Pipelines>, Arc<SqliteQueue>) {
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let runtime = b.tokio.block_on(switchyard_tests::runtime_from(
        Runtime::builder().limits(Limits::default()),
        &[
            ("webhook-receiver", "receiver"),
            ("bench-transform", "bench"),
        ],
    ));
    let webhooks = BTreeMap::from([(
        HOOK.to_owned(),
        WebhookConfig {
            connection: "receiver".into(),
            pipeline: "events".into(),
            signature: SignatureConfig {
                scheme: SCHEME,
                secret: SecretGrant {
                    file: Some(secret_file),
                    ..SecretGrant::default()
                },
            },
            retry: Default::default(),
        },
    )]);
    let pipelines = BTreeMap::from([(
        "events".to_owned(),
        PipelineConfig {
            transforms: Vec::new(),
            sink: "bench".into(),
            batch_size: 100,
            workers: 1,
            retry: Default::default(),
        },
    )]);
    let queue = Arc::new(SqliteQueue::open(&dir.join("app").join("queue.db")).unwrap());
    let pipelines = Pipelines::new(
        runtime.clone(),
        queue.clone(),
        &webhooks,
        &pipelines,
        &EnvOrFile,
    )
    .unwrap();
    (runtime, Arc::new(pipelines), queue)
}

pub fn webhook(b: &Bench) -> Vec<Row> {
    // On the workspace's disk (not a tmpfs), so fsync is real.
    let dir = tempfile::tempdir_in(switchyard_tests::workspace_root().join("target")).unwrap();
    let (runtime, pipelines, app_queue) = webhook_app(b, dir.path());
    let subject = Server::start(
        "hook-app",
        switchyard_server::app(switchyard_server::Services {
            pipelines: Some(pipelines.clone()),
            ..switchyard_server::Services::new(runtime)
        }),
    );
    let native_queue =
        Arc::new(SqliteQueue::open(&dir.path().join("native").join("queue.db")).unwrap());
    let native = Arc::new(NativeHook {
        queue: native_queue.clone(),
        secret: SecretValue::new(SECRET.into()),
    });
    let baseline = Server::start(
        "hook-native",
        Router::new()
            .route("/v1/hooks/{name}", post(native_hook))
            .with_state(native),
    );
    let secret = SecretValue::new(SECRET.into());
    let body = Bytes::from(sample_record(0));
    let make: MakeRequest = Arc::new(move |n| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let id = format!("msg_bench_{n}");
        let signed = webhooks::sign_standard_webhooks(&secret, &id, now.as_secs(), &body).unwrap();
        let mut request = Request::post(format!("/v1/hooks/{HOOK}"))
            .header(header::HOST, "127.0.0.1")
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in signed {
            request = request.header(name, value);
        }
        request.body(Full::new(body.clone())).unwrap()
    });
    // Both accept a fresh delivery with the same answer, answer its retry
    // the same without queueing it twice, and have it on their queue,
    // before either is timed.
    let generator = generator();
    let mut answers = Vec::new();
    for (server, queue) in [
        (&subject, app_queue.as_ref()),
        (&baseline, native_queue.as_ref()),
    ] {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (status, answer) = generator.block_on(once(server.addr, make(n)));
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{}",
            String::from_utf8_lossy(&answer)
        );
        // The same delivery again is a sender's retry: 202, not queued twice.
        let (again, _) = generator.block_on(once(server.addr, make(n)));
        assert_eq!(again, StatusCode::ACCEPTED);
        assert_eq!(queue.stats(&hook_queue(HOOK)).unwrap().ready, 1);
        answers.push((answer, format!("msg_bench_{n}")));
    }
    for (answer, id) in &answers {
        let json: serde_json::Value = serde_json::from_slice(answer).unwrap();
        assert_eq!(json, serde_json::json!({ "id": id }), "202 bodies differ");
    }
    let mut s = generator.block_on(Client::connect(
        subject.addr,
        make.clone(),
        StatusCode::ACCEPTED,
    ));
    let mut n = generator.block_on(Client::connect(baseline.addr, make, StatusCode::ACCEPTED));
    let (m, total) = measure(b, &generator, &mut s, &mut n);
    // Every 202 is a queued event.
    let queued = |q: &SqliteQueue| q.stats(&hook_queue(HOOK)).unwrap().ready;
    assert_eq!(queued(&app_queue), total[0] + 1);
    assert_eq!(queued(&native_queue), total[1] + 1);
    rows(
        &format!(
            "webhook endpoint under load (Standard Webhooks, {} B event, 202 after a SQLite WAL commit with synchronous=FULL; {CONCURRENCY} in flight, server {SERVER_THREADS} thread)",
            sample_record(0).len()
        ),
        &m,
        "switchyard app, `Pipelines::ingest`",
        "axum, `webhooks::verify` + `SqliteQueue::enqueue_delivery`",
    )
}
