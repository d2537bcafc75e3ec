//! The offset map on the target cluster: one compacted topic per flow, written by the
//! replicator ([`MapWriter`]) and read back by translators ([`FlowIndex`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, ClientContext};
use tracing::{debug, error, info, warn, Level};

use crate::map::{Coverage, MapUpdate, OffsetIndex};
use crate::records::MapRecord;
use crate::settling::{is_connection_trouble, is_leader_settling, settled_watermarks};
use crate::OffsetSyncError;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A read that makes no progress for this long has lost its broker.
const READ_STALL: Duration = Duration::from_secs(30);
/// How often a reader waiting for its partition's watermarks looks for a refused login.
const LOGIN_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// At most this many queued events are served at once (each is taken without waiting).
const MAX_EVENTS_SERVED: usize = 1_000;
/// How long a reader's seek (which starts its fetch after a resume) may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// The configs of Strait's compacted topics (the offset map, checkpoints).
const COMPACTED: &[(&str, &str)] = &[("cleanup.policy", "compact")];

/// One of Strait's own single-partition topics, to be created if it is missing.
#[derive(Debug, Clone, Copy)]
pub struct SinglePartitionTopic<'a> {
    pub name: &'a str,
    /// `None`: the cluster's default.
    pub replication_factor: Option<i32>,
    pub configs: &'a [(&'a str, &'a str)],
}

impl<'a> SinglePartitionTopic<'a> {
    /// A compacted topic. One partition keeps every update in one order, which is what
    /// lets an offset map's coverage record vouch for the segments written before it.
    pub fn compacted(name: &'a str, replication_factor: Option<i32>) -> Self {
        Self {
            name,
            replication_factor,
            configs: COMPACTED,
        }
    }
}

/// Creates `topic` on the cluster behind `config` as a single-partition compacted topic if
/// it does not exist (see [`SinglePartitionTopic::compacted`]).
///
/// A cluster that does not serve CreateTopics (some Kafka-compatible services) gets a
/// warning: create the topic by hand there.
pub fn ensure_compacted_topic(
    config: &ClientConfig,
    topic: &str,
    replication_factor: Option<i32>,
) -> Result<(), OffsetSyncError> {
    ensure_single_partition_topics(
        config,
        &[SinglePartitionTopic::compacted(topic, replication_factor)],
    )
}

/// Creates one of Strait's single-partition topics with `configs` unless it exists.
/// Failing to create it is a warning naming what to create by hand, not an error.
pub fn ensure_single_partition_topic(
    config: &ClientConfig,
    topic: &str,
    replication_factor: Option<i32>,
    configs: &[(&str, &str)],
) -> Result<(), OffsetSyncError> {
    ensure_single_partition_topics(
        config,
        &[SinglePartitionTopic {
            name: topic,
            replication_factor,
            configs,
        }],
    )
}

/// Creates those of `topics` that do not exist, in one request. A KRaft controller
/// answers CreateTopics requests one after another, about 25-30 ms each on a single node
/// (its `controller.quorum.append.linger.ms`), whatever client sends them, while one
/// request for several topics takes that once: a flow's first start creates two or
/// three of these topics on the target before its first record.
/// Failing to create one is a warning naming what to create by hand, not an error.
pub fn ensure_single_partition_topics(
    config: &ClientConfig,
    topics: &[SinglePartitionTopic<'_>],
) -> Result<(), OffsetSyncError> {
    let admin: AdminClient<DefaultClientContext> = config
        .clone()
        // An admin client is a producer to librdkafka, which by default asks the broker to
        // auto-create a topic it looks up; on a cluster with `auto.create.topics.enable`
        // (Kafka's default) the lookup below would create a missing topic with the
        // broker's defaults, before the request that creates it with its own settings.
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(|e| OffsetSyncError::kafka("creating admin client", e))?;
    let result = create_missing(&admin, topics);
    drop_in_background(admin);
    result
}

/// Drops an admin client on a thread of its own: rdkafka's drop joins the client's
/// polling thread, which sleeps in 100 ms polls, and this runs on the path to a flow's
/// first record (heartbeat topic, offset map topic), where that wait showed up twice.
fn drop_in_background(admin: AdminClient<DefaultClientContext>) {
    let _ = std::thread::Builder::new()
        .name("strait-admin-drop".into())
        .spawn(move || drop(admin));
}

fn exists(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Result<bool, OffsetSyncError> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
        .map_err(|e| OffsetSyncError::kafka(format!("looking up topic {topic}"), e))?;
    Ok(metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
}

/// `k=v, k=v`: a topic's configs as the messages about it show them.
fn configs_text(configs: &[(&str, &str)]) -> String {
    configs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn create_missing(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[SinglePartitionTopic<'_>],
) -> Result<(), OffsetSyncError> {
    let mut missing = Vec::new();
    for topic in topics {
        if !exists(admin, topic.name)? {
            missing.push(topic);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|t| {
            let replication = TopicReplication::Fixed(t.replication_factor.unwrap_or(-1));
            t.configs
                .iter()
                .fold(NewTopic::new(t.name, 1, replication), |new, (k, v)| {
                    new.set(k, v)
                })
        })
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    let create_by_hand = |topic: &SinglePartitionTopic<'_>, error: &dyn std::fmt::Display| {
        warn!(
            topic = topic.name,
            error = %error,
            "could not create Strait's topic; create it by hand (1 partition, {})",
            configs_text(topic.configs)
        );
    };
    // Admin futures resolve on librdkafka's own thread; this caller is not async.
    match futures::executor::block_on(admin.create_topics(&new_topics, &options)) {
        Ok(results) => {
            for result in results {
                let name = match &result {
                    Ok(name) | Err((name, _)) => name,
                };
                let Some(topic) = missing.iter().find(|t| t.name == name) else {
                    continue;
                };
                match result {
                    Ok(_) => {
                        info!(topic = topic.name, configs = %configs_text(topic.configs), "created topic")
                    }
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => create_by_hand(topic, &code),
                }
            }
        }
        Err(e) => missing.iter().for_each(|topic| create_by_hand(topic, &e)),
    }
    Ok(())
}

/// Reads one of Strait's single-partition topics incrementally: each
/// [`TopicReader::read_new`] hands over the records written since the previous one.
pub struct TopicReader {
    topic: String,
    consumer: BaseConsumer<ReaderContext>,
    /// Offset up to which records have been handed over; `None` before the first read
    /// that found records, which is also when the partition is first assigned.
    read_to: Option<i64>,
}

impl TopicReader {
    pub fn new(config: &ClientConfig, topic: &str) -> Result<Self, OffsetSyncError> {
        let consumer: BaseConsumer<ReaderContext> = config
            .clone()
            .set("group.id", "strait-internal-reader-unused")
            // Reads run to the end the topic has when they start, so a fetch that waits at
            // the broker for more (librdkafka's default is up to 500 ms) only delays them:
            // one still waiting when the next read began held that read up to 0.5 s, and a
            // read during a partition assignment stalled the copy that long.
            .set("fetch.wait.max.ms", "10")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create_with_context(ReaderContext::default())
            .map_err(|e| OffsetSyncError::kafka(format!("reading {topic}"), e))?;
        Ok(Self {
            topic: topic.to_string(),
            consumer,
            read_to: None,
        })
    }

    /// Calls `f(key, value)` for every record written since the last call, up to the end
    /// the topic has now. A topic that does not exist yet has no records.
    pub fn read_new(
        &mut self,
        mut f: impl FnMut(&[u8], Option<&[u8]>),
    ) -> Result<(), OffsetSyncError> {
        let context = || format!("reading {}", self.topic);
        let (low, high) = match self.watermarks() {
            Ok(w) => w,
            Err(OffsetSyncError::Kafka { source, .. })
                if matches!(
                    source.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::UnknownTopicOrPartition
                            | RDKafkaErrorCode::UnknownPartition
                    )
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        if high <= low || self.read_to.is_some_and(|r| r >= high) {
            return Ok(());
        }
        // Where this read starts: where the last one stopped, or the log start on the first
        // read and if retention passed it.
        let from = self.read_to.unwrap_or(low).max(low);
        let mut tpl = TopicPartitionList::new();
        if self.read_to.is_none() {
            // The first read assigns the partition at `from`. Assigned earlier (paused, at
            // the log start) and resumed here, a reader that had waited idle for a second
            // or more took a whole second over its first records: the checkpointer's, set
            // up at the start, first finds the offset map's records a commit interval
            // later (a scratch program: 1.0 s against 2-6 ms; later reads 2 ms).
            tpl.add_partition_offset(&self.topic, 0, Offset::Offset(from))
                .map_err(|e| OffsetSyncError::kafka(context(), e))?;
            self.consumer
                .assign(&tpl)
                .map_err(|e| OffsetSyncError::kafka(context(), e))?;
        } else {
            tpl.add_partition(&self.topic, 0);
            self.consumer
                .resume(&tpl)
                .map_err(|e| OffsetSyncError::kafka(context(), e))?;
            // A resume only clears a flag: librdkafka's broker thread, idle while the only
            // partition was paused, notices it at its next one-second wake-up, so every
            // read took a second. A seek wakes it at once.
            self.consumer
                .seek(&self.topic, 0, Offset::Offset(from), SEEK_TIMEOUT)
                .map_err(|e| OffsetSyncError::kafka(context(), e))?;
        }
        let result = self.read_until(high, &mut f);
        // Paused between reads: an assigned partition is polled by librdkafka's own threads
        // all the time, which costs the broker and this process CPU for nothing.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, 0);
        self.consumer
            .pause(&tpl)
            .map_err(|e| OffsetSyncError::kafka(format!("reading {}", self.topic), e))?;
        result
    }

    /// (log start, end) of the topic's partition, waiting up to [`READ_STALL`] for its
    /// leader (readers open the topic right after creating it, before its leader is
    /// elected: a migration's first start failed on exactly that in CI) and for brokers
    /// that cannot be reached. A broker that refuses this client's login ends the wait at
    /// once, with the broker's reason: the watermark request itself fails only with
    /// "AllBrokersDown" after its whole timeout, and the reason is an event on the
    /// client's queue, which nothing else serves while it waits.
    fn watermarks(&self) -> Result<(i64, i64), OffsetSyncError> {
        let context = || format!("reading {}", self.topic);
        self.consumer.context().take_login_failure();
        let deadline = Instant::now() + READ_STALL;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = settled_watermarks(
                &self.consumer,
                &self.topic,
                0,
                LOGIN_CHECK_INTERVAL.min(left),
            );
            match attempt {
                Err(e) if is_connection_trouble(&e) || is_leader_settling_error(&e) => {
                    self.serve_events();
                    if let Some(reason) = self.consumer.context().take_login_failure() {
                        return Err(OffsetSyncError::login(context(), reason));
                    }
                    if left.is_zero() || Instant::now() >= deadline {
                        return Err(OffsetSyncError::kafka(context(), e));
                    }
                }
                other => return other.map_err(|e| OffsetSyncError::kafka(context(), e)),
            }
        }
    }

    /// Serves the events queued on this client (its global errors among them), so that
    /// its context sees them. Nothing is assigned here or the partition is paused, so no
    /// record is taken from a later read: that read seeks to where it starts.
    fn serve_events(&self) {
        for _ in 0..MAX_EVENTS_SERVED {
            match self.consumer.poll(Duration::ZERO) {
                None => return,
                Some(Ok(_)) => {}
                Some(Err(e)) => debug!(topic = %self.topic, error = %e, "event while waiting"),
            }
        }
    }

    fn read_until(
        &mut self,
        high: i64,
        f: &mut impl FnMut(&[u8], Option<&[u8]>),
    ) -> Result<(), OffsetSyncError> {
        let context = || format!("reading {}", self.topic);
        let mut last_progress = Instant::now();
        loop {
            // The position, not the last record, decides: compaction leaves gaps.
            let position = self
                .consumer
                .position()
                .ok()
                .and_then(|p| p.find_partition(&self.topic, 0).map(|e| e.offset()));
            if let Some(Offset::Offset(p)) = position {
                if p >= high {
                    self.read_to = Some(p);
                    return Ok(());
                }
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(msg)) => {
                    last_progress = Instant::now();
                    f(msg.key().unwrap_or_default(), msg.payload());
                    self.read_to = Some(msg.offset() + 1);
                    if msg.offset() + 1 >= high {
                        return Ok(());
                    }
                }
                // Connection trouble is reported as events while librdkafka reconnects
                // on its own; after an outage many are queued. Wait them out (bounded by
                // READ_STALL) instead of failing every read until they are drained.
                Some(Err(e)) if is_connection_trouble(&e) => {
                    if let Some(reason) = self.consumer.context().take_login_failure() {
                        return Err(OffsetSyncError::login(context(), reason));
                    }
                    debug!(topic = %self.topic, error = %e, "transient error while reading; librdkafka retries");
                }
                Some(Err(e)) => return Err(OffsetSyncError::kafka(context(), e)),
                None if last_progress.elapsed() > READ_STALL => {
                    return Err(OffsetSyncError::Timeout(READ_STALL, context()))
                }
                None => {}
            }
        }
    }
}

/// Every partition's [`OffsetIndex`] for one flow, read from its map topic.
/// Keyed by (source topic, partition).
pub struct FlowIndex {
    reader: TopicReader,
    partitions: BTreeMap<(String, i32), OffsetIndex>,
}

impl FlowIndex {
    /// Reads the whole map topic. `config` is the target cluster's client config.
    pub fn load(config: &ClientConfig, topic: &str) -> Result<Self, OffsetSyncError> {
        let mut index = Self::open(config, topic)?;
        index.catch_up()?;
        Ok(index)
    }

    /// An empty index with its reader set up but nothing read yet: [`Self::catch_up`]
    /// reads the map. The topic need not exist yet, so its reader can be created while
    /// the topic is.
    pub fn open(config: &ClientConfig, topic: &str) -> Result<Self, OffsetSyncError> {
        Ok(Self {
            reader: TopicReader::new(config, topic)?,
            partitions: BTreeMap::new(),
        })
    }

    /// Applies every update written since the last call (up to the current end).
    pub fn catch_up(&mut self) -> Result<usize, OffsetSyncError> {
        let partitions = &mut self.partitions;
        let mut applied = 0;
        self.reader.read_new(|key, value| {
            if let Some(record) = MapRecord::decode(key, value) {
                partitions
                    .entry((record.topic, record.partition))
                    .or_default()
                    .apply(record.update);
                applied += 1;
            }
        })?;
        Ok(applied)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&OffsetIndex> {
        self.partitions.get(&(topic.to_string(), partition))
    }

    /// Adds copies found on the target beyond the persisted map (provenance scan).
    pub fn add_copies(&mut self, topic: &str, partition: i32, copies: &[(i64, i64)]) {
        let index = self
            .partitions
            .entry((topic.to_string(), partition))
            .or_default();
        for &(source, target) in copies {
            index.apply(MapUpdate::Segment(crate::Segment {
                source,
                target,
                len: 1,
            }));
        }
    }

    /// (source topic, partition) pairs the map knows about.
    pub fn partitions(&self) -> impl Iterator<Item = (&str, i32, &OffsetIndex)> {
        self.partitions
            .iter()
            .map(|((t, p), index)| (t.as_str(), *p, index))
    }

    /// Where the persisted map of a partition ends on the target, if it has coverage.
    pub fn persisted_coverage(&self, topic: &str, partition: i32) -> Option<Coverage> {
        self.partition(topic, partition)
            .and_then(OffsetIndex::coverage)
    }

    /// The newest copy the map knows of a partition: (source offset, target offset).
    pub fn last_copy(&self, topic: &str, partition: i32) -> Option<(i64, i64)> {
        self.partition(topic, partition)
            .and_then(OffsetIndex::last_copy)
    }

    pub fn segment_count(&self) -> usize {
        self.partitions
            .values()
            .map(OffsetIndex::segment_count)
            .sum()
    }
}

/// A reader's callbacks: its global errors are logged as rdkafka logs them, and the last
/// refused login (SASL or TLS) is kept with the broker's reason, which the failed request
/// does not carry.
#[derive(Default)]
struct ReaderContext {
    login_failure: Mutex<Option<String>>,
}

impl ReaderContext {
    fn take_login_failure(&self) -> Option<String> {
        self.login_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl ClientContext for ReaderContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        error!(target: "librdkafka", "librdkafka: {error}: {reason}");
        if is_login_refused(&error) {
            *self.login_failure.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(reason.to_string());
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// Whether a client's global error says that a broker refused its login.
fn is_login_refused(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::SSL
        )
    )
}

fn is_leader_settling_error(error: &KafkaError) -> bool {
    error.rdkafka_error_code().is_some_and(is_leader_settling)
}

/// Producer callbacks: remember the first failed delivery.
struct WriterContext {
    failed: Arc<Mutex<Option<String>>>,
}

impl ClientContext for WriterContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }
}

/// Forwards a librdkafka log line as rdkafka does by default (target `librdkafka`), except
/// the warning librdkafka gives every producer created with `enable.gapless.guarantee`,
/// a property it marks experimental. Strait sets it on purpose on each idempotent
/// producer (a failed record must never be followed by a delivered one: see "Crash
/// safety" in docs/architecture.md), so that warning, three at every start and more at every
/// restart, said nothing an operator could act on. It is logged at debug level.
pub fn log_librdkafka(level: RDKafkaLogLevel, fac: &str, log_message: &str) {
    match librdkafka_log_level(level, fac, log_message) {
        Level::ERROR => error!(target: "librdkafka", "librdkafka: {fac} {log_message}"),
        Level::WARN => warn!(target: "librdkafka", "librdkafka: {fac} {log_message}"),
        Level::INFO => info!(target: "librdkafka", "librdkafka: {fac} {log_message}"),
        _ => debug!(target: "librdkafka", "librdkafka: {fac} {log_message}"),
    }
}

fn librdkafka_log_level(level: RDKafkaLogLevel, fac: &str, log_message: &str) -> Level {
    match level {
        _ if fac == "CONFWARN" && log_message.contains("enable.gapless.guarantee") => Level::DEBUG,
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => Level::ERROR,
        RDKafkaLogLevel::Warning => Level::WARN,
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => Level::INFO,
        RDKafkaLogLevel::Debug => Level::DEBUG,
    }
}

impl ProducerContext for WriterContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.get_or_insert_with(|| e.to_string());
        }
    }
}

/// An idempotent producer for one of Strait's compacted topics, with the gapless
/// guarantee: records land in the order they were queued, and a failed one is never
/// followed by a later one. Failures surface through [`TopicWriter::check`].
pub struct TopicWriter {
    topic: String,
    producer: BaseProducer<WriterContext>,
    failed: Arc<Mutex<Option<String>>>,
}

impl TopicWriter {
    pub fn new(
        config: &ClientConfig,
        topic: &str,
        linger_ms: u32,
    ) -> Result<Self, OffsetSyncError> {
        let failed = Arc::new(Mutex::new(None));
        let producer = config
            .clone()
            .set("enable.idempotence", "true")
            .set("enable.gapless.guarantee", "true")
            .set("message.timeout.ms", "0")
            .set("linger.ms", linger_ms.to_string())
            .set("compression.type", "lz4")
            // A deleted topic is never re-created by writing to it, with the broker's
            // defaults (not compacted).
            .set("allow.auto.create.topics", "false")
            .create_with_context(WriterContext {
                failed: failed.clone(),
            })
            .map_err(|e| OffsetSyncError::kafka(format!("creating a writer for {topic}"), e))?;
        Ok(Self {
            topic: topic.to_string(),
            producer,
            failed,
        })
    }

    /// Queues one record, waiting for room if the queue is full.
    pub fn send(&self, key: &[u8], value: &[u8]) -> Result<(), OffsetSyncError> {
        let mut pending = BaseRecord::<[u8], [u8]>::to(&self.topic)
            .key(key)
            .payload(value);
        loop {
            match self.producer.send(pending) {
                Ok(()) => return Ok(()),
                Err((e, returned))
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                {
                    pending = returned;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    return Err(OffsetSyncError::Write {
                        topic: self.topic.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
    }

    /// Serves delivery reports; an error if any record failed.
    pub fn check(&self) -> Result<(), OffsetSyncError> {
        self.producer.poll(Duration::ZERO);
        match &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(reason) => Err(OffsetSyncError::Write {
                topic: self.topic.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Waits for everything queued, then [`Self::check`]s.
    pub fn flush(&self, timeout: Duration) -> Result<(), OffsetSyncError> {
        self.producer
            .flush(timeout)
            .map_err(|e| OffsetSyncError::kafka(format!("flushing {}", self.topic), e))?;
        self.check()
    }
}

/// Writes map updates to the map topic, off the replication hot path: updates are queued
/// once per commit interval and delivered in the background. A failure is reported by
/// [`MapWriter::check`]; the replicator then restarts, reloads the map and rebuilds what
/// was lost from the copies' provenance headers.
pub struct MapWriter(TopicWriter);

impl MapWriter {
    pub fn new(config: &ClientConfig, topic: &str) -> Result<Self, OffsetSyncError> {
        TopicWriter::new(config, topic, 50).map(Self)
    }

    /// Queues updates of one source partition, in order.
    pub fn write(
        &self,
        source_topic: &str,
        partition: i32,
        updates: Vec<MapUpdate>,
    ) -> Result<(), OffsetSyncError> {
        for update in updates {
            let record = MapRecord {
                topic: source_topic.to_string(),
                partition,
                update,
            };
            self.0.send(record.key().as_bytes(), &record.value())?;
        }
        Ok(())
    }

    /// Serves delivery reports; an error if any update failed.
    pub fn check(&self) -> Result<(), OffsetSyncError> {
        self.0.check()
    }

    /// Waits for queued updates, e.g. before shutdown.
    pub fn flush(&self, timeout: Duration) -> Result<(), OffsetSyncError> {
        self.0.flush(timeout)
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::*;

    /// A one-broker mock cluster with a one-partition `topic`, and a client config for it
    /// (the cluster lives as long as the returned handle).
    fn mock_topic(topic: &str) -> (MockCluster<'static, DefaultProducerContext>, ClientConfig) {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic(topic, 1, 1).expect("topic");
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", cluster.bootstrap_servers());
        (cluster, config)
    }

    /// The one librdkafka warning Strait's own settings cause is demoted; every other
    /// configuration warning (a user's `clusters.*` property, say) still warns.
    #[test]
    fn only_the_gapless_guarantee_warning_is_demoted() {
        let gapless = "[thrd:app]: Configuration property enable.gapless.guarantee is experimental: When set to `true`, …";
        assert_eq!(
            librdkafka_log_level(RDKafkaLogLevel::Warning, "CONFWARN", gapless),
            Level::DEBUG
        );
        let other = "[thrd:app]: Configuration property fetch.wait.max.ms is a consumer property and will be ignored by this producer instance";
        assert_eq!(
            librdkafka_log_level(RDKafkaLogLevel::Warning, "CONFWARN", other),
            Level::WARN
        );
        assert_eq!(
            librdkafka_log_level(RDKafkaLogLevel::Warning, "FAIL", gapless),
            Level::WARN
        );
        assert_eq!(
            librdkafka_log_level(RDKafkaLogLevel::Error, "FAIL", "broker down"),
            Level::ERROR
        );
        assert_eq!(
            librdkafka_log_level(RDKafkaLogLevel::Notice, "CGRPOP", "x"),
            Level::INFO
        );
    }

    /// A state topic is read right after it was created, while its partition's leader is
    /// still being elected: the read waits for the election instead of failing.
    #[test]
    fn a_read_waits_out_a_leader_election() {
        let (cluster, config) = mock_topic("state");
        let mut reader = TopicReader::new(&config, "state").expect("reader");
        cluster.request_errors(
            RDKafkaApiKey::ListOffsets,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 4],
        );
        let mut records = 0;
        reader
            .read_new(|_, _| records += 1)
            .expect("the read outlasts the election");
        assert_eq!(records, 0);
    }

    /// A broker that refuses the reader's login ends the read with the broker's reason,
    /// not with "AllBrokersDown" after the whole stall: an operator's command with a wrong
    /// password said only that, and only after 30 s.
    #[test]
    fn a_refused_login_ends_a_read_with_the_brokers_reason() {
        // The mock cluster speaks no SASL, so every SASL login to it fails.
        let (_cluster, mut config) = mock_topic("state");
        config
            .set("security.protocol", "SASL_PLAINTEXT")
            .set("sasl.mechanism", "PLAIN")
            .set("sasl.username", "strait")
            .set("sasl.password", "secret");
        let mut reader = TopicReader::new(&config, "state").expect("reader");
        let error = reader
            .read_new(|_, _| {})
            .expect_err("the login is refused");
        assert!(
            matches!(&error, OffsetSyncError::Login { reason, .. }
                if reason.starts_with("sasl_plaintext://") && reason.contains("SASL")),
            "{error}"
        );
    }

    /// Between reads the partition is paused; without a seek after the resume, a read
    /// waits for librdkafka's broker thread's one-second wake-up (every checkpoint round
    /// and every migration step would pay it).
    #[test]
    fn a_read_after_a_pause_does_not_wait_for_the_broker_threads_wake_up() {
        let (_cluster, config) = mock_topic("map");
        let writer = TopicWriter::new(&config, "map", 0).expect("writer");
        let mut reader = TopicReader::new(&config, "map").expect("reader");
        let mut seen = Vec::new();
        for round in 0..4u8 {
            for i in 0..10u8 {
                writer.send(&[round, i], &[i]).expect("send");
            }
            writer.flush(Duration::from_secs(10)).expect("flush");
            // Let the broker thread fall idle, as between two checkpoint rounds.
            std::thread::sleep(Duration::from_millis(300));
            let started = Instant::now();
            reader
                .read_new(|key, _| seen.push(key.to_vec()))
                .expect("read");
            let took = started.elapsed();
            assert_eq!(seen.len(), 10 * (usize::from(round) + 1), "round {round}");
            // A generous bound: the fixed read takes milliseconds, the old one a second.
            // Not the first read: a new client may still be settling its connection then.
            assert!(
                round == 0 || took < Duration::from_millis(700),
                "round {round}: {took:?}"
            );
        }
        let expected: Vec<Vec<u8>> = (0..4u8)
            .flat_map(|r| (0..10u8).map(move |i| vec![r, i]))
            .collect();
        assert_eq!(seen, expected, "every record once, in order");
    }
}
