//! A small driver for Debian's headless Chromium, speaking the Chrome
//! DevTools Protocol over `--remote-debugging-pipe`: commands go to
//! Chromium on its fd 3, answers and events come back on its fd 4, each
//! JSON message terminated by a NUL byte. `./dev setup` installs Chromium.
//!
//! Every call blocks; every protocol command times out after 30 s. Chromium
//! also exits by itself once the command pipe closes, so it does not outlive
//! a test process that dies without dropping its [`Browser`].

use serde_json::{Value, json};
use std::fs::File;
use std::io::{BufRead, BufReader, PipeWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Debian's Chromium, which `./dev setup` installs.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How the tests run Chromium: headless, no sandbox (tests run as root),
/// and nothing that would reach past loopback on its own (no background
/// networking, updates, sync or QUIC).
pub const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
];
/// How long a protocol command, or a [`Browser::goto`], may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Set on the old document by [`Browser::goto`] to tell it from the new one.
const OLD_DOCUMENT_MARK: &str = "document.__switchyardOldDocument";

/// A headless Chromium attached to its one page. Dropping it closes
/// Chromium (killing its process group if it lingers) and removes its
/// temporary profile.
#[derive(Debug)]
pub struct Browser {
    /// Chromium's main process, leader of its own process group.
    child: Child,
    /// Chromium's fd 3.
    commands: PipeWriter,
    /// Every message from Chromium's fd 4, parsed by a reader thread.
    messages: Receiver<Value>,
    /// The id of the last command sent.
    next_id: u64,
    /// The page target's id.
    target: String,
    /// The flattened page session's id.
    session: String,
    /// Holds `profile/` and Chromium's stderr, `chromium.log`.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium on `about:blank`, attaches to its first page target
    /// (`Target.attachToTarget`, flattened) and enables `Page` and `Runtime`.
    pub fn launch() -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: run `./dev setup` (it installs Debian's chromium package; CI does)"
        );
        let dir = tempfile::tempdir().expect("a temporary directory for chromium");
        let log = File::create(dir.path().join("chromium.log")).expect("create chromium.log");
        let (command_reader, commands) = std::io::pipe().expect("a pipe for CDP commands");
        let (message_reader, message_writer) = std::io::pipe().expect("a pipe for CDP messages");
        let (child_in, child_out) = (command_reader.as_raw_fd(), message_writer.as_raw_fd());
        let mut command = Command::new(CHROMIUM);
        command
            .args(CHROMIUM_FLAGS)
            .arg("--remote-debugging-pipe")
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        let pipes_to_fds_3_and_4 = move || {
            // SAFETY: runs in the forked child before exec; fcntl and dup2 are
            // async-signal-safe, and the fds are the pipe ends, still open
            // because the parent keeps their owners alive until after spawn.
            // Copying both above 4 first keeps one dup2 from clobbering the
            // other's source; the copies are close-on-exec, 3 and 4 are not.
            unsafe {
                let input = libc::fcntl(child_in, libc::F_DUPFD_CLOEXEC, 5);
                let output = libc::fcntl(child_out, libc::F_DUPFD_CLOEXEC, 5);
                if input < 0 || output < 0 || libc::dup2(input, 3) < 0 || libc::dup2(output, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        };
        // SAFETY: the hook only calls async-signal-safe functions and
        // allocates nothing (see above).
        unsafe { command.pre_exec(pipes_to_fds_3_and_4) };
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMIUM}: {e} (run `./dev setup`)"));
        drop((command_reader, message_writer));
        let (sender, messages) = mpsc::channel();
        std::thread::Builder::new()
            .name("chromium-cdp".into())
            .spawn(move || {
                let messages = BufReader::new(message_reader)
                    .split(0)
                    .map_while(Result::ok);
                for message in messages.filter_map(|m| serde_json::from_slice(&m).ok()) {
                    if sender.send(message).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn the CDP reader thread");
        let mut browser = Browser {
            child,
            commands,
            messages,
            next_id: 0,
            target: String::new(),
            session: String::new(),
            dir,
        };
        let started = Instant::now();
        browser.target = loop {
            let targets = browser.command("Target.getTargets", json!({}))["targetInfos"].take();
            if let Some(page) = targets
                .as_array()
                .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            {
                break text(&page["targetId"]);
            }
            assert!(
                started.elapsed() < COMMAND_TIMEOUT,
                "chromium opened no page"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let params = json!({ "targetId": browser.target, "flatten": true });
        let attached = browser.command("Target.attachToTarget", params);
        browser.session = text(&attached["sessionId"]);
        browser.command("Page.enable", json!({}));
        browser.command("Runtime.enable", json!({}));
        browser
    }

    /// Navigates to `url` and waits (30 s) for the new document to be
    /// `complete`: a different document from the one before, even when the
    /// URL is the same (a reload), unless only the fragment changed.
    pub fn goto(&mut self, url: &str) {
        let _ = self.try_eval(&format!("{OLD_DOCUMENT_MARK} = true"), COMMAND_TIMEOUT);
        let navigated = self.command("Page.navigate", json!({ "url": url }));
        if let Some(error) = navigated["errorText"].as_str() {
            panic!("navigating to {url}: {error}");
        }
        let condition = if navigated.get("loaderId").is_some() {
            format!("document.readyState === 'complete' && !{OLD_DOCUMENT_MARK}")
        } else {
            "document.readyState === 'complete'".to_owned()
        };
        self.wait_for(&format!("{url} to load"), &condition, COMMAND_TIMEOUT);
    }

    /// The value of `js` (awaited if a promise) in the current page, as
    /// JSON (`null` for `undefined` and for what JSON cannot hold). Panics
    /// with the exception if the script throws or rejects.
    pub fn eval(&mut self, js: &str) -> Value {
        self.try_eval(js, COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("evaluating `{js}` at {}: {e}", self.url()))
    }

    /// Evaluates `js_condition` every 100 ms until its value is truthy, and
    /// returns that value. Errors (a navigation destroying the context, an
    /// element not there yet, no answer while Chromium holds commands back
    /// during a cross-site navigation) count as "not yet". Panics after
    /// `timeout` naming `what`, the last value or error and the current URL.
    pub fn wait_for(&mut self, what: &str, js_condition: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let last = match self.try_eval(js_condition, left.max(Duration::from_millis(500))) {
                Ok(value) if truthy(&value) => return value,
                Ok(value) => value.to_string(),
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                let url = self.url();
                panic!(
                    "timed out after {timeout:?} waiting for {what}: `{js_condition}` was {last} at {url}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The page's current URL (asked of the browser, not the page, so it
    /// answers mid-navigation too).
    pub fn url(&mut self) -> String {
        let info = self.command("Target.getTargetInfo", json!({ "targetId": self.target }));
        text(&info["targetInfo"]["url"])
    }

    /// Calls `click()` on the first element matching `css_selector`; panics
    /// if there is none.
    pub fn click(&mut self, css_selector: &str) {
        let selector = Value::from(css_selector);
        let js = format!(
            "(() => {{ const el = document.querySelector({selector}); \
             if (!el) return false; el.click(); return true; }})()"
        );
        if self.eval(&js) != true {
            panic!("click: nothing matches `{css_selector}` at {}", self.url());
        }
    }

    /// Sets the `value` of the first element matching `css_selector` (via
    /// the native setter, so frameworks tracking it notice) and dispatches
    /// bubbling `input` and `change` events; panics if there is no element.
    pub fn fill(&mut self, css_selector: &str, value: &str) {
        let (selector, value) = (Value::from(css_selector), Value::from(value));
        let js = format!(
            "(() => {{ const el = document.querySelector({selector}); if (!el) return false; \
             const set = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(el), 'value')?.set; \
             if (set) set.call(el, {value}); else el.value = {value}; \
             el.dispatchEvent(new Event('input', {{ bubbles: true }})); \
             el.dispatchEvent(new Event('change', {{ bubbles: true }})); return true; }})()"
        );
        if self.eval(&js) != true {
            panic!("fill: nothing matches `{css_selector}` at {}", self.url());
        }
    }

    /// `Runtime.evaluate` of `js`: its value, or the exception, protocol
    /// error or missing answer (after `timeout`) as text.
    fn try_eval(&mut self, js: &str, timeout: Duration) -> Result<Value, String> {
        let params = json!({
            "expression": js,
            "returnByValue": true,
            "awaitPromise": true,
            "userGesture": true,
        });
        let mut result = self.call("Runtime.evaluate", params, timeout)?;
        if let Some(details) = result.get("exceptionDetails") {
            let exception = &details["exception"];
            let what = match &exception["description"] {
                Value::String(description) => description.clone(),
                _ => exception["value"].to_string(),
            };
            return Err(format!("{}: {what}", text(&details["text"])));
        }
        Ok(result["result"]["value"].take())
    }

    /// Sends `method` and returns its result; panics on a protocol error
    /// or when there is no answer in 30 s.
    fn command(&mut self, method: &str, params: Value) -> Value {
        self.call(method, params, COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("chromium: {method}: {e}"))
    }

    /// Sends `method` (`Target.*` to the browser, the rest to the page
    /// session) and waits up to `timeout` for its answer, skipping events
    /// and late answers. `Err` holds a protocol error or the timeout.
    fn call(&mut self, method: &str, params: Value, timeout: Duration) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !method.starts_with("Target.") {
            message["sessionId"] = Value::from(self.session.as_str());
        }
        let mut bytes = serde_json::to_vec(&message).expect("a JSON message");
        bytes.push(0);
        if let Err(e) = self.commands.write_all(&bytes) {
            panic!("sending {method} to chromium: {e}{}", self.log_tail());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(mut answer) if answer["id"] == id => {
                    return match answer.get("error") {
                        Some(e) => Err(format!("{} ({})", text(&e["message"]), e["code"])),
                        None => Ok(answer["result"].take()),
                    };
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return Err(format!("no answer in {timeout:?}")),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "chromium exited before answering {method}{}",
                        self.log_tail()
                    )
                }
            }
        }
    }

    /// The end of Chromium's stderr, for panic messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("chromium.log")).unwrap_or_default();
        let start = log.char_indices().rev().nth(3000).map_or(0, |(at, _)| at);
        format!("; chromium's stderr ends:\n{}", &log[start..])
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask Chromium to close and give it 5 s; then kill whatever is left
        // of its process group (helpers could otherwise still write into the
        // profile as it is removed). Until we reap the leader, its pid, the
        // group's id, cannot be reused.
        let _ = self
            .commands
            .write_all(b"{\"id\":0,\"method\":\"Browser.close\"}\0");
        let pid = self.child.id();
        let exited = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            state.is_none_or(|state| state.starts_with(['Z', 'X']))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(group) = i32::try_from(pid) {
            // SAFETY: a plain syscall touching no memory, aimed at the group
            // `process_group(0)` made for our own, not yet reaped, child.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// The string `value` holds, or "".
fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// JavaScript truthiness of a value that came back as JSON.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::Browser;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    /// Page 1: a GET form to `/echo`.
    const FORM: &str = "<!doctype html><form action=\"/echo\" method=\"get\">\
        <input name=\"v\" id=\"v\"><button id=\"go\" type=\"submit\">Go</button></form>";

    /// Serves the form at `/` and the submitted `v` at `/echo?v=…` on
    /// 127.0.0.1, one request per connection; returns the origin.
    fn serve() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let origin = format!("http://{}", listener.local_addr().expect("an address"));
        std::thread::spawn(move || {
            // A thread per connection: Chromium may open idle ones.
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || respond(&stream));
            }
        });
        origin
    }

    /// Answers one request.
    fn respond(stream: &std::net::TcpStream) {
        let mut reader = BufReader::new(stream);
        let (mut request, mut header) = (String::new(), String::new());
        let _ = reader.read_line(&mut request);
        while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
            header.clear();
        }
        let target = request.split(' ').nth(1).unwrap_or("/");
        let (status, body) = match target.split_once('?') {
            None if target == "/" => ("200 OK", FORM.to_owned()),
            Some(("/echo", query)) => {
                let v = query.strip_prefix("v=").map(decode).unwrap_or_default();
                (
                    "200 OK",
                    format!("<!doctype html><p id=\"echo\">{}</p>", escape(&v)),
                )
            }
            _ => ("404 Not Found", String::new()),
        };
        let head = "Content-Type: text/html; charset=utf-8\r\nConnection: close";
        let length = body.len();
        let response =
            format!("HTTP/1.1 {status}\r\n{head}\r\nContent-Length: {length}\r\n\r\n{body}");
        let mut out = stream;
        let _ = out.write_all(response.as_bytes());
    }

    /// Decodes one `application/x-www-form-urlencoded` value.
    fn decode(value: &str) -> String {
        let bytes = value.as_bytes();
        let (mut out, mut i) = (Vec::new(), 0);
        while i < bytes.len() {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(byte)) => (out.push(byte), i += 3),
                (b'+', _) => (out.push(b' '), i += 1),
                (byte, _) => (out.push(byte), i += 1),
            };
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Escapes `text` for HTML.
    fn escape(text: &str) -> String {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    }

    /// A GET form filled in and submitted by a click leads to a page that
    /// `wait_for` sees.
    #[test]
    fn a_form_submitted_by_a_click_lands_on_the_next_page() {
        let origin = serve();
        let mut browser = Browser::launch();
        browser.goto(&format!("{origin}/"));
        assert_eq!(browser.eval("1 + 1"), 2);
        browser.fill("#v", "café & <crew>");
        browser.click("#go");
        let echoed = browser.wait_for(
            "the echo page",
            "document.querySelector('#echo')?.textContent",
            Duration::from_secs(30),
        );
        assert_eq!(echoed, "café & <crew>");
        let url = browser.url();
        assert!(url.starts_with(&format!("{origin}/echo?v=")), "{url}");
    }
}
