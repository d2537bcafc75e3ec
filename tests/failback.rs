//! Failback after a disaster: the primary dies (SIGKILL of its broker) while the flow is
//! behind, applications go on writing on the secondary, the primary comes back, and
//! `strait failback plan` lists exactly what the primary holds that never reached the
//! secondary, and `strait failback keep` copies exactly those records into side topics
//! there, even when interrupted by SIGKILL and run again. `strait failback run` then
//! copies back to the primary exactly what the applications wrote on the secondary, and
//! nothing of the secondary's copies, across a SIGKILL too; `strait failback translate`
//! puts groups on the primary exactly where they stood on the secondary; and `strait
//! failback finish` lets the original flow resume after the copies back. An application
//! group reads through it all and reads every record exactly once, but those the plan
//! listed.
//!
//! This kills the primary broker, so it lives in a test binary of its own (cargo runs
//! test binaries one after another) and starts the primary again when done, even on
//! failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::*;

const PARTITIONS: i32 = 3;

/// Both tests kill the primary: one at a time.
static PRIMARY_IN_USE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Under identity naming the applications write into the same topic on the secondary
/// after the failover, after the copies, and the plan must tell those from copies.
#[test]
fn failback_lists_and_keeps_exactly_what_the_primary_never_shipped_under_identity_naming() {
    let _primary = PRIMARY_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    drill("identity");
}

/// Under prefix naming the copies are in `primary.<topic>` on the secondary, and the
/// applications write into the secondary's own `<topic>` after the failover.
#[test]
fn failback_lists_and_keeps_exactly_what_the_primary_never_shipped_under_prefix_naming() {
    let _primary = PRIMARY_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    drill("prefix");
}

fn drill(naming: &str) {
    let topic = unique("fb-orders");
    let copy_topic = match naming {
        "prefix" => format!("primary.{topic}"),
        _ => topic.clone(),
    };
    create_topic(PRIMARY, &topic, PARTITIONS, &[]);
    produce_simple(PRIMARY, &topic, PARTITIONS, 1_500, "before");

    // Little fetched ahead of the target, so that a slow target leaves records behind
    // on the primary.
    let config = flow_config(
        "fb",
        &topic,
        naming,
        "provenance_interval = 50\n[flows.fb.offset_sync]\ncheckpoint_interval = \"1s\"",
    )
    .replace(
        r#"commit_interval = "500ms""#,
        "commit_interval = \"500ms\"\nconsumer_queue_kbytes = 1024\n\
         producer_queue_kbytes = 1024\ndrain_timeout = \"5s\"",
    );
    let mut strait = Strait::start(&config);
    wait_until(Duration::from_secs(60), "the first records copied", || {
        partition_count(SECONDARY, &copy_topic).is_some()
            && count_all(SECONDARY, &copy_topic) >= 1_500
    });
    // An application group reads through the whole drill, moved by the commands: first
    // part of the primary's records, and its position reaches the secondary's
    // checkpoints before the primary dies.
    let app = unique("fb-live-app");
    let on_secondary: Vec<&str> = match naming {
        "prefix" => vec![&copy_topic, &topic],
        _ => vec![&topic],
    };
    let mut app_read = consume(PRIMARY, &app, &[&topic], 600);
    std::thread::sleep(Duration::from_secs(4));

    // The target slows down, the primary takes 3,000 more records (3 MB), and dies while
    // the flow is behind them.
    let quota = ProducerQuota::set(SECONDARY, "strait-fb", 100 * 1024);
    produce_sized(PRIMARY, &topic, PARTITIONS, 3_000, 1024);
    wait_until(Duration::from_secs(60), "copying under way", || {
        count_all(SECONDARY, &copy_topic) >= 1_700
    });
    // Keeping what the running flow is about to copy would copy it twice: refused.
    let stderr = failback_err(&["keep"], &strait.config);
    assert!(
        stderr.contains("flow 'fb' is running: its group"),
        "{stderr}"
    );
    let _primary_back = ClusterBack("primary");
    kafka_sh(&["kill", "primary"]);
    // The operator stops the flow (SIGKILL: with the source gone, a SIGTERM waits for
    // the source's group coordinator), and the applications move to the secondary.
    std::thread::sleep(Duration::from_secs(2));
    strait.kill9();
    drop(quota);
    // Produce requests the throttled broker had received but not yet read are still
    // appended after the process died, once the client's throttle ends (at most the
    // quota's window, 11 s): wait until the copies stop arriving.
    let mut last = (
        end_offsets(SECONDARY, &copy_topic),
        std::time::Instant::now(),
    );
    wait_until(Duration::from_secs(90), "the secondary to settle", || {
        let end = end_offsets(SECONDARY, &copy_topic);
        if end != last.0 {
            last = (end, std::time::Instant::now());
        }
        last.1.elapsed() > Duration::from_secs(12)
    });
    if naming == "prefix" {
        // The applications' own topic on the secondary, made like the primary's.
        create_topic(SECONDARY, &topic, PARTITIONS, &[]);
    }
    produce_simple(SECONDARY, &topic, PARTITIONS, 600, "after-failover");
    // The application group fails over from the checkpoints (the primary is down), and
    // reads everything on the secondary.
    strait_ok(
        &[
            "offsets",
            "translate",
            "--flow",
            "fb",
            "--group",
            &app,
            "--apply",
        ],
        &strait.config,
    );
    app_read.extend(consume(SECONDARY, &app, &on_secondary, usize::MAX));
    kafka_sh(&["start", "primary"]);

    // What reached the secondary, read with a plain client: every record there but the
    // applications' own.
    let copies: BTreeMap<i32, Vec<Rec>> = read_all(SECONDARY, &copy_topic)
        .into_iter()
        .map(|(p, records)| {
            let copies = records
                .into_iter()
                .filter(|r| {
                    !r.value
                        .as_ref()
                        .is_some_and(|v| v.starts_with(b"after-failover-"))
                })
                .collect();
            (p, copies)
        })
        .collect();
    let primary = read_all(PRIMARY, &topic);
    let mut expected = BTreeMap::new();
    for p in 0..PARTITIONS {
        let held = &primary[&p];
        let copied = copies.get(&p).map_or(&[][..], Vec::as_slice);
        // The copies are the primary's records from offset 0 on, in order.
        assert!(copied.len() <= held.len(), "partition {p}");
        for (copy, original) in copied.iter().zip(held) {
            assert_eq!(
                copy.without_provenance(),
                original.without_provenance(),
                "partition {p}, copy at {}",
                copy.offset
            );
        }
        let shipped = copied.len() as i64;
        let end = held.last().map_or(0, |r| r.offset + 1);
        expected.insert(p, (shipped, end, Vec::new()));
    }
    // Records deleted on the primary before they were copied are on neither cluster:
    // the plan names them apart, and keep cannot keep them.
    // In the partition furthest behind.
    let (deleted_in, (shipped, end, _)) = expected
        .iter()
        .max_by_key(|(_, (shipped, end, _))| end - shipped)
        .map(|(p, e)| (*p, e.clone()))
        .unwrap();
    let deleted_to = shipped + 100;
    assert!(
        deleted_to < end,
        "every partition was copied to within 100 records of its end"
    );
    delete_records_before(PRIMARY, &topic, &[(deleted_in, deleted_to)]);
    let still_held = |p: i32, shipped: i64| {
        if p == deleted_in {
            deleted_to
        } else {
            shipped
        }
    };
    for (p, (shipped, _, unshipped)) in expected.iter_mut() {
        let from = still_held(*p, *shipped);
        unshipped.extend(primary[p].iter().filter(|r| r.offset >= from));
    }
    let never_shipped: usize = expected.values().map(|(_, _, u)| u.len()).sum();
    assert!(
        never_shipped > 0,
        "the flow caught up before the primary died: nothing to report"
    );

    // The killed instance stays a member of the flow's group until its session times
    // out, on the restarted primary too: the plan says the flow is running until then.
    let mut report = serde_json::Value::Null;
    wait_until(Duration::from_secs(90), "the flow's group to empty", || {
        report = serde_json::from_str(&failback_plan(&strait.config, "json")).unwrap();
        report["flow_members"] == 0
    });
    let checked: Vec<(i32, i64, i64, usize)> = expected
        .iter()
        .map(|(p, (shipped, end, unshipped))| (*p, *shipped, *end, unshipped.len()))
        .collect();
    assert_eq!(
        report["not_shipped_records"], never_shipped,
        "the checker's (partition, shipped, end, records): {checked:?}\n{report:#}"
    );
    let partitions = report["partitions"].as_array().unwrap().clone();
    assert_eq!(partitions.len(), PARTITIONS as usize, "{report:#}");
    for plan in &partitions {
        let p = plan["partition"].as_i64().unwrap() as i32;
        assert_eq!(plan["topic"], topic.as_str());
        assert_eq!(plan["secondary_topic"], copy_topic.as_str());
        let (shipped, end, unshipped) = &expected[&p];
        let deleted = &plan["deleted_before_copied"];
        if p == deleted_in {
            // The copies after the last anchor before the deletion carry no header, and
            // their originals are gone: the plan names the copies up to that anchor, and
            // says the deleted range may hold copies. What is still held is exact.
            let named = plan["shipped_through"].as_i64().unwrap();
            assert!(
                named <= *shipped && named > *shipped - 50,
                "partition {p}: copies end at {shipped}: {plan:#}"
            );
            // Records after the named copies whose originals would be gone cannot be told
            // from copies: copies between anchors, and under identity naming the
            // applications' records after the copies.
            if named < *shipped {
                assert_eq!(
                    plan["deleted_may_include_copies"], true,
                    "partition {p}: copies end at {shipped}: {plan:#}"
                );
            } else if naming == "prefix" {
                assert_eq!(
                    plan["deleted_may_include_copies"], false,
                    "partition {p}: copies end at {shipped}: {plan:#}"
                );
            }
            assert_eq!(deleted["from"], named, "partition {p}: {plan:#}");
            assert_eq!(deleted["to"], deleted_to, "partition {p}: {plan:#}");
        } else {
            assert_eq!(plan["shipped_through"], *shipped, "partition {p}: {plan:#}");
            assert_eq!(
                plan["deleted_may_include_copies"], false,
                "partition {p}: {plan:#}"
            );
            assert!(deleted.is_null(), "partition {p}: {plan:#}");
        }
        // The secondary's copies sit at the primary's offsets, from 0 on.
        assert_eq!(
            plan["secondary_copies_end"], plan["shipped_through"],
            "partition {p}: {plan:#}"
        );
        for nothing in ["copied_but_gone_from_primary", "open_transactions"] {
            assert!(plan[nothing].is_null(), "partition {p}: {plan:#}");
        }
        if unshipped.is_empty() {
            assert!(plan["not_shipped"].is_null(), "partition {p}: {plan:#}");
            continue;
        }
        assert_eq!(
            plan["not_shipped"]["from"],
            still_held(p, *shipped),
            "partition {p}: {plan:#}"
        );
        assert_eq!(plan["not_shipped"]["to"], *end, "partition {p}: {plan:#}");
        let records = &plan["not_shipped_records"];
        assert_eq!(
            records["records"],
            unshipped.len(),
            "partition {p}: {plan:#}"
        );
        assert_eq!(
            records["first_timestamp_ms"],
            unshipped[0].timestamp.unwrap(),
            "partition {p}: {plan:#}"
        );
        assert_eq!(
            records["last_timestamp_ms"],
            unshipped.last().unwrap().timestamp.unwrap(),
            "partition {p}: {plan:#}"
        );
    }

    // Keeping them: a run killed part-way through (the secondary made slow), then run
    // again, leaves each of them once in the side topic, in order, with its primary offset.
    let side = format!("primary.unshipped.{topic}");
    let quota = ProducerQuota::set(SECONDARY, "strait-failback-keep", 20 * 1024);
    // The broker applies a new quota moments after the tool returns.
    std::thread::sleep(Duration::from_secs(2));
    let mut interrupted = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["failback", "keep", "--config"])
        .arg(&strait.config)
        .args(["--flow", "fb", "--records-per-transaction", "10"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), "some records kept", || {
        partition_count(SECONDARY, &side).is_some() && count_all(SECONDARY, &side) >= 40
    });
    interrupted.kill().unwrap();
    interrupted.wait().unwrap();
    drop(quota);
    let kept_before = count_all(SECONDARY, &side);
    assert!(
        kept_before < never_shipped,
        "the first run was not interrupted"
    );
    let kept = failback_keep(&strait.config);
    assert!(kept.contains(&format!("→ {side}[")), "{kept}");
    let again = failback_keep(&strait.config);
    let rows: Vec<&str> = again.lines().filter(|l| l.contains(" → ")).collect();
    assert!(
        !rows.is_empty()
            && rows
                .iter()
                .all(|l| l.ends_with(": all kept by an earlier run")),
        "a second run copied again:\n{again}"
    );
    let side_records = read_all(SECONDARY, &side);
    for (p, (_, _, unshipped)) in &expected {
        let got = side_records.get(p).map_or(&[][..], Vec::as_slice);
        assert_eq!(
            got.len(),
            unshipped.len(),
            "side partition {p}: {kept}\n{again}"
        );
        for (copy, original) in got.iter().zip(unshipped) {
            assert_eq!(
                copy.without_provenance(),
                original.without_provenance(),
                "side partition {p}"
            );
            assert_eq!(
                copy.provenance_offset(),
                Some(original.offset),
                "side partition {p}"
            );
        }
    }

    let text = failback_plan(&strait.config, "text");
    // What docs/operations.md shows (with --nocapture).
    println!("$ strait failback plan\n{text}\n$ strait failback keep (after one killed part-way)\n{kept}\n$ strait failback keep\n{again}");
    let affected = expected.values().filter(|(_, _, u)| !u.is_empty()).count();
    assert!(
        text.contains(&format!(
            "{never_shipped} records in {affected} of {PARTITIONS} partitions never reached 'secondary'"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{topic}[{deleted_in}]: offsets ["))
            && text.contains(&format!(", {deleted_to}) were deleted on 'primary'")),
        "{text}"
    );
    for (p, (shipped, end, unshipped)) in &expected {
        if !unshipped.is_empty() {
            assert!(
                text.contains(&format!("{topic}[{p}]"))
                    && text.contains(&format!("[{}, {end})", still_held(*p, *shipped))),
                "partition {p}:\n{text}"
            );
        }
    }

    // Copying back: what the applications wrote on the secondary since the failover
    // reaches the primary's own topic after the primary's records, each once and in
    // order, and nothing else does: under identity naming the copies before it in the
    // same partitions never go back. One run is killed part-way (the primary made slow)
    // and started again, and the applications write more meanwhile.
    let came_back_from: BTreeMap<i32, i64> = partitions
        .iter()
        .map(|plan| {
            let p = plan["partition"].as_i64().unwrap() as i32;
            let from = match naming {
                "identity" => plan["secondary_copies_end"].as_i64().unwrap(),
                _ => 0,
            };
            (p, from)
        })
        .collect();
    let primary_own = read_all(PRIMARY, &topic);
    let own_count: usize = primary_own.values().map(Vec::len).sum();
    let quota = ProducerQuota::set(PRIMARY, "strait-fb-failback", 5 * 1024);
    std::thread::sleep(Duration::from_secs(2));
    let mut back = Strait::spawn_command(&config, &["failback", "run", "--flow", "fb"]);
    wait_until(Duration::from_secs(90), "some records copied back", || {
        count_all(PRIMARY, &topic) >= own_count + 100
    });
    back.restart();
    drop(quota);
    produce_simple(SECONDARY, &topic, PARTITIONS, 300, "after-failover-more");
    let secondary_now = read_all(SECONDARY, &topic);
    let to_come_back: BTreeMap<i32, Vec<&Rec>> = (0..PARTITIONS)
        .map(|p| {
            let records = secondary_now.get(&p).map_or(&[][..], Vec::as_slice);
            let from = came_back_from[&p];
            (p, records.iter().filter(|r| r.offset >= from).collect())
        })
        .collect();
    let expected_total = own_count + to_come_back.values().map(Vec::len).sum::<usize>();
    wait_until(
        Duration::from_secs(120),
        "everything new copied back",
        || count_all(PRIMARY, &topic) >= expected_total,
    );
    // Anything copied twice would arrive within moments.
    std::thread::sleep(Duration::from_secs(3));
    let primary_after = read_all(PRIMARY, &topic);
    // The application group reads what was written on the secondary since.
    app_read.extend(consume(SECONDARY, &app, &on_secondary, usize::MAX));
    for p in 0..PARTITIONS {
        let own = primary_own.get(&p).map_or(&[][..], Vec::as_slice);
        let got = primary_after.get(&p).map_or(&[][..], Vec::as_slice);
        let expected = &to_come_back[&p];
        assert_eq!(
            got.len(),
            own.len() + expected.len(),
            "partition {p}: the primary's {} records and {} copied back ({})",
            own.len(),
            expected.len(),
            back.logs()
        );
        assert_eq!(&got[..own.len()], own, "partition {p}");
        for (copy, original) in got[own.len()..].iter().zip(expected) {
            assert_eq!(
                copy.without_provenance(),
                original.without_provenance(),
                "partition {p}, copy at {}",
                copy.offset
            );
            assert_eq!(
                copy.provenance_offset(),
                Some(original.offset),
                "partition {p}, copy at {}",
                copy.offset
            );
        }
    }

    // Moving a group back: from where it stands on the secondary to the same place on
    // the primary. One partition inside the copies (it goes on with the originals, then
    // the records never shipped), one at their end and one inside the applications'
    // records (each goes on with the copy back of its next record, and the records never
    // shipped are passed over). The checker finds each answer by the records' contents
    // and the copies' provenance on the primary.
    let others: Vec<i32> = (0..PARTITIONS).filter(|p| *p != deleted_in).collect();
    let (mid_copies, at_end) = (others[0], others[1]);
    let group = unique("fb-app");
    let copies_end = |p: i32| came_back_from_copies(&partitions, p);
    let position = |p: i32| -> (i64, Option<i64>) {
        // (offset in the copies' partition, offset in the applications' partition)
        let end = copies_end(p);
        match (naming, p) {
            (_, p) if p == mid_copies => (end / 2, None),
            (_, p) if p == at_end => (end, None),
            ("identity", _) => (end + 10, None),
            _ => (end, Some(10)),
        }
    };
    let copies_secondary = read_all(SECONDARY, &copy_topic);
    let mut wanted = BTreeMap::new();
    for p in 0..PARTITIONS {
        let (in_copies, in_applications) = position(p);
        commit_offsets(SECONDARY, &group, &copy_topic, &[(p, in_copies)]);
        if let Some(a) = in_applications {
            commit_offsets(SECONDARY, &group, &topic, &[(p, a)]);
        }
        let on_primary = &primary_after[&p];
        let expected = if p == mid_copies {
            let copy = copies_secondary[&p]
                .iter()
                .find(|r| r.offset == in_copies)
                .unwrap();
            on_primary
                .iter()
                .find(|r| r.without_provenance() == copy.without_provenance())
                .map(|r| r.offset)
        } else {
            // The applications' record the group reads next on the secondary: under
            // prefix naming, in the applications' own topic (from its start if the group
            // has read none).
            let next = match naming {
                "identity" => in_copies,
                _ => in_applications.unwrap_or(0),
            };
            on_primary
                .iter()
                .find(|r| r.provenance_offset() == Some(next))
                .map(|r| r.offset)
        };
        let expected = expected.unwrap_or_else(|| {
            panic!(
                "partition {p}: no record on the primary for the group's position \
                 ({in_copies}, {in_applications:?}); provenance of the copies back: {:?}",
                on_primary
                    .iter()
                    .filter_map(Rec::provenance_offset)
                    .take(5)
                    .collect::<Vec<_>>()
            )
        });
        wanted.insert(p, expected);
    }
    failback(&["translate", "--group", &app, "--apply"], &strait.config);
    let moved = failback(&["translate", "--group", &group, "--apply"], &strait.config);
    println!("$ strait failback translate --group G --apply\n{moved}");
    for p in 0..PARTITIONS {
        assert_eq!(
            committed_offset(PRIMARY, &group, &topic, p),
            Some(wanted[&p]),
            "partition {p}:\n{moved}"
        );
    }
    if naming == "prefix" {
        // A group that read the applications' records before it finished the copies has
        // no one place on the primary: refused, and nothing is written.
        let torn = unique("fb-torn");
        commit_offsets(SECONDARY, &torn, &copy_topic, &[(mid_copies, 5)]);
        commit_offsets(SECONDARY, &torn, &topic, &[(mid_copies, 5)]);
        let stderr = failback_err(&["translate", "--group", &torn, "--apply"], &strait.config);
        assert!(stderr.contains("not applied"), "{stderr}");
        assert_eq!(committed_offset(PRIMARY, &torn, &topic, mid_copies), None);
    }

    // The original direction again: refused while the copy back runs; then, with it
    // stopped, the flow resumes after the copies back, and copies to the secondary
    // exactly what the applications write on the primary from then on: no copy back
    // and no record never shipped goes forward again.
    let stderr = failback_err(&["finish"], &strait.config);
    assert!(
        stderr.contains("failback run --flow fb` is running"),
        "{stderr}"
    );
    assert_eq!(back.terminate(), Some(0), "{}", back.logs());
    let finished = failback(&["finish"], &strait.config);
    println!("$ strait failback finish\n{finished}");
    let secondary_before = read_all(SECONDARY, &copy_topic);
    produce_simple(PRIMARY, &topic, PARTITIONS, 300, "after-failback");
    let primary_final = read_all(PRIMARY, &topic);
    let mut forward_again = Strait::start(&config);
    let new_on_primary: BTreeMap<i32, Vec<&Rec>> = (0..PARTITIONS)
        .map(|p| {
            let before = primary_after.get(&p).map_or(0, Vec::len);
            (p, primary_final[&p].iter().skip(before).collect())
        })
        .collect();
    let want = secondary_before.values().map(Vec::len).sum::<usize>() + 300;
    wait_until(
        Duration::from_secs(90),
        "the new records copied forward",
        || count_all(SECONDARY, &copy_topic) >= want,
    );
    std::thread::sleep(Duration::from_secs(3));
    let secondary_final = read_all(SECONDARY, &copy_topic);
    app_read.extend(consume(PRIMARY, &app, &[&topic], usize::MAX));
    for p in 0..PARTITIONS {
        let before = secondary_before.get(&p).map_or(&[][..], Vec::as_slice);
        let got = &secondary_final[&p];
        let new = &new_on_primary[&p];
        assert_eq!(
            got.len(),
            before.len() + new.len(),
            "partition {p}: {finished}\n{}",
            forward_again.logs()
        );
        assert_eq!(&got[..before.len()], before, "partition {p}");
        for (copy, original) in got[before.len()..].iter().zip(new) {
            assert_eq!(
                copy.without_provenance(),
                original.without_provenance(),
                "partition {p}, copy at {}",
                copy.offset
            );
        }
    }
    // Over the whole drill the application group read every record written exactly
    // once, on one cluster or the other, but those the plan listed (never shipped, or
    // deleted before they were copied). The primary's records are named by partition and
    // offset (their copies on the secondary sit at the same offsets), the applications'
    // by their values.
    let name = |r: &Rec| match r.value.as_deref() {
        Some(v) if v.starts_with(b"after-") => String::from_utf8_lossy(v).into_owned(),
        _ => format!("{}@{}", r.partition, r.offset),
    };
    let mut read_count: BTreeMap<String, usize> = BTreeMap::new();
    for (_, r) in &app_read {
        *read_count.entry(name(r)).or_default() += 1;
    }
    let twice: Vec<&String> = read_count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(
        twice.is_empty(),
        "{} records read more than once, among them {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
    let mut written: Vec<String> = expected
        .iter()
        .flat_map(|(p, (shipped, _, _))| (0..*shipped).map(move |o| format!("{p}@{o}")))
        .collect();
    for (tag, count) in [
        ("after-failover", 600),
        ("after-failover-more", 300),
        ("after-failback", 300),
    ] {
        written.extend((0..count).map(|i| format!("{tag}-{i}")));
    }
    let written: std::collections::BTreeSet<String> = written.into_iter().collect();
    let read: std::collections::BTreeSet<String> = read_count.into_keys().collect();
    let missed: Vec<&String> = written.difference(&read).take(10).collect();
    let unexpected: Vec<&String> = read.difference(&written).take(10).collect();
    assert!(
        missed.is_empty() && unexpected.is_empty(),
        "the application group missed {missed:?} and read {unexpected:?}, which are not \
         expected"
    );

    // Finish run again once the flow copied on never moves it back.
    assert_eq!(
        forward_again.terminate(),
        Some(0),
        "{}",
        forward_again.logs()
    );
    let again = failback(&["finish"], &strait.config);
    assert!(
        again.contains("every partition already resumes after the copies back"),
        "{again}"
    );
}

/// `strait failback <command> --flow fb`, which must succeed; its standard output.
fn failback(command: &[&str], config: &std::path::Path) -> String {
    strait_ok(&failback_args(command), config)
}

/// `strait failback <command> --flow fb`, which must fail; its standard error.
fn failback_err(command: &[&str], config: &std::path::Path) -> String {
    strait_err(&failback_args(command), config)
}

fn failback_args<'a>(command: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["failback"];
    args.extend(command);
    args.extend(["--flow", "fb"]);
    args
}

/// `strait failback keep` for flow `fb`, its standard output.
fn failback_keep(config: &std::path::Path) -> String {
    failback(&["keep"], config)
}

/// `strait failback plan` for flow `fb`, its standard output.
fn failback_plan(config: &std::path::Path, output: &str) -> String {
    failback(&["plan", "--output", output], config)
}

/// Where the secondary's copies of the primary's records end in partition `p`, as the
/// plan reported it (checked against the copies themselves above).
fn came_back_from_copies(partitions: &[serde_json::Value], p: i32) -> i64 {
    partitions
        .iter()
        .find(|plan| plan["partition"] == p)
        .and_then(|plan| plan["secondary_copies_end"].as_i64())
        .unwrap()
}
