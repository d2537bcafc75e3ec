//! One run of a flow's data path: source consumer → target producer.
//!
//! A single thread drives both clients. It polls the consumer, hands each record to the
//! producer, and polls the producer for delivery reports. Rebalance and delivery callbacks
//! therefore run on this thread too, inside those polls, so the shared state's mutex is
//! never contended.
//!
//! Exactly-once across crashes rests on three facts:
//! 1. The idempotent producer, with no message timeout and the gapless guarantee, writes a
//!    partition's records in order and never writes a later record after an earlier one
//!    failed. So the target holds a contiguous prefix of each source partition.
//! 2. Each copy carries a provenance header naming its source offset.
//! 3. When a partition is assigned, its start offset is the larger of the committed source
//!    offset and one past the newest provenance offset found on the target.
//!
//! Flows with `fence = "transactions"` hold the first fact for `read_committed` readers
//! instead: copies are committed in transactions, a copy may time out (failing its
//! transaction, which is aborted whole), and progress counts only committed ones. The
//! `fence` module says how a new owner keeps the previous one from writing after it.

use rustc_hash::FxHashMap;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::BlockingRetryable;
use futures::executor::block_on;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use strait_offset_sync::{
    ensure_compacted_topic, is_connection_trouble, is_leader_settling, offsets_learning_partitions,
    settling_backoff, FlowIndex, MapWriter, PartitionOffsetMap,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::copies::FoundCopies;
use crate::fence::{
    fence_previous_owner, owners_to_fence, transactional_id, CommitMetadata, TransactionBudget,
    TRANSACTION_TIMEOUT,
};
use crate::fetch::{FetchQueue, Fetched, SourceRecord, BATCH_SIZE};
use crate::heartbeat::{OwnTopicsOnTarget, Prepared};
use crate::produce::{OutgoingHeaders, TargetTopic};
use crate::provenance::{
    copied_from, Provenance, ScanStart, SourcePartition, TailScanner, PROVENANCE_HEADER,
};
use crate::resume::{resume_point, Witnesses};
use crate::status::{DataLoss, FlowStatus, PartitionStatus, TopicStatus};
use crate::telemetry;
use crate::topics::{apply_cluster, client_config, discover, learn_partitions, TargetTopics};
use crate::{offsets_of, ClusterSpec, Fence, FlowSpec, OnDataLoss, ReplicatorError, StartFrom};

/// How long a send may wait on a full producer queue before the pipeline gives up and
/// restarts. Kept below the consumer's `max.poll.interval.ms` so that we leave the group
/// ourselves rather than being expelled while records are still queued.
const MAX_BLOCKED: Duration = Duration::from_secs(120);
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the first discovery waits for a heartbeat topic just created to show in the
/// source's metadata.
const HEARTBEAT_VISIBLE_WITHIN: Duration = Duration::from_secs(2);

/// Progress of one source partition, kept across pipeline restarts.
#[derive(Debug, Default)]
pub(crate) struct PartitionProgress {
    pub assigned: bool,
    /// Source offset after the last record the target acknowledged (contiguous prefix).
    pub acked_next: Option<i64>,
    /// Target offset after that record.
    pub acked_target_next: Option<i64>,
    /// Where this partition's next copy lands if nothing else writes to the target
    /// partition: its end when the partition was assigned, then the offset after each
    /// acknowledged copy. A copy acknowledged further on says that something else wrote
    /// in between (see [`DeliveryContext::delivery`]).
    pub target_next_expected: Option<i64>,
    /// Source offset below which every record was handled: copied and acknowledged, or
    /// never delivered to a `read_committed` consumer (transaction markers, aborted
    /// records). Can run ahead of `acked_next` over such trailing gaps.
    pub handled_next: Option<i64>,
    /// What was last committed to the source group.
    pub committed_next: Option<i64>,
    /// Last stable offset of the source partition, from client statistics.
    pub source_end: Option<i64>,
    /// A delivery failed; nothing after it may count as acknowledged.
    pub broken: bool,
    /// A copy of this partition is in the open transaction (`fence = "transactions"`):
    /// its commit marker takes the target offset after the transaction's last copy.
    pub in_transaction: bool,
    /// Timestamp (ms) of the last acknowledged copy.
    pub acked_timestamp: Option<i64>,
    pub records: u64,
    pub bytes: u64,
    pub offsets: PartitionOffsetMap,
}

/// Progress of every partition of one source topic.
#[derive(Debug)]
pub(crate) struct TopicProgress {
    pub source_topic: String,
    pub target_topic: String,
    pub partitions: Vec<PartitionProgress>,
}

impl TopicProgress {
    fn partition(&mut self, partition: i32) -> &mut PartitionProgress {
        let idx = partition as usize;
        if self.partitions.len() <= idx {
            self.partitions
                .resize_with(idx + 1, PartitionProgress::default);
        }
        &mut self.partitions[idx]
    }
}

/// The state a flow keeps across pipeline restarts, per *target* topic, because that is
/// what delivery reports name.
#[derive(Debug, Default)]
pub(crate) struct FlowProgress {
    /// Indexed by topic id: a topic's place here, which never changes while the flow
    /// runs (topics are only ever added). Delivery reports carry it (see
    /// [`DeliveryOpaque`]), so they find their topic without reading its name.
    pub topics: Vec<TopicProgress>,
    /// Target topic name → topic id, for everything that is not per record.
    ids: FxHashMap<String, usize>,
    /// First error seen inside a callback; the loop picks it up and stops.
    pub failure: Option<ReplicatorError>,
    /// `failure` is a delivery report that said only "Fatal": once the producer has hit a
    /// fatal error, every record still queued fails that way, in no particular order. A
    /// later report with a reason of its own (the refused request's records) replaces it.
    pub failure_is_collateral: bool,
    /// Size of the largest record in the refused batch behind `failure`.
    pub largest_refused: usize,
    /// A consumed record was not handed to the producer (shutdown while waiting for
    /// room). The consumer's position is then ahead of what was copied and must not be
    /// used as the handled position for the rest of this run.
    pub position_untrusted: bool,
    /// A transaction of this pipeline run was not committed (`fence = "transactions"`):
    /// what was acknowledged since the last commit may be aborted, so nothing more is
    /// committed to the source or persisted to the map until the pipeline restarts.
    pub transaction_failed: bool,
}

fn is_size_error(err: &KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge) | Some(RDKafkaErrorCode::InvalidRecord)
    )
}

fn size_hint(topic: &str, partition: i32, offset: i64, size: usize) -> String {
    format!(
        "; the largest record in the refused batch is {topic}[{partition}] offset {offset} \
         ({size} bytes of key and value): raise the target topic's max.message.bytes"
    )
}

/// For a record refused before it was sent: the target producer's own limit.
fn producer_limit_hint(target: &ClusterSpec, size: usize) -> String {
    let limit = target
        .properties
        .get("message.max.bytes")
        .map_or("1000000 (librdkafka's default)", String::as_str);
    format!(
        "; the record has {size} bytes of key and value, more than the target producer's \
         message.max.bytes, {limit}: raise it in the target cluster's properties (and the \
         target topic's max.message.bytes if needed)"
    )
}

impl FlowProgress {
    /// The id of a target topic's progress, which is created if new.
    fn topic_id(&mut self, target_topic: &str, source_topic: &str) -> usize {
        if let Some(&id) = self.ids.get(target_topic) {
            return id;
        }
        let id = self.topics.len();
        self.topics.push(TopicProgress {
            source_topic: source_topic.to_string(),
            target_topic: target_topic.to_string(),
            partitions: Vec::new(),
        });
        self.ids.insert(target_topic.to_string(), id);
        id
    }

    fn topic(&mut self, target_topic: &str, source_topic: &str) -> &mut TopicProgress {
        let id = self.topic_id(target_topic, source_topic);
        &mut self.topics[id]
    }

    fn by_target(&mut self, target_topic: &str) -> Option<&mut TopicProgress> {
        let id = *self.ids.get(target_topic)?;
        self.topics.get_mut(id)
    }

    fn fail(&mut self, err: ReplicatorError) {
        if self.failure.is_none() {
            self.failure = Some(err);
        }
    }

    /// The failure recorded by a callback, if any. One that said only "Fatal" is replaced
    /// by the producer's fatal error, which names the request the broker refused and why.
    fn take_failure(
        &mut self,
        producer: &BaseProducer<DeliveryContext>,
        cluster: &str,
    ) -> Option<ReplicatorError> {
        let failure = self.failure.take()?;
        if !std::mem::take(&mut self.failure_is_collateral) {
            return Some(failure);
        }
        Some(fatal_cause(producer, cluster).unwrap_or(failure))
    }
}

pub(crate) type SharedProgress = Arc<Mutex<FlowProgress>>;

pub(crate) fn lock(progress: &SharedProgress) -> MutexGuard<'_, FlowProgress> {
    // A panic while holding the lock leaves counters, not invariants, half-updated.
    progress
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Producer callbacks: record acknowledgements in the progress and offset maps.
struct DeliveryContext {
    progress: SharedProgress,
    status: Arc<FlowStatus>,
    /// The target cluster's name, for errors.
    cluster: String,
    /// Set before each round of delivery reports: the first acknowledgement of the round
    /// records its end-to-end latency. Sampling keeps a clock read and a histogram update
    /// off the per-record path.
    sample_latency: AtomicBool,
    latency: metrics::Histogram,
    /// librdkafka's own produce request retries (from statistics), for this producer.
    retries: metrics::Counter,
    flow: String,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.status
            .login
            .client_error(&self.cluster, &error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        // Demotes the warning about `enable.gapless.guarantee`, which this producer sets.
        strait_offset_sync::log_librdkafka(level, fac, log_message);
    }

    fn stats(&self, statistics: Statistics) {
        self.status.observe_target(&statistics);
        self.retries
            .absolute(statistics.brokers.values().map(|b| b.txretries).sum());
    }
}

impl DeliveryContext {
    /// Records `[expected, copy)` of the copy's target partition were written by someone
    /// else while this flow copies into it: Strait's idempotent producer leaves no gaps
    /// between its own copies. That is another copier of the same partition (an instance
    /// that lost the partition and still sent what it held, or copies it appended above
    /// the high watermark before it stopped), or an application writing to a flow's
    /// target. Consumers of the target read those records too: duplicates or foreign
    /// records, reported, never silent.
    fn foreign_records(&self, source_topic: &str, copy: &BorrowedMessage<'_>, expected: i64) {
        let (target_topic, partition, at) = (copy.topic(), copy.partition(), copy.offset());
        error!(
            flow = %self.flow, topic = source_topic, target_topic, partition, from = expected, to = at,
            "{target_topic}[{partition}] holds {} record(s) at offsets [{expected}, {at}) that this \
             flow did not write, between its copies: duplicates from another copier of the \
             partition, or foreign records (`strait verify` names each)",
            at - expected
        );
        metrics::counter!(telemetry::TARGET_FOREIGN_RECORDS_TOTAL,
            "flow" => self.flow.clone(), "topic" => source_topic.to_string())
        .increment((at - expected) as u64);
    }
}

impl ProducerContext for DeliveryContext {
    /// The record's source offset and, mostly, its topic's id: see [`DeliveryOpaque`].
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (topic_id, source_offset) = DeliveryOpaque::decode(opaque);
        let mut progress = lock(&self.progress);
        match result {
            Ok(msg) => {
                let bytes = msg.key().map_or(0, <[u8]>::len) + msg.payload().map_or(0, <[u8]>::len);
                let topic = match topic_id {
                    Some(id) => progress.topics.get_mut(id),
                    None => progress.by_target(msg.topic()),
                };
                let Some(topic) = topic else {
                    return;
                };
                let p = topic.partition(msg.partition());
                if p.broken {
                    return;
                }
                if !p.offsets.record(source_offset, msg.offset()) {
                    let source_topic = topic.source_topic.clone();
                    progress.fail(ReplicatorError::Invariant(format!(
                        "delivery reports out of order for {source_topic}[{}]: source offset \
                         {source_offset} at target offset {}",
                        msg.partition(),
                        msg.offset()
                    )));
                    return;
                }
                let foreign_from = p.target_next_expected.filter(|&e| msg.offset() > e);
                p.in_transaction = true;
                p.target_next_expected = Some(msg.offset() + 1);
                p.acked_next = Some(source_offset + 1);
                p.acked_target_next = Some(msg.offset() + 1);
                let timestamp = msg.timestamp().to_millis();
                p.acked_timestamp = timestamp;
                if let Some(ts) = timestamp {
                    // A plain load first: the read-modify-write only once per round.
                    if self.sample_latency.load(Ordering::Relaxed)
                        && self.sample_latency.swap(false, Ordering::Relaxed)
                    {
                        self.latency.record((now_ms() - ts).max(0) as f64 / 1000.0);
                    }
                }
                p.records += 1;
                p.bytes += bytes as u64;
                if let Some(expected) = foreign_from {
                    self.foreign_records(&topic.source_topic, msg, expected);
                }
            }
            Err((err, msg)) => {
                let (target_topic, partition) = (msg.topic().to_string(), msg.partition());
                let source_topic = match progress.by_target(&target_topic) {
                    Some(topic) => {
                        topic.partition(partition).broken = true;
                        topic.source_topic.clone()
                    }
                    None => target_topic.clone(),
                };
                let code = err
                    .rdkafka_error_code()
                    .map_or_else(|| "unknown".to_string(), |c| format!("{c:?}"));
                metrics::counter!(telemetry::PRODUCE_ERRORS_TOTAL, "code" => code).increment(1);
                let size = msg.key().map_or(0, <[u8]>::len) + msg.payload().map_or(0, <[u8]>::len);
                // The broker refuses whole batches; every record of one comes through here
                // in order. Keep the first (where the copied prefix ends) and, for size
                // errors, point at the record that is actually too large.
                let state = &mut *progress;
                let collateral = matches!(err.rdkafka_error_code(), Some(RDKafkaErrorCode::Fatal));
                if state.failure.is_some() && (collateral || !state.failure_is_collateral) {
                    if let Some(ReplicatorError::RecordRefused { hint, .. }) = &mut state.failure {
                        if is_size_error(err) && size > state.largest_refused {
                            state.largest_refused = size;
                            *hint = size_hint(&source_topic, partition, source_offset, size);
                        }
                    }
                    return;
                }
                state.largest_refused = size;
                state.failure_is_collateral = collateral;
                if matches!(
                    err.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::MessageTimedOut)
                ) {
                    // Only a fenced flow's copies time out (after the transaction timeout):
                    // their transaction is aborted whole, and a restart copies them again.
                    state.failure = Some(ReplicatorError::Timeout(
                        TRANSACTION_TIMEOUT,
                        format!(
                            "'{}' to acknowledge copies of {source_topic}[{partition}]",
                            self.cluster
                        ),
                    ));
                    return;
                }
                let hint = if is_size_error(err) {
                    size_hint(&source_topic, partition, source_offset, size)
                } else if matches!(
                    err.rdkafka_error_code(),
                    // In a delivery report (unlike at send time, where it means "not grown
                    // yet") an unknown partition has vanished: topics never shrink.
                    Some(RDKafkaErrorCode::UnknownTopic)
                        | Some(RDKafkaErrorCode::UnknownTopicOrPartition)
                        | Some(RDKafkaErrorCode::UnknownPartition)
                ) {
                    format!(
                        "; {target_topic} no longer exists on the target (deleted?). Strait does \
                         not re-create a topic behind your back: re-create it, or restart to \
                         have it created, and replication resumes from the last commit"
                    )
                } else {
                    String::new()
                };
                state.failure = Some(ReplicatorError::RecordRefused {
                    source_topic,
                    target_topic,
                    partition,
                    offset: source_offset,
                    reason: err.to_string(),
                    hint,
                });
            }
        }
    }
}

/// Consumer callbacks: choose start offsets on assignment, drain and commit on revocation.
struct RebalanceContext {
    spec: FlowSpec,
    status: Arc<FlowStatus>,
    progress: SharedProgress,
    producer: Arc<BaseProducer<DeliveryContext>>,
    scanner: Option<TailScanner>,
    /// Shared with the poll loop's topic refresh, which never holds it across a poll (the
    /// callbacks run inside `poll`).
    topics: Arc<Mutex<TargetTopics>>,
    /// The persisted offset map (when offset sync is on), to rebuild what it lacks.
    map: Option<Arc<PersistedMap>>,
    /// This pipeline run's transactional id (`fence = "transactions"`).
    transactional_id: Option<String>,
    /// Bumped by every rebalance callback: see [`Routes::for_record`].
    assignment_changes: AtomicU64,
    /// Where assigned partitions' records go (set once the consumer exists; owned by
    /// [`run`], which destroys it before the consumer).
    fetch: OnceLock<Weak<FetchQueue<RebalanceContext>>>,
}

/// The persisted offset map and its writer. Creating the map topic and reading it takes
/// a few hundred milliseconds, so it happens on a thread of its own while the consumer
/// joins its group; the first user (normally the first assignment) waits for it.
struct PersistedMap {
    pending: Mutex<Option<JoinHandle<Result<LoadedMap, ReplicatorError>>>>,
    ready: OnceLock<LoadedMap>,
}

struct LoadedMap {
    index: Mutex<FlowIndex>,
    writer: MapWriter,
}

impl PersistedMap {
    /// Loads the map on a thread of its own, once `prepared` (if any) fires: see
    /// [`Prepared::on_target`]. Its reader is set up before that, and the topic is not
    /// looked up again when the preparation made sure of it.
    fn start(spec: &FlowSpec, topic: &str, prepared: Option<OwnTopicsOnTarget>) -> Self {
        let mut target = client_config(&spec.target);
        target.set("client.id", format!("strait-{}-offset-map", spec.name));
        let topic = topic.to_string();
        let (flow, replication_factor) = (spec.name.clone(), spec.replication_factor);
        let load = std::thread::spawn(move || {
            let mut index = FlowIndex::open(&target, &topic)?;
            let exists = prepared.is_some_and(|p| block_on(p).unwrap_or(false));
            if !exists {
                ensure_compacted_topic(&target, &topic, replication_factor)?;
            }
            index.catch_up()?;
            info!(flow = %flow, topic, segments = index.segment_count(), "offset map loaded");
            Ok(LoadedMap {
                index: Mutex::new(index),
                writer: MapWriter::new(&target, &topic)?,
            })
        });
        Self {
            pending: Mutex::new(Some(load)),
            ready: OnceLock::new(),
        }
    }

    /// The loaded map, waiting for the load if it is still running.
    fn get(&self) -> Result<&LoadedMap, ReplicatorError> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(load) = pending.take() {
            let loaded = load.join().map_err(|_| {
                ReplicatorError::Invariant("the thread loading the offset map panicked".into())
            })??;
            let _ = self.ready.set(loaded);
        }
        self.ready.get().ok_or_else(|| {
            ReplicatorError::Invariant(
                "the offset map is unavailable: loading it failed (see the earlier error)".into(),
            )
        })
    }

    fn writer(map: Option<&Self>) -> Result<Option<&MapWriter>, ReplicatorError> {
        Ok(map.map(Self::get).transpose()?.map(|m| &m.writer))
    }

    /// The writer if the map was loaded, without waiting for a load still running.
    fn loaded_writer(map: Option<&Self>) -> Option<&MapWriter> {
        map.and_then(|m| m.ready.get()).map(|m| &m.writer)
    }
}

impl ClientContext for RebalanceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.status
            .login
            .client_error(&self.spec.source.name, &error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        self.status.observe_source(&statistics);
        let mut progress = lock(&self.progress);
        for (source_topic, topic) in &statistics.topics {
            let target_topic = self
                .spec
                .naming
                .target_topic(&self.spec.source.name, source_topic);
            let Some(tp) = progress.by_target(&target_topic) else {
                continue;
            };
            for (&partition, stats) in &topic.partitions {
                // read_committed consumers stop at the last stable offset.
                let end = if stats.ls_offset >= 0 {
                    stats.ls_offset
                } else {
                    stats.hi_offset
                };
                if partition >= 0 && end >= 0 {
                    tp.partition(partition).source_end = Some(end);
                }
            }
        }
    }
}

impl ConsumerContext for RebalanceContext {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if result.is_err() {
            // Committed again at the next interval, and before any hand-over.
            return;
        }
        let mut progress = lock(&self.progress);
        for elem in offsets.elements() {
            let (Offset::Offset(next), Ok(())) = (elem.offset(), elem.error()) else {
                continue;
            };
            let target_topic = self
                .spec
                .naming
                .target_topic(&self.spec.source.name, elem.topic());
            if let Some(topic) = progress.by_target(&target_topic) {
                let p = topic.partition(elem.partition());
                p.committed_next = p.committed_next.max(Some(next));
            }
        }
    }

    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.assignment_changes.fetch_add(1, Ordering::Relaxed);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let resolved = self.choose_start_offsets(consumer, tpl);
                // Whatever the outcome, the start-up work waiting for this may go ahead.
                self.status.mark_started();
                if let Some(fetch) = self.fetch.get().and_then(Weak::upgrade) {
                    for e in tpl.elements() {
                        if !fetch.route(e.topic(), e.partition()) {
                            debug!(flow = %self.spec.name, topic = e.topic(), partition = e.partition(), "records of this partition come through the consumer's queue");
                        }
                    }
                }
                if let Err(e) = consumer.incremental_assign(tpl) {
                    lock(&self.progress).fail(ReplicatorError::kafka("assigning partitions", e));
                    return;
                }
                if let Err(e) = resolved {
                    // Never consume from a position we could not prove; the loop restarts.
                    let _ = consumer.pause(tpl);
                    lock(&self.progress).fail(e);
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.drain_and_commit(consumer, tpl);
                if let Err(e) = consumer.incremental_unassign(tpl) {
                    warn!(flow = %self.spec.name, error = %e, "unassigning revoked partitions failed");
                }
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                warn!(flow = %self.spec.name, error = %code, "rebalance error");
            }
        }
    }
}

impl RebalanceContext {
    fn choose_start_offsets(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
    ) -> Result<(), ReplicatorError> {
        let began = std::time::Instant::now();
        self.learn_target_partitions(consumer, tpl)?;
        let target_partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| {
                let topic = self
                    .spec
                    .naming
                    .target_topic(&self.spec.source.name, e.topic());
                (topic, e.partition())
            })
            .collect();
        // Three independent reads, each from its own client: the group's commits (then
        // the log starts of partitions without one) on the source, the offset map to its
        // end, and the target watermarks for the tail check. One after another they took
        // 8-15 ms of a first start's assignment on the test bed, on the way to the first
        // record; side by side, the longest of them.
        let (source_side, index, watermarks) = std::thread::scope(|threads| {
            let watermarks = threads.spawn(|| match &self.scanner {
                Some(scanner) => scanner.watermarks(&target_partitions),
                None => HashMap::new(),
            });
            let index = threads.spawn(|| -> Result<_, ReplicatorError> {
                let Some(map) = &self.map else {
                    return Ok(None);
                };
                let index = &map.get()?.index;
                // Read the map up to its current end once per assignment: another
                // instance may have owned these partitions until just now.
                index.lock().unwrap_or_else(|p| p.into_inner()).catch_up()?;
                debug!(flow = %self.spec.name, elapsed = ?began.elapsed(), "assignment: offset map read to its end");
                Ok(Some(index))
            });
            let committed = || consumer.committed_offsets(tpl.clone(), COMMIT_TIMEOUT);
            let source_side = committed
                .retry(settling_backoff(COMMIT_TIMEOUT))
                .sleep(std::thread::sleep)
                .when(passes_on_its_own)
                .call()
                .map_err(|e| ReplicatorError::kafka("reading committed offsets", e))
                .and_then(|committed| {
                    debug!(flow = %self.spec.name, elapsed = ?began.elapsed(), "assignment: committed offsets read");
                    let fresh_starts = self.fresh_starts(consumer, &committed)?;
                    let log_bounds = self.log_bounds(consumer, &committed)?;
                    Ok((committed, fresh_starts, log_bounds))
                });
            (source_side, join_scoped(index), join_scoped(watermarks))
        });
        let (committed, fresh_starts, log_bounds) = source_side?;
        let index = index?;
        // The tail is read only once every previous owner is fenced: before, copies it
        // still sends could land after it.
        let watermarks = match (self.fence_previous_owners(&committed)?, &self.scanner) {
            (true, Some(scanner)) => scanner.watermarks(&target_partitions),
            _ => watermarks,
        };
        let mut claims = Vec::new();
        debug!(flow = %self.spec.name, elapsed = ?began.elapsed(), known = watermarks.len(), "assignment: start offsets and target watermarks read");
        for elem in committed.elements() {
            let (source_topic, partition) = (elem.topic().to_string(), elem.partition());
            let target_topic = self
                .spec
                .naming
                .target_topic(&self.spec.source.name, &source_topic);
            let committed_next = match elem.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            let committed_target = CommitMetadata::decode(elem.metadata()).target_next;

            let persisted = index.and_then(|index| {
                let index = index.lock().unwrap_or_else(|p| p.into_inner());
                index.persisted_coverage(&source_topic, partition)
            });
            // Where to read copies back from the target: after the last commit, or
            // earlier if the persisted offset map ends before it. A partition that has
            // been replicated but has no map yet is rebuilt from the start of the target.
            let after_commit = committed_target.map(|target| ScanStart {
                target,
                source_next: committed_next,
            });
            let scan_from = match (index, persisted) {
                (Some(_), Some(c)) => match after_commit {
                    Some(start) if start.target <= c.target_next => Some(start),
                    _ => Some(ScanStart {
                        target: c.target_next,
                        source_next: Some(c.through),
                    }),
                },
                (Some(_), None) if committed_next.is_some() => Some(ScanStart {
                    target: 0,
                    source_next: None,
                }),
                _ => after_commit,
            };
            // The target partition's (log start, end): from the batch read, else read on
            // its own, which reports what kept it from the batch. (Not used to fall back
            // only inside the scan: the map's start below needs it too, and without it a
            // partition the batch missed restarted the flow, seen in CI on a just-created
            // 48-partition target.)
            let target_watermarks = match &self.scanner {
                Some(scanner) => scanner.watermarks_in(&watermarks, &target_topic, partition)?,
                None => None,
            };
            if let (Some(acked), Some((_, end))) = (committed_target, target_watermarks) {
                self.check_target_kept_its_copies(
                    (&source_topic, &target_topic, partition),
                    end,
                    acked,
                )?;
            }
            // Going on after copies the target lost (`on_data_loss = "continue"`): the
            // next copies land at its end.
            let committed_target = match (committed_target, target_watermarks) {
                (Some(acked), Some((_, end))) => Some(acked.min(end)),
                (acked, _) => acked,
            };
            // Copies on the target after that position, oldest first.
            let copied = match (&self.scanner, target_watermarks) {
                (Some(scanner), Some(w)) => scanner.copies_after_commit(
                    &target_topic,
                    &SourcePartition {
                        cluster: &self.spec.source.name,
                        topic: &source_topic,
                        partition,
                    },
                    scan_from,
                    w,
                )?,
                // No scanner, or no target topic yet: nothing was copied.
                _ => FoundCopies::default(),
            };
            let last_copied = copied.last();
            let resume = resume_point(&Witnesses {
                committed: committed_next.map(|next| (next, committed_target)),
                map_end: persisted.as_ref().map(|c| (c.through, c.target_next)),
                last_copied,
                target_end: target_watermarks.map(|(_, end)| end),
            });
            // Nothing yet: start explicitly at the log start (or end); see `fresh_starts`.
            let start = resume.source_next.or_else(|| {
                fresh_starts
                    .get(&(source_topic.clone(), partition))
                    .copied()
            });
            let start = match (start, log_bounds.get(&(source_topic.clone(), partition))) {
                (Some(start), Some(&(low, high))) => {
                    // The map may know copies of records past the start: a source topic
                    // deleted and created again takes its group's commits with it.
                    let copied_to = persisted.as_ref().map_or(start, |c| start.max(c.through));
                    self.check_offsets_did_not_go_back(&source_topic, partition, copied_to, high)?;
                    Some(self.start_after_loss(&source_topic, partition, start, low)?)
                }
                (start, _) => start,
            };
            let offset = start.map_or(Offset::Invalid, Offset::Offset);
            tpl.set_partition_offset(&source_topic, partition, offset)
                .map_err(|e| ReplicatorError::kafka("setting start offset", e))?;

            let mut progress = lock(&self.progress);
            let p = progress
                .topic(&target_topic, &source_topic)
                .partition(partition);
            p.assigned = true;
            p.broken = false;
            p.committed_next = committed_next;
            if let Some(start) = start {
                p.acked_next = Some(start);
                p.handled_next = Some(start);
            }
            p.target_next_expected = target_watermarks.map(|(_, end)| end);
            if resume.target_next.is_some() {
                p.acked_target_next = resume.target_next;
            }
            p.in_transaction = false;
            if let Some(start) = start {
                claims.push((source_topic.clone(), partition, start, p.acked_target_next));
            }
            for &(source, target) in &copied.pairs {
                // Pairs this process already saw acknowledged are refused as not newer.
                p.offsets.record(source, target);
            }
            if index.is_some() {
                // Where this writer's map begins: the persisted map's start, else where
                // the copies found name everything from (see
                // `FoundCopies::rebuilt_map_start`), else where replication starts now.
                let rebuilt = match (persisted, &self.scanner, target_watermarks) {
                    (None, Some(scanner), Some((_, high))) if !copied.pairs.is_empty() => {
                        let head = scanner.source_head(&source_topic, partition)?;
                        copied.rebuilt_map_start(high, head)
                    }
                    _ => None,
                };
                let from = persisted
                    .map(|c| c.from)
                    .or(rebuilt.map(|(from, _)| from))
                    .or(start);
                // The target's end from the settled watermarks: a target topic created
                // moments ago answers "not leader" for a while, and a map started without
                // this never said how far it was complete, so every translation stayed
                // pending (a migration waited at `mirror` for ever).
                let target_next = persisted
                    .map(|c| c.target_next)
                    .or(rebuilt.map(|(_, target)| target))
                    .or(p.acked_target_next)
                    .or(target_watermarks.map(|(_, high)| high));
                let (Some(from), Some(target_next)) = (from, target_next) else {
                    // Never copy without a map that can vouch for the copies; the
                    // pipeline restarts and asks again.
                    let unknown = if from.is_none() {
                        format!(
                            "the start offset of {source_topic}[{partition}] on '{}'",
                            self.spec.source.name
                        )
                    } else {
                        format!(
                            "the end offset of {target_topic}[{partition}] on '{}'",
                            self.spec.target.name
                        )
                    };
                    return Err(ReplicatorError::Timeout(
                        COMMIT_TIMEOUT,
                        format!("{unknown}, where its offset map starts"),
                    ));
                };
                p.offsets.start_at(from, target_next);
                if let Some(c) = persisted {
                    p.offsets.advance_through(c.through);
                }
                if let Some(start) = start {
                    p.offsets.advance_through(start);
                }
            }
            // Per partition at debug: a group of 1,200 partitions would write 1,200 lines
            // at every rebalance. The summary below is the info line.
            debug!(
                flow = %self.spec.name, topic = %source_topic, partition,
                committed = ?committed_next, map_through = ?persisted.map(|c| c.through),
                found_on_target = ?last_copied.map(|(s, _)| s),
                start = ?start, "partition assigned"
            );
        }
        self.claim(consumer, &claims)?;
        let assigned: Vec<(String, i32)> = committed
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        info!(flow = %self.spec.name, partitions = assigned.len(), topics = %topics_of(&assigned), "partitions assigned");
        Ok(())
    }

    /// Fenced flows: fences every other owner named in the commits of a new assignment
    /// (see the `fence` module). Returns whether it fenced any, after which the target's
    /// watermarks are read again.
    fn fence_previous_owners(
        &self,
        committed: &TopicPartitionList,
    ) -> Result<bool, ReplicatorError> {
        let Some(own) = &self.transactional_id else {
            return Ok(false);
        };
        let metadata: Vec<CommitMetadata> = committed
            .elements()
            .iter()
            .map(|e| CommitMetadata::decode(e.metadata()))
            .collect();
        let previous = owners_to_fence(metadata.iter().map(|m| m.owner.as_deref()), own);
        for id in &previous {
            fence_previous_owner(&self.spec.name, &self.spec.target, id, COMMIT_TIMEOUT)?;
        }
        Ok(!previous.is_empty())
    }

    /// Commits each newly assigned partition's start offset, with the target offset after
    /// the newest copy, before its first copy. Later commits can be refused for long
    /// stretches (a member between generations); this one leaves the group a commit for
    /// the partition, without which the next owner does not trust the offset map's end
    /// (see the `resume` module).
    ///
    /// Fenced flows also name this run's transactional id in it: whoever takes a partition
    /// over after this instance stopped answering then knows whom to fence. Refused (the
    /// group moved on meanwhile), a fenced flow does not copy from the assignment; an
    /// unfenced one goes on, as it did before claims were made.
    fn claim(
        &self,
        consumer: &BaseConsumer<Self>,
        claims: &[(String, i32, i64, Option<i64>)],
    ) -> Result<(), ReplicatorError> {
        let owner = self.transactional_id.clone();
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, start, target_next) in claims {
            let mut elem = tpl.add_partition(topic, *partition);
            elem.set_offset(Offset::Offset(*start))
                .map_err(|e| ReplicatorError::kafka("building the claim", e))?;
            let metadata = CommitMetadata {
                target_next: *target_next,
                owner: owner.clone(),
            };
            if metadata != CommitMetadata::default() {
                elem.set_metadata(metadata.encode());
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            if owner.is_some() {
                return Err(ReplicatorError::kafka(
                    "claiming the assigned partitions (naming this owner's transactional id in their source commits)",
                    e,
                ));
            }
            warn!(flow = %self.spec.name, error = %e, "the start offsets of the assigned partitions were not committed; copying goes on");
            return Ok(());
        }
        let mut progress = lock(&self.progress);
        for (source_topic, partition, start, _) in claims {
            self.partition_progress(&mut progress, source_topic, *partition)
                .committed_next = Some(*start);
        }
        Ok(())
    }

    /// The progress of a source partition of this flow.
    fn partition_progress<'p>(
        &self,
        progress: &'p mut FlowProgress,
        source_topic: &str,
        partition: i32,
    ) -> &'p mut PartitionProgress {
        let target_topic = self
            .spec
            .naming
            .target_topic(&self.spec.source.name, source_topic);
        progress
            .topic(&target_topic, source_topic)
            .partition(partition)
    }

    /// Makes sure the target partitions of a new assignment exist and that the producer
    /// and tail scanner know of them: see [`TargetTopics::partitions_to_learn`].
    fn learn_target_partitions(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> Result<(), ReplicatorError> {
        let assigned: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let to_learn = topics.partitions_to_learn(&self.spec, consumer.client(), &assigned)?;
        for (source_topic, target_topic, partitions) in to_learn {
            let target = &self.spec.target.name;
            learn_partitions(self.producer.client(), target, &target_topic, partitions)?;
            if let Some(scanner) = &self.scanner {
                scanner.learn_partitions(&source_topic, &target_topic, partitions)?;
            }
            topics.learned(&target_topic, partitions);
            debug!(flow = %self.spec.name, topic = %target_topic, partitions, "target partitions learned");
        }
        Ok(())
    }

    /// For partitions without a committed offset: the source log start (or end, for
    /// `start_from = "latest"`), in one request per broker. Starting there explicitly lets
    /// the offset map know exactly where it begins, and is faster than leaving it to
    /// `auto.offset.reset`: librdkafka then looks the offset up itself and began fetching
    /// about 100 ms after the assignment, against 5-20 ms with explicit offsets (traced
    /// on the test bed). (Where the first copies land, the target ends, comes from the
    /// target watermarks read for the tail check.)
    fn fresh_starts(
        &self,
        consumer: &BaseConsumer<Self>,
        committed: &TopicPartitionList,
    ) -> Result<HashMap<(String, i32), i64>, ReplicatorError> {
        let wanted = match self.spec.start_from {
            StartFrom::Earliest => Offset::Beginning,
            StartFrom::Latest => Offset::End,
        };
        let new = committed
            .elements()
            .into_iter()
            .filter(|e| !matches!(e.offset(), Offset::Offset(_)));
        source_offsets_at(consumer, new, wanted, "start offsets of new partitions")
    }

    /// The source log start and end of the assigned partitions. A restart resumes after
    /// the last copy: records between it and the log start were deleted before they were
    /// copied, and a log that ends before it went back.
    fn log_bounds(
        &self,
        consumer: &BaseConsumer<Self>,
        committed: &TopicPartitionList,
    ) -> Result<LogBounds, ReplicatorError> {
        let assigned = || committed.elements().into_iter();
        let starts =
            source_offsets_at(consumer, assigned(), Offset::Beginning, "log start offsets")?;
        let mut ends = source_offsets_at(consumer, assigned(), Offset::End, "log end offsets")?;
        Ok(starts
            .into_iter()
            .filter_map(|(key, start)| {
                let end = ends.remove(&key)?;
                Some((key, (start, end)))
            })
            .collect())
    }

    /// A source partition that ends below `copied_to`, the offset after the last record
    /// copied, went back: see [`ReplicatorError::SourceOffsetsWentBack`]. Reported as a
    /// loss of the offsets the source will reuse, and the flow stops whatever
    /// `on_data_loss` says.
    fn check_offsets_did_not_go_back(
        &self,
        source_topic: &str,
        partition: i32,
        copied_to: i64,
        end: i64,
    ) -> Result<(), ReplicatorError> {
        if end >= copied_to {
            return Ok(());
        }
        self.lost(
            (source_topic, partition, "source", end, copied_to),
            "source_offsets_went_back",
            StopOnLoss::Always(ReplicatorError::SourceOffsetsWentBack {
                topic: source_topic.to_string(),
                partition,
                end,
                copied_to,
            }),
        )
    }

    /// Records below `log_start` that are not copied are gone: see [`Self::lost`]. With
    /// `on_data_loss = "continue"`, the copy goes on from the log start.
    fn start_after_loss(
        &self,
        source_topic: &str,
        partition: i32,
        start: i64,
        log_start: i64,
    ) -> Result<i64, ReplicatorError> {
        if log_start <= start {
            return Ok(start);
        }
        self.lost(
            (source_topic, partition, "source", start, log_start),
            "deleted_before_copy",
            ReplicatorError::SourceDataLoss {
                topic: source_topic.to_string(),
                partition,
                from: start,
                to: log_start,
            },
        )?;
        Ok(log_start)
    }

    /// A target partition that ends before the copies it acknowledged lost them: see
    /// [`Self::lost`]. With `on_data_loss = "continue"`, the copy goes on after them.
    fn check_target_kept_its_copies(
        &self,
        (source_topic, target_topic, partition): (&str, &str, i32),
        target_end: i64,
        acked: i64,
    ) -> Result<(), ReplicatorError> {
        if target_end >= acked {
            return Ok(());
        }
        self.lost(
            (source_topic, partition, "target", target_end, acked),
            "lost_on_target",
            ReplicatorError::TargetDataLoss {
                cluster: self.spec.target.name.clone(),
                target_topic: target_topic.to_string(),
                partition,
                end: target_end,
                acked,
            },
        )
    }

    /// Records lost to the copy, `[from, to)` on one side: an ERROR, a count in
    /// `strait_records_lost_total`, an entry in `/status`; then `stop` is the flow's
    /// error (`on_data_loss = "stop"`, or a loss the copy cannot go on after), or the flow
    /// goes on.
    fn lost(
        &self,
        (source_topic, partition, on, from, to): (&str, i32, &'static str, i64, i64),
        reason: &'static str,
        stop: impl Into<StopOnLoss>,
    ) -> Result<(), ReplicatorError> {
        let (stop, stops) = match stop.into() {
            StopOnLoss::Always(error) => (error, true),
            StopOnLoss::IfPolicySays(error) => (error, self.spec.on_data_loss == OnDataLoss::Stop),
        };
        error!(
            flow = %self.spec.name, topic = source_topic, partition, on, from, to,
            lost = to - from, reason, on_data_loss = if stops { "stop" } else { "continue" },
            "records lost to the copy: offsets [{from}, {to}) on the {on} ({reason}); {}",
            if stops { "the flow stops" } else { "the copy goes on" }
        );
        metrics::counter!(telemetry::RECORDS_LOST_TOTAL,
            "flow" => self.spec.name.clone(), "topic" => source_topic.to_string(),
            "reason" => reason)
        .increment((to - from) as u64);
        self.status.record_loss(DataLoss {
            source_topic: source_topic.to_string(),
            partition,
            on,
            from,
            to,
            reason,
            action: if stops { "stopped" } else { "continued" },
            found_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        });
        if stops {
            return Err(stop);
        }
        Ok(())
    }

    /// Waits for in-flight records and commits what the target acknowledged, so the next
    /// owner of these partitions starts exactly after them.
    ///
    /// Fenced flows commit the open transaction instead, and release the partitions: their
    /// source commits name no owner, so the next owner has no one to fence. A transaction
    /// not committed within the drain timeout releases nothing: the next owner fences
    /// this pipeline, which aborts its copies, and the pipeline restarts.
    fn drain_and_commit(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        match &self.transactional_id {
            Some(_) => {
                if let Err(e) = commit_transaction(
                    &self.producer,
                    &self.progress,
                    &self.spec.target.name,
                    self.spec.tuning.drain_timeout,
                ) {
                    warn!(flow = %self.spec.name, error = %e, "copies not committed before hand-over: the next owner fences this pipeline, which aborts them");
                    lock(&self.progress).fail(e);
                }
            }
            None => {
                if let Err(e) = self.producer.flush(self.spec.tuning.drain_timeout) {
                    warn!(flow = %self.spec.name, error = %e, "in-flight records not drained before hand-over");
                }
            }
        }
        let revoked: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        if let Err(e) = advance_and_persist(
            &self.progress,
            consumer,
            &self.producer,
            self.map.as_deref(),
            Some(&revoked),
        ) {
            warn!(flow = %self.spec.name, error = %e, "offset map not persisted on hand-over; the next owner rebuilds it");
        }
        let claim = match self.transactional_id {
            Some(_) => Claim::Release,
            None => Claim::Unfenced,
        };
        if let Err(e) = commit(
            &self.spec,
            &self.progress,
            consumer,
            CommitMode::Sync,
            Some(&revoked),
            claim,
        ) {
            warn!(flow = %self.spec.name, error = %e, "commit on hand-over failed");
        }
        let mut progress = lock(&self.progress);
        for (source_topic, partition) in &revoked {
            self.partition_progress(&mut progress, source_topic, *partition)
                .assigned = false;
            debug!(flow = %self.spec.name, topic = %source_topic, partition, "partition revoked");
        }
        info!(flow = %self.spec.name, partitions = revoked.len(), topics = %topics_of(&revoked), "partitions revoked");
    }
}

/// A scoped thread's result; its panic, if any, carries on in the caller.
fn join_scoped<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Serves every delivery report that has arrived. rdkafka's `poll(Duration::ZERO)`
/// serves at most one event, which is one produce batch's reports; polled once per tick,
/// acknowledgements trailed the target by seconds on a backlog (and the unserved reports
/// count against the producer queue's bound).
fn serve_delivery_reports(producer: &BaseProducer<DeliveryContext>) {
    producer
        .context()
        .sample_latency
        .store(true, Ordering::Relaxed);
    // Bounded, so that a steady stream of reports cannot starve the consumer.
    for _ in 0..10_000 {
        let before = producer.in_flight_count();
        producer.poll(Duration::ZERO);
        if before == 0 || producer.in_flight_count() >= before {
            return;
        }
    }
}

/// Fenced flows: commits the open transaction, which first waits for every copy in it to
/// be acknowledged, and begins the next. Afterwards everything acknowledged is committed,
/// so it may count as progress. A failure leaves the pipeline run committing nothing more
/// ([`FlowProgress::transaction_failed`]).
fn commit_transaction(
    producer: &BaseProducer<DeliveryContext>,
    progress: &SharedProgress,
    cluster: &str,
    timeout: Duration,
) -> Result<(), ReplicatorError> {
    let began = Instant::now();
    let committed = producer
        .commit_transaction(timeout)
        .and_then(|()| producer.begin_transaction());
    metrics::histogram!(telemetry::TRANSACTION_COMMIT_SECONDS, "flow" => producer.context().flow.clone())
        .record(began.elapsed().as_secs_f64());
    if let Err(e) = committed {
        lock(progress).transaction_failed = true;
        return Err(fatal_cause(producer, cluster)
            .unwrap_or_else(|| ReplicatorError::kafka("committing a transaction of copies", e)));
    }
    let mut progress = lock(progress);
    for topic in &mut progress.topics {
        for p in &mut topic.partitions {
            // The commit marker took the offset after the transaction's last copy.
            if std::mem::take(&mut p.in_transaction) {
                p.target_next_expected = p.target_next_expected.map(|e| e + 1);
            }
        }
    }
    Ok(())
}

/// Moves each assigned partition's handled position forward and hands the offset map's
/// changes to the map writer (when offset sync is on), for every partition or only those
/// in `only`.
///
/// The consumer's position counts as handled only when nothing is in flight: then every
/// record below it was copied and acknowledged, or was never delivered (transaction
/// markers, aborted records). Otherwise the acknowledged prefix is all that is known.
fn advance_and_persist<C: ConsumerContext>(
    progress: &SharedProgress,
    consumer: &BaseConsumer<C>,
    producer: &BaseProducer<DeliveryContext>,
    map: Option<&PersistedMap>,
    only: Option<&[(String, i32)]>,
) -> Result<(), ReplicatorError> {
    serve_delivery_reports(producer);
    if lock(progress).transaction_failed {
        return Ok(());
    }
    // Nothing assigned, nothing to advance: and the map, which may still be loading (a
    // first assignment waits for it), is not waited for. A flow stopped before its first
    // assignment otherwise waited on the way out for a load the target never answered.
    let nothing_assigned = lock(progress)
        .topics
        .iter()
        .all(|t| t.partitions.iter().all(|p| !p.assigned));
    if nothing_assigned {
        return Ok(());
    }
    let writer = PersistedMap::writer(map)?;
    let idle = producer.in_flight_count() == 0 && !lock(progress).position_untrusted;
    let positions = if idle { consumer.position().ok() } else { None };
    let mut batches = Vec::new();
    {
        let mut progress = lock(progress);
        for topic in &mut progress.topics {
            for (partition, p) in topic.partitions.iter_mut().enumerate() {
                let partition = partition as i32;
                let wanted = only.is_none_or(|o| {
                    o.iter()
                        .any(|(t, q)| *t == topic.source_topic && *q == partition)
                });
                if !wanted || !p.assigned {
                    continue;
                }
                let position = positions
                    .as_ref()
                    .filter(|_| !p.broken)
                    .and_then(|tpl| tpl.find_partition(&topic.source_topic, partition))
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
                let handled = p.acked_next.max(p.handled_next).max(position);
                p.handled_next = handled;
                if let Some(h) = handled {
                    p.offsets.advance_through(h);
                }
                // Taken even without a writer, so the in-memory map stays small.
                let updates = p.offsets.take_updates();
                if writer.is_some() && !updates.is_empty() {
                    batches.push((topic.source_topic.clone(), partition, updates));
                }
            }
        }
    }
    if let Some(writer) = writer {
        for (topic, partition, updates) in batches {
            writer.write(&topic, partition, updates)?;
        }
        writer.check()?;
    }
    Ok(())
}

/// Whom a source commit names as the partition's owner (see the `fence` module).
#[derive(Debug, Clone, Copy)]
enum Claim<'a> {
    /// An unfenced flow: commits name no one.
    Unfenced,
    /// A fenced flow's owner, by its transactional id.
    Owner(&'a str),
    /// A fenced flow hands the partitions over with their copies committed: the commits
    /// name no one, and are made even where the offset did not move.
    Release,
}

impl<'a> Claim<'a> {
    fn of(transactional_id: Option<&'a str>) -> Self {
        transactional_id.map_or(Claim::Unfenced, Claim::Owner)
    }
}

/// Commits the acknowledged prefix of assigned partitions (or only of `only`), with the
/// matching target offset and the `claim` in the commit metadata. Nothing, once a
/// transaction of this pipeline run failed: what was acknowledged may be aborted.
fn commit<C: ConsumerContext>(
    spec: &FlowSpec,
    progress: &SharedProgress,
    consumer: &BaseConsumer<C>,
    mode: CommitMode,
    only: Option<&[(String, i32)]>,
    claim: Claim<'_>,
) -> Result<(), ReplicatorError> {
    let mut tpl = TopicPartitionList::new();
    let mut committed = Vec::new();
    {
        let progress = lock(progress);
        if progress.transaction_failed {
            return Ok(());
        }
        for topic in &progress.topics {
            for (partition, p) in topic.partitions.iter().enumerate() {
                let partition = partition as i32;
                let wanted = only.is_none_or(|o| {
                    o.iter()
                        .any(|(t, q)| *t == topic.source_topic && *q == partition)
                });
                let Some(next) = p.acked_next.max(p.handled_next) else {
                    continue;
                };
                let moved = p.committed_next < Some(next);
                if !wanted || !p.assigned || !(moved || matches!(claim, Claim::Release)) {
                    continue;
                }
                let mut elem = tpl.add_partition(&topic.source_topic, partition);
                elem.set_offset(Offset::Offset(next))
                    .map_err(|e| ReplicatorError::kafka("building commit", e))?;
                let metadata = CommitMetadata {
                    target_next: p.acked_target_next,
                    owner: match claim {
                        Claim::Owner(id) => Some(id.to_string()),
                        Claim::Unfenced | Claim::Release => None,
                    },
                };
                if metadata != CommitMetadata::default() {
                    elem.set_metadata(metadata.encode());
                }
                committed.push((topic.target_topic.clone(), partition, next));
            }
        }
    }
    if tpl.count() == 0 {
        return Ok(());
    }
    consumer.commit(&tpl, mode).map_err(|e| {
        ReplicatorError::kafka(format!("committing offsets for flow '{}'", spec.name), e)
    })?;
    if matches!(mode, CommitMode::Async) {
        // Only sent: `RebalanceContext::commit_callback` notes it once the group
        // coordinator took it. Noted now, a refused one (a rebalance in between) left the
        // last commit before a hand-over thinking there was nothing left to commit.
        return Ok(());
    }
    let mut progress = lock(progress);
    for (target_topic, partition, next) in committed {
        if let Some(topic) = progress.by_target(&target_topic) {
            topic.partition(partition).committed_next = Some(next);
        }
    }
    Ok(())
}

/// The last commit before leaving the group. A stop that lands in a rebalance (another
/// instance joining or leaving) finds the group between generations, and the commit is
/// refused (IllegalGeneration, RebalanceInProgress) until this member has rejoined, which
/// takes polls: seen in 4 of 5 runs of the two-instance test, where the next owner then
/// started from the previous commit (exactly once only thanks to the provenance headers).
/// So it polls until the commit goes through, for at most the drain timeout, with the
/// assignment paused; a record that still arrives (from a partition assigned meanwhile) is
/// dropped uncopied and stays uncommitted.
fn commit_before_leaving<C: ConsumerContext>(
    spec: &FlowSpec,
    progress: &SharedProgress,
    consumer: &BaseConsumer<C>,
    claim: Claim<'_>,
) {
    let deadline = Instant::now() + spec.tuning.drain_timeout;
    let mut waited = false;
    loop {
        let err = match commit(spec, progress, consumer, CommitMode::Sync, None, claim) {
            Ok(()) => {
                if waited {
                    info!(flow = %spec.name, "committed once the rebalance completed");
                }
                return;
            }
            Err(err) => err,
        };
        let rebalancing = matches!(
            &err,
            ReplicatorError::Kafka { source, .. } if matches!(
                source.rdkafka_error_code(),
                Some(RDKafkaErrorCode::IllegalGeneration | RDKafkaErrorCode::RebalanceInProgress)
            )
        );
        if !rebalancing || Instant::now() >= deadline {
            warn!(flow = %spec.name, error = %err, "final commit failed");
            return;
        }
        if !waited {
            info!(flow = %spec.name, error = %err, "the group is rebalancing; committing once it completes");
            waited = true;
        }
        let poll_until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < poll_until {
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.pause(&assignment);
            }
            let _ = consumer.poll(Duration::from_millis(50));
        }
    }
}

/// Runs the data path until cancelled or an error. On the way out it drains the producer
/// and commits, whatever the reason.
pub(crate) fn run(
    spec: &FlowSpec,
    progress: &SharedProgress,
    status: &Arc<FlowStatus>,
    cancel: &CancellationToken,
    on_topics: &mut dyn FnMut(&[String]) -> Result<(), ReplicatorError>,
    prepared: &mut Option<Prepared>,
) -> Result<(), ReplicatorError> {
    {
        let mut p = lock(progress);
        p.failure = None;
        p.failure_is_collateral = false;
        p.position_untrusted = false;
        p.transaction_failed = false;
        // Map updates handed to a writer that then failed are lost; start from what the map
        // topic holds, and let each assignment rebuild the rest from the target.
        for topic in &mut p.topics {
            for partition in &mut topic.partitions {
                partition.offsets = PartitionOffsetMap::default();
            }
        }
    }
    let topics = Arc::new(Mutex::new(TargetTopics::new(spec)?));
    let transactional_id =
        (spec.fence == Fence::Transactions).then(|| transactional_id(&spec.name));
    let producer = Arc::new(producer(
        spec,
        progress,
        status,
        transactional_id.as_deref(),
    )?);
    if transactional_id.is_some() {
        let context = || format!("starting transactions on '{}'", spec.target.name);
        producer
            .init_transactions(COMMIT_TIMEOUT)
            .map_err(|e| ReplicatorError::kafka(context(), e))?;
        producer
            .begin_transaction()
            .map_err(|e| ReplicatorError::kafka(context(), e))?;
    }
    let scanner = if spec.provenance_header {
        Some(TailScanner::new(&spec.target, Some(&spec.source))?)
    } else {
        None
    };
    // On a flow's first start, its own topics are being prepared (the heartbeat topic,
    // and its copy with the offset map's topic in one request): loading the map before
    // then would create its topic in a request of its own, which the target's controller
    // answers only after the other, on the way to the first record. So the map's loading
    // waits for the target side, and discovery for the source side only.
    let (heartbeat_exists, own_topics_on_target) = match prepared.take() {
        Some(p) => (
            Some(block_on(p.on_source).unwrap_or(false)),
            Some(p.on_target),
        ),
        None => (None, None),
    };
    let map = spec.offset_map_topic.as_deref().map(|topic| {
        Arc::new(PersistedMap::start(
            spec,
            topic,
            own_topics_on_target.clone(),
        ))
    });
    let context = RebalanceContext {
        spec: spec.clone(),
        status: status.clone(),
        progress: progress.clone(),
        producer: producer.clone(),
        scanner,
        topics: topics.clone(),
        map: map.clone(),
        transactional_id: transactional_id.clone(),
        assignment_changes: AtomicU64::new(0),
        fetch: OnceLock::new(),
    };
    let consumer: Arc<BaseConsumer<RebalanceContext>> = Arc::new(
        consumer_config(spec)
            .create_with_context(context)
            .map_err(|e| {
                ReplicatorError::kafka(format!("creating consumer for '{}'", spec.source.name), e)
            })?,
    );
    // Declared after the consumer, so dropped before it on every way out.
    let fetch = Arc::new(FetchQueue::new(&consumer).ok_or_else(|| {
        ReplicatorError::Invariant(format!(
            "the consumer of flow '{}' has no queue of its own",
            spec.name
        ))
    })?);
    let _ = consumer.context().fetch.set(Arc::downgrade(&fetch));

    let mut pipeline = Pipeline {
        spec,
        progress,
        producer: &producer,
        consumer: &consumer,
        routes: Routes::default(),
        header_buf: Vec::with_capacity(64),
        map: map.as_deref(),
        status,
        heartbeat_exists,
        own_topics_on_target,
        topics: &topics,
        fetch: &fetch,
        transaction_budget: TransactionBudget::default(),
    };
    let result = pipeline.forward_until_cancelled(cancel, on_topics);
    if result.is_err() {
        // The consumer's position may be past records taken but not handed to the
        // producer (the rest of a batch, or the record that failed): only what the
        // target acknowledged counts.
        lock(progress).position_untrusted = true;
    }

    // Drain and commit whatever happened, then leave the group (which revokes, drains and
    // commits again for the partitions still held).
    match (&transactional_id, &result) {
        (None, _) => {
            if let Err(e) = producer.flush(spec.tuning.drain_timeout) {
                warn!(flow = %spec.name, error = %e, "not every in-flight record was acknowledged before stopping");
            }
        }
        (Some(_), Ok(())) => {
            if let Err(e) = commit_transaction(
                &producer,
                progress,
                &spec.target.name,
                spec.tuning.drain_timeout,
            ) {
                warn!(flow = %spec.name, error = %e, "copies not committed before stopping: whoever takes these partitions over fences this pipeline, which aborts them");
            }
        }
        (Some(_), Err(_)) => {
            // Records taken but not handed on, or a copy refused: the open transaction
            // may not be whole. Aborted, or left to the next owner's fence.
            lock(progress).transaction_failed = true;
            if let Err(e) =
                producer.abort_transaction(spec.tuning.drain_timeout.min(Duration::from_secs(5)))
            {
                debug!(flow = %spec.name, error = %e, "open transaction not aborted; the next owner fences it");
            }
        }
    }
    serve_delivery_reports(&producer);
    if let Err(e) = advance_and_persist(progress, &consumer, &producer, map.as_deref(), None) {
        warn!(flow = %spec.name, error = %e, "offset map not persisted on the way out; it is rebuilt at the next start");
    }
    commit_before_leaving(
        spec,
        progress,
        &consumer,
        Claim::of(transactional_id.as_deref()),
    );
    // Everything was flushed above, so these figures are final.
    pipeline.publish_status();
    consumer.unsubscribe();
    drop(fetch);
    drop(consumer);
    // A map still loading has had nothing written to it; waiting for its load here held a
    // SIGTERM up by its timeouts (seconds) when the target could not be reached.
    if let Some(writer) = PersistedMap::loaded_writer(map.as_deref()) {
        if let Err(e) = writer.flush(spec.tuning.drain_timeout) {
            warn!(flow = %spec.name, error = %e, "offset map not fully written on the way out; it is rebuilt at the next start");
        }
    }
    result
}

struct Route {
    source_topic: String,
    target_topic: String,
    /// librdkafka's handle of the target topic, which each copy is sent through.
    target: TargetTopic<DeliveryContext>,
    /// Its target topic's id in [`FlowProgress::topics`].
    progress_id: usize,
    /// `<cluster>/<topic>/`: the constant start of this topic's provenance headers.
    header_prefix: Vec<u8>,
    /// Per partition: what this producer has sent there.
    sent: Vec<SentRecords>,
}

/// The routes of the subscribed source topics, found by name or, per record, by
/// librdkafka's topic handle.
#[derive(Default)]
struct Routes {
    list: Vec<Route>,
    by_name: FxHashMap<String, usize>,
    /// The address of librdkafka's handle of a topic → its route: see [`Self::for_record`].
    by_handle: FxHashMap<usize, usize>,
    /// [`RebalanceContext::assignment_changes`] when `by_handle` was last emptied.
    handles_learned_at: u64,
}

impl Routes {
    fn new(list: Vec<Route>) -> Self {
        let by_name = list
            .iter()
            .enumerate()
            .map(|(i, r)| (r.source_topic.clone(), i))
            .collect();
        Self {
            list,
            by_name,
            ..Self::default()
        }
    }

    fn by_name(&mut self, source_topic: &str) -> Option<&mut Route> {
        self.by_name.get(source_topic).map(|&i| &mut self.list[i])
    }

    /// The route of a consumed record. rust-rdkafka names a record's topic only through
    /// `Message::topic`, which measures the name and checks that it is UTF-8: with the
    /// lookup by name, about 300 instructions per record in callgrind, the largest single
    /// cost beyond the ceiling loop's. So the name is read once per topic, and after that
    /// the record's topic handle (`topic_ptr`, compared as a number, never dereferenced)
    /// finds the route. A handle's address names one topic for as long as `by_handle` is
    /// kept: an assigned partition holds a reference on its topic's handle, and a record on
    /// its own; librdkafka hands over records of assigned partitions only; and every change
    /// of the assignment runs the rebalance callback, which bumps
    /// `RebalanceContext::assignment_changes` (the argument here) and so empties
    /// `by_handle` before the next record. A handle freed and its address reused by
    /// another topic's handle therefore never meets an entry learned before. Debug builds
    /// (the tests) check every record's route by name.
    fn for_record(
        &mut self,
        msg: &SourceRecord<'_>,
        assignment_changes: u64,
    ) -> Option<&mut Route> {
        if assignment_changes != self.handles_learned_at {
            self.by_handle.clear();
            self.handles_learned_at = assignment_changes;
        }
        let handle = msg.topic_handle();
        let index = match self.by_handle.get(&handle) {
            Some(&index) => index,
            None => {
                let index = *self.by_name.get(msg.topic())?;
                self.by_handle.insert(handle, index);
                index
            }
        };
        let route = &mut self.list[index];
        debug_assert_eq!(
            route.source_topic,
            msg.topic(),
            "route found by topic handle"
        );
        Some(route)
    }

    /// Each topic's per-partition send state, for the routes that replace these.
    fn into_sent(self) -> FxHashMap<String, Vec<SentRecords>> {
        self.list
            .into_iter()
            .map(|r| (r.source_topic, r.sent))
            .collect()
    }
}

/// What this producer has sent on one partition: the timestamps of the records in flight,
/// run-length encoded (one entry per change of timestamp, so a backlog written in the same
/// millisecond costs one entry), for lag in seconds; and where the last provenance header
/// went.
#[derive(Default)]
struct SentRecords {
    /// (first source offset, timestamp ms) of each run, oldest first.
    runs: VecDeque<(i64, i64)>,
    last_sent: Option<i64>,
    since_anchor: u32,
    /// Whether the consumer is handing over records below `last_sent` again (warned once
    /// per occurrence).
    rewound: bool,
}

impl SentRecords {
    /// Notes the record at `offset` as handed to the producer, and returns whether its
    /// copy is an anchor (carries the provenance header): the first copy this producer
    /// sends to the partition, the first after a gap in the source offsets (compaction,
    /// transaction markers, a seek), and every `interval`th copy, so that a tail scan
    /// never reads more than `interval` copies past the last one it can name. The copies
    /// in between are identified by position, which the tail scanner checks by content.
    fn send(&mut self, offset: i64, timestamp: Option<i64>, interval: u32) -> bool {
        if let Some(ts) = timestamp {
            if self.runs.back().is_none_or(|&(_, t)| t != ts) {
                self.runs.push_back((offset, ts));
            }
        }
        let contiguous = self.last_sent == Some(offset - 1);
        self.last_sent = Some(offset);
        if contiguous && self.since_anchor + 1 < interval {
            self.since_anchor += 1;
            false
        } else {
            self.since_anchor = 0;
            true
        }
    }

    /// The timestamp of the record at `offset` if it is in flight, forgetting the runs
    /// entirely below it.
    fn in_flight_at(&mut self, offset: i64) -> Option<i64> {
        while self.runs.len() > 1 && self.runs[1].0 <= offset {
            self.runs.pop_front();
        }
        match (self.runs.front(), self.last_sent) {
            (Some(&(first, ts)), Some(last)) if first <= offset && offset <= last => Some(ts),
            _ => None,
        }
    }
}

struct Pipeline<'a> {
    spec: &'a FlowSpec,
    progress: &'a SharedProgress,
    producer: &'a Arc<BaseProducer<DeliveryContext>>,
    consumer: &'a BaseConsumer<RebalanceContext>,
    /// Where each subscribed source topic's records go.
    routes: Routes,
    /// Reused buffer for the provenance header value.
    header_buf: Vec<u8>,
    map: Option<&'a PersistedMap>,
    status: &'a FlowStatus,
    /// On the flow's first pipeline run in this process, whether the heartbeat topic
    /// (just prepared) exists: the first discovery then waits until the source's
    /// metadata shows it.
    heartbeat_exists: Option<bool>,
    /// On the flow's first pipeline run in this process: fires once its own topics on the
    /// target were prepared (see [`Prepared::on_target`]).
    own_topics_on_target: Option<OwnTopicsOnTarget>,
    topics: &'a Mutex<TargetTopics>,
    fetch: &'a FetchQueue<RebalanceContext>,
    /// Fenced flows: when to commit a transaction before its interval is up.
    transaction_budget: TransactionBudget,
}

impl Pipeline<'_> {
    /// Publishes counters, lag gauges and the `/status` snapshot from the progress state.
    /// Runs once per commit interval, never per record.
    fn publish_status(&mut self) {
        let spec = self.spec;
        let now = now_ms();
        let progress = lock(self.progress);
        let mut topics = Vec::with_capacity(progress.topics.len());
        for topic in &progress.topics {
            let mut sent = self
                .routes
                .by_name(&topic.source_topic)
                .map(|r| &mut r.sent);
            let mut status = TopicStatus {
                source_topic: topic.source_topic.clone(),
                target_topic: topic.target_topic.clone(),
                records_replicated: 0,
                bytes_replicated: 0,
                lag_records: 0,
                lag_seconds: None,
                partitions: Vec::with_capacity(topic.partitions.len()),
            };
            for (partition, p) in topic.partitions.iter().enumerate() {
                status.records_replicated += p.records;
                status.bytes_replicated += p.bytes;
                let replicated = p.acked_next.max(p.handled_next);
                let times = sent.as_mut().and_then(|s| s.get_mut(partition));
                let (lag, lag_seconds) = match (p.assigned, p.source_end, replicated) {
                    (true, Some(end), Some(replicated)) if end <= replicated => {
                        (Some(0), Some(0.0))
                    }
                    (true, Some(end), Some(replicated)) => {
                        // The oldest record not yet on the target is in flight, or else
                        // not fetched yet: then the last acknowledged record's age is an
                        // upper bound.
                        let oldest = times
                            .and_then(|t| t.in_flight_at(replicated))
                            .or(p.acked_timestamp);
                        let seconds = oldest.map(|ts| (now - ts).max(0) as f64 / 1000.0);
                        (Some(end - replicated), seconds)
                    }
                    _ => (None, None),
                };
                if let Some(lag) = lag {
                    status.lag_records += lag;
                }
                if let Some(s) = lag_seconds {
                    status.lag_seconds = Some(status.lag_seconds.map_or(s, |m: f64| m.max(s)));
                }
                if spec.partition_metrics && p.assigned {
                    let labels = [
                        ("flow", spec.name.clone()),
                        ("topic", topic.source_topic.clone()),
                        ("partition", partition.to_string()),
                    ];
                    if let Some(lag) = lag {
                        metrics::gauge!(telemetry::REPLICATION_LAG_PARTITION_RECORDS, &labels)
                            .set(lag as f64);
                    }
                    if let Some(s) = lag_seconds {
                        metrics::gauge!(telemetry::REPLICATION_LAG_PARTITION_SECONDS, &labels)
                            .set(s);
                    }
                }
                status.partitions.push(PartitionStatus {
                    partition: partition as i32,
                    assigned: p.assigned,
                    // The end comes from statistics every 2 s; copies can be ahead of it.
                    source_end: match (p.source_end, replicated) {
                        (Some(end), Some(r)) => Some(end.max(r)),
                        (end, _) => end,
                    },
                    replicated_next: replicated,
                    target_next: p.acked_target_next,
                    committed_next: p.committed_next,
                    lag_records: lag,
                    lag_seconds,
                });
            }
            let labels = [
                ("flow", spec.name.clone()),
                ("topic", topic.source_topic.clone()),
            ];
            metrics::counter!(telemetry::RECORDS_REPLICATED_TOTAL, &labels)
                .absolute(status.records_replicated);
            metrics::counter!(telemetry::BYTES_REPLICATED_TOTAL, &labels)
                .absolute(status.bytes_replicated);
            metrics::gauge!(telemetry::REPLICATION_LAG_RECORDS, &labels)
                .set(status.lag_records as f64);
            if let Some(s) = status.lag_seconds {
                metrics::gauge!(telemetry::REPLICATION_LAG_SECONDS, &labels).set(s);
            }
            topics.push(status);
        }
        drop(progress);
        self.status.set_topics(topics);
    }

    /// A fenced flow's transaction holds as many copies as it should: see
    /// [`TransactionBudget`].
    fn transaction_is_full(&self) -> bool {
        self.producer.in_flight_count() as u64 > self.transaction_budget.limit()
    }

    fn forward_until_cancelled(
        &mut self,
        cancel: &CancellationToken,
        on_topics: &mut dyn FnMut(&[String]) -> Result<(), ReplicatorError>,
    ) -> Result<(), ReplicatorError> {
        let mut subscribed = std::collections::BTreeMap::new();
        self.refresh_topics(&mut subscribed, on_topics)?;
        if subscribed.is_empty() {
            // No assignment is coming (see FlowStatus::wait_started).
            self.status.mark_started();
        }
        let mut next_refresh = Instant::now() + self.spec.refresh_interval;
        let mut next_commit = Instant::now() + self.spec.tuning.commit_interval;

        loop {
            // The consumer's own queue: rebalances (whose callbacks run here, so never in
            // the middle of a batch), commits and errors; and the records of a partition
            // that could not be routed to the fetch queue.
            let mut served_records = false;
            match self.consumer.poll(Duration::ZERO) {
                None => {}
                Some(Err(e)) => self.on_consumer_error(e, None)?,
                Some(Ok(msg)) => {
                    served_records = true;
                    if !self.forward(&SourceRecord::of(&msg), cancel)? {
                        lock(self.progress).position_untrusted = true;
                        return Ok(());
                    }
                }
            }
            // Waits (for a record or a consumer event) only when there is nothing to do.
            let wait = (!served_records).then_some(Duration::from_millis(100));
            let fetched = self.fetch.take(wait);
            if !self.forward_batch(&fetched, cancel)? {
                lock(self.progress).position_untrusted = true;
                return Ok(());
            }
            drop(fetched);
            // Delivery reports, failure checks, cancellation and timers are served once a
            // batch (up to 256 records): often enough to keep them flowing, without a poll,
            // a lock and a clock read per record. (`is_cancelled` takes a mutex.)
            if cancel.is_cancelled() {
                return Ok(());
            }
            serve_delivery_reports(self.producer);
            let failure = lock(self.progress).take_failure(self.producer, &self.spec.target.name);
            if let Some(err) = failure {
                return Err(err);
            }
            let now = Instant::now();
            let transactional_id = self.consumer.context().transactional_id.as_deref();
            if now >= next_commit || (transactional_id.is_some() && self.transaction_is_full()) {
                if transactional_id.is_some() {
                    let (in_flight, began) = (self.producer.in_flight_count(), Instant::now());
                    commit_transaction(
                        self.producer,
                        self.progress,
                        &self.spec.target.name,
                        MAX_BLOCKED,
                    )?;
                    self.transaction_budget
                        .committed(in_flight.max(0) as u64, began.elapsed());
                }
                advance_and_persist(self.progress, self.consumer, self.producer, self.map, None)?;
                commit(
                    self.spec,
                    self.progress,
                    self.consumer,
                    CommitMode::Async,
                    None,
                    Claim::of(transactional_id),
                )?;
                self.publish_status();
                next_commit = now + self.spec.tuning.commit_interval;
            }
            if now >= next_refresh {
                debug!(flow = %self.spec.name, "refreshing topics");
                self.refresh_topics(&mut subscribed, on_topics)?;
                next_refresh = Instant::now() + self.spec.refresh_interval;
            }
        }
    }

    /// Discovers source topics, subscribes to them, and creates or grows their targets.
    /// Subscribing first lets the group join run while the targets are created; a record
    /// still never arrives for a target partition that does not exist, since partitions
    /// are assigned (and fetched) only in the rebalance callback, which runs in this
    /// thread's next poll. (Partitions added to a subscribed topic can be assigned before
    /// a refresh sees them; the callback grows their targets itself.)
    fn refresh_topics(
        &mut self,
        subscribed: &mut std::collections::BTreeMap<String, i32>,
        on_topics: &mut dyn FnMut(&[String]) -> Result<(), ReplicatorError>,
    ) -> Result<(), ReplicatorError> {
        let heartbeat_exists = self.heartbeat_exists.take().unwrap_or(false);
        let mut wanted = discover(self.consumer.client(), self.spec)?;
        let selected_heartbeat = self
            .spec
            .heartbeat
            .as_ref()
            .filter(|h| heartbeat_exists && self.spec.selector.selects(&h.topic));
        if let Some(heartbeat) = selected_heartbeat {
            // A topic created a moment ago can be missing from a broker's metadata for a
            // little while (a KRaft broker applies the controller's record after the
            // creation is answered). Missed here, it would be added at the next refresh:
            // a rebalance in the middle of copying, seen as a 1 s stall under load.
            let deadline = Instant::now() + HEARTBEAT_VISIBLE_WITHIN;
            while !wanted.contains_key(&heartbeat.topic) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                wanted = discover(self.consumer.client(), self.spec)?;
            }
        }
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if wanted == *subscribed {
            let began = Instant::now();
            topics.sync_configs(self.spec, &wanted);
            debug!(flow = %self.spec.name, elapsed = ?began.elapsed(), "topic configs compared");
            return Ok(());
        }
        let names: Vec<String> = wanted.keys().cloned().collect();
        on_topics(&names)?;
        if wanted.keys().ne(subscribed.keys()) {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            if refs.is_empty() {
                self.consumer.unsubscribe();
            } else {
                self.consumer
                    .subscribe(&refs)
                    .map_err(|e| ReplicatorError::kafka("subscribing to source topics", e))?;
            }
        }
        match self.own_topics_on_target.take() {
            // A first start: the heartbeat thread is creating the heartbeat copy. Synced
            // here too, it would be created a second time, in a request that the target's
            // controller answers only after the one preparing it. So the other targets are
            // synced meanwhile (the target's metadata took 8-22 ms at a first start on the
            // test bed, as long as the creation itself), and the copy only if that
            // preparation failed. Partitions are assigned only after both.
            Some(prepared) => {
                let mut others = wanted.clone();
                if let Some(heartbeat) = &self.spec.heartbeat {
                    others.remove(&heartbeat.topic);
                }
                topics.sync(self.spec, &others)?;
                let began = Instant::now();
                let created = block_on(prepared).unwrap_or(false);
                debug!(flow = %self.spec.name, waited = ?began.elapsed(), created, "own target topics prepared");
                if !created && others.len() != wanted.len() {
                    topics.sync(self.spec, &wanted)?;
                }
            }
            None => topics.sync(self.spec, &wanted)?,
        }
        topics.note_synced(self.spec, &wanted);
        drop(topics);
        for (topic, partitions) in &wanted {
            match subscribed.get(topic) {
                None => info!(flow = %self.spec.name, topic, partitions, "replicating topic"),
                Some(old) if old != partitions => {
                    info!(flow = %self.spec.name, topic, from = old, to = partitions, "source partitions grew");
                }
                Some(_) => {}
            }
        }
        let mut old_sent = std::mem::take(&mut self.routes).into_sent();
        {
            let mut progress = lock(self.progress);
            let mut routes = Vec::with_capacity(wanted.len());
            for t in wanted.keys() {
                let target_topic = self.spec.naming.target_topic(&self.spec.source.name, t);
                let target = TargetTopic::new(self.producer, &target_topic).map_err(|code| {
                    ReplicatorError::kafka(
                        format!("preparing to produce to {target_topic}"),
                        KafkaError::MessageProduction(code),
                    )
                })?;
                routes.push(Route {
                    progress_id: progress.topic_id(&target_topic, t),
                    source_topic: t.clone(),
                    target_topic,
                    target,
                    header_prefix: Provenance::prefix(&self.spec.source.name, t),
                    sent: old_sent.remove(t).unwrap_or_default(),
                });
            }
            self.routes = Routes::new(routes);
        }
        *subscribed = wanted;
        Ok(())
    }

    /// `at`: the topic, partition and offset the error is about, when librdkafka says.
    fn on_consumer_error(
        &self,
        err: KafkaError,
        at: Option<(&str, i32, i64)>,
    ) -> Result<(), ReplicatorError> {
        // A failure a callback recorded comes first: the assignment that found a loss
        // leaves the partition paused without a position, and the error that follows from
        // that (no offset to fetch from) would otherwise restart the flow in its place.
        if let Some(failure) =
            lock(self.progress).take_failure(self.producer, &self.spec.target.name)
        {
            return Err(failure);
        }
        let code = err.rdkafka_error_code();
        metrics::counter!(
            telemetry::CONSUME_ERRORS_TOTAL,
            "flow" => self.spec.name.clone(),
            "code" => code.map_or_else(|| "unknown".to_string(), |c| format!("{c:?}"))
        )
        .increment(1);
        match code {
            // Expelled from the group or lost a fenced assignment: rejoin from scratch.
            Some(RDKafkaErrorCode::PollExceeded) | Some(RDKafkaErrorCode::Fatal) => {
                Err(ReplicatorError::kafka("source consumer", err))
            }
            Some(RDKafkaErrorCode::TopicAuthorizationFailed)
            | Some(RDKafkaErrorCode::GroupAuthorizationFailed) => {
                Err(ReplicatorError::kafka("source consumer", err))
            }
            Some(RDKafkaErrorCode::AutoOffsetReset) => match at {
                Some(at) => self.on_position_out_of_range(at),
                // Not knowing where: restart; the assignment compares each partition's
                // position with the source's log start.
                None => Err(ReplicatorError::kafka("source consumer", err)),
            },
            // Everything else (broker down, leader moving) is retried inside librdkafka.
            _ => {
                debug!(flow = %self.spec.name, error = %err, "transient consumer error");
                Ok(())
            }
        }
    }

    /// The consumer's position in a source partition is no longer in the log (the
    /// consumer resets nothing itself: `auto.offset.reset = error`). The pipeline
    /// restarts: the next assignment resumes after the last copy on the target, and
    /// reports records deleted before they were copied, if the log start moved past it
    /// (see `RebalanceContext::start_after_loss`), counted once, from where the copy
    /// really stopped. (librdkafka allows no seek in a partition in this state.)
    fn on_position_out_of_range(
        &self,
        (topic, partition, position): (&str, i32, i64),
    ) -> Result<(), ReplicatorError> {
        let log = match self
            .consumer
            .fetch_watermarks(topic, partition, COMMIT_TIMEOUT)
        {
            Ok((start, end)) => format!("the log holds [{start}, {end})"),
            Err(e) => format!("the log's offsets not readable: {e}"),
        };
        Err(ReplicatorError::kafka(
            format!(
                "{topic}[{partition}] on the source: position {position} is out of range \
                 ({log}); resuming after the last copy on the target"
            ),
            KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange),
        ))
    }

    /// Hands a batch of records to the producer, in order. Returns `false` if cancelled
    /// while waiting for room in the producer queue; the rest of the batch then stays
    /// uncommitted.
    fn forward_batch(
        &mut self,
        fetched: &Fetched<'_>,
        cancel: &CancellationToken,
    ) -> Result<bool, ReplicatorError> {
        for record in fetched.records() {
            match record {
                Ok(record) => {
                    if !self.forward(&record, cancel)? {
                        return Ok(false);
                    }
                }
                Err(failed) => {
                    let at = (failed.topic(), failed.partition(), failed.offset());
                    if let Some(e) = failed.error() {
                        self.on_consumer_error(e, Some(at))?;
                    }
                }
            }
        }
        Ok(true)
    }

    /// Hands one record to the producer. Returns `false` if cancelled while waiting for
    /// room in the producer queue; the record then stays uncommitted.
    fn forward(
        &mut self,
        msg: &SourceRecord<'_>,
        cancel: &CancellationToken,
    ) -> Result<bool, ReplicatorError> {
        let assignment_changes = self
            .consumer
            .context()
            .assignment_changes
            .load(Ordering::Relaxed);
        let Some(route) = self.routes.for_record(msg, assignment_changes) else {
            return Err(ReplicatorError::Invariant(format!(
                "received a record from {}, which this flow does not replicate",
                msg.topic()
            )));
        };
        let source_offset = msg.offset();
        let timestamp = msg.timestamp();
        let idx = msg.partition() as usize;
        if route.sent.len() <= idx {
            route.sent.resize_with(idx + 1, SentRecords::default);
        }
        let sent = &mut route.sent[idx];
        if sent.last_sent.is_some_and(|last| source_offset <= last) {
            // The consumer handed over a record this pipeline already sent. librdkafka
            // does that at a rebalance: it pauses every assigned partition, and the pause
            // (on librdkafka's thread) saves the application's position to resume from,
            // which can race with this thread taking a batch off the queue and only then
            // moving that position past it (rd_kafka_q_serve_rkmessages), so the batch's
            // records of that partition are fetched again after the resume. Seen (when
            // records were taken one at a time) as a one-record rewind a few ms after a
            // rebalance. The producer is idempotent and never times a record out, so the
            // first copy arrives or the flow stops; a second would be a duplicate.
            if !sent.rewound {
                sent.rewound = true;
                let (flow, topic, partition) = (&self.spec.name, msg.topic(), msg.partition());
                let within_a_batch = sent
                    .last_sent
                    .is_some_and(|last| last - source_offset < BATCH_SIZE as i64);
                if within_a_batch {
                    // The race above: expected now and then, and harmless.
                    info!(
                        flow = %flow, topic, partition, offset = source_offset,
                        last_sent = ?sent.last_sent,
                        "the source consumer handed over records of the last batch again (a \
                         librdkafka race at rebalances); skipping them"
                    );
                } else {
                    warn!(
                        flow = %flow, topic, partition, offset = source_offset,
                        last_sent = ?sent.last_sent,
                        "the source consumer went back to records already sent; skipping them"
                    );
                }
            }
            metrics::counter!(telemetry::RECORDS_SKIPPED_AS_RESENT_TOTAL, "flow" => self.spec.name.clone())
                .increment(1);
            return Ok(true);
        }
        sent.rewound = false;
        let anchor = sent.send(source_offset, timestamp, self.spec.provenance_interval);
        let stamp = self.spec.provenance_header && anchor;
        let route = &*route;
        let target_topic = &route.target_topic;
        let source_headers = msg.headers();
        let count = source_headers.count() + usize::from(stamp);
        // A header list costs allocations in librdkafka; build one only when needed.
        let mut headers = None;
        if count > 0 {
            let list = headers.insert(OutgoingHeaders::with_capacity(count));
            for header in source_headers.iter() {
                // Never copied back: the flow stops on it, and nothing from it on is
                // committed.
                if let Some(origin) = copied_from(header, &self.spec.target.name) {
                    return Err(ReplicatorError::CopyLoop {
                        source_topic: msg.topic().to_string(),
                        partition: msg.partition(),
                        offset: source_offset,
                        target: self.spec.target.name.clone(),
                        origin_topic: origin.topic.to_string(),
                        origin_partition: origin.partition,
                        origin_offset: origin.offset,
                    });
                }
                list.add(header.0, header.1);
            }
            if stamp {
                Provenance::encode_with_prefix(
                    &route.header_prefix,
                    msg.partition(),
                    source_offset,
                    &mut self.header_buf,
                );
                list.add(PROVENANCE_HEADER, Some(self.header_buf.as_slice()));
            }
        }
        let opaque = DeliveryOpaque::encode(route.progress_id, source_offset);
        let (key, payload) = (msg.key(), msg.payload());

        // Read the clock only once the queue is full: a clock read per record was a
        // visible share of this thread's time in a profile.
        let mut blocked_since: Option<Instant> = None;
        loop {
            let sent = route.target.send(
                msg.partition(),
                key,
                payload,
                timestamp,
                &mut headers,
                opaque,
            );
            match sent.map_err(KafkaError::MessageProduction) {
                Ok(()) => return Ok(true),
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    // Backpressure: the producer queue is the only buffer, and it is bounded.
                    self.producer.poll(Duration::from_millis(20));
                    if cancel.is_cancelled() {
                        return Ok(false);
                    }
                    let failure =
                        lock(self.progress).take_failure(self.producer, &self.spec.target.name);
                    if let Some(err) = failure {
                        return Err(err);
                    }
                    if blocked_since.get_or_insert_with(Instant::now).elapsed() > MAX_BLOCKED {
                        return Err(ReplicatorError::Timeout(
                            MAX_BLOCKED,
                            format!("room in the producer queue for {target_topic}"),
                        ));
                    }
                }
                Err(err) => {
                    // The producer stopped earlier: report why (a delivery report may
                    // already have said), not this record.
                    let target = &self.spec.target.name;
                    if let Some(failure) = lock(self.progress).take_failure(self.producer, target) {
                        return Err(failure);
                    }
                    if let Some(stopped) = fatal_cause(self.producer, target) {
                        return Err(stopped);
                    }
                    let code = err.rdkafka_error_code();
                    return Err(match code {
                        // The target partition does not exist yet: restart, which grows it.
                        Some(RDKafkaErrorCode::UnknownPartition) => ReplicatorError::kafka(
                            format!("producing to {target_topic}[{}]", msg.partition()),
                            err,
                        ),
                        _ => ReplicatorError::RecordRefused {
                            source_topic: msg.topic().to_string(),
                            target_topic: target_topic.clone(),
                            partition: msg.partition(),
                            offset: source_offset,
                            reason: err.to_string(),
                            hint: if is_size_error(&err) {
                                let size =
                                    key.map_or(0, <[u8]>::len) + payload.map_or(0, <[u8]>::len);
                                producer_limit_hint(&self.spec.target, size)
                            } else {
                                String::new()
                            },
                        },
                    });
                }
            }
        }
    }
}

/// (log start, log end) of source partitions.
type LogBounds = HashMap<(String, i32), (i64, i64)>;

/// Whether a loss stops the flow.
enum StopOnLoss {
    /// As `on_data_loss` says.
    IfPolicySays(ReplicatorError),
    /// Whatever it says: the copy cannot go on exactly.
    Always(ReplicatorError),
}

impl From<ReplicatorError> for StopOnLoss {
    fn from(error: ReplicatorError) -> Self {
        Self::IfPolicySays(error)
    }
}

/// Each of `partitions`' offset at `at` (log start or end) on the source, in one request
/// per broker; partitions whose offset could not be read are left out.
fn source_offsets_at<'a, C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: impl Iterator<Item = rdkafka::topic_partition_list::TopicPartitionListElem<'a>>,
    at: Offset,
    what: &str,
) -> Result<HashMap<(String, i32), i64>, ReplicatorError> {
    let mut source = TopicPartitionList::new();
    for elem in partitions {
        source
            .add_partition_offset(elem.topic(), elem.partition(), at)
            .map_err(|e| ReplicatorError::kafka("building offset request", e))?;
    }
    if source.count() == 0 {
        return Ok(HashMap::new());
    }
    // A partition whose leader is moving (a broker restarting, an election) answers
    // NotLeaderForPartition for a moment: asked again, not a reason to restart the flow.
    let attempt = || {
        let found = offsets_learning_partitions(consumer, source.clone(), COMMIT_TIMEOUT)?;
        match found.elements().iter().find_map(|e| e.error().err()) {
            Some(e) if passes_on_its_own(&e) => Err(e),
            _ => Ok(found),
        }
    };
    let found = attempt
        .retry(settling_backoff(COMMIT_TIMEOUT))
        .sleep(std::thread::sleep)
        .when(passes_on_its_own)
        .notify(|e, delay| debug!(error = %e, retry_in = ?delay, "reading {what}: asked again"))
        .call()
        .map_err(|e| ReplicatorError::kafka(format!("reading {what}"), e))?;
    Ok(offsets_of(&found))
}

/// A partition's leader moving, or one broker unreachable: errors a read asks again
/// through, for a while, rather than restarting the flow.
fn passes_on_its_own(e: &rdkafka::error::KafkaError) -> bool {
    is_connection_trouble(e) || e.rdkafka_error_code().is_some_and(is_leader_settling)
}

/// What a delivery report carries from [`Pipeline::forward`]: the record's source offset
/// and its target topic's id, packed into the `usize` librdkafka hands back. Finding the
/// topic by id instead of by the report's topic name saves reading that name (rdkafka's
/// `Message::topic` measures and UTF-8-checks it) and hashing it: about 3 % of Strait's
/// instructions per record in a callgrind profile.
///
/// The top bit says whether the id is there. With it, bits 52–62 hold the id and bits
/// 0–51 the offset; an offset of 2^52 or more (a partition would take 140 years at a
/// million records a second to get there) or an id of 2^11 or more is carried alone
/// instead, and its report looks the topic up by name.
struct DeliveryOpaque;

const _: () = assert!(usize::BITS == 64, "DeliveryOpaque packs 64 bits");

impl DeliveryOpaque {
    const WITH_ID: usize = 1 << 63;
    const OFFSET_BITS: u32 = 52;
    const OFFSET_MASK: usize = (1 << Self::OFFSET_BITS) - 1;
    const MAX_ID: usize = (1 << (63 - Self::OFFSET_BITS)) - 1;

    fn encode(topic_id: usize, source_offset: i64) -> usize {
        // A consumed record's offset is never negative, so the top bit is free.
        debug_assert!(source_offset >= 0, "source offset {source_offset}");
        let offset = source_offset as usize;
        if topic_id <= Self::MAX_ID && offset <= Self::OFFSET_MASK {
            Self::WITH_ID | topic_id << Self::OFFSET_BITS | offset
        } else {
            offset
        }
    }

    fn decode(opaque: usize) -> (Option<usize>, i64) {
        if opaque & Self::WITH_ID == 0 {
            (None, opaque as i64)
        } else {
            let id = (opaque & !Self::WITH_ID) >> Self::OFFSET_BITS;
            (Some(id), (opaque & Self::OFFSET_MASK) as i64)
        }
    }
}

fn consumer_config(spec: &FlowSpec) -> rdkafka::ClientConfig {
    let t = &spec.tuning;
    let mut config = rdkafka::ClientConfig::new();
    config
        .set(
            "queued.max.messages.kbytes",
            t.consumer_queue_kbytes.to_string(),
        )
        .set("fetch.wait.max.ms", "100")
        // librdkafka's 1 s default postpones a partition's next fetch that long whenever
        // the local queue was full, which a replicator's always is for a moment: measured
        // 2-3x throughput on a backlog with 10 ms.
        .set("fetch.queue.backoff.ms", "10")
        // Kafka's 45 s default would leave a crashed instance's partitions idle that long.
        .set("session.timeout.ms", "10000")
        // A cooperative rebalance's second round (which hands out the partitions revoked in
        // the first) waits for every member's next heartbeat: with the 3 s default, those
        // partitions sat unowned for about 3 s at every scale-out on the test bed.
        .set("heartbeat.interval.ms", "1000")
        .set("statistics.interval.ms", "2000")
        .set(
            "topic.metadata.refresh.interval.ms",
            spec.refresh_interval.as_millis().max(1000).to_string(),
        );
    apply_cluster(&mut config, &spec.source);
    config
        .set("client.id", format!("strait-{}", spec.name))
        .set("group.id", &spec.group_id)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed")
        .set(
            // Every partition starts at an offset Strait chose; one that falls out of the
            // log is Strait's to handle (`Pipeline::on_position_out_of_range`), not
            // something to skip past in silence.
            "auto.offset.reset",
            "error",
        );
    config
}

fn producer(
    spec: &FlowSpec,
    progress: &SharedProgress,
    status: &Arc<FlowStatus>,
    transactional_id: Option<&str>,
) -> Result<BaseProducer<DeliveryContext>, ReplicatorError> {
    producer_config(spec, transactional_id)
        .create_with_context(DeliveryContext {
            progress: progress.clone(),
            status: status.clone(),
            cluster: spec.target.name.clone(),
            sample_latency: AtomicBool::new(false),
            latency: metrics::histogram!(
                telemetry::REPLICATION_LATENCY_SECONDS, "flow" => spec.name.clone()
            ),
            retries: metrics::counter!(telemetry::PRODUCE_RETRIES_TOTAL, "flow" => spec.name.clone()),
            flow: spec.name.clone(),
        })
        .map_err(|e| {
            ReplicatorError::kafka(format!("creating producer for '{}'", spec.target.name), e)
        })
}

fn producer_config(spec: &FlowSpec, transactional_id: Option<&str>) -> rdkafka::ClientConfig {
    let t = &spec.tuning;
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("linger.ms", t.linger.as_millis().to_string())
        .set("batch.size", t.batch_size.to_string())
        .set("compression.type", &t.compression)
        .set(
            "queue.buffering.max.kbytes",
            t.producer_queue_kbytes.to_string(),
        )
        .set("queue.buffering.max.messages", "1000000")
        // Produce requests reference the queued records instead of holding a second copy
        // of each payload (librdkafka copies records below 64 KiB by default): peak RSS
        // 0.89x on the backlog benchmark, throughput and CPU unchanged.
        .set("message.copy.max.bytes", "0")
        // Connection state for /readyz.
        .set("statistics.interval.ms", "2000");
    apply_cluster(&mut config, &spec.target);
    config
        .set("client.id", format!("strait-{}", spec.name))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Never time a record out: a timed-out record followed by a delivered one would
        // leave a hole that the provenance tail cannot see. Backpressure handles outages.
        .set("message.timeout.ms", "0")
        .set("enable.gapless.guarantee", "true")
        // A producer may have the broker auto-create a topic it writes to (librdkafka's
        // default, and Kafka's `auto.create.topics.enable` default): a deleted target
        // topic would come back empty, with the broker's defaults, and the copy would go
        // on as if nothing had happened. Never: the flow stops and says so instead.
        .set("allow.auto.create.topics", "false");
    if let Some(id) = transactional_id {
        let timeout = TRANSACTION_TIMEOUT.as_millis().to_string();
        // A record may wait no longer than its transaction may stay open. One that times
        // out fails its transaction, which is aborted whole: no hole for a reader of
        // committed records, so no gap-less guarantee needed either.
        config
            .set("transactional.id", id)
            .set("transaction.timeout.ms", &timeout)
            .set("message.timeout.ms", &timeout)
            .set("enable.gapless.guarantee", "false");
    }
    config
}

/// The producer's fatal error, if it has stopped: which request the broker refused, and
/// why.
fn fatal_cause(producer: &BaseProducer<DeliveryContext>, cluster: &str) -> Option<ReplicatorError> {
    let (code, reason) = producer.client().fatal_error()?;
    if matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    ) {
        return Some(ReplicatorError::Fenced {
            cluster: cluster.to_string(),
        });
    }
    Some(ReplicatorError::ProducerStopped {
        cluster: cluster.to_string(),
        code: format!("{code:?}"),
        reason,
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// "a (3), b (1)": the topics among `partitions` and how many of each, for log lines.
fn topics_of(partitions: &[(String, i32)]) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for (topic, _) in partitions {
        *counts.entry(topic.as_str()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(topic, n)| format!("{topic} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::{consumer_config, producer_config, DeliveryOpaque, SentRecords};

    /// The copy's own clients get a cluster's secrets as written. They once took the
    /// cluster's properties from rdkafka's `config_map()`, which puts a placeholder in
    /// place of `sasl.password`, and could not log in to any SASL cluster.
    #[test]
    fn the_copy_clients_keep_the_clusters_secrets() {
        let mut spec = crate::topics::tests::spec("127.0.0.1:1", "127.0.0.1:2");
        for cluster in [&mut spec.source, &mut spec.target] {
            cluster
                .properties
                .insert("sasl.password".into(), format!("{}-secret", cluster.name));
        }
        assert_eq!(
            consumer_config(&spec).get("sasl.password"),
            Some("src-secret")
        );
        assert_eq!(
            producer_config(&spec, None).get("sasl.password"),
            Some("dst-secret")
        );
    }

    #[test]
    fn delivery_opaque_carries_the_topic_id_where_both_fit_and_the_offset_always() {
        let max_offset = (1_i64 << 52) - 1;
        for (id, offset) in [(0, 0), (3, 12_345), (2047, max_offset), (0, max_offset)] {
            assert_eq!(
                DeliveryOpaque::decode(DeliveryOpaque::encode(id, offset)),
                (Some(id), offset)
            );
        }
        // Too large to pack: the offset alone, and the report looks the topic up by name.
        for (id, offset) in [(2048, 7), (5, max_offset + 1), (1, i64::MAX)] {
            assert_eq!(
                DeliveryOpaque::decode(DeliveryOpaque::encode(id, offset)),
                (None, offset)
            );
        }
    }

    fn stamped(offsets: &[i64], interval: u32) -> Vec<i64> {
        let mut sent = SentRecords::default();
        offsets
            .iter()
            .copied()
            .filter(|&o| sent.send(o, Some(1_700_000_000_000), interval))
            .collect()
    }

    #[test]
    fn anchors_at_start_after_gaps_and_every_interval() {
        let run: Vec<i64> = (10..20).collect();
        assert_eq!(stamped(&run, 4), vec![10, 14, 18]);
        // A transaction marker at 13 and a compaction gap 16..18.
        assert_eq!(
            stamped(&[10, 11, 12, 14, 15, 18, 19], 1000),
            vec![10, 14, 18]
        );
        assert_eq!(stamped(&run, 1), run);
    }
}
