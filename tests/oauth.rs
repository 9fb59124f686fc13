//! OAuth handled by the host, against a real authorization server:
//! oidc-provider (npm, on loopback) issuing client-credentials tokens and,
//! after a consent driven in headless Chromium through the status page,
//! authorization-code tokens with rotating refresh tokens. A real guest
//! (the http probe) sends `Authorization: Bearer {{oauth:NAME}}` to the
//! provider's protected API; the host puts the token in.
//!
//! Every test checks what a connector or an onlooker could see: no access
//! token, refresh token or client secret in any guest output, log line,
//! audit record or the token store's file.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use switchyard_host::{Host, SwitchyardConfig};
use switchyard_tests::browser::Browser;
use switchyard_tests::guest;
use switchyard_tests::httpbin::httpbin;
use switchyard_tests::logs::Captured;
use switchyard_tests::oidc::{AC_CLIENT, CC_CLIENT, Oidc, start_oidc};

const ADMIN_TOKEN: &str = "admin-token-for-the-oauth-tests-0123456789";

/// A host with one connection `crm` of the http probe, granted the
/// client-credentials grant `cc` and the authorization-code grant `ac`,
/// both bound to the provider's origin only; served on loopback.
struct Setup {
    host: Host,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    /// Requests that reached grant `down`'s token endpoint, which answers
    /// every one with a 503.
    down_requests: Arc<AtomicUsize>,
}

/// A token endpoint that is down: every request gets a 503 (counted).
fn failing_token_endpoint() -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 4096];
                if stream.read(&mut buf).unwrap_or(0) > 0 {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                }
            });
        }
    });
    (url, count)
}

fn manifest(oidc: &Oidc) -> String {
    format!(
        r#"http = ["{}", "{}"]
        secrets = ["base-token"]
        rate_limits = ["spare"]
        state = true
        oauth = ["cc", "ac", "down", "wrong"]
        "#,
        oidc.issuer(),
        httpbin().origin()
    )
}

async fn setup(oidc: &Oidc) -> Setup {
    // SAFETY: every test of this binary sets these to the same values.
    unsafe {
        std::env::set_var("SWITCHYARD_TEST_OAUTH_ADMIN", ADMIN_TOKEN);
        std::env::set_var(
            "SWITCHYARD_TEST_BASE_TOKEN",
            "base-token-value-never-used-here",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guest("guest-http-probe"), dir.path().join("probe.wasm")).unwrap();
    std::fs::write(dir.path().join("probe.manifest.toml"), manifest(oidc)).unwrap();
    std::fs::write(dir.path().join("client-secret"), oidc.client_secret()).unwrap();
    std::fs::write(
        dir.path().join("wrong-secret"),
        "not-the-client-secret-0123456789",
    )
    .unwrap();
    // Held from here on: a port released and bound again could be taken
    // by a test running beside this one.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (down_url, down_requests) = failing_token_endpoint();
    let text = format!(
        r#"data_dir = "{data}"
        listen = "{addr}"
        [admin]
        token = {{ env = "SWITCHYARD_TEST_OAUTH_ADMIN" }}
        [plugins.probe]
        path = "{data}/probe.wasm"
        [connections.crm]
        plugin = "probe"
        [connections.crm.grants]
        allow = ["{issuer}", "{httpbin}"]
        state = true
        secrets.base-token = {{ env = "SWITCHYARD_TEST_BASE_TOKEN" }}
        rate_limits.spare = {{ per_second = 1000, burst = 1000 }}
        [connections.crm.grants.oauth.cc]
        token_url = "{token}"
        client_id = "{CC_CLIENT}"
        client_secret = {{ file = "client-secret" }}
        scopes = ["api:read"]
        destinations = ["{issuer}"]
        [connections.crm.grants.oauth.ac]
        grant_type = "authorization_code"
        authorize_url = "{authorize}"
        token_url = "{token}"
        client_id = "{AC_CLIENT}"
        client_secret = {{ file = "client-secret" }}
        scopes = ["openid", "offline_access", "api:read"]
        extra_params = {{ prompt = "consent" }}
        destinations = ["{issuer}"]
        [connections.crm.grants.oauth.wrong]
        token_url = "{token}"
        client_id = "{CC_CLIENT}"
        client_secret = {{ file = "wrong-secret" }}
        destinations = ["{issuer}"]
        [connections.crm.grants.oauth.down]
        token_url = "{down_url}"
        client_id = "{CC_CLIENT}"
        client_secret = {{ file = "client-secret" }}
        destinations = ["{issuer}"]
        "#,
        data = dir.path().display(),
        issuer = oidc.issuer(),
        httpbin = httpbin().origin(),
        token = oidc.token_url(),
        authorize = oidc.authorize_url(),
    );
    let config = SwitchyardConfig::parse(&text, dir.path()).unwrap();
    let host = Host::from_config(&config).await.unwrap();
    let app = switchyard_server::app(switchyard_server::Services {
        admin_token: Some(switchyard_broker::secrets::SecretValue::new(
            ADMIN_TOKEN.as_bytes().to_vec(),
        )),
        ..switchyard_server::Services::from_host(&host)
    });
    listener.set_nonblocking(true).unwrap();
    let tokio_listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move { axum::serve(tokio_listener, app).await.unwrap() });
    Setup {
        host,
        addr,
        dir,
        down_requests,
    }
}

impl Setup {
    /// The probe's `fetch` of `url` with `headers`, as JSON.
    async fn fetch(&self, method: &str, url: &str, headers: &[(&str, &str)]) -> Value {
        let input = json!({ "method": method, "url": url, "headers": headers });
        let out = self
            .host
            .runtime
            .call_action("crm", "fetch", input.to_string().as_bytes())
            .await
            .unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    /// `GET /api/whoami` with grant `grant`'s token.
    async fn whoami(&self, oidc: &Oidc, grant: &str) -> Value {
        let bearer = format!("Bearer {{{{oauth:{grant}}}}}");
        self.fetch("GET", &oidc.api("/whoami"), &[("authorization", &bearer)])
            .await
    }

    /// An admin API request with the token: status and JSON body.
    fn admin(&self, method: &str, path: &str) -> (u16, Value) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let response = self.get_with(method, path, &[("authorization", &auth)]);
        (response.status, response.json())
    }

    /// A request to the served host (off the async workers: it blocks).
    fn get_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> switchyard_tests::pouchdb::Response {
        tokio::task::block_in_place(|| {
            switchyard_tests::pouchdb::request_with(self.addr, method, path, headers, None).unwrap()
        })
    }

    fn metrics(&self) -> String {
        self.host.metrics.encode(std::iter::empty(), None)
    }

    /// The grant's row of `GET /admin/v1/oauth`.
    fn grant_status(&self, grant: &str) -> Value {
        let (status, body) = self.admin("GET", "/admin/v1/oauth");
        assert_eq!(status, 200, "{body}");
        body["grants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["grant"] == grant)
            .cloned()
            .unwrap_or_else(|| panic!("no grant {grant} in {body}"))
    }

    /// Asserts that no issued token and not the client secret is in the
    /// guest `outputs`, the captured `logs` (kept as `log_name` for the
    /// suite's canary grep) or the data dir; returns the data dir's bytes.
    fn assert_nothing_leaked(
        &self,
        oidc: &Oidc,
        log_name: &str,
        logs: &Captured,
        outputs: &[String],
    ) -> Vec<u8> {
        std::fs::write(switchyard_tests::log_dir().join(log_name), logs.bytes()).unwrap();
        self.host.audit.as_ref().unwrap().flush();
        let disk = self.disk();
        let outputs = outputs.join("\n");
        assert_no_credential_in(
            oidc,
            &[
                ("guest outputs", outputs.as_bytes()),
                ("the logs", &logs.bytes()),
                ("the data dir (audit, token store)", &disk),
            ],
        );
        disk
    }

    /// Every byte the host wrote to disk (not the client secret file the
    /// test wrote for it).
    fn disk(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in walk(self.dir.path())
            .into_iter()
            .filter(|p| !p.ends_with("client-secret") && !p.ends_with("wrong-secret"))
        {
            all.extend(std::fs::read(entry).unwrap_or_default());
        }
        all
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
}

/// Asserts no token the provider issued, and not the client secret, is in
/// any of `places` (name, bytes).
fn assert_no_credential_in(oidc: &Oidc, places: &[(&str, &[u8])]) {
    let issued = oidc.issued();
    assert!(!issued.is_empty(), "the provider issued no token");
    let mut values: Vec<String> = issued;
    values.push(oidc.client_secret().to_owned());
    for (name, bytes) in places {
        for value in &values {
            assert!(
                !contains(bytes, value),
                "{name} holds a credential ({}…)",
                &value[..6]
            );
        }
    }
}

/// `n` calls of `GET /api/whoami` with grant `cc`'s token at once: the
/// probe's answers.
async fn whoami_at_once(setup: &Arc<Setup>, oidc: &Oidc, n: usize) -> Vec<Value> {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let setup = setup.clone();
            let url = oidc.api("/whoami");
            tokio::spawn(async move {
                setup
                    .fetch("GET", &url, &[("authorization", "Bearer {{oauth:cc}}")])
                    .await
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(n);
    for call in calls {
        answers.push(call.await.unwrap());
    }
    answers
}

/// Waits out the least time between two refreshes forced by a 401 (2 s),
/// so the next 401 may force one again.
async fn gap() {
    tokio::time::sleep(Duration::from_millis(2100)).await;
}

/// Captures this test's logs (every level) into a buffer.
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (captured, guard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_tokens_are_put_in_for_bound_destinations_only_and_never_reach_the_guest()
 {
    let (logs, _guard) = capture_logs();
    let oidc = start_oidc(30);
    let setup = setup(&oidc).await;
    let mut outputs = Vec::new();

    let me = setup.whoami(&oidc, "cc").await;
    assert_eq!(me["status"], 200, "{me}");
    let body: Value = serde_json::from_str(me["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["client"], CC_CLIENT, "{body}");
    outputs.push(me.to_string());
    // The same through the Rust SDK's `bearer_oauth`.
    let input = json!({ "url": oidc.api("/whoami"), "bearer_oauth": "cc" });
    let sdk = setup
        .host
        .runtime
        .call_action("crm", "fetch", input.to_string().as_bytes())
        .await
        .unwrap();
    let sdk: Value = serde_json::from_slice(&sdk).unwrap();
    assert_eq!(sdk["status"], 200, "{sdk}");

    // The provider echoes the Authorization header back: the guest sees
    // it redacted, raw and in the encodings a hostile guest would try.
    let echo = setup
        .fetch(
            "GET",
            &oidc.api("/echo"),
            &[("authorization", "Bearer {{oauth:cc}}")],
        )
        .await;
    assert_eq!(echo["status"], 200, "{echo}");
    let text = echo["body"].as_str().unwrap();
    assert!(text.contains("Bearer [redacted]"), "{text}");
    outputs.push(echo.to_string());
    // A guest asking for a compressed (or partial) echo, which the
    // redactor could not read, gets the plain whole one.
    let packed = setup
        .fetch(
            "GET",
            &oidc.api("/echo"),
            &[
                ("authorization", "Bearer {{oauth:cc}}"),
                ("accept-encoding", "gzip, br"),
                ("range", "bytes=10-20"),
            ],
        )
        .await;
    assert_eq!(packed["status"], 200, "{packed}");
    let text = packed["body"].as_str().unwrap();
    assert!(text.contains("\"accept-encoding\":\"identity\""), "{text}");
    assert!(!text.contains("\"range\""), "{text}");
    assert!(text.contains("Bearer [redacted]"), "{text}");
    outputs.push(packed.to_string());

    // Not bound to httpbin: refused by the host, nothing sent there.
    let elsewhere = setup
        .fetch(
            "GET",
            &format!("{}/headers", httpbin().origin()),
            &[("authorization", "Bearer {{oauth:cc}}")],
        )
        .await;
    assert_eq!(elsewhere["status"], 403, "{elsewhere}");
    let why = elsewhere["body"].as_str().unwrap();
    assert!(why.contains("destinations"), "{why}");
    outputs.push(elsewhere.to_string());

    // A grant this connection does not have.
    let unknown = setup
        .fetch(
            "GET",
            &oidc.api("/whoami"),
            &[("authorization", "Bearer {{oauth:other}}")],
        )
        .await;
    assert_eq!(unknown["status"], 403, "{unknown}");
    outputs.push(unknown.to_string());

    // A guest that somehow learned a token's value (here: handed it) may
    // not send it anywhere, not even to a bound destination.
    let learned = oidc.issued().pop().unwrap();
    for url in [
        oidc.api("/whoami"),
        format!("{}/headers", httpbin().origin()),
    ] {
        let bearer = format!("Bearer {learned}");
        let sent = setup
            .fetch("GET", &url, &[("authorization", &bearer)])
            .await;
        assert_eq!(sent["code"], "HTTP-request-denied", "{sent}");
    }

    assert_eq!(oidc.stats()["by_grant"]["client_credentials"], 1);
    let status = setup.grant_status("cc");
    assert_eq!(status["status"], "connected", "{status}");
    assert_eq!(status["connectable"], false, "{status}");

    drop(_guard);
    let disk = setup.assert_nothing_leaked(&oidc, "oauth-client-credentials.log", &logs, &outputs);
    // Every use of the token is in the audit trail, by grant name.
    assert!(
        contains(&disk, "oauth:cc"),
        "no audit record of the token's use"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_needing_a_token_make_exactly_one_token_request() {
    let oidc = start_oidc(30);
    let setup = Arc::new(setup(&oidc).await);
    // A slow token endpoint keeps every caller waiting on the one refresh.
    oidc.slow_token_endpoint(500);
    for answer in whoami_at_once(&setup, &oidc, 50).await {
        assert_eq!(answer["status"], 200, "{answer}");
    }
    oidc.slow_token_endpoint(0);
    assert_eq!(oidc.stats()["token_requests"], 1, "{}", oidc.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_due_for_refresh_is_refreshed_in_the_background_while_calls_go_on() {
    // 16 s tokens: due for refresh 7.2–8 s after they were obtained (half
    // the lifetime, less jitter), handed out without waiting until 5 s
    // before they expire.
    let oidc = start_oidc(16);
    let setup = Arc::new(setup(&oidc).await);
    assert_eq!(setup.whoami(&oidc, "cc").await["status"], 200);
    let mut obtained = Instant::now();
    // Twice, so a finished background refresh lets the next one run too.
    for round in 1..=2 {
        tokio::time::sleep_until((obtained + Duration::from_millis(8_500)).into()).await;
        // A token endpoint slower than the guest's 5 s deadline: a call
        // that waited for the refresh would fail.
        oidc.slow_token_endpoint(6_000);
        let issued = oidc.issued().len();
        for answer in whoami_at_once(&setup, &oidc, 10).await {
            assert_eq!(answer["status"], 200, "round {round}: {answer}");
        }
        oidc.slow_token_endpoint(0);
        // The one background refresh lands (the provider lists its token).
        let waited = Instant::now();
        while oidc.issued().len() == issued {
            assert!(
                waited.elapsed() < Duration::from_secs(20),
                "round {round}: no refresh landed: {}",
                oidc.stats()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        obtained = Instant::now();
        assert_eq!(
            oidc.stats()["token_requests"],
            round + 1,
            "round {round}: one refresh: {}",
            oidc.stats()
        );
    }
    // Past the expiry of every token but the last: the call works with no
    // further token request, so the host uses the newest (an older one
    // would get a 401 and force a refresh).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let answer = setup.whoami(&oidc, "cc").await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(oidc.stats()["token_requests"], 3, "{}", oidc.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_from_a_bound_destination_forces_one_refresh_and_retries_idempotent_requests() {
    let oidc = start_oidc(30);
    let setup = setup(&oidc).await;
    assert_eq!(setup.whoami(&oidc, "cc").await["status"], 200);
    assert_eq!(oidc.stats()["token_requests"], 1);

    // The provider drops every token it issued; the host's cached one has
    // not expired, so only the 401 tells.
    oidc.expire_access_tokens();
    let again = setup.whoami(&oidc, "cc").await;
    assert_eq!(
        again["status"], 200,
        "a GET is retried with a new token: {again}"
    );
    assert_eq!(oidc.stats()["token_requests"], 2, "{}", oidc.stats());

    // A POST is not repeated, but the refresh still happens once, so the
    // next call works without another token request.
    gap().await;
    oidc.expire_access_tokens();
    let post = setup
        .fetch(
            "POST",
            &oidc.api("/echo"),
            &[("authorization", "Bearer {{oauth:cc}}")],
        )
        .await;
    assert_eq!(post["status"], 401, "{post}");
    assert_eq!(oidc.stats()["token_requests"], 3, "{}", oidc.stats());
    assert_eq!(setup.whoami(&oidc, "cc").await["status"], 200);
    assert_eq!(oidc.stats()["token_requests"], 3, "{}", oidc.stats());

    // A guest cannot make every request cost a token request: within 2 s
    // of a forced refresh, 401s force none (the guest gets them).
    oidc.expire_access_tokens();
    for _ in 0..5 {
        assert_eq!(setup.whoami(&oidc, "cc").await["status"], 401);
    }
    assert_eq!(oidc.stats()["token_requests"], 3, "{}", oidc.stats());
    gap().await;
    assert_eq!(setup.whoami(&oidc, "cc").await["status"], 200);
    assert_eq!(oidc.stats()["token_requests"], 4, "{}", oidc.stats());
}

/// Connects grant `ac` the way an operator does: the status page's
/// button, the provider's login and consent pages, back to the callback.
fn connect_in_browser(addr: SocketAddr, login: &str) {
    let mut browser = Browser::launch();
    browser.goto(&format!("http://{addr}/status#token={ADMIN_TOKEN}"));
    let button = "[data-testid=\"connect-crm-ac\"]";
    browser.wait_for(
        "the Connect button",
        &format!("!!document.querySelector('{button}')"),
        Duration::from_secs(20),
    );
    browser.click(button);
    consent(&mut browser, login);
    browser.wait_for(
        "the callback page saying connected",
        "document.querySelector('[data-testid=oauth-outcome]')?.dataset.outcome === 'connected'",
        Duration::from_secs(30),
    );
    // Back on the status page, the grant shows connected.
    browser.goto(&format!("http://{addr}/status#token={ADMIN_TOKEN}"));
    browser.wait_for(
        "the grant row saying connected",
        "document.querySelector('[data-testid=\"oauth-crm-ac\"]')?.dataset.status === 'connected'",
        Duration::from_secs(20),
    );
}

/// The provider's login and consent pages (oidc-provider's development
/// interactions), as a person would fill them in.
fn consent(browser: &mut Browser, login: &str) {
    browser.wait_for(
        "the provider's login form",
        "!!document.querySelector('input[name=login]')",
        Duration::from_secs(30),
    );
    browser.fill("input[name=login]", login);
    browser.fill("input[name=password]", "any-password");
    browser.click("button[type=submit]");
    browser.wait_for(
        "the provider's consent page",
        "!document.querySelector('input[name=login]') && !!document.querySelector('button[type=submit]') || location.pathname.startsWith('/oauth/callback')",
        Duration::from_secs(30),
    );
    let on_consent: Value = browser.eval("!location.pathname.startsWith('/oauth/callback')");
    if on_consent == json!(true) {
        browser.click("button[type=submit]");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_connects_an_account_in_the_browser_and_a_revoked_grant_asks_for_reconnection()
{
    let (logs, _guard) = capture_logs();
    let oidc = start_oidc(30);
    let setup = setup(&oidc).await;
    let mut outputs = Vec::new();

    // Before anyone connected it, a call fails permanently, naming the fix.
    let before = setup.whoami(&oidc, "ac").await;
    assert_eq!(before["status"], 401, "{before}");
    assert!(
        before["body"].as_str().unwrap().contains("reconnect"),
        "{before}"
    );
    assert_eq!(setup.grant_status("ac")["status"], "not_connected");
    outputs.push(before.to_string());

    let addr = setup.addr;
    tokio::task::spawn_blocking(move || connect_in_browser(addr, "ada"))
        .await
        .unwrap();
    let me = setup.whoami(&oidc, "ac").await;
    assert_eq!(me["status"], 200, "{me}");
    let body: Value = serde_json::from_str(me["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["sub"], "ada", "{body}");
    assert_eq!(oidc.stats()["by_grant"]["authorization_code"], 1);
    outputs.push(me.to_string());

    // A refresh rotates the refresh token; the old one is dead at the
    // provider, so a host that kept using it would fail.
    oidc.expire_access_tokens();
    assert_eq!(setup.whoami(&oidc, "ac").await["status"], 200);
    gap().await;
    oidc.expire_access_tokens();
    assert_eq!(setup.whoami(&oidc, "ac").await["status"], 200);
    assert_eq!(oidc.stats()["by_grant"]["refresh_token"], 2);
    assert_eq!(oidc.stats()["invalid_grant"], 0);

    // The user revokes the app: the next refresh gets invalid_grant.
    oidc.revoke_all();
    gap().await;
    oidc.expire_access_tokens();
    let revoked = setup.whoami(&oidc, "ac").await;
    assert_eq!(revoked["status"], 401, "{revoked}");
    let why = revoked["body"].as_str().unwrap();
    assert!(
        why.contains("needs re-authorisation") && why.contains("reconnect"),
        "{why}"
    );
    outputs.push(revoked.to_string());
    let status = setup.grant_status("ac");
    assert_eq!(status["status"], "needs_reauthorization", "{status}");
    // Later calls do not hammer the provider with a dead refresh token.
    let requests = oidc.stats()["token_requests"].clone();
    assert_eq!(setup.whoami(&oidc, "ac").await["status"], 401);
    assert_eq!(oidc.stats()["token_requests"], requests);
    // The metric, the alert, the status page.
    let (_, alerts) = setup.admin("GET", "/admin/v1/alerts");
    let alert = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "oauth_needs_reauthorization")
        .unwrap_or_else(|| panic!("no alert in {alerts}"));
    assert_eq!(alert["subject"], "oauth:crm/ac");
    let metrics = setup.metrics();
    assert!(
        metrics
            .contains("switchyard_oauth_needs_reauthorization{connection=\"crm\",grant=\"ac\"} 1"),
        "{metrics}"
    );

    // Reconnecting replaces the dead grant.
    tokio::task::spawn_blocking(move || connect_in_browser(addr, "ada"))
        .await
        .unwrap();
    assert_eq!(setup.whoami(&oidc, "ac").await["status"], 200);
    assert_eq!(setup.grant_status("ac")["status"], "connected");
    let metrics = setup.metrics();
    assert!(
        metrics
            .contains("switchyard_oauth_needs_reauthorization{connection=\"crm\",grant=\"ac\"} 0"),
        "{metrics}"
    );

    drop(_guard);
    setup.assert_nothing_leaked(&oidc, "oauth-connect.log", &logs, &outputs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_with_a_forged_or_replayed_state_is_refused() {
    let oidc = start_oidc(30);
    let setup = setup(&oidc).await;
    let get = |path: &str| setup.get_with("GET", path, &[]);
    let forged = get("/oauth/callback?state=forged&code=abc");
    assert_eq!(forged.status, 400);
    assert!(forged.text().contains("start connecting again"));
    // Starting a flow needs the admin token.
    let anonymous = setup.get_with("POST", "/admin/v1/oauth/crm/ac/connect", &[]);
    assert_eq!(anonymous.status, 401);
    let (status, body) = setup.admin("POST", "/admin/v1/oauth/crm/ac/connect");
    assert_eq!(status, 200, "{body}");
    let url = body["authorize_url"].as_str().unwrap();
    assert!(url.starts_with(&oidc.authorize_url()), "{url}");
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(url.contains("state="), "{url}");
    let (status, body) = setup.admin("POST", "/admin/v1/oauth/crm/cc/connect");
    assert_eq!(status, 409, "{body}");
    let (status, _) = setup.admin("POST", "/admin/v1/oauth/crm/nope/connect");
    assert_eq!(status, 404);
    // A state from the real flow with an error from the server: refused,
    // and that state cannot be used again.
    let state = url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let denied = get(&format!(
        "/oauth/callback?state={state}&error=access_denied"
    ));
    assert_eq!(denied.status, 400);
    assert!(denied.text().contains("access_denied"), "{}", denied.text());
    let replay = get(&format!("/oauth/callback?state={state}&code=abc"));
    assert_eq!(replay.status, 400);
    assert_eq!(setup.grant_status("ac")["status"], "not_connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_endpoint_is_asked_once_and_callers_are_told_to_retry() {
    let oidc = start_oidc(30);
    let setup = Arc::new(setup(&oidc).await);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let setup = setup.clone();
            let url = oidc.api("/whoami");
            tokio::spawn(async move {
                setup
                    .fetch("GET", &url, &[("authorization", "Bearer {{oauth:down}}")])
                    .await
            })
        })
        .collect();
    for call in calls {
        let answer = call.await.unwrap();
        assert_eq!(answer["status"], 503, "{answer}");
        let headers = answer["headers"].to_string();
        assert!(headers.contains("retry-after"), "{answer}");
        assert!(headers.contains("x-switchyard-oauth"), "{answer}");
    }
    assert_eq!(setup.down_requests.load(Ordering::SeqCst), 1);
    // A transient failure is not a dead grant.
    assert_eq!(setup.grant_status("down")["status"], "not_connected");
    assert_eq!(oidc.stats()["token_requests"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_fails_permanently_naming_its_credentials_and_is_not_asked_again_at_once()
{
    let oidc = start_oidc(30);
    let setup = setup(&oidc).await;
    let refused = setup.whoami(&oidc, "wrong").await;
    assert_eq!(refused["status"], 401, "{refused}");
    let why = refused["body"].as_str().unwrap();
    assert!(why.contains("client_id and client_secret"), "{why}");
    assert_eq!(
        setup.grant_status("wrong")["status"],
        "needs_reauthorization"
    );
    assert_eq!(oidc.stats()["token_requests"], 1);
    let again = setup.whoami(&oidc, "wrong").await;
    assert_eq!(again["status"], 401, "{again}");
    assert_eq!(oidc.stats()["token_requests"], 1, "asked again at once");
    // The other grants of the connection are unaffected.
    assert_eq!(setup.whoami(&oidc, "cc").await["status"], 200);
}

/// Records every address the host dials and refuses it: nothing leaves.
#[derive(Debug, Default)]
struct RecordingDialer(std::sync::Mutex<Vec<SocketAddr>>);

impl switchyard_broker::egress::Dialer for RecordingDialer {
    fn dial(
        &self,
        addr: SocketAddr,
    ) -> switchyard_broker::egress::BoxFuture<'_, std::io::Result<tokio::net::TcpStream>> {
        self.0.lock().unwrap().push(addr);
        Box::pin(async { Err(std::io::Error::other("the test dials nothing")) })
    }
}

#[tokio::test]
async fn token_requests_obey_the_egress_address_rules() {
    use switchyard_broker::egress::{Network, StaticResolver};
    use switchyard_broker::oauth::{OAuthGrant, TokenBroker, TokenError};
    use switchyard_oauth::OAuthManager;
    use switchyard_oauth::seal::SealKey;
    use switchyard_oauth::store::SqliteTokenStore;

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "client-secret-of-the-ssrf-test").unwrap();
    let resolver = StaticResolver::default()
        .with("metadata.test", &["169.254.169.254".parse().unwrap()])
        .with(
            "mixed.test",
            &[
                "93.184.215.14".parse().unwrap(),
                "10.0.0.7".parse().unwrap(),
            ],
        );
    let dialer = Arc::new(RecordingDialer::default());
    let manager = OAuthManager::new(
        Arc::new(SqliteTokenStore::open(&dir.path().join("oauth.sqlite")).unwrap()),
        SealKey::from_bytes(&[7; 32]).unwrap(),
        Arc::new(switchyard_broker::secrets::EnvOrFile),
        Network::new(Arc::new(resolver), dialer.clone()),
        (&switchyard_runtime::Limits::default()).into(),
        "http://127.0.0.1:1",
        None,
    );
    for host in ["metadata.test", "mixed.test", "127.0.0.1:9", "[::1]:9"] {
        let grant: OAuthGrant = toml::from_str(&format!(
            r#"token_url = "http://{host}/token"
            client_id = "c"
            client_secret = {{ file = "{}" }}
            destinations = ["https://api.example.com"]"#,
            secret.display()
        ))
        .unwrap();
        let grants = std::collections::BTreeMap::from([("g".to_owned(), grant)]);
        let name = format!("conn-{}", host.replace([':', '[', ']', '.'], "-"));
        let source = manager.for_connection(&name, &grants).unwrap();
        let err = source.access_token("g", None).await.unwrap_err();
        assert!(
            matches!(err, TokenError::Unavailable { .. }),
            "{host}: {err}"
        );
        // IP literals name themselves and are allowed: they reach the
        // dialer (which refuses); names resolving to forbidden addresses
        // never do.
        let text = err.to_string();
        if host.ends_with(".test") {
            assert!(text.contains("address"), "{host}: {text}");
        }
    }
    let dialed = dialer.0.lock().unwrap().clone();
    assert!(
        dialed.iter().all(|a| a.ip().is_loopback()),
        "dialed a forbidden address: {dialed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_connectors_send_oauth_tokens_through_their_sdks() {
    use switchyard_broker::capabilities::Grants;
    use switchyard_oauth::OAuthManager;
    use switchyard_oauth::seal::SealKey;
    use switchyard_oauth::store::SqliteTokenStore;

    let oidc = start_oidc(30);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client-secret"), oidc.client_secret()).unwrap();
    let manager = OAuthManager::new(
        Arc::new(SqliteTokenStore::open(&dir.path().join("oauth.sqlite")).unwrap()),
        SealKey::from_bytes(&[5; 32]).unwrap(),
        Arc::new(switchyard_broker::secrets::EnvOrFile),
        switchyard_broker::egress::Network::default(),
        (&switchyard_runtime::Limits::default()).into(),
        "http://127.0.0.1:1",
        None,
    );
    let runtime = switchyard_runtime::Runtime::builder()
        .tokens(Arc::new(manager))
        .build()
        .unwrap();
    let grants: Grants = toml::from_str(&format!(
        r#"allow = ["{issuer}"]
        state = true
        secrets.api-token = {{ file = "{secret}" }}
        [oauth.cc]
        token_url = "{token}"
        client_id = "{CC_CLIENT}"
        client_secret = {{ file = "{secret}" }}
        destinations = ["{issuer}"]"#,
        issuer = oidc.issuer(),
        token = oidc.token_url(),
        secret = dir.path().join("client-secret").display(),
    ))
    .unwrap();
    let manifest = format!(
        "http = [\"{}\"]\nsecrets = [\"api-token\"]\nstate = true\noauth = [\"cc\"]\n",
        oidc.issuer()
    );
    let mut outputs = Vec::new();
    for (name, source) in [
        ("py", "tests/guests-py/probe"),
        ("js", "tests/guests-js/probe"),
    ] {
        let out = dir.path().join(format!("build-{name}"));
        std::fs::create_dir_all(&out).unwrap();
        let root = switchyard_tests::workspace_root().join(source);
        let build = if name == "js" {
            switchyard_build::javascript::build
        } else {
            switchyard_build::python::build
        };
        let (_, component) = tokio::task::block_in_place(|| build(&root, &out))
            .unwrap_or_else(|e| panic!("building {source}: {e}"));
        let path = dir.path().join(format!("{name}.wasm"));
        std::fs::copy(&component, &path).unwrap();
        std::fs::write(dir.path().join(format!("{name}.manifest.toml")), &manifest).unwrap();
        runtime.load_plugin(name, &path).await.unwrap();
        runtime
            .add_connection_with_grants(name, name, Default::default(), &grants)
            .unwrap();
        for path in ["/whoami", "/echo"] {
            let input = json!({ "url": oidc.api(path), "oauth": "cc" });
            let answer = runtime
                .call_action(name, "fetch", input.to_string().as_bytes())
                .await
                .unwrap();
            let answer: Value = serde_json::from_slice(&answer).unwrap();
            assert_eq!(answer["status"], 200, "{name} {path}: {answer}");
            let body = answer["body"].as_str().unwrap();
            if path == "/echo" {
                assert!(body.contains("Bearer [redacted]"), "{name}: {body}");
            } else {
                assert!(body.contains(CC_CLIENT), "{name}: {body}");
            }
            outputs.push(answer.to_string());
        }
    }
    let outputs = outputs.join("\n");
    assert_no_credential_in(
        &oidc,
        &[("Python and JavaScript outputs", outputs.as_bytes())],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_answer_to_a_request_carrying_a_token_is_refused() {
    use switchyard_broker::capabilities::Grants;
    use switchyard_oauth::OAuthManager;
    use switchyard_oauth::seal::SealKey;
    use switchyard_oauth::store::SqliteTokenStore;

    // httpbin's /gzip answers compressed whatever was asked: the redactor
    // could not read an echo in it, so it must not reach the guest.
    let oidc = start_oidc(30);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client-secret"), oidc.client_secret()).unwrap();
    let runtime = switchyard_runtime::Runtime::builder()
        .tokens(Arc::new(OAuthManager::new(
            Arc::new(SqliteTokenStore::open(&dir.path().join("oauth.sqlite")).unwrap()),
            SealKey::from_bytes(&[6; 32]).unwrap(),
            Arc::new(switchyard_broker::secrets::EnvOrFile),
            switchyard_broker::egress::Network::default(),
            (&switchyard_runtime::Limits::default()).into(),
            "http://127.0.0.1:1",
            None,
        )))
        .build()
        .unwrap();
    let hb = httpbin().origin();
    // SAFETY: every test of this binary sets it to the same value.
    unsafe {
        std::env::set_var(
            "SWITCHYARD_TEST_BASE_TOKEN",
            "base-token-value-never-used-here",
        )
    };
    let grants: Grants = toml::from_str(&format!(
        r#"allow = ["{hb}"]
        state = true
        secrets.base-token = {{ env = "SWITCHYARD_TEST_BASE_TOKEN" }}
        rate_limits.spare = {{ per_second = 1000, burst = 1000 }}
        [oauth.cc]
        token_url = "{token}"
        client_id = "{CC_CLIENT}"
        client_secret = {{ file = "{secret}" }}
        destinations = ["{hb}"]"#,
        token = oidc.token_url(),
        secret = dir.path().join("client-secret").display(),
    ))
    .unwrap();
    let path = dir.path().join("probe.wasm");
    std::fs::copy(guest("guest-http-probe"), &path).unwrap();
    std::fs::write(
        dir.path().join("probe.manifest.toml"),
        format!("http = [\"{hb}\"]\nsecrets = [\"base-token\"]\nrate_limits = [\"spare\"]\nstate = true\noauth = [\"cc\"]\n"),
    )
    .unwrap();
    runtime.load_plugin("probe", &path).await.unwrap();
    runtime
        .add_connection_with_grants("probe", "probe", Default::default(), &grants)
        .unwrap();
    let fetch = |url: String| {
        let runtime = runtime.clone();
        async move {
            let input = json!({ "url": url, "bearer_oauth": "cc" });
            let out = runtime
                .call_action("probe", "fetch", input.to_string().as_bytes())
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&out).unwrap()
        }
    };
    let packed = fetch(format!("{hb}/gzip")).await;
    assert_eq!(packed["code"], "HTTP-protocol-error", "{packed}");
    // The same token to a plain echo: sent, and redacted on the way back.
    let plain = fetch(format!("{hb}/headers")).await;
    assert_eq!(plain["status"], 200, "{plain}");
    assert!(
        plain["body"]
            .as_str()
            .unwrap()
            .contains("Bearer [redacted]"),
        "{plain}"
    );
    assert_no_credential_in(
        &oidc,
        &[("guest outputs", format!("{packed}{plain}").as_bytes())],
    );
}
