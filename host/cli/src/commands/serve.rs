//! `switchyard serve`.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use switchyard_runtime::pipelines::Pipelines;
use switchyard_runtime::secrets::SecretGrant;
use switchyard_runtime::sync::Syncs;
use switchyard_runtime::{Runtime, SwitchyardConfig};

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
        let runtime = Runtime::from_config(&config).await?;
        let (pipelines, syncs) = start_pipelines(&runtime, &config)?;
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
            pipelines,
            syncs,
            admin_token,
            plugin_dir: Some(plugin_dir),
            ..switchyard_server::Services::new(runtime)
        });
        switchyard_server::serve(router, listener, shutdown_signal()).await?;
        tracing::info!("switchyard stopped");
        Ok(ExitCode::SUCCESS)
    })
}

type Started = (Option<Arc<Pipelines>>, Option<Arc<Syncs>>);

/// Builds the configured webhooks, pipelines and syncs and starts their
/// workers and schedules (they stop with the runtime).
fn start_pipelines(runtime: &Runtime, config: &SwitchyardConfig) -> anyhow::Result<Started> {
    if config.webhooks.is_empty() && config.pipelines.is_empty() && config.syncs.is_empty() {
        return Ok((None, None));
    }
    let pipelines = Arc::new(
        Pipelines::from_config(runtime.clone(), config)
            .map_err(|e| anyhow::anyhow!("pipelines: {e}"))?,
    );
    let syncs = Arc::new(
        Syncs::new(runtime.clone(), pipelines.queue().clone(), &config.syncs)
            .map_err(|e| anyhow::anyhow!("syncs: {e}"))?,
    );
    // Detached: the tasks end when the process does.
    drop(pipelines.start());
    drop(syncs.start());
    Ok((Some(pipelines), Some(syncs)))
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
