//! A real httpbin (PyPI) served by gunicorn on 127.0.0.1, one per test
//! process. `./dev setup` installs it into `.switchyard/venv`;
//! `SWITCHYARD_HTTPBIN_GUNICORN` points elsewhere.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running httpbin.
#[derive(Debug)]
pub struct Httpbin {
    pub addr: SocketAddr,
    // Closing this pipe (the test process exiting, however it exits) makes
    // the watchdog shell stop gunicorn.
    _lifeline: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

impl Httpbin {
    /// `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }
}

fn gunicorn() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHYARD_HTTPBIN_GUNICORN") {
        return path.into();
    }
    crate::workspace_root().join(".switchyard/venv/bin/gunicorn")
}

/// The process-wide httpbin, started on first use.
pub fn httpbin() -> &'static Httpbin {
    static HTTPBIN: OnceLock<Httpbin> = OnceLock::new();
    HTTPBIN.get_or_init(start)
}

fn start() -> Httpbin {
    let gunicorn = gunicorn();
    assert!(
        gunicorn.exists(),
        "{} is missing: run `./dev setup` (installs httpbin and gunicorn from tests/python-requirements.txt)",
        gunicorn.display()
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let script = format!(
        "'{}' --bind {addr} --threads 16 --log-level warning httpbin:app & g=$!; cat >/dev/null; kill $g",
        gunicorn.display()
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start gunicorn");
    let lifeline = child.stdin.take().expect("piped stdin");
    let started = Instant::now();
    while !answers(addr) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "httpbin did not answer on {addr} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Httpbin {
        addr,
        _lifeline: Mutex::new(lifeline),
        _child: Mutex::new(child),
    }
}

fn answers(addr: SocketAddr) -> bool {
    use std::io::Write;
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /status/200 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200")
}
