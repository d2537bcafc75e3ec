//! The benchmark's command line: the scenario, its sizes, and every knob as a flag.

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::{ArgGroup, Parser};

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Strait against MirrorMaker 2 and the ceiling loop on the test bed",
    group(ArgGroup::new("scenario").args(["all", "backlog", "steady", "scale", "topics", "pool"]))
)]
pub(super) struct Options {
    /// Every scenario below, in that order (the default).
    #[arg(long)]
    pub all: bool,
    /// The backlog copy, with failover exactness and Kafka's perf tools.
    #[arg(long)]
    pub backlog: bool,
    /// The steady state: `--rate` records/s for `--seconds`.
    #[arg(long)]
    pub steady: bool,
    /// The backlog copy at each of `--scale-partitions`.
    #[arg(long)]
    pub scale: bool,
    /// The backlog over TOPICS single-partition topics, Strait against `strait-alt`.
    #[arg(long)]
    pub topics: bool,
    /// Pools the per-run ratios of these JSON files (invocations of one build).
    #[arg(long, num_args = 1.., value_name = "BENCH_JSON")]
    pub pool: Vec<String>,
    /// RECORDS RECORD_BYTES PARTITIONS (TOPICS with --topics) RUNS.
    #[arg(value_name = "N", num_args = 0..=4)]
    pub sizes: Vec<u64>,

    /// The systems measured, comma-separated: strait, strait-alt, strait-nosync, mm2,
    /// ceiling, ceiling-bare, ceiling-batch.
    #[arg(long)]
    pub systems: Option<String>,
    /// The systems of the steady state (default strait,mm2).
    #[arg(long, default_value = "strait,mm2")]
    pub steady_systems: String,
    /// `strait-alt`'s environment overrides, `KEY=VALUE;…`.
    #[arg(long, default_value = "")]
    pub alt: String,
    /// `strait-alt`'s binary (another build), instead of this build's.
    #[arg(long)]
    pub alt_bin: Option<PathBuf>,
    /// Lines appended to Strait's flow section (`\n` for new lines).
    #[arg(long, default_value = "")]
    pub flow_extra: String,
    /// Strait's RUST_LOG.
    #[arg(long, default_value = "warn")]
    pub log: String,
    /// Progress twice a second, Strait's log on stderr, and the steady state's stalls.
    #[arg(long)]
    pub trace: bool,
    /// The brokers' CPU seconds by thread after each copy.
    #[arg(long)]
    pub broker_threads: bool,
    /// A program to run Strait and the loop under, e.g. a profiler.
    #[arg(long, default_value = "")]
    pub wrap: String,
    /// Preloads in transactions of this many records (commit markers in every partition).
    #[arg(long)]
    pub txn: Option<u64>,
    /// Times `strait verify` after each Strait run.
    #[arg(long)]
    pub verify: bool,
    /// Skips the unmeasured warm-up copies and round.
    #[arg(long)]
    pub no_warm_up_copy: bool,
    /// Caps the warm-up copies of the loop.
    #[arg(long, default_value_t = 8)]
    pub warm_up_copies: u32,
    /// Skips the ceiling loops.
    #[arg(long)]
    pub only_strait: bool,
    /// Skips Kafka's perf tools.
    #[arg(long)]
    pub no_tools: bool,
    /// The partition counts of `--scale`, comma-separated.
    #[arg(long, default_value = "1,12,120,1200")]
    pub scale_partitions: String,
    /// The steady state's records per second.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// The steady state's length in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Where the JSON record goes (default target/bench/…).
    #[arg(long)]
    pub json: Option<String>,
    /// Kafka's jars, for MirrorMaker 2 and the perf tools (`scripts/kafka.sh classpath`).
    #[arg(long)]
    pub kafka_classpath: Option<String>,
}

static OPTIONS: OnceLock<Options> = OnceLock::new();

/// The command line, parsed at the first call (at start, in `main`).
pub(super) fn options() -> &'static Options {
    OPTIONS.get_or_init(Options::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_exclude_each_other_and_sizes_are_positional() {
        let o = Options::try_parse_from(["bench", "--backlog", "1000", "100", "3", "2"])
            .expect("valid");
        assert!(o.backlog);
        assert_eq!(o.sizes, [1000, 100, 3, 2]);
        assert!(Options::try_parse_from(["bench", "--backlog", "--steady"]).is_err());
        assert!(Options::try_parse_from(["bench", "1", "2", "3", "4", "5"]).is_err());
        let pooled =
            Options::try_parse_from(["bench", "--pool", "a.json", "b.json"]).expect("valid");
        assert_eq!(pooled.pool, ["a.json", "b.json"]);
    }
}
