//! Real MirrorMaker 2, dedicated mode, from the `connect-mirror` jars of the test bed's
//! Kafka version (`scripts/kafka.sh classpath`), set up as close to Strait as its settings
//! allow. Every setting that differs from MM2's defaults is in [`SETTINGS`], which the
//! report prints.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::{delete_topics_matching, Result, PRIMARY, SECONDARY};

/// Non-default MirrorMaker 2 settings, `{src}`/`{dst}` standing for the cluster aliases.
/// Why each is there:
/// - identity naming and one task: the terms (Strait copies a flow with one
///   consumer and one producer);
/// - producer linger/batch/compression/acks: Strait's defaults (`[tuning]`);
/// - read_committed: Strait never copies aborted records;
/// - checkpoint, group-sync and refresh intervals: as short as Strait's bench settings
///   (checkpoint_interval 1 s), so the failover scenario waits on neither's timers;
/// - replication factors: single-broker test clusters.
pub const SETTINGS: &[(&str, &str)] = &[
    (
        "replication.policy.class",
        "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
    ),
    ("tasks.max", "1"),
    ("{dst}.producer.linger.ms", "10"),
    ("{dst}.producer.batch.size", "1000000"),
    ("{dst}.producer.compression.type", "none"),
    ("{dst}.producer.acks", "all"),
    ("{src}.consumer.isolation.level", "read_committed"),
    ("{src}->{dst}.emit.checkpoints.interval.seconds", "1"),
    ("{src}->{dst}.sync.group.offsets.enabled", "true"),
    ("{src}->{dst}.sync.group.offsets.interval.seconds", "1"),
    ("refresh.groups.interval.seconds", "5"),
    ("refresh.topics.interval.seconds", "5"),
    ("{dst}.offset.flush.interval.ms", "5000"),
    ("replication.factor", "1"),
    ("checkpoints.topic.replication.factor", "1"),
    ("heartbeats.topic.replication.factor", "1"),
    ("offset-syncs.topic.replication.factor", "1"),
    ("offset.storage.replication.factor", "1"),
    ("status.storage.replication.factor", "1"),
    ("config.storage.replication.factor", "1"),
];

/// The JVM's heap flags: those of Kafka's `bin/connect-mirror-maker.sh`.
pub const HEAP: [&str; 2] = ["-Xms256M", "-Xmx2G"];

/// Cluster aliases for one run. Fresh per run, because MM2 keeps its progress in internal
/// topics named after them: reused aliases would resume the previous run's copy.
pub fn aliases(run_alias: &str) -> (String, String) {
    (format!("{run_alias}src"), format!("{run_alias}dst"))
}

/// Starts MirrorMaker 2 copying `topic` from the primary to the secondary.
pub fn spawn(dir: &Path, run_alias: &str, topic: &str) -> Result<Child> {
    let classpath = crate::options().kafka_classpath.clone().ok_or(
        "--kafka-classpath is not given (scripts/bench.sh passes it \
         from `scripts/kafka.sh classpath`)",
    )?;
    let (src, dst) = aliases(run_alias);
    let mut props = format!(
        "clusters = {src}, {dst}\n\
         {src}.bootstrap.servers = {PRIMARY}\n\
         {dst}.bootstrap.servers = {SECONDARY}\n\
         {src}->{dst}.enabled = true\n\
         {src}->{dst}.topics = {topic}\n\
         {dst}->{src}.enabled = false\n"
    );
    for (key, value) in SETTINGS {
        props.push_str(&format!(
            "{} = {value}\n",
            key.replace("{src}", &src).replace("{dst}", &dst)
        ));
    }
    let properties = dir.join("mm2.properties");
    std::fs::write(&properties, props)?;
    let log4j = dir.join("log4j2.properties");
    std::fs::write(
        &log4j,
        format!(
            "rootLogger.level=INFO\nrootLogger.appenderRef.file.ref=file\n\
             appender.file.type=File\nappender.file.name=file\n\
             appender.file.fileName={}\nappender.file.layout.type=PatternLayout\n\
             appender.file.layout.pattern=[%d] %p %m (%c)%n\n",
            dir.join("mm2.log").display()
        ),
    )?;
    Ok(Command::new("java")
        .args(HEAP)
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .args([
            "-cp",
            &classpath,
            "org.apache.kafka.connect.mirror.MirrorMaker",
        ])
        .arg(&properties)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// Deletes one run's internal topics on both clusters (offsets, configs, status,
/// checkpoints, offset syncs, heartbeats), so no run inherits another's state.
pub fn clean_up(run_alias: &str) -> Result<()> {
    let (src, dst) = aliases(run_alias);
    for servers in [PRIMARY, SECONDARY] {
        delete_topics_matching(servers, |t| {
            t == "heartbeats" || t.contains(&src) || t.contains(&dst)
        })?;
    }
    Ok(())
}
