//! A real OAuth 2.0 authorization server: oidc-provider 9 (npm), run by
//! tests/oidc/server.mjs in memory on 127.0.0.1, with a protected API and
//! test controls on the same origin. `./dev setup` installs it into
//! `.switchyard/oidc` from tests/oidc/package.json and its lock;
//! `SWITCHYARD_OIDC_DIR` points at another directory holding
//! `node_modules/oidc-provider`. [`oidc`] is one server per test process;
//! [`start_oidc`] a private one (own counters, own TTL).
//!
//! Clients, both with [`Oidc::client_secret`], authenticating with
//! `client_secret_basic` or `client_secret_post`:
//! - [`CC_CLIENT`]: `client_credentials` only.
//! - [`AC_CLIENT`]: `authorization_code` and `refresh_token`. Its
//!   authorize request must carry `response_type=code`, `client_id`,
//!   `redirect_uri` (any `http://127.0.0.1:<any port>/<any path>`; not
//!   `localhost`), `code_challenge` with `code_challenge_method=S256` (PKCE
//!   is required; `plain` is refused), and `state`; `scope` any of `openid
//!   offline_access api:read api:write`. No `prompt=consent` and no
//!   `resource` are needed: every code grant yields a refresh token (the
//!   server drops `offline_access` without `prompt=consent`, harmlessly).
//!   The callback gets `code`, `state` and `iss`; the token request repeats
//!   `redirect_uri` and sends `code_verifier`.
//!
//! Every access token is opaque, for the resource `<issuer>/api` (no
//! `resource` parameter needed), and lives `access_ttl_secs` (30 s by
//! default); a token response's `scope` holds only the API scopes granted
//! (requested ∩ `api:read api:write`; none requested, none granted, no
//! error). Refresh tokens live 1 day and rotate on every use. Reusing a
//! rotated refresh token answers `invalid_grant` AND revokes the whole
//! grant (the newest refresh token and its access tokens die too): two
//! concurrent refreshes with one token break the grant.
//!
//! Login and consent (oidc-provider's devInteractions, both at
//! `/interaction/<uid>`, forms posting to an absolute URL): the login page
//! (title `Sign-in`) has `input[name=login]` (any value becomes `sub`),
//! `input[name=password]` (any value) and `button[type=submit]` ("Sign-in");
//! the consent page (title `Authorize`) has only `button[type=submit]`
//! ("Continue"). Each submit redirects to `/auth/<uid>`, which redirects on.
//!
//! Routes besides oidc-provider's (paths from discovery, e.g. `/token`,
//! `/auth`, `/token/revocation`, `/token/introspection`):
//! - `GET /api/whoami` → `{"client", "sub" (or null), "scope" (or null)}`;
//!   `GET|POST /api/echo` → `{"method", "path", "query", "headers" (names
//!   lowercased, values verbatim), "body" (text)}`. Both answer 401 with
//!   `WWW-Authenticate: Bearer error="invalid_token"` unless the bearer
//!   token is live (not expired, revoked or [`Oidc::expire_access_tokens`]ed).
//! - `GET /__stats`, `POST /__reset`, `/__expire`, `/__revoke`,
//!   `/__slow?ms=N`: the controls behind [`Oidc`]'s methods.
//!
//! The server's environment: `PORT` (0), `OIDC_CLIENT_SECRET`,
//! `OIDC_ACCESS_TTL` (seconds); `OIDC_DEBUG=1` (inherited) shows
//! oidc-provider's development warnings on stderr.

use crate::pouchdb::{Response, request_with};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// The client allowed only the `client_credentials` grant.
pub const CC_CLIENT: &str = "cc-client";

/// The client allowed `authorization_code` (with PKCE) and `refresh_token`.
pub const AC_CLIENT: &str = "ac-client";

/// How long a new server may take to say it listens (about 0.3 s).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running authorization server; a private one ([`start_oidc`]) stops
/// when dropped.
#[derive(Debug)]
pub struct Oidc {
    /// Where it listens, on 127.0.0.1.
    pub addr: SocketAddr,
    client_secret: String,
    token_url: String,
    authorize_url: String,
    revocation_url: String,
    // Closing this pipe (dropping it, or the test process exiting however
    // it exits) makes the watchdog shell stop node.
    lifeline: Mutex<Option<ChildStdin>>,
    child: Mutex<Child>,
}

/// The process-wide server (access tokens live 30 s), started on first use.
pub fn oidc() -> &'static Oidc {
    static OIDC: OnceLock<Oidc> = OnceLock::new();
    OIDC.get_or_init(|| start_oidc(30))
}

/// Starts a server of the caller's own, whose access tokens (client
/// credentials ones too) live `access_ttl_secs`; stopped when dropped.
pub fn start_oidc(access_ttl_secs: u64) -> Oidc {
    assert!(access_ttl_secs > 0, "an access token TTL of 0 s");
    let dir = install_dir();
    assert!(
        dir.join("node_modules/oidc-provider/package.json").exists(),
        "oidc-provider is missing from {}: run `./dev setup` (installs it from tests/oidc/package.json)",
        dir.display()
    );
    let script = crate::workspace_root().join("tests/oidc/server.mjs");
    // The run's canary in it: the suite's last step greps every captured
    // log for the canary, so a leaked client secret fails there too.
    let client_secret = format!("{}{}", crate::canary(), random_hex(24));
    // Only node holds the stdout pipe: it closes when node exits.
    let watchdog = r#"cd "$1" || exit 1
exec 3>&1 >/dev/null
node "$2" >&3 3>&- & p=$!
exec 3>&-
trap 'kill $p 2>/dev/null; wait $p; exit 1' INT TERM HUP
cat >/dev/null
kill $p 2>/dev/null; wait $p"#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(watchdog)
        .arg("sh")
        .arg(&dir)
        .arg(&script)
        .env("PORT", "0")
        .env("OIDC_CLIENT_SECRET", &client_secret)
        .env("OIDC_ACCESS_TTL", access_ttl_secs.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start node for the OAuth server");
    let lifeline = child.stdin.take().expect("piped stdin");
    let addr = listening_addr(child.stdout.take().expect("piped stdout"));
    let discovery = get(addr, "/.well-known/openid-configuration");
    let endpoint = |name: &str| {
        discovery[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in the OAuth server's discovery: {discovery}"))
            .to_owned()
    };
    Oidc {
        addr,
        client_secret,
        token_url: endpoint("token_endpoint"),
        authorize_url: endpoint("authorization_endpoint"),
        revocation_url: endpoint("revocation_endpoint"),
        lifeline: Mutex::new(Some(lifeline)),
        child: Mutex::new(child),
    }
}

impl Oidc {
    /// `http://127.0.0.1:<port>`: the issuer, also the API's origin.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token endpoint, from discovery.
    pub fn token_url(&self) -> String {
        self.token_url.clone()
    }

    /// The authorization endpoint, from discovery.
    pub fn authorize_url(&self) -> String {
        self.authorize_url.clone()
    }

    /// The revocation endpoint (RFC 7009), from discovery.
    pub fn revocation_url(&self) -> String {
        self.revocation_url.clone()
    }

    /// `http://127.0.0.1:<port>/api<path>`: the protected API, e.g.
    /// `api("/whoami")`.
    pub fn api(&self, path: &str) -> String {
        format!("{}/api{path}", self.issuer())
    }

    /// Both clients' secret: the run's canary then 48 random hex digits,
    /// new per server.
    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }

    /// The token endpoint counters since start or [`Oidc::reset`]:
    /// `{"token_requests": n, "by_grant": {"client_credentials": n,
    /// "refresh_token": n, "authorization_code": n, …}, "invalid_grant": n}`.
    /// Requests count on arrival (before any [`Oidc::slow_token_endpoint`]
    /// delay), `invalid_grant` answers when sent.
    pub fn stats(&self) -> Value {
        get(self.addr, "/__stats")
    }

    /// Every access and refresh token value issued so far (expired and
    /// revoked ones too).
    pub fn issued(&self) -> Vec<String> {
        get(self.addr, "/__issued")["tokens"]
            .as_array()
            .expect("a token list")
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect()
    }

    /// Zeroes the counters of [`Oidc::stats`].
    pub fn reset(&self) {
        self.control("/__reset");
    }

    /// Revokes every access token issued so far (refresh tokens live on):
    /// the API answers them 401 although they have not expired.
    pub fn expire_access_tokens(&self) {
        self.control("/__expire");
    }

    /// Revokes every grant, refresh token and access token issued so far:
    /// the next refresh answers `invalid_grant`.
    pub fn revoke_all(&self) {
        self.control("/__revoke");
    }

    /// Delays every token endpoint request by `ms` before it is handled (0:
    /// no delay).
    pub fn slow_token_endpoint(&self, ms: u64) {
        self.control(&format!("/__slow?ms={ms}"));
    }

    fn control(&self, path: &str) {
        let response = call(self.addr, "POST", path);
        assert_eq!(response.status, 200, "POST {path}: {}", response.text());
    }
}

impl Drop for Oidc {
    fn drop(&mut self) {
        // Closing stdin stops node; waiting reaps the shell.
        let lifeline = self.lifeline.get_mut();
        drop(lifeline.unwrap_or_else(PoisonError::into_inner).take());
        let child = self.child.get_mut();
        let _ = child.unwrap_or_else(PoisonError::into_inner).wait();
    }
}

fn install_dir() -> PathBuf {
    match std::env::var_os("SWITCHYARD_OIDC_DIR") {
        Some(dir) => dir.into(),
        None => crate::workspace_root().join(".switchyard/oidc"),
    }
}

/// Reads the server's `listening on http://127.0.0.1:<port>` line, then
/// keeps draining its stdout.
fn listening_addr(stdout: impl Read + Send + 'static) -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(origin) = line.strip_prefix("listening on http://") {
                let _ = tx.send(origin.parse::<SocketAddr>().ok());
                break;
            }
        }
        drop(tx);
        lines.for_each(drop);
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(Some(addr)) => addr,
        Ok(None) => panic!("the OAuth server printed a bad `listening on` line"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("the OAuth server (node tests/oidc/server.mjs) exited: see its stderr above")
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("the OAuth server did not listen within {START_TIMEOUT:?}")
        }
    }
}

fn call(addr: SocketAddr, method: &str, path: &str) -> Response {
    request_with(addr, method, path, &[], None)
        .unwrap_or_else(|e| panic!("{method} {path} on the OAuth server: {e}"))
}

fn get(addr: SocketAddr, path: &str) -> Value {
    let response = call(addr, "GET", path);
    assert_eq!(response.status, 200, "GET {path}: {}", response.text());
    response.json()
}

/// `bytes` random bytes from /dev/urandom, as lowercase hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
