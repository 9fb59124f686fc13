//! The cluster backend against a real nats-server (JetStream, file
//! storage, loopback): the queue contract the flows rely on, delivery
//! dedupe across hosts, cursor compare-and-swap and sync leases. Two
//! `Cluster`s on one server stand for two hosts.

use std::time::{Duration, Instant};
use switchyard_broker::secrets::EnvOrFile;
use switchyard_cluster::{Cluster, ClusterConfig};
use switchyard_flows::cursors::CursorStore;
use switchyard_flows::leases::Leases;
use switchyard_flows::queue::{DeliveryOutcome, FailOutcome, Queue, RetryPolicy};
use switchyard_runtime::bindings::{ConnectorError, Message, RateLimit};
use switchyard_tests::nats::NatsServer;

fn config(server: &NatsServer, host: &str) -> ClusterConfig {
    toml::from_str(&format!(
        "nats = [\"{}\"]\nprefix = \"t\"\nhost_id = \"{host}\"\nack_wait_ms = 1500\nsync_lease_ms = 1500",
        server.url()
    ))
    .unwrap()
}

/// A host with a 1.5 s ack wait: for the tests of what an expired ack
/// wait does.
async fn host(server: &NatsServer, name: &str) -> Cluster {
    Cluster::connect(&config(server, name), &EnvOrFile)
        .await
        .unwrap()
}

/// A host with the default 30 s ack wait, for tests that count attempts:
/// on a loaded machine a 1.5 s ack wait can run out between a claim and
/// its settlement, and the server rightly counts the redelivery.
async fn patient_host(server: &NatsServer, name: &str) -> Cluster {
    let mut config = config(server, name);
    config.ack_wait_ms = 30_000;
    Cluster::connect(&config, &EnvOrFile).await.unwrap()
}

fn message(id: &str, body: &str) -> Message {
    Message {
        id: id.into(),
        stream: "orders".into(),
        key: None,
        headers: vec![("content-type".into(), "application/json".into())],
        payload: body.as_bytes().to_vec(),
        timestamp_ms: 1,
    }
}

fn no_wait() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay_ms: 1,
        max_delay_ms: 1,
    }
}

const LEASE: Duration = Duration::from_secs(30);

/// Claims until `n` deliveries came or `limit` passed.
async fn claim_n(
    queue: &dyn Queue,
    name: &str,
    n: usize,
    limit: Duration,
) -> Vec<switchyard_flows::queue::Delivery> {
    let started = Instant::now();
    let mut out = Vec::new();
    while out.len() < n && started.elapsed() < limit {
        out.extend(queue.claim(name, n - out.len(), LEASE).await.unwrap());
    }
    out
}

#[tokio::test]
async fn the_queue_contract_holds_on_jetstream() {
    let server = NatsServer::start();
    let a = patient_host(&server, "a").await;
    let q: &dyn Queue = &a.queue;

    // Same content twice is stored once; a changed record comes again.
    let stored = q
        .enqueue(
            "pipeline:p",
            vec![message("1", "v1"), message("1", "v1"), message("2", "x")],
        )
        .await
        .unwrap();
    assert_eq!(stored, 2);
    assert_eq!(
        q.enqueue("pipeline:p", vec![message("1", "v2")])
            .await
            .unwrap(),
        1
    );

    let batch = claim_n(q, "pipeline:p", 3, Duration::from_secs(5)).await;
    assert_eq!(batch.len(), 3);
    assert!(batch.iter().all(|d| d.attempt == 1));
    let stats = q.stats("pipeline:p").await.unwrap();
    assert_eq!((stats.ready, stats.in_flight), (0, 3), "{stats:?}");

    // Delivered, retried after the connector's retry-after, dead at once.
    let outcomes = vec![
        Ok(()),
        Err(ConnectorError::RateLimited(RateLimit {
            message: "slow down".into(),
            retry_after_ms: Some(1_000),
        })),
        Err(ConnectorError::Permanent("no such customer".into())),
    ];
    let settled = q.settle(&batch, &outcomes, &no_wait()).await.unwrap();
    assert_eq!(settled[0], None);
    assert!(matches!(settled[1], Some(FailOutcome::RetryIn(d)) if d >= Duration::from_secs(1)));
    assert_eq!(settled[2], Some(FailOutcome::DeadLettered));

    // The rate-limited one is not back before its retry-after.
    let started = Instant::now();
    let again = claim_n(q, "pipeline:p", 1, Duration::from_secs(10)).await;
    assert_eq!(again.len(), 1);
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].message.id, batch[1].message.id);
    q.settle(&again, &[Ok(())], &no_wait()).await.unwrap();

    // The dead letter: listed with its reason, shown, replayed afresh.
    let letters = q.dead_letters(Some("pipeline:p"), 10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].reason, "permanent error");
    assert!(letters[0].last_error.contains("no such customer"));
    let (letter, shown) = q
        .dead_letter_message(letters[0].seq)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(letter, letters[0]);
    assert_eq!(shown.id, batch[2].message.id);
    assert_eq!(shown.payload, batch[2].message.payload);
    assert_eq!(q.stats("pipeline:p").await.unwrap().dead, 1);
    assert_eq!(q.replay(None, Some(letter.seq)).await.unwrap(), 1);
    assert!(q.dead_letters(None, 10).await.unwrap().is_empty());
    let replayed = claim_n(q, "pipeline:p", 1, Duration::from_secs(5)).await;
    assert_eq!(replayed[0].message.id, batch[2].message.id);
    assert_eq!(replayed[0].attempt, 1, "a replay starts afresh");
    q.settle(&replayed, &[Ok(())], &no_wait()).await.unwrap();

    let stats = q.stats("pipeline:p").await.unwrap();
    assert_eq!(
        (stats.ready, stats.in_flight, stats.dead),
        (0, 0, 0),
        "{stats:?}"
    );
    let all = q.all_stats().await.unwrap();
    assert!(all.iter().any(|(name, _)| name == "pipeline:p"), "{all:?}");
}

#[tokio::test]
async fn retries_end_in_a_dead_letter_after_max_attempts() {
    let server = NatsServer::start();
    let a = patient_host(&server, "a").await;
    let q: &dyn Queue = &a.queue;
    q.enqueue("pipeline:r", vec![message("1", "x")])
        .await
        .unwrap();
    for attempt in 1..=3 {
        let batch = claim_n(q, "pipeline:r", 1, Duration::from_secs(5)).await;
        assert_eq!(batch[0].attempt, attempt);
        let failed = [Err(ConnectorError::Retryable("upstream 503".into()))];
        let settled = q.settle(&batch, &failed, &no_wait()).await.unwrap();
        if attempt < 3 {
            assert!(matches!(settled[0], Some(FailOutcome::RetryIn(_))));
        } else {
            assert_eq!(settled[0], Some(FailOutcome::DeadLettered));
        }
    }
    let letters = q.dead_letters(None, 10).await.unwrap();
    assert_eq!(letters[0].reason, "gave up after 3 attempts");
    assert_eq!(letters[0].attempts, 3);
}

/// A host that dies with a claimed batch: another host gets it one ack
/// wait later, and the first host's late settlement changes nothing.
#[tokio::test]
async fn a_dead_hosts_claims_go_to_another_host_and_its_late_acks_count_for_nothing() {
    let server = NatsServer::start();
    let a = host(&server, "a").await;
    let b = host(&server, "b").await;
    a.queue
        .enqueue("pipeline:k", vec![message("1", "x")])
        .await
        .unwrap();
    // A claims with a lease shorter than the ack wait: it stops renewing
    // at once, as a dead host would.
    let claimed = a
        .queue
        .claim("pipeline:k", 1, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        b.queue
            .claim("pipeline:k", 1, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    let taken = claim_n(&b.queue, "pipeline:k", 1, Duration::from_secs(10)).await;
    assert_eq!(taken.len(), 1, "redelivered to the other host");
    assert_eq!(taken[0].attempt, 2);
    let late = a
        .queue
        .settle(&claimed, &[Ok(())], &no_wait())
        .await
        .unwrap();
    assert_eq!(late, vec![Some(FailOutcome::LeaseLost)]);
    assert_eq!(
        b.queue.settle(&taken, &[Ok(())], &no_wait()).await.unwrap(),
        vec![None]
    );
}

/// A long batch keeps its messages with progress acks, well past the
/// ack wait, while its lease lasts.
#[tokio::test]
async fn progress_acks_keep_a_long_batch_from_being_redelivered() {
    let server = NatsServer::start();
    let a = host(&server, "a").await;
    let b = host(&server, "b").await;
    a.queue
        .enqueue("pipeline:long", vec![message("1", "x")])
        .await
        .unwrap();
    let claimed = claim_n(&a.queue, "pipeline:long", 1, Duration::from_secs(5)).await;
    // Three ack waits (1.5 s each).
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(4_500) {
        let stolen = b.queue.claim("pipeline:long", 1, LEASE).await.unwrap();
        assert!(stolen.is_empty(), "redelivered while the batch was alive");
    }
    assert_eq!(
        a.queue
            .settle(&claimed, &[Ok(())], &no_wait())
            .await
            .unwrap(),
        vec![None]
    );
}

#[tokio::test]
async fn webhook_deliveries_are_deduplicated_across_hosts() {
    let server = NatsServer::start();
    let a = patient_host(&server, "a").await;
    let b = patient_host(&server, "b").await;
    let window = Duration::from_secs(300);
    let first = a
        .queue
        .enqueue_delivery("hook:h", "h", window, "digest-1", message("msg_1", "{}"))
        .await
        .unwrap();
    assert_eq!(first, DeliveryOutcome::Queued);
    // The sender retries on the other host: answered, not queued again.
    let again = b
        .queue
        .enqueue_delivery("hook:h", "h", window, "digest-1", message("msg_1", "{}"))
        .await
        .unwrap();
    assert_eq!(again, DeliveryOutcome::Duplicate);
    // The same signed material under another id: a replay.
    let replay = b
        .queue
        .enqueue_delivery("hook:h", "h", window, "digest-1", message("msg_2", "{}"))
        .await
        .unwrap();
    assert_eq!(replay, DeliveryOutcome::Replayed);
    // Racing hosts: ten deliveries, each sent to both at once.
    let mut racing = Vec::new();
    for i in 0..10 {
        for host in [&a, &b] {
            let queue = host.queue.clone();
            racing.push(tokio::spawn(async move {
                queue
                    .enqueue_delivery(
                        "hook:h",
                        "h",
                        window,
                        &format!("d{i}"),
                        message(&format!("m{i}"), "{}"),
                    )
                    .await
                    .unwrap()
            }));
        }
    }
    let mut queued = 0;
    for task in racing {
        queued += usize::from(task.await.unwrap() == DeliveryOutcome::Queued);
    }
    assert_eq!(queued, 10);
    let stored = claim_n(&a.queue, "hook:h", 11, Duration::from_secs(5)).await;
    assert_eq!(stored.len(), 11, "each delivery stored once");
    assert!(a.queue.claim("hook:h", 5, LEASE).await.unwrap().is_empty());
}

#[tokio::test]
async fn cursors_advance_by_compare_and_swap_and_leases_are_exclusive() {
    let server = NatsServer::start();
    let a = host(&server, "a").await;
    let b = host(&server, "b").await;
    let ttl = Duration::from_millis(1_500);

    // One holder at a time; the other gets it once the lease runs out.
    let mut lease = a.leases.acquire("sync.copy", ttl).await.unwrap().unwrap();
    assert!(b.leases.acquire("sync.copy", ttl).await.unwrap().is_none());
    assert_eq!(
        b.leases.holder("sync.copy").await.unwrap().as_deref(),
        Some("a")
    );
    assert!(a.leases.renew(&mut lease, ttl).await.unwrap());
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let taken = b.leases.acquire("sync.copy", ttl).await.unwrap();
    assert!(taken.is_some(), "an expired lease is taken over");
    assert!(
        !a.leases.renew(&mut lease, ttl).await.unwrap(),
        "the old holder lost it"
    );
    b.leases.release(&taken.unwrap()).await.unwrap();
    assert!(a.leases.acquire("sync.copy", ttl).await.unwrap().is_some());

    // Both read the cursor; b commits first; a's commit is refused.
    assert_eq!(a.cursors.cursor("copy", "docs").await.unwrap(), None);
    assert_eq!(b.cursors.cursor("copy", "docs").await.unwrap(), None);
    b.cursors
        .commit_cursor("copy", "docs", "100")
        .await
        .unwrap();
    let err = a
        .cursors
        .commit_cursor("copy", "docs", "50")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("moved by another host"), "{err}");
    assert_eq!(
        a.cursors.cursor("copy", "docs").await.unwrap().as_deref(),
        Some("100")
    );
    a.cursors
        .commit_cursor("copy", "docs", "200")
        .await
        .unwrap();
    b.cursors.reset_cursor("copy", "docs").await.unwrap();
    assert_eq!(a.cursors.cursor("copy", "docs").await.unwrap(), None);
    a.cursors.commit_cursor("copy", "docs", "1").await.unwrap();

    // Run reports: newest first, progress replaced by the final report.
    a.cursors.record_run("copy", 1, "{\"n\":1}").await.unwrap();
    a.cursors
        .record_run("copy", 2, "{\"n\":2,\"progress\":true}")
        .await
        .unwrap();
    b.cursors.record_run("copy", 2, "{\"n\":2}").await.unwrap();
    b.cursors.record_run("other", 3, "{\"n\":3}").await.unwrap();
    let runs = a.cursors.runs("copy", 10).await.unwrap();
    assert_eq!(runs, vec!["{\"n\":2}".to_owned(), "{\"n\":1}".to_owned()]);
    assert_eq!(a.cursors.runs("copy", 1).await.unwrap().len(), 1);
}

/// The server restarts under a host: the host reconnects and what was
/// stored before is still there (file storage).
#[tokio::test]
async fn a_restarted_server_keeps_the_queue_and_the_host_reconnects() {
    let mut server = NatsServer::start();
    let a = patient_host(&server, "a").await;
    a.queue
        .enqueue(
            "pipeline:s",
            (0..50).map(|i| message(&i.to_string(), "x")).collect(),
        )
        .await
        .unwrap();
    server.kill();
    assert!(a.queue.claim("pipeline:s", 10, LEASE).await.is_err());
    server.restart();
    let all = claim_n(&a.queue, "pipeline:s", 50, Duration::from_secs(30)).await;
    assert_eq!(all.len(), 50);
    let ok = vec![Ok(()); 50];
    assert!(
        a.queue
            .settle(&all, &ok, &no_wait())
            .await
            .unwrap()
            .iter()
            .all(Option::is_none)
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config: ClusterConfig =
        toml::from_str(&format!("nats = [\"nats://127.0.0.1:{port}\"]")).unwrap();
    let err = Cluster::connect(&config, &EnvOrFile)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot reach NATS") && err.contains("nats-server -js"),
        "{err}"
    );
    let bad: ClusterConfig = toml::from_str("nats = [\"http://x\"]").unwrap();
    assert!(bad.check().unwrap_err().contains("not a nats://"));
}
