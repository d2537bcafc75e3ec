//! Delivery reports: each acknowledged copy advances its partition's progress and offset
//! map, a refused one stops the flow with what to do about it, and a copy landing past
//! where it was expected is reported as someone else's records.

use super::*;

pub(super) fn is_size_error(err: &KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge) | Some(RDKafkaErrorCode::InvalidRecord)
    )
}

pub(super) fn size_hint(topic: &str, partition: i32, offset: i64, size: usize) -> String {
    format!(
        "; the largest record in the refused batch is {topic}[{partition}] offset {offset} \
         ({size} bytes of key and value): raise the target topic's max.message.bytes"
    )
}

/// For a record refused before it was sent: the target producer's own limit.
pub(super) fn producer_limit_hint(target: &ClusterSpec, size: usize) -> String {
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

/// Producer callbacks: record acknowledgements in the progress and offset maps.
pub(super) struct DeliveryContext {
    pub(super) progress: SharedProgress,
    pub(super) status: Arc<FlowStatus>,
    /// The target cluster's name, for errors.
    pub(super) cluster: String,
    /// Set before each round of delivery reports: the first acknowledgement of the round
    /// records its end-to-end latency. Sampling keeps a clock read and a histogram update
    /// off the per-record path.
    pub(super) sample_latency: AtomicBool,
    pub(super) latency: metrics::Histogram,
    /// librdkafka's own produce request retries (from statistics), for this producer.
    pub(super) retries: metrics::Counter,
    pub(super) flow: String,
    /// The flow is one of a two-way pair ([`FlowSpec::two_way`]): the target cluster's
    /// own applications write between its copies.
    pub(super) two_way: bool,
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
    pub(super) fn foreign_records(
        &self,
        source_topic: &str,
        copy: &BorrowedMessage<'_>,
        expected: i64,
    ) {
        let (target_topic, partition, at) = (copy.topic(), copy.partition(), copy.offset());
        if self.two_way {
            // The target cluster's own records, which the other flow of the pair copies
            // the other way: what a two-way topic holds. Another copier's duplicates cannot
            // be told from them here (`fence = "transactions"` keeps those out).
            return;
        }
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
                if !p.map_acknowledged(source_offset, msg.offset()) {
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

/// Serves every delivery report that has arrived. rdkafka's `poll(Duration::ZERO)`
/// serves at most one event, which is one produce batch's reports; polled once per tick,
/// acknowledgements trailed the target by seconds on a backlog (and the unserved reports
/// count against the producer queue's bound).
pub(super) fn serve_delivery_reports(producer: &BaseProducer<DeliveryContext>) {
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

/// Waits until every copy in flight is acknowledged (or failed) and its report served, or
/// until `timeout` has passed.
///
/// rdkafka's own `flush` (which its `commit_transaction` calls first) re-checks only every
/// 100 ms, since its `poll` with a timeout serves events until that time is up rather than
/// returning at the first one: every hand-over and every transaction of a fenced flow
/// took a multiple of 100 ms, at least 100 ms, however little was in flight. This one
/// checks every millisecond. It sleeps in between rather than polling with a timeout: a
/// `poll` shorter than a millisecond does not block (librdkafka takes whole milliseconds),
/// and spins instead.
pub(super) fn drain(
    producer: &BaseProducer<DeliveryContext>,
    timeout: Duration,
) -> Result<(), ReplicatorError> {
    let deadline = Instant::now() + timeout;
    loop {
        serve_delivery_reports(producer);
        let in_flight = producer.in_flight_count();
        if in_flight == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ReplicatorError::kafka(
                "waiting for in-flight copies",
                KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
            ));
        }
        std::thread::sleep(DRAIN_CHECK_EVERY);
    }
}

/// How long [`drain`] waits between two rounds of serving reports.
const DRAIN_CHECK_EVERY: Duration = Duration::from_millis(1);

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
pub(super) struct DeliveryOpaque;

const _: () = assert!(usize::BITS == 64, "DeliveryOpaque packs 64 bits");

impl DeliveryOpaque {
    const WITH_ID: usize = 1 << 63;
    const OFFSET_BITS: u32 = 52;
    const OFFSET_MASK: usize = (1 << Self::OFFSET_BITS) - 1;
    const MAX_ID: usize = (1 << (63 - Self::OFFSET_BITS)) - 1;

    pub(super) fn encode(topic_id: usize, source_offset: i64) -> usize {
        // A consumed record's offset is never negative, so the top bit is free.
        debug_assert!(source_offset >= 0, "source offset {source_offset}");
        let offset = source_offset as usize;
        if topic_id <= Self::MAX_ID && offset <= Self::OFFSET_MASK {
            Self::WITH_ID | topic_id << Self::OFFSET_BITS | offset
        } else {
            offset
        }
    }

    pub(super) fn decode(opaque: usize) -> (Option<usize>, i64) {
        if opaque & Self::WITH_ID == 0 {
            (None, opaque as i64)
        } else {
            let id = (opaque & !Self::WITH_ID) >> Self::OFFSET_BITS;
            (Some(id), (opaque & Self::OFFSET_MASK) as i64)
        }
    }
}

/// The producer's fatal error, if it has stopped: which request the broker refused, and
/// why.
pub(super) fn fatal_cause(
    producer: &BaseProducer<DeliveryContext>,
    cluster: &str,
) -> Option<ReplicatorError> {
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

#[cfg(test)]
mod tests {
    use super::DeliveryOpaque;

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
}
