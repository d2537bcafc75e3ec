//! The benchmark on the test bed: Strait against MirrorMaker 2 and the ceiling loop,
//! alternating, in one invocation (`scripts/bench.sh` runs it on fresh clusters).
//!
//! bench [--all|--backlog|--steady|--scale|--topics] [RECORDS] [RECORD_BYTES] [PARTITIONS] [RUNS]
//! (defaults: --all 1000000 1024 12 3); bench --pool BENCH_JSON...
//!
//! Preloads the primary (127.0.0.1:19092) once, then for each run copies it to the
//! secondary (127.0.0.1:29092) with each system in turn. Time is measured until the
//! target's end offsets hold every record; CPU seconds and peak RSS come from /proc for
//! the copying process only. Prints Markdown tables and medians, and writes a JSON record.
//!
//! Every knob is a flag (`bench --help`, `options.rs`): the systems measured (`--systems`, e.g.
//! `strait,strait-alt,ceiling` with `--alt 'STRAIT__TUNING__…=…'` or `--alt-bin PATH` for
//! an A/B of settings or builds), a profiler to run the copiers under (`--wrap`), the
//! brokers' CPU by thread (`--broker-threads`), a transactional backlog (`--txn N`, for
//! offset sync's cost), `strait verify` after each run (`--verify`), and the warm-up
//! (`--no-warm-up-copy`, `--warm-up-copies N`). `CEILING_CONSUMER_EXTRA='key=value;…'`
//! adds consumer settings to the ceiling loop.
//!
//! `bench --pool FILE...` pools the backlog copy's per-run ratios of several JSON files
//! (invocations of one build) into one table: median, 95 % interval of the median, and
//! the verdict against the goal, by runs and by invocations. It warns when the files come
//! from different kinds of machine, whose ratios differ.
//!
//! After each run with offset sync on, a consumer group commits the source's end offsets
//! and the time until its checkpoints appear on the secondary is the *checkpoint lag*; the
//! offset map topic's size is read then too.

mod backlog;
mod bed;
mod failover;
mod kafka_tools;
mod mm2;
mod options;
mod procfs;
mod report;
mod run;
mod scale;
mod stats;
mod steady;
mod topics;

use backlog::*;
use bed::*;
use options::options;
use procfs::*;
use report::*;
use run::*;
use scale::*;
use stats::*;
use steady::steady_state;

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

fn main() -> Result<()> {
    let o = options();
    if !o.pool.is_empty() {
        return pool(&o.pool);
    }
    let scenario = [
        (o.backlog, "--backlog"),
        (o.steady, "--steady"),
        (o.scale, "--scale"),
        (o.topics, "--topics"),
    ]
    .into_iter()
    .find_map(|(chosen, name)| chosen.then_some(name))
    .unwrap_or("--all");
    let numbers = &o.sizes;
    let records = *numbers.first().unwrap_or(&1_000_000);
    let size = *numbers.get(1).unwrap_or(&1024) as usize;
    let partitions = *numbers.get(2).unwrap_or(&12) as i32;
    let runs = *numbers.get(3).unwrap_or(&3);
    let bin_dir = std::env::current_exe()?
        .parent()
        .ok_or("no exe dir")?
        .to_path_buf();
    let load = steady::Load {
        rate: o.rate,
        seconds: o.seconds,
        size,
        partitions,
    };
    let mut json = serde_json::json!({
        "machine": machine(),
        "records": records, "record_bytes": size, "partitions": partitions, "runs": runs,
    });
    match scenario {
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
        other => return Err(format!("unknown scenario '{other}'").into()),
    }
    let path = o.json.clone().unwrap_or_else(|| {
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
