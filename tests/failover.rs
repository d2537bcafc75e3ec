//! DR failover: the Strait daemon restarts (reloading the offset map from the target),
//! then the primary cluster goes away, and a group's offsets are still translated exactly
//! from what is on the secondary alone.
//!
//! This stops the primary broker, so it lives in a test binary of its own (cargo runs
//! test binaries one after another) and restarts the primary when done, even on failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

fn kafka_sh(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    let status = Command::new(script).args(args).status().unwrap();
    assert!(status.success(), "scripts/kafka.sh {args:?} failed");
}

/// Brings the primary back whatever happens in the test.
struct PrimaryBack;

impl Drop for PrimaryBack {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
        let _ = Command::new(script).args(["start", "primary"]).status();
    }
}

fn commit_on_primary(group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", PRIMARY)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

/// Reads `group` on the secondary from its committed offsets to the end of each
/// partition; returns the source offsets (from provenance) per partition.
fn resume(group: &str, topic: &str, partitions: i32) -> Vec<Vec<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", SECONDARY)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Stored).unwrap();
    }
    let committed = consumer
        .committed_offsets(tpl.clone(), Duration::from_secs(10))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut next: Vec<i64> = (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).unwrap().offset() {
                Offset::Offset(o) => o,
                other => panic!("{group} has no committed offset on {topic}[{p}]: {other:?}"),
            },
        )
        .collect();
    let high: Vec<i64> = (0..partitions)
        .map(|p| watermarks(SECONDARY, topic, p).1)
        .collect();
    let mut read = vec![Vec::new(); partitions as usize];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (0..partitions as usize).any(|p| next[p] < high[p]) {
        assert!(std::time::Instant::now() < deadline, "resuming {group}");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let p = m.partition() as usize;
            next[p] = m.offset() + 1;
            let header = m
                .headers()
                .unwrap()
                .iter()
                .filter(|h| h.key == "strait.source")
                .last()
                .unwrap();
            let text = String::from_utf8(header.value.unwrap().to_vec()).unwrap();
            read[p].push(text.rsplit('/').next().unwrap().parse().unwrap());
        }
    }
    read
}

#[test]
fn failover_translates_from_the_secondary_alone() {
    let topic = unique("dr-orders");
    let target = format!("primary.{topic}");
    create_topic(PRIMARY, &topic, 3, &[]);
    produce_simple(PRIMARY, &topic, 3, 3_000, "first");

    let group = unique("dr-app");
    let mut strait = Strait::start(&flow_config(
        "dr",
        &topic,
        "prefix",
        "[flows.dr.offset_sync]\ncheckpoint_interval = \"1s\"\ngroups = [\"dr-app-.*\"]",
    ));
    wait_until(Duration::from_secs(60), "first batch copied", || {
        partition_count(SECONDARY, &target).is_some() && count_all(SECONDARY, &target) >= 3_000
    });

    // The daemon restarts (SIGKILL: its newest map entries may be lost) and reloads the
    // map from the secondary; replication and checkpointing go on.
    strait.kill9();
    produce_simple(PRIMARY, &topic, 3, 3_000, "second");
    strait.restart();
    wait_until(Duration::from_secs(60), "second batch copied", || {
        count_all(SECONDARY, &target) >= 6_000
    });
    let sources = read_all(PRIMARY, &topic);
    let stops: Vec<(i32, i64)> = (0..3).map(|p| (p, [1, 1_234, 1_999][p as usize])).collect();
    commit_on_primary(&group, &topic, &stops);

    // Wait for a checkpoint of exactly these offsets, then the disaster: Strait and the
    // primary are gone.
    let config = strait.config.clone();
    wait_until(Duration::from_secs(30), "checkpoints of the group", || {
        let out = Command::new(env!("CARGO_BIN_EXE_strait"))
            .args(["offsets", "translate", "--config"])
            .arg(&config)
            .args(["--flow", "dr", "--group", &group])
            .output()
            .unwrap();
        out.status.success()
    });
    std::thread::sleep(Duration::from_secs(3));
    strait.terminate();
    let _primary_back = PrimaryBack;
    kafka_sh(&["stop", "primary"]);

    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["offsets", "translate", "--config"])
        .arg(&config)
        .args(["--flow", "dr", "--group", &group, "--apply"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "translate --apply failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("last checkpoints"),
        "not from checkpoints:\n{stdout}"
    );
    assert!(
        stdout.contains(&target),
        "offsets must land on the renamed topic:\n{stdout}"
    );

    let read = resume(&group, &target, 3);
    for (p, stop) in stops {
        let expected: Vec<i64> = sources[&p]
            .iter()
            .map(|r| r.offset)
            .filter(|o| *o >= stop)
            .collect();
        assert_eq!(
            read[p as usize], expected,
            "partition {p}: after failover the group must read exactly the records after {stop}"
        );
    }
}
