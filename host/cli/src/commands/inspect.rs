//! `switchyard plugin inspect`.

use std::path::PathBuf;
use std::process::ExitCode;
use switchyard_runtime::{Runtime, inspect_component};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The component file.
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::builder().build()?;
    let (_, summary) = inspect_component(runtime.engine(), &args.file, None)?;
    // Full load check: world, version, imports, exports, then `describe`.
    let verdict = super::tokio()?.block_on(runtime.load_plugin("inspect", &args.file));
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["file"] = args.file.display().to_string().into();
        match &verdict {
            Ok(plugin) => {
                let info = plugin.info();
                value["loadable"] = true.into();
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
            }
            Err(err) => println!("loadable:    no: {err}"),
        }
    }
    Ok(if verdict.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
