//! `switchyard key`: publisher signing keys.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard_runtime::signing::SecretKey;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeyCommand {
    /// Create an Ed25519 keypair: `<prefix>.key` (secret, mode 0600) and
    /// `<prefix>.pub` (public, for operators' [trust.publishers]).
    Generate(GenerateArgs),
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// Path prefix of the two files, e.g. `keys/acme`. Existing files are
    /// never overwritten.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let KeyCommand::Generate(args) = args.command;
    let with = |extension: &str| {
        let mut path = args.out.clone().into_os_string();
        path.push(extension);
        PathBuf::from(path)
    };
    let (secret_path, public_path) = (with(".key"), with(".pub"));
    for path in [&secret_path, &public_path] {
        if path.exists() {
            bail!(
                "{} already exists; refusing to overwrite a key (choose another --out)",
                path.display()
            );
        }
    }
    let key = SecretKey::generate()?;
    let public = key.public_key();
    key.write_new(&secret_path)?;
    std::fs::write(&public_path, format!("{}\n", public.to_text()))
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    println!("key id:  {}", public.key_id());
    println!("secret:  {} (keep it private)", secret_path.display());
    println!("public:  {}", public_path.display());
    Ok(ExitCode::SUCCESS)
}
