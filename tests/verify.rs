//! `strait verify` against the real test clusters: a faithful copy (with source gaps from
//! transaction markers and aborted records) verifies; a secondary on which one record was
//! altered and another lost does not, and the report names both places.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use futures::executor::block_on;
use rdkafka::admin::AdminOptions;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// 30 plain records, a committed transaction of 10 (its marker is a source gap), an
/// aborted one of 5, then 30 more; each record with headers (one null, one empty).
fn write_partition(topic: &str, partition: i32) {
    let plain = producer(PRIMARY);
    let txn: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", PRIMARY)
        .set("transactional.id", unique("strait-verify-txn"))
        .create()
        .unwrap();
    txn.init_transactions(Duration::from_secs(30)).unwrap();
    // Recent timestamps: older than retention.ms (7 days), the broker would delete them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let out = |i: usize| Out {
        partition,
        key: Some(format!("key-{partition}-{i}").into_bytes()),
        value: (i % 17 != 5).then(|| format!("value-{partition}-{i}").into_bytes()),
        headers: vec![("empty".into(), Some(vec![])), ("null".into(), None)],
        timestamp: Some(now - 60_000 + i as i64),
    };
    for i in 0..30 {
        send(&plain, topic, &out(i));
    }
    flush(&plain);
    for (commit, range) in [(true, 30..40), (false, 1000..1005)] {
        txn.begin_transaction().unwrap();
        for i in range {
            let value = format!("txn-{partition}-{i}");
            let key = format!("key-{partition}-{i}");
            txn.send(
                BaseRecord::to(topic)
                    .partition(partition)
                    .key(&key)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        }
        if commit {
            txn.commit_transaction(Duration::from_secs(30)).unwrap();
        } else {
            // A BaseProducer serves delivery reports only when flushed or polled.
            txn.flush(Duration::from_secs(30)).unwrap();
            txn.abort_transaction(Duration::from_secs(30)).unwrap();
        }
    }
    for i in 40..70 {
        send(&plain, topic, &out(i));
    }
    flush(&plain);
}

fn verify(config: &std::path::Path, flow: &str) -> (Option<i32>, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["verify", "--flow", flow, "--output", "json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}); stderr:\n{stderr}"));
    (out.status.code(), json, stderr)
}

/// The report of one partition of `topic` (the flow also copies its heartbeats).
fn partition_report<'a>(
    json: &'a serde_json::Value,
    topic: &str,
    partition: i64,
) -> &'a serde_json::Value {
    json[0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["topic"] == topic && p["partition"] == partition)
        .unwrap_or_else(|| panic!("no report for {topic}/{partition} in {json:#}"))
}

/// A flow with `fence = "transactions"` commits its copies in transactions, so the target
/// holds a commit marker after each transaction's copies in each partition: target
/// offsets run ahead of the records. The copy is still exact for `read_committed`
/// readers, and verify accounts for the markers.
#[test]
fn a_fenced_flows_copy_holds_commit_markers_and_verifies() {
    let topic = unique("verify-fenced");
    let target = format!("primary.{topic}");
    create_topic(PRIMARY, &topic, 2, &[]);
    write_partition(&topic, 0);
    write_partition(&topic, 1);
    let mut strait = Strait::start(&flow_config(
        "fenced",
        &topic,
        "prefix",
        "fence = \"transactions\"",
    ));
    wait_until(Duration::from_secs(60), "copied", || {
        partition_count(SECONDARY, &target).is_some() && count_all(SECONDARY, &target) >= 140
    });
    // More records, over several commit intervals: several transactions per partition.
    for round in 0..4 {
        produce_simple(PRIMARY, &topic, 2, 50, &format!("round-{round}"));
        std::thread::sleep(Duration::from_millis(700));
    }
    wait_until(Duration::from_secs(60), "copied", || {
        count_all(SECONDARY, &target) >= 340
    });
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());
    assert_exact_copy(&topic, &target);
    let (records, end) = (
        count_all(SECONDARY, &target),
        end_offsets(SECONDARY, &target),
    );
    assert!(
        end > records as i64,
        "the target ends at {end} with {records} records: no commit markers, so no transactions"
    );
    let (code, json, stderr) = verify(&strait.config, "fenced");
    assert_eq!(
        code,
        Some(0),
        "verify of a fenced copy failed:\n{json:#}\n{stderr}"
    );
    for p in 0..2 {
        let report = partition_report(&json, &topic, p);
        assert_eq!(report["status"], "verified", "{report:#}");
        assert_eq!(report["records"], 170, "{report:#}");
    }
}

#[test]
fn verify_passes_on_a_faithful_copy_and_names_a_corrupted_and_a_missing_record() {
    let topic = unique("verify-orders");
    let target = format!("primary.{topic}");
    create_topic(PRIMARY, &topic, 2, &[]);
    write_partition(&topic, 0);
    write_partition(&topic, 1);
    let sources = read_all(PRIMARY, &topic);
    assert_eq!(sources[&0].len(), 70);

    // Anchors only (the default provenance interval): the copies verify names below carry
    // no header, so it tells "missing" from "differs" by finding, by content, the source
    // record a differing copy is of.
    let mut strait = Strait::start(&flow_config("audit", &topic, "prefix", ""));
    wait_until(Duration::from_secs(60), "copied", || {
        partition_count(SECONDARY, &target).is_some() && count_all(SECONDARY, &target) >= 140
    });
    // A clean stop persists the map up to everything copied.
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());

    let (code, json, stderr) = verify(&strait.config, "audit");
    assert_eq!(
        code,
        Some(0),
        "verify of a faithful copy failed:\n{json:#}\n{stderr}"
    );
    for p in 0..2 {
        let report = partition_report(&json, &topic, p);
        assert_eq!(report["status"], "verified", "{report:#}");
        assert_eq!(report["records"], 70, "{report:#}");
        // 30 + 10 + 5 aborted + 2 markers + 30 source offsets.
        assert_eq!(report["source_to"], 77, "{report:#}");
        assert_eq!(report["source_end"], 77, "{report:#}");
        assert_eq!(report["target_to"], 70, "{report:#}");
    }
    assert!(
        stderr.contains("source offsets"),
        "no progress output:\n{stderr}"
    );

    // Damage the secondary as a faulty copier would: the same records written again,
    // except that on partition 0 the 51st copy's value is altered and on partition 1
    // the 21st record is lost (every later copy moves down one offset).
    let copies = read_all(SECONDARY, &target);
    block_on(admin(SECONDARY).delete_topics(&[target.as_str()], &AdminOptions::new())).unwrap();
    wait_until(Duration::from_secs(30), "target deleted", || {
        partition_count(SECONDARY, &target).is_none()
    });
    std::thread::sleep(Duration::from_secs(2));
    create_topic(SECONDARY, &target, 2, &[]);
    let rewrite = producer(SECONDARY);
    for (partition, records) in &copies {
        for (i, rec) in records.iter().enumerate() {
            let mut out = Out {
                partition: *partition,
                key: rec.key.clone(),
                value: rec.value.clone(),
                headers: rec.headers.clone(),
                timestamp: rec.timestamp,
            };
            match (*partition, i) {
                (0, 50) => out.value = Some(b"tampered".to_vec()),
                (1, 20) => continue,
                _ => {}
            }
            send(&rewrite, &target, &out);
        }
    }
    flush(&rewrite);

    let (code, json, stderr) = verify(&strait.config, "audit");
    assert_ne!(
        code,
        Some(0),
        "verify passed a damaged copy:\n{json:#}\n{stderr}"
    );

    // Partition 0: target offset 50 holds the copy of the 51st source record, whose source
    // offset is higher (transaction markers and aborted records shift the two sides),
    // with the wrong value.
    let corrupted = &partition_report(&json, &topic, 0)["mismatch"];
    let source_offset = sources[&0][50].offset;
    assert!(source_offset > 50, "the source has gaps before it");
    assert_eq!(corrupted["kind"], "content_differs", "{corrupted:#}");
    assert_eq!(corrupted["source_offset"], source_offset, "{corrupted:#}");
    assert_eq!(corrupted["target_offset"], 50, "{corrupted:#}");
    assert_eq!(corrupted["target_record"]["value_preview"], "tampered");
    assert_eq!(
        corrupted["source_record"]["value_preview"],
        sources[&0][50]
            .value
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap()
            .as_ref()
    );
    assert_eq!(partition_report(&json, &topic, 0)["records"], 50);

    // Partition 1: source offset 20 has no copy; target offset 20 holds source 21's.
    let missing = &partition_report(&json, &topic, 1)["mismatch"];
    assert_eq!(missing["kind"], "missing_on_target", "{missing:#}");
    assert_eq!(missing["source_offset"], 20, "{missing:#}");
    assert_eq!(missing["target_offset"], 20, "{missing:#}");
    assert_eq!(missing["target_record"]["copy_of_source_offset"], 21);
    assert_eq!(
        missing["target_record"]["headers"], 2,
        "the copy at target offset 20 should be one without a provenance header: {missing:#}"
    );
    assert_eq!(partition_report(&json, &topic, 1)["records"], 20);

    // The text report says the same in words.
    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["verify", "--flow", "audit", "--config"])
        .arg(&strait.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(!out.status.success());
    assert!(
        text.contains(&format!(
            "first difference: source offset {source_offset}, target offset 50: the copy differs"
        )),
        "{text}"
    );
    assert!(
        text.contains("first difference: source offset 20, target offset 20: the copy is missing"),
        "{text}"
    );
}

/// A target topic that stamps records with the broker's clock
/// (`message.timestamp.type=LogAppendTime`) cannot keep the source's timestamps: its
/// copies verify on everything else.
#[test]
fn verify_passes_on_a_target_that_stamps_its_own_timestamps() {
    let topic = unique("verify-lat");
    let target = format!("primary.{topic}");
    create_topic(PRIMARY, &topic, 1, &[]);
    create_topic(
        SECONDARY,
        &target,
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    );
    write_partition(&topic, 0);
    let mut strait = Strait::start(&flow_config("auditlat", &topic, "prefix", ""));
    wait_until(Duration::from_secs(60), "copied", || {
        count_all(SECONDARY, &target) >= 70
    });
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());
    let source = &read_all(PRIMARY, &topic)[&0];
    let copies = &read_all(SECONDARY, &target)[&0];
    assert_ne!(
        source[0].timestamp, copies[0].timestamp,
        "the broker set the copy's timestamp"
    );
    let (code, json, stderr) = verify(&strait.config, "auditlat");
    assert_eq!(code, Some(0), "{json:#}\n{stderr}");
    let report = partition_report(&json, &topic, 0);
    assert_eq!(report["status"], "verified", "{report:#}");
    assert_eq!(report["records"], 70, "{report:#}");
}

/// Records on the target that are no copies are reported with their offsets: duplicates
/// appended after the newest copy (the persisted map ends before them), and someone
/// else's record written between two copies while Strait copied.
#[test]
fn verify_names_records_that_are_no_copies_after_and_between_the_copies() {
    let topic = unique("verify-extra");
    let target = format!("primary.{topic}");
    create_topic(PRIMARY, &topic, 2, &[]);
    produce_simple(PRIMARY, &topic, 2, 60, "first");
    let mut strait = Strait::start(&flow_config("auditextra", &topic, "prefix", ""));
    wait_until(Duration::from_secs(60), "copied", || {
        partition_count(SECONDARY, &target).is_some() && count_all(SECONDARY, &target) >= 60
    });
    let (code, json, stderr) = verify(&strait.config, "auditextra");
    assert_eq!(code, Some(0), "a faithful copy:\n{json:#}\n{stderr}");

    // Someone else writes to partition 1 of the copy; Strait then copies ten more.
    produce_into(SECONDARY, &target, 1, 1, "someone else");
    produce_into(PRIMARY, &topic, 1, 10, "second");
    wait_until(Duration::from_secs(60), "copied again", || {
        count_all(SECONDARY, &target) >= 71
    });
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());

    // Ten duplicates of partition 0's first copies, appended after the newest.
    let copies = read_all(SECONDARY, &target);
    let again = producer(SECONDARY);
    for rec in &copies[&0][..10] {
        let out = Out {
            partition: 0,
            key: rec.key.clone(),
            value: rec.value.clone(),
            headers: rec.headers.clone(),
            timestamp: rec.timestamp,
        };
        send(&again, &target, &out);
    }
    flush(&again);

    let (code, json, stderr) = verify(&strait.config, "auditextra");
    assert_eq!(code, Some(1), "{json:#}\n{stderr}");
    for (partition, first_extra) in [(0, 30), (1, 30)] {
        let report = partition_report(&json, &topic, partition);
        assert_eq!(report["status"], "mismatch", "{report:#}");
        assert_eq!(report["mismatch"]["kind"], "not_a_copy", "{report:#}");
        assert_eq!(
            report["mismatch"]["target_offset"], first_extra,
            "{report:#}"
        );
    }
}
