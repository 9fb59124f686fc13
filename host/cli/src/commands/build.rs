//! `switchyard plugin build`: a Rust crate, or a Python or JavaScript
//! connector folder, into a component.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard_build::{BuildRequest, Language, Toolchain};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The connector's directory: a Rust crate (Cargo.toml), a Python
    /// connector (app.py) or a JavaScript one (app.js).
    crate_dir: PathBuf,
    /// Cargo target directory. Default: cargo's (the crate's or workspace's `target/`).
    #[arg(long)]
    target_dir: Option<PathBuf>,
    /// Also copy the component into this directory (e.g. the plugin dir) as
    /// `<package>.wasm`, with the crate's `<package>.manifest.toml` if it
    /// has one.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match Language::detect(&args.crate_dir)? {
        Language::Python => return build_guest(&args, "Python", switchyard_build::python::build),
        Language::JavaScript => {
            return build_guest(&args, "JavaScript", switchyard_build::javascript::build);
        }
        Language::Rust => {}
    }
    let toolchain = Toolchain::detect()?;
    eprintln!(
        "building {} with {}",
        args.crate_dir.display(),
        toolchain.describe()
    );
    let mut request = BuildRequest::crate_dir(&args.crate_dir)?;
    request.target_dir = args.target_dir;
    let built = switchyard_build::build(&request, &toolchain)?;
    for component in built {
        let mut path = component.path;
        if let Some(out) = &args.out {
            std::fs::create_dir_all(out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let dest = out.join(format!("{}.wasm", component.package));
            std::fs::copy(&path, &dest)
                .with_context(|| format!("cannot copy to {}", dest.display()))?;
            let manifest_name = format!("{}.manifest.toml", component.package);
            let manifest = args.crate_dir.join(&manifest_name);
            if manifest.exists() {
                let copied = out.join(&manifest_name);
                std::fs::copy(&manifest, &copied)
                    .with_context(|| format!("cannot copy to {}", copied.display()))?;
            }
            path = dest;
        }
        eprintln!("built {}", component.package);
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// A Python or JavaScript connector: into `--out` (with its manifest) or
/// `<dir>/build/`.
fn build_guest(
    args: &Args,
    language: &str,
    build: switchyard_build::GuestBuilder,
) -> anyhow::Result<ExitCode> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.crate_dir.join("build"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    eprintln!("building {} ({language})", args.crate_dir.display());
    let (name, path) = build(&args.crate_dir, &out)?;
    if let (_, Some(manifest), _) = switchyard_build::python::manifest(&args.crate_dir)? {
        let copied = out.join(format!("{name}.manifest.toml"));
        std::fs::copy(&manifest, &copied)
            .with_context(|| format!("cannot copy to {}", copied.display()))?;
    }
    eprintln!("built {name}");
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}
