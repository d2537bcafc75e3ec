//! Backlog-copy benchmark on the test bed: Strait versus the ceiling loop, alternating.
//!
//! bench [RECORDS] [RECORD_BYTES] [PARTITIONS] [RUNS]   (defaults 1000000 1024 12 3)
//!
//! (`bench --topics RECORDS RECORD_BYTES TOPICS RUNS` spreads the backlog over that many
//! single-partition topics instead and compares two Strait builds: see topics.rs.)
//!
//! Preloads the primary (127.0.0.1:19092) once, then for each run copies it to the
//! secondary (127.0.0.1:29092) with `strait run` and with `ceiling`, alternately. Time is
//! measured until the target's end offsets hold every record; CPU seconds and peak RSS
//! come from /proc for the copying process only. Prints a Markdown table and medians.
//!
//! For experiments:
//! - `STRAIT_BENCH_FLOW='provenance_header = false'` appends lines to Strait's flow section
//!   (`\n` for new lines, so a `[tuning]` section can follow);
//! - `STRAIT_BENCH_ONLY_STRAIT=1` skips the ceiling runs;
//! - `STRAIT_BENCH_NO_WARM_UP_COPY=1` skips the unmeasured copies before the first run,
//!   `STRAIT_BENCH_WARM_UP_COPIES=N` caps them (8);
//! - `STRAIT_BENCH_TRACE=1` prints progress twice a second and Strait's log
//!   (`STRAIT_BENCH_LOG=info` for more of it), and in the steady state scenario the
//!   moments copies took over 200 ms;
//! - `CEILING_CONSUMER_EXTRA='key=value;…'` adds consumer settings to the ceiling;
//! - `STRAIT_BENCH_SYSTEMS=strait,ceiling,ceiling-bare` also measures the loop without
//!   the source's headers, and `…,ceiling-batch` the loop taking records in batches as
//!   Strait does (see bench/src/bin/ceiling.rs);
//! - `STRAIT_BENCH_SYSTEMS=strait,strait-alt,ceiling` with
//!   `STRAIT_BENCH_ALT='STRAIT__TUNING__CONSUMER_QUEUE_KBYTES=8192;…'` measures Strait
//!   with other settings (environment overrides) beside the defaults, in the same runs;
//!   `STRAIT_BENCH_ALT_BIN=/path/to/strait` runs another build as `strait-alt` (A/B of a
//!   change); `STRAIT_BENCH_STEADY_SYSTEMS=strait,strait-alt` does the same in the steady
//!   state scenario (default `strait,mm2`).
//! - `STRAIT_BENCH_WRAP='valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p'` runs
//!   Strait and the ceiling loop under a profiler (instructions per record: run two record
//!   counts and divide the difference).
//! - `STRAIT_BENCH_BROKER_THREADS=1` prints, after each run, the brokers' CPU seconds
//!   during the copy by thread name without its digits (request handlers, JIT compilers,
//!   GC, ...).
//!
//! Offset sync (`scripts/bench.sh --offset-sync` sets these):
//! - `STRAIT_BENCH_SYSTEMS=strait,strait-nosync` alternates Strait with offset sync on and
//!   off (default `strait,ceiling`);
//! - `STRAIT_BENCH_TXN=N` preloads in transactions of N records, so every partition gets a
//!   commit marker (an offset gap the map must record) every N/PARTITIONS records.
//!
//! `bench --pool FILE...` pools the backlog copy's per-run ratios of several JSON files
//! (invocations of one build) and prints them as one table: median, 95 % interval of the
//! median, verdict against the goal. It warns when the files come from different kinds of
//! machine, whose ratios differ. Since the runs of one invocation rise and fall together,
//! it also prints each file's own median throughput ratio to the loop and judges those
//! medians as samples of their own (`By invocation`).
//!
//! Verification (`scripts/bench.sh --verify` sets `STRAIT_BENCH_VERIFY=1`): after each
//! Strait run, `strait verify` compares the whole copy with the source, and its rate in
//! MB/s is printed next to the replication rate of the same run.
//!
//! After each run with offset sync on, a consumer group commits the source's end offsets
//! and the time until its checkpoints appear on the secondary is the *checkpoint lag*; the
//! offset map topic's size is read then too.

mod bed;
mod failover;
mod kafka_tools;
mod mm2;
mod procfs;
mod report;
mod run;
mod scenarios;
mod stats;
mod steady;
mod topics;

use bed::*;
use procfs::*;
use report::*;
use run::*;
use scenarios::*;
use stats::*;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

const PRIMARY: &str = "127.0.0.1:19092";
const SECONDARY: &str = "127.0.0.1:29092";
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// Strait's default heartbeat topic for the benchmark's flow (`[flows.bench]`).
const HEARTBEAT_TOPIC: &str = "strait.heartbeats.bench";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Sample {
    run: u64,
    system: String,
    seconds: f64,
    /// From process start until the first record reached the target.
    startup: f64,
    cpu_seconds: f64,
    peak_rss_mb: f64,
    /// Both brokers' CPU seconds during the run (NaN when their pids are unknown): the
    /// brokers share the cores with the copier, so a copier that makes them work harder
    /// slows itself down.
    brokers_cpu_seconds: f64,
}

/// What offset sync cost on the secondary after one run.
struct SyncSample {
    map_records: i64,
    map_bytes: usize,
    map_keys: usize,
    checkpoint_lag: f64,
}

const USAGE: &str = "usage: bench [--all|--backlog|--steady|--scale] [RECORDS] [RECORD_BYTES] \
     [PARTITIONS] [RUNS] | bench --topics [RECORDS] [RECORD_BYTES] [TOPICS] [RUNS] | \
     bench --pool BENCH_JSON...";

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = if args.first().is_some_and(|a| a.starts_with("--")) {
        args.remove(0)
    } else {
        "--all".to_string()
    };
    if scenario == "--pool" {
        return pool(&args);
    }
    let numbers: Vec<u64> = args
        .iter()
        .map(|a| {
            a.parse()
                .map_err(|_| format!("'{a}' is not a number; {USAGE}"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let records = *numbers.first().unwrap_or(&1_000_000);
    let size = *numbers.get(1).unwrap_or(&1024) as usize;
    let partitions = *numbers.get(2).unwrap_or(&12) as i32;
    let runs = *numbers.get(3).unwrap_or(&3);
    let bin_dir = std::env::current_exe()?
        .parent()
        .ok_or("no exe dir")?
        .to_path_buf();
    let load = steady::Load {
        rate: env_number("STRAIT_BENCH_RATE", 20_000)?,
        seconds: env_number("STRAIT_BENCH_SECONDS", 60)?,
        size,
        partitions,
    };
    let mut json = serde_json::json!({
        "machine": machine(),
        "records": records, "record_bytes": size, "partitions": partitions, "runs": runs,
    });
    match scenario.as_str() {
        "--backlog" => {
            json["backlog"] = backlog(&bin_dir, records, size, partitions, runs, true)?;
        }
        "--steady" => json["steady"] = steady_state(&bin_dir, &load, runs)?,
        "--scale" => json["scale"] = scale(&bin_dir, records, size, runs, None)?,
        "--topics" => {
            json["topics"] = topics::many_topics(&bin_dir, records, size, partitions, runs)?;
        }
        "--all" => {
            let main = backlog(&bin_dir, records, size, partitions, runs, true)?;
            json["steady"] = steady_state(&bin_dir, &load, runs)?;
            json["scale"] = scale(&bin_dir, records, size, runs, Some((partitions, &main)))?;
            json["backlog"] = main;
        }
        other => return Err(format!("unknown scenario '{other}'; {USAGE}").into()),
    }
    let path = std::env::var("STRAIT_BENCH_JSON").unwrap_or_else(|_| {
        format!(
            "target/bench/bench-{}-{records}x{size}-{partitions}p-{}.json",
            scenario.trim_start_matches('-'),
            std::process::id()
        )
    });
    if let Some(dir) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("\nJSON: {path}");
    Ok(())
}

fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => Ok(v
            .parse()
            .map_err(|_| format!("{name}: '{v}' is not a number"))?),
        Err(_) => Ok(default),
    }
}
