//! A real nats-server with JetStream, on 127.0.0.1, with file storage in a
//! temporary directory: the cluster backend's peer in tests. `./dev setup`
//! installs Debian's `nats-server`; `SWITCHYARD_NATS_SERVER` points at
//! another executable.
//!
//! Unlike pouchdb, each test starts its own server: tests stop and
//! restart it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server this test started; stopped (kill -9) when dropped, its
/// storage kept until then so a restart finds it.
#[derive(Debug)]
pub struct NatsServer {
    pub port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

fn executable() -> PathBuf {
    std::env::var_os("SWITCHYARD_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .unwrap_or_else(|| PathBuf::from("nats-server"))
        })
}

impl NatsServer {
    /// Starts a server with JetStream on a free loopback port.
    pub fn start() -> NatsServer {
        let port = crate::free_port();
        let mut server = NatsServer {
            port,
            store: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Where JetStream keeps its files.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Kills the server (SIGKILL: no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again (after [`kill`](Self::kill)) on the same
    /// port and storage, and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(executable())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {}: {e} (./dev setup installs nats-server)",
                    executable().display()
                )
            });
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
