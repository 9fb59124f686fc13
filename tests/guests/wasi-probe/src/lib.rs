//! A connector that also imports WASI, as guests from wasip2 toolchains and
//! other languages do. The host links WASI with nothing granted: the probe
//! reports what it can see, and writes to stdout and stderr.

use switchyard_sdk::{Connector, ConnectorInfo, Error};

mod wasi {
    // Just the parts of WASI 0.2 the probe uses; the host checks them
    // structurally against its own definitions.
    wit_bindgen::generate!({
        inline: "
            package switchyard:wasi-probe;

            world probe {
                import wasi:cli/environment@0.2.0;
                import wasi:cli/stdout@0.2.0;
                import wasi:cli/stderr@0.2.0;
            }

            package wasi:io@0.2.0 {
                interface error {
                    resource error;
                }
                interface streams {
                    use error.{error};
                    variant stream-error {
                        last-operation-failed(error),
                        closed,
                    }
                    resource output-stream {
                        blocking-write-and-flush: func(contents: list<u8>) -> result<_, stream-error>;
                    }
                }
            }

            package wasi:cli@0.2.0 {
                interface environment {
                    get-environment: func() -> list<tuple<string, string>>;
                    get-arguments: func() -> list<string>;
                    initial-cwd: func() -> option<string>;
                }
                interface stdout {
                    use wasi:io/streams@0.2.0.{output-stream};
                    get-stdout: func() -> output-stream;
                }
                interface stderr {
                    use wasi:io/streams@0.2.0.{output-stream};
                    get-stderr: func() -> output-stream;
                }
            }
        ",
        type_section_suffix: "wasi-probe",
        generate_all,
    });
}

struct Probe;

impl Connector for Probe {
    fn describe() -> ConnectorInfo {
        ConnectorInfo::new("wasi-probe", "0.1.0")
            .action("environment", "what WASI shows")
            .action("print", "writes a line to stdout and one to stderr")
    }

    fn call_action(action: &str, _input: &[u8]) -> Result<Vec<u8>, Error> {
        use wasi::wasi::cli::{environment, stderr, stdout};
        match action {
            "environment" => Ok(format!(
                "env={} args={} cwd={:?}",
                environment::get_environment().len(),
                environment::get_arguments().len(),
                environment::initial_cwd()
            )
            .into_bytes()),
            "print" => {
                let out = stdout::get_stdout().blocking_write_and_flush(b"hello from stdout\n");
                let err = stderr::get_stderr().blocking_write_and_flush(b"hello from stderr\n");
                Ok(format!("stdout={} stderr={}", out.is_ok(), err.is_ok()).into_bytes())
            }
            other => Err(Error::unknown_action(other)),
        }
    }
}

switchyard_sdk::export!(Probe);
