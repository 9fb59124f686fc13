//! `switchyard call`.

use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use switchyard_host::{Host, SwitchyardConfig};
use switchyard_runtime::Runtime;
use switchyard_runtime::signing::TrustPolicy;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A component file (`*.wasm`) or the name of a configured connection.
    target: String,
    /// The action to call.
    action: String,
    /// JSON input. Default: null.
    #[arg(long, short, default_value = "null")]
    input: String,
    /// Config file, when `target` is a connection name.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Connection setting `key=value` when `target` is a file (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    serde_json::from_str::<serde_json::Value>(&args.input).context("--input is not valid JSON")?;
    super::tokio()?.block_on(async {
        let path = Path::new(&args.target);
        let (runtime, connection) = if args.target.ends_with(".wasm") || path.is_file() {
            let config = SwitchyardConfig::load(args.config.as_deref())?;
            let runtime = Runtime::builder()
                .limits(config.limits.clone())
                .cache_dir(config.cache_dir())
                .trust(TrustPolicy::from_config(&config.trust).map_err(anyhow::Error::msg)?)
                .build()?;
            let name = switchyard_runtime::plugin::plugin_name_from_path(path)
                .unwrap_or_else(|| "plugin".into());
            runtime.load_plugin(&name, path).await?;
            runtime.add_connection(&name, &name, parse_settings(&args.settings)?)?;
            (runtime, name)
        } else {
            if !args.settings.is_empty() {
                bail!("--set applies only when calling a .wasm file; set connection config in the config file");
            }
            let config = SwitchyardConfig::load(args.config.as_deref())?;
            let runtime = Host::without_flows(&config).await?.runtime;
            (runtime, args.target.clone())
        };
        match runtime
            .call_action(&connection, &args.action, args.input.as_bytes())
            .await
        {
            Ok(output) => {
                match serde_json::from_slice::<serde_json::Value>(&output) {
                    Ok(value) => println!("{}", serde_json::to_string_pretty(&value)?),
                    Err(_) => println!("{}", String::from_utf8_lossy(&output)),
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => {
                eprintln!("error ({}): {err}", err.kind());
                Ok(ExitCode::from(2))
            }
        }
    })
}

fn parse_settings(settings: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    settings
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--set {s}: expected KEY=VALUE"))
        })
        .collect()
}
