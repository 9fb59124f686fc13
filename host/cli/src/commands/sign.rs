//! `switchyard plugin sign` and `switchyard plugin verify`.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use switchyard_broker::capabilities::PluginManifest;
use switchyard_host::SwitchyardConfig;
use switchyard_runtime::signing::{
    PublicKey, SecretKey, SignatureFile, TrustConfig, TrustPolicy, read_beside,
};

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The component file; its manifest (`<stem>.manifest.toml`), if
    /// present, is signed with it.
    file: PathBuf,
    /// The publisher's secret key (`switchyard key generate`).
    #[arg(long)]
    key: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The component file; `<stem>.sig` beside it is checked.
    file: PathBuf,
    /// A trusted publisher's public key file (repeatable); the publisher is
    /// named after the file stem.
    #[arg(
        long = "key",
        required_unless_present = "config",
        conflicts_with = "config"
    )]
    keys: Vec<PathBuf>,
    /// Trust the publishers of this config's [trust.publishers].
    #[arg(long, short)]
    config: Option<PathBuf>,
}

pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let key = SecretKey::read(&args.key)?;
    let component = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    if !component.starts_with(b"\0asm") {
        bail!(
            "{} is not a WebAssembly component; sign the built .wasm file",
            args.file.display()
        );
    }
    let manifest = read_beside(&args.file)?.manifest;
    let manifest_path = PluginManifest::path_for(&args.file);
    if let Some(bytes) = &manifest {
        // Signing a manifest the host would refuse helps nobody.
        let text = std::str::from_utf8(bytes).ok().context("not UTF-8 text");
        text.and_then(|t| PluginManifest::parse(t).map_err(anyhow::Error::msg))
            .with_context(|| format!("{}", manifest_path.display()))?;
    }
    let signature = SignatureFile::sign(&key, &component, manifest.as_deref());
    let out = SignatureFile::path_for(&args.file);
    std::fs::write(&out, signature.to_toml())
        .with_context(|| format!("cannot write {}", out.display()))?;
    let covers = match &manifest {
        Some(_) => format!("and {}", manifest_path.display()),
        None => "(no manifest)".to_owned(),
    };
    println!(
        "signed {} {covers} with key {}; wrote {}",
        args.file.display(),
        signature.key_id,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut policy = match &args.config {
        Some(path) => {
            let config = SwitchyardConfig::load(Some(path))?;
            TrustPolicy::from_config(&TrustConfig {
                require_signatures: true,
                ..config.trust
            })
            .map_err(anyhow::Error::msg)?
        }
        None => TrustPolicy::new(true),
    };
    for path in &args.keys {
        let key = PublicKey::read(path)?;
        policy = policy
            .publisher(&publisher_name(path), key)
            .map_err(anyhow::Error::msg)?;
    }
    let component = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let beside = read_beside(&args.file)?;
    let label = args.file.display().to_string();
    let (manifest, signature) = (beside.manifest.as_deref(), beside.signature.as_deref());
    match policy.verify(&component, manifest, signature, &label) {
        Ok(Some(signer)) => {
            println!(
                "{label}: OK, signed by {} (key {})",
                signer.publisher, signer.key_id
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => unreachable!("a policy requiring signatures never passes one unverified"),
        Err(err) => {
            eprintln!("{err}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn publisher_name(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into(),
    )
}
