//! Running the `switchyard` binary, as the CLI's integration tests do.
// Each test file uses some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `switchyard args…` in `cwd` with warnings-only logging.
pub fn switchyard(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(cwd)
        .env("SWITCHYARD_LOG", "warn")
        .output()
        .expect("running switchyard")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether it succeeded, and stdout followed by stderr.
pub fn run(cwd: &Path, args: &[&str]) -> (bool, String) {
    let out = switchyard(cwd, args);
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

/// Runs and expects success; returns stdout.
pub fn ok(cwd: &Path, args: &[&str]) -> String {
    let out = switchyard(cwd, args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs and expects exit code 1; returns stderr.
pub fn refused(cwd: &Path, args: &[&str]) -> String {
    let out = switchyard(cwd, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}
