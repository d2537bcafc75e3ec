//! Exact consumer-group offset translation, against the real test clusters.
//!
//! The check is always the application's view: what a group read on the primary, followed
//! by what it reads on the secondary after the translated offsets were applied, must be
//! exactly the primary's records: none missing, none twice.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rand::Rng;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// How a group stops: what it commits after reading.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// Commit exactly this offset (an application committing `record.offset + 1`, or
    /// rewinding, can commit any offset, also one inside a gap).
    At(i64),
    /// Read this many records, then commit the consumer's position (which librdkafka and
    /// the Java client move past transaction markers).
    AfterReading(usize),
}

/// Makes `group` commit on `topic`[`partition`] of the primary the way `stop` says;
/// returns the committed offset.
fn stop_group(group: &str, topic: &str, partition: i32, stop: Stop) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", PRIMARY)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    match stop {
        Stop::At(offset) => {
            commit_offsets(PRIMARY, group, topic, &[(partition, offset)]);
            offset
        }
        Stop::AfterReading(n) => {
            tpl.add_partition_offset(topic, partition, Offset::Beginning)
                .unwrap();
            consumer.assign(&tpl).unwrap();
            let mut read = 0;
            let deadline = Instant::now() + Duration::from_secs(30);
            while read < n {
                assert!(Instant::now() < deadline, "reading {n} records of {topic}");
                if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                    m.unwrap();
                    read += 1;
                }
            }
            // One more poll so librdkafka steps over a marker right after the last record,
            // as an application polling in a loop would.
            let _ = consumer.poll(Duration::from_millis(300));
            let position = consumer.position().unwrap();
            let offset = match position.find_partition(topic, partition).unwrap().offset() {
                Offset::Offset(o) => o,
                other => panic!("no position after reading: {other:?}"),
            };
            consumer.commit(&position, CommitMode::Sync).unwrap();
            offset
        }
    }
}

/// Source offsets a group with committed offset `committed` has not read yet.
fn unread(source: &[Rec], committed: i64) -> Vec<i64> {
    source
        .iter()
        .map(|r| r.offset)
        .filter(|o| *o >= committed)
        .collect()
}

/// Runs `strait offsets translate`; returns (exit code, stdout, stderr).
fn translate(
    config: &std::path::Path,
    flow: &str,
    group: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["offsets", "translate", "--config"])
        .arg(config)
        .args(["--flow", flow, "--group", group])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `translate --apply`, retried while the answer is still pending (the map is persisted
/// once per commit interval).
fn apply_until_exact(config: &std::path::Path, flow: &str, group: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, err) = translate(config, flow, group, &["--apply"]);
        if code == 0 {
            return out;
        }
        assert!(
            Instant::now() < deadline && out.contains("pending"),
            "translate --apply for {group} failed ({code}):\n{out}\n{err}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Committed transactions (with markers), aborted ones, and plain records, ending on a
/// commit marker, in one partition.
fn write_transactions(topic: &str) {
    let tp: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", PRIMARY)
        .set("transactional.id", unique("strait-test-txn"))
        .create()
        .unwrap();
    tp.init_transactions(Duration::from_secs(30)).unwrap();
    let plain = producer(PRIMARY);
    let mut n = 0;
    for (batch, (size, commit)) in [(40, true), (25, false), (30, true), (15, false), (20, true)]
        .into_iter()
        .enumerate()
    {
        for _ in 0..10 {
            let out = Out {
                partition: 0,
                key: Some(format!("plain-{n}").into_bytes()),
                value: Some(b"plain".to_vec()),
                headers: vec![],
                timestamp: None,
            };
            send(&plain, topic, &out);
            n += 1;
        }
        flush(&plain);
        tp.begin_transaction().unwrap();
        for i in 0..size {
            let value = format!("batch {batch} record {i}");
            tp.send(
                BaseRecord::<str, str>::to(topic)
                    .partition(0)
                    .key("k")
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        }
        tp.flush(Duration::from_secs(30)).unwrap();
        if commit {
            tp.commit_transaction(Duration::from_secs(30)).unwrap();
        } else {
            tp.abort_transaction(Duration::from_secs(30)).unwrap();
        }
    }
}

/// A single-partition compacted topic whose log has offset gaps.
fn write_compacted_with_gaps(topic: &str) {
    create_topic(
        PRIMARY,
        topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.compaction.lag.ms", "0"),
        ],
    );
    let p = producer(PRIMARY);
    for round in 0..6 {
        for key in 0..60 {
            let out = Out {
                partition: 0,
                key: Some(format!("key-{key}").into_bytes()),
                value: Some(format!("round {round}").into_bytes()),
                headers: vec![],
                timestamp: None,
            };
            send(&p, topic, &out);
        }
        flush(&p);
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut previous = 0usize;
    wait_until(
        Duration::from_secs(90),
        "compaction to leave gaps and settle",
        || {
            let records = count_all(PRIMARY, topic);
            let spanned = end_offsets(PRIMARY, topic) as usize;
            let settled = records == previous && records < spanned;
            previous = records;
            if !settled {
                std::thread::sleep(Duration::from_secs(2));
            }
            settled
        },
    );
}

/// Offsets where something interesting starts or ends: the first record after each gap,
/// the gap's own offsets, and the end.
fn gap_points(records: &[Rec], end: i64) -> Vec<i64> {
    let mut points = Vec::new();
    for w in records.windows(2) {
        let (a, b) = (w[0].offset, w[1].offset);
        if b > a + 1 {
            points.extend([a + 1, b, (a + 1 + b) / 2]);
        }
    }
    points.push(end);
    points
}

#[test]
fn cut_over_sweep_is_exact() {
    let compacted = unique("sweep-compacted");
    let txn = unique("sweep-txn");
    create_topic(PRIMARY, &txn, 1, &[]);
    write_transactions(&txn);
    write_compacted_with_gaps(&compacted);

    let strait = Strait::start(&flow_config(
        "sweep",
        &format!("{compacted}|{txn}"),
        "identity",
        "[flows.sweep.offset_sync]\nsync_group_offsets = false\ncheckpoint_interval = \"1s\"",
    ));
    let mut sources = BTreeMap::new();
    for topic in [&compacted, &txn] {
        let records = read_all(PRIMARY, topic).remove(&0).unwrap_or_default();
        let want = records.len();
        wait_until(Duration::from_secs(60), &format!("{topic} copied"), || {
            partition_count(SECONDARY, topic).is_some() && count_all(SECONDARY, topic) >= want
        });
        sources.insert(topic.clone(), records);
    }

    // Stop points: every gap boundary of both topics (compaction gaps; transaction markers
    // and aborted ranges), the log start and end, reads of random length, and random
    // offsets.
    let mut rng = rand::rng();
    let mut stops: Vec<(String, Stop)> = Vec::new();
    for (topic, records) in &sources {
        let (_, end) = watermarks(PRIMARY, topic, 0);
        stops.push((topic.clone(), Stop::At(0)));
        for point in gap_points(records, end) {
            stops.push((topic.clone(), Stop::At(point)));
        }
        for _ in 0..4 {
            stops.push((
                topic.clone(),
                Stop::AfterReading(rng.random_range(1..=records.len())),
            ));
            stops.push((topic.clone(), Stop::At(rng.random_range(0..=end))));
        }
    }
    assert!(stops.len() >= 20, "only {} stop points", stops.len());
    sweep(&strait, &sources, &stops);

    // The same after the map was deleted and rebuilt from the copies on the target.
    let mut strait = strait;
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());
    delete_topic(SECONDARY, "__strait.offsets.sweep");
    strait.restart();
    wait_until(Duration::from_secs(60), "the map rebuilt", || {
        partition_count(SECONDARY, "__strait.offsets.sweep").is_some()
            && end_offsets(SECONDARY, "__strait.offsets.sweep") > 0
    });
    sweep(&strait, &sources, &stops);
}

/// Stops a new group on the primary at each of `stops`, applies its translation, and
/// checks that it reads exactly the source records it had not read on the secondary.
fn sweep(strait: &Strait, sources: &BTreeMap<String, Vec<Rec>>, stops: &[(String, Stop)]) {
    let mut checked = 0;
    for (i, (topic, stop)) in stops.iter().enumerate() {
        let group = unique(&format!("sweep-app-{i}"));
        let committed = stop_group(&group, topic, 0, *stop);
        apply_until_exact(&strait.config, "sweep", &group);
        let read = resume_on_secondary(
            &group,
            &BTreeMap::from([(0, sources[topic].clone())]),
            topic,
            &[0],
        )
        .remove(&0)
        .expect("partition read");
        let expected = unread(&sources[topic], committed);
        assert_eq!(
            read, expected,
            "{topic} stopped {stop:?} (committed {committed}): the secondary must continue \
             with exactly the unread source records"
        );
        checked += 1;
    }
    eprintln!("{checked} stop points exact");
}

/// The remedy for a damaged offset map is to delete its topic: the map is rebuilt from
/// the copies on the target. Rebuilt after the source's log start moved past the first
/// copies (retention, DeleteRecords), it must still name every copy whose original the
/// source holds (a copy between anchors is named by comparing it with its original), so
/// replication goes on and every translation is exact.
#[test]
fn a_map_rebuilt_after_the_source_log_start_moved_translates_exactly() {
    const FIRST: i64 = 5_000;
    const LOG_START: i64 = 2_500;
    const MORE: i64 = 500;
    let topic = unique("rebuild");
    let target = format!("primary.{topic}");
    create_topic(PRIMARY, &topic, 1, &[]);
    produce_simple(PRIMARY, &topic, 1, FIRST as usize, "before");
    let flow = "rebuild";
    let mut strait = Strait::start(&flow_config(flow, &topic, "prefix", ""));
    let copied = |n: i64| {
        partition_count(SECONDARY, &target).is_some() && end_offsets(SECONDARY, &target) >= n
    };
    wait_until(Duration::from_secs(60), "the first records copied", || {
        copied(FIRST)
    });
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());

    delete_records_before(PRIMARY, &topic, &[(0, LOG_START)]);
    delete_topic(SECONDARY, &format!("__strait.offsets.{flow}"));
    strait.restart();
    wait_until(
        Duration::from_secs(60),
        "the map rebuilt and the flow assigned",
        || strait.logs().contains("partitions assigned"),
    );
    produce_simple(PRIMARY, &topic, 1, MORE as usize, "after");
    wait_until(
        Duration::from_secs(60),
        "the records written after the rebuild copied",
        || copied(FIRST + MORE),
    );
    let logs = strait.logs();
    assert!(!logs.contains("flow interrupted"), "{logs}");

    let source = read_all(PRIMARY, &topic).remove(&0).unwrap();
    let copies = read_all(SECONDARY, &target).remove(&0).unwrap();
    assert_eq!(copies.len() as i64, FIRST + MORE, "each record copied once");
    // Below the log start, a group's next record on the source is the log start's.
    for committed in [1_500, LOG_START, LOG_START + 1, 2_700, 3_999, 4_001, 5_200] {
        let group = unique("rebuild-app");
        commit_offsets(PRIMARY, &group, &topic, &[(0, committed)]);
        apply_until_exact(&strait.config, flow, &group);
        let translated = committed_offset(SECONDARY, &group, &target, 0)
            .unwrap_or_else(|| panic!("no offset written for a commit at {committed}"));
        let next = committed.max(LOG_START);
        let original = source.iter().find(|r| r.offset == next).unwrap();
        let copy = &copies[translated as usize];
        assert_eq!(
            copy.without_provenance(),
            original.content(),
            "committed {committed}: translated to target offset {translated}, which must hold \
             the copy of source offset {next}"
        );
    }
    assert_eq!(strait.terminate(), Some(0));
}

/// A partition the source topic grew by has nothing in the offset map until it is
/// copied. A group's commit there is reported as pending, and `--apply` refuses while it
/// is, whether the partition was added while Strait was stopped or while it copied;
/// never left out, which would start the group there from its reset policy.
#[test]
fn partitions_added_on_the_source_are_pending_until_copied() {
    let topic = unique("grown");
    let target = format!("primary.{topic}");
    create_topic(PRIMARY, &topic, 2, &[]);
    produce_simple(PRIMARY, &topic, 2, 2_000, "first");
    let flow = "grown";
    let mut strait = Strait::start(&flow_config(flow, &topic, "prefix", ""));
    wait_until(Duration::from_secs(60), "the first records copied", || {
        partition_count(SECONDARY, &target).is_some() && end_offsets(SECONDARY, &target) >= 2_000
    });
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());

    // Grown while Strait is stopped.
    add_partitions(PRIMARY, &topic, 3);
    produce_into(PRIMARY, &topic, 2, 500, "grown");
    let group = unique("grown-app");
    commit_offsets(PRIMARY, &group, &topic, &[(0, 1_000), (1, 1_000), (2, 500)]);
    let (code, out, err) = translate(&strait.config, flow, &group, &["--apply"]);
    assert_ne!(
        code, 0,
        "--apply must refuse a partition it cannot translate:\n{out}\n{err}"
    );
    let row = out
        .lines()
        .find(|l| l.starts_with(&format!("{topic}[2]")))
        .unwrap_or_else(|| panic!("the new partition is reported:\n{out}"));
    assert!(row.contains("pending"), "{row}");
    assert!(
        err.contains(&format!("{topic}[2]")),
        "the error names it:\n{err}"
    );

    strait.restart();
    apply_until_exact(&strait.config, flow, &group);
    for (partition, next) in [(0, 1_000), (1, 1_000), (2, 500)] {
        assert_eq!(
            committed_offset(SECONDARY, &group, &target, partition),
            Some(next)
        );
    }

    // Grown while Strait copies: reported from the first translation on, pending or
    // exact, and exact once copied.
    add_partitions(PRIMARY, &topic, 4);
    produce_into(PRIMARY, &topic, 3, 300, "grown-live");
    let live = unique("grown-live-app");
    commit_offsets(
        PRIMARY,
        &live,
        &topic,
        &[(0, 1_000), (1, 1_000), (2, 500), (3, 300)],
    );
    let (_, out, err) = translate(&strait.config, flow, &live, &[]);
    let row = out
        .lines()
        .find(|l| l.starts_with(&format!("{topic}[3]")))
        .unwrap_or_else(|| panic!("the partition added mid-flow is reported:\n{out}\n{err}"));
    assert!(row.contains("pending") || row.contains("exact"), "{row}");
    apply_until_exact(&strait.config, flow, &live);
    assert_eq!(committed_offset(SECONDARY, &live, &target, 3), Some(300));
    assert_eq!(strait.terminate(), Some(0));
}

/// A consumer that assigns its partitions itself commits to a group without ever being
/// a member of it, so the group looks empty. Once it has committed on the target, the
/// daemon's group sync leaves the group alone, forwards as well as backwards, and says
/// so, until the operator hands it back with `strait offsets translate --apply`.
#[test]
fn group_sync_never_overwrites_a_commit_made_on_the_target() {
    let topic = unique("foreign-commit");
    let target = format!("primary.{topic}");
    let group = unique("foreign-commit-app");
    create_topic(PRIMARY, &topic, 1, &[]);
    produce_simple(PRIMARY, &topic, 1, 2_000, "r");
    commit_offsets(PRIMARY, &group, &topic, &[(0, 1_000)]);
    let flow = "foreigncommit";
    let strait = Strait::start(&flow_config(
        flow,
        &topic,
        "prefix",
        &format!(
            "[flows.{flow}.offset_sync]\ngroups = [\"{group}\"]\nsync_group_offsets = true\n\
             checkpoint_interval = \"1s\""
        ),
    ));
    wait_until(
        Duration::from_secs(60),
        "the daemon writes the group",
        || committed_offset(SECONDARY, &group, &target, 0) == Some(1_000),
    );

    // An application re-reads the copy on the target from 600, committing as it goes,
    // while the group moves on on the source.
    commit_offsets(SECONDARY, &group, &target, &[(0, 600)]);
    commit_offsets(PRIMARY, &group, &topic, &[(0, 1_500)]);
    wait_until(Duration::from_secs(30), "the refusal reported", || {
        status_json(&strait)["flows"][0]["offset_sync"]["refused_groups"][&group]
            == "committed_elsewhere"
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        committed_offset(SECONDARY, &group, &target, 0),
        Some(600),
        "the application's commit stands"
    );
    let logs = strait.logs();
    assert!(
        logs.contains("someone else committed to it on the target"),
        "{logs}"
    );

    // The operator takes the group over explicitly.
    let (code, out, err) = translate(&strait.config, flow, &group, &["--apply"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(committed_offset(SECONDARY, &group, &target, 0), Some(1_500));
    // From there, the daemon keeps it in step again.
    commit_offsets(PRIMARY, &group, &topic, &[(0, 1_700)]);
    wait_until(
        Duration::from_secs(30),
        "the daemon to write the group again",
        || committed_offset(SECONDARY, &group, &target, 0) == Some(1_700),
    );
}

/// Group states (active, excluded, never committed), idle and empty topics, and an offset
/// below the source log start; with `prefix` naming and the daemon's group sync.
#[test]
fn group_states_and_edge_cases() {
    let busy = unique("states-busy");
    let empty = unique("states-empty");
    create_topic(PRIMARY, &busy, 2, &[]);
    create_topic(PRIMARY, &empty, 1, &[]);
    produce_simple(PRIMARY, &busy, 2, 400, "states");
    let (busy_t, empty_t) = (format!("primary.{busy}"), format!("primary.{empty}"));

    let synced = unique("states-synced");
    let excluded = unique("states-excluded");
    let active = unique("states-active");
    let low = unique("states-below-log-start");
    let low_synced = unique("states-below-log-start-synced");
    let on_empty = unique("states-on-empty");
    let strait = Strait::start(&flow_config(
        "states",
        &format!("{busy}|{empty}"),
        "prefix",
        &format!(
            "[flows.states.offset_sync]\nsync_group_offsets = true\ncheckpoint_interval = \"1s\"\n\
             groups = [\"states-.*\"]\ngroups_exclude = [\"{excluded}\"]"
        ),
    ));
    wait_until(Duration::from_secs(60), "copied", || {
        partition_count(SECONDARY, &busy_t).is_some() && count_all(SECONDARY, &busy_t) >= 400
    });
    let sources = read_all(PRIMARY, &busy);

    // An idle, fully read topic; a group mid-way; an excluded group.
    let (_, end0) = watermarks(PRIMARY, &busy, 0);
    stop_group(&synced, &busy, 0, Stop::At(end0));
    stop_group(&synced, &busy, 1, Stop::At(37));
    stop_group(&excluded, &busy, 0, Stop::At(10));
    stop_group(&on_empty, &empty, 0, Stop::At(0));

    // The daemon writes the translated offsets of included, empty groups on its own.
    wait_until(
        Duration::from_secs(30),
        "the daemon to sync the included group",
        || {
            committed_offset(SECONDARY, &synced, &busy_t, 1).is_some()
                && committed_offset(SECONDARY, &synced, &busy_t, 0).is_some()
        },
    );
    assert_eq!(
        resume_on_secondary(&synced, &sources, &busy_t, &[0])
            .remove(&0)
            .expect("partition read"),
        Vec::<i64>::new(),
        "caught up"
    );
    assert_eq!(
        resume_on_secondary(&synced, &sources, &busy_t, &[1])
            .remove(&1)
            .expect("partition read"),
        unread(&sources[&1], 37)
    );
    assert_eq!(
        committed_offset(SECONDARY, &excluded, &busy_t, 0),
        None,
        "excluded group written"
    );

    // An empty topic translates to its start, with the CLI's JSON output.
    let (code, out, err) = translate(&strait.config, "states", &on_empty, &["--output", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["topic"] == empty.as_str())
        .unwrap_or_else(|| panic!("no row for {empty}: {out}"))
        .clone();
    assert_eq!(row["target_topic"], empty_t.as_str());
    assert_eq!(row["target_offset"], 0);
    assert_eq!(row["outcome"], "exact");

    // A group that never committed: a clear error, non-zero exit.
    let (code, out, err) = translate(&strait.config, "states", &unique("states-never"), &[]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("no committed offsets"), "{err}");

    // A group with active members on the secondary is refused and left untouched.
    let member: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", SECONDARY)
        .set("group.id", &active)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    member.subscribe(&[&busy_t]).unwrap();
    wait_until(Duration::from_secs(30), "the member to join", || {
        let _ = member.poll(Duration::from_millis(100));
        !member.assignment().unwrap().elements().is_empty()
    });
    stop_group(&active, &busy, 0, Stop::At(5));
    let (code, out, err) = translate(&strait.config, "states", &active, &["--apply"]);
    assert_ne!(code, 0, "an active group must not be written:\n{out}");
    assert!(out.contains("group active"), "{out}\n{err}");
    assert_eq!(
        committed_offset(SECONDARY, &active, &busy_t, 0),
        None,
        "active group was written"
    );
    // The broker's own refusal, which covers a member joining after the check of the
    // members: one client writes any group's offsets, as a non-member.
    let groups_client = strait_offset_sync::groups::GroupClient::new(
        ClientConfig::new().set("bootstrap.servers", SECONDARY),
    )
    .unwrap();
    let write = groups_client.commit(&active, &BTreeMap::from([((busy_t.clone(), 0), 5)]));
    assert!(
        write.is_err(),
        "the broker accepted offsets for an active group"
    );
    assert_eq!(
        committed_offset(SECONDARY, &active, &busy_t, 0),
        None,
        "active group was written"
    );
    // The same client reads and writes an empty group's offsets, and answers for the
    // partitions asked about only (it reads every partition the group committed on, and
    // cuts the answer to those), on the first topic and not on the second.
    let idle = unique("states-idle");
    groups_client
        .commit(
            &idle,
            &BTreeMap::from([((busy_t.clone(), 0), 4), ((empty_t.clone(), 0), 2)]),
        )
        .unwrap();
    assert_eq!(
        groups_client
            .committed(&idle, &[(busy_t.clone(), 0), (busy_t.clone(), 1)], &|_| {
                false
            })
            .unwrap(),
        BTreeMap::from([((busy_t.clone(), 0), 4)]),
        "committed offsets read back through the groups client"
    );
    assert_eq!(
        groups_client
            .committed(&idle, &[(busy_t.clone(), 1)], &|t| t == empty_t)
            .unwrap(),
        BTreeMap::from([((empty_t.clone(), 0), 2)]),
        "and on every partition of the topics selected"
    );
    assert_eq!(
        groups_client
            .committed_each(&[&idle, &active], &[(empty_t.clone(), 0)], &|_| false)
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>(),
        vec![BTreeMap::from([((empty_t.clone(), 0), 2)]), BTreeMap::new()],
        "each group's offsets, on the partitions asked about"
    );
    assert_eq!(committed_offset(SECONDARY, &idle, &busy_t, 0), Some(4));
    // No partitions asked for: no offsets, not an error (the migration's offset step asks
    // that way for a group with nothing to write).
    assert_eq!(
        groups_client.committed(&idle, &[], &|_| false).unwrap(),
        BTreeMap::new()
    );
    drop(member);
    // Once its member has left, the daemon writes what it refused while the group was
    // active (a refused group is retried every interval, not only on a new commit).
    wait_until(
        Duration::from_secs(30),
        "the daemon to write the group once it is empty",
        || committed_offset(SECONDARY, &active, &busy_t, 0) == Some(5),
    );

    // Below the source log start: the group would resume at the log start on the
    // primary, so it resumes at the copy of the log start on the secondary. `low` is
    // written by `strait offsets apply`; `low_synced` only by the daemon, whose round
    // reads the log starts of every group's partitions in one request.
    stop_group(&low, &busy, 0, Stop::At(3));
    stop_group(&low_synced, &busy, 0, Stop::At(3));
    delete_records_before(PRIMARY, &busy, &[(0, 50)]);
    // Only Strait writes the copy, so its offsets are the source's: a commit above 3 is
    // from a round after the deletion, not the copy of 3 from one before it.
    wait_until(
        Duration::from_secs(30),
        "the daemon to write the log start's copy for a group below it",
        || committed_offset(SECONDARY, &low_synced, &busy_t, 0).is_some_and(|o| o > 3),
    );
    assert_eq!(
        resume_on_secondary(&low_synced, &sources, &busy_t, &[0])
            .remove(&0)
            .expect("partition read"),
        unread(&sources[&0], 50),
        "the daemon lifts an offset below the log start to the log start's copy"
    );
    let out = apply_until_exact(&strait.config, "states", &low);
    assert!(out.contains("log start 50"), "{out}");
    assert_eq!(
        resume_on_secondary(&low, &sources, &busy_t, &[0])
            .remove(&0)
            .expect("partition read"),
        unread(&sources[&0], 50),
        "resumes at the copy of the log start"
    );

    // Metrics of the checkpointer.
    let metrics = strait.metrics();
    for name in [
        "strait_checkpoint_age_seconds",
        "strait_checkpoint_unreadable_groups",
        "strait_groups_translated",
        "strait_offset_map_segments",
        "strait_group_offset_writes_total",
    ] {
        assert!(
            metric_value(&metrics, name, "flow=\"states\"").is_some(),
            "{name} missing:\n{metrics}"
        );
    }
}

/// A target topic that Strait creates is assigned moments later, while its partitions'
/// leaders may still be settling and end-offset requests answer "not leader". The offset
/// map of such a partition must still say where it starts: a map that never did kept
/// every translation pending for ever (a migration waited at its `mirror` stage). Many
/// partitions make that window wide.
#[test]
fn a_map_begun_beside_a_just_created_target_topic_translates() {
    const PARTITIONS: i32 = 48;
    let topic = unique("fresh-target");
    let group = unique("fresh-target-app");
    create_topic(PRIMARY, &topic, PARTITIONS, &[]);
    produce_simple(
        PRIMARY,
        &topic,
        PARTITIONS,
        10 * PARTITIONS as usize,
        "fresh",
    );
    let committed: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 5)).collect();
    commit_offsets(PRIMARY, &group, &topic, &committed);
    let strait = Strait::start(&flow_config(
        "fresh",
        &topic,
        "prefix",
        &format!("[flows.fresh.offset_sync]\ngroups = [\"{group}\"]"),
    ));
    let target = format!("primary.{topic}");
    wait_until(Duration::from_secs(60), "copied", || {
        partition_count(SECONDARY, &target) == Some(PARTITIONS)
            && end_offsets(SECONDARY, &target) >= 10 * i64::from(PARTITIONS)
    });
    // Everything is copied, so the map is complete within a commit interval or two.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, err) = translate(&strait.config, "fresh", &group, &["--output", "json"]);
        let exact = serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|r| {
                r["partitions"].as_array().map(|rows| {
                    rows.iter()
                        .filter(|r| r["outcome"] == "exact" && r["target_offset"] == 5)
                        .count()
                })
            });
        if code == 0 && exact == Some(PARTITIONS as usize) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every partition translates exactly to offset 5 (exit {code}):\n{out}\n{err}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Without a restart on the way: a partition whose end offset the assignment's batch
    // read missed (the topic a few ms old) is read on its own, rather than restarting the
    // flow ("waiting for the end offset of ... where its offset map starts").
    let logs = strait.logs();
    assert!(!logs.contains("flow interrupted"), "{logs}");
}

/// Strait's own single-partition topics (a heartbeat copy, an offset map) are created in
/// one request on a flow's first start: every missing one with its own settings, and an
/// existing one left as it is.
#[test]
fn own_topics_are_created_together_each_with_its_settings() {
    use strait_offset_sync::{ensure_single_partition_topics, SinglePartitionTopic};

    let (map, copy, existing) = (unique("own-map"), unique("own-copy"), unique("own-old"));
    create_topic(SECONDARY, &existing, 1, &[("retention.ms", "3600000")]);
    let delete = [("cleanup.policy", "delete"), ("retention.ms", "86400000")];
    let topics = [
        SinglePartitionTopic {
            name: &copy,
            replication_factor: Some(1),
            configs: &delete,
        },
        SinglePartitionTopic::compacted(&map, None),
        SinglePartitionTopic::compacted(&existing, None),
    ];
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", SECONDARY);
    ensure_single_partition_topics(&config, &topics).unwrap();

    let setting = |topic: &str, key: &str| topic_configs(SECONDARY, topic).get(key).cloned();
    for topic in [&copy, &map, &existing] {
        assert_eq!(partition_count(SECONDARY, topic), Some(1), "{topic}");
    }
    assert_eq!(setting(&copy, "cleanup.policy").as_deref(), Some("delete"));
    assert_eq!(setting(&copy, "retention.ms").as_deref(), Some("86400000"));
    assert_eq!(setting(&map, "cleanup.policy").as_deref(), Some("compact"));
    // Not altered: still only the setting the test gave it, not made compacted.
    assert_eq!(setting(&existing, "cleanup.policy"), None);
    assert_eq!(
        setting(&existing, "retention.ms").as_deref(),
        Some("3600000")
    );
    // Everything exists now: a second call creates nothing and succeeds.
    ensure_single_partition_topics(&config, &topics).unwrap();
}

/// A client that read a topic before it grew reads the new partitions' offsets. librdkafka
/// keeps a topic's partition count from its last metadata answer and fails the others
/// locally ("unknown partition") until its next periodic refresh, 5 minutes away by
/// default; asking again was not enough, the metadata must be asked for.
#[test]
fn watermarks_of_partitions_added_after_the_client_read_the_topic() {
    use strait_offset_sync::settled_watermarks;

    let topic = unique("grown");
    create_topic(SECONDARY, &topic, 2, &[]);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", SECONDARY)
        .set("group.id", unique("grown-reader"))
        .create()
        .unwrap();
    assert_eq!(
        settled_watermarks(&consumer, &topic, 1, Duration::from_secs(10)).unwrap(),
        (0, 0)
    );
    add_partitions(SECONDARY, &topic, 4);
    produce_simple(SECONDARY, &topic, 4, 40, "grown");
    let began = Instant::now();
    let (low, high) = settled_watermarks(&consumer, &topic, 3, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("new partition unreadable after {:?}: {e}", began.elapsed()));
    assert_eq!((low, high), (0, 10));
}

/// A reader of Strait's own topics (the offset map, checkpoints) that was set up, found
/// nothing, and waited reads the first records promptly. A partition assigned (paused)
/// at set-up and resumed at the first read, after a second or more of waiting, takes a
/// whole second to read (librdkafka's idle broker thread notices it only at its next
/// one-second wake-up); the checkpointer's first read of the map and a restarted flow's
/// map load would pay it. Later reads take milliseconds either way.
/// (The bound is 500 times what the read takes on the test bed, and half the old wait.)
#[test]
fn a_reader_that_waited_reads_its_first_records_promptly() {
    use strait_offset_sync::TopicReader;

    let topic = unique("reader-waited");
    create_topic(SECONDARY, &topic, 1, &[("cleanup.policy", "compact")]);
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", SECONDARY);
    let mut reader = TopicReader::new(&config, &topic).unwrap();
    let read = |reader: &mut TopicReader| {
        let mut values = Vec::new();
        let began = Instant::now();
        reader
            .read_new(|_, value| values.push(String::from_utf8_lossy(value.unwrap()).into_owned()))
            .unwrap();
        (values, began.elapsed())
    };
    assert_eq!(read(&mut reader).0, Vec::<String>::new());
    std::thread::sleep(Duration::from_millis(1500));
    for round in 0..3 {
        produce_simple(SECONDARY, &topic, 1, 5, &format!("round{round}"));
        let (values, took) = read(&mut reader);
        let expected: Vec<String> = (0..5).map(|i| format!("round{round}-{i}")).collect();
        assert_eq!(values, expected, "round {round}");
        assert!(
            took < Duration::from_millis(500),
            "read {round} took {took:?} for 5 records"
        );
        std::thread::sleep(Duration::from_millis(1500));
    }
}

/// Offset sync serves every selected group with one client per cluster. A client per
/// group on each cluster would mean, with the default `groups = [".*"]` on a cluster with
/// hundreds of groups, hundreds of clients, thousands of threads and a storm of
/// connections; here 60 groups would add about 500 threads.
#[test]
fn many_groups_are_translated_and_written_through_one_client_per_cluster() {
    const GROUPS: usize = 60;
    let topic = unique("many-groups");
    let prefix = unique("many-groups-app");
    create_topic(PRIMARY, &topic, 2, &[]);
    produce_simple(PRIMARY, &topic, 2, 100, "many");
    let groups: Vec<String> = (0..GROUPS).map(|i| format!("{prefix}-{i:02}")).collect();
    // Each group at its own offset, so a write to the wrong group shows.
    let at = |i: usize| (i % 50) as i64;
    for (i, group) in groups.iter().enumerate() {
        commit_offsets(PRIMARY, group, &topic, &[(0, at(i)), (1, 50 - at(i))]);
    }
    let strait = Strait::start(&flow_config(
        "many",
        &topic,
        "prefix",
        &format!(
            "[flows.many.offset_sync]\ngroups = [\"{prefix}-.*\"]\ncheckpoint_interval = \"1s\"\n\
             sync_group_offsets = true"
        ),
    ));
    let target = format!("primary.{topic}");
    wait_until(
        Duration::from_secs(60),
        "every group translated and written",
        || {
            let metrics = strait.metrics();
            metric_value(&metrics, "strait_groups_translated", "flow=\"many\"")
                == Some(GROUPS as f64)
                && metric_value(
                    &metrics,
                    "strait_group_offset_writes_total",
                    "flow=\"many\"",
                )
                .is_some_and(|w| w >= (2 * GROUPS) as f64)
        },
    );
    let threads = std::fs::read_dir(format!("/proc/{}/task", strait.child.id()))
        .unwrap()
        .count();
    assert!(
        threads < 100,
        "{threads} threads for one flow translating {GROUPS} groups: more clients than one per cluster?"
    );
    // The source and its copy have the same offsets (no gaps), so each group's offsets on
    // the secondary are those it committed on the primary.
    for (i, group) in groups.iter().enumerate() {
        assert_eq!(
            (
                committed_offset(SECONDARY, group, &target, 0),
                committed_offset(SECONDARY, group, &target, 1)
            ),
            (Some(at(i)), Some(50 - at(i))),
            "offsets of {group} on the secondary"
        );
    }
}
