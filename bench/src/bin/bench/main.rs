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

mod failover;
mod kafka_tools;
mod mm2;
mod steady;
mod topics;

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

/// Scenario 1 (and 4): copies a preloaded backlog with each system in turn, `runs` times;
/// with `extras`, also the failover exactness of groups and Kafka's perf tools.
fn backlog(
    bin_dir: &std::path::Path,
    records: u64,
    size: usize,
    partitions: i32,
    runs: u64,
    extras: bool,
) -> Result<serde_json::Value> {
    println!(
        "\n## Backlog copy: {records} records of {size} B in {partitions} partitions, {runs} runs"
    );
    let bin_dir = bin_dir.to_path_buf();
    let stamp = format!("{}p{partitions}", std::process::id());
    let source = format!("bench-{stamp}");
    create_topic(PRIMARY, &source, partitions)?;
    eprintln!("preloading {records} records of {size} B into {source} ({partitions} partitions)");
    let txn = std::env::var("STRAIT_BENCH_TXN")
        .ok()
        .map(|n| n.parse::<u64>())
        .transpose()?;
    preload(&[&source], records, size, partitions, txn)?;
    warm_up(&source)?;
    warm_up_copy(&bin_dir, &source, partitions, records)?;
    // The failover arithmetic needs a source without offset gaps (see failover.rs), so
    // a transactional backlog (`--offset-sync`) skips it.
    let failover_points = if extras && txn.is_none() {
        Some(failover::stop_groups(&source, partitions)?)
    } else {
        None
    };
    let systems = systems_to_measure("strait,mm2,ceiling");

    let mut samples = Vec::new();
    let mut sync_samples = Vec::new();
    let mut verify_samples = Vec::new();
    let mut failover_samples = Vec::new();
    let mut tool_samples = Vec::new();
    let verify = std::env::var_os("STRAIT_BENCH_VERIFY").is_some();
    // One unmeasured round of every system first (see `warm_up_copy`), unless skipped.
    let unmeasured = u64::from(std::env::var_os("STRAIT_BENCH_NO_WARM_UP_COPY").is_none());
    for round in 0..unmeasured + runs {
        let warming = round < unmeasured;
        let run = round.saturating_sub(unmeasured);
        let label = if warming {
            "warm-up (not counted)".to_string()
        } else {
            format!("run {run}")
        };
        // Alternate which goes first, so none always meets a cold or a warm broker.
        let mut order = systems.clone();
        order.rotate_left(run as usize % systems.len());
        for system in order {
            let system = system.as_str();
            let alias = if warming {
                format!("{}w", system.replace('-', ""))
            } else {
                format!("{}{run}", system.replace('-', ""))
            };
            // MirrorMaker 2 runs with identity naming; the others write `<alias>.<topic>`.
            let target = if system == "mm2" {
                source.clone()
            } else {
                format!("{alias}.{source}")
            };
            if system.starts_with("ceiling")
                && std::env::var_os("STRAIT_BENCH_ONLY_STRAIT").is_some()
            {
                continue;
            }
            create_topic(SECONDARY, &target, partitions)?;
            // The client that reads the target's end offsets, answered once before the
            // system starts: a new client's first answer for a new topic can take half a
            // second, which would count as the system's time to the first record.
            let watcher = wait_for_leaders(SECONDARY, &target, partitions)?;
            let dir = std::env::temp_dir().join(format!("strait-bench-{stamp}-{alias}"));
            std::fs::create_dir_all(&dir)?;
            let child = match system {
                "strait" => spawn_strait(&bin_dir, &dir, &alias, &source, true, false)?,
                "strait-nosync" => spawn_strait(&bin_dir, &dir, &alias, &source, false, false)?,
                "strait-alt" => spawn_strait(&bin_dir, &dir, &alias, &source, true, true)?,
                "mm2" => mm2::spawn(&dir, &alias, &source)?,
                "ceiling" | "ceiling-bare" | "ceiling-batch" => {
                    let mut ceiling = wrapped(bin_dir.join("ceiling"));
                    if system == "ceiling-bare" {
                        ceiling.env("CEILING_DROP_HEADERS", "1");
                    }
                    if system == "ceiling-batch" {
                        ceiling.env("CEILING_BATCH", "1");
                    }
                    ceiling
                        .args([PRIMARY, SECONDARY, &source, &target])
                        .stdout(Stdio::null())
                        .stderr(Stdio::inherit())
                        .spawn()?
                }
                other => {
                    return Err(format!("unknown system '{other}' in STRAIT_BENCH_SYSTEMS").into())
                }
            };
            let (mut sample, child) = measure(
                system,
                child,
                &watcher,
                &[(target.clone(), partitions)],
                records as i64,
            )?;
            sample.run = run;
            if system == "strait" && systems.iter().any(|s| s == "strait-nosync") {
                let s = offset_sync_cost(&alias, &source, partitions)?;
                eprintln!(
                    "{label}  strait: offset map {} records / {} keys / {} B; checkpoint lag {:.2} s",
                    s.map_records, s.map_keys, s.map_bytes, s.checkpoint_lag
                );
                if !warming {
                    sync_samples.push(s);
                }
            }
            if let Some(points) = failover_points
                .as_ref()
                .filter(|_| system == "strait" || system == "mm2")
            {
                let outcomes = failover::outcomes(points, &target)?;
                eprintln!(
                    "{label} {system:>7}: failover of {} groups: {} records re-read, {} missed, {} partitions without an offset",
                    outcomes.len(),
                    outcomes.iter().map(|o| o.reread).sum::<i64>(),
                    outcomes.iter().map(|o| o.missed).sum::<i64>(),
                    outcomes.iter().map(|o| o.unsynced).sum::<usize>(),
                );
                failover::forget_on_target(points)?;
                if !warming {
                    failover_samples.push((system.to_string(), outcomes));
                }
            }
            stop(child)?;
            if system == "mm2" {
                mm2::clean_up(&alias)?;
            }
            if verify && system == "strait" {
                let seconds = time_verify(&bin_dir, &dir.join("strait.toml"), records)?;
                eprintln!(
                    "{label}  verify: {seconds:.2} s, {:.0} MB/s (replication {:.0} MB/s)",
                    mb(records, size) / seconds,
                    mb(records, size) / sample.seconds
                );
                if !warming {
                    verify_samples.push((sample.seconds, seconds));
                }
            }
            eprintln!(
                "{label} {system:>7}: {:.2} s ({:.2} s to the first record), {:.0} records/s, {:.1} CPU s, {:.0} MB peak RSS; brokers {:.1} CPU s",
                sample.seconds,
                sample.startup,
                records as f64 / sample.seconds,
                sample.cpu_seconds,
                sample.peak_rss_mb,
                sample.brokers_cpu_seconds
            );
            if !warming {
                samples.push(sample);
            }
            delete_topic(SECONDARY, &target)?;
            if system.starts_with("strait") {
                // Strait's own topics on the target (heartbeat copy, offset map,
                // checkpoints), so that no run starts from an earlier run's leftovers.
                let own = [
                    format!("{alias}.{HEARTBEAT_TOPIC}"),
                    format!("__strait.offsets.{source}.{alias}"),
                    format!("__strait.checkpoints.{source}.{alias}"),
                ];
                delete_topics_matching(SECONDARY, |t| own.iter().any(|o| o == t))?;
            }
            // The broker removes the files a second later (scripts/kafka.sh sets
            // log.segment.delete.delay.ms=1000); let that happen before the next run.
            std::thread::sleep(Duration::from_secs(5));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    if extras && std::env::var_os("STRAIT_BENCH_NO_TOOLS").is_none() {
        for run in 0..runs {
            let produce = kafka_tools::produce_rate(run, records, size, partitions)?;
            let consume = kafka_tools::consume_rate(&source, records)?;
            eprintln!("run {run} kafka perf tools: produce {produce:.0} MB/s (secondary), consume {consume:.0} MB/s (primary)");
            tool_samples.push((produce, consume));
        }
    }
    if let Some(points) = &failover_points {
        failover::forget_on_source(points)?;
    }
    delete_topic(PRIMARY, &source)?;
    delete_topics_matching(PRIMARY, |t| t == HEARTBEAT_TOPIC)?;
    let mut json = report(&samples, records, size);
    if extras && samples.iter().any(|s| s.system == "mm2") {
        print_mm2_settings();
        json["mm2_settings"] = mm2::SETTINGS
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
    }
    if !failover_samples.is_empty() {
        json["failover"] = report_failover(&failover_samples);
    }
    if !tool_samples.is_empty() {
        json["kafka_perf_tools"] = report_tools(&tool_samples, size);
    }
    if !verify_samples.is_empty() {
        report_verify(&verify_samples, records, size);
    }
    if !sync_samples.is_empty() {
        report_offset_sync(&samples, &sync_samples, records, partitions, txn);
    }
    Ok(json)
}

/// Scenario 3: the backlog copy at 1, 12, 120 and 1,200 partitions (the same records and
/// bytes each time); `done` is a partition count already measured by the caller.
fn scale(
    bin_dir: &std::path::Path,
    records: u64,
    size: usize,
    runs: u64,
    done: Option<(i32, &serde_json::Value)>,
) -> Result<serde_json::Value> {
    let counts: Vec<i32> = std::env::var("STRAIT_BENCH_SCALE")
        .unwrap_or_else(|_| "1,12,120,1200".into())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .map_err(|_| format!("STRAIT_BENCH_SCALE: '{c}' is not a number"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let mut results = Vec::new();
    for partitions in counts {
        let result = match done {
            Some((p, result)) if p == partitions => result.clone(),
            _ => backlog(bin_dir, records, size, partitions, runs, false)?,
        };
        results.push((partitions, result));
    }
    println!("\n## Scale in partitions: {records} records of {size} B (medians of {runs} runs)");
    println!("\n| partitions | system | median s | MB/s | CPU s/GB | peak RSS MB |\n|---|---|---|---|---|---|");
    let mut json = Vec::new();
    for (partitions, result) in &results {
        for system in result["systems"].as_array().into_iter().flatten() {
            println!(
                "| {partitions} | {} | {:.2} | {:.1} | {:.2} | {:.0} |",
                system["system"].as_str().unwrap_or_default(),
                system["median_seconds"].as_f64().unwrap_or(f64::NAN),
                system["mb_per_second"].as_f64().unwrap_or(f64::NAN),
                system["cpu_seconds_per_gb"].as_f64().unwrap_or(f64::NAN),
                system["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
            );
        }
        json.push(serde_json::json!({ "partitions": partitions, "result": result }));
    }
    Ok(serde_json::json!(json))
}

/// Scenario 2: Strait and MirrorMaker 2 under a bounded-rate producer, alternating.
fn steady_state(
    bin_dir: &std::path::Path,
    load: &steady::Load,
    runs: u64,
) -> Result<serde_json::Value> {
    println!(
        "\n## Steady state: {} records/s of {} B for {} s into {} partitions, {runs} runs",
        load.rate, load.size, load.seconds, load.partitions
    );
    // `STRAIT_BENCH_STEADY_SYSTEMS=strait,strait-alt` compares two builds or settings
    // (see `STRAIT_BENCH_ALT_BIN` and `STRAIT_BENCH_ALT`) under the same load.
    let systems: Vec<String> = std::env::var("STRAIT_BENCH_STEADY_SYSTEMS")
        .unwrap_or_else(|_| "strait,mm2".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    if let Some(other) = systems
        .iter()
        .find(|s| !["strait", "strait-alt", "mm2"].contains(&s.as_str()))
    {
        return Err(format!(
            "unknown system '{other}' in STRAIT_BENCH_STEADY_SYSTEMS (strait, strait-alt, mm2)"
        )
        .into());
    }
    let mut samples = Vec::new();
    for run in 0..runs {
        let mut order = systems.clone();
        order.rotate_left(run as usize % systems.len());
        for system in order.iter().map(String::as_str) {
            let alias = format!("steady{}{run}", system.replace('-', ""));
            let (source, target) = steady::topics(&alias, system == "mm2");
            steady::prepare(&source, &target, load.partitions)?;
            let dir =
                std::env::temp_dir().join(format!("strait-bench-{}-{alias}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let child = if system == "mm2" {
                mm2::spawn(&dir, &alias, &source)?
            } else {
                let alt = system == "strait-alt";
                spawn_strait(bin_dir, &dir, &alias, &source, true, alt)?
            };
            let measured = steady::measure(system, child.id(), &source, &target, load);
            stop(child)?;
            if system == "mm2" {
                mm2::clean_up(&alias)?;
            }
            steady::clean_up(&source, &target)?;
            let mut sample = measured?;
            sample.run = run;
            eprintln!(
                "run {run} {system:>7}: latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} records (load generator: p50 {:.0} ms to the primary); largest lag {} records; {:.1} CPU s, {:.0} MB peak RSS",
                sample.p50_ms, sample.p99_ms, sample.max_ms, sample.records, sample.generator_p50_ms, sample.max_lag_records, sample.cpu_seconds, sample.peak_rss_mb
            );
            samples.push(sample);
            std::thread::sleep(Duration::from_secs(3));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    println!("\n| system | runs | p50 ms | p99 ms | max ms | largest lag (records) | CPU s | peak RSS MB |\n|---|---|---|---|---|---|---|---|");
    let mut json = serde_json::Map::new();
    for system in systems.iter().map(String::as_str) {
        let of = |f: &dyn Fn(&steady::SteadySample) -> f64| {
            median(
                samples
                    .iter()
                    .filter(|s| s.system == system)
                    .map(f)
                    .collect(),
            )
        };
        let (p50, p99, max) = (of(&|s| s.p50_ms), of(&|s| s.p99_ms), of(&|s| s.max_ms));
        let (lag, cpu, rss) = (
            of(&|s| s.max_lag_records as f64),
            of(&|s| s.cpu_seconds),
            of(&|s| s.peak_rss_mb),
        );
        println!("| {system} | {runs} | {p50:.0} | {p99:.0} | {max:.0} | {lag:.0} | {cpu:.1} | {rss:.0} |");
        json.insert(
            system.to_string(),
            serde_json::json!({
                "p50_ms": p50, "p99_ms": p99, "max_ms": max, "largest_lag_records": lag,
                "cpu_seconds": cpu, "peak_rss_mb": rss,
            }),
        );
    }
    let p99_ratio = |a: &str, b: &str| {
        let ratios: Vec<f64> = (0..runs)
            .filter_map(|run| {
                let p99 = |system: &str| {
                    samples
                        .iter()
                        .find(|s| s.run == run && s.system == system)
                        .map(|s| s.p99_ms)
                };
                Some(p99(a)? / p99(b)?.max(1.0))
            })
            .collect();
        (!ratios.is_empty()).then(|| median(ratios))
    };
    if let Some(ratio) = p99_ratio("strait", "mm2") {
        println!("\np99 latency, Strait / MirrorMaker 2 (median of per-run ratios): {ratio:.2} (goal < 1)");
        json.insert("p99_ratio_strait_to_mm2".into(), serde_json::json!(ratio));
    }
    if let Some(ratio) = p99_ratio("strait-alt", "strait") {
        println!("\np99 latency, strait-alt / strait (median of per-run ratios): {ratio:.2}");
        json.insert("p99_ratio_alt_to_strait".into(), serde_json::json!(ratio));
    }
    Ok(serde_json::Value::Object(json))
}

/// Cores, memory and CPU model, for the report.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!(
        "{} cores, {mem_gib:.0} GiB, {cpu}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

fn mb(records: u64, size: usize) -> f64 {
    records as f64 * size as f64 / 1e6
}

/// Runs `strait verify` on a finished run's config; fails unless every record matched.
fn time_verify(bin_dir: &std::path::Path, config: &std::path::Path, records: u64) -> Result<f64> {
    let started = Instant::now();
    let out = Command::new(bin_dir.join("strait"))
        .args(["verify", "--output", "json", "--config"])
        .arg(config)
        .stderr(Stdio::inherit())
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "strait verify failed: {}",
            String::from_utf8_lossy(&out.stdout)
        )
        .into());
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let compared: u64 = report[0]["partitions"]
        .as_array()
        .ok_or("verify printed no partitions")?
        .iter()
        .filter_map(|p| p["records"].as_u64())
        .sum();
    if compared != records {
        return Err(format!("verify compared {compared} records, expected {records}").into());
    }
    Ok(seconds)
}

fn report_verify(samples: &[(f64, f64)], records: u64, size: usize) {
    println!("\n| run | replication MB/s | verify MB/s | verify / replication |");
    println!("|---|---|---|---|");
    for (i, (copy, verify)) in samples.iter().enumerate() {
        println!(
            "| {i} | {:.0} | {:.0} | {:.2} |",
            mb(records, size) / copy,
            mb(records, size) / verify,
            copy / verify
        );
    }
    let ratios: Vec<f64> = samples.iter().map(|(c, v)| c / v).collect();
    let verify: Vec<f64> = samples.iter().map(|(_, v)| mb(records, size) / v).collect();
    println!(
        "\nverify: median {:.0} MB/s; median verify/replication rate ratio {:.2} (goal: >= 1)",
        median(verify),
        median(ratios)
    );
}

/// `STRAIT_BENCH_ALT`: the environment overrides (`KEY=VALUE;…`) of the `strait-alt` system.
fn alt_settings() -> Result<Vec<(String, String)>> {
    let alt = std::env::var("STRAIT_BENCH_ALT").unwrap_or_default();
    alt.split(';')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
            None => Err(format!("STRAIT_BENCH_ALT: '{kv}' is not KEY=VALUE").into()),
        })
        .collect()
}

fn spawn_strait(
    bin_dir: &std::path::Path,
    dir: &std::path::Path,
    alias: &str,
    source: &str,
    offset_sync: bool,
    alt: bool,
) -> Result<Child> {
    // Each run gets its own map and checkpoint topics: runs replicate the same source
    // topic into different target topics, and one map must describe one target.
    let sync = if offset_sync {
        format!(
            "[flows.bench.offset_sync]\nmap_topic = \"__strait.offsets.{source}.{alias}\"\n\
             checkpoint_topic = \"__strait.checkpoints.{source}.{alias}\"\n\
             checkpoint_interval = \"1s\"\n\
             groups = [\"bench-app-.*\", \"bench-failover-.*\"]\nsync_group_offsets = true\n"
        )
    } else {
        "[flows.bench.offset_sync]\nenabled = false\n".to_string()
    };
    let config = dir.join("strait.toml");
    // The source cluster's alias names the target topic (`<alias>.<topic>`), so each run
    // writes a fresh topic.
    std::fs::write(
        &config,
        format!(
            r#"[http]
listen = "127.0.0.1:0"
[clusters.{alias}]
bootstrap_servers = "{PRIMARY}"
[clusters.secondary]
bootstrap_servers = "{SECONDARY}"
[flows.bench]
source = "{alias}"
target = "secondary"
topics = ["{source}"]
naming = "prefix"
group_id = "strait-bench-{alias}-{pid}"
{extra}
{sync}
"#,
            pid = std::process::id(),
            // Extra flow settings for experiments, e.g. STRAIT_BENCH_FLOW='provenance_header = false'.
            extra = std::env::var("STRAIT_BENCH_FLOW")
                .unwrap_or_default()
                .replace("\\n", "\n")
        ),
    )?;
    let log = std::fs::File::create(dir.join("strait.log"))?;
    // The `strait-alt` system: another build and/or other settings.
    let (binary, env) = if alt {
        let binary = std::env::var_os("STRAIT_BENCH_ALT_BIN")
            .map_or_else(|| bin_dir.join("strait"), Into::into);
        (binary, alt_settings()?)
    } else {
        (bin_dir.join("strait"), Vec::new())
    };
    Ok(wrapped(binary)
        .envs(env)
        .args(["run", "--config"])
        .arg(&config)
        .env(
            "RUST_LOG",
            std::env::var("STRAIT_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("STRAIT_BENCH_TRACE").is_some() {
            Stdio::inherit()
        } else {
            log.into()
        })
        .spawn()?)
}

/// Waits until `target` holds `records`, sampling the process's CPU and RSS meanwhile.
fn measure(
    system: &str,
    mut child: Child,
    watcher: &BaseConsumer,
    targets: &[(String, i32)],
    records: i64,
) -> Result<(Sample, Child)> {
    let started = Instant::now();
    let pid = child.id();
    let ticks = clock_ticks();
    let brokers_before = brokers_cpu_seconds(ticks);
    let by_thread = std::env::var_os("STRAIT_BENCH_BROKER_THREADS").map(|_| brokers_thread_ticks());
    let (mut cpu, mut rss) = (0.0, 0.0);
    let mut startup = None;
    // STRAIT_BENCH_TRACE=1 prints progress twice a second, to see stalls.
    let trace = std::env::var_os("STRAIT_BENCH_TRACE").is_some();
    let mut last_trace = Instant::now();
    loop {
        if let Some((c, r)) = proc_usage(pid, ticks) {
            cpu = c;
            rss = f64::max(rss, r);
        }
        let copied = end_offsets_sum(watcher, targets);
        if trace && last_trace.elapsed() >= Duration::from_millis(500) {
            eprintln!(
                "  {system} t={:.1}s copied={copied}",
                started.elapsed().as_secs_f64()
            );
            last_trace = Instant::now();
        }
        if copied > 0 && startup.is_none() {
            startup = Some(started.elapsed().as_secs_f64());
            if trace {
                // Wall-clock moments, to line up with the system's own log.
                eprintln!(
                    "  {system} spawned at {} s, first record seen at {} s (Unix time)",
                    unix_seconds(SystemTime::now() - started.elapsed()),
                    unix_seconds(SystemTime::now())
                );
            }
        }
        if copied >= records {
            break;
        }
        if let Some(status) = child.try_wait()? {
            // It may have finished since `copied` was read.
            let copied = end_offsets_sum(watcher, targets);
            if copied >= records {
                break;
            }
            {
                return Err(
                    format!("{system} exited ({status}) with {copied}/{records} copied").into(),
                );
            }
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            return Err(
                format!("{system} copied only {copied}/{records} in {RUN_TIMEOUT:?}").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seconds = started.elapsed().as_secs_f64();
    let brokers_cpu = brokers_cpu_seconds(ticks) - brokers_before;
    if let Some(before) = &by_thread {
        print_brokers_threads(system, before, ticks);
    }
    if let Some((c, r)) = proc_usage(pid, ticks) {
        cpu = c;
        rss = f64::max(rss, r);
    }
    Ok((
        Sample {
            run: 0,
            system: system.to_string(),
            seconds,
            startup: startup.unwrap_or(seconds),
            cpu_seconds: cpu,
            peak_rss_mb: rss,
            brokers_cpu_seconds: brokers_cpu,
        },
        child,
    ))
}

/// `STRAIT_BENCH_SYSTEMS` (comma-separated), or `default`.
fn systems_to_measure(default: &str) -> Vec<String> {
    std::env::var("STRAIT_BENCH_SYSTEMS")
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(str::to_string)
        .collect()
}

/// Every partition of `topics` (name, partitions), at its end: what the copy's progress
/// and the leaders' readiness are read from.
fn at_end(topics: &[(String, i32)]) -> rdkafka::error::KafkaResult<rdkafka::TopicPartitionList> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (topic, partitions) in topics {
        for p in 0..*partitions {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::End)?;
        }
    }
    Ok(tpl)
}

/// The sum of the end offsets of topics (name, partitions), in one request per broker
/// (1,200 requests one by one took seconds, which blurred the timing); partitions that
/// cannot be read count 0.
fn end_offsets_sum(watcher: &BaseConsumer, topics: &[(String, i32)]) -> i64 {
    let Ok(tpl) = at_end(topics) else {
        return 0;
    };
    watcher
        .offsets_for_times(tpl, Duration::from_secs(10))
        .map_or(0, |found| {
            found
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    rdkafka::Offset::Offset(o) if e.error().is_ok() => Some(o),
                    _ => None,
                })
                .sum()
        })
}

/// A command for Strait or the ceiling loop; `STRAIT_BENCH_WRAP='valgrind --tool=callgrind …'`
/// runs them under another program, to profile both the same way (the warm-up copies are
/// not wrapped). Such a run's times and CPU seconds measure that program too.
fn wrapped(binary: impl AsRef<std::ffi::OsStr>) -> Command {
    let wrap = std::env::var("STRAIT_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(binary);
            command
        }
        None => Command::new(binary),
    }
}

/// SIGTERM, then SIGKILL after a minute.
fn stop(mut child: Child) -> Result<()> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

/// With Strait still running after a copy: commits a group at the source's end offsets,
/// times how long until the secondary holds exact checkpoints for all of them, and reads
/// the offset map topic's size.
fn offset_sync_cost(alias: &str, source: &str, partitions: i32) -> Result<SyncSample> {
    let group = format!("bench-app-{alias}");
    let committer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", PRIMARY)
        .set("group.id", &group)
        .create()?;
    let mut ends = BTreeMap::new();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = committer.fetch_watermarks(source, p, Duration::from_secs(10))?;
        ends.insert(p, high);
        tpl.add_partition_offset(source, p, rdkafka::Offset::Offset(high))?;
    }
    // One long-lived reader of the checkpoint topic, so the lag measured is Strait's, not
    // a new client's start-up.
    let checkpoints = format!("__strait.checkpoints.{source}.{alias}");
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", SECONDARY)
        .set("group.id", "strait-bench-checkpoint-watcher")
        .set("fetch.wait.max.ms", "20")
        .create()?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment.add_partition_offset(&checkpoints, 0, rdkafka::Offset::Beginning)?;
    watcher.assign(&assignment)?;
    committer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)?;
    let committed_at = Instant::now();
    let mut exact = std::collections::BTreeSet::new();
    let checkpoint_lag = loop {
        use rdkafka::message::Message;
        if let Some(Ok(m)) = watcher.poll(Duration::from_millis(50)) {
            let c: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
            let partition = c["partition"].as_i64().unwrap_or(-1) as i32;
            if c["group"] == group.as_str()
                && c["target_offset"].is_i64()
                && ends
                    .get(&partition)
                    .is_some_and(|end| c["source_offset"] == *end)
            {
                exact.insert(partition);
            }
        }
        if exact.len() >= partitions as usize {
            break committed_at.elapsed().as_secs_f64();
        }
        if committed_at.elapsed() > Duration::from_secs(120) {
            return Err(format!("no exact checkpoints for {group} after 120 s").into());
        }
    };
    let map = read_topic(SECONDARY, &format!("__strait.offsets.{source}.{alias}"))?;
    let keys: std::collections::BTreeSet<&Vec<u8>> = map.iter().map(|(k, _)| k).collect();
    Ok(SyncSample {
        map_records: map.len() as i64,
        map_bytes: map.iter().map(|(k, v)| k.len() + v.len()).sum(),
        map_keys: keys.len(),
        checkpoint_lag,
    })
}

/// Every (key, value) of a single-partition topic.
fn read_topic(servers: &str, topic: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use rdkafka::message::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "strait-bench-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let (low, high) = match consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)) {
        Ok(w) => w,
        Err(_) => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    if high <= low {
        return Ok(out);
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                out.push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
                if m.offset() + 1 >= high {
                    return Ok(out);
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Err(format!("reading {topic} took over 60 s").into())
}

fn report_offset_sync(
    samples: &[Sample],
    sync: &[SyncSample],
    records: u64,
    partitions: i32,
    txn: Option<u64>,
) {
    let secs = |system: &str| {
        median(
            samples
                .iter()
                .filter(|s| s.system == system)
                .map(|s| s.seconds)
                .collect(),
        )
    };
    let (on, off) = (secs("strait"), secs("strait-nosync"));
    let gaps = txn.map_or(0, |n| records / n) * partitions as u64;
    println!(
        "\nOffset sync: {records} records, {} source offset gaps (commit markers); median {on:.2} s \
         with offset sync, {off:.2} s without: throughput cost {:.1}%",
        gaps,
        100.0 * (on - off) / off
    );
    println!(
        "Offset map topic after a run (median): {:.0} records, {:.0} distinct keys, {:.0} KB; \
         checkpoint lag (group commit → exact checkpoint on the secondary) median {:.2} s",
        median(sync.iter().map(|s| s.map_records as f64).collect()),
        median(sync.iter().map(|s| s.map_keys as f64).collect()),
        median(sync.iter().map(|s| s.map_bytes as f64 / 1e3).collect()),
        median(sync.iter().map(|s| s.checkpoint_lag).collect()),
    );
}

/// (user+system CPU seconds, peak RSS in MB) of a live process, from /proc.
fn proc_usage(pid: u32, clock_ticks: f64) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = stat_ticks(&stat)? as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks / clock_ticks, hwm_kb / 1024.0))
}

/// CPU ticks (user + system) from a `/proc/.../stat` line.
fn stat_ticks(stat: &str) -> Option<u64> {
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The two test brokers' pids (None if unknown), from the files `scripts/kafka.sh` writes
/// (`$STRAIT_TESTBED_DIR`, else `.testbed` in the working directory).
fn broker_pids() -> [(&'static str, Option<u32>); 2] {
    let dir = std::env::var_os("STRAIT_TESTBED_DIR")
        .map_or_else(|| std::path::PathBuf::from(".testbed"), Into::into);
    ["primary", "secondary"].map(|name| {
        let pid = std::fs::read_to_string(dir.join(name).join("pid"))
            .ok()
            .and_then(|pid| pid.trim().parse().ok());
        (name, pid)
    })
}

/// The two test brokers' CPU seconds so far; NaN if unknown.
fn brokers_cpu_seconds(clock_ticks: f64) -> f64 {
    broker_pids()
        .iter()
        .map(|(_, pid)| {
            pid.and_then(|pid| proc_usage(pid, clock_ticks))
                .map_or(f64::NAN, |(cpu, _)| cpu)
        })
        .sum()
}

/// The brokers' CPU ticks so far by thread kind: the thread's name without its digits,
/// as Linux keeps it (15 characters: `data-plane-kafk` are Kafka's network and request
/// handler threads, `C CompilerThre` the JVM's JIT compilers).
fn brokers_thread_ticks() -> BTreeMap<(&'static str, String), i64> {
    let mut ticks = BTreeMap::new();
    for (broker, pid) in broker_pids() {
        let Some(Ok(threads)) = pid.map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")))
        else {
            continue;
        };
        for thread in threads.flatten() {
            let Ok(stat) = std::fs::read_to_string(thread.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close), Some(used)) =
                (stat.find('('), stat.rfind(')'), stat_ticks(&stat))
            else {
                continue;
            };
            let kind: String = stat[open + 1..close]
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .collect();
            *ticks.entry((broker, kind)).or_default() += used as i64;
        }
    }
    ticks
}

/// With `STRAIT_BENCH_BROKER_THREADS=1`: the brokers' CPU seconds during one run by
/// thread kind, busiest first (threads that ended during the run are not counted).
fn print_brokers_threads(
    system: &str,
    before: &BTreeMap<(&'static str, String), i64>,
    clock_ticks: f64,
) {
    let mut used: Vec<_> = brokers_thread_ticks()
        .into_iter()
        .map(|(kind, after)| {
            let spent = after - before.get(&kind).copied().unwrap_or(0);
            (kind, spent)
        })
        .filter(|(_, spent)| *spent > 0)
        .collect();
    used.sort_by_key(|(_, spent)| -spent);
    let listed: Vec<String> = used
        .iter()
        .map(|((broker, kind), spent)| {
            format!("{broker} '{kind}' {:.2}", *spent as f64 / clock_ticks)
        })
        .collect();
    eprintln!(
        "  {system}: brokers' CPU s by thread: {}",
        listed.join(", ")
    );
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The middle value, or the mean of the two middle values of an even count (JSON files
/// recorded before 2026-12-03 hold the upper of the two).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 0 {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

/// Median of one figure over the runs of one system; None if it never ran.
fn median_of(samples: &[Sample], system: &str, f: impl Fn(&Sample) -> f64) -> Option<f64> {
    let v: Vec<f64> = samples
        .iter()
        .filter(|s| s.system == system)
        .map(f)
        .collect();
    (!v.is_empty()).then(|| median(v))
}

/// `a`'s figure divided by `b`'s in the same run, for every run that measured both; the
/// median is the headline, the spread says whether one invocation's median can be trusted
/// (on the test VM single runs have spread by more than a goal's margin).
struct RunRatios(Vec<f64>);

impl RunRatios {
    fn of(samples: &[Sample], a: &str, b: &str, f: impl Fn(&Sample) -> f64) -> Option<Self> {
        let of = |system: &str, run: u64| {
            samples
                .iter()
                .find(|s| s.system == system && s.run == run)
                .map(&f)
        };
        let mut ratios: Vec<f64> = samples
            .iter()
            .filter(|s| s.system == a)
            .filter_map(|s| Some(of(a, s.run)? / of(b, s.run)?))
            .collect();
        ratios.sort_by(f64::total_cmp);
        (!ratios.is_empty()).then_some(Self(ratios))
    }

    fn median(&self) -> f64 {
        median(self.0.clone())
    }

    /// "min-max of N runs"
    fn range(&self) -> String {
        let (min, max) = (self.0[0], self.0[self.0.len() - 1]);
        format!("{min:.2}-{max:.2} of {}", self.0.len())
    }

    /// A 95 % confidence interval for the median, from the runs' order alone (no
    /// assumption about how the ratios are distributed): the k-th lowest and the k-th
    /// highest ratio, with k the largest for which the true median falls below the one
    /// or above the other with at most 2.5 % chance each (the number of runs below the
    /// median is Binomial(n, 1/2)). None below 6 runs, where even the lowest and the
    /// highest cover less than 95 %.
    fn median_interval(&self) -> Option<(f64, f64)> {
        let n = self.0.len();
        let (mut below, mut p_exactly, mut k) = (0.0, 0.5f64.powi(n as i32), 0);
        for j in 0..n {
            below += p_exactly; // P(at most j runs below the median)
            if below > 0.025 {
                break;
            }
            k = j + 1;
            p_exactly *= (n - j) as f64 / (j + 1) as f64;
        }
        (k >= 1).then(|| (self.0[k - 1], self.0[n - k]))
    }

    /// Whether the goal is met: decided only when the whole 95 % interval of the median is
    /// on one side of it, so that one lucky or unlucky invocation does not settle it.
    fn verdict(&self, goal: Goal) -> &'static str {
        let (met, missed) = match (goal, self.median_interval()) {
            (Goal::None, _) => return "-",
            (_, None) => return "undecided (fewer than 6 runs)",
            (Goal::AtLeast(bound), Some((low, high))) => (low >= bound, high < bound),
            (Goal::AtMost(bound), Some((low, high))) => (high <= bound, low > bound),
        };
        match (met, missed) {
            (true, _) => "met",
            (_, true) => "not met",
            _ => "undecided",
        }
    }
}

/// What a ratio should be.
#[derive(Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
    None,
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Goal::AtLeast(bound) => write!(f, ">= {bound}"),
            Goal::AtMost(bound) => write!(f, "<= {bound}"),
            Goal::None => f.write_str("-"),
        }
    }
}

/// `a`'s throughput over `b`'s, run by run.
fn throughput_ratios(samples: &[Sample], a: &str, b: &str) -> Option<RunRatios> {
    RunRatios::of(samples, a, b, |s| 1.0 / s.seconds)
}

/// The ratios the backlog copy reports, each with its goal.
fn ratio_goals(samples: &[Sample]) -> [(&'static str, Option<RunRatios>, Goal); 11] {
    // Each run's systems ran back to back under the same conditions; the brokers drift over
    // an invocation (background deletion of earlier runs' topics), so per-run ratios are the
    // fairest comparison.
    let throughput = |a, b| throughput_ratios(samples, a, b);
    let cpu = |a, b| RunRatios::of(samples, a, b, |s| s.cpu_seconds);
    let rss = |a, b| RunRatios::of(samples, a, b, |s| s.peak_rss_mb);
    [
        (
            "throughput, Strait / MirrorMaker 2",
            throughput("strait", "mm2"),
            Goal::AtLeast(2.0),
        ),
        (
            "throughput, Strait / ceiling",
            throughput("strait", "ceiling"),
            Goal::AtLeast(THROUGHPUT_GOAL),
        ),
        (
            "throughput, Strait / bare loop (drops headers)",
            throughput("strait", "ceiling-bare"),
            Goal::None,
        ),
        (
            "throughput, Strait / batch loop (consumes in batches, as Strait)",
            throughput("strait", "ceiling-batch"),
            Goal::None,
        ),
        (
            "CPU s per GB, Strait / MirrorMaker 2",
            cpu("strait", "mm2"),
            Goal::AtMost(0.5),
        ),
        (
            "CPU s per GB, Strait / ceiling",
            cpu("strait", "ceiling"),
            Goal::None,
        ),
        (
            "peak RSS, Strait / MirrorMaker 2",
            rss("strait", "mm2"),
            Goal::AtMost(0.1),
        ),
        (
            "throughput, Strait with STRAIT_BENCH_ALT / ceiling",
            throughput("strait-alt", "ceiling"),
            Goal::None,
        ),
        (
            "throughput, Strait with STRAIT_BENCH_ALT / Strait",
            throughput("strait-alt", "strait"),
            Goal::None,
        ),
        (
            "peak RSS, Strait with STRAIT_BENCH_ALT / Strait",
            rss("strait-alt", "strait"),
            Goal::None,
        ),
        (
            "throughput with / without offset sync",
            throughput("strait", "strait-nosync"),
            Goal::AtLeast(0.95),
        ),
    ]
}

/// Prints the table of ratios (median, spread, 95 % interval of the median and whether
/// the goal is met) and returns its JSON: `ratios`, `per_run_ratios`, `median_intervals`.
fn print_ratios<N: AsRef<str>>(
    ratios: impl IntoIterator<Item = (N, Option<RunRatios>, Goal)>,
) -> serde_json::Map<String, serde_json::Value> {
    let (mut medians, mut per_run, mut intervals) = (
        serde_json::Map::new(),
        serde_json::Map::new(),
        serde_json::Map::new(),
    );
    let mut printed_header = false;
    for (name, ratio, goal) in ratios {
        let name = name.as_ref();
        let Some(ratio) = ratio else { continue };
        if !printed_header {
            println!(
                "\n| ratio (median of per-run ratios) | value | per run (lowest-highest) | \
                 95 % interval of the median | goal | verdict |\n|---|---|---|---|---|---|"
            );
            printed_header = true;
        }
        let median = ratio.median();
        let interval = ratio.median_interval();
        println!(
            "| {name} | {median:.2} | {} | {} | {goal} | {} |",
            ratio.range(),
            interval.map_or("-".to_string(), |(low, high)| format!("{low:.2}-{high:.2}")),
            ratio.verdict(goal)
        );
        medians.insert(name.to_string(), serde_json::json!(median));
        per_run.insert(name.to_string(), serde_json::json!(ratio.0));
        intervals.insert(
            name.to_string(),
            serde_json::json!(interval.map(|(l, h)| [l, h])),
        );
    }
    let mut json = serde_json::Map::new();
    json.insert("ratios".into(), medians.into());
    json.insert("per_run_ratios".into(), per_run.into());
    json.insert("median_intervals".into(), intervals.into());
    json
}

/// `bench --pool FILE...`: pools the backlog copies of several bench JSON files
/// (invocations of the same build, e.g. on different days) and prints the ratios of their
/// runs as one table: median, 95 % interval and verdict. Each ratio still pairs systems
/// of the same run.
fn pool(files: &[String]) -> Result<()> {
    if files.is_empty() {
        return Err(USAGE.into());
    }
    let mut samples = Vec::new();
    let mut machines = std::collections::BTreeSet::new();
    let mut invocation_medians = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let first_of_file = samples.len();
        let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
        let runs = json["backlog"]["runs"]
            .as_array()
            .ok_or_else(|| format!("{file}: no backlog.runs (not a backlog bench JSON)"))?;
        for (i, run) in runs.iter().enumerate() {
            let number = |key: &str| {
                run[key]
                    .as_f64()
                    .ok_or_else(|| format!("{file}: backlog.runs[{i}].{key} is not a number"))
            };
            samples.push(Sample {
                // Runs of different files must not pair up.
                run: index as u64 * 1_000_000 + number("run")? as u64,
                system: run["system"]
                    .as_str()
                    .ok_or_else(|| format!("{file}: backlog.runs[{i}].system is not a string"))?
                    .to_string(),
                seconds: number("seconds")?,
                startup: number("seconds_to_first_record")?,
                cpu_seconds: number("cpu_seconds")?,
                peak_rss_mb: number("peak_rss_mb")?,
                brokers_cpu_seconds: number("brokers_cpu_seconds").unwrap_or(f64::NAN),
            });
        }
        let machine = json["machine"].as_str().unwrap_or("machine not recorded");
        let own_median = throughput_ratios(&samples[first_of_file..], "strait", "ceiling")
            .map(|own| own.median());
        println!(
            "{file}: {} measured copies, {machine}{}",
            runs.len(),
            own_median.map_or(String::new(), |m| format!(
                "; throughput Strait / ceiling {m:.2}"
            ))
        );
        invocation_medians.extend(own_median);
        machines.insert(machine.to_string());
    }
    if let Some(warning) = mixed_machines_warning(&machines) {
        println!("\n{warning}");
    }
    if let Some(summary) = by_invocation(&invocation_medians, THROUGHPUT_GOAL) {
        println!("\n{summary}");
    }
    print_ratios(ratio_goals(&samples));
    Ok(())
}

/// The goal for Strait's throughput against the ceiling loop.
const THROUGHPUT_GOAL: f64 = 0.9;

/// The pooled interval treats every run as independent, but the runs of one invocation
/// are not: a whole invocation is faster or slower with the VM and its brokers. So the
/// invocations' own medians are judged too, each counted once, with the same interval
/// and verdict as runs (which needs 6 invocations or more).
fn by_invocation(medians: &[f64], goal: f64) -> Option<String> {
    if medians.len() < 2 {
        return None;
    }
    let mut sorted = medians.to_vec();
    sorted.sort_by(f64::total_cmp);
    let list: Vec<String> = sorted.iter().map(|m| format!("{m:.2}")).collect();
    let at_goal = sorted.iter().filter(|&&m| m >= goal).count();
    let invocations = RunRatios(sorted);
    let judged = match invocations.median_interval() {
        Some((low, high)) => format!(
            "95 % interval {low:.2}-{high:.2}, {}",
            invocations.verdict(Goal::AtLeast(goal))
        ),
        None => "undecided (fewer than 6 invocations)".to_string(),
    };
    Some(format!(
        "By invocation, throughput Strait / ceiling: medians {} (lowest to highest), {at_goal} \
         of {} at or above {goal}; their median {:.2}, {judged}",
        list.join(", "),
        invocations.0.len(),
        invocations.median(),
    ))
}

/// The test VMs come in more than one kind, and the ratio to the loop differs by kind
/// (0.94x on Intel Xeon against 0.89x on AMD EPYC over 2026-12-04/05), so a pool across
/// kinds answers for neither.
fn mixed_machines_warning(machines: &std::collections::BTreeSet<String>) -> Option<String> {
    (machines.len() > 1).then(|| {
        let list: Vec<&str> = machines.iter().map(String::as_str).collect();
        format!(
            "Warning: these files come from {} kinds of machine ({}); ratios differ by \
             machine, so pool one kind at a time.",
            machines.len(),
            list.join("; ")
        )
    })
}

fn report(samples: &[Sample], records: u64, size: usize) -> serde_json::Value {
    let mb = records as f64 * size as f64 / 1e6;
    println!(
        "\n| system | runs | median s | records/s | MB/s | records/s after the first record | \
         s to the first record | CPU s | CPU s/GB | peak RSS MB | brokers' CPU s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut systems = Vec::new();
    for system in [
        "strait",
        "strait-nosync",
        "strait-alt",
        "mm2",
        "ceiling",
        "ceiling-bare",
        "ceiling-batch",
    ] {
        let Some(secs) = median_of(samples, system, |s| s.seconds) else {
            continue;
        };
        let runs = samples.iter().filter(|s| s.system == system).count();
        let of = |f: &dyn Fn(&Sample) -> f64| median_of(samples, system, f).unwrap_or(f64::NAN);
        let cpu = of(&|s| s.cpu_seconds);
        let rss = of(&|s| s.peak_rss_mb);
        let brokers_cpu = of(&|s| s.brokers_cpu_seconds);
        let startup = of(&|s| s.startup);
        // The copy rate once records flow. Start-up (group join, a JVM's warm-up) is noisy
        // and, on a backlog that copies in a few seconds, a large share of the total.
        let copy_rate = of(&|s| records as f64 / (s.seconds - s.startup).max(1e-3));
        println!(
            "| {system} | {runs} | {secs:.2} | {:.0} | {:.1} | {copy_rate:.0} | {startup:.2} | {cpu:.1} | {:.2} | {rss:.0} | {brokers_cpu:.1} |",
            records as f64 / secs,
            mb / secs,
            cpu / (mb / 1000.0)
        );
        systems.push(serde_json::json!({
            "system": system, "runs": runs, "median_seconds": secs, "records_per_second": records as f64 / secs,
            "mb_per_second": mb / secs, "records_per_second_after_first": copy_rate,
            "seconds_to_first_record": startup, "cpu_seconds": cpu,
            "cpu_seconds_per_gb": cpu / (mb / 1000.0), "peak_rss_mb": rss,
            "brokers_cpu_seconds": brokers_cpu,
        }));
    }
    let ratios = print_ratios(ratio_goals(samples));
    if let Some(cpu) = median_of(samples, "strait", |s| s.cpu_seconds) {
        println!(
            "\nStrait: {:.2} CPU s per GB (goal <= 2); peak RSS {:.0} MB (median)",
            cpu / (mb / 1000.0),
            median_of(samples, "strait", |s| s.peak_rss_mb).unwrap_or(f64::NAN)
        );
    }
    let mut json = serde_json::json!({
        "systems": systems,
        "runs": samples.iter().map(|s| serde_json::json!({
            "run": s.run, "system": s.system, "seconds": s.seconds,
            "seconds_to_first_record": s.startup, "cpu_seconds": s.cpu_seconds,
            "peak_rss_mb": s.peak_rss_mb, "brokers_cpu_seconds": s.brokers_cpu_seconds,
        })).collect::<Vec<_>>(),
    });
    json.as_object_mut().expect("an object").extend(ratios);
    json
}

fn report_failover(samples: &[(String, Vec<failover::GroupOutcome>)]) -> serde_json::Value {
    println!(
        "\nFailover exactness: {} groups stopped at fixed random points on the primary (group 0 \
         caught up), offsets read on the secondary once the copy was complete and they had settled.",
        failover::GROUPS
    );
    println!("\n| system | run | records re-read | records missed | partitions without an offset | worst group (re-read / missed) |");
    println!("|---|---|---|---|---|---|");
    let mut runs = Vec::new();
    let mut counts: BTreeMap<&str, usize> = Default::default();
    for (system, outcomes) in samples {
        let run = counts.entry(system).or_default();
        let worst = outcomes
            .iter()
            .filter(|o| o.reread + o.missed > 0)
            .max_by_key(|o| o.reread + o.missed)
            .map_or_else(
                || "none".to_string(),
                |o| format!("{} ({} / {})", o.group, o.reread, o.missed),
            );
        let reread: i64 = outcomes.iter().map(|o| o.reread).sum();
        let missed: i64 = outcomes.iter().map(|o| o.missed).sum();
        let unsynced: usize = outcomes.iter().map(|o| o.unsynced).sum();
        println!("| {system} | {run} | {reread} | {missed} | {unsynced} | {worst} |");
        runs.push(serde_json::json!({
            "system": system, "run": *run, "reread": reread, "missed": missed,
            "partitions_without_offset": unsynced,
            "groups": outcomes.iter().map(|o| serde_json::json!({
                "group": o.group, "reread": o.reread, "missed": o.missed, "partitions_without_offset": o.unsynced,
            })).collect::<Vec<_>>(),
        }));
        *run += 1;
    }
    serde_json::json!(runs)
}

fn report_tools(samples: &[(f64, f64)], size: usize) -> serde_json::Value {
    let produce = median(samples.iter().map(|s| s.0).collect());
    let consume = median(samples.iter().map(|s| s.1).collect());
    println!(
        "\nKafka's perf tools (median of {} runs): ProducerPerformance to the secondary {produce:.0} MB/s \
         ({:.0} records/s; {}), ConsumerPerformance from the primary {consume:.0} MB/s (from the first fetch)",
        samples.len(),
        produce * 1e6 / size as f64,
        kafka_tools::PRODUCER_PROPS.join(" ")
    );
    serde_json::json!({ "produce_mb_per_second": produce, "consume_mb_per_second": consume })
}

fn print_mm2_settings() {
    println!(
        "\nMirrorMaker 2 (dedicated mode, `java {}`), settings other than its defaults:",
        mm2::HEAP.join(" ")
    );
    for (key, value) in mm2::SETTINGS {
        println!("- `{key} = {value}`");
    }
}

/// A fresh cluster does some work once: it creates `__consumer_offsets` for the first
/// consumer group and allocates producer ids for the first idempotent producer. Each costs
/// about a second. Pay them here, on both clusters, so they do not land on whichever
/// system happens to run first.
fn warm_up(topic: &str) -> Result<()> {
    warm_up_group_coordinator(PRIMARY, topic)?;
    let scratch = format!("{topic}-warm-up");
    create_topic(SECONDARY, &scratch, 1)?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", SECONDARY)
        .set("enable.idempotence", "true")
        .create()?;
    producer
        .send(BaseRecord::<[u8], [u8]>::to(&scratch).payload(b"warm-up"))
        .map_err(|(e, _)| e)?;
    producer.flush(Duration::from_secs(60))?;
    warm_up_group_coordinator(SECONDARY, &scratch)?;
    delete_topic(SECONDARY, &scratch)
}

/// Copies the backlog with the ceiling loop, unmeasured, until the brokers have warmed up.
/// Fresh brokers serve their first gigabytes of fetches and produce requests slowly (their
/// JVMs are still compiling those paths): on fresh brokers the copies cost them 6.7, 4.3,
/// 3.4, 2.1 and 2.4 CPU s, and measured runs after those still fell to 1.5; after a single
/// warm-up copy the first system of the first run, always the first one listed, took up
/// to twice as long as a run later. So it copies until two copies in a row have not cost
/// the brokers a tenth less CPU (the copy's time, if their pids are unknown) than the
/// cheapest copy before them, at most `STRAIT_BENCH_WARM_UP_COPIES` (8) times.
/// `STRAIT_BENCH_NO_WARM_UP_COPY=1` skips it, and the unmeasured round of every system
/// that follows it: after six loop copies, Strait's first run still cost the brokers 3.4
/// CPU s against 1.7 in its later runs (twice, on fresh brokers), so the loop alone does
/// not warm every path a system uses.
fn warm_up_copy(
    bin_dir: &std::path::Path,
    source: &str,
    partitions: i32,
    records: u64,
) -> Result<()> {
    if std::env::var_os("STRAIT_BENCH_NO_WARM_UP_COPY").is_some() {
        return Ok(());
    }
    let copies: u32 = match std::env::var("STRAIT_BENCH_WARM_UP_COPIES") {
        Ok(n) => n
            .parse()
            .map_err(|_| format!("STRAIT_BENCH_WARM_UP_COPIES={n}: not a count"))?,
        Err(_) => 8,
    };
    let mut cheapest = f64::INFINITY;
    let mut without_progress = 0;
    for copy in 1..=copies {
        let target = format!("warm-up-{copy}.{source}");
        create_topic(SECONDARY, &target, partitions)?;
        let watcher = wait_for_leaders(SECONDARY, &target, partitions)?;
        let child = Command::new(bin_dir.join("ceiling"))
            .args([PRIMARY, SECONDARY, source, &target])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (sample, child) = measure(
            "warm-up",
            child,
            &watcher,
            &[(target.clone(), partitions)],
            records as i64,
        )?;
        stop(child)?;
        eprintln!(
            "warm-up copy {copy} (ceiling loop, not counted): {:.2} s; brokers {:.1} CPU s",
            sample.seconds, sample.brokers_cpu_seconds
        );
        delete_topic(SECONDARY, &target)?;
        std::thread::sleep(Duration::from_secs(5));
        let cost = if sample.brokers_cpu_seconds.is_finite() {
            sample.brokers_cpu_seconds
        } else {
            sample.seconds
        };
        if cost < 0.9 * cheapest {
            without_progress = 0;
        } else {
            without_progress += 1;
            if without_progress == 2 {
                break;
            }
        }
        cheapest = cheapest.min(cost);
    }
    Ok(())
}

fn warm_up_group_coordinator(servers: &str, topic: &str) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "strait-bench-warm-up")
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the group coordinator: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn admin(servers: &str) -> Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()?)
}

fn create_topic(servers: &str, topic: &str, partitions: i32) -> Result<()> {
    create_topic_with(servers, topic, partitions, &[])
}

fn create_topic_with(
    servers: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new = new.set(key, value);
    }
    for r in block_on(admin(servers)?.create_topics([&new], &AdminOptions::new()))? {
        r.map_err(|(t, e)| format!("creating {t}: {e}"))?;
    }
    wait_for_leaders(servers, topic, partitions).map(drop)
}

/// Waits until every partition of a topic just created answers a ListOffsets request: a
/// broker takes seconds to elect leaders for 1,200 new partitions, and that time belongs
/// to the harness, not to whichever system runs first. Returns the client that asked,
/// which has the topic's metadata by then.
fn wait_for_leaders(servers: &str, topic: &str, partitions: i32) -> Result<BaseConsumer> {
    wait_for_leaders_of(servers, &[(topic.to_string(), partitions)])
}

/// A client that has read the end offset of every partition of `topics` (name, partitions)
/// once, which needs a leader for each.
fn wait_for_leaders_of(servers: &str, topics: &[(String, i32)]) -> Result<BaseConsumer> {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()?;
    let expected: i32 = topics.iter().map(|(_, p)| p).sum();
    let started = Instant::now();
    loop {
        let ready = probe
            .offsets_for_times(at_end(topics)?, Duration::from_secs(10))
            .is_ok_and(|found| {
                found.count() == expected as usize
                    && found.elements().iter().all(|e| e.error().is_ok())
            });
        if ready {
            return Ok(probe);
        }
        if started.elapsed() > Duration::from_secs(120) {
            let names = match topics {
                [(one, _)] => one.clone(),
                _ => format!("{} topics", topics.len()),
            };
            return Err(
                format!("{names} on {servers}: partitions without a leader after 120 s").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Deletes every topic on `servers` whose name `matches`.
fn delete_topics_matching(servers: &str, matches: impl Fn(&str) -> bool) -> Result<()> {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()?;
    let metadata = probe.fetch_metadata(None, Duration::from_secs(10))?;
    let doomed: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|t| matches(t))
        .collect();
    if doomed.is_empty() {
        return Ok(());
    }
    for r in block_on(admin(servers)?.delete_topics(&doomed, &AdminOptions::new()))? {
        r.map_err(|(t, e)| format!("deleting {t}: {e}"))?;
    }
    Ok(())
}

fn delete_topic(servers: &str, topic: &str) -> Result<()> {
    for r in block_on(admin(servers)?.delete_topics(&[topic], &AdminOptions::new()))? {
        r.map_err(|(t, e)| format!("deleting {t}: {e}"))?;
    }
    Ok(())
}

/// Writes `records` of `size` bytes round-robin over `topics`, each record of a topic to
/// its next partition.
fn preload(
    topics: &[&str],
    records: u64,
    size: usize,
    partitions: i32,
    txn: Option<u64>,
) -> Result<()> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", PRIMARY)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "262144");
    if txn.is_some() {
        config.set(
            "transactional.id",
            format!("strait-bench-{}", std::process::id()),
        );
    }
    let producer: BaseProducer = config.create()?;
    if txn.is_some() {
        producer.init_transactions(Duration::from_secs(60))?;
        producer.begin_transaction()?;
    }
    // Incompressible-looking payload, different per record.
    let mut payload = vec![0u8; size];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let started = Instant::now();
    for i in 0..records {
        for chunk in payload.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        let n = topics.len() as u64;
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topics[(i % n) as usize])
            .partition((i / n % partitions as u64) as i32)
            .payload(&payload);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
        if let Some(n) = txn {
            if (i + 1) % n == 0 {
                producer.commit_transaction(Duration::from_secs(300))?;
                if i + 1 < records {
                    producer.begin_transaction()?;
                }
            }
        }
    }
    if txn.is_some_and(|n| records % n != 0) {
        producer.commit_transaction(Duration::from_secs(300))?;
    }
    producer.flush(Duration::from_secs(300))?;
    eprintln!("preloaded in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `at` as Unix seconds with milliseconds, as in Strait's log timestamps.
fn unix_seconds(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", since.as_secs(), since.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratios(n: usize) -> RunRatios {
        RunRatios((1..=n).map(|i| i as f64 / 10.0).collect())
    }

    #[test]
    fn pooling_judges_the_invocations_medians_too() {
        assert_eq!(by_invocation(&[0.95], 0.9), None);
        let three = by_invocation(&[0.99, 0.88, 0.91], 0.9).expect("three invocations");
        assert!(
            three.contains("medians 0.88, 0.91, 0.99 (lowest to highest), 2 of 3 at or above 0.9"),
            "{three}"
        );
        assert!(
            three.contains("their median 0.91, undecided (fewer than 6 invocations)"),
            "{three}"
        );
        // Six invocations all at or above the goal decide it; one below leaves it open.
        let six = by_invocation(&[0.91, 0.95, 0.93, 0.90, 0.99, 0.92], 0.9).expect("six");
        assert!(six.contains("95 % interval 0.90-0.99, met"), "{six}");
        let one_below = by_invocation(&[0.91, 0.95, 0.93, 0.89, 0.99, 0.92], 0.9).expect("six");
        assert!(
            one_below.contains("95 % interval 0.89-0.99, undecided"),
            "{one_below}"
        );
    }

    #[test]
    fn pooling_files_of_different_machines_warns() {
        let kinds = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            mixed_machines_warning(&kinds(&["2 cores, 24 GiB, AMD EPYC"])),
            None
        );
        let warning = mixed_machines_warning(&kinds(&[
            "2 cores, 24 GiB, AMD EPYC",
            "2 cores, 24 GiB, Intel(R) Xeon(R) Processor",
        ]))
        .expect("two kinds of machine");
        assert!(warning.contains("2 kinds of machine"), "{warning}");
        assert!(warning.contains("AMD EPYC; 2 cores"), "{warning}");
    }

    #[test]
    fn median_interval_widens_to_the_order_statistics_that_cover_95_percent() {
        // Below 6 runs even the lowest and highest cover less than 95 % (5 runs: 93.75 %).
        assert_eq!(ratios(5).median_interval(), None);
        assert_eq!(ratios(6).median_interval(), Some((0.1, 0.6)));
        // Tabulated: 19 runs -> the 5th lowest and the 5th highest; 8 -> 1st and 8th; 9 -> 2nd and 8th.
        assert_eq!(ratios(19).median_interval(), Some((0.5, 1.5)));
        assert_eq!(ratios(8).median_interval(), Some((0.1, 0.8)));
        assert_eq!(ratios(9).median_interval(), Some((0.2, 0.8)));
    }

    #[test]
    fn a_goal_is_decided_only_when_the_whole_interval_is_on_one_side() {
        let at = |values: &[f64]| RunRatios(values.to_vec());
        let above = at(&[0.91, 0.92, 0.95, 0.97, 1.0, 1.1]);
        let straddling = at(&[0.85, 0.88, 0.9, 0.93, 0.97, 1.0]);
        let below = at(&[0.7, 0.75, 0.8, 0.85, 0.88, 0.89]);
        assert_eq!(above.verdict(Goal::AtLeast(0.9)), "met");
        assert_eq!(straddling.verdict(Goal::AtLeast(0.9)), "undecided");
        assert_eq!(below.verdict(Goal::AtLeast(0.9)), "not met");
        assert_eq!(below.verdict(Goal::AtMost(0.9)), "met");
        assert_eq!(above.verdict(Goal::AtMost(0.9)), "not met");
        assert_eq!(above.verdict(Goal::None), "-");
        assert_eq!(
            at(&[1.0; 5]).verdict(Goal::AtLeast(0.9)),
            "undecided (fewer than 6 runs)"
        );
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }
}
