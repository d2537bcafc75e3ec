//! Strait between secured clusters: both sides SASL_SSL (mechanism PLAIN, the test bed's
//! own certificate), with Kafka's authorizer enforcing ACLs and nothing allowed by
//! default. The flow's user gets exactly the ACLs docs/operations.md lists (Operations,
//! Permissions), so an operation Strait needs and the list leaves out fails this test.
//! The source topic is stored zstd-compressed, and the target's password comes from the
//! environment. A second test runs a whole staged migration (`strait migrate run`) the
//! same way, with the one extra row of ACLs a migration needs.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;

const PRIMARY_SECURED: &str = "127.0.0.1:19094";
const SECONDARY_SECURED: &str = "127.0.0.1:29094";
const USER: &str = "User:strait";

/// The target's password comes from the environment, as docs/configuration.md advises for secrets.
const PASSWORD_FROM_ENV: (&str, &str) = (
    "STRAIT__CLUSTERS__SECONDARY__PROPERTIES__SASL_PASSWORD",
    "strait-secret",
);

/// The properties that log a client of the test bed in on a secured listener.
fn secured(cluster: &str, ca: &str, password: Option<&str>) -> String {
    let password = password.map_or(String::new(), |p| format!("\"sasl.password\" = \"{p}\"\n"));
    format!(
        r#"
[clusters.{cluster}.properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "PLAIN"
"sasl.username" = "strait"
"ssl.ca.location" = "{ca}"
{password}"#
    )
}

/// The test bed's `config` moved to the secured listeners: the source's password in the
/// file, the target's left to the environment ([`PASSWORD_FROM_ENV`]).
fn on_secured_listeners(config: &str, ca: &str) -> String {
    let config = config
        .replace(
            &format!("\"{PRIMARY}\"\n"),
            &format!(
                "\"{PRIMARY_SECURED}\"\n{}",
                secured("primary", ca, Some("strait-secret"))
            ),
        )
        .replace(
            &format!("\"{SECONDARY}\"\n"),
            &format!(
                "\"{SECONDARY_SECURED}\"\n{}",
                secured("secondary", ca, None)
            ),
        );
    assert!(
        !config.contains(PRIMARY) && !config.contains(SECONDARY),
        "{config}"
    );
    config
}

fn allow(servers: &str, operations: &[&str], resource: &[&str]) {
    let mut args = vec!["--allow-principal", USER];
    for op in operations {
        args.extend(["--operation", op]);
    }
    args.extend(resource);
    kafka_acls(servers, "--add", &args);
}

/// The ACLs of docs/operations.md for a flow named `flow` from `primary` to `secondary` that copies
/// topics starting with `topics` into topics starting with `copies` (`primary.` + `topics`
/// for `prefix` naming, `topics` for `identity`) and translates groups starting with
/// `groups`.
fn grant_documented_acls(flow: &str, topics: &str, copies: &str, groups: &str) {
    let heartbeats = format!("strait.heartbeats.{flow}");
    let map = format!("__strait.offsets.{flow}");
    let checkpoints = format!("__strait.checkpoints.{flow}");
    // Source.
    allow(
        PRIMARY,
        &["Read", "Describe", "DescribeConfigs"],
        &["--topic", topics, "--resource-pattern-type", "prefixed"],
    );
    allow(
        PRIMARY,
        &["Create", "Write", "Read", "Describe", "DescribeConfigs"],
        &["--topic", &heartbeats],
    );
    allow(
        PRIMARY,
        &["Read", "Describe"],
        &["--group", "strait-", "--resource-pattern-type", "prefixed"],
    );
    allow(
        PRIMARY,
        &["Describe"],
        &["--group", groups, "--resource-pattern-type", "prefixed"],
    );
    // Target.
    allow(
        SECONDARY,
        &[
            "Create",
            "Write",
            "Read",
            "Describe",
            "DescribeConfigs",
            "AlterConfigs",
            "Alter",
        ],
        &["--topic", copies, "--resource-pattern-type", "prefixed"],
    );
    allow(
        SECONDARY,
        &["Create", "Write", "Read", "Describe", "DescribeConfigs"],
        &["--topic", &map, "--topic", &checkpoints],
    );
    allow(
        SECONDARY,
        &["Describe"],
        &["--group", "strait-", "--resource-pattern-type", "prefixed"],
    );
    allow(
        SECONDARY,
        &["Read", "Describe"],
        &["--group", groups, "--resource-pattern-type", "prefixed"],
    );
}

/// Runs a one-shot `strait` subcommand on the running instance's config; returns the exit
/// code, stdout and stderr.
fn strait_command(strait: &Strait, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(args)
        .arg("--config")
        .arg(&strait.config)
        .env("RUST_LOG", "warn")
        .envs(strait.env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("running strait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn secured_clusters_with_the_documented_acls_replicate_and_a_denied_write_stops_the_flow() {
    let ca = kafka_sh_output("tls-ca");
    let flow = unique("sec").replace('-', "_");
    let prefix = format!("{flow}-");
    let app = format!("{flow}-app");
    let topic = format!("{prefix}a");
    let copy = format!("primary.{topic}");
    grant_documented_acls(&flow, &prefix, "primary.", &app);

    // Stored zstd-compressed by the broker, whatever the producer sends.
    create_topic(PRIMARY, &topic, 3, &[("compression.type", "zstd")]);
    produce_simple(PRIMARY, &topic, 3, 3_000, "before");
    commit_offsets(PRIMARY, &app, &topic, &[(0, 400), (1, 700), (2, 1_000)]);

    let offset_sync = format!(
        r#"
[flows.{flow}.offset_sync]
groups = ["{app}"]
sync_group_offsets = true
checkpoint_interval = "1s"
"#
    );
    let config = on_secured_listeners(
        &flow_config(&flow, &format!("{prefix}.*"), "prefix", &offset_sync),
        &ca,
    );
    let mut strait = Strait::start_with_env(&config, &[PASSWORD_FROM_ENV]);
    wait_until(Duration::from_secs(90), "the first records copied", || {
        partition_count(SECONDARY, &copy) == Some(3) && count_all(SECONDARY, &copy) == 3_000
    });
    assert_exact_copy(&topic, &copy);
    assert_eq!(
        topic_configs(SECONDARY, &copy).get("compression.type"),
        Some(&"zstd".to_string()),
        "the topic's compression is copied"
    );

    // Growing the topic and changing its settings need the target's Alter and
    // AlterConfigs; the group's translated offsets need Read on the target's group.
    add_partitions(PRIMARY, &topic, 4);
    set_topic_configs(PRIMARY, &topic, &[("retention.ms", "86400000")]);
    produce_simple(PRIMARY, &topic, 4, 400, "grown");
    wait_until(Duration::from_secs(60), "the grown topic copied", || {
        partition_count(SECONDARY, &copy) == Some(4) && count_all(SECONDARY, &copy) == 3_400
    });
    assert_exact_copy(&topic, &copy);
    wait_until(Duration::from_secs(60), "the new setting copied", || {
        topic_configs(SECONDARY, &copy).get("retention.ms") == Some(&"86400000".to_string())
    });
    for (partition, committed) in [(0, 400), (1, 700), (2, 1_000)] {
        wait_until(
            Duration::from_secs(60),
            "the group's offsets written on the target",
            || committed_offset(SECONDARY, &app, &copy, partition) == Some(committed),
        );
    }
    let logs = strait.logs();
    for sign in ["uthoriz", "uthenticat", "flow interrupted", "not readable"] {
        assert!(!logs.contains(sign), "'{sign}' in the log:\n{logs}");
    }

    // The operator's commands need nothing more: checking the copy, and a failover's
    // translation of the group into the target.
    let (code, out, err) =
        strait_command(&strait, &["verify", "--flow", &flow, "--output", "json"]);
    assert_eq!(code, 0, "verify failed:\n{out}\n{err}");
    let (code, out, err) = strait_command(
        &strait,
        &[
            "offsets",
            "translate",
            "--flow",
            &flow,
            "--group",
            &app,
            "--apply",
        ],
    );
    assert_eq!(code, 0, "translate --apply failed:\n{out}\n{err}");
    for partition in 0..3 {
        let row = format!("{topic}[{partition}]");
        assert!(
            out.lines().any(
                |l| l.starts_with(&row) && (l.ends_with("unchanged") || l.ends_with("applied"))
            ),
            "{row} written or already there:\n{out}"
        );
    }

    // A topic whose copy Strait may create but not write: the flow stops and says why,
    // and nothing of that topic is acknowledged, so nothing is skipped.
    let denied = format!("{prefix}b");
    let denied_copy = format!("primary.{denied}");
    let deny = [
        "--deny-principal",
        USER,
        "--operation",
        "Write",
        "--topic",
        denied_copy.as_str(),
    ];
    kafka_acls(SECONDARY, "--add", &deny);
    create_topic(PRIMARY, &denied, 2, &[]);
    produce_simple(PRIMARY, &denied, 2, 200, "denied");
    let code = strait.wait_exit(Duration::from_secs(90));
    let logs = strait.logs();
    assert_eq!(code, Some(1), "{logs}");
    let error = logs
        .lines()
        .rfind(|l| l.starts_with("error: flow"))
        .unwrap_or_else(|| panic!("no final error line:\n{logs}"));
    assert!(
        error.contains("Topic authorization failed") && error.contains(&denied_copy),
        "the error names the refusal and the topic: {error}"
    );
    assert_eq!(count_all(SECONDARY, &denied_copy), 0);

    // Once allowed, a restart copies it from the start.
    kafka_acls(SECONDARY, "--remove", &deny);
    strait.restart();
    wait_until(Duration::from_secs(90), "the allowed topic copied", || {
        count_all(SECONDARY, &denied_copy) == 200
    });
    assert_exact_copy(&denied, &denied_copy);
    assert_exact_copy(&topic, &copy);
    assert_eq!(strait.terminate(), Some(0), "{}", strait.logs());

    // A wrong password: `check-config` and the flow's own error say that logging in
    // failed, where the request that needed the connection saw only a transport failure.
    let (ok, error, stderr) = check_config(&strait.config, "wrong-secret");
    assert!(
        !ok && error.contains("logging in to 'secondary' failed")
            && error.contains("Invalid username or password"),
        "check-config says why it cannot connect: {stderr}"
    );
    // A certificate the client does not trust: the same, with TLS's reason.
    let untrusted = tempfile::tempdir().unwrap();
    let other_ca = untrusted.path().join("other-ca.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-nodes", "-newkey", "rsa:2048", "-days", "1",
        ])
        .args(["-subj", "/CN=not the test bed"])
        .arg("-keyout")
        .arg(untrusted.path().join("other.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let distrusting = untrusted.path().join("strait.toml");
    let text = std::fs::read_to_string(&strait.config).unwrap();
    std::fs::write(&distrusting, text.replace(&ca, other_ca.to_str().unwrap())).unwrap();
    let (ok, error, stderr) = check_config(&distrusting, PASSWORD_FROM_ENV.1);
    assert!(
        !ok && error.contains("logging in to 'primary' failed")
            && error.contains("certificate verify failed"),
        "check-config says why it cannot connect: {stderr}"
    );
    let mut refused = Strait::start_with_env(&config, &[(PASSWORD_FROM_ENV.0, "wrong-secret")]);
    let began = Instant::now();
    wait_until(Duration::from_secs(120), "the flow's error", || {
        refused.logs().lines().any(|l| {
            l.contains("strait_replicator::flow")
                && l.contains("logging in to 'secondary' failed")
                && l.contains("Invalid username or password")
        })
    });
    eprintln!("the flow said why after {:?}", began.elapsed());
    // Offset sync's clients fail the same way, each request with only its effect; its
    // error in /status says why too.
    let offset_sync_error = || {
        status_json(&refused)["flows"][0]["offset_sync"]["last_error"]
            .as_str()
            .map(str::to_string)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let error = offset_sync_error();
        if error
            .as_ref()
            .is_some_and(|e| e.contains("Invalid username or password"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "offset sync's error in /status does not say why: {error:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("offset sync said why after {:?}", began.elapsed());
    // Stopped while it retries (the error above said why), it is not a failed flow: it
    // says it stopped and exits 0.
    let stopping = Instant::now();
    assert_eq!(refused.terminate(), Some(0), "{}", refused.logs());
    eprintln!("stopped {:?} after SIGTERM", stopping.elapsed());
    assert!(
        refused
            .logs()
            .lines()
            .any(|l| l.contains("strait_replicator::flow: flow stopped while")),
        "{}",
        refused.logs()
    );
}

/// `strait check-config` on `config` with the target's password from the environment:
/// whether it passed, its final error line, and all it wrote to stderr.
/// A committed offset the broker will not show (the client may not describe the topic,
/// or the group) is an error naming it, never read as "no commit": a migration would
/// then start the group from its reset policy.
#[test]
fn a_committed_offset_that_cannot_be_read_is_an_error() {
    use strait_offset_sync::groups::GroupClient;
    let ca = kafka_sh_output("tls-ca");
    let topic = unique("hidden");
    let group = unique("hidden-app");
    create_topic(PRIMARY, &topic, 1, &[]);
    produce_simple(PRIMARY, &topic, 1, 10, "hidden");
    commit_offsets(PRIMARY, &group, &topic, &[(0, 5)]);
    let client = GroupClient::new(
        ClientConfig::new()
            .set("bootstrap.servers", PRIMARY_SECURED)
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", "PLAIN")
            .set("sasl.username", "strait")
            .set("sasl.password", "strait-secret")
            .set("ssl.ca.location", &ca),
    )
    .unwrap();
    let partitions = [(topic.clone(), 0)];
    let read = || client.committed(&group, &partitions, &|t| t == topic);

    // The group may be described, the topic not: the broker answers per partition.
    allow(PRIMARY, &["Describe"], &["--group", &group]);
    let error = read()
        .expect_err("an unreadable partition is an error")
        .to_string();
    assert!(
        error.contains(&group) && error.contains(&format!("{topic}[0]")),
        "the error names the group and the partition: {error}"
    );

    // The topic may be described, the group not: the whole answer is refused.
    allow(PRIMARY, &["Describe"], &["--topic", &topic]);
    let deny = [
        "--deny-principal",
        USER,
        "--operation",
        "Describe",
        "--group",
        &group,
    ];
    kafka_acls(PRIMARY, "--add", &deny);
    let error = read()
        .expect_err("an unreadable group is an error")
        .to_string();
    assert!(error.contains(&group), "the error names the group: {error}");

    kafka_acls(PRIMARY, "--remove", &deny);
    assert_eq!(
        read().unwrap(),
        std::collections::BTreeMap::from([((topic.clone(), 0), 5)]),
        "readable once allowed"
    );
}

fn check_config(config: &std::path::Path, target_password: &str) -> (bool, String, String) {
    strait_with_target_password(&["check-config"], config, target_password)
}

/// `strait <args> <config>`, the target's password from the environment:
/// whether it passed, its final error line, and all it wrote to stderr.
fn strait_with_target_password(
    args: &[&str],
    config: &std::path::Path,
    target_password: &str,
) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(args)
        .arg(config)
        .env(PASSWORD_FROM_ENV.0, target_password)
        .output()
        .expect("running strait");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let error = stderr
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or("")
        .to_string();
    (out.status.success(), error, stderr)
}

/// The stage `strait migrate status` reports, if it answers.
fn migration_stage(strait: &Strait) -> Option<String> {
    let (code, out, _) = strait_command(strait, &["migrate", "status", "--output", "json"]);
    let status: serde_json::Value = serde_json::from_str(&out).ok().filter(|_| code == 0)?;
    status["stage"].as_str().map(str::to_string)
}

#[test]
fn a_staged_migration_between_secured_clusters_needs_only_the_documented_acls() {
    let ca = kafka_sh_output("tls-ca");
    let flow = unique("secmig").replace('-', "_");
    let prefix = format!("{flow}-");
    let topic = format!("{prefix}orders");
    let app = format!("{flow}-app");
    let state_topic = format!("__strait.migration.{flow}");
    // Identity naming: the target's topic ACLs are on the topics' own names.
    grant_documented_acls(&flow, &prefix, &prefix, &app);

    create_topic(PRIMARY, &topic, 3, &[]);
    produce_simple(PRIMARY, &topic, 3, 3_000, "before");
    let committed = [(0, 400), (1, 700), (2, 1_000)];
    commit_offsets(PRIMARY, &app, &topic, &committed);

    let config = on_secured_listeners(
        &format!(
            r#"{}
[migration]
flow = "{flow}"
groups = ["{app}"]

[migration.gates.move_producers]
approval = "auto"
producers_idle_for = "2s"
"#,
            flow_config(
                &flow,
                &format!("{prefix}.*"),
                "identity",
                &format!("[flows.{flow}.offset_sync]\ncheckpoint_interval = \"1s\""),
            )
        ),
        &ca,
    );
    let mut strait = Strait::spawn(&config, &["migrate", "run"], &[PASSWORD_FROM_ENV]);
    // Without the migration's own row of ACLs it stops at once and says why (librdkafka
    // shows a topic it may not describe as having no partitions; read as a missing
    // topic, it would have been taken for "no migration yet" after 30 s of retries).
    let code = strait.wait_exit(Duration::from_secs(20));
    let logs = strait.logs();
    assert_eq!(code, Some(1), "{logs}");
    let error = logs
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no final error line:\n{logs}"));
    assert!(
        error.contains(&state_topic) && error.contains("Topic authorization failed"),
        "the error names the topic and the refusal: {error}"
    );
    allow(
        SECONDARY,
        &["Create", "Write", "Read", "Describe", "DescribeConfigs"],
        &["--topic", &state_topic],
    );
    strait.restart();
    wait_until(Duration::from_secs(90), "stage mirror", || {
        migration_stage(&strait).as_deref() == Some("mirror")
    });
    // The operator's approval is a record in the state topic, written with the same ACLs.
    let (code, out, err) = strait_command(&strait, &["migrate", "approve", "mirror"]);
    assert_eq!(code, 0, "approve failed:\n{out}\n{err}");

    // The producers are idle and the group is stopped on the source, so the migration
    // goes on by itself until the group's consumers start on the target.
    wait_until(Duration::from_secs(120), "stage start_consumers", || {
        migration_stage(&strait).as_deref() == Some("start_consumers")
    });
    let consumer = TargetConsumer::start(&app, &topic);
    let code = strait.wait_exit(Duration::from_secs(60));
    let logs = strait.logs();
    assert_eq!(code, Some(0), "migrate run did not finish:\n{logs}");
    for sign in ["uthoriz", "uthenticat", "not readable"] {
        assert!(!logs.contains(sign), "'{sign}' in the log:\n{logs}");
    }
    assert_exact_copy(&topic, &topic);

    // The consumers start on the target exactly where they stopped on the source.
    let expected: Vec<(i32, i64)> = committed
        .iter()
        .flat_map(|&(partition, from)| (from..1_000).map(move |offset| (partition, offset)))
        .collect();
    wait_until(
        Duration::from_secs(60),
        "the consumer read the rest",
        || consumer.read().len() >= expected.len(),
    );
    std::thread::sleep(Duration::from_secs(1));
    let mut read = consumer.stop();
    read.sort_unstable();
    assert_eq!(read, expected, "read on the target after the migration");

    // An operator's command with a wrong password says why it cannot read the state,
    // where the read itself saw only that no broker answered. `approve` also writes the
    // state, and the admin client that makes sure its topic exists gets no reason at all.
    for command in [
        &["migrate", "status"][..],
        &["migrate", "approve", "mirror"],
    ] {
        let args: Vec<&str> = command.iter().copied().chain(["--config"]).collect();
        let (ok, error, stderr) =
            strait_with_target_password(&args, &strait.config, "wrong-secret");
        assert!(
            !ok && error.contains("logging in failed: sasl_ssl://127.0.0.1:29094/")
                && error.contains("Invalid username or password"),
            "{command:?} says why it cannot connect: {stderr}"
        );
    }
}

/// A consumer of the migrated group on the target (a super user of the test bed's
/// PLAINTEXT listener: the application, not Strait), recording (partition, offset) read.
struct TargetConsumer {
    read: Arc<Mutex<Vec<(i32, i64)>>>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl TargetConsumer {
    fn start(group: &str, topic: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", SECONDARY)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let read = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (read.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(240);
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                    let m = m.unwrap();
                    r.lock().unwrap().push((m.partition(), m.offset()));
                }
            }
        });
        Self { read, stop, handle }
    }

    fn read(&self) -> Vec<(i32, i64)> {
        self.read.lock().unwrap().clone()
    }

    fn stop(self) -> Vec<(i32, i64)> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap();
        Arc::try_unwrap(self.read).unwrap().into_inner().unwrap()
    }
}
