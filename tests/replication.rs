//! Replication against two real Kafka clusters (see tests/common/mod.rs).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

/// Three topics × 6 partitions, 108k records mixing keys, null keys, tombstones, headers
/// (with a null-valued one and an empty one) and explicit timestamps. The target equals
/// the source record by record.
#[test]
fn records_are_copied_exactly() {
    let topics: Vec<String> = (0..3).map(|i| unique(&format!("exact{i}"))).collect();
    for t in &topics {
        create_topic(PRIMARY, t, 6, &[]);
    }
    let producer = producer(PRIMARY);
    let base_ts = 1_700_000_000_000i64;
    for (ti, t) in topics.iter().enumerate() {
        for i in 0..36_000usize {
            let key = match i % 7 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(format!("key-{}", i % 1000).into_bytes()),
            };
            let value = match i % 11 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(format!("value {ti}/{i} {}", "x".repeat(i % 200)).into_bytes()),
            };
            let headers = match i % 5 {
                0 => vec![],
                1 => vec![("h-null".into(), None), ("h-empty".into(), Some(vec![]))],
                _ => vec![
                    ("a".into(), Some(b"1".to_vec())),
                    ("a".into(), Some(b"2".to_vec())),
                    ("b".into(), None),
                ],
            };
            let out = Out {
                partition: (i % 6) as i32,
                key,
                value,
                headers,
                timestamp: if i % 3 == 0 {
                    None
                } else {
                    Some(base_ts + i as i64)
                },
            };
            send(&producer, t, &out);
        }
    }
    flush(&producer);

    let strait = Strait::start(&flow_config("exact", &topics.join("|"), "prefix", ""));
    for t in &topics {
        let target = format!("primary.{t}");
        wait_until(
            Duration::from_secs(60),
            &format!("{target} complete"),
            || {
                partition_count(SECONDARY, &target).is_some()
                    && end_offsets(SECONDARY, &target) >= 36_000
            },
        );
    }
    for t in &topics {
        assert_exact_copy(t, &format!("primary.{t}"));
    }
    let metrics = strait.metrics();
    let copied = metric_value(
        &metrics,
        "strait_records_replicated_total",
        &format!("topic=\"{}\"", topics[0]),
    );
    assert_eq!(copied, Some(36_000.0), "metrics:\n{metrics}");
    assert_eq!(
        partition_count(SECONDARY, &format!("primary.{}", topics[0])),
        Some(6)
    );
}
