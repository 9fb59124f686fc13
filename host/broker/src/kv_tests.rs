use super::*;

fn file_store() -> (tempfile::TempDir, Arc<StateStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&dir.path().join("state.sqlite")).unwrap();
    (dir, store)
}

#[test]
fn get_set_delete_round_trip() {
    let (_dir, store) = file_store();
    let ns = store.namespace("stripe-eu");
    assert_eq!(ns.get("cursor").unwrap(), None);
    ns.set("cursor", b"evt_1").unwrap();
    assert_eq!(ns.get("cursor").unwrap().as_deref(), Some(&b"evt_1"[..]));
    ns.set("cursor", b"evt_2").unwrap();
    assert_eq!(ns.get("cursor").unwrap().as_deref(), Some(&b"evt_2"[..]));
    assert!(ns.delete("cursor").unwrap());
    assert!(!ns.delete("cursor").unwrap());
    assert_eq!(ns.get("cursor").unwrap(), None);
}

#[test]
fn connections_cannot_see_each_other() {
    let (_dir, store) = file_store();
    let eu = store.namespace("stripe-eu");
    let us = store.namespace("stripe-us");
    eu.set("cursor", b"eu").unwrap();
    us.set("cursor", b"us").unwrap();
    assert_eq!(eu.get("cursor").unwrap().unwrap(), b"eu");
    assert_eq!(us.get("cursor").unwrap().unwrap(), b"us");
    assert!(us.delete("cursor").unwrap());
    assert_eq!(eu.get("cursor").unwrap().unwrap(), b"eu");
    assert_eq!(us.keys("", 10).unwrap(), Vec::<String>::new());
}

#[test]
fn compare_and_swap_covers_create_update_delete() {
    let (_dir, store) = file_store();
    let ns = store.namespace("c");
    assert!(
        ns.compare_and_swap("k", None, Some(b"1")).unwrap(),
        "create when absent"
    );
    assert!(
        !ns.compare_and_swap("k", None, Some(b"x")).unwrap(),
        "not when present"
    );
    assert!(
        !ns.compare_and_swap("k", Some(b"0"), Some(b"2")).unwrap(),
        "stale expectation"
    );
    assert!(ns.compare_and_swap("k", Some(b"1"), Some(b"2")).unwrap());
    assert_eq!(ns.get("k").unwrap().unwrap(), b"2");
    assert!(!ns.compare_and_swap("k", Some(b"1"), None).unwrap());
    assert!(
        ns.compare_and_swap("k", Some(b"2"), None).unwrap(),
        "delete when matching"
    );
    assert_eq!(ns.get("k").unwrap(), None);
    assert!(
        ns.compare_and_swap("k", None, None).unwrap(),
        "absent stays absent"
    );
}

#[test]
fn concurrent_increments_lose_nothing() {
    let (_dir, store) = file_store();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let ns = store.namespace("counter");
                for _ in 0..50 {
                    loop {
                        let current = ns.get("n").unwrap();
                        let n: u64 = current
                            .as_deref()
                            .map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap());
                        let next = (n + 1).to_string();
                        if ns
                            .compare_and_swap("n", current.as_deref(), Some(next.as_bytes()))
                            .unwrap()
                        {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let ns = store.namespace("counter");
    assert_eq!(ns.get("n").unwrap().unwrap(), b"200");
}

#[test]
fn writes_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    StateStore::open(&path)
        .unwrap()
        .namespace("c")
        .set("cursor", b"page-7")
        .unwrap();
    let reopened = StateStore::open(&path).unwrap();
    assert_eq!(
        reopened.namespace("c").get("cursor").unwrap().unwrap(),
        b"page-7"
    );
}

#[test]
fn keys_are_listed_by_literal_prefix() {
    let store = StateStore::in_memory().unwrap();
    let ns = store.namespace("c");
    for key in ["cursor/a", "cursor/b", "cursor%x", "other"] {
        ns.set(key, b"1").unwrap();
    }
    assert_eq!(ns.keys("cursor/", 10).unwrap(), ["cursor/a", "cursor/b"]);
    assert_eq!(ns.keys("cursor%", 10).unwrap(), ["cursor%x"]);
    assert_eq!(ns.keys("", 2).unwrap(), ["cursor%x", "cursor/a"]);
}

#[test]
fn sizes_are_capped() {
    let store = StateStore::in_memory().unwrap();
    let ns = store.namespace("c");
    assert!(matches!(ns.set("", b"x"), Err(StateError::EmptyKey)));
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    assert!(matches!(ns.get(&long), Err(StateError::KeyTooLong(_))));
    let big = vec![0u8; MAX_VALUE_BYTES + 1];
    let err = ns.set("k", &big).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "state value is {} bytes; the limit is {MAX_VALUE_BYTES}",
            MAX_VALUE_BYTES + 1
        )
    );
}

/// Issue 14: a per-connection quota, in keys and in bytes, with an error
/// naming the limit; shrinking writes always pass; other connections and
/// a reopened file keep their own counts.
#[test]
fn each_connection_stays_within_its_state_quota() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    let quota = StateQuota {
        max_keys: 3,
        max_bytes: 100,
    };
    let store = StateStore::open(&path).unwrap().with_quota(quota);
    let a = store.namespace("a");
    for key in ["k1", "k2", "k3"] {
        a.set(key, b"v").unwrap();
    }
    let err = a.set("k4", b"v").unwrap_err().to_string();
    assert!(
        err.contains("4 keys") && err.contains("limits.state_keys_per_connection"),
        "{err}"
    );
    a.set("k1", b"replaced").unwrap();
    let err = a.set("k2", &[b'x'; 100]).unwrap_err().to_string();
    assert!(err.contains("limits.state_bytes_per_connection"), "{err}");
    assert!(!a.compare_and_swap("k4", None, Some(b"v")).unwrap_or(false));
    // Another connection has its own quota.
    store.namespace("b").set("k1", b"v").unwrap();
    // Deleting frees room.
    assert!(a.delete("k3").unwrap());
    a.set("k4", b"v").unwrap();
    drop(a);
    drop(store);
    let reopened = StateStore::open(&path).unwrap().with_quota(quota);
    let err = reopened.namespace("a").set("k5", b"v").unwrap_err();
    assert!(err.to_string().contains("4 keys"), "{err}");
}
