//! `strait`: cross-cluster replication for Apache Kafka.

mod config;
mod demo;
mod failback;
mod http;
mod login_failures;
mod migrate;
mod offsets;
mod progress;
mod telemetry;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use strait_offset_sync::{run_checkpoints, CheckpointSpec, CheckpointStatus};
use strait_replicator::{plan, run_flow, FlowStatus, TargetClaims, START_WAIT};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "strait",
    version,
    about = "Cross-cluster replication for Apache Kafka"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// A one-minute tour with nothing but Rust: two in-process Kafka clusters (librdkafka's
    /// mock), live replication, a staged migration of a consumer group with exact offset
    /// translation, verification, and a summary.
    Demo {
        /// Where the demo's daemon serves /status and /metrics.
        #[arg(long, default_value = "127.0.0.1:9644")]
        listen: std::net::SocketAddr,
    },
    /// Replicate every flow in the config until SIGINT or SIGTERM.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file, connect to its clusters, and print what each flow would copy.
    CheckConfig {
        config: PathBuf,
        /// Only validate the file; do not connect.
        #[arg(long)]
        offline: bool,
    },
    /// Consumer-group offsets on the target.
    #[command(subcommand)]
    Offsets(OffsetsCommand),
    /// Going back to the primary after a failover to the secondary.
    #[command(subcommand)]
    Failback(FailbackCommand),
    /// A staged migration driven by the config's [migration] section.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Compare each flow's copy with its source record by record (key, value, headers,
    /// timestamp, order), through the exact offset map. Exits non-zero on a difference.
    Verify {
        #[arg(long, short)]
        config: PathBuf,
        /// Only this flow (default: every flow with offset sync).
        #[arg(long)]
        flow: Option<String>,
        /// Only source topics matching this regex (whole name).
        #[arg(long)]
        topics: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
}

#[derive(Subcommand)]
enum OffsetsCommand {
    /// Translate a group's committed source offsets to the target, exactly, and with
    /// --apply write them to the same group on the target.
    Translate {
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        args: offsets::TranslateArgs,
    },
}

#[derive(Subcommand)]
enum FailbackCommand {
    /// What the primary holds that never reached the secondary: per partition, the
    /// offset ranges past the flow's copies, their record counts and when they were
    /// written. Reads both clusters and writes nothing.
    Plan {
        #[arg(long, short)]
        config: PathBuf,
        /// The flow from the primary to the secondary.
        #[arg(long)]
        flow: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Copy back to the primary, under its own topic names, only what the applications
    /// wrote on the secondary since the failover: a flow secondary → primary that starts
    /// after the secondary's copies of the primary's records. Runs until stopped, like
    /// `strait run`, and resumes where it stopped.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// The flow from the primary to the secondary.
        #[arg(long)]
        flow: String,
    },
    /// Translate a group's committed offsets on the secondary to the primary, exactly,
    /// and with --apply write them to the same group on the primary: inside the copies of
    /// the primary's records, to their originals; past them, with `failback run`'s map.
    Translate {
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        args: offsets::TranslateArgs,
    },
    /// Set the flow's position on the primary to right after `failback run`'s copies back,
    /// so that the next `strait run` copies only what is written on the primary from then
    /// on. Run it once `failback run` has copied everything back and is stopped.
    Finish {
        #[arg(long, short)]
        config: PathBuf,
        /// The flow from the primary to the secondary.
        #[arg(long)]
        flow: String,
    },
    /// Copy what `plan` lists into side topics on the secondary (`<prefix><topic>`, same
    /// partitions, each record with a header naming its primary offset). Safe to run
    /// again after an interruption: it copies on from where the side topics end.
    Keep {
        #[arg(long, short)]
        config: PathBuf,
        /// The flow from the primary to the secondary.
        #[arg(long)]
        flow: String,
        /// Side topics are named <prefix><primary topic> (default "<primary>.unshipped.").
        #[arg(long)]
        topic_prefix: Option<String>,
        /// Records per transaction: what an interrupted run loses, and the next run
        /// copies again.
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
        records_per_transaction: u64,
    },
}

#[derive(Subcommand)]
enum MigrateCommand {
    /// Replicate every flow and walk the migration's stages; exits when it is done.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Current stage, what it waits for, lag per topic, groups on both clusters, and
    /// the verification result.
    Status {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Approve the current stage's manual gate.
    Approve {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(value_enum)]
        stage: migrate::Stage,
    },
    /// Abort (until consumers move to the target): back to plain mirroring.
    Abort {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Daemons log what they do; one-shot commands print results and log only problems.
    let daemon = matches!(
        cli.command,
        Command::Run { .. }
            | Command::Migrate(MigrateCommand::Run { .. })
            | Command::Failback(FailbackCommand::Run { .. })
    );
    init_logging(cli.log_format, daemon);
    let result = match cli.command {
        Command::Demo { listen } => demo::run(listen),
        Command::Run { config } => run(config, false),
        Command::Migrate(MigrateCommand::Run { config }) => run(config, true),
        Command::Migrate(MigrateCommand::Status { config, output }) => {
            Config::load(&config).and_then(|c| migrate::status(&c, output))
        }
        Command::Migrate(MigrateCommand::Approve { config, stage }) => {
            Config::load(&config).and_then(|c| migrate::approve(&c, stage))
        }
        Command::Migrate(MigrateCommand::Abort { config }) => {
            Config::load(&config).and_then(|c| migrate::abort(&c))
        }
        Command::CheckConfig { config, offline } => check_config(config, offline),
        Command::Failback(FailbackCommand::Plan {
            config,
            flow,
            output,
        }) => Config::load(&config)
            .and_then(|config| failback::plan(&config, &failback::PlanArgs { flow, output })),
        Command::Failback(FailbackCommand::Run { config, flow }) => failback::run(&config, &flow),
        Command::Failback(FailbackCommand::Translate { config, args }) => {
            failback::translate(&config, &args)
        }
        Command::Failback(FailbackCommand::Finish { config, flow }) => {
            failback::finish(&config, &flow)
        }
        Command::Failback(FailbackCommand::Keep {
            config,
            flow,
            topic_prefix,
            records_per_transaction,
        }) => Config::load(&config).and_then(|config| {
            failback::keep(
                &config,
                &failback::KeepArgs {
                    flow,
                    topic_prefix,
                    records_per_transaction,
                },
            )
        }),
        Command::Verify {
            config,
            flow,
            topics,
            output,
        } => Config::load(&config).and_then(|config| {
            verify::run(
                &config,
                &verify::VerifyArgs {
                    flow,
                    topics,
                    output,
                },
            )
        }),
        Command::Offsets(OffsetsCommand::Translate { config, args }) => {
            Config::load(&config).and_then(|config| offsets::translate(&config, &args))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", login_failures::explain(error_text(&e)));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, like anyhow's `{:#}`, without the causes the
/// text already says. rdkafka's errors, and ours (`{context}: {source}`), put their cause
/// in their own message and also return it as `source()`, so `{:#}` printed the same
/// librdkafka error two or three times: "listing topics on 'primary': Meta data fetch
/// error: BrokerTransportFailure (…): Meta data fetch error: BrokerTransportFailure (…):
/// BrokerTransportFailure (…)".
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

fn init_logging(format: LogFormat, daemon: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if daemon {
            "info,librdkafka=warn,rdkafka=warn"
        } else {
            "warn,librdkafka=error,rdkafka=error"
        })
    });
    // Colours only on a terminal: escape codes in a log file or journald break grep.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let login_failures = login_failures::LoginFailures;
    match format {
        LogFormat::Text => builder.finish().with(login_failures).init(),
        LogFormat::Json => builder.json().finish().with(login_failures).init(),
    }
}

fn check_config(path: PathBuf, offline: bool) -> Result<()> {
    let config = Config::load(&path)?;
    let specs = config.flow_specs()?;
    println!(
        "{}: valid ({} clusters, {} flows)",
        path.display(),
        config.clusters.len(),
        specs.len()
    );
    if offline {
        return Ok(());
    }
    for spec in &specs {
        println!(
            "\nflow {}: {} → {}",
            spec.name, spec.source.name, spec.target.name
        );
        let topics = plan(spec).with_context(|| format!("flows.{}: connecting", spec.name))?;
        if topics.is_empty() {
            println!("  (no source topic matches yet)");
            continue;
        }
        let width = topics
            .iter()
            .map(|t| t.source_topic.len())
            .max()
            .unwrap_or(0);
        for t in topics {
            let target = match t.target_partitions {
                Some(n) => format!("{n} partitions"),
                None => "to be created".to_string(),
            };
            println!(
                "  {:width$}  {:>4} partitions  →  {}  ({target})",
                t.source_topic, t.source_partitions, t.target_topic
            );
        }
    }
    Ok(())
}

/// `strait run`, and with `migrating` `strait migrate run`: the same replication plus the
/// migration controller, which stops everything when the migration is done.
pub(crate) fn run(path: PathBuf, migrating: bool) -> Result<()> {
    let config = Config::load(&path)?;
    let controller = if migrating {
        config
            .migration
            .as_ref()
            .context("migrate run: the config has no [migration] section")?;
        Some(migrate::Controller::start(Config::load(&path)?)?)
    } else {
        None
    };
    run_flows(config, controller)
}

/// Replicates every flow of `config` (and walks the migration's stages, with a
/// `controller`) until a signal or a flow's failure, serving the HTTP endpoints.
pub(crate) fn run_flows(config: Config, controller: Option<migrate::Controller>) -> Result<()> {
    let specs = config.flow_specs()?;
    let mut checkpointers = config.checkpoint_specs()?;
    if let (Some(m), Some(_)) = (&config.migration, &controller) {
        // The migration writes the groups' offsets once, at its translate_offsets
        // stage; a periodic sync would write them before that.
        for c in checkpointers.iter_mut().filter(|c| c.flow == m.flow) {
            c.sync_group_offsets = false;
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let metrics = http::install_metrics()?;
        let shutdown = CancellationToken::new();
        let checkpoints: Vec<(CheckpointSpec, Arc<CheckpointStatus>)> = checkpointers
            .into_iter()
            .map(|c| (c, Arc::new(CheckpointStatus::default())))
            .collect();
        let observed = http::Observed {
            flows: specs
                .iter()
                .map(|s| http::ObservedFlow {
                    name: s.name.clone(),
                    source: s.source.name.clone(),
                    target: s.target.name.clone(),
                    status: Arc::new(FlowStatus::default()),
                    checkpoints: checkpoints
                        .iter()
                        .find(|(c, _)| c.flow == s.name)
                        .map(|(_, status)| status.clone()),
                })
                .collect(),
            migration: controller.as_ref().map(migrate::Controller::status),
        };
        let statuses: Vec<Arc<FlowStatus>> =
            observed.flows.iter().map(|f| f.status.clone()).collect();
        let server = http::serve(config.http.listen, metrics, observed, shutdown.clone()).await?;
        info!(listen = %config.http.listen, flows = specs.len(), "strait running");

        let claims = TargetClaims::default();
        let flow_statuses: std::collections::HashMap<String, Arc<FlowStatus>> = specs
            .iter()
            .zip(&statuses)
            .map(|(spec, status)| (spec.name.clone(), status.clone()))
            .collect();
        let mut flows = Vec::new();
        for (spec, status) in specs.into_iter().zip(statuses) {
            let (claims, cancel, name) = (claims.clone(), shutdown.clone(), spec.name.clone());
            let handle =
                tokio::task::spawn_blocking(move || run_flow(spec, claims, status, cancel));
            flows.push((name, handle));
        }
        let checkpoint_tasks: Vec<_> = checkpoints
            .into_iter()
            .map(|(spec, status)| {
                let cancel = shutdown.clone();
                let flow = flow_statuses.get(&spec.flow).cloned();
                tokio::task::spawn_blocking(move || {
                    // Its topic is created after the flow's offset map topic, which the
                    // flow's first assignment waits for (see FlowStatus::wait_started).
                    if let Some(flow) = flow {
                        flow.wait_started(START_WAIT);
                    }
                    run_checkpoints(spec, status, cancel)
                })
            })
            .collect();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let migration = controller.map(|c| {
            let shutdown = shutdown.clone();
            tokio::task::spawn_blocking(move || c.run(shutdown))
        });

        let mut failed = Vec::new();
        for (name, handle) in flows {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed.push(format!("flow '{name}': {e}")),
                Err(e) => failed.push(format!("flow '{name}' panicked: {e}")),
            }
        }
        shutdown.cancel();
        if let Some(task) = migration {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed.push(format!("migration: {}", error_text(&e))),
                Err(e) => failed.push(format!("migration panicked: {e}")),
            }
        }
        for task in checkpoint_tasks {
            let _ = task.await;
        }
        let _ = server.await;
        if failed.is_empty() {
            info!("all flows stopped; bye");
            Ok(())
        } else {
            for f in &failed {
                error!("{f}");
            }
            anyhow::bail!("{}", failed.join("; "))
        }
    })
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    #[cfg(unix)]
    let term = term.recv();
    #[cfg(not(unix))]
    let term = std::future::pending::<Option<()>>();
    tokio::select! {
        _ = ctrl_c => info!("SIGINT: draining in-flight records and committing"),
        _ = term => info!("SIGTERM: draining in-flight records and committing"),
        _ = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use anyhow::Context;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    use super::error_text;

    #[test]
    fn an_error_text_says_each_cause_once() {
        let kafka: Result<(), KafkaError> = Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::BrokerTransportFailure,
        ));
        let e = kafka
            .context("listing topics on 'primary'")
            .context("flows.dr: connecting")
            .expect_err("an error");
        assert_eq!(
            error_text(&e),
            "flows.dr: connecting: listing topics on 'primary': Meta data fetch error: \
             BrokerTransportFailure (Local: Broker transport failure)"
        );
    }
}
