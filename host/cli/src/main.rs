//! `switchyard`: serve connectors, call them once, inspect and build plugins.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Switchyard runs integration connectors as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every configured connection over HTTP.
    Serve(commands::serve::Args),
    /// Call one action once and print its JSON result.
    Call(commands::call::Args),
    /// Inspect and replay the dead-letter queue.
    Dlq(commands::dlq::Args),
    /// Show the audit trail: egress, secret uses and state writes.
    Audit(commands::audit::Args),
    /// OAuth grants: where each stands, and connecting accounts.
    Oauth(commands::oauth::Args),
    /// Work with plugin files.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Create publisher signing keys.
    Key(commands::key::Args),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Show a component's WIT version, exports, imports, size and sha256.
    Inspect(commands::inspect::Args),
    /// Build a connector (a Rust crate, a Python app.py or a JavaScript app.js folder) into a component.
    Build(commands::build::Args),
    /// Scaffold a connector: source, manifest, README and a test.
    New(commands::new::Args),
    /// Sign a component and its manifest with a publisher key.
    Sign(commands::sign::SignArgs),
    /// Check a component's signature against trusted publisher keys.
    Verify(commands::sign::VerifyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => commands::serve::run(args),
        Command::Call(args) => commands::call::run(args),
        Command::Dlq(args) => commands::dlq::run(args),
        Command::Audit(args) => commands::audit::run(args),
        Command::Oauth(args) => commands::oauth::run(args),
        Command::Plugin(PluginCommand::Inspect(args)) => commands::inspect::run(args),
        Command::Plugin(PluginCommand::Build(args)) => commands::build::run(args),
        Command::Plugin(PluginCommand::New(args)) => commands::new::run(args),
        Command::Plugin(PluginCommand::Sign(args)) => commands::sign::sign(args),
        Command::Plugin(PluginCommand::Verify(args)) => commands::sign::verify(args),
        Command::Key(args) => commands::key::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,cranelift=warn,wasmtime=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        // Every line carries the current span's fields (`span`: plugin,
        // version, connection, pattern and invocation inside an invocation)
        // and the span stack (`spans`).
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}
