//! Steady state: a bounded-rate producer writes to the primary while a replicator runs;
//! end-to-end latency and the largest lag.
//!
//! Latency is the target's acknowledgement time minus the record's timestamp. Both topics
//! are created with `message.timestamp.type=LogAppendTime` (neither replicator copies that
//! setting), so each broker stamps a record with the time it appended it: the source
//! record's timestamp is its append on the primary, and its copy's is the append on the
//! secondary. Records are paired by partition and offset (fresh topics without gaps keep
//! offsets equal) and the pairing is checked against an id in the value. The load
//! generator's own delay (creation to append on the primary) is reported separately.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::{create_topic_with, delete_topic, Result, PRIMARY, SECONDARY};
// The scenario itself (`steady_state`) runs the copiers as the others do.
use super::*;

pub struct Load {
    pub rate: u64,
    pub seconds: u64,
    pub size: usize,
    pub partitions: i32,
}

pub struct SteadySample {
    pub run: u64,
    pub system: String,
    pub records: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Median delay of the load generator itself: creation to append on the primary.
    pub generator_p50_ms: f64,
    /// The largest (source end offsets − target end offsets), sampled every 100 ms.
    pub max_lag_records: i64,
    pub cpu_seconds: f64,
    pub peak_rss_mb: f64,
}

/// Topic names for one steady-state run: (source on the primary, target on the secondary).
pub fn topics(alias: &str, identity: bool) -> (String, String) {
    let source = format!("steady-{}-{alias}", std::process::id());
    let target = if identity {
        source.clone()
    } else {
        format!("{alias}.{source}")
    };
    (source, target)
}

/// Creates both topics; call before starting the replicator.
pub fn prepare(source: &str, target: &str, partitions: i32) -> Result<()> {
    create_topic_with(
        PRIMARY,
        source,
        partitions,
        &[("message.timestamp.type", "LogAppendTime")],
    )?;
    create_topic_with(
        SECONDARY,
        target,
        partitions,
        &[("message.timestamp.type", "LogAppendTime")],
    )
}

pub fn clean_up(source: &str, target: &str) -> Result<()> {
    delete_topic(PRIMARY, source)?;
    delete_topic(SECONDARY, target)
}

/// With the replicator (process `pid`) started: waits until it copies, runs the load,
/// waits for the copy to complete, and reads the latencies back from the target.
pub fn measure(
    system: &str,
    pid: u32,
    source: &str,
    target: &str,
    load: &Load,
) -> Result<SteadySample> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", PRIMARY)
        .set("linger.ms", "5")
        .set("queue.buffering.max.kbytes", "262144")
        .create()?;
    // Bytes 0..8: the creation time; 8..16: varies per record; the rest: filler.
    let mut payload = vec![0x5a_u8; load.size.max(16)];
    payload[..8].fill(0);
    // Warm-up: one record per partition (timestamp 0 in the value, left out of the
    // figures), and the load starts only once they are all on the target, so a JVM's
    // start-up is not counted as latency.
    for p in 0..load.partitions {
        send(&producer, source, p, &payload, now_ms())?;
    }
    producer.flush(Duration::from_secs(30))?;
    wait_for_copy(
        target,
        load.partitions,
        load.partitions as i64,
        Duration::from_secs(180),
    )
    .map_err(|e| format!("{system} did not start copying: {e}"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let lag = {
        let (stop, source, target, partitions) = (
            stop.clone(),
            source.to_string(),
            target.to_string(),
            load.partitions,
        );
        thread::spawn(move || largest_lag(&stop, &source, &target, partitions))
    };
    let ticks = crate::clock_ticks();
    let total = load.rate * load.seconds;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while sent < total && started.elapsed() < Duration::from_secs(load.seconds + 30) {
        let due = ((started.elapsed().as_secs_f64() * load.rate as f64) as u64).min(total);
        while sent < due {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            payload[8..16].copy_from_slice(&x.to_le_bytes());
            let at = now_ms();
            payload[..8].copy_from_slice(&at.to_le_bytes());
            send(
                &producer,
                source,
                (sent % load.partitions as u64) as i32,
                &payload,
                at,
            )?;
            sent += 1;
        }
        producer.poll(Duration::ZERO);
        thread::sleep(Duration::from_millis(1));
    }
    producer.flush(Duration::from_secs(60))?;
    let expected = load.partitions as i64 + sent as i64;
    let copied = wait_for_copy(target, load.partitions, expected, Duration::from_secs(120));
    let (cpu_seconds, peak_rss_mb) = crate::proc_usage(pid, ticks).unwrap_or((f64::NAN, f64::NAN));
    stop.store(true, Ordering::Relaxed);
    let max_lag_records = lag.join().map_err(|_| "lag sampler panicked")??;
    copied.map_err(|e| format!("{system} did not finish the copy: {e}"))?;
    let (mut latencies, mut generator) = latencies(source, target, load.partitions, expected)?;
    latencies.sort_unstable();
    generator.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64;
    Ok(SteadySample {
        run: 0,
        system: system.to_string(),
        records: latencies.len() as u64,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        generator_p50_ms: generator[generator.len() / 2] as f64,
        max_lag_records,
        cpu_seconds,
        peak_rss_mb,
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn send(
    producer: &BaseProducer,
    topic: &str,
    partition: i32,
    payload: &[u8],
    at: i64,
) -> Result<()> {
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
        .partition(partition)
        .timestamp(at)
        .payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

fn end_offsets(consumer: &BaseConsumer, topic: &str, partitions: i32) -> Result<i64> {
    let mut sum = 0;
    for p in 0..partitions {
        sum += consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))?
            .1;
    }
    Ok(sum)
}

fn wait_for_copy(target: &str, partitions: i32, expected: i64, limit: Duration) -> Result<()> {
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", SECONDARY)
        .create()?;
    let started = Instant::now();
    loop {
        let copied = end_offsets(&watcher, target, partitions)?;
        if copied >= expected {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(format!("{copied}/{expected} records on {target} after {limit:?}").into());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn largest_lag(stop: &AtomicBool, source: &str, target: &str, partitions: i32) -> Result<i64> {
    let on = |servers: &str| -> Result<BaseConsumer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", servers)
            .create()?)
    };
    let (primary, secondary) = (on(PRIMARY)?, on(SECONDARY)?);
    let mut largest = 0;
    while !stop.load(Ordering::Relaxed) {
        // Target first: a source read after it can only make the lag look larger by the
        // records written in between, never smaller.
        let copied = end_offsets(&secondary, target, partitions)?;
        let written = end_offsets(&primary, source, partitions)?;
        largest = largest.max(written - copied);
        thread::sleep(Duration::from_millis(100));
    }
    Ok(largest)
}

/// Per record of the load (warm-up records left out): milliseconds from its append on the
/// primary to its copy's append on the secondary, and from its creation to its append on
/// the primary.
fn latencies(
    source: &str,
    target: &str,
    partitions: i32,
    expected: i64,
) -> Result<(Vec<i64>, Vec<i64>)> {
    let originals = read_all(PRIMARY, source, partitions, expected)?;
    let copies = read_all(SECONDARY, target, partitions, expected)?;
    let (mut replication, mut generator) = (Vec::new(), Vec::new());
    for (p, (originals, copies)) in originals.iter().zip(&copies).enumerate() {
        if originals.len() != copies.len() {
            return Err(format!(
                "partition {p}: {} records on the primary, {} on the secondary",
                originals.len(),
                copies.len()
            )
            .into());
        }
        for (offset, (original, copy)) in originals.iter().zip(copies).enumerate() {
            if original.created != copy.created || original.id != copy.id {
                return Err(format!(
                    "partition {p} offset {offset}: the copy is not this record's"
                )
                .into());
            }
            if original.created > 0 {
                replication.push(copy.appended - original.appended);
                generator.push(original.appended - original.created);
            }
        }
    }
    if replication.is_empty() {
        return Err(format!("no load records on {target}").into());
    }
    if crate::options().trace {
        trace_stalls(&originals, &copies);
    }
    Ok((replication, generator))
}

/// With `--trace`: the moments (source append time, UTC) when copies took
/// longer than 200 ms, grouped by 100 ms, to line up with the replicator's log.
fn trace_stalls(originals: &[Vec<Seen>], copies: &[Vec<Seen>]) {
    let mut worst: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
    for (originals, copies) in originals.iter().zip(copies) {
        for (original, copy) in originals.iter().zip(copies) {
            let latency = copy.appended - original.appended;
            if original.created > 0 && latency > 200 {
                let slot = worst.entry(original.appended / 100).or_default();
                *slot = (*slot).max(latency);
            }
        }
    }
    for (slot, latency) in worst {
        let ms = slot * 100;
        eprintln!(
            "  stall: records appended at {:02}:{:02}:{:02}.{:03} UTC took up to {latency} ms",
            ms / 3_600_000 % 24,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        );
    }
}

struct Seen {
    appended: i64,
    created: i64,
    id: u64,
}

/// Every record of a topic, per partition in offset order (offsets start at 0, no gaps).
fn read_all(servers: &str, topic: &str, partitions: i32, expected: i64) -> Result<Vec<Vec<Seen>>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "strait-bench-latency-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out: Vec<Vec<Seen>> = (0..partitions).map(|_| Vec::new()).collect();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen < expected {
        if Instant::now() > deadline {
            return Err(format!("read {seen}/{expected} records of {topic} in 300 s").into());
        }
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m?;
        seen += 1;
        let where_ = format!("{topic}[{}] offset {}", m.partition(), m.offset());
        let Timestamp::LogAppendTime(appended) = m.timestamp() else {
            return Err(format!(
                "{where_} has a {:?} timestamp; the topic must keep LogAppendTime",
                m.timestamp()
            )
            .into());
        };
        let value = m.payload().unwrap_or_default();
        let word = |range: std::ops::Range<usize>| -> Result<u64> {
            Ok(u64::from_le_bytes(
                value
                    .get(range)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| format!("{where_}: a value of {} bytes", value.len()))?,
            ))
        };
        let records = &mut out[m.partition() as usize];
        if m.offset() != records.len() as i64 {
            return Err(format!("{where_}: expected offset {} (no gaps)", records.len()).into());
        }
        records.push(Seen {
            appended,
            created: word(0..8)? as i64,
            id: word(8..16)?,
        });
    }
    Ok(out)
}

/// Scenario 2: Strait and MirrorMaker 2 under a bounded-rate producer, alternating.
pub(super) fn steady_state(
    bin_dir: &std::path::Path,
    load: &steady::Load,
    runs: u64,
) -> Result<serde_json::Value> {
    println!(
        "\n## Steady state: {} records/s of {} B for {} s into {} partitions, {runs} runs",
        load.rate, load.size, load.seconds, load.partitions
    );
    // `--steady-systems strait,strait-alt` compares two builds or settings (see
    // `--alt-bin` and `--alt`) under the same load.
    let systems: Vec<String> = options()
        .steady_systems
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    if let Some(other) = systems
        .iter()
        .find(|s| !["strait", "strait-alt", "mm2"].contains(&s.as_str()))
    {
        return Err(format!(
            "unknown system '{other}' in --steady-systems (strait, strait-alt, mm2)"
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
