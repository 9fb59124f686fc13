//! OAuth across process deaths and hosts, with `switchyard serve` processes
//! and a real authorization server (oidc-provider on loopback):
//!
//! - an account connected in headless Chromium through the status page,
//!   its refresh token rotated by refreshes, each followed at once by a
//!   `kill -9` of the host: the restarted host refreshes with the rotated
//!   token it stored (the provider revokes the whole grant if an old one
//!   is used, so a lost rotation would show as `invalid_grant`);
//! - two hosts of a cluster (NATS JetStream) sharing a grant: 50 calls at
//!   once, half on each, make exactly one token request;
//! - an account connect started on one host of a cluster and finished by
//!   the callback on another (the flow lives in the shared store), whose
//!   `state` then works on neither;
//! - `switchyard oauth connect` from a shell, finished by the running
//!   server's callback; `switchyard oauth status` with the server down,
//!   before and after the provider revokes the grant.

mod common;

use common::{free_port, http, kill_9, wait_for};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchyard_tests::browser::Browser;
use switchyard_tests::guest;
use switchyard_tests::nats::NatsServer;
use switchyard_tests::oidc::{AC_CLIENT, CC_CLIENT, Oidc, start_oidc};

const ADMIN_TOKEN: &str = "oauth-crash-test-admin-token-0123456789";

struct Host {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Host {
    /// A host directory with the http probe as connection `crm`, granted
    /// `grant` (TOML for `[connections.crm.grants.oauth.NAME]`), and
    /// `extra` config.
    fn new(root: &Path, name: &str, oidc: &Oidc, extra: &str) -> Host {
        let dir = root.join(name);
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::copy(guest("guest-http-probe"), plugins.join("probe.wasm")).unwrap();
        std::fs::write(
            plugins.join("probe.manifest.toml"),
            format!(
                "http = [\"{}\"]\nsecrets = [\"base-token\"]\nrate_limits = [\"spare\"]\nstate = true\noauth = [\"cc\", \"ac\"]\n",
                oidc.issuer()
            ),
        )
        .unwrap();
        std::fs::write(root.join("client-secret"), oidc.client_secret()).unwrap();
        let port = free_port();
        let config = format!(
            r#"listen = "127.0.0.1:{port}"
data_dir = "data"
plugin_dir = "plugins"
watch_plugin_dir = false
[admin]
token = {{ env = "SWITCHYARD_TEST_ADMIN_TOKEN" }}
[access]
public = ["crm"]
[connections.crm]
plugin = "probe"
[connections.crm.grants]
allow = ["{issuer}"]
state = true
secrets.base-token = {{ env = "SWITCHYARD_TEST_ADMIN_TOKEN" }}
rate_limits.spare = {{ per_second = 1000, burst = 1000 }}
[connections.crm.grants.oauth.cc]
token_url = "{token}"
client_id = "{CC_CLIENT}"
client_secret = {{ file = "../client-secret" }}
destinations = ["{issuer}"]
[connections.crm.grants.oauth.ac]
grant_type = "authorization_code"
authorize_url = "{authorize}"
token_url = "{token}"
client_id = "{AC_CLIENT}"
client_secret = {{ file = "../client-secret" }}
scopes = ["openid", "api:read"]
destinations = ["{issuer}"]
{extra}
"#,
            issuer = oidc.issuer(),
            token = oidc.token_url(),
            authorize = oidc.authorize_url(),
        );
        std::fs::write(dir.join("switchyard.toml"), config).unwrap();
        Host {
            dir,
            port,
            child: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("serve.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("serve")
            .current_dir(&self.dir)
            .env("SWITCHYARD_LOG", "info")
            .env("SWITCHYARD_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let started = Instant::now();
        while http(self.port, "GET", "/healthz", &[], "").is_none() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("host exited ({status}): {}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "host did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            kill_9(child);
        }
        // For the suite's canary grep (the client secret starts with the
        // canary).
        let name = format!("oauth-serve-{}.log", self.port);
        let _ = std::fs::write(switchyard_tests::log_dir().join(name), self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// `GET /api/whoami` through the probe with grant `grant`'s token:
    /// the probe's answer.
    fn whoami(&self, oidc: &Oidc, grant: &str) -> Value {
        let input = json!({
            "url": oidc.api("/whoami"),
            "headers": [["authorization", format!("Bearer {{{{oauth:{grant}}}}}")]],
        });
        let (status, body) = http(
            self.port,
            "POST",
            "/v1/connectors/crm/actions/fetch",
            &[("content-type", "application/json")],
            &input.to_string(),
        )
        .expect("the host answers");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Every byte under the host's directory.
    fn disk(&self) -> Vec<u8> {
        fn walk(dir: &Path, out: &mut Vec<u8>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.extend(std::fs::read(&path).unwrap_or_default());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir, &mut out);
        out
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

fn assert_no_credential(oidc: &Oidc, what: &str, bytes: &[u8]) {
    let mut values = oidc.issued();
    values.push(oidc.client_secret().to_owned());
    for value in values {
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "{what} holds a credential ({}…)",
            &value[..6]
        );
    }
}

/// Logs in at the provider and consents, in `browser` on its way to the
/// authorization URL, until the host's callback page says connected.
fn consent(browser: &mut Browser) {
    browser.wait_for(
        "the provider's login form",
        "!!document.querySelector('input[name=login]')",
        Duration::from_secs(30),
    );
    browser.fill("input[name=login]", "grace");
    browser.fill("input[name=password]", "any-password");
    browser.click("button[type=submit]");
    browser.wait_for(
        "the consent page or the callback",
        "location.pathname.startsWith('/oauth/callback') || (!document.querySelector('input[name=login]') && !!document.querySelector('button[type=submit]'))",
        Duration::from_secs(30),
    );
    if browser.eval("location.pathname.startsWith('/oauth/callback')") != json!(true) {
        browser.click("button[type=submit]");
    }
    browser.wait_for(
        "the callback saying connected",
        "document.querySelector('[data-testid=oauth-outcome]')?.dataset.outcome === 'connected'",
        Duration::from_secs(30),
    );
}

/// Kills `hosts`, then checks that none left a token or the client
/// secret in its directory (data dir, log).
fn stop_and_check_disks(oidc: &Oidc, hosts: &mut [&mut Host]) {
    for host in hosts.iter_mut() {
        host.kill();
    }
    for host in hosts.iter() {
        assert_no_credential(oidc, "a host's directory (data dir, log)", &host.disk());
    }
}

#[test]
fn a_rotated_refresh_token_survives_kill_9_of_the_host() {
    let oidc = start_oidc(30);
    let root = tempfile::tempdir().unwrap();
    let mut host = Host::new(root.path(), "host", &oidc, "");
    host.start();

    // The operator connects the account in a browser.
    let port = host.port;
    let mut browser = Browser::launch();
    browser.goto(&format!(
        "http://127.0.0.1:{port}/status#token={ADMIN_TOKEN}"
    ));
    browser.wait_for(
        "the Connect button",
        "!!document.querySelector('[data-testid=\"connect-crm-ac\"]')",
        Duration::from_secs(30),
    );
    browser.click("[data-testid=\"connect-crm-ac\"]");
    consent(&mut browser);
    drop(browser);
    let me = host.whoami(&oidc, "ac");
    assert_eq!(me["status"], 200, "{me}");

    // Five times: the provider drops the access tokens, a call refreshes
    // (rotating the refresh token), and the host is killed at once.
    for round in 0..5 {
        oidc.expire_access_tokens();
        let answer = host.whoami(&oidc, "ac");
        assert_eq!(answer["status"], 200, "round {round}: {answer}");
        host.kill();
        host.start();
    }
    oidc.expire_access_tokens();
    let answer = host.whoami(&oidc, "ac");
    assert_eq!(answer["status"], 200, "after the last restart: {answer}");
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["sub"], "grace");
    let stats = oidc.stats();
    assert_eq!(stats["by_grant"]["refresh_token"], 6, "{stats}");
    assert_eq!(stats["invalid_grant"], 0, "{stats}");
    host.kill();

    // Nothing on disk or in the log holds a token or the client secret
    // (the token store is sealed).
    let disk = host.disk();
    assert!(
        disk.windows(8).any(|w| w == b"oauth:ac"),
        "the audit trail records the token's uses"
    );
    assert_no_credential(&oidc, "the host's directory (data dir, log)", &disk);
}

/// The `[oauth]` and `[cluster]` config of host `name` on `nats`, with a
/// sealing key shared by every host under `root` (hosts sharing tokens
/// share it), and `oauth_extra` lines in `[oauth]`.
fn cluster_config(root: &Path, nats: &NatsServer, name: &str, oauth_extra: &str) -> String {
    let key = root.join("oauth.key");
    std::fs::write(&key, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    format!(
        "[oauth]\nkey = {{ file = \"{}\" }}\n{oauth_extra}\n[cluster]\nnats = [\"{}\"]\nhost_id = \"{name}\"\n",
        key.display(),
        nats.url()
    )
}

#[test]
fn two_hosts_of_a_cluster_sharing_a_grant_make_one_token_request_for_fifty_calls() {
    let oidc = start_oidc(30);
    let nats = NatsServer::start();
    let root = tempfile::tempdir().unwrap();
    let extra = |name: &str| cluster_config(root.path(), &nats, name, "");
    let mut a = Host::new(root.path(), "a", &oidc, &extra("a"));
    let mut b = Host::new(root.path(), "b", &oidc, &extra("b"));
    a.start();
    b.start();
    oidc.reset();
    oidc.slow_token_endpoint(800);
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let host = if i % 2 == 0 { &a } else { &b };
                let oidc = &oidc;
                scope.spawn(move || host.whoami(oidc, "cc"))
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    oidc.slow_token_endpoint(0);
    for answer in &answers {
        assert_eq!(answer["status"], 200, "{answer}");
    }
    assert_eq!(oidc.stats()["token_requests"], 1, "{}", oidc.stats());
    wait_for("both logs", Duration::from_secs(5), || {
        !a.log().is_empty() && !b.log().is_empty()
    });
    stop_and_check_disks(&oidc, &mut [&mut a, &mut b]);
}

#[test]
fn a_connect_started_on_one_host_is_finished_by_the_callback_on_another() {
    let oidc = start_oidc(30);
    let nats = NatsServer::start();
    let root = tempfile::tempdir().unwrap();
    let mut b = Host::new(
        root.path(),
        "b",
        &oidc,
        &cluster_config(root.path(), &nats, "b", ""),
    );
    // a's redirect URI is b's: the provider sends the browser to b, as a
    // load balancer in front of both might.
    let public_url = format!("public_url = \"http://127.0.0.1:{}\"", b.port);
    let mut a = Host::new(
        root.path(),
        "a",
        &oidc,
        &cluster_config(root.path(), &nats, "a", &public_url),
    );
    a.start();
    b.start();
    let admin = ("Authorization", format!("Bearer {ADMIN_TOKEN}"));
    let admin = [(admin.0, admin.1.as_str())];
    let (status, started) =
        http(a.port, "POST", "/admin/v1/oauth/crm/ac/connect", &admin, "").expect("a answers");
    assert_eq!(status, 200, "{started}");
    let url = started["authorize_url"].as_str().unwrap();
    let mut browser = Browser::launch();
    browser.goto(url);
    consent(&mut browser);
    let callback = browser.eval("location.href");
    let callback = callback.as_str().unwrap().to_owned();
    assert!(
        callback.starts_with(&format!("http://127.0.0.1:{}/oauth/callback?", b.port)),
        "{callback}"
    );
    drop(browser);

    // Both hosts use the account b stored.
    for host in [&a, &b] {
        let me = host.whoami(&oidc, "ac");
        assert_eq!(me["status"], 200, "{me}");
    }
    let (_, statuses) = http(a.port, "GET", "/admin/v1/oauth", &admin, "").unwrap();
    let ac = statuses["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["grant"] == "ac")
        .cloned()
        .unwrap();
    assert_eq!(ac["status"], "connected", "{statuses}");

    // The `state` was used up: a replay to either host is refused before
    // any code exchange.
    let path = &callback[callback.find("/oauth/callback").unwrap()..];
    let exchanges = oidc.stats()["by_grant"]["authorization_code"].clone();
    for host in [&a, &b] {
        let replay = common::http_text(host.port, "GET", path, &[], "").unwrap();
        assert_eq!(replay.0, 400, "{}", replay.1);
        assert!(replay.1.contains("unknown or expired"), "{}", replay.1);
    }
    assert_eq!(
        oidc.stats()["by_grant"]["authorization_code"],
        exchanges,
        "no second exchange"
    );
    stop_and_check_disks(&oidc, &mut [&mut a, &mut b]);
}

#[test]
fn switchyard_oauth_connect_prints_a_url_that_the_running_servers_callback_finishes() {
    let oidc = start_oidc(30);
    let root = tempfile::tempdir().unwrap();
    let mut host = Host::new(root.path(), "host", &oidc, "");
    let dir = host.dir.clone();

    // Before any server ran there is no key, and the CLI makes none (one
    // made by another user than the server's would lock it out).
    let before = common::refused(&dir, &["oauth", "status"]);
    assert!(
        before.contains("oauth.key") && before.contains("switchyard serve"),
        "{before}"
    );
    assert!(!dir.join("data/oauth.key").exists());

    // With the server up: nothing connected yet; mistakes name the fix.
    host.start();
    let status = common::ok(&dir, &["oauth", "status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("crm") && l.contains("ac") && l.contains("not_connected")),
        "{status}"
    );
    let cc = common::refused(&dir, &["oauth", "connect", "crm", "cc"]);
    assert!(cc.contains("client credentials"), "{cc}");
    let unknown = common::refused(&dir, &["oauth", "connect", "crm", "nope"]);
    assert!(
        unknown.contains("crm ac") && !unknown.contains("crm cc"),
        "{unknown}"
    );

    // The operator starts the connect from a shell while the server runs,
    // and consents in a browser: the server's callback takes the flow the
    // CLI left in the token store.
    let url = common::ok(&dir, &["oauth", "connect", "crm", "ac"]);
    let url = url.trim();
    assert!(url.starts_with(&oidc.authorize_url()), "{url}");
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let mut browser = Browser::launch();
    browser.goto(url);
    consent(&mut browser);
    drop(browser);
    let me = host.whoami(&oidc, "ac");
    assert_eq!(me["status"], 200, "{me}");

    // With the server down, the CLI reads the sealed store.
    host.kill();
    let out = common::ok(&dir, &["oauth", "status", "--json"]);
    let status: Value = serde_json::from_str(&out).unwrap();
    let ac = status["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["grant"] == "ac")
        .cloned()
        .unwrap();
    assert_eq!(ac["status"], "connected", "{status}");
    assert_no_credential(&oidc, "switchyard oauth status", out.as_bytes());

    // The provider revokes the grant: the next call finds out, and the
    // CLI's status says so and exits 1 (for a cron job or a probe).
    host.start();
    oidc.revoke_all();
    let me = host.whoami(&oidc, "ac");
    assert_eq!(me["status"], 401, "{me}");
    host.kill();
    // The CLI sends no client secret, so it needs none of the server's.
    std::fs::remove_file(root.path().join("client-secret")).unwrap();
    let out = common::switchyard(&dir, &["oauth", "status"]);
    let table = common::text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("crm") && l.contains("needs_reauthorization")),
        "{table}"
    );
    assert_no_credential(&oidc, "switchyard oauth status", table.as_bytes());

    // Another key than the one that sealed the records: unreadable, said
    // so, exit 2 (never "not connected" and 0).
    let key = dir.join("data/oauth.key");
    let sealed_with = std::fs::read(&key).unwrap();
    std::fs::write(&key, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap();
    let out = common::switchyard(&dir, &["oauth", "status"]);
    let table = common::text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("crm") && l.contains("unreadable")),
        "{table}"
    );
    std::fs::write(&key, sealed_with).unwrap();
    assert_no_credential(&oidc, "the host's directory (data dir, log)", &host.disk());
}
