//! A connector that also imports WASI, as guests from wasip2 toolchains and
//! other languages do. The host links WASI with nothing granted: the probe
//! reports what it can see.

use switchyard_sdk::{Connector, ConnectorInfo, Error};

mod wasi {
    wit_bindgen::generate!({
        inline: "
            package wasi:cli@0.2.0;
            interface environment {
                get-environment: func() -> list<tuple<string, string>>;
                get-arguments: func() -> list<string>;
                initial-cwd: func() -> option<string>;
            }
            world probe { import environment; }
        ",
        type_section_suffix: "wasi-probe",
    });
}

struct Probe;

impl Connector for Probe {
    fn describe() -> ConnectorInfo {
        ConnectorInfo::new("wasi-probe", "0.1.0").action("environment", "what WASI shows")
    }

    fn call_action(action: &str, _input: &[u8]) -> Result<Vec<u8>, Error> {
        use wasi::wasi::cli::environment;
        match action {
            "environment" => Ok(format!(
                "env={} args={} cwd={:?}",
                environment::get_environment().len(),
                environment::get_arguments().len(),
                environment::initial_cwd()
            )
            .into_bytes()),
            other => Err(Error::unknown_action(other)),
        }
    }
}

switchyard_sdk::export!(Probe);
