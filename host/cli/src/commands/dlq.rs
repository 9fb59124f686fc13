//! `switchyard dlq list | show | replay`: the dead-letter queue, read from
//! `<data_dir>/queue.sqlite` directly, so it works with the server up or
//! down (SQLite's WAL lets both use the file at once), or from the
//! cluster's JetStream when `[cluster]` is configured. A running server
//! picks replayed messages up within half a second.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard_broker::secrets::EnvOrFile;
use switchyard_flows::queue::Queue;
use switchyard_flows::queue::dead_letter_view;
use switchyard_host::SwitchyardConfig;

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
    /// List dead letters, oldest first.
    List {
        /// Only this queue (`pipeline:NAME`, `hook:NAME`).
        #[arg(long)]
        queue: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with its message.
    Show { seq: i64 },
    /// Put dead letters back on their queue for a fresh round of attempts.
    Replay {
        /// The dead letter to replay.
        #[arg(required_unless_present = "all")]
        seq: Option<i64>,
        /// Replay every dead letter (of `--queue`, if given).
        #[arg(long, conflicts_with = "seq")]
        all: bool,
        #[arg(long, requires = "all")]
        queue: Option<String>,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = SwitchyardConfig::load(args.config.as_deref())?;
    let path = config.queue_path();
    anyhow::ensure!(
        config.cluster.is_some() || path.exists(),
        "no queue at {}: nothing has been queued yet (is data_dir right?)",
        path.display()
    );
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let (queue, _, _) = switchyard_host::queues(&config, &EnvOrFile)
            .await
            .with_context(|| format!("opening the queue ({})", path.display()))?;
        command(args.command, queue.as_ref()).await
    })
}

async fn command(command: Command, queue: &dyn Queue) -> anyhow::Result<ExitCode> {
    match command {
        Command::List { queue: name, json } => {
            let letters = queue.dead_letters(name.as_deref(), 10_000).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else if letters.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:>6}  {:<24}  {:<24}  {:>8}  reason / last error",
                    "seq", "queue", "id", "attempts"
                );
                for l in &letters {
                    println!(
                        "{:>6}  {:<24}  {:<24}  {:>8}  {} / {}",
                        l.seq, l.queue, l.id, l.attempts, l.reason, l.last_error
                    );
                }
            }
        }
        Command::Show { seq } => {
            let Some((letter, message)) = queue.dead_letter_message(seq).await? else {
                eprintln!("no dead letter {seq}");
                return Ok(ExitCode::from(2));
            };
            let shown = dead_letter_view(&letter, &message);
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        Command::Replay {
            seq, queue: name, ..
        } => {
            let replayed = queue.replay(name.as_deref(), seq).await?;
            if replayed == 0 && seq.is_some() {
                eprintln!("no dead letter {}", seq.unwrap_or_default());
                return Ok(ExitCode::from(2));
            }
            println!("replayed {replayed}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
