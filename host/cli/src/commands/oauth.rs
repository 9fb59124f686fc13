//! `switchyard oauth status | connect`: the OAuth grants of the configured
//! connections, read from the token store a server of the same config
//! uses (`<data_dir>/oauth.sqlite`, or the cluster's JetStream), so they
//! work with the server up or down. `connect` prints the authorization URL
//! and keeps the pending flow in that store: the running server's
//! `/oauth/callback` finishes it.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard_broker::oauth::GrantType;
use switchyard_host::SwitchyardConfig;
use switchyard_oauth::{GrantStatus, Status};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file. Default: ./switchyard.toml if present, else built-in defaults.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Every grant and where it stands (never a token). Exits 1 when one
    /// needs re-authorisation, 2 when a record could not be read.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start connecting an account (authorization code with PKCE): prints
    /// the URL to open in a browser; the running server's callback
    /// finishes it within ten minutes.
    Connect { connection: String, grant: String },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = SwitchyardConfig::load(args.config.as_deref())?;
    super::tokio()?.block_on(async {
        let oauth = switchyard_host::offline_manager(&config)
            .await
            .map_err(anyhow::Error::msg)
            .context("opening the OAuth grants")?;
        let Some(oauth) = oauth else {
            anyhow::bail!(
                "no connection has an OAuth grant: add [connections.NAME.grants.oauth.GRANT] to the config"
            );
        };
        match args.command {
            Command::Status { json } => {
                let grants = oauth.statuses().await;
                if json {
                    let out = serde_json::json!({
                        "redirect_url": oauth.redirect_url(),
                        "grants": grants,
                    });
                    println!("{}", serde_json::to_string_pretty(&out)?);
                } else {
                    print_table(&grants);
                }
                let unreadable = grants.iter().any(|g| g.error.is_some());
                let dead = grants
                    .iter()
                    .any(|g| g.status == Status::NeedsReauthorization);
                Ok(if unreadable {
                    ExitCode::from(2)
                } else if dead {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                })
            }
            Command::Connect { connection, grant } => {
                let url = oauth
                    .start_connect(&connection, &grant)
                    .await
                    .map_err(|e| match e {
                        switchyard_oauth::connect::ConnectError::UnknownGrant { .. } => {
                            let known: Vec<String> = config
                                .connections
                                .iter()
                                .flat_map(|(c, conn)| {
                                    (conn.grants.oauth.iter())
                                        .filter(|(_, g)| g.grant_type == GrantType::AuthorizationCode)
                                        .map(move |(g, _)| format!("{c} {g}"))
                                })
                                .collect();
                            anyhow::anyhow!(
                                "{e}; grants to connect (authorization_code) in the config: {}",
                                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                            )
                        }
                        e => anyhow::Error::new(e),
                    })?;
                eprintln!(
                    "Open this URL in a browser and consent; the provider sends the browser to {} \
                     on the running server, which stores the tokens (within ten minutes):",
                    oauth.redirect_url()
                );
                println!("{url}");
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

fn print_table(grants: &[GrantStatus]) {
    println!(
        "{:<20}  {:<12}  {:<18}  {:<22}  reason",
        "connection", "grant", "type", "status"
    );
    for g in grants {
        let kind = serde_json::to_value(g.grant_type)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let status = serde_json::to_value(g.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let why = match &g.error {
            Some(error) => format!("unreadable: {error}"),
            None => g.reason.clone().unwrap_or_default(),
        };
        println!(
            "{:<20}  {:<12}  {:<18}  {:<22}  {why}",
            g.connection, g.grant, kind, status
        );
    }
}
