//! `switchyard plugin inspect`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use switchyard_broker::capabilities::{EffectiveRights, PluginManifest};
use switchyard_host::SwitchyardConfig;
use switchyard_runtime::plugin::plugin_name_from_path;
use switchyard_runtime::signing::TrustPolicy;
use switchyard_runtime::{Runtime, inspect_component};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The component file.
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Config to compare against (installed version, grants). Default:
    /// ./switchyard.toml if present.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// The plugin's requests next to what the operator's config says about it.
struct CapabilityReport {
    requests: PluginManifest,
    /// What it requests beyond the installed plugin of the same name.
    beyond_installed: Option<(PathBuf, PluginManifest)>,
    /// Per configured connection of this plugin: requested but not granted.
    connections: Vec<(String, Vec<String>)>,
}

fn capability_report(file: &Path, config: Option<&Path>) -> anyhow::Result<CapabilityReport> {
    let requests = PluginManifest::load_for(file).map_err(anyhow::Error::msg)?;
    let config = SwitchyardConfig::load(config)?;
    let name = plugin_name_from_path(file).unwrap_or_default();
    let installed = config
        .plugins
        .get(&name)
        .map(|p| p.path.clone())
        .unwrap_or_else(|| config.plugin_dir().join(format!("{name}.wasm")));
    let same_file = std::fs::canonicalize(&installed).ok() == std::fs::canonicalize(file).ok();
    let beyond_installed = if installed.is_file() && !same_file {
        let old = PluginManifest::load_for(&installed).map_err(anyhow::Error::msg)?;
        Some((installed, requests.beyond(&old)))
    } else {
        None
    };
    let mut connections = Vec::new();
    for (conn, settings) in &config.connections {
        if settings.plugin == name {
            let rights =
                EffectiveRights::new(&requests, &settings.grants).map_err(anyhow::Error::msg)?;
            connections.push((conn.clone(), rights.missing));
        }
    }
    Ok(CapabilityReport {
        requests,
        beyond_installed,
        connections,
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Signatures are checked as this host's [trust] would check them.
    // and bounded by its [limits].
    let config = SwitchyardConfig::load(args.config.as_deref())?;
    let trust = TrustPolicy::from_config(&config.trust).map_err(anyhow::Error::msg)?;
    let runtime = Runtime::builder()
        .trust(trust)
        .limits(config.limits.clone())
        .build()?;
    // Full load check: world, version, imports, exports, then `describe`.
    // Only a file that fails it is compiled a second time, to summarise it.
    let verdict = super::tokio()?.block_on(runtime.load_plugin("inspect", &args.file));
    let summary = match &verdict {
        Ok(plugin) => plugin.summary().clone(),
        Err(_) => inspect_component(runtime.engine(), &args.file, None, runtime.limits())?.1,
    };
    let caps = capability_report(&args.file, args.config.as_deref())?;
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["file"] = args.file.display().to_string().into();
        match &verdict {
            Ok(plugin) => {
                let info = plugin.info();
                value["loadable"] = true.into();
                value["publisher"] = plugin.publisher().into();
                value["connector"] = serde_json::json!({
                    "name": info.name,
                    "version": info.version,
                    "description": info.description,
                    "actions": info.actions.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
                    "streams": info.streams.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
                });
            }
            Err(err) => {
                value["loadable"] = false.into();
                value["error"] = err.to_string().into();
            }
        }
        value["requests"] = serde_json::to_value(&caps.requests)?;
        if let Some((path, extra)) = &caps.beyond_installed {
            value["beyond_installed"] = serde_json::json!({
                "installed": path.display().to_string(),
                "requests": extra,
            });
        }
        value["connections"] = caps
            .connections
            .iter()
            .map(|(name, missing)| serde_json::json!({"name": name, "not_granted": missing}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("file:        {}", args.file.display());
        println!("size:        {} bytes", summary.size);
        println!("sha256:      {}", summary.sha256);
        println!(
            "wit:         {}",
            summary
                .wit_version
                .as_deref()
                .map_or("none (not a switchyard connector)".to_owned(), |v| format!(
                    "switchyard:connector@{v}"
                ))
        );
        println!("exports:");
        for e in &summary.exports {
            println!("  {e}");
        }
        println!("imports:");
        for i in &summary.imports {
            println!("  {i}");
        }
        match &verdict {
            Ok(plugin) => {
                let info = plugin.info();
                println!("connector:   {} {}", info.name, info.version);
                if !info.description.is_empty() {
                    println!("             {}", info.description);
                }
                for a in &info.actions {
                    println!("  action {:<12} {}", a.name, a.description);
                }
                for s in &info.streams {
                    println!("  stream {:<12} {}", s.name, s.description);
                }
                println!("loadable:    yes");
                match plugin.publisher() {
                    Some(publisher) => println!("publisher:   {publisher} (signature verified)"),
                    None => println!("publisher:   none (unsigned or not a trusted key)"),
                }
            }
            Err(err) => println!("loadable:    no: {err}"),
        }
        let requests = caps.requests.describe();
        if requests.is_empty() {
            println!("requests:    nothing");
        } else {
            println!("requests:");
            for line in requests {
                println!("  {line}");
            }
        }
        if let Some((path, extra)) = &caps.beyond_installed {
            let extra = extra.describe();
            println!(
                "beyond the installed {}: {}",
                path.display(),
                if extra.is_empty() {
                    "nothing new".to_owned()
                } else {
                    extra.join(", ")
                }
            );
        }
        for (name, missing) in &caps.connections {
            if missing.is_empty() {
                println!("connection {name}: everything requested is granted");
            } else {
                println!("connection {name}: not granted: {}", missing.join(", "));
            }
        }
    }
    Ok(if verdict.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
