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
                import wasi:random/random@0.2.0;
                import wasi:http/types@0.2.0;
            }

            package wasi:random@0.2.0 {
                interface random {
                    get-random-bytes: func(len: u64) -> list<u8>;
                }
            }

            package wasi:http@0.2.0 {
                interface types {
                    variant header-error {
                        invalid-syntax,
                        forbidden,
                        immutable,
                    }
                    type field-key = string;
                    type field-value = list<u8>;
                    resource fields {
                        constructor();
                        append: func(name: field-key, value: field-value) -> result<_, header-error>;
                    }
                }
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
            .action("handles", "holds stdout handles until refused")
            .action("random", "asks wasi:random for `input` bytes")
            .action("headers", "appends `input` header fields to one map")
    }

    fn call_action(action: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        use wasi::wasi::cli::{environment, stderr, stdout};
        let number = || -> u64 { String::from_utf8_lossy(input).trim().parse().unwrap_or(0) };
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
            "handles" => {
                let mut held = Vec::new();
                loop {
                    held.push(stdout::get_stdout());
                }
            }
            "random" => Ok(wasi::wasi::random::random::get_random_bytes(number())
                .len()
                .to_string()
                .into_bytes()),
            "headers" => {
                let fields = wasi::wasi::http::types::Fields::new();
                for i in 0..number() {
                    if let Err(e) = fields.append(&format!("x-flood-{i}"), b"v") {
                        return Err(Error::permanent(format!("append {i}: {e:?}")));
                    }
                }
                Ok(b"appended".to_vec())
            }
            other => Err(Error::unknown_action(other)),
        }
    }
}

switchyard_sdk::export!(Probe);
