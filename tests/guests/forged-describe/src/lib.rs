//! A connector whose `describe` tries to forge log records and colour the
//! operator's terminal: the host must refuse it, quoting it escaped.

use switchyard_sdk::{Connector, ConnectorInfo, Error};

struct Forged;

/// What a forger would put in the version: a whole fake log record.
const FORGED_VERSION: &str =
    "1.0.0\n2026-12-01T00:00:00.000000Z  INFO switchyard::runtime: plugin loaded plugin=\"admin\"";

impl Connector for Forged {
    fn describe() -> ConnectorInfo {
        ConnectorInfo::new("forged-describe", FORGED_VERSION)
            .description("\u{1b}[31mred\u{1b}[0m\r\nfake line")
            .action("greet\u{1b}[2J", "clears the screen")
    }

    fn call_action(action: &str, _input: &[u8]) -> Result<Vec<u8>, Error> {
        Err(Error::unknown_action(action))
    }
}

switchyard_sdk::export!(Forged);
