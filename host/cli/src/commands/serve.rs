//! `switchyard serve`.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard_broker::secrets::SecretGrant;
use switchyard_host::{Host, SwitchyardConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file. Default: ./switchyard.toml if present, else built-in defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen address, overriding `listen` in the config.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Plugin directory, overriding `plugin_dir` in the config.
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
}

/// Where the admin token comes from when the config names none.
pub const ADMIN_TOKEN_ENV: &str = "SWITCHYARD_ADMIN_TOKEN";

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = SwitchyardConfig::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.plugin_dir {
        // Absolute like the config's paths, so loaded plugins' paths match
        // what the watcher reports.
        config.plugin_dir = Some(std::path::absolute(dir)?);
    }
    super::tokio()?.block_on(async {
        let host = Host::from_config(&config).await?;
        host.start().await;
        let runtime = host.runtime.clone();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let names: Vec<String> = runtime
            .connections()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        if names.is_empty() {
            tracing::warn!(
                plugin_dir = %config.plugin_dir().display(),
                "no plugins loaded; put .wasm components in the plugin dir"
            );
        }
        tracing::info!(%addr, connections = ?names, "switchyard listening");
        eprintln!("switchyard listening on http://{addr}");
        // `[admin] token`, else the SWITCHYARD_ADMIN_TOKEN environment
        // variable, else no admin API.
        let admin_grant = config.admin.token.clone().or_else(|| {
            std::env::var_os(ADMIN_TOKEN_ENV).map(|_| SecretGrant {
                env: Some(ADMIN_TOKEN_ENV.into()),
                ..SecretGrant::default()
            })
        });
        let admin_token = match &admin_grant {
            Some(grant) => Some(
                runtime
                    .secret_provider()
                    .resolve("admin.token", grant)
                    .context("[admin] token")?,
            ),
            None => {
                tracing::warn!(
                    "no admin token: /admin/v1, the operator routes and the status page answer 403; set [admin] token or {ADMIN_TOKEN_ENV}"
                );
                None
            }
        };
        let plugin_dir = config.plugin_dir();
        let _watcher = if config.watch_plugin_dir {
            Some(switchyard_runtime::watch::watch_plugin_dir(
                runtime.clone(),
                &plugin_dir,
            )?)
        } else {
            None
        };
        let router = switchyard_server::app(switchyard_server::Services {
            admin_token,
            plugin_dir: Some(plugin_dir),
            ..switchyard_server::Services::from_host(&host)
        });
        switchyard_server::serve(router, listener, shutdown_signal()).await?;
        // A token refresh cut off between the server rotating the refresh
        // token and the store keeping it would cost the grant: let it land
        // (a token request takes 20 s at most).
        if let Some(oauth) = &host.oauth
            && !oauth.drain(std::time::Duration::from_secs(25)).await
        {
            tracing::warn!("a token refresh was still running at shutdown");
        }
        tracing::info!("switchyard stopped");
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
