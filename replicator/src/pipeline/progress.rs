//! What a flow knows of each source partition's progress, kept across pipeline restarts
//! and shared by the callbacks and the forwarding loop under one mutex.

use super::*;

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
    /// This partition's offset map in memory, changed only by the methods below: what is
    /// acknowledged, found on the target or handled reaches the map writer through them.
    offsets: PartitionOffsetMap,
}

impl PartitionProgress {
    /// Copies of this partition found on the target when it was assigned, oldest first.
    /// Pairs this process already saw acknowledged are refused as not newer.
    pub(super) fn map_found_copies(&mut self, pairs: &[(i64, i64)]) {
        for &(source, target) in pairs {
            self.offsets.record(source, target);
        }
    }

    /// Where this writer's map begins (`from`, with the target's end there), and the
    /// source offsets below which it is already complete: the persisted map's end and
    /// where copying resumes.
    pub(super) fn start_map(&mut self, from: i64, target_next: i64, complete_below: &[i64]) {
        self.offsets.start_at(from, target_next);
        for &through in complete_below {
            self.offsets.advance_through(through);
        }
    }

    /// Starts this partition's map again for a source topic created again: see
    /// [`PartitionOffsetMap::begin_epoch`].
    pub(super) fn begin_map_epoch(&mut self, epoch: Epoch) {
        self.offsets.begin_epoch(epoch);
    }

    /// An acknowledged copy. `false` if it is not newer than the last one recorded.
    pub(super) fn map_acknowledged(&mut self, source: i64, target: i64) -> bool {
        self.offsets.record(source, target)
    }

    /// Every record below `handled` was copied and acknowledged, or never delivered; the
    /// map's changes since the last call, to persist. Taken even without a writer, so the
    /// in-memory map stays small.
    pub(super) fn map_handled_through(&mut self, handled: Option<i64>) -> Vec<MapUpdate> {
        if let Some(h) = handled {
            self.offsets.advance_through(h);
        }
        self.offsets.take_updates()
    }

    /// Drops the map changes not persisted yet, at a pipeline's start: updates handed to a
    /// writer that then failed are lost, so the map starts again from what its topic holds
    /// and each assignment rebuilds the rest from the target.
    pub(super) fn forget_unpersisted_map(&mut self) {
        self.offsets = PartitionOffsetMap::default();
    }
}

/// Progress of every partition of one source topic.
#[derive(Debug)]
pub(crate) struct TopicProgress {
    pub source_topic: String,
    pub target_topic: String,
    /// The ID of the source topic copied, once an assignment checked it: commits carry
    /// it (see the `source_ids` module).
    pub source_topic_id: Option<String>,
    pub partitions: Vec<PartitionProgress>,
}

impl TopicProgress {
    pub(super) fn partition(&mut self, partition: i32) -> &mut PartitionProgress {
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
    pub(super) ids: FxHashMap<String, usize>,
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

impl FlowProgress {
    /// The id of a target topic's progress, which is created if new.
    pub(super) fn topic_id(&mut self, target_topic: &str, source_topic: &str) -> usize {
        if let Some(&id) = self.ids.get(target_topic) {
            return id;
        }
        let id = self.topics.len();
        self.topics.push(TopicProgress {
            source_topic: source_topic.to_string(),
            target_topic: target_topic.to_string(),
            source_topic_id: None,
            partitions: Vec::new(),
        });
        self.ids.insert(target_topic.to_string(), id);
        id
    }

    pub(super) fn topic(&mut self, target_topic: &str, source_topic: &str) -> &mut TopicProgress {
        let id = self.topic_id(target_topic, source_topic);
        &mut self.topics[id]
    }

    pub(super) fn by_target(&mut self, target_topic: &str) -> Option<&mut TopicProgress> {
        let id = *self.ids.get(target_topic)?;
        self.topics.get_mut(id)
    }

    pub(super) fn fail(&mut self, err: ReplicatorError) {
        if self.failure.is_none() {
            self.failure = Some(err);
        }
    }

    /// The failure recorded by a callback, if any. One that said only "Fatal" is replaced
    /// by the producer's fatal error, which names the request the broker refused and why.
    pub(super) fn take_failure(
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
