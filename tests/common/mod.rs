//! Shared helpers for the integration tests. They need the real test bed:
//! primary on 127.0.0.1:19092 and secondary on 127.0.0.1:29092 (`scripts/kafka.sh start`).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use rand::Rng;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

pub const PRIMARY: &str = "127.0.0.1:19092";
pub const SECONDARY: &str = "127.0.0.1:29092";

/// Key, value, headers and timestamp: what must survive a copy.
pub type Content = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
    Option<i64>,
);

/// A record as an application sees it. `headers` keeps order and null-vs-empty values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
}

impl Rec {
    pub fn of<M: Message>(m: &M) -> Self {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Rec {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: m.timestamp().to_millis(),
        }
    }

    /// The same record without Strait's provenance header, for comparing with the source.
    pub fn without_provenance(&self) -> Content {
        let headers = self
            .headers
            .iter()
            .filter(|(k, _)| k != "strait.source")
            .cloned()
            .collect();
        (
            self.key.clone(),
            self.value.clone(),
            headers,
            self.timestamp,
        )
    }

    pub fn content(&self) -> Content {
        (
            self.key.clone(),
            self.value.clone(),
            self.headers.clone(),
            self.timestamp,
        )
    }

    /// Source offset from the provenance header.
    pub fn provenance_offset(&self) -> Option<i64> {
        let (_, v) = self
            .headers
            .iter()
            .rev()
            .find(|(k, _)| k == "strait.source")?;
        parse_provenance_offset(v.as_deref()?)
    }
}

/// The source offset in a provenance header value (`<cluster>/<topic>/<partition>/<offset>`).
fn parse_provenance_offset(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value)
        .ok()?
        .rsplit('/')
        .next()?
        .parse()
        .ok()
}

/// Commits `offsets` ((partition, offset) pairs of `topic`) for `group`, as an application
/// does, without joining the group.
pub fn commit_offsets(servers: &str, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .unwrap();
    }
    // Right after a broker starts, its group coordinator may still be loading or moving
    // (`NotCoordinator`, seen in CI): those errors pass, anything else fails the test.
    wait_until(
        Duration::from_secs(30),
        "a group coordinator to commit",
        || match consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync) {
            Ok(()) => true,
            Err(e) => match e.rdkafka_error_code() {
                Some(
                    rdkafka::error::RDKafkaErrorCode::NotCoordinator
                    | rdkafka::error::RDKafkaErrorCode::CoordinatorLoadInProgress
                    | rdkafka::error::RDKafkaErrorCode::CoordinatorNotAvailable,
                ) => false,
                _ => panic!("committing offsets of group {group}: {e}"),
            },
        },
    );
}

/// `group`'s committed offset on one partition, if any.
pub fn committed_offset(servers: &str, group: &str, topic: &str, partition: i32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let c = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    match c.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// Resumes `group` on the secondary from its committed offsets on `partitions` of
/// `topic`, reads each to its end, and returns per partition the source offsets of what
/// it read (offsets in `sources`, the source topic as read from the primary earlier). A
/// partition without a committed offset panics: it must never silently start somewhere.
///
/// Copies carry the provenance header only on anchors; a copy without one is the copy of
/// the source offset after the previous copy. Either way, the source record at the offset
/// named is compared with what was read, so a duplicate or a wrong record fails here.
pub fn resume_on_secondary(
    group: &str,
    sources: &BTreeMap<i32, Vec<Rec>>,
    topic: &str,
    partitions: &[i32],
) -> BTreeMap<i32, Vec<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", SECONDARY)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    // Strait writes the target without transactions, so its offsets have no gaps: a
    // partition is done when the offset after the last record read reaches the end.
    let mut next = BTreeMap::new();
    let mut high = BTreeMap::new();
    for &p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Stored).unwrap();
        let committed = committed_offset(SECONDARY, group, topic, p)
            .unwrap_or_else(|| panic!("group {group} has no committed offset on {topic}[{p}]"));
        next.insert(p, committed);
        high.insert(p, watermarks(SECONDARY, topic, p).1);
    }
    consumer.assign(&tpl).unwrap();
    let mut read: BTreeMap<i32, Vec<i64>> = partitions.iter().map(|p| (*p, Vec::new())).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while partitions.iter().any(|p| next[p] < high[p]) {
        assert!(
            Instant::now() < deadline,
            "group {group} did not reach the end of {topic}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                let copy = Rec::of(&m);
                let originals = sources.get(&m.partition()).map_or(&[][..], Vec::as_slice);
                let seen = read.entry(m.partition()).or_default();
                let source_offset = match (copy.provenance_offset(), seen.last()) {
                    (Some(s), _) => s,
                    (None, Some(previous)) => previous + 1,
                    // The first record read, without a header: find it by content.
                    (None, None) => originals
                        .iter()
                        .find(|s| s.content() == copy.without_provenance())
                        .map(|s| s.offset)
                        .unwrap_or_else(|| {
                            panic!(
                                "{topic}[{}]@{}: no source record has this content",
                                m.partition(),
                                m.offset()
                            )
                        }),
                };
                let original = originals
                    .iter()
                    .find(|s| s.offset == source_offset)
                    .unwrap_or_else(|| {
                        panic!("{topic}[{}]@{}: names source offset {source_offset}, which the source does not hold", m.partition(), m.offset())
                    });
                assert_eq!(
                    copy.without_provenance(),
                    original.content(),
                    "{topic}[{}]@{} is not the copy of source offset {source_offset}",
                    m.partition(),
                    m.offset()
                );
                seen.push(source_offset);
            }
            Some(Err(e)) => panic!("group {group} on the secondary: {e}"),
            None => {}
        }
    }
    read
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::rng().random::<u32>())
}

pub fn admin(servers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap()
}

pub fn create_topic(servers: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = block_on(admin(servers).create_topics([&t], &AdminOptions::new())).unwrap();
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("create {t}: {e}"));
    }
    // Wait until metadata shows the topic, so producers do not race its creation.
    wait_until(Duration::from_secs(30), &format!("{topic} visible"), || {
        partition_count(servers, topic) == Some(partitions)
    });
}

/// Deletes the records before `offset` in each listed partition (DeleteRecords), so the
/// log start moves there.
pub fn delete_records_before(servers: &str, topic: &str, before: &[(i32, i64)]) {
    let mut tpl = TopicPartitionList::new();
    for &(partition, offset) in before {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .unwrap();
    }
    block_on(admin(servers).delete_records(&tpl, &AdminOptions::new())).unwrap();
}

/// Deletes `topic` and waits until the cluster no longer knows it, so that creating it
/// again cannot fail on the deletion still under way.
pub fn delete_topic(servers: &str, topic: &str) {
    for result in block_on(admin(servers).delete_topics(&[topic], &AdminOptions::new())).unwrap() {
        result.unwrap_or_else(|(t, e)| panic!("deleting {t}: {e}"));
    }
    wait_until(Duration::from_secs(30), &format!("{topic} deleted"), || {
        partition_count(servers, topic).is_none()
    });
}

pub fn add_partitions(servers: &str, topic: &str, total: usize) {
    let res = block_on(
        admin(servers).create_partitions([&NewPartitions::new(topic, total)], &AdminOptions::new()),
    )
    .unwrap();
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("grow {t}: {e}"));
    }
}

pub fn partition_count(servers: &str, topic: &str) -> Option<i32> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let t = md.topics().first()?;
    if t.error().is_some() {
        return None;
    }
    Some(t.partitions().len() as i32)
}

pub fn producer(servers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// A record to produce.
#[derive(Debug, Clone)]
pub struct Out {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
}

pub fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, out: &Out) {
    let mut headers = OwnedHeaders::new();
    for (k, v) in &out.headers {
        headers = headers.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(out.partition);
    if !out.headers.is_empty() {
        rec = rec.headers(headers);
    }
    if let Some(k) = &out.key {
        rec = rec.key(k);
    }
    if let Some(v) = &out.value {
        rec = rec.payload(v);
    }
    if let Some(ts) = out.timestamp {
        rec = rec.timestamp(ts);
    }
    let mut rec = rec;
    loop {
        match producer.send(rec) {
            Ok(()) => return,
            Err((e, r)) => {
                assert!(
                    matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ),
                    "send: {e}"
                );
                rec = r;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

pub fn flush(producer: &ThreadedProducer<DefaultProducerContext>) {
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// Simple values: `count` records spread round-robin over `partitions`.
pub fn produce_simple(servers: &str, topic: &str, partitions: i32, count: usize, tag: &str) {
    produce_keyed(servers, topic, partitions, count, |i| {
        format!("{tag}-{i}").into_bytes()
    });
}

/// Simple values: `count` records, all in `partition`.
pub fn produce_into(servers: &str, topic: &str, partition: i32, count: usize, tag: &str) {
    let p = producer(servers);
    for i in 0..count {
        let out = Out {
            partition,
            key: None,
            value: Some(format!("{tag}-{i}").into_bytes()),
            headers: vec![],
            timestamp: None,
        };
        send(&p, topic, &out);
    }
    flush(&p);
}

/// `count` records of `size` bytes each (plus a key), spread round-robin over `partitions`.
pub fn produce_sized(servers: &str, topic: &str, partitions: i32, count: usize, size: usize) {
    let value = vec![b'v'; size];
    produce_keyed(servers, topic, partitions, count, |_| value.clone());
}

/// Records keyed `k<i>` with `value(i)`, spread round-robin over `partitions`.
fn produce_keyed(
    servers: &str,
    topic: &str,
    partitions: i32,
    count: usize,
    value: impl Fn(usize) -> Vec<u8>,
) {
    let p = producer(servers);
    for i in 0..count {
        let out = Out {
            partition: (i % partitions as usize) as i32,
            key: Some(format!("k{i}").into_bytes()),
            value: Some(value(i)),
            headers: vec![],
            timestamp: None,
        };
        send(&p, topic, &out);
    }
    flush(&p);
}

/// Low and high watermarks; retries while a new topic's leader is being elected.
pub fn watermarks(servers: &str, topic: &str, partition: i32) -> (i64, i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap();
    let mut attempts = 0;
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok(w) => return w,
            Err(e) if attempts < 40 => {
                attempts += 1;
                eprintln!("watermarks of {topic}[{partition}]: {e}; retrying");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("watermarks of {topic}[{partition}]: {e}"),
        }
    }
}

/// Every committed record of every partition of `topic`, by partition, in order.
pub fn read_all(servers: &str, topic: &str) -> BTreeMap<i32, Vec<Rec>> {
    let partitions =
        partition_count(servers, topic).unwrap_or_else(|| panic!("{topic} missing on {servers}"));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "strait-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut out = BTreeMap::new();
    let mut open = 0;
    for p in 0..partitions {
        // A topic created moments ago answers "not leader" until its leaders settle.
        let settle_by = Instant::now() + Duration::from_secs(30);
        let (low, high) = loop {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(10)) {
                Err(e)
                    if Instant::now() < settle_by
                        && matches!(
                            e.rdkafka_error_code(),
                            Some(
                                RDKafkaErrorCode::NotLeaderForPartition
                                    | RDKafkaErrorCode::LeaderNotAvailable
                            )
                        ) =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => break other.unwrap(),
            }
        };
        out.insert(p, Vec::new());
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
            open += 1;
        }
    }
    if open == 0 {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut eofs = std::collections::HashSet::new();
    while eofs.len() < open {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                out.get_mut(&m.partition()).unwrap().push(Rec::of(&m));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eofs.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

pub fn count_all(servers: &str, topic: &str) -> usize {
    read_all(servers, topic).values().map(Vec::len).sum()
}

/// `strait`'s `/status` as JSON, or `Null` while it does not answer.
pub fn status_json(strait: &Strait) -> serde_json::Value {
    let raw = http_get(strait.port, "/status").unwrap_or_default();
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sum of `topic`'s end offsets, in one request per broker (a topic of hundreds of
/// partitions read one by one takes seconds). Partitions that cannot be read yet (a
/// leader still being elected) count as 0, so a wait for a total waits longer; a topic
/// that does not exist yet has 0.
pub fn end_offsets(servers: &str, topic: &str) -> i64 {
    let n = partition_count(servers, topic).unwrap_or(0);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(topic, p, Offset::End).unwrap();
    }
    consumer
        .offsets_for_times(tpl, Duration::from_secs(10))
        .map_or(0, |found| {
            found
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) if e.error().is_ok() => Some(o),
                    _ => None,
                })
                .sum()
        })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `strait run` child process with its own config file and HTTP port.
pub struct Strait {
    pub child: Child,
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The subcommand: `run`, or e.g. `migrate run`.
    command: Vec<String>,
    /// Extra environment, e.g. `STRAIT__…` overrides; kept across restarts.
    pub env: Vec<(String, String)>,
    /// The user id the process runs as, if not the test's own (see [`Strait::start_as`]);
    /// kept across restarts.
    uid: Option<u32>,
    _dir: tempfile::TempDir,
}

/// A one-flow config between the test clusters. `extra` goes into the flow section.
pub fn flow_config(flow: &str, topics: &str, naming: &str, extra: &str) -> String {
    // A fresh group per test run: a killed run's member would otherwise hold partitions
    // until its session times out.
    let group = unique(&format!("strait-test-{flow}"));
    format!(
        r#"
[clusters.primary]
bootstrap_servers = "{PRIMARY}"

[clusters.secondary]
bootstrap_servers = "{SECONDARY}"

[flows.{flow}]
source = "primary"
target = "secondary"
topics = ["{topics}"]
naming = "{naming}"
refresh_interval = "2s"
group_id = "{group}"
{extra}

[tuning]
commit_interval = "500ms"
"#
    )
}

impl Strait {
    pub fn start(config: &str) -> Self {
        Self::spawn_command(config, &["run"])
    }

    /// [`Strait::start`] with extra environment variables.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(config, &["run"], env)
    }

    /// Like [`Strait::start`], for another long-running subcommand (`migrate run`).
    pub fn spawn_command(config: &str, command: &[&str]) -> Self {
        Self::spawn(config, command, &[])
    }

    /// `strait run` as user `uid` (`setpriv`, which execs, so the child's pid is
    /// Strait's own): a firewall rule matching that owner then cuts this process alone off
    /// from a cluster. Needs root.
    pub fn start_as(config: &str, uid: u32) -> Self {
        Self::spawn_with(config, &["run"], &[], Some(uid))
    }

    /// `strait <command>` on `config` with extra environment variables.
    pub fn spawn(config: &str, command: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_with(config, command, env, None)
    }

    fn spawn_with(config: &str, command: &[&str], env: &[(&str, &str)], uid: Option<u32>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if uid.is_some() {
            // Another user must read the config in it.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = dir.path().join("strait.toml");
        let port = free_port();
        let full = format!("[http]\nlisten = \"127.0.0.1:{port}\"\n{config}");
        std::fs::write(&path, full).unwrap();
        let command: Vec<String> = command.iter().map(|c| c.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, log) = spawn_child(&path, dir.path(), &command, &env, uid);
        Self {
            child,
            port,
            config: path,
            log,
            command,
            env,
            uid,
            _dir: dir,
        }
    }

    /// Stops the process (SIGKILL if still running) and starts a new one on the same
    /// config file with a new HTTP port.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = free_port();
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text.replace(
            &format!("127.0.0.1:{}", self.port),
            &format!("127.0.0.1:{port}"),
        );
        std::fs::write(&self.config, text).unwrap();
        let (child, log) = spawn_child(
            &self.config,
            self._dir.path(),
            &self.command,
            &self.env,
            self.uid,
        );
        self.child = child;
        self.log = log;
        self.port = port;
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "strait did not exit after SIGTERM:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the process to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "strait still running:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        http_get(self.port, "/metrics").unwrap_or_default()
    }
}

fn spawn_child(
    config: &std::path::Path,
    dir: &std::path::Path,
    command: &[String],
    env: &[(String, String)],
    uid: Option<u32>,
) -> (Child, PathBuf) {
    let log = dir.join(format!("strait-{}.log", rand::rng().random::<u32>()));
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = match uid {
        Some(uid) => {
            let mut setpriv = Command::new("setpriv");
            let uid = uid.to_string();
            setpriv
                .args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "--"])
                .arg(env!("CARGO_BIN_EXE_strait"));
            setpriv
        }
        None => Command::new(env!("CARGO_BIN_EXE_strait")),
    };
    let child = cmd
        .args(command)
        .arg("--config")
        .arg(config)
        // STRAIT_TEST_LOG (a RUST_LOG filter) for more detail when chasing a failure.
        .env(
            "RUST_LOG",
            std::env::var("STRAIT_TEST_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into()),
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    (child, log)
}

impl Drop for Strait {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(60).collect();
            // The whole log outlives the temporary directory, for a closer look.
            let kept = std::env::temp_dir()
                .join(format!("strait-failed-{}.log", rand::rng().random::<u32>()));
            let _ = std::fs::copy(&self.log, &kept);
            eprintln!(
                "--- strait log (last 60 lines; all of it in {}) ---",
                kept.display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // STRAIT_TEST_KEEP_LOGS=<dir> keeps every run's log, passed or not: a restart or a
        // stall that a test's generous wait absorbs shows up there first.
        if let Some(dir) = std::env::var_os("STRAIT_TEST_KEEP_LOGS") {
            let name = format!(
                "{}-{}.log",
                std::thread::current()
                    .name()
                    .unwrap_or("strait")
                    .replace("::", "-"),
                rand::rng().random::<u32>()
            );
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(&self.log, std::path::Path::new(&dir).join(name));
        }
    }
}

/// A topic's dynamic (explicitly set) configs.
pub fn topic_configs(servers: &str, topic: &str) -> BTreeMap<String, String> {
    use rdkafka::admin::{ConfigSource, ResourceSpecifier};
    let results = block_on(
        admin(servers).describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new()),
    )
    .unwrap();
    results
        .into_iter()
        .flatten()
        .flat_map(|r| r.entries)
        .filter(|e| matches!(e.source, ConfigSource::DynamicTopic))
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

/// Replaces a topic's dynamic configs with `configs` (Kafka's AlterConfigs).
pub fn set_topic_configs(servers: &str, topic: &str, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (k, v) in configs {
        alter = alter.set(k, v);
    }
    let results = block_on(admin(servers).alter_configs([&alter], &AdminOptions::new())).unwrap();
    for r in results {
        r.unwrap();
    }
}

/// Runs `scripts/kafka.sh` (e.g. `stop secondary`), failing the test if it fails.
pub fn kafka_sh(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    let status = Command::new(script).args(args).status().unwrap();
    assert!(status.success(), "scripts/kafka.sh {args:?} failed");
}

/// Starts a test cluster (`primary` or `secondary`) again when dropped, whatever happens
/// in a test that stopped it.
pub struct ClusterBack(pub &'static str);

impl Drop for ClusterBack {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
        let _ = Command::new(script).args(["start", self.0]).status();
    }
}

/// A broker-enforced produce quota for one client id, removed again when dropped. Set
/// with Kafka's own `kafka-configs` tool (rdkafka has no client-quota admin API).
pub struct ProducerQuota {
    servers: &'static str,
    client_id: &'static str,
}

impl ProducerQuota {
    pub fn set(servers: &'static str, client_id: &'static str, bytes_per_second: u64) -> Self {
        let config = format!("producer_byte_rate={bytes_per_second}");
        assert!(
            kafka_configs(servers, client_id, &["--add-config", &config]),
            "setting {config} for client {client_id} on {servers} failed"
        );
        Self { servers, client_id }
    }
}

impl Drop for ProducerQuota {
    fn drop(&mut self) {
        let _ = kafka_configs(
            self.servers,
            self.client_id,
            &["--delete-config", "producer_byte_rate"],
        );
    }
}

/// What `scripts/kafka.sh <what>` prints (`classpath`, `tls-ca`), trimmed.
pub fn kafka_sh_output(what: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    let out = Command::new(script).arg(what).output().unwrap();
    assert!(out.status.success(), "scripts/kafka.sh {what} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Adds or removes (`change` = `--add` or `--remove`) ACLs with Kafka's own `kafka-acls`
/// tool over a cluster's PLAINTEXT listener, whose clients are super users on the test
/// bed. `args` are the tool's: principal, operations and resource.
pub fn kafka_acls(servers: &str, change: &str, args: &[&str]) {
    let out = Command::new("java")
        .args(["-cp", &kafka_sh_output("classpath")])
        .arg("org.apache.kafka.tools.AclCommand")
        .args(["--bootstrap-server", servers, change, "--force"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka-acls {change} {args:?} on {servers} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn kafka_configs(servers: &str, client_id: &str, change: &[&str]) -> bool {
    Command::new("java")
        .args([
            "-cp",
            &kafka_sh_output("classpath"),
            "kafka.admin.ConfigCommand",
        ])
        .args(["--bootstrap-server", servers, "--alter"])
        .args(["--entity-type", "clients", "--entity-name", client_id])
        .args(change)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Minimal HTTP/1.0 GET, enough for /metrics and /healthz.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The value of a metric line that starts with `prefix` (name plus labels).
pub fn metric_value(metrics: &str, name: &str, label_fragment: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label_fragment))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

/// Asserts the target has each source record exactly once, same partition, same order and
/// content; every provenance header (anchors only) names the right source offset.
pub fn assert_exact_copy(source_topic: &str, target_topic: &str) {
    assert_copy(source_topic, target_topic, true, true);
}

/// [`assert_exact_copy`] for a flow with `provenance_header = false`: the same records,
/// none of them with a header.
pub fn assert_exact_copy_without_headers(source_topic: &str, target_topic: &str) {
    assert_copy(source_topic, target_topic, false, true);
}

/// [`assert_exact_copy`] for a target topic with `message.timestamp.type=LogAppendTime`,
/// whose broker replaces every copy's timestamp with its own clock.
pub fn assert_exact_copy_but_timestamps(source_topic: &str, target_topic: &str) {
    assert_copy(source_topic, target_topic, true, false);
}

fn assert_copy(source_topic: &str, target_topic: &str, headers: bool, timestamps: bool) {
    let source = read_all(PRIMARY, source_topic);
    let target = read_all(SECONDARY, target_topic);
    for (partition, src) in &source {
        let tgt = target.get(partition).cloned().unwrap_or_default();
        assert_eq!(
            tgt.len(),
            src.len(),
            "{source_topic}[{partition}]: {} source records, {} on target (target watermarks {:?})",
            src.len(),
            tgt.len(),
            watermarks(SECONDARY, target_topic, *partition)
        );
        // Anchors carry the header: the first copy of each partition at least.
        if let Some(first) = tgt.first() {
            assert_eq!(
                first.provenance_offset().is_some(),
                headers,
                "{target_topic}[{partition}]: whether the first copy carries a provenance header"
            );
        }
        for (i, (s, t)) in src.iter().zip(&tgt).enumerate() {
            if let Some(named) = t.provenance_offset() {
                assert_eq!(
                    named, s.offset,
                    "{target_topic}[{partition}] record {i}: provenance"
                );
            }
            let (mut copy, mut original) = (t.without_provenance(), s.content());
            if !timestamps {
                (copy.3, original.3) = (None, None);
            }
            assert_eq!(
                copy, original,
                "{target_topic}[{partition}] record {i} (source offset {})",
                s.offset
            );
        }
    }
}
