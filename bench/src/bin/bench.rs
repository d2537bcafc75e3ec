//! Backlog-copy benchmark on the test bed: Strait versus the ceiling loop, alternating.
//!
//! bench [RECORDS] [RECORD_BYTES] [PARTITIONS] [RUNS]   (defaults 1000000 1024 12 3)
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
//! - `STRAIT_BENCH_TRACE=1` prints progress twice a second and Strait's log
//!   (`STRAIT_BENCH_LOG=info` for more of it);
//! - `CEILING_CONSUMER_EXTRA='key=value;…'` adds consumer settings to the ceiling.
//!
//! Offset sync (`scripts/bench.sh --offset-sync` sets these):
//! - `STRAIT_BENCH_SYSTEMS=strait,strait-nosync` alternates Strait with offset sync on and
//!   off (default `strait,ceiling`);
//! - `STRAIT_BENCH_TXN=N` preloads in transactions of N records, so every partition gets a
//!   commit marker (an offset gap the map must record) every N/PARTITIONS records.
//!
//! Verification (`scripts/bench.sh --verify` sets `STRAIT_BENCH_VERIFY=1`): after each
//! Strait run, `strait verify` compares the whole copy with the source, and its rate in
//! MB/s is printed next to the replication rate of the same run.
//!
//! After each run with offset sync on, a consumer group commits the source's end offsets
//! and the time until its checkpoints appear on the secondary is the *checkpoint lag*; the
//! offset map topic's size is read then too.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Sample {
    system: String,
    seconds: f64,
    /// From process start until the first record reached the target.
    startup: f64,
    cpu_seconds: f64,
    peak_rss_mb: f64,
}

/// What offset sync cost on the secondary after one run.
struct SyncSample {
    map_records: i64,
    map_bytes: usize,
    map_keys: usize,
    checkpoint_lag: f64,
}

fn main() -> Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<std::result::Result<_, _>>()?;
    let records = *args.first().unwrap_or(&1_000_000);
    let size = *args.get(1).unwrap_or(&1024) as usize;
    let partitions = *args.get(2).unwrap_or(&12) as i32;
    let runs = *args.get(3).unwrap_or(&3);
    let bin_dir = std::env::current_exe()?
        .parent()
        .ok_or("no exe dir")?
        .to_path_buf();

    let stamp = std::process::id();
    let source = format!("bench-{stamp}");
    create_topic(PRIMARY, &source, partitions)?;
    eprintln!("preloading {records} records of {size} B into {source} ({partitions} partitions)");
    let txn = std::env::var("STRAIT_BENCH_TXN")
        .ok()
        .map(|n| n.parse::<u64>())
        .transpose()?;
    preload(&source, records, size, partitions, txn)?;
    warm_up(&source)?;
    let systems: Vec<String> = std::env::var("STRAIT_BENCH_SYSTEMS")
        .unwrap_or_else(|_| "strait,ceiling".into())
        .split(',')
        .map(str::to_string)
        .collect();

    let mut samples = Vec::new();
    let mut sync_samples = Vec::new();
    let mut verify_samples = Vec::new();
    let verify = std::env::var_os("STRAIT_BENCH_VERIFY").is_some();
    for run in 0..runs {
        // Alternate which goes first, so none always meets a cold or a warm broker.
        let mut order = systems.clone();
        order.rotate_left(run as usize % systems.len());
        for system in order {
            let system = system.as_str();
            let alias = format!("{}{run}", system.replace('-', ""));
            let target = format!("{alias}.{source}");
            create_topic(SECONDARY, &target, partitions)?;
            let dir = std::env::temp_dir().join(format!("strait-bench-{stamp}-{alias}"));
            std::fs::create_dir_all(&dir)?;
            let child = match system {
                "strait" => spawn_strait(&bin_dir, &dir, &alias, &source, true)?,
                "strait-nosync" => spawn_strait(&bin_dir, &dir, &alias, &source, false)?,
                "ceiling" if std::env::var_os("STRAIT_BENCH_ONLY_STRAIT").is_some() => {
                    delete_topic(SECONDARY, &target)?;
                    continue;
                }
                _ => Command::new(bin_dir.join("ceiling"))
                    .args([PRIMARY, SECONDARY, &source, &target])
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()?,
            };
            let (sample, child) = measure(system, child, &target, partitions, records as i64)?;
            if system == "strait" && systems.iter().any(|s| s == "strait-nosync") {
                let s = offset_sync_cost(&alias, &source, partitions)?;
                eprintln!(
                    "run {run}  strait: offset map {} records / {} keys / {} B; checkpoint lag {:.2} s",
                    s.map_records, s.map_keys, s.map_bytes, s.checkpoint_lag
                );
                sync_samples.push(s);
            }
            stop(child)?;
            if verify && system == "strait" {
                let seconds = time_verify(&bin_dir, &dir.join("strait.toml"), records)?;
                eprintln!(
                    "run {run}  verify: {seconds:.2} s, {:.0} MB/s (replication {:.0} MB/s)",
                    mb(records, size) / seconds,
                    mb(records, size) / sample.seconds
                );
                verify_samples.push((sample.seconds, seconds));
            }
            eprintln!(
                "run {run} {system:>7}: {:.2} s ({:.2} s to the first record), {:.0} records/s, {:.1} CPU s, {:.0} MB peak RSS",
                sample.seconds,
                sample.startup,
                records as f64 / sample.seconds,
                sample.cpu_seconds,
                sample.peak_rss_mb
            );
            samples.push(sample);
            delete_topic(SECONDARY, &target)?;
            // The broker removes the files a second later (scripts/kafka.sh sets
            // log.segment.delete.delay.ms=1000); let that happen before the next run.
            std::thread::sleep(Duration::from_secs(5));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    delete_topic(PRIMARY, &source)?;
    report(&samples, records, size);
    if !verify_samples.is_empty() {
        report_verify(&verify_samples, records, size);
    }
    if !sync_samples.is_empty() {
        report_offset_sync(&samples, &sync_samples, records, partitions, txn);
    }
    Ok(())
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
    let mut ratios: Vec<f64> = samples.iter().map(|(c, v)| c / v).collect();
    ratios.sort_by(f64::total_cmp);
    let mut verify: Vec<f64> = samples.iter().map(|(_, v)| mb(records, size) / v).collect();
    verify.sort_by(f64::total_cmp);
    println!(
        "\nverify: median {:.0} MB/s; median verify/replication rate ratio {:.2} (goal: >= 1)",
        verify[verify.len() / 2],
        ratios[ratios.len() / 2]
    );
}

fn spawn_strait(
    bin_dir: &std::path::Path,
    dir: &std::path::Path,
    alias: &str,
    source: &str,
    offset_sync: bool,
) -> Result<Child> {
    // Each run gets its own map and checkpoint topics: runs replicate the same source
    // topic into different target topics, and one map must describe one target.
    let sync = if offset_sync {
        format!(
            "[flows.bench.offset_sync]\nmap_topic = \"__strait.offsets.{source}.{alias}\"\n\
             checkpoint_topic = \"__strait.checkpoints.{source}.{alias}\"\n\
             checkpoint_interval = \"1s\"\ngroups = [\"bench-app-.*\"]\n"
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
    Ok(Command::new(bin_dir.join("strait"))
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
    target: &str,
    partitions: i32,
    records: i64,
) -> Result<(Sample, Child)> {
    let started = Instant::now();
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", SECONDARY)
        .create()?;
    let pid = child.id();
    let ticks = clock_ticks();
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
        let mut copied = 0;
        for p in 0..partitions {
            copied += watcher
                .fetch_watermarks(target, p, Duration::from_secs(10))
                .map_or(0, |w| w.1);
        }
        if trace && last_trace.elapsed() >= Duration::from_millis(500) {
            eprintln!(
                "  {system} t={:.1}s copied={copied}",
                started.elapsed().as_secs_f64()
            );
            last_trace = Instant::now();
        }
        if copied > 0 && startup.is_none() {
            startup = Some(started.elapsed().as_secs_f64());
        }
        if copied >= records {
            break;
        }
        if let Some(status) = child.try_wait()? {
            if copied < records {
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
    if let Some((c, r)) = proc_usage(pid, ticks) {
        cpu = c;
        rss = f64::max(rss, r);
    }
    Ok((
        Sample {
            system: system.to_string(),
            seconds,
            startup: startup.unwrap_or(seconds),
            cpu_seconds: cpu,
            peak_rss_mb: rss,
        },
        child,
    ))
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
    let mut ends = std::collections::BTreeMap::new();
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
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
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

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(samples: &[Sample], records: u64, size: usize) {
    let mb = records as f64 * size as f64 / 1e6;
    println!(
        "\n| system | runs | median s | records/s | MB/s | records/s after the first record | \
         s to the first record | CPU s | CPU s/GB | peak RSS MB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut medians = Vec::new();
    for system in ["strait", "strait-nosync", "ceiling"] {
        let runs: Vec<&Sample> = samples.iter().filter(|s| s.system == system).collect();
        if runs.is_empty() {
            continue;
        }
        let of = |f: &dyn Fn(&Sample) -> f64| median(runs.iter().map(|s| f(s)).collect());
        let secs = of(&|s| s.seconds);
        let cpu = of(&|s| s.cpu_seconds);
        let rss = of(&|s| s.peak_rss_mb);
        let startup = of(&|s| s.startup);
        // The copy rate once records flow. Start-up (group join) is noisy and, on a backlog
        // that copies in a few seconds, a large share of the total.
        let copy_rate = of(&|s| records as f64 / (s.seconds - s.startup).max(1e-3));
        println!(
            "| {system} | {} | {secs:.2} | {:.0} | {:.1} | {copy_rate:.0} | {startup:.2} | {cpu:.1} | {:.2} | {rss:.0} |",
            runs.len(),
            records as f64 / secs,
            mb / secs,
            cpu / (mb / 1000.0)
        );
        medians.push((secs, cpu, rss, copy_rate));
    }
    let [strait, ceiling] = medians[..] else {
        // Not the Strait-versus-ceiling comparison.
        return;
    };
    if samples.iter().any(|s| s.system == "strait-nosync") {
        return;
    }
    // Each run's pair ran back to back under the same conditions; the brokers drift over a
    // session (background deletion of earlier runs' topics), so per-pair ratios are the
    // fairest comparison.
    let pairs: Vec<f64> = samples
        .chunks(2)
        .filter_map(|pair| match pair {
            [a, b] => {
                let (s, c) = if a.system == "strait" { (a, b) } else { (b, a) };
                Some(c.seconds / s.seconds)
            }
            _ => None,
        })
        .collect();
    let listed: Vec<String> = pairs.iter().map(|r| format!("{:.0}%", 100.0 * r)).collect();
    println!(
        "\nPer-run Strait/ceiling throughput: {} (median {:.0}%)",
        listed.join(", "),
        100.0 * median(pairs.clone())
    );
    println!(
        "\nStrait throughput = {:.0}% of the ceiling end to end, {:.0}% after the first record; \
         CPU = {:.2}x the ceiling's; peak RSS {:.0} MB",
        100.0 * ceiling.0 / strait.0,
        100.0 * strait.3 / ceiling.3,
        strait.1 / ceiling.1,
        strait.2
    );
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
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for r in block_on(admin(servers)?.create_topics([&new], &AdminOptions::new()))? {
        r.map_err(|(t, e)| format!("creating {t}: {e}"))?;
    }
    Ok(())
}

fn delete_topic(servers: &str, topic: &str) -> Result<()> {
    for r in block_on(admin(servers)?.delete_topics(&[topic], &AdminOptions::new()))? {
        r.map_err(|(t, e)| format!("deleting {t}: {e}"))?;
    }
    Ok(())
}

fn preload(
    topic: &str,
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
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition((i % partitions as u64) as i32)
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
