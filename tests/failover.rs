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
    commit_offsets(PRIMARY, &group, &topic, &stops);

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
    let _primary_back = ClusterBack("primary");
    kafka_sh(&["stop", "primary"]);

    let stdout = strait_ok(
        &[
            "offsets",
            "translate",
            "--flow",
            "dr",
            "--group",
            &group,
            "--apply",
        ],
        &config,
    );
    assert!(
        stdout.contains("last checkpoints"),
        "not from checkpoints:\n{stdout}"
    );
    assert!(
        stdout.contains(&target),
        "offsets must land on the renamed topic:\n{stdout}"
    );

    let read = resume_on_secondary(&group, &sources, &target, &[0, 1, 2]);
    for (p, stop) in stops {
        let expected: Vec<i64> = sources[&p]
            .iter()
            .map(|r| r.offset)
            .filter(|o| *o >= stop)
            .collect();
        assert_eq!(
            read[&p], expected,
            "partition {p}: after failover the group must read exactly the records after {stop}"
        );
    }
}
