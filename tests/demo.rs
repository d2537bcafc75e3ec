//! `strait demo` runs to the end on librdkafka's mock clusters, serves /metrics and
//! /status while it runs, and reports an exact migration. (The mock is the demo's setting,
//! not proof of replication: the real-Kafka tests are.)
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get};

#[test]
fn demo_migrates_exactly_and_serves_metrics_while_it_runs() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut saw_metrics = false;
    let mut saw_status = false;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "demo still running after 180 s");
        if !saw_metrics {
            saw_metrics =
                http_get(port, "/metrics").is_some_and(|m| m.contains("strait_migration_stage{"));
        }
        if !saw_status {
            saw_status = http_get(port, "/status").is_some_and(|s| s.contains("\"migration\": {"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(saw_metrics, "/metrics never showed the migration stage");
    assert!(saw_status, "/status never showed the migration");
    for wanted in [
        "the mock has no CreateTopics API",
        "the mock cannot describe groups",
        "mirror → move_producers → drain → stop_consumers → translate_offsets → verify → start_consumers → done",
        "6000 records in 3 partitions, identical",
        "read 4000 on old and 3500 on new: 0 read twice, 0 missing",
    ] {
        assert!(stdout.contains(wanted), "missing {wanted:?} in:\n{stdout}");
    }
}
