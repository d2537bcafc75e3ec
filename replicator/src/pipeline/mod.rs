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
//! 3. When a partition is assigned, it resumes after the newest record whose copy the
//!    target is known to hold: by the group's commit, the offset map's end, or the newest
//!    copy found on the target (`crate::resume`).
//!
//! The files follow the record: `assignment` (where a partition starts), `forward` (each
//! record to the producer), `delivery` (each acknowledgement), `commits` (progress made
//! durable), with `progress` the state they share, `persisted_map` the offset map on the
//! target and `clients` the two clients' configs.
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
    settling_backoff, Epoch, FlowIndex, MapUpdate, MapWriter, PartitionOffsetMap, TopicId,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::copies::FoundCopies;
use crate::fence::{
    fence_previous_owner, owners_to_fence, transactional_id, CommitMetadata, OpenTransaction,
    TransactionPace, TRANSACTION_TIMEOUT,
};
use crate::fetch::{FetchQueue, Fetched, SourceRecord, BATCH_SIZE};
use crate::heartbeat::{OwnTopicsOnTarget, Prepared};
use crate::produce::{OutgoingHeaders, TargetTopic};
use crate::provenance::{copied_from, Provenance, SourcePartition, TailScanner, PROVENANCE_HEADER};
use crate::resume::{resume_point, scan_start, OffsetMap, Witnesses};
use crate::source_ids::{is_other_topic, SourceTopicIds, TOPIC_ID_HEADER};
use crate::status::{DataLoss, FlowStatus, PartitionStatus, TopicStatus};
use crate::telemetry;
use crate::topics::{apply_cluster, client_config, discover, learn_partitions, TargetTopics};
use crate::{
    offsets_of, ClusterSpec, Fence, FlowSpec, OnDataLoss, OnSourceTopicRecreated, ReplicatorError,
    StartFrom,
};

mod assignment;
mod clients;
mod commits;
mod delivery;
mod forward;
mod persisted_map;
mod progress;

use assignment::*;
use clients::*;
use commits::*;
use delivery::*;
use forward::*;
use persisted_map::*;
pub(crate) use progress::*;

/// How long a send may wait on a full producer queue before the pipeline gives up and
/// restarts. Kept below the consumer's `max.poll.interval.ms` so that we leave the group
/// ourselves rather than being expelled while records are still queued.
const MAX_BLOCKED: Duration = Duration::from_secs(120);
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the first discovery waits for a heartbeat topic just created to show in the
/// source's metadata.
const HEARTBEAT_VISIBLE_WITHIN: Duration = Duration::from_secs(2);

/// A scoped thread's result; its panic, if any, carries on in the caller.
fn join_scoped<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
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
        for topic in &mut p.topics {
            for partition in &mut topic.partitions {
                partition.forget_unpersisted_map();
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
        source_ids: SourceTopicIds::default(),
        assignment_changes: AtomicU64::new(0),
        leaving: AtomicBool::new(false),
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
        transaction_pace: TransactionPace::new(spec.tuning.commit_interval),
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
            if let Err(e) = drain(&producer, spec.tuning.drain_timeout) {
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
    consumer.context().leaving.store(true, Ordering::Relaxed);
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
