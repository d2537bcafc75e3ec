//! `/readyz`, `/status` and the replication metrics against the real test clusters:
//! ready only while both clusters are reachable, lag in records and seconds that grows
//! while the target is down and returns to 0 after it comes back.
//!
//! This stops the secondary broker, so it lives in a test binary of its own (cargo runs
//! test binaries one after another) and restarts it when done, even on failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn ready_code(strait: &Strait) -> Option<u16> {
    let raw = http_get(strait.port, "/readyz")?;
    raw.split(' ').nth(1)?.parse().ok()
}

fn topic_status<'a>(status: &'a Value, topic: &str) -> Option<&'a Value> {
    status["flows"][0]["topics"]
        .as_array()?
        .iter()
        .find(|t| t["source_topic"] == topic)
}

#[test]
fn readiness_status_and_lag_follow_the_clusters() {
    let topic = unique("observed");
    // A flow of its own per run: the migration's state outlives a run on the same clusters.
    let flow = unique("obs");
    let flow_label = format!("flow=\"{flow}\"");
    let target = format!("primary.{topic}");
    create_topic(PRIMARY, &topic, 3, &[]);
    produce_simple(PRIMARY, &topic, 3, 3_000, "first");

    // `migrate run` (a migration waiting at its manual mirror gate) replicates like
    // `strait run`, and adds the migration to /status.
    let config = format!(
        "{}\n[migration]\nflow = \"{flow}\"\ngroups = [\"{}\"]\n\
         [migration.gates.move_producers]\napproval = \"auto\"\nproducers_idle_for = \"1s\"\n",
        flow_config(&flow, &topic, "prefix", ""),
        unique("obs-app")
    );
    let strait = Strait::spawn_command(&config, &["migrate", "run"]);
    wait_until(Duration::from_secs(60), "the first batch copied", || {
        end_offsets(SECONDARY, &target) == 3_000
    });
    wait_until(Duration::from_secs(20), "/readyz 200", || {
        ready_code(&strait) == Some(200)
    });

    // Caught up: lag 0 in records and seconds, and every partition accounted for.
    wait_until(Duration::from_secs(10), "/status shows the copy", || {
        let s = status_json(&strait);
        topic_status(&s, &topic).is_some_and(|t| {
            t["records_replicated"] == 3_000 && t["lag_records"] == 0 && t["lag_seconds"] == 0.0
        })
    });
    let s = status_json(&strait);
    assert_eq!(s["ready"], true, "{s:#}");
    assert_eq!(s["flows"][0]["source"]["connected"], true);
    assert_eq!(s["flows"][0]["target"]["connected"], true);
    let t = topic_status(&s, &topic).unwrap();
    assert_eq!(t["target_topic"], target.as_str());
    let partitions = t["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3, "{t:#}");
    for p in partitions {
        assert_eq!(p["assigned"], true, "{p:#}");
        assert_eq!(p["replicated_next"], 1_000, "{p:#}");
        assert_eq!(p["source_end"], 1_000, "{p:#}");
        assert_eq!(p["target_next"], 1_000, "{p:#}");
    }
    let metrics = strait.metrics();
    let labels = format!("flow=\"{flow}\",topic=\"{topic}\"");
    assert_eq!(
        metric_value(&metrics, "strait_records_replicated_total", &labels),
        Some(3_000.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "strait_replication_lag_seconds", &labels),
        Some(0.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            "strait_replication_lag_partition_records",
            &labels
        ),
        Some(0.0)
    );
    let sampled = metric_value(
        &metrics,
        "strait_replication_latency_seconds_count",
        &flow_label,
    );
    assert!(sampled.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(metrics.contains(&format!(
        "strait_replication_latency_seconds_bucket{{{flow_label},le=\"0.1\"}}"
    )));
    assert_eq!(
        metric_value(&metrics, "strait_flow_up", &flow_label),
        Some(1.0)
    );

    // Heartbeats (on by default for prefix flows): written to the source every second
    // and replicated, so latency keeps being measured while the application is idle.
    wait_until(
        Duration::from_secs(30),
        "heartbeats on the secondary",
        || end_offsets(SECONDARY, &format!("primary.strait.heartbeats.{flow}")) >= 3,
    );
    let samples = |m: &str| {
        metric_value(m, "strait_replication_latency_seconds_count", &flow_label).unwrap_or(0.0)
    };
    let before = samples(&strait.metrics());
    wait_until(
        Duration::from_secs(15),
        "latency samples from heartbeats alone",
        || samples(&strait.metrics()) >= before + 3.0,
    );
    let heartbeats = metric_value(
        &strait.metrics(),
        "strait_heartbeats_sent_total",
        &flow_label,
    );
    assert!(heartbeats.is_some_and(|n| n >= 3.0), "{heartbeats:?}");
    // A first start creates the heartbeat topic and its copy at once; the copy has the
    // same settings as the topic (a copy created by the broker on the first write, or
    // with the target's defaults, would keep records for a week).
    for (servers, topic) in [
        (PRIMARY, format!("strait.heartbeats.{flow}")),
        (SECONDARY, format!("primary.strait.heartbeats.{flow}")),
    ] {
        assert_eq!(partition_count(servers, &topic), Some(1), "{topic}");
        let configs = topic_configs(servers, &topic);
        assert_eq!(
            configs.get("retention.ms").map(String::as_str),
            Some("86400000"),
            "{topic}: {configs:?}"
        );
        assert_eq!(
            configs.get("cleanup.policy").map(String::as_str),
            Some("delete"),
            "{topic}: {configs:?}"
        );
    }

    // The offset map's topic is created in the same request as the heartbeat copy.
    let map_topic = format!("__strait.offsets.{flow}");
    assert_eq!(partition_count(SECONDARY, &map_topic), Some(1));
    assert_eq!(
        topic_configs(SECONDARY, &map_topic)
            .get("cleanup.policy")
            .map(String::as_str),
        Some("compact")
    );

    // The target goes away: not ready, naming the target; new records wait, and their
    // lag in seconds grows with their age.
    let _secondary_back = ClusterBack("secondary");
    kafka_sh(&["stop", "secondary"]);
    wait_until(Duration::from_secs(30), "/readyz 503", || {
        ready_code(&strait) == Some(503)
    });
    let body = http_get(strait.port, "/readyz").unwrap();
    assert!(
        body.contains("not connected to target 'secondary'") && !body.contains("source"),
        "{body}"
    );
    produce_simple(PRIMARY, &topic, 3, 300, "second");
    wait_until(Duration::from_secs(20), "lag of 300 records", || {
        let s = status_json(&strait);
        topic_status(&s, &topic).is_some_and(|t| t["lag_records"] == 300)
    });
    std::thread::sleep(Duration::from_secs(3));
    let s = status_json(&strait);
    let t = topic_status(&s, &topic).unwrap();
    let lag_seconds = t["lag_seconds"].as_f64().unwrap();
    assert!((3.0..60.0).contains(&lag_seconds), "{t:#}");
    assert_eq!(s["ready"], false);
    assert_eq!(s["flows"][0]["target"]["connected"], false);
    assert_eq!(s["flows"][0]["source"]["connected"], true);
    let metrics = strait.metrics();
    let seconds = metric_value(&metrics, "strait_replication_lag_seconds", &labels).unwrap();
    assert!(seconds >= 3.0, "{metrics}");

    // Back: ready again, everything copied once, lag 0.
    kafka_sh(&["start", "secondary"]);
    wait_until(Duration::from_secs(90), "the second batch copied", || {
        end_offsets(SECONDARY, &target) == 3_300
    });
    wait_until(Duration::from_secs(30), "/readyz 200 again", || {
        ready_code(&strait) == Some(200)
    });
    wait_until(Duration::from_secs(10), "lag back to 0", || {
        let s = status_json(&strait);
        topic_status(&s, &topic).is_some_and(|t| t["lag_records"] == 0 && t["lag_seconds"] == 0.0)
    });
    assert_exact_copy(&topic, &target);

    // The migration carries on after the outage (its readers of the secondary wait out
    // the connection errors queued meanwhile), and heartbeats, which never stop, do not
    // hold up the gate that waits for producers to go idle.
    let approve = std::process::Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["migrate", "approve", "mirror", "--config"])
        .arg(&strait.config)
        .output()
        .unwrap();
    assert!(approve.status.success(), "{approve:?}");
    wait_until(
        Duration::from_secs(90),
        "the migration at start_consumers",
        || status_json(&strait)["migration"]["stage"] == "start_consumers",
    );
}
