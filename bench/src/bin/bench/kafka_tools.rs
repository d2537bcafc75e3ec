//! Kafka's own perf tools (`kafka-tools` jar), for the raw produce rate of the secondary
//! and the raw consume rate of the primary: the ceiling no replicator can beat on these
//! clusters, whatever its client.

use std::process::{Command, Stdio};

use crate::{create_topic, delete_topic, Result, PRIMARY, SECONDARY};

/// Producer settings for the perf producer: Strait's producer defaults.
pub const PRODUCER_PROPS: &[&str] = &["linger.ms=10", "batch.size=1000000", "acks=all"];

fn java(class: &str, args: &[String]) -> Result<String> {
    let classpath = crate::options()
        .kafka_classpath
        .as_deref()
        .ok_or("--kafka-classpath is not given (scripts/bench.sh passes it)")?;
    let out = Command::new("java")
        .args(["-Xmx1G", "-cp", classpath, class])
        .args(args)
        .stderr(Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{class} failed ({}): {stdout}", out.status).into());
    }
    Ok(stdout)
}

/// ProducerPerformance into a fresh topic on the secondary; MB/s (10^6 bytes).
pub fn produce_rate(run: u64, records: u64, size: usize, partitions: i32) -> Result<f64> {
    let topic = format!("perf-produce-{}-{run}", std::process::id());
    create_topic(SECONDARY, &topic, partitions)?;
    let mut args: Vec<String> = [
        "--topic",
        &topic,
        "--num-records",
        &records.to_string(),
        "--record-size",
        &size.to_string(),
        "--throughput",
        "-1",
        "--producer-props",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("bootstrap.servers={SECONDARY}"));
    args.extend(PRODUCER_PROPS.iter().map(|s| s.to_string()));
    let out = java("org.apache.kafka.tools.ProducerPerformance", &args);
    delete_topic(SECONDARY, &topic)?;
    // The summary line: "N records sent, R records/sec (X MB/sec), …", MB meaning MiB.
    let out = out?;
    let summary = out
        .lines()
        .rfind(|l| l.contains("records sent"))
        .ok_or_else(|| format!("ProducerPerformance printed no summary: {out}"))?;
    let mib: f64 = summary
        .split('(')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("cannot read the rate in: {summary}"))?;
    Ok(mib * 1.048_576)
}

/// ConsumerPerformance over the whole source topic on the primary; MB/s (10^6 bytes),
/// counted from the first fetch (its `fetch.MB.sec`), so the group join is left out.
pub fn consume_rate(topic: &str, records: u64) -> Result<f64> {
    let args: Vec<String> = [
        "--bootstrap-server",
        PRIMARY,
        "--topic",
        topic,
        "--num-records",
        &records.to_string(),
        "--timeout",
        "60000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = java("org.apache.kafka.tools.ConsumerPerformance", &args)?;
    // A header line of comma-separated names, then one line of values.
    let mut lines = out.lines().filter(|l| l.contains(','));
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| format!("ConsumerPerformance printed nothing: {out}"))?
        .split(',')
        .map(str::trim)
        .collect();
    let values: Vec<&str> = lines
        .next()
        .ok_or_else(|| format!("ConsumerPerformance printed no values: {out}"))?
        .split(',')
        .map(str::trim)
        .collect();
    let column = header
        .iter()
        .position(|h| *h == "fetch.MB.sec")
        .ok_or_else(|| format!("no fetch.MB.sec column in: {out}"))?;
    let mib: f64 = values
        .get(column)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("cannot read fetch.MB.sec in: {out}"))?;
    Ok(mib * 1.048_576)
}
