//! `strait demo`: the whole story in about a minute, with nothing but Rust.
//!
//! Two Kafka clusters run in this process (librdkafka's mock cluster). A producer and a
//! consumer group (`orders-app`) work on the old one. Then `strait migrate run`'s own code
//! (the same function, config file and HTTP server) replicates to the new cluster and walks
//! the staged migration: producers move first, then the group, with its offsets translated
//! exactly, and the copy is verified. The demo plays the application's part, reads
//! progress from `/status` like any client would, and checks at the end that the group
//! read every record exactly once across both clusters.
//!
//! The mock cluster lacks some APIs, and the demo says where it works around them:
//! - no CreateTopics: the demo creates the target and internal topics up front (Strait
//!   carries on without the admin API, as it does on Event Hubs);
//! - no ListGroups or DescribeGroups: offset sync translates the groups named in the
//!   config, and the two gates that watch group membership wait for the operator's
//!   approval, which the demo gives with `strait migrate approve`'s code.
//!
//! The mock keeps only a few thousand records per partition, so the traffic is small.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::Value;

use crate::config::Config;
use crate::migrate::{self, Stage};

const TOPIC: &str = "orders";
const GROUP: &str = "orders-app";
const FLOW: &str = "move";
const PARTITIONS: i32 = 3;
/// Records written to the old cluster before producers move, and to the new one after.
const ON_OLD: u64 = 6_000;
const ON_NEW: u64 = 1_500;
const RATE_PER_SEC: u64 = 1_000;
/// The consumer stops after this many records on the old cluster, leaving the rest (and
/// everything written to the new cluster) for after the move.
const READ_ON_OLD: usize = 4_000;
/// The whole demo gives up after this long.
const DEADLINE: Duration = Duration::from_secs(180);

/// Who read which record: record id → how many times, per cluster.
type Reads = Arc<Mutex<BTreeMap<u64, u32>>>;

pub fn run(listen: SocketAddr) -> Result<()> {
    let started = Instant::now();
    let old = MockCluster::new(1).context("starting the 'old' mock cluster")?;
    let new = MockCluster::new(1).context("starting the 'new' mock cluster")?;
    let (old_servers, new_servers) = (old.bootstrap_servers(), new.bootstrap_servers());
    say(&format!(
        "two in-process Kafka clusters (librdkafka's mock): old at {old_servers}, new at {new_servers}"
    ));

    let dir = std::env::temp_dir().join(format!("strait-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("creating a temporary directory")?;
    let config_path = dir.join("demo.toml");
    std::fs::write(
        &config_path,
        demo_config(listen, &old_servers, &new_servers),
    )?;
    let config = Config::load(&config_path)?;

    old.create_topic(TOPIC, PARTITIONS, 1)?;
    say("the mock has no CreateTopics API: creating the target topic and Strait's internal topics up front");
    new.create_topic(TOPIC, PARTITIONS, 1)?;
    let flow = config.flows.get(FLOW).context("demo flow")?;
    for internal in [
        flow.map_topic(FLOW),
        flow.checkpoint_topic(FLOW),
        config
            .migration_state_topic()
            .context("demo migration state topic")?,
    ] {
        new.create_topic(&internal, 1, 1)?;
    }

    let produced = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (old_reads, new_reads): (Reads, Reads) = Default::default();
    say(&format!(
        "starting `strait migrate run` with {} (HTTP on http://{listen}: /status, /metrics)",
        config_path.display()
    ));
    let daemon_config = config_path.clone();
    let daemon = std::thread::spawn(move || crate::run(daemon_config, true));

    let outcome = drive(
        &config,
        listen,
        (&old_servers, &new_servers),
        started,
        &daemon,
        Parts {
            producer: None,
            consumer: None,
            produced,
            old_reads: old_reads.clone(),
            new_reads: new_reads.clone(),
        },
    );
    let daemon_result = daemon
        .join()
        .map_err(|_| anyhow::anyhow!("the migration daemon panicked"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let last_status = outcome?;
    daemon_result.context("strait migrate run")?;
    summary(&last_status, &old_reads, &new_reads, started)
}

/// The application's threads, handed from stage to stage.
struct Parts {
    producer: Option<JoinHandle<()>>,
    consumer: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
    produced: Arc<std::sync::atomic::AtomicU64>,
    old_reads: Reads,
    new_reads: Reads,
}

/// Follows the migration through `/status` and plays the application's part at each
/// stage. Returns the last status seen before the daemon finished.
fn drive(
    config: &Config,
    listen: SocketAddr,
    (old_servers, new_servers): (&str, &str),
    started: Instant,
    daemon: &JoinHandle<Result<()>>,
    mut parts: Parts,
) -> Result<Value> {
    let mut last_stage = String::new();
    let mut last = Value::Null;
    let mut last_print = Instant::now() - Duration::from_secs(10);
    let mut last_replicated = 0u64;
    let mut approved = Vec::new();
    let mut app_started = false;
    loop {
        if started.elapsed() > DEADLINE {
            bail!("the demo did not finish within {DEADLINE:?}; last status: {last:#}");
        }
        if daemon.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        let Some(status) = get_status(listen) else {
            continue;
        };
        let stage = status["migration"]["stage"]
            .as_str()
            .unwrap_or("starting")
            .to_string();
        let waiting = status["migration"]["waiting_for"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let replicated = status["flows"][0]["topics"][0]["records_replicated"]
            .as_u64()
            .unwrap_or(0);
        if last_print.elapsed() >= Duration::from_secs(1) || stage != last_stage {
            let rate = (replicated.saturating_sub(last_replicated)) as f64
                / last_print.elapsed().as_secs_f64().min(10.0);
            let assigned = status["flows"][0]["topics"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|t| t["partitions"].as_array().into_iter().flatten())
                .filter(|p| p["assigned"] == true)
                .count();
            let lag = if assigned == 0 {
                "lag: joining the source group".to_string()
            } else {
                format!(
                    "lag {} records, {:.1} s",
                    status["flows"][0]["lag_records"],
                    status["flows"][0]["lag_seconds"].as_f64().unwrap_or(0.0)
                )
            };
            println!(
                "  [{:>5.1}s] stage {:<18} replicated {:>5} ({:>5.0}/s)  {lag}  |  {GROUP} read {} on old, {} on new",
                started.elapsed().as_secs_f64(),
                stage,
                replicated,
                rate,
                count(&parts.old_reads),
                count(&parts.new_reads),
            );
            last_print = Instant::now();
            last_replicated = replicated;
        }
        if stage != last_stage {
            if !waiting.is_empty() {
                say(&format!("stage {stage}: {waiting}"));
            }
            last_stage = stage.clone();
        }
        let assigned = status["flows"][0]["topics"][0]["partitions"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["assigned"] == true));
        let caught_up = status["flows"][0]["lag_records"] == 0;
        last = status;

        match stage.as_str() {
            // The application, on the old cluster: a producer and the orders-app group,
            // started once Strait replicates, so that the copy is seen happening live.
            "mirror" if assigned && !app_started => {
                say(&format!(
                    "Strait replicates; the application starts on old: a producer writes {ON_OLD} records to old/{TOPIC} at {RATE_PER_SEC}/s, and group {GROUP} consumes them"
                ));
                parts.producer = Some(spawn_producer(
                    old_servers,
                    0,
                    ON_OLD,
                    parts.produced.clone(),
                ));
                parts.consumer = Some(spawn_consumer(
                    old_servers,
                    Some(READ_ON_OLD),
                    parts.old_reads.clone(),
                ));
                app_started = true;
            }
            // The mirror gate is manual (the default): the operator approves once the
            // copy keeps up. Here: once the first batch is written and copied.
            "mirror"
                if app_started
                    && caught_up
                    && parts.producer.as_ref().is_some_and(|p| p.is_finished())
                    && !approved.contains(&stage) =>
            {
                say("the copy has caught up: approving mirror, as the operator would (`strait migrate approve mirror`)");
                migrate::approve(config, Stage::Mirror)?;
                approved.push(stage.clone());
            }
            "move_producers" if parts.producer.is_some() => {
                if let Some(p) = parts.producer.take() {
                    p.join().map_err(|_| anyhow::anyhow!("producer panicked"))?;
                }
                say(&format!(
                    "producers stop writing to old ({} records written); the gate waits until old/{TOPIC} is idle",
                    parts.produced.load(Ordering::Relaxed)
                ));
            }
            "stop_consumers" if parts.consumer.is_some() => {
                if let Some((handle, stop)) = parts.consumer.take() {
                    stop.store(true, Ordering::Relaxed);
                    handle
                        .join()
                        .map_err(|_| anyhow::anyhow!("consumer panicked"))?;
                }
                say(&format!(
                    "{GROUP} stops on old after reading {} records, and commits",
                    count(&parts.old_reads)
                ));
                // Producers now write to the new cluster, after their old records were
                // copied (drain passed): a consumer of new reads the copies first.
                parts.producer = Some(spawn_producer(
                    new_servers,
                    ON_OLD,
                    ON_NEW,
                    parts.produced.clone(),
                ));
                say(&format!(
                    "producers now write to new/{TOPIC} ({ON_NEW} more records)"
                ));
            }
            "start_consumers" if parts.consumer.is_none() => {
                say(&format!(
                    "{GROUP} starts on new, from the offsets Strait translated"
                ));
                parts.consumer = Some(spawn_consumer(new_servers, None, parts.new_reads.clone()));
            }
            _ => {}
        }
        // The mock cannot describe groups; the operator's word stands in (see module doc).
        if waiting.contains("cannot describe groups") && !approved.contains(&stage) {
            let s: Stage = clap::ValueEnum::from_str(&stage, true)
                .map_err(|e| anyhow::anyhow!("stage {stage}: {e}"))?;
            say(&format!(
                "the mock cannot describe groups, so Strait cannot see {GROUP}'s members: approving {stage} as the operator would (`strait migrate approve {stage}`)"
            ));
            migrate::approve(config, s)?;
            approved.push(stage);
        }
    }
    // The group on the new cluster reads what was left on old (now copied) plus the
    // records written to new.
    if let Some(p) = parts.producer.take() {
        p.join().map_err(|_| anyhow::anyhow!("producer panicked"))?;
    }
    let expected = (ON_OLD + ON_NEW) as usize;
    let until = Instant::now() + Duration::from_secs(30);
    while count(&parts.old_reads) + count(&parts.new_reads) < expected && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    if let Some((handle, stop)) = parts.consumer.take() {
        stop.store(true, Ordering::Relaxed);
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("consumer panicked"))?;
    }
    Ok(last)
}

fn summary(status: &Value, old_reads: &Reads, new_reads: &Reads, started: Instant) -> Result<()> {
    let old = old_reads.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let new = new_reads.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let total = ON_OLD + ON_NEW;
    let mut twice = 0;
    let mut missing = 0;
    for id in 0..total {
        match old.get(&id).copied().unwrap_or(0) + new.get(&id).copied().unwrap_or(0) {
            0 => missing += 1,
            1 => {}
            _ => twice += 1,
        }
    }
    let verify = &status["migration"]["verify"];
    let mut history: Vec<String> = status["migration"]["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|e| e["stage"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    // The daemon exits on its own only once the migration is done.
    history.push("done".into());
    println!();
    println!("summary ({:.0} s)", started.elapsed().as_secs_f64());
    println!("  records written:     {ON_OLD} to old, then {ON_NEW} to new");
    println!(
        "  replicated:          {} records old → new",
        status["flows"][0]["topics"][0]["records_replicated"]
    );
    println!("  migration stages:    {}", history.join(" → "));
    println!(
        "  verify:              {} records in {} partitions, {}",
        verify["records"],
        verify["partitions"],
        if verify["ok"] == true {
            "identical"
        } else {
            "DIFFERENCES"
        }
    );
    println!(
        "  {GROUP}:          read {} on old and {} on new: {} read twice, {} missing",
        old.values().sum::<u32>(),
        new.values().sum::<u32>(),
        twice,
        missing
    );
    if twice > 0 || missing > 0 || verify["ok"] != true {
        bail!("the demo's migration was not exact");
    }
    println!("  every record was read exactly once across the two clusters");
    Ok(())
}

fn demo_config(listen: SocketAddr, old: &str, new: &str) -> String {
    format!(
        r#"# Written by `strait demo`.
[http]
listen = "{listen}"

[clusters.old]
bootstrap_servers = "{old}"

[clusters.new]
bootstrap_servers = "{new}"

[flows.{FLOW}]
source = "old"
target = "new"
topics = ["{TOPIC}"]
naming = "identity"
refresh_interval = "2s"

[flows.{FLOW}.offset_sync]
groups = ["{GROUP}"]
checkpoint_interval = "1s"

[tuning]
commit_interval = "500ms"

[migration]
flow = "{FLOW}"
groups = ["{GROUP}"]

[migration.gates.move_producers]
approval = "auto"
producers_idle_for = "2s"
"#
    )
}

/// Writes records `first..first + count` (value `order-<id>`) at a bounded rate.
fn spawn_producer(
    servers: &str,
    first: u64,
    count: u64,
    produced: Arc<std::sync::atomic::AtomicU64>,
) -> JoinHandle<()> {
    let servers = servers.to_string();
    std::thread::spawn(move || {
        let producer: BaseProducer = match ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("linger.ms", "5")
            .create()
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("demo producer: {e}");
                return;
            }
        };
        let started = Instant::now();
        for id in first..first + count {
            let key = format!("customer-{}", id % 50);
            let value = format!("order-{id}");
            let mut record = BaseRecord::to(TOPIC).key(&key).payload(&value);
            while let Err((_, r)) = producer.send(record) {
                record = r;
                producer.poll(Duration::from_millis(10));
            }
            produced.fetch_add(1, Ordering::Relaxed);
            producer.poll(Duration::ZERO);
            // Bounded rate: never ahead of RATE_PER_SEC.
            let due = Duration::from_secs_f64((id - first) as f64 / RATE_PER_SEC as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let _ = producer.flush(Duration::from_secs(30));
    })
}

/// A member of `orders-app` that counts what it reads, commits as it goes, and commits
/// once more when stopped (after `limit` records, or when told).
fn spawn_consumer(
    servers: &str,
    limit: Option<usize>,
    reads: Reads,
) -> (JoinHandle<()>, Arc<AtomicBool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let servers = servers.to_string();
    let stop_flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let consumer: BaseConsumer = match ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("group.id", GROUP)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("demo consumer: {e}");
                return;
            }
        };
        if let Err(e) = consumer.subscribe(&[TOPIC]) {
            eprintln!("demo consumer: {e}");
            return;
        }
        let mut read = 0usize;
        while !stop_flag.load(Ordering::Relaxed) && limit.is_none_or(|l| read < l) {
            let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            if let Some(id) = msg
                .payload()
                .and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|v| v.strip_prefix("order-"))
                .and_then(|id| id.parse::<u64>().ok())
            {
                *reads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(id)
                    .or_default() += 1;
            }
            // Processed, so committed: the next read starts after it.
            let _ = consumer.store_offset_from_message(&msg);
            read += 1;
            if read % 100 == 0 {
                let _ = consumer.commit_consumer_state(CommitMode::Async);
            }
        }
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
        // Wait in the group until told to stop, like an application that is still up.
        while !stop_flag.load(Ordering::Relaxed) {
            let _ = consumer.poll(Duration::from_millis(100));
        }
    });
    (handle, stop)
}

fn count(reads: &Reads) -> usize {
    reads
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .map(|n| *n as usize)
        .sum()
}

fn say(what: &str) {
    println!("* {what}");
}

/// `GET /status` from the daemon, as any client would.
fn get_status(listen: SocketAddr) -> Option<Value> {
    let mut stream = std::net::TcpStream::connect(listen).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /status HTTP/1.0\r\nHost: {listen}\r\n\r\n").ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    serde_json::from_str(raw.split("\r\n\r\n").nth(1)?).ok()
}
