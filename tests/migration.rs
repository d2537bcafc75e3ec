//! Staged migrations against the real test clusters, checked the way an application sees
//! them: every record a live producer wrote is consumed exactly once by a live consumer
//! group that moves from the primary to the secondary half-way.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;

const ON_PRIMARY: u8 = 0;
const PAUSED: u8 = 1;
const ON_SECONDARY: u8 = 2;
const STOP: u8 = 3;

/// A live producer writing numbered, keyed records to whichever cluster `target` says.
struct LiveProducer {
    target: Arc<AtomicU8>,
    sent: Arc<Mutex<Vec<u64>>>,
    /// Set by the thread once it is paused with everything delivered.
    idle: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl LiveProducer {
    fn start(topic: &str) -> Self {
        let target = Arc::new(AtomicU8::new(ON_PRIMARY));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let idle = Arc::new(AtomicBool::new(false));
        let (t, s, i, topic) = (
            target.clone(),
            sent.clone(),
            idle.clone(),
            topic.to_string(),
        );
        let handle = std::thread::spawn(move || {
            let primary = producer(PRIMARY);
            let secondary = producer(SECONDARY);
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let cluster = match t.load(Ordering::SeqCst) {
                    ON_PRIMARY => &primary,
                    ON_SECONDARY => &secondary,
                    PAUSED => {
                        flush(&primary);
                        i.store(true, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    _ => break,
                };
                i.store(false, Ordering::SeqCst);
                let out = Out {
                    partition: (n % 3) as i32,
                    key: Some(format!("key-{}", n % 17).into_bytes()),
                    value: Some(n.to_string().into_bytes()),
                    headers: vec![],
                    timestamp: None,
                };
                send(cluster, &topic, &out);
                s.lock().unwrap().push(n);
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            flush(&primary);
            flush(&secondary);
        });
        Self {
            target,
            sent,
            idle,
            handle: Some(handle),
        }
    }

    fn switch(&self, to: u8) {
        self.target.store(to, Ordering::SeqCst);
    }

    /// Stops writing to the primary and waits until all of it is delivered.
    fn pause(&self) {
        self.switch(PAUSED);
        wait_until(Duration::from_secs(30), "producer paused", || {
            self.idle.load(Ordering::SeqCst)
        });
    }

    fn stop(mut self) -> Vec<u64> {
        self.switch(STOP);
        self.handle.take().unwrap().join().unwrap();
        self.sent.lock().unwrap().clone()
    }
}

/// The group protocol a consumer speaks (`group.protocol`).
#[derive(Clone, Copy)]
enum Protocol {
    /// The classic protocol (JoinGroup/SyncGroup), every client's default.
    Classic,
    /// KIP-848's protocol (ConsumerGroupHeartbeat), the default of Kafka 4's Java client.
    Consumer,
}

/// A live consumer-group member that commits what it has processed.
struct LiveConsumer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl LiveConsumer {
    fn start(
        servers: &str,
        group: &str,
        topic: &str,
        protocol: Protocol,
        seen: Arc<Mutex<Vec<u64>>>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", servers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed");
        match protocol {
            Protocol::Classic => config.set("session.timeout.ms", "10000"),
            // Under this protocol the broker sets the session timeout; librdkafka refuses
            // session.timeout.ms.
            Protocol::Consumer => config.set("group.protocol", "consumer"),
        };
        let consumer: BaseConsumer = config.create().unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut last_commit = Instant::now();
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                    let m = m.unwrap();
                    let value = std::str::from_utf8(m.payload().unwrap()).unwrap();
                    seen.lock().unwrap().push(value.parse().unwrap());
                }
                if last_commit.elapsed() > Duration::from_millis(200) {
                    let _ = consumer.commit_consumer_state(CommitMode::Sync);
                    last_commit = Instant::now();
                }
            }
            // Everything processed is committed before the member leaves the group.
            let _ = consumer.commit_consumer_state(CommitMode::Sync);
            drop(consumer);
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap();
    }
}

/// A one-flow migration config; each test gets a flow of its own (and so its own
/// offset map and migration state topics).
fn migration_config(flow: &str, topic: &str, group: &str, gates: &str) -> String {
    let config = flow_config(
        flow,
        topic,
        "identity",
        &format!("[flows.{flow}.offset_sync]\ncheckpoint_interval = \"1s\""),
    );
    format!("{config}\n[migration]\nflow = \"{flow}\"\ngroups = [\"{group}\"]\n{gates}\n")
}

fn migrate(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .arg("migrate")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn status(config: &std::path::Path) -> serde_json::Value {
    let (ok, out, err) = migrate(config, &["status", "--output", "json"]);
    assert!(ok, "migrate status failed: {err}");
    serde_json::from_str(&out).unwrap()
}

fn wait_for_stage(strait: &Strait, stage: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (ok, out, _) = migrate(&strait.config, &["status", "--output", "json"]);
        if ok {
            let s: serde_json::Value = serde_json::from_str(&out).unwrap();
            if s["stage"] == stage {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "stage {stage} not reached; status:\n{s:#}\n{}",
                strait.logs()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no status; log:\n{}",
            strait.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Asserts the migration stays at `stage` for `hold`, and returns its last status.
fn stays_at(strait: &Strait, stage: &str, hold: Duration) -> serde_json::Value {
    let until = Instant::now() + hold;
    let mut last = status(&strait.config);
    while Instant::now() < until {
        last = status(&strait.config);
        assert_eq!(last["stage"], stage, "advanced while unsafe:\n{last:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
    last
}

#[test]
fn live_migration_moves_producer_and_consumer_with_no_loss_and_no_duplicate() {
    live_migration(Protocol::Classic);
}

/// The same with a group of KIP-848's protocol, whose members the classic DescribeGroups
/// does not show: the gates must see them come and go all the same.
#[test]
fn live_migration_of_a_group_on_the_new_consumer_protocol() {
    live_migration(Protocol::Consumer);
}

/// A live producer and a live consumer group move from the primary to the secondary
/// through `strait migrate run`, with kill -9 of the controller at two gates; every
/// record is read exactly once.
fn live_migration(protocol: Protocol) {
    let topic = unique("migrate-orders");
    let group = unique("orders-app");
    create_topic(PRIMARY, &topic, 3, &[]);
    let producer = LiveProducer::start(&topic);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = LiveConsumer::start(PRIMARY, &group, &topic, protocol, seen.clone());

    let config = migration_config(
        &unique("live"),
        &topic,
        &group,
        "[migration.gates.move_producers]\napproval = \"auto\"\nproducers_idle_for = \"3s\"",
    );
    let mut strait = Strait::spawn_command(&config, &["migrate", "run"]);
    wait_for_stage(&strait, "mirror");
    // Approving a stage that is not the current one is refused.
    let (ok, _, err) = migrate(&strait.config, &["approve", "drain"]);
    assert!(!ok);
    assert!(
        err.contains("cannot approve stage drain: the migration is at stage mirror"),
        "{err}"
    );
    let (ok, _, err) = migrate(&strait.config, &["approve", "mirror"]);
    assert!(ok, "{err}");

    // The producer still writes to the primary: the gate must hold.
    wait_for_stage(&strait, "move_producers");
    let held = stays_at(&strait, "move_producers", Duration::from_secs(6));
    assert!(
        held["waiting_for"]
            .as_str()
            .unwrap()
            .contains("still writing"),
        "{held:#}"
    );
    // Killed mid-stage, the daemon resumes where it was.
    strait.kill9();
    strait.restart();
    let resumed = status(&strait.config);
    assert_eq!(resumed["stage"], "move_producers", "{resumed:#}");

    // Producers stop on the primary and start on the secondary once drained.
    producer.pause();
    wait_for_stage(&strait, "stop_consumers");
    producer.switch(ON_SECONDARY);

    // The consumer group is still active on the primary: the gate must hold.
    let held = stays_at(&strait, "stop_consumers", Duration::from_secs(4));
    assert!(
        held["waiting_for"]
            .as_str()
            .unwrap()
            .contains("still active"),
        "{held:#}"
    );
    strait.kill9();
    strait.restart();
    assert_eq!(status(&strait.config)["stage"], "stop_consumers");

    consumer.stop();
    let at_start = wait_for_stage(&strait, "start_consumers");
    assert!(
        at_start["translated"][&group].is_array(),
        "offsets not recorded:\n{at_start:#}"
    );
    assert_eq!(at_start["verify"]["ok"], true, "{at_start:#}");
    assert_eq!(at_start["verify"]["complete"], true, "{at_start:#}");

    let consumer = LiveConsumer::start(SECONDARY, &group, &topic, protocol, seen.clone());
    assert_eq!(
        strait.wait_exit(Duration::from_secs(60)),
        Some(0),
        "migrate run did not finish:\n{}",
        strait.logs()
    );

    std::thread::sleep(Duration::from_secs(1));
    let sent = producer.stop();
    wait_until(Duration::from_secs(60), "consumer caught up", || {
        seen.lock().unwrap().len() >= sent.len()
    });
    std::thread::sleep(Duration::from_secs(2));
    consumer.stop();

    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for v in seen.lock().unwrap().iter() {
        *counts.entry(*v).or_default() += 1;
    }
    let missing: Vec<u64> = sent
        .iter()
        .filter(|v| !counts.contains_key(v))
        .copied()
        .collect();
    let twice: Vec<u64> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(v, _)| *v)
        .collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "{} records sent; missing {missing:?}; read twice {twice:?}",
        sent.len()
    );
    assert!(
        sent.len() > 1000,
        "the producer wrote too little to prove much"
    );

    let done = status(&strait.config);
    let stages: Vec<&str> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "mirror",
            "move_producers",
            "drain",
            "stop_consumers",
            "translate_offsets",
            "verify",
            "start_consumers",
            "done"
        ]
    );

    // A finished migration is not started again.
    let (ok, _, err) = migrate(&strait.config, &["run"]);
    assert!(!ok);
    assert!(err.contains("already done"), "{err}");
}

#[test]
fn abort_returns_to_mirroring_and_a_new_run_starts_over() {
    let topic = unique("migrate-abort");
    let group = unique("abort-app");
    create_topic(PRIMARY, &topic, 1, &[]);
    produce_simple(PRIMARY, &topic, 1, 100, "before");
    let config = migration_config(&unique("abort"), &topic, &group, "");
    let mut strait = Strait::spawn_command(&config, &["migrate", "run"]);
    wait_for_stage(&strait, "mirror");
    migrate(&strait.config, &["approve", "mirror"]);
    wait_for_stage(&strait, "move_producers");

    let (ok, out, err) = migrate(&strait.config, &["abort"]);
    assert!(ok, "{err}");
    assert!(out.contains("abort requested"), "{out}");
    let aborted = wait_for_stage(&strait, "aborted");
    assert_eq!(aborted["attempt"], 1);

    // Plain mirroring goes on.
    produce_simple(PRIMARY, &topic, 1, 100, "after");
    wait_until(Duration::from_secs(60), "mirroring after abort", || {
        count_all(SECONDARY, &topic) >= 200
    });
    let (ok, _, err) = migrate(&strait.config, &["approve", "mirror"]);
    assert!(!ok, "approving after an abort must be refused");
    assert!(err.contains("aborted"), "{err}");

    // A second run starts a new attempt from the beginning.
    strait.kill9();
    strait.restart();
    let again = wait_for_stage(&strait, "mirror");
    assert_eq!(again["attempt"], 2, "{again:#}");
    assert_exact_copy(&topic, &topic);
}

#[test]
fn a_new_migration_refuses_target_topics_with_foreign_records() {
    let topic = unique("migrate-foreign");
    create_topic(PRIMARY, &topic, 1, &[]);
    produce_simple(PRIMARY, &topic, 1, 10, "source");
    // Someone else's records already sit in the same-named topic on the new cluster.
    create_topic(SECONDARY, &topic, 1, &[]);
    produce_simple(SECONDARY, &topic, 1, 3, "foreign");
    let config = migration_config(&unique("foreign"), &topic, &unique("app"), "");
    let mut strait = Strait::spawn_command(&config, &["migrate", "run"]);
    let code = strait.wait_exit(Duration::from_secs(60));
    assert_ne!(code, Some(0));
    let logs = strait.logs();
    assert!(
        logs.contains(&format!("target topic {topic} (partition 0)"))
            && logs.contains("already holds 3 records that Strait did not copy"),
        "{logs}"
    );
    // Nothing was copied into it.
    assert_eq!(count_all(SECONDARY, &topic), 3);
}
