//! The suite's last check: the canary secret handed to guests in this run
//! appears in no captured log. `./dev test` repeats the grep over
//! target/test-logs after every test binary has finished.

use switchyard_tests::{canary, log_dir};

#[test]
fn no_captured_log_contains_the_canary_secret() {
    let canary = canary();
    let mut scanned = 0;
    for entry in std::fs::read_dir(log_dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            !text.contains(&canary),
            "{} contains the canary secret",
            path.display()
        );
        scanned += 1;
    }
    eprintln!("canary: 0 hits in {scanned} captured logs");
}
