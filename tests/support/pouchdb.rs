//! A real pouchdb-server (npm), in memory on 127.0.0.1, one per test
//! process: a CouchDB peer for the CouchDB connector tests. `./dev setup`
//! installs it into `.switchyard/node` from tests/pouchdb-package.json and
//! its lock; `SWITCHYARD_POUCHDB_SERVER` points at another
//! `pouchdb-server` executable.
//!
//! Every test shares the one server, so each should work in its own
//! database: [`PouchDb::fresh_db`] makes one with a unique name.
//!
//! Differences from CouchDB 2+ that tests may meet: `seq` and `last_seq`
//! are JSON numbers (1, 2, …), not opaque strings; answers are
//! `Content-Type: text/plain` unless the request accepts
//! `application/json` ([`request`] does); `feed=longpoll` and
//! `feed=continuous` ignore `timeout` (a longpoll with nothing new waits for
//! the next change, sending a newline every 6 s).

use serde_json::{Value, json};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How many documents [`PouchDb::bulk_insert`] sends per `_bulk_docs`
/// request.
pub const BULK_CHUNK: usize = 1000;

/// How long [`request`] waits to connect, and then for each read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`pouchdb`] waits for a new server to answer (it takes about
/// one second).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running pouchdb-server.
#[derive(Debug)]
pub struct PouchDb {
    pub addr: SocketAddr,
    // Closing this pipe (the test process exiting, however it exits) makes
    // the watchdog shell stop the server and remove its working directory.
    _lifeline: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

/// The process-wide pouchdb-server, started on first use.
pub fn pouchdb() -> &'static PouchDb {
    static POUCHDB: OnceLock<PouchDb> = OnceLock::new();
    POUCHDB.get_or_init(start)
}

impl PouchDb {
    /// `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// `GET path`; panics unless the status is 2xx.
    pub fn get(&self, path: &str) -> Value {
        self.call("GET", path, None)
    }

    /// `POST path` with a JSON body; panics unless the status is 2xx.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        self.call("POST", path, Some(body))
    }

    /// `PUT path` with a JSON body, or none; panics unless the status is 2xx.
    pub fn put(&self, path: &str, body: Option<&Value>) -> Value {
        self.call("PUT", path, body)
    }

    /// Creates the database `name`; panics if it exists already. The name
    /// goes into the path as it is: use lowercase letters, digits and `_-`.
    pub fn create_db(&self, name: &str) {
        self.put(&format!("/{name}"), None);
    }

    /// Creates a database of its own for one test and returns its name:
    /// `prefix` followed by a number unique in this test process.
    pub fn fresh_db(&self, prefix: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let name = format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.create_db(&name);
        name
    }

    /// Writes `docs` with `POST /db/_bulk_docs`, [`BULK_CHUNK`] to a
    /// request, as new edits (the server assigns `_rev`, and `_id` too where
    /// a doc has none). Panics if any document is refused (a conflict, say).
    /// Returns the server's `{"ok", "id", "rev"}` per document, in order.
    pub fn bulk_insert(&self, db: &str, docs: &[Value]) -> Vec<Value> {
        let mut results = Vec::with_capacity(docs.len());
        for chunk in docs.chunks(BULK_CHUNK) {
            let reply = self.post(&format!("/{db}/_bulk_docs"), &json!({ "docs": chunk }));
            let reply = match reply {
                Value::Array(items) => items,
                other => panic!("_bulk_docs on {db} answered {other}"),
            };
            if let Some(refused) = reply.iter().find(|r| r.get("error").is_some()) {
                panic!("_bulk_docs on {db} refused a document: {refused}");
            }
            results.extend(reply);
        }
        results
    }

    /// Every document of `db` (`GET /db/_all_docs?include_docs=true`), with
    /// `_id` and `_rev`, sorted by `_id`.
    pub fn all_docs(&self, db: &str) -> Vec<Value> {
        let reply = self.get(&format!("/{db}/_all_docs?include_docs=true"));
        let Some(Value::Array(rows)) = reply.get("rows") else {
            panic!("_all_docs on {db} answered {reply}");
        };
        rows.iter().map(|row| row["doc"].clone()).collect()
    }

    /// How many live (not deleted) documents `db` holds (`GET /db`).
    pub fn doc_count(&self, db: &str) -> u64 {
        let info = self.get(&format!("/{db}"));
        info["doc_count"]
            .as_u64()
            .unwrap_or_else(|| panic!("GET /{db} answered {info}"))
    }

    /// Every live document as stored (winning revision and body), without
    /// `_revisions`: what two databases must agree on after a sync.
    pub fn snapshot(&self, db: &str) -> Vec<Value> {
        self.all_docs(db)
            .into_iter()
            .map(|mut doc| {
                if let Some(fields) = doc.as_object_mut() {
                    fields.remove("_revisions");
                }
                doc
            })
            .collect()
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let body = body.map(|b| serde_json::to_vec(b).expect("serialise a JSON body"));
        let response = request(self.addr, method, path, body.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path} on pouchdb-server: {e}"));
        assert!(
            (200..300).contains(&response.status),
            "{method} {path} on pouchdb-server answered {}: {}",
            response.status,
            response.text()
        );
        response.json()
    }
}

/// One HTTP response, body decoded from chunked transfer if it was.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }
}

/// Sends one blocking HTTP/1.1 request to `addr` and reads the whole
/// response: `Connection: close`, no compression, and a body, if any, sent
/// as `Content-Type: application/json` with a `Content-Length`. Each
/// connect, read and write waits at most [`IO_TIMEOUT`].
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> io::Result<Response> {
    let body = body.map(|b| ("application/json", b));
    request_with(addr, method, path, &[], body)
}

/// [`request`] with extra headers and a body of any content type.
pub fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    if let Some((content_type, body)) = body {
        let length = body.len();
        head += &format!("Content-Type: {content_type}\r\nContent-Length: {length}\r\n");
    } else if method != "GET" && method != "HEAD" {
        head += "Content-Length: 0\r\n";
    }
    head += "\r\n";
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.map(|(_, b)| b).unwrap_or_default())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], no_body: bool) -> io::Result<Response> {
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(status_line))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
    response.body = if no_body {
        Vec::new()
    } else if chunked {
        dechunk(rest).ok_or_else(|| bad("broken chunked body"))?
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length.parse().map_err(|_| bad("Content-Length"))?;
        let body = rest.get(..length);
        body.ok_or_else(|| bad("body shorter than Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(response)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad HTTP response: {what}"),
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a `Transfer-Encoding: chunked` body (trailers ignored).
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n")?;
        let size_field = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size_hex = size_field.split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

fn server() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHYARD_POUCHDB_SERVER") {
        return path.into();
    }
    crate::workspace_root().join(".switchyard/node/node_modules/.bin/pouchdb-server")
}

fn start() -> PouchDb {
    let server = server();
    assert!(
        server.exists(),
        "{} is missing: run `./dev setup` (installs pouchdb-server from tests/pouchdb-package.json)",
        server.display()
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // pouchdb-server writes config.json and log.txt (one line a request)
    // into its working directory: a scratch one, removed when it stops,
    // also when a signal to the whole process group (^C) stops it.
    let dir = std::env::temp_dir().join(format!("switchyard-pouchdb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create pouchdb-server's working directory");
    let script = r#"dir=$2
cd "$dir" || exit 1
"$1" --in-memory --host 127.0.0.1 --port "$3" --no-stdout-logs --no-color & p=$!
trap 'kill $p 2>/dev/null; wait $p; rm -rf "$dir"; exit 1' INT TERM HUP
cat >/dev/null
kill $p; wait $p; rm -rf "$dir""#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&server)
        .arg(&dir)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start pouchdb-server");
    let lifeline = child.stdin.take().expect("piped stdin");
    let started = Instant::now();
    while !answers(addr) {
        assert!(
            started.elapsed() < START_TIMEOUT,
            "pouchdb-server did not answer on {addr} within {START_TIMEOUT:?} (its log: {})",
            dir.join("log.txt").display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    PouchDb {
        addr,
        _lifeline: Mutex::new(lifeline),
        _child: Mutex::new(child),
    }
}

fn answers(addr: SocketAddr) -> bool {
    request(addr, "GET", "/", None).is_ok_and(|r| r.status == 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chunked_and_sized_bodies() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n";
        let r = parse_response(chunked, false).unwrap();
        assert_eq!((r.status, r.json()), (200, json!({"a": 1})));
        let sized = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}trailing";
        let r = parse_response(sized, false).unwrap();
        assert_eq!((r.status, r.text().as_str()), (201, "{}"));
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
        assert!(parse_response(cut, false).is_err());
    }
}
