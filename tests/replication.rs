//! Replication against two real Kafka clusters (see tests/common/mod.rs).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use rdkafka::producer::Producer;

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
    // Recent explicit timestamps: older ones would fall to the 7-day retention (checked
    // every 5 s on the test bed) and vanish from both clusters mid-test.
    let base_ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
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
    // librdkafka warns about `enable.gapless.guarantee` (experimental) for every producer
    // that sets it; Strait's do on purpose, so the warning stays out of the log at info.
    let logs = strait.logs();
    assert!(
        !logs.contains("enable.gapless.guarantee"),
        "a warning about Strait's own producer settings:\n{logs}"
    );
    let metrics = strait.metrics();
    let copied = metric_value(
        &metrics,
        "strait_records_replicated_total",
        &format!("topic=\"{}\"", topics[0]),
    );
    assert_eq!(copied, Some(36_000.0), "metrics:\n{metrics}");
    // Lag is exported per flow and topic, and reaches 0 once everything is copied.
    let topic_label = format!("topic=\"{}\"", topics[1]);
    wait_until(Duration::from_secs(20), "lag gauge at 0", || {
        metric_value(
            &strait.metrics(),
            "strait_replication_lag_records{",
            &topic_label,
        ) == Some(0.0)
    });
    let expected_bytes: usize = read_all(PRIMARY, &topics[1])
        .values()
        .flatten()
        .map(|r| r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len))
        .sum();
    let bytes = metric_value(
        &strait.metrics(),
        "strait_bytes_replicated_total",
        &topic_label,
    );
    assert_eq!(
        bytes,
        Some(expected_bytes as f64),
        "key + value bytes counted"
    );
    assert_eq!(
        partition_count(SECONDARY, &format!("primary.{}", topics[0])),
        Some(6)
    );
}

/// A compacted topic with offset gaps, and a transactional topic with committed and
/// aborted transactions, under identity naming: only committed records arrive, in order.
#[test]
fn compaction_gaps_and_transactions() {
    let compacted = unique("compacted");
    let txn = unique("txn");
    create_topic(
        PRIMARY,
        &compacted,
        2,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.compaction.lag.ms", "0"),
        ],
    );
    create_topic(PRIMARY, &txn, 3, &[]);

    // Rounds of overwrites, with pauses so segments roll and the cleaner can work.
    let p = producer(PRIMARY);
    for round in 0..8 {
        for key in 0..200 {
            let out = Out {
                partition: key % 2,
                key: Some(format!("key-{key}").into_bytes()),
                value: Some(format!("round {round}").into_bytes()),
                headers: vec![],
                timestamp: None,
            };
            send(&p, &compacted, &out);
        }
        flush(&p);
        std::thread::sleep(Duration::from_millis(300));
    }
    // Wait until compaction left gaps, then until it stops changing the log.
    let mut previous = 0usize;
    wait_until(
        Duration::from_secs(90),
        "compaction to leave offset gaps and settle",
        || {
            let records = count_all(PRIMARY, &compacted);
            let spanned = end_offsets(PRIMARY, &compacted) as usize;
            let settled = records == previous && records < spanned;
            previous = records;
            if !settled {
                std::thread::sleep(Duration::from_secs(2));
            }
            settled
        },
    );

    // Committed, aborted, committed, aborted, committed: markers and aborted records
    // leave gaps that read_committed skips.
    let tp: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", PRIMARY)
        .set("transactional.id", unique("strait-test-txn"))
        .create()
        .unwrap();
    tp.init_transactions(Duration::from_secs(30)).unwrap();
    for batch in 0..5 {
        tp.begin_transaction().unwrap();
        for i in 0..150 {
            let value = format!("batch {batch} record {i}");
            let rec = rdkafka::producer::BaseRecord::<str, str>::to(&txn)
                .partition(i % 3)
                .key("k")
                .payload(&value);
            tp.send(rec).map_err(|(e, _)| e).unwrap();
        }
        tp.flush(Duration::from_secs(30)).unwrap();
        if batch % 2 == 0 {
            tp.commit_transaction(Duration::from_secs(30)).unwrap();
        } else {
            tp.abort_transaction(Duration::from_secs(30)).unwrap();
        }
    }
    assert_eq!(
        count_all(PRIMARY, &txn),
        450,
        "three committed transactions of 150"
    );

    let compacted_records = count_all(PRIMARY, &compacted);
    let _strait = Strait::start(&flow_config(
        "gaps",
        &format!("{compacted}|{txn}"),
        "identity",
        "",
    ));
    wait_until(Duration::from_secs(60), "both topics copied", || {
        partition_count(SECONDARY, &txn).is_some()
            && partition_count(SECONDARY, &compacted).is_some()
            && count_all(SECONDARY, &txn) >= 450
            && count_all(SECONDARY, &compacted) >= compacted_records
    });
    assert_exact_copy(&compacted, &compacted);
    assert_exact_copy(&txn, &txn);
    let target_values: Vec<Vec<u8>> = read_all(SECONDARY, &txn)
        .into_values()
        .flatten()
        .filter_map(|r| r.value)
        .collect();
    assert!(
        target_values
            .iter()
            .all(|v| !v.starts_with(b"batch 1") && !v.starts_with(b"batch 3")),
        "aborted records reached the target"
    );
}

/// A data config changed on the source reaches the copy (retention here), and the
/// target's own settings on the copy stay as they were.
#[test]
fn topic_config_changes_reach_the_copy() {
    let topic = unique("configs");
    let target = format!("primary.{topic}");
    create_topic(PRIMARY, &topic, 1, &[("retention.ms", "3600000")]);
    produce_simple(PRIMARY, &topic, 1, 10, "configs");
    let _strait = Strait::start(&flow_config("configs", &topic, "prefix", ""));
    wait_until(
        Duration::from_secs(60),
        "copy created with the source's retention",
        || {
            partition_count(SECONDARY, &target).is_some()
                && topic_configs(SECONDARY, &target)
                    .get("retention.ms")
                    .map(String::as_str)
                    == Some("3600000")
        },
    );
    // The target's operator sets something of their own on the copy.
    let mut own = topic_configs(SECONDARY, &target);
    own.insert("min.insync.replicas".into(), "1".into());
    let own_pairs: Vec<(&str, &str)> = own.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    set_topic_configs(SECONDARY, &target, &own_pairs);

    set_topic_configs(
        PRIMARY,
        &topic,
        &[
            ("retention.ms", "7200000"),
            ("max.message.bytes", "2000000"),
        ],
    );
    wait_until(Duration::from_secs(30), "new retention on the copy", || {
        let c = topic_configs(SECONDARY, &target);
        c.get("retention.ms").map(String::as_str) == Some("7200000")
            && c.get("max.message.bytes").map(String::as_str) == Some("2000000")
    });
    let after = topic_configs(SECONDARY, &target);
    assert_eq!(
        after.get("min.insync.replicas").map(String::as_str),
        Some("1"),
        "the target's own config was dropped: {after:?}"
    );
}

/// A topic created while running is replicated, and so are partitions added to one.
#[test]
fn discovers_new_topics_and_partitions() {
    let stem = unique("disc");
    let first = format!("{stem}-a");
    let later = format!("{stem}-b");
    create_topic(PRIMARY, &first, 2, &[]);
    produce_simple(PRIMARY, &first, 2, 100, "before");
    let strait = Strait::start(&flow_config("disc", &format!("{stem}-.*"), "prefix", ""));
    let target_first = format!("primary.{first}");
    wait_until(Duration::from_secs(60), "first topic copied", || {
        partition_count(SECONDARY, &target_first).is_some()
            && count_all(SECONDARY, &target_first) == 100
    });

    create_topic(PRIMARY, &later, 3, &[("retention.ms", "86400000")]);
    produce_simple(PRIMARY, &later, 3, 300, "new topic");
    add_partitions(PRIMARY, &first, 4);
    wait_until(Duration::from_secs(20), "source partitions visible", || {
        partition_count(PRIMARY, &first) == Some(4)
    });
    produce_simple(PRIMARY, &first, 4, 400, "after growth");

    let target_later = format!("primary.{later}");
    // The refresh interval is 2 s. 30 s leaves room for a slow machine and is still well
    // inside the minute it took while the producer and the tail scanner kept a grown
    // topic's old partition count (librdkafka's cache), until the flow restarted.
    wait_until(
        Duration::from_secs(30),
        "new topic and new partitions copied",
        || {
            partition_count(SECONDARY, &target_later).is_some()
                && count_all(SECONDARY, &target_later) == 300
                && partition_count(SECONDARY, &target_first) == Some(4)
                && count_all(SECONDARY, &target_first) == 500
        },
    );
    assert_exact_copy(&first, &target_first);
    assert_exact_copy(&later, &target_later);
    // The data config travelled with the topic.
    let described = futures::executor::block_on(admin(SECONDARY).describe_configs(
        [&rdkafka::admin::ResourceSpecifier::Topic(&target_later)],
        &rdkafka::admin::AdminOptions::new(),
    ))
    .unwrap();
    let resource = described.into_iter().next().unwrap().unwrap();
    let retention = resource
        .entries
        .iter()
        .find(|e| e.name == "retention.ms")
        .and_then(|e| e.value.clone());
    assert_eq!(retention.as_deref(), Some("86400000"), "{}", strait.logs());
    let logs = strait.logs();
    assert!(!logs.contains("flow interrupted"), "{logs}");
}

/// librdkafka's consumer notices new source partitions at its own metadata refresh and
/// may assign them before the flow's next refresh has grown the target. Here its refresh
/// runs every 500 ms and the flow's not at all after the start, so the assignment always
/// comes first: it must grow the target itself. (Before it did, the assignment waited a
/// minute for target partitions that did not exist, and the flow restarted.)
#[test]
fn partitions_assigned_before_the_flow_refreshes_are_replicated() {
    let topic = unique("early");
    create_topic(PRIMARY, &topic, 2, &[]);
    produce_simple(PRIMARY, &topic, 2, 100, "before");
    let config = flow_config("early", &topic, "prefix", "")
        .replace(r#"refresh_interval = "2s""#, r#"refresh_interval = "1h""#)
        .replace(
            "[clusters.secondary]",
            "[clusters.primary.properties]\n\"topic.metadata.refresh.interval.ms\" = \"500\"\n\n[clusters.secondary]",
        );
    let strait = Strait::start(&config);
    let target = format!("primary.{topic}");
    wait_until(Duration::from_secs(60), "first records copied", || {
        partition_count(SECONDARY, &target).is_some() && count_all(SECONDARY, &target) == 100
    });

    add_partitions(PRIMARY, &topic, 4);
    wait_until(Duration::from_secs(20), "source partitions visible", || {
        partition_count(PRIMARY, &topic) == Some(4)
    });
    produce_simple(PRIMARY, &topic, 4, 400, "after growth");
    // Well inside the minute the old behaviour took, with room for a slow machine.
    wait_until(Duration::from_secs(30), "new partitions copied", || {
        partition_count(SECONDARY, &target) == Some(4) && count_all(SECONDARY, &target) == 500
    });
    assert_exact_copy(&topic, &target);
    let logs = strait.logs();
    assert!(!logs.contains("flow interrupted"), "{logs}");
}

/// Graceful restarts and `kill -9` at random points while a live producer keeps writing:
/// every source record is on the target exactly once.
#[test]
fn restarts_and_kill9_leave_each_record_exactly_once() {
    let topic = unique("crash");
    interrupt_under_a_live_producer(&topic);
    assert_exact_copy(&topic, &format!("primary.{topic}"));
}

/// The same on a target topic that stamps records with the broker's clock
/// (`message.timestamp.type=LogAppendTime`, a common platform default): copies between
/// anchors differ from their originals in the timestamp alone, and must still be
/// recognised after a crash, or every restart copies up to an interval of records again.
#[test]
fn kill9_on_a_log_append_time_target_leaves_each_record_exactly_once() {
    let topic = unique("crash-lat");
    let target = format!("primary.{topic}");
    create_topic(
        SECONDARY,
        &target,
        6,
        &[("message.timestamp.type", "LogAppendTime")],
    );
    interrupt_under_a_live_producer(&topic);
    assert_exact_copy_but_timestamps(&topic, &target);
}

/// Copies `topic` (created here, on the primary) while a producer writes to it, with three
/// `kill -9` and one graceful stop of Strait mid-stream, and waits until every record has
/// arrived (plus a moment for a duplicate to show up). The caller checks the copy.
fn interrupt_under_a_live_producer(topic: &str) {
    use rand::Rng;
    const PRELOAD: usize = 50_000;
    const LIVE: usize = 100_000;
    create_topic(PRIMARY, topic, 6, &[]);
    produce_simple(PRIMARY, topic, 6, PRELOAD, "preload");
    let live = {
        let topic = topic.to_string();
        // About 2,500 records/s for about 40 s, so every interruption lands mid-stream.
        std::thread::spawn(move || {
            let p = producer(PRIMARY);
            for i in 0..LIVE {
                let out = Out {
                    partition: (i % 6) as i32,
                    key: None,
                    value: Some(format!("live {i}").into_bytes()),
                    headers: vec![],
                    timestamp: None,
                };
                send(&p, &topic, &out);
                if i % 250 == 0 {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            flush(&p);
        })
    };
    let target = format!("primary.{topic}");
    let mut strait = Strait::start(&flow_config("crash", topic, "prefix", ""));
    let mut rng = rand::rng();
    let copied = |t: &str| {
        if partition_count(SECONDARY, t).is_some() {
            end_offsets(SECONDARY, t)
        } else {
            0
        }
    };
    let (mut kills, mut graceful) = (0, 0);
    for round in 0..4 {
        let before = copied(&target);
        wait_until(
            Duration::from_secs(60),
            "progress before interrupting",
            || copied(&target) > before,
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
        let at = copied(&target);
        if round == 2 {
            assert_eq!(
                strait.terminate(),
                Some(0),
                "graceful stop exits 0:\n{}",
                strait.logs()
            );
            graceful += 1;
        } else {
            strait.kill9();
            kills += 1;
        }
        eprintln!("round {round}: interrupted with {at} records on the target");
        assert!(
            !live.is_finished(),
            "round {round} came after the producer finished; not mid-stream"
        );
        strait.restart();
    }
    live.join().unwrap();
    assert_eq!((kills, graceful), (3, 1));
    let total = (PRELOAD + LIVE) as i64;
    wait_until(Duration::from_secs(120), "every record copied", || {
        copied(&target) >= total
    });
    // Give a duplicate, if one were coming, the time to show up.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(strait.terminate(), Some(0));
}

/// A wide topic whose copy Strait creates: the new target partitions' leaders take
/// seconds to settle, and that must not restart the flow (at 1,200 partitions it did,
/// with back-off, for half a minute).
#[test]
fn wide_topic_copies_without_restarts() {
    let topic = unique("wide");
    create_topic(PRIMARY, &topic, 600, &[]);
    produce_simple(PRIMARY, &topic, 600, 6_000, "wide");
    let config = flow_config("wide", &topic, "identity", "");
    let mut strait = Strait::start(&config);
    wait_until(Duration::from_secs(120), "all 6,000 records copied", || {
        end_offsets(SECONDARY, &topic) >= 6_000
    });
    assert_exact_copy(&topic, &topic);
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());
    assert!(
        !strait.logs().contains("flow interrupted"),
        "the flow restarted:\n{}",
        strait.logs()
    );
    assert_eq!(
        strait.logs().matches("partitions assigned").count(),
        1,
        "one line for the assignment, not one per partition:\n{}",
        strait.logs()
    );
}

/// Two instances share a flow; stopping one hands its partitions to the other, and
/// nothing is lost or duplicated.
#[test]
fn two_instances_share_a_flow() {
    two_instances_share(true);
}

/// The same without provenance headers, where nothing on the target tells the next owner
/// what was copied after the last commit: the hand-over is duplicate-free only if the
/// stopping instance committed before letting go (as docs/architecture.md promises), also
/// when it is stopped in the middle of a rebalance, where the group refuses commits until
/// the member has rejoined. With librdkafka's 3 s heartbeat
/// (Strait's default is 1 s) B's share comes about 3 s after A's revocation, and A is
/// stopped inside that window in most runs.
#[test]
fn two_instances_share_a_flow_without_provenance_headers() {
    two_instances_share(false);
}

fn two_instances_share(headers: bool) {
    let topic = unique("shared");
    create_topic(PRIMARY, &topic, 6, &[]);
    produce_simple(PRIMARY, &topic, 6, 60_000, "preload");
    let extra = if headers {
        ""
    } else {
        "provenance_header = false\n[flows.shared.offset_sync]\nenabled = false"
    };
    let mut config = flow_config("shared", &topic, "identity", extra);
    if !headers {
        config = config.replace(
            "[clusters.secondary]",
            "[clusters.primary.properties]\n\"heartbeat.interval.ms\" = \"3000\"\n\n[clusters.secondary]",
        );
    }
    let mut a = Strait::start(&config);
    wait_until(Duration::from_secs(60), "instance A copying", || {
        partition_count(SECONDARY, &topic).is_some() && end_offsets(SECONDARY, &topic) > 0
    });
    let b = Strait::start(&config);
    wait_until(
        Duration::from_secs(60),
        "instance B receives a share of the partitions",
        || b.logs().contains("partitions assigned"),
    );
    produce_simple(PRIMARY, &topic, 6, 30_000, "while shared");
    assert_eq!(a.terminate(), Some(0), "A exits cleanly:\n{}", a.logs());
    assert!(
        a.logs().contains("partitions revoked"),
        "A hands over its partitions:\n{}",
        a.logs()
    );
    // Committed before letting go, even when the stop lands in a rebalance (B's
    // assignment comes in a second round, a heartbeat after A's revocation): otherwise B
    // starts from an older commit, and only the provenance headers keep it from copying
    // again.
    assert!(
        !a.logs().contains("commit failed") && !a.logs().contains("commit on hand-over failed"),
        "A commits before handing over:\n{}",
        a.logs()
    );
    produce_simple(PRIMARY, &topic, 6, 10_000, "after hand-over");
    wait_until(Duration::from_secs(90), "B copies everything", || {
        end_offsets(SECONDARY, &topic) >= 100_000
    });
    std::thread::sleep(Duration::from_secs(2));
    if headers {
        assert_exact_copy(&topic, &topic);
    } else {
        assert_exact_copy_without_headers(&topic, &topic);
    }
    // Summed over B's "partitions assigned flow=shared partitions=N topics=…" lines.
    let b_assigned: usize = b
        .logs()
        .lines()
        .filter(|l| l.contains("partitions assigned"))
        .filter_map(|l| {
            l.split(" partitions=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert!(
        b_assigned >= 6,
        "B took over all 6 partitions ({b_assigned} assignments):\n{}",
        b.logs()
    );
}

/// Writes 12 records of 100 bytes to partition 0 of `topic`, except the one at offset 10,
/// which has 20,000.
fn write_twelve_with_a_large_eleventh(topic: &str) {
    let p = producer(PRIMARY);
    for i in 0..12 {
        let size = if i == 10 { 20_000 } else { 100 };
        send(
            &p,
            topic,
            &Out {
                partition: 0,
                key: None,
                value: Some(vec![b'x'; size]),
                headers: vec![],
                timestamp: None,
            },
        );
    }
    flush(&p);
}

/// Waits until all 12 records of [`write_twelve_with_a_large_eleventh`] are on the
/// target, then checks that each is there exactly once.
fn all_twelve_copied_exactly_once(topic: &str) {
    wait_until(
        Duration::from_secs(60),
        "all 12 records after the fix",
        || count_all(SECONDARY, topic) >= 12,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_exact_copy(topic, topic);
}

/// A record the target refuses stops the flow with an error naming the record; nothing
/// is skipped: once the operator raises the limit, a restart copies everything exactly once.
#[test]
fn refused_record_stops_the_flow_with_a_clear_error() {
    let topic = unique("toolarge");
    create_topic(PRIMARY, &topic, 1, &[]);
    create_topic(SECONDARY, &topic, 1, &[("max.message.bytes", "4096")]);
    write_twelve_with_a_large_eleventh(&topic);
    let mut strait = Strait::start(&flow_config("toolarge", &topic, "identity", ""));
    let code = strait.wait_exit(Duration::from_secs(90));
    assert_eq!(code, Some(1), "{}", strait.logs());
    let logs = strait.logs();
    assert!(
        logs.contains(&format!("{topic}[0] offset 10 (20000 bytes")),
        "error names the record:\n{logs}"
    );
    assert!(
        logs.contains("max.message.bytes"),
        "error says what to change:\n{logs}"
    );
    assert!(
        count_all(SECONDARY, &topic) < 11,
        "nothing at or after the refused record arrived"
    );

    let alter = rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic(&topic))
        .set("max.message.bytes", "1048576");
    let altered = futures::executor::block_on(
        admin(SECONDARY).alter_configs([&alter], &rdkafka::admin::AdminOptions::new()),
    )
    .unwrap();
    assert!(altered.iter().all(Result::is_ok));
    strait.restart();
    all_twelve_copied_exactly_once(&topic);
}

/// Two flows with identity naming in opposite directions, each in a process of its own
/// so that no config validation sees both: a flow never copies a record whose provenance
/// header says it came from the flow's own target. The reverse flow stops with an error
/// saying so, and no record goes back.
#[test]
fn a_copy_is_never_copied_back_to_the_cluster_it_came_from() {
    const RECORDS: usize = 100;
    let topic = unique("loop");
    create_topic(PRIMARY, &topic, 2, &[]);
    create_topic(SECONDARY, &topic, 2, &[]);
    let forward = Strait::start(&flow_config("there", &topic, "identity", ""));
    let reverse_config = format!(
        r#"
[clusters.primary]
bootstrap_servers = "{PRIMARY}"

[clusters.secondary]
bootstrap_servers = "{SECONDARY}"

[flows.back]
source = "secondary"
target = "primary"
topics = ["{topic}"]
naming = "identity"
refresh_interval = "2s"
group_id = "{group}"

[tuning]
commit_interval = "500ms"
"#,
        group = unique("strait-test-back")
    );
    let mut reverse = Strait::start(&reverse_config);
    produce_simple(PRIMARY, &topic, 2, RECORDS, "origin");
    wait_until(Duration::from_secs(60), "the records copied", || {
        count_all(SECONDARY, &topic) >= RECORDS
    });
    assert_eq!(
        reverse.wait_exit(Duration::from_secs(60)),
        Some(1),
        "the reverse flow stops:\n{}",
        reverse.logs()
    );
    let logs = reverse.logs();
    assert!(
        logs.contains("copying it back would loop") && logs.contains("'primary'"),
        "the error says why:\n{logs}"
    );
    // Time for a copy going back, or coming again, to show.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count_all(PRIMARY, &topic), RECORDS, "nothing came back");
    assert_eq!(
        count_all(SECONDARY, &topic),
        RECORDS,
        "nothing copied twice"
    );
    drop(forward);
}

/// Two flows with identity naming in opposite directions in one config, each stamping
/// every copy (`provenance_interval = 1`): applications write the same topic on both
/// clusters, before Strait starts, while it copies and after a `kill -9`, and each cluster
/// ends with every record of both exactly once, each application's records in the order
/// written. Neither flow copies the other's copies back, and neither reports the other
/// cluster's own records as foreign.
#[test]
fn identity_flows_both_ways_copy_each_record_once_to_the_other_cluster() {
    const PER_ROUND: usize = 600;
    let topic = unique("twoway");
    create_topic(PRIMARY, &topic, 3, &[]);
    create_topic(SECONDARY, &topic, 3, &[]);
    let config = format!(
        r#"{}
[flows.west]
source = "secondary"
target = "primary"
topics = ["{topic}"]
naming = "identity"
provenance_interval = 1
refresh_interval = "2s"
group_id = "{}"
"#,
        flow_config("east", &topic, "identity", "provenance_interval = 1"),
        unique("strait-test-west"),
    );
    let write_round = |round: &str, records: usize| {
        produce_simple(PRIMARY, &topic, 3, records, &format!("east-{round}"));
        produce_simple(SECONDARY, &topic, 3, records, &format!("west-{round}"));
    };
    write_round("before", PER_ROUND);
    let mut strait = Strait::start(&config);
    for cluster in [PRIMARY, SECONDARY] {
        wait_until(Duration::from_secs(60), "the first records copied", || {
            count_all(cluster, &topic) >= 2 * PER_ROUND
        });
    }
    // Written in small rounds while both flows copy, so that each cluster's own records
    // and the copies coming in land between each other.
    const WHILE_ROUNDS: usize = 6;
    for round in 0..WHILE_ROUNDS {
        write_round(&format!("while{round}"), PER_ROUND / WHILE_ROUNDS);
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut logs = strait.logs();
    strait.kill9();
    write_round("after-kill", PER_ROUND);
    strait.restart();

    let total = 2 * 3 * PER_ROUND;
    for cluster in [PRIMARY, SECONDARY] {
        wait_until(
            Duration::from_secs(90),
            "every record on both clusters",
            || count_all(cluster, &topic) >= total,
        );
    }
    // Time for a copy going back, or a second copy, to show.
    std::thread::sleep(Duration::from_secs(3));
    let metrics = strait.metrics();
    for cluster in [PRIMARY, SECONDARY] {
        let records = read_all(cluster, &topic);
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        for (partition, recs) in &records {
            // Each application's records of a round, in the order written: produce_simple
            // writes record i of a round to partition i % 3.
            let mut last: std::collections::BTreeMap<String, usize> = Default::default();
            for rec in recs {
                let value = String::from_utf8(rec.value.clone().unwrap()).unwrap();
                *seen.entry(value.clone()).or_default() += 1;
                let (round, i) = value.rsplit_once('-').unwrap();
                let i: usize = i.parse().unwrap();
                assert_eq!(i % 3, *partition as usize, "{value} on {cluster}");
                if let Some(before) = last.insert(round.to_string(), i) {
                    assert!(
                        before < i,
                        "{value} after {round}-{before} on {cluster}[{partition}]"
                    );
                }
            }
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "records more than once on {cluster}: {twice:?}"
        );
        assert_eq!(seen.len(), total, "records on {cluster}");
    }
    let not_copied_back = |flow: &str| {
        metric_value(
            &metrics,
            "strait_records_not_copied_back_total",
            &format!("flow=\"{flow}\""),
        )
        .unwrap_or(0.0)
    };
    // Each flow met at least the copies the other made after the restart.
    for flow in ["east", "west"] {
        assert!(
            not_copied_back(flow) > 0.0,
            "{flow} left no copy out:\n{metrics}"
        );
    }
    logs.push_str(&strait.logs());
    assert!(
        !logs.contains("did not write") && !logs.contains("copying it back"),
        "{logs}"
    );

    // `strait verify` compares each flow's copies with the records written on its source,
    // leaving out the copies from its target there and the target's own records between.
    for flow in ["east", "west"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strait"))
            .args(["verify", "--flow", flow, "--output", "json", "--config"])
            .arg(&strait.config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("verify printed no JSON ({e}); stderr:\n{stderr}"));
        assert_eq!(
            out.status.code(),
            Some(0),
            "verify {flow}: {json:#}\n{stderr}"
        );
        let sum = |field: &str| -> u64 {
            json[0]["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["topic"] == topic.as_str())
                .map(|p| p[field].as_u64().unwrap())
                .sum()
        };
        let written = (3 * PER_ROUND) as u64;
        assert_eq!(sum("records"), written, "verify {flow}: {json:#}");
        assert_eq!(
            sum("copies_from_target"),
            written,
            "verify {flow}: {json:#}"
        );
    }
}

/// Creates `topic` (one partition) with 1,000 records, copies them with flow `flow`
/// (prefix naming, `on_data_loss = "stop"`), and stops Strait gracefully.
fn copy_a_thousand_and_stop(flow: &str, topic: &str) -> Strait {
    let target = format!("primary.{topic}");
    create_topic(PRIMARY, topic, 1, &[]);
    produce_simple(PRIMARY, topic, 1, 1_000, "before");
    let mut strait = Strait::start(&flow_config(
        flow,
        topic,
        "prefix",
        "on_data_loss = \"stop\"",
    ));
    wait_until(Duration::from_secs(60), "the first records copied", || {
        partition_count(SECONDARY, &target).is_some() && end_offsets(SECONDARY, &target) >= 1_000
    });
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());
    strait
}

/// Restarts Strait, which must stop on the loss with an error saying `said`.
fn restart_into_the_loss(strait: &mut Strait, said: &[&str]) {
    strait.restart();
    assert_eq!(
        strait.wait_exit(Duration::from_secs(60)),
        Some(1),
        "{}",
        strait.logs()
    );
    let logs = strait.logs();
    for words in said {
        assert!(logs.contains(words), "the error names the loss:\n{logs}");
    }
}

/// Waits until `/status` lists `topic` among the flow's stopped topics; returns the error
/// that stopped it.
fn wait_for_stopped_topic(strait: &Strait, topic: &str) -> String {
    let stopped = || {
        status_json(strait)["flows"][0]["stopped_topics"][topic]
            .as_str()
            .map(str::to_string)
    };
    wait_until(Duration::from_secs(60), "the topic stopped", || {
        stopped().is_some()
    });
    stopped().unwrap_or_default()
}

/// Checks that `target` still holds only the 1,000 copies of [`copy_a_thousand_and_stop`]
/// (none of the new topic's records taken for copies or copied), and that Strait, which
/// stopped copying a topic, exits with 1 when stopped.
fn stops_with_the_old_copies_alone(strait: &mut Strait, target: &str) {
    assert_eq!(
        end_offsets(SECONDARY, target),
        1_000,
        "none of the new records taken for copies or copied"
    );
    assert_eq!(strait.terminate(), Some(1), "{}", strait.logs());
}

/// Deletes the one-partition source topic `topic` and creates it again with `records`
/// records ("again-<n>").
fn create_again(topic: &str, records: usize) {
    delete_topic(PRIMARY, topic);
    create_topic(PRIMARY, topic, 1, &[]);
    produce_simple(PRIMARY, topic, 1, records, "again");
}

/// Restarts Strait with `on_data_loss = "continue"`.
fn restart_to_continue(strait: &mut Strait) {
    let config = std::fs::read_to_string(&strait.config).unwrap();
    std::fs::write(
        &strait.config,
        config.replace("on_data_loss = \"stop\"", "on_data_loss = \"continue\""),
    )
    .unwrap();
    strait.restart();
}

/// Restarts Strait with `on_data_loss = "continue"`, which must stop all the same, saying
/// `said` again, with none of the source's new records taken for copies or copied into
/// `target` (which holds the 1,000 copies of [`copy_a_thousand_and_stop`]).
fn continuing_still_stops(strait: &mut Strait, said: &str, target: &str) {
    restart_to_continue(strait);
    assert_eq!(
        strait.wait_exit(Duration::from_secs(60)),
        Some(1),
        "{}",
        strait.logs()
    );
    assert!(strait.logs().contains(said), "{}", strait.logs());
    assert_eq!(
        end_offsets(SECONDARY, target),
        1_000,
        "none of the new records taken for copies or copied"
    );
}

/// Records deleted from the source (retention, DeleteRecords) before Strait copied them
/// are reported, never skipped in silence: by default the flow stops with an error
/// naming them; with `on_data_loss = "continue"` it goes on from the log start, and the
/// loss stays in `/status` and `strait_records_lost_total`.
#[test]
fn records_deleted_before_they_were_copied_are_reported() {
    let topic = unique("lost");
    let target = format!("primary.{topic}");
    let mut strait = copy_a_thousand_and_stop("lost", &topic);

    // Written and deleted while Strait was stopped.
    produce_simple(PRIMARY, &topic, 1, 2_000, "lost");
    delete_records_before(PRIMARY, &topic, &[(0, 2_500)]);
    restart_into_the_loss(
        &mut strait,
        &[
            &format!("{topic}[0] source offsets [1000, 2500) were deleted"),
            "1500 record(s) lost",
        ],
    );
    assert_eq!(
        end_offsets(SECONDARY, &target),
        1_000,
        "nothing copied past the loss"
    );
    restart_to_continue(&mut strait);
    wait_until(
        Duration::from_secs(60),
        "the records still on the source copied",
        || end_offsets(SECONDARY, &target) >= 1_500,
    );
    let status = status_json(&strait);
    let loss = &status["flows"][0]["data_loss"][0];
    assert_eq!(
        (&loss["on"], &loss["from"], &loss["to"], &loss["action"]),
        (
            &"source".into(),
            &1_000.into(),
            &2_500.into(),
            &"continued".into()
        ),
        "{status:#}"
    );
    let lost = metric_value(&strait.metrics(), "strait_records_lost_total", &topic);
    assert_eq!(lost, Some(1_500.0));
    let copies = read_all(SECONDARY, &target).remove(&0).unwrap();
    let source = read_all(PRIMARY, &topic).remove(&0).unwrap();
    assert_eq!(copies.len(), 1_500, "1,000 before the loss, 500 after");
    assert_eq!(
        copies[1_000].value, source[0].value,
        "resumed at the log start"
    );
    assert_eq!(strait.terminate(), Some(0));
}

/// Records deleted from the source while a running flow is behind them (a slow target;
/// retention catching up) are reported too, where the consumer finds its position gone,
/// and with `on_data_loss = "continue"` the copy goes on from the log start.
#[test]
fn records_deleted_while_the_flow_is_behind_them_are_reported() {
    const RECORDS: i64 = 20_000;
    const DELETED_BEFORE: i64 = 15_000;
    let topic = unique("lost-behind");
    let target = format!("primary.{topic}");
    create_topic(PRIMARY, &topic, 1, &[]);
    produce_sized(PRIMARY, &topic, 1, RECORDS as usize, 1024);
    // Little fetched ahead, and a target that takes about 100 copies a second.
    let config = flow_config("behind", &topic, "prefix", "on_data_loss = \"continue\"").replace(
        r#"commit_interval = "500ms""#,
        "commit_interval = \"500ms\"\nconsumer_queue_kbytes = 1024\nproducer_queue_kbytes = 1024",
    );
    let quota = ProducerQuota::set(SECONDARY, "strait-behind", 100 * 1024);
    let strait = Strait::start(&config);
    wait_until(Duration::from_secs(60), "copying under way", || {
        partition_count(SECONDARY, &target).is_some() && end_offsets(SECONDARY, &target) >= 300
    });
    delete_records_before(PRIMARY, &topic, &[(0, DELETED_BEFORE)]);
    drop(quota);
    wait_until(Duration::from_secs(90), "the loss reported", || {
        !status_json(&strait)["flows"][0]["data_loss"]
            .as_array()
            .is_none_or(Vec::is_empty)
    });
    let status = status_json(&strait);
    let loss = &status["flows"][0]["data_loss"][0];
    assert_eq!(loss["to"], DELETED_BEFORE, "{status:#}");
    assert_eq!(loss["action"], "continued", "{status:#}");
    let from = loss["from"].as_i64().unwrap();
    assert!(from > 0 && from < DELETED_BEFORE, "{status:#}");
    let copied_before = from;
    wait_until(
        Duration::from_secs(90),
        "the records still on the source copied",
        || end_offsets(SECONDARY, &target) >= copied_before + (RECORDS - DELETED_BEFORE),
    );
    std::thread::sleep(Duration::from_secs(2));
    let copies = read_all(SECONDARY, &target).remove(&0).unwrap();
    assert_eq!(
        copies.len() as i64,
        copied_before + (RECORDS - DELETED_BEFORE),
        "every record copied before the loss, and every one after it, once"
    );
    let resumed = copies[copied_before as usize].provenance_offset();
    assert_eq!(
        resumed,
        Some(DELETED_BEFORE),
        "the first copy after the loss is an anchor"
    );
    let lost = metric_value(&strait.metrics(), "strait_records_lost_total", &topic);
    assert_eq!(lost, Some((DELETED_BEFORE - from) as f64));
}

/// A new owner can find a target partition's stable end (what committed readers see)
/// below the copies the group's commit says were acknowledged while its log holds them:
/// the transaction coordinator writes a committed (or fenced) transaction's markers after
/// it answered, so right after a fenced hand-over they may not be written yet. That is
/// waited for, not reported as copies the target lost. Staged here with a transaction
/// left open on the target partition and a commit naming its end, as a previous owner's
/// would; the transaction commits 2 s after Strait starts.
#[test]
fn a_target_stable_only_below_the_committed_copies_is_waited_for_not_taken_for_a_loss() {
    use rdkafka::producer::{BaseProducer, BaseRecord};
    let topic = unique("stable-end");
    let target = format!("primary.{topic}");
    let mut strait = copy_a_thousand_and_stop("stableend", &topic);

    let open: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", SECONDARY)
        .set("transactional.id", unique("strait-test-open-txn"))
        .create()
        .unwrap();
    open.init_transactions(Duration::from_secs(30)).unwrap();
    open.begin_transaction().unwrap();
    for i in 0..5 {
        let value = format!("open-{i}");
        open.send(
            BaseRecord::<str, str>::to(&target)
                .partition(0)
                .payload(&value),
        )
        .unwrap();
    }
    open.flush(Duration::from_secs(30)).unwrap();
    let id = source_topic_id(&topic);
    commit_offsets_with_metadata(
        PRIMARY,
        &group_of(&strait),
        &topic,
        &[(0, 1_000)],
        &format!("strait:t=1005;i={id}"),
    );

    strait.restart();
    std::thread::sleep(Duration::from_secs(2));
    open.commit_transaction(Duration::from_secs(30)).unwrap();
    produce_simple(PRIMARY, &topic, 1, 100, "after");
    // 1,000 copies, the 5 records and their commit marker, then 100 copies.
    wait_until(Duration::from_secs(60), "the new records copied", || {
        end_offsets(SECONDARY, &target) >= 1_106
    });
    assert!(
        !strait.logs().contains("lost_on_target"),
        "{}",
        strait.logs()
    );
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());
}

/// A source partition that ends below records already copied from it went back: an
/// unclean leader election keeps the topic (and its ID) and the group's commit, with a
/// shorter log. Staged here on one broker by creating the topic again, shorter, and
/// committing the old position for it under its new topic ID. That is reported, never
/// resumed after in silence, and the flow stops even with `on_data_loss = "continue"`:
/// records the source writes at those offsets again would be taken for the ones already
/// copied.
#[test]
fn source_offsets_that_went_back_are_reported_and_stop_the_flow() {
    let topic = unique("went-back");
    let target = format!("primary.{topic}");
    let mut strait = copy_a_thousand_and_stop("wentback", &topic);

    create_again(&topic, 300);
    let id = source_topic_id(&topic);
    commit_offsets_with_metadata(
        PRIMARY,
        &group_of(&strait),
        &topic,
        &[(0, 1_000)],
        &format!("strait:t=1000;i={id}"),
    );
    let said = format!(
        "{topic}[0] on the source ends at offset 300, below the 1000 records already copied"
    );
    restart_into_the_loss(&mut strait, &[&said, "source_offsets_went_back"]);
    continuing_still_stops(&mut strait, &said, &target);
}

/// A flow that stops on a data loss stops alone: the process and its other flows go on
/// copying, and `/status` and `/readyz` say which flow failed and why.
#[test]
fn a_flow_stopped_by_a_data_loss_leaves_the_other_flows_copying() {
    let (lossy, healthy) = (unique("stops-alone"), unique("goes-on"));
    // The other flow runs the other way: two flows between the same clusters in the same
    // direction are refused (they could write the same target topics).
    let (lossy_target, healthy_target) =
        (format!("primary.{lossy}"), format!("secondary.{healthy}"));
    create_topic(PRIMARY, &lossy, 1, &[]);
    create_topic(SECONDARY, &healthy, 1, &[]);
    produce_simple(PRIMARY, &lossy, 1, 1_000, "before");
    produce_simple(SECONDARY, &healthy, 1, 100, "before");
    let second_flow = format!(
        "on_data_loss = \"stop\"\n\n[flows.healthy]\nsource = \"secondary\"\n\
         target = \"primary\"\ntopics = [\"{healthy}\"]\nnaming = \"prefix\"\n\
         group_id = \"{}\"",
        unique("strait-test-healthy")
    );
    let mut strait = Strait::start(&flow_config("lossy", &lossy, "prefix", &second_flow));
    wait_until(Duration::from_secs(60), "both topics copied", || {
        partition_count(SECONDARY, &lossy_target).is_some()
            && partition_count(PRIMARY, &healthy_target).is_some()
            && end_offsets(SECONDARY, &lossy_target) >= 1_000
            && end_offsets(PRIMARY, &healthy_target) >= 100
    });
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());

    // Written and deleted while Strait was stopped.
    produce_simple(PRIMARY, &lossy, 1, 2_000, "lost");
    delete_records_before(PRIMARY, &lossy, &[(0, 2_500)]);
    strait.restart();
    let flow = |status: &serde_json::Value, name: &str| {
        status["flows"]
            .as_array()
            .and_then(|flows| flows.iter().find(|f| f["name"] == name).cloned())
            .unwrap_or_default()
    };
    wait_until(Duration::from_secs(60), "the lossy flow failed", || {
        flow(&status_json(&strait), "lossy")["failed"].is_string()
    });
    produce_simple(SECONDARY, &healthy, 1, 100, "after");
    wait_until(
        Duration::from_secs(60),
        "the other flow still copying",
        || end_offsets(PRIMARY, &healthy_target) >= 200,
    );

    let status = status_json(&strait);
    let (failed, going) = (flow(&status, "lossy"), flow(&status, "healthy"));
    let error = failed["failed"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains(&format!(
            "{lossy}[0] source offsets [1000, 2500) were deleted"
        )),
        "{status:#}"
    );
    assert_eq!(failed["running"], false, "{status:#}");
    assert_eq!(
        (&going["running"], &going["failed"]),
        (&true.into(), &serde_json::Value::Null),
        "{status:#}"
    );
    // Connections are read from librdkafka's statistics, every 2 s.
    wait_until(Duration::from_secs(10), "the other flow ready", || {
        http_get(strait.port, "/readyz").is_some_and(|r| r.contains("flow healthy: ready"))
    });
    let ready = http_get(strait.port, "/readyz").unwrap_or_default();
    assert!(ready.contains(" 503 "), "{ready}");
    assert!(
        ready.contains(&format!("flow lossy: failed: {error}\n")),
        "{ready}"
    );
    assert_eq!(end_offsets(SECONDARY, &lossy_target), 1_000);
    assert_eq!(
        strait.terminate(),
        Some(1),
        "a flow failed, so the process exits with 1 once stopped"
    );
}

/// A source topic deleted, created again and written past the records already copied
/// from it, all while Strait was stopped: nothing in the offsets tells (deleting a topic
/// deletes its group offsets, and the new topic ends beyond the copies), but its topic ID
/// does. Copying that topic stops, even with `on_data_loss = "continue"` (the new records
/// below the old copies' offsets would be taken for ones already copied), and the flow's
/// other topic goes on; `/status` and `/readyz` name the stopped topic, and the process
/// exits with 1 when stopped.
#[test]
fn a_source_topic_created_again_and_written_past_the_copies_is_reported_and_stops_that_topic() {
    let topic = unique("replaced");
    let other = unique("replaced-other");
    let (target, other_target) = (format!("primary.{topic}"), format!("primary.{other}"));
    create_topic(PRIMARY, &topic, 1, &[]);
    create_topic(PRIMARY, &other, 1, &[]);
    produce_simple(PRIMARY, &topic, 1, 1_000, "before");
    produce_simple(PRIMARY, &other, 1, 100, "before");
    let mut strait = Strait::start(&flow_config(
        "replaced",
        &format!("{topic}|{other}"),
        "prefix",
        "on_data_loss = \"continue\"",
    ));
    wait_until(Duration::from_secs(60), "both topics copied", || {
        partition_count(SECONDARY, &target).is_some()
            && partition_count(SECONDARY, &other_target).is_some()
            && end_offsets(SECONDARY, &target) >= 1_000
            && end_offsets(SECONDARY, &other_target) >= 100
    });
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());

    create_again(&topic, 1_500);
    strait.restart();
    let said = format!(
        "{topic}[0] on the source is not the partition this flow copied to {target}: its \
         newest anchor copy, at {target}[0] offset 0, was made from topic ID"
    );
    let error = wait_for_stopped_topic(&strait, &topic);
    assert!(error.contains(&said), "{error}");
    assert!(
        strait.logs().contains("source_topic_replaced"),
        "{}",
        strait.logs()
    );
    produce_simple(PRIMARY, &other, 1, 100, "after");
    wait_until(
        Duration::from_secs(60),
        "the other topic still copied",
        || end_offsets(SECONDARY, &other_target) >= 200,
    );
    let ready = http_get(strait.port, "/readyz").unwrap_or_default();
    assert!(
        ready.contains(" 503 ") && ready.contains(&format!("topic {topic} stopped: ")),
        "{ready}"
    );
    stops_with_the_old_copies_alone(&mut strait, &target);
}

/// The same, with the new topic written short of the copies. Its offsets do not tell a
/// topic created again from one whose offsets went back (an unclean leader election); its
/// topic ID does, and the error says which it is.
#[test]
fn a_source_topic_created_again_short_of_the_copies_is_named_by_its_topic_id() {
    let topic = unique("replaced-short");
    let target = format!("primary.{topic}");
    let mut strait = copy_a_thousand_and_stop("replacedshort", &topic);

    create_again(&topic, 500);
    let said = format!(
        "{topic}[0] on the source is not the partition this flow copied to {target}: its \
         newest anchor copy, at {target}[0] offset 0, was made from topic ID"
    );
    restart_to_continue(&mut strait);
    let error = wait_for_stopped_topic(&strait, &topic);
    assert!(error.contains(&said), "{error}");
    let logs = strait.logs();
    assert!(
        logs.contains("source_topic_replaced") && logs.contains("offsets [0, 1000) on the source"),
        "{logs}"
    );
    assert!(!logs.contains("source_offsets_went_back"), "{logs}");
    stops_with_the_old_copies_alone(&mut strait, &target);
}

/// With `on_source_topic_recreated = "continue"`, a source topic created again is copied
/// from its start into the same target topic, after the old topic's copies, and its
/// offset map starts again there: every new record is copied once (also across a
/// `kill -9`), and a group of the new topic translates onto its copies, not the old ones.
#[test]
fn a_source_topic_created_again_is_copied_after_the_old_copies_when_the_flow_goes_on() {
    let topic = unique("recreated-on");
    let target = format!("primary.{topic}");
    let mut strait = copy_a_thousand_and_stop("recreatedon", &topic);

    create_again(&topic, 300);
    let config = std::fs::read_to_string(&strait.config).unwrap();
    std::fs::write(
        &strait.config,
        config.replace(
            "on_data_loss = \"stop\"",
            "on_data_loss = \"stop\"\non_source_topic_recreated = \"continue\"",
        ),
    )
    .unwrap();
    strait.restart();
    wait_until(Duration::from_secs(60), "the new topic copied", || {
        end_offsets(SECONDARY, &target) >= 1_300
    });
    assert!(
        strait.logs().contains("source_topic_replaced")
            && strait.logs().contains("the copy goes on"),
        "{}",
        strait.logs()
    );
    // A crash, and more records: the new topic's commits and anchors name its ID.
    strait.kill9();
    produce_simple(PRIMARY, &topic, 1, 200, "later");
    strait.restart();
    wait_until(Duration::from_secs(60), "the later records copied", || {
        end_offsets(SECONDARY, &target) >= 1_500
    });
    std::thread::sleep(Duration::from_secs(2));
    let values: Vec<String> = read_all(SECONDARY, &target)
        .remove(&0)
        .unwrap_or_default()
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    let expected: Vec<String> = (0..1_000)
        .map(|i| format!("before-{i}"))
        .chain((0..300).map(|i| format!("again-{i}")))
        .chain((0..200).map(|i| format!("later-{i}")))
        .collect();
    assert_eq!(values.len(), expected.len(), "each record copied once");
    assert!(
        values == expected,
        "the old copies, then the new topic's, in order"
    );

    // A group of the new topic, at its offset 150, lands on that record's copy.
    let group = unique("recreated-reader");
    commit_offsets(PRIMARY, &group, &topic, &[(0, 150)]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strait"))
            .args(["offsets", "translate", "--apply", "--config"])
            .arg(&strait.config)
            .args(["--flow", "recreatedon", "--group", &group])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "translate: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        committed_offset(SECONDARY, &group, &target, 0),
        Some(1_150),
        "offset 150 of the new topic is its copy's, at 1,000 + 150"
    );
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());
}

/// A source topic deleted and created again while Strait copies it: the next topic
/// refresh (or the assignment the new topic brings) sees another topic ID, and copying
/// that topic stops, with the loss in `/status`, rather than resuming the new topic after
/// the old one's copies.
#[test]
fn a_source_topic_created_again_while_copied_stops_that_topic_alone() {
    let topic = unique("replaced-live");
    let target = format!("primary.{topic}");
    create_topic(PRIMARY, &topic, 1, &[]);
    produce_simple(PRIMARY, &topic, 1, 1_000, "before");
    let mut strait = Strait::start(&flow_config(
        "replacedlive",
        &topic,
        "prefix",
        "on_data_loss = \"stop\"",
    ));
    wait_until(Duration::from_secs(60), "the first records copied", || {
        partition_count(SECONDARY, &target).is_some() && end_offsets(SECONDARY, &target) >= 1_000
    });
    create_again(&topic, 1_500);
    let error = wait_for_stopped_topic(&strait, &topic);
    // Time for a copy that should not be made.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        error.contains(&format!(
            "{topic}[0] on the source is not the partition this flow copied to {target}"
        )),
        "{error}"
    );
    let logs = strait.logs();
    assert!(
        logs.contains("source_topic_replaced") && logs.contains("offsets [0, 1000) on the source"),
        "{logs}"
    );
    let copies = read_all(SECONDARY, &target).remove(&0).unwrap_or_default();
    let old_copies = copies
        .iter()
        .filter(|r| {
            r.value
                .as_deref()
                .is_some_and(|v| String::from_utf8_lossy(v).contains("before"))
        })
        .count();
    assert_eq!(
        (old_copies, copies.len()),
        (1_000, 1_000),
        "none of the new topic's records copied after the old one's"
    );
    assert_eq!(strait.terminate(), Some(1), "{}", strait.logs());
}

/// Records something else writes into a flow's target partition between its copies (an
/// application, or another copier: an instance that lost the partition and still sent
/// what it held) are reported with their offsets and counted, never silent.
#[test]
fn records_others_write_between_the_copies_are_reported() {
    let topic = unique("foreign");
    let target = format!("primary.{topic}");
    create_topic(PRIMARY, &topic, 1, &[]);
    produce_simple(PRIMARY, &topic, 1, 100, "before");
    let strait = Strait::start(&flow_config("foreign", &topic, "prefix", ""));
    wait_until(Duration::from_secs(60), "the first records copied", || {
        partition_count(SECONDARY, &target).is_some() && end_offsets(SECONDARY, &target) >= 100
    });
    produce_into(SECONDARY, &target, 0, 5, "foreign");
    produce_simple(PRIMARY, &topic, 1, 10, "after");
    wait_until(Duration::from_secs(60), "the rest copied", || {
        end_offsets(SECONDARY, &target) >= 115
    });
    wait_until(
        Duration::from_secs(10),
        "the foreign records counted",
        || {
            metric_value(
                &strait.metrics(),
                "strait_target_foreign_records_total",
                &topic,
            ) == Some(5.0)
        },
    );
    let said =
        format!("{target}[0] holds 5 record(s) at offsets [100, 105) that this flow did not write");
    assert!(strait.logs().contains(&said), "{}", strait.logs());
}

/// A target partition that ends below the copies it acknowledged lost them (an unclean
/// leader election; here, the topic deleted and created again while Strait was stopped).
/// That is reported, never resumed after in silence: the flow stops, or with
/// `on_data_loss = "continue"` copies on at the target's end.
#[test]
fn copies_the_target_lost_are_reported() {
    let topic = unique("target-lost");
    let target = format!("primary.{topic}");
    let mut strait = copy_a_thousand_and_stop("targetlost", &topic);

    delete_topic(SECONDARY, &target);
    create_topic(SECONDARY, &target, 1, &[]);
    restart_into_the_loss(
        &mut strait,
        &[&format!(
            "{target}[0] on 'secondary' ends at offset 0, below the 1000 copies it acknowledged"
        )],
    );
    restart_to_continue(&mut strait);
    produce_simple(PRIMARY, &topic, 1, 100, "after");
    wait_until(Duration::from_secs(60), "the new records copied", || {
        end_offsets(SECONDARY, &target) >= 100
    });
    let status = status_json(&strait);
    let loss = &status["flows"][0]["data_loss"][0];
    assert_eq!(
        (&loss["on"], &loss["from"], &loss["to"], &loss["reason"]),
        (
            &"target".into(),
            &0.into(),
            &1_000.into(),
            &"lost_on_target".into()
        ),
        "{status:#}"
    );
    let lost = metric_value(
        &strait.metrics(),
        "strait_records_lost_total",
        "lost_on_target",
    );
    assert_eq!(lost, Some(1_000.0));
    let copies = read_all(SECONDARY, &target).remove(&0).unwrap();
    let source = read_all(PRIMARY, &topic).remove(&0).unwrap();
    assert_eq!(copies.len(), 100, "only what came after");
    assert_eq!(copies[0].value, source[1_000].value);
    assert_eq!(strait.terminate(), Some(0));
}

/// Source commits can be refused for long stretches while copying goes on (every commit
/// of a member between generations fails with IllegalGeneration), so the group's offset
/// may lag far behind what was copied, with no target offset stored beside it. The
/// offset map still knows what the target holds: a restart resumes after the map's end
/// and copies nothing twice.
#[test]
fn a_group_offset_behind_the_offset_map_copies_nothing_twice() {
    let topic = unique("commit-lag");
    let target = format!("primary.{topic}");
    let mut strait = copy_a_thousand_and_stop("commitlag", &topic);
    // Where a first claim leaves the group when every later commit is refused.
    let group = group_of(&strait);
    commit_offsets(PRIMARY, &group, &topic, &[(0, 0)]);

    strait.restart();
    produce_simple(PRIMARY, &topic, 1, 100, "after");
    wait_until(Duration::from_secs(60), "the new records committed", || {
        committed_offset(PRIMARY, &group, &topic, 0) == Some(1_100)
    });
    assert_exact_copy(&topic, &target);
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());
}

/// A group's offsets can go while its copies stay: an empty group's offsets expire
/// (`offsets.retention.minutes`, 7 days by default), or an operator deletes the group.
/// The offset map's newest copy, found to hold the source record it was copied from, still
/// says where to resume: nothing is copied twice.
#[test]
fn a_flow_whose_group_offsets_are_gone_copies_nothing_twice() {
    let topic = unique("group-gone");
    let target = format!("primary.{topic}");
    let mut strait = copy_a_thousand_and_stop("groupgone", &topic);
    let group = group_of(&strait);
    delete_group(PRIMARY, &group);
    assert_eq!(committed_offset(PRIMARY, &group, &topic, 0), None);

    strait.restart();
    produce_simple(PRIMARY, &topic, 1, 100, "after");
    wait_until(Duration::from_secs(60), "the new records committed", || {
        committed_offset(PRIMARY, &group, &topic, 0) == Some(1_100)
    });
    assert_exact_copy(&topic, &target);
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());
}

/// Each newly assigned partition's start offset is committed before its first copy (the
/// claim), so the group has a commit for it even if every later commit is refused:
/// without one, the next owner cannot trust the offset map's end (the topic may have been
/// created again) and would copy the partition again from its start. Here no later
/// commit comes at all (`commit_interval` of an hour).
#[test]
fn the_start_offset_is_committed_when_a_partition_is_assigned() {
    let topic = unique("claim");
    let target = format!("primary.{topic}");
    create_topic(PRIMARY, &topic, 1, &[]);
    produce_simple(PRIMARY, &topic, 1, 1_000, "before");
    let config = flow_config("claim", &topic, "prefix", "")
        .replace("commit_interval = \"500ms\"", "commit_interval = \"1h\"");
    let mut strait = Strait::start(&config);
    wait_until(Duration::from_secs(60), "the records copied", || {
        partition_count(SECONDARY, &target).is_some() && end_offsets(SECONDARY, &target) >= 1_000
    });
    let group = group_of(&strait);
    assert_eq!(committed_offset(PRIMARY, &group, &topic, 0), Some(0));
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());
    assert_eq!(committed_offset(PRIMARY, &group, &topic, 0), Some(1_000));
}

/// The consumer group a running test instance's flow uses (`flow_config` makes one per run).
fn group_of(strait: &Strait) -> String {
    let config = std::fs::read_to_string(&strait.config).unwrap();
    config
        .lines()
        .find_map(|l| l.strip_prefix("group_id = "))
        .expect("the flow's group_id")
        .trim_matches('"')
        .to_string()
}

/// A record larger than the target producer's own limit (`message.max.bytes`, checked
/// before anything is sent) stops the flow too, with an error naming the record and the
/// limit; neither it nor the records consumed with it are committed past, so a restart
/// with the limit raised copies everything exactly once.
#[test]
fn record_refused_before_sending_is_not_skipped() {
    let topic = unique("toolarge-client");
    create_topic(PRIMARY, &topic, 1, &[]);
    create_topic(SECONDARY, &topic, 1, &[]);
    write_twelve_with_a_large_eleventh(&topic);
    let limited = flow_config(
        "toolarge-client",
        &topic,
        "identity",
        "[clusters.secondary.properties]\n\"message.max.bytes\" = \"10000\"\n",
    );
    let mut strait = Strait::start(&limited);
    let code = strait.wait_exit(Duration::from_secs(90));
    assert_eq!(code, Some(1), "{}", strait.logs());
    let logs = strait.logs();
    assert!(
        logs.contains(&format!("{topic}[0] offset 10 ")),
        "error names the record:\n{logs}"
    );
    assert!(
        logs.contains("20000 bytes") && logs.contains("message.max.bytes, 10000"),
        "error says the size and the limit to change:\n{logs}"
    );
    assert_eq!(
        count_all(SECONDARY, &topic),
        10,
        "the records before the refused one arrived, nothing at or after it"
    );

    // The same flow (and group), with the limit raised.
    let mut strait = Strait::start(&limited.replace("\"10000\"", "\"1000000\""));
    all_twelve_copied_exactly_once(&topic);
    assert_eq!(strait.terminate(), Some(0));
}

/// A target topic deleted while replicating stops the flow with an error that says so;
/// Strait never re-creates it on its own.
#[test]
fn deleted_target_topic_stops_the_flow() {
    let topic = unique("deleted");
    create_topic(PRIMARY, &topic, 2, &[]);
    produce_simple(PRIMARY, &topic, 2, 200, "before");
    let mut strait = Strait::start(&flow_config("deleted", &topic, "identity", ""));
    wait_until(Duration::from_secs(60), "first records copied", || {
        partition_count(SECONDARY, &topic).is_some() && count_all(SECONDARY, &topic) == 200
    });
    let deleted = futures::executor::block_on(
        admin(SECONDARY).delete_topics(&[&topic], &rdkafka::admin::AdminOptions::new()),
    )
    .unwrap();
    assert!(deleted.iter().all(Result::is_ok));
    wait_until(Duration::from_secs(30), "topic gone", || {
        partition_count(SECONDARY, &topic).is_none()
    });
    produce_simple(PRIMARY, &topic, 2, 50, "after");
    let code = strait.wait_exit(Duration::from_secs(120));
    let logs = strait.logs();
    assert_eq!(code, Some(1), "{logs}");
    assert!(
        logs.contains("no longer exists on the target"),
        "error explains:\n{logs}"
    );
    assert!(
        logs.contains(&format!("{topic}[")),
        "error names the partition:\n{logs}"
    );
    assert_eq!(
        partition_count(SECONDARY, &topic),
        None,
        "not re-created behind our back"
    );
}

/// Cooperative rebalances while a backlog is being copied: a second instance joins and
/// leaves, and topics discovered mid-copy change the subscription. Every record is on the
/// target exactly once. (A subscription change mid-copy can make the consumer hand over
/// an already-sent record again; the pipeline skips such records, and this test reports
/// how many it skipped.) A producer quota on the target keeps the backlog
/// there for as long as the rebalances take, on a fast machine as on a slow one, with
/// full fetch and producer queues.
#[test]
fn rebalances_mid_copy_lose_and_duplicate_nothing() {
    const RECORDS: usize = 50_000;
    const NEW_TOPICS: usize = 4;
    let stem = unique("midcopy");
    let main_topic = format!("{stem}-main");
    create_topic(PRIMARY, &main_topic, 2, &[]);
    produce_sized(PRIMARY, &main_topic, 2, RECORDS, 1024);
    // Every client of flow `midcopy` is `strait-midcopy`. The broker measures a rate over
    // at least 10 s, so about 10 MiB go through at once and the other 40 take 40 s or so:
    // time for B to join (its rebalance waits while A is held up by the quota) and leave,
    // and for the four topics.
    let _quota = ProducerQuota::set(SECONDARY, "strait-midcopy", 1024 * 1024);
    let config = flow_config("midcopy", &format!("{stem}-.*"), "identity", "")
        .replace(r#"refresh_interval = "2s""#, r#"refresh_interval = "1s""#)
        .replace(
            "[tuning]\n",
            "[tuning]\nproducer_queue_kbytes = 1024\nconsumer_queue_kbytes = 1024\n",
        );
    let began = std::time::Instant::now();
    let mut a = Strait::start(&config);
    let copied = || end_offsets(SECONDARY, &main_topic);
    let assert_mid_copy = |what: &str| {
        let done = copied();
        eprintln!(
            "{what}: {done} of {RECORDS} records copied ({:.1?})",
            began.elapsed()
        );
        assert!(
            done < RECORDS as i64,
            "{what} came after the copy finished; not mid-copy"
        );
    };
    wait_until(Duration::from_secs(60), "copying started", || copied() > 0);

    // An assignment line naming `topic` (the first round of a cooperative rebalance can
    // hand a joining member nothing).
    let assigned = |s: &Strait, topic: &str| {
        s.logs()
            .lines()
            .any(|l| l.contains("partitions assigned") && l.contains(topic))
    };
    let mut b = Strait::start(&config);
    wait_until(
        Duration::from_secs(60),
        "instance B receives a share of the partitions",
        || assigned(&b, &main_topic),
    );
    assert_mid_copy("B joined");
    assert_eq!(b.terminate(), Some(0), "B exits cleanly:\n{}", b.logs());
    assert_mid_copy("B left");

    let mut new_topics = Vec::new();
    for round in 0..NEW_TOPICS {
        let topic = format!("{stem}-new{round}");
        create_topic(PRIMARY, &topic, 1, &[]);
        produce_simple(PRIMARY, &topic, 1, 100, "new");
        wait_until(
            Duration::from_secs(30),
            "the new topic's partition assigned",
            || assigned(&a, &topic),
        );
        assert_mid_copy(&format!("topic {round} added"));
        new_topics.push(topic);
    }
    wait_until(Duration::from_secs(120), "every record copied", || {
        copied() >= RECORDS as i64 && new_topics.iter().all(|t| end_offsets(SECONDARY, t) >= 100)
    });
    // Give a duplicate, if one were coming, the time to show up.
    std::thread::sleep(Duration::from_secs(2));
    let rewinds = |s: &Strait| {
        s.logs()
            .lines()
            .filter(|l| l.contains("the source consumer") && l.contains("; skipping"))
            .count()
    };
    eprintln!(
        "records handed over again by the consumer and skipped: A {} ({} rewinds); B {} rewinds",
        metric_value(&a.metrics(), "strait_records_skipped_as_resent_total", "").unwrap_or(0.0),
        rewinds(&a),
        rewinds(&b)
    );
    assert_exact_copy(&main_topic, &main_topic);
    for topic in &new_topics {
        assert_exact_copy(topic, topic);
    }
    assert_eq!(a.terminate(), Some(0), "A exits cleanly:\n{}", a.logs());
}

/// On a flow's very first start the heartbeat topic is created a moment before the first
/// discovery, and a broker can leave a new topic out of its metadata for a little while.
/// The first subscription must still hold it: added at the next refresh instead, it
/// would cost a rebalance in the middle of copying (seen as a 1 s stall under load, in
/// the benchmark's first steady-state run on fresh brokers). The miss depends on timing:
/// on this suite's warm brokers the test also passed with the wait removed, so it guards
/// the behaviour rather than reproducing the race.
#[test]
fn first_start_subscribes_the_new_heartbeat_topic_at_once() {
    let flow = unique("hbfirst").replace('-', "");
    let topic = format!("{flow}-data");
    create_topic(PRIMARY, &topic, 2, &[]);
    produce_simple(PRIMARY, &topic, 2, 100, "data");
    let heartbeat_topic = format!("strait.heartbeats.{flow}");
    assert_eq!(
        partition_count(PRIMARY, &heartbeat_topic),
        None,
        "the heartbeat topic must be new for this test"
    );
    // Heartbeats are on by default with prefix naming.
    let strait = Strait::start(&flow_config(&flow, &topic, "prefix", ""));
    wait_until(Duration::from_secs(60), "first assignment", || {
        strait.logs().contains("partitions assigned")
    });
    let logs = strait.logs();
    let first = logs
        .lines()
        .find(|l| l.contains("partitions assigned"))
        .unwrap();
    assert!(
        first.contains(&heartbeat_topic) && first.contains(&topic),
        "the first assignment holds the data topic and the new heartbeat topic:\n{logs}"
    );
}

/// Without offset sync, a partition with no progress yet still starts exactly at the
/// source's log start (`earliest`, after records were deleted) or at its end (`latest`):
/// the start offsets are looked up explicitly, not left to `auto.offset.reset`.
#[test]
fn without_offset_sync_new_partitions_start_at_the_log_start_or_end() {
    let no_sync = |flow: &str| format!("[flows.{flow}.offset_sync]\nenabled = false");

    // earliest: 20 records per partition, the first 5 and 8 deleted.
    let flow = unique("startearly").replace('-', "");
    let topic = format!("{flow}-data");
    create_topic(PRIMARY, &topic, 2, &[]);
    produce_simple(PRIMARY, &topic, 2, 40, "early");
    delete_records_before(PRIMARY, &topic, &[(0, 5), (1, 8)]);
    assert_eq!(watermarks(PRIMARY, &topic, 1), (8, 20));
    let strait = Strait::start(&flow_config(&flow, &topic, "identity", &no_sync(&flow)));
    wait_until(Duration::from_secs(60), "the 27 records left", || {
        end_offsets(SECONDARY, &topic) >= 27
    });
    assert_exact_copy(&topic, &topic);
    drop(strait);

    // latest: the 10 records written before the flow starts are not copied, the 10 after are.
    let flow = unique("startlate").replace('-', "");
    let topic = format!("{flow}-data");
    create_topic(PRIMARY, &topic, 2, &[]);
    produce_simple(PRIMARY, &topic, 2, 10, "before");
    let strait = Strait::start(&flow_config(
        &flow,
        &topic,
        "identity",
        &format!("start_from = \"latest\"\n{}", no_sync(&flow)),
    ));
    wait_until(Duration::from_secs(60), "first assignment", || {
        strait.logs().contains("partitions assigned")
    });
    produce_simple(PRIMARY, &topic, 2, 10, "after");
    wait_until(Duration::from_secs(60), "the 10 later records", || {
        end_offsets(SECONDARY, &topic) >= 10
    });
    // Anything copied from before the start would have arrived with (or ahead of) these.
    std::thread::sleep(Duration::from_secs(2));
    let copied: Vec<String> = read_all(SECONDARY, &topic)
        .into_values()
        .flatten()
        .map(|r| String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(copied.len(), 10, "copied: {copied:?}");
    assert!(
        copied.iter().all(|v| v.starts_with("after-")),
        "only records written after the start: {copied:?}\n{}",
        strait.logs()
    );
}

/// `topic`'s ID on the primary, as Strait records it.
fn source_topic_id(topic: &str) -> String {
    let client: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", PRIMARY)
        .create()
        .unwrap();
    let ids = strait_offset_sync::topic_ids(
        rdkafka::consumer::Consumer::client(&client),
        &[topic],
        Duration::from_secs(10),
    )
    .unwrap();
    ids.get(topic).expect("the topic has an ID").0.clone()
}
