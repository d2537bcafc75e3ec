//! Proof that a copy matches its source: every source record in the replicated range is
//! compared with its copy on the target, found through the flow's exact offset map, so
//! source gaps (compaction, transaction markers, aborted records) need no guessing.
//!
//! Both sides are read in parallel, one consumer per cluster, each partition paired
//! through a small queue per side; a side that runs ahead is paused, so memory stays
//! bounded however large the partitions are. A record matches when its key, value and
//! headers (in order) hash the same and its timestamp is the same (unless the target
//! topic stamps records with the broker's clock, `LogAppendTime`, which no copy can
//! keep); order is implied by pairing offset by offset. The first difference per
//! partition is reported with both records summarised.

mod error;
mod record;

use record::Digest;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use regex::Regex;
use serde::Serialize;
use strait_offset_sync::{is_connection_trouble, FlowIndex, OffsetIndex, Translation};
use strait_replicator::{
    client_config, copies_on_target, ClusterSpec, MapEnd, NamingPolicy, TopicSelector,
};
use xxhash_rust::xxh3::Xxh3;

pub use error::VerifyError;
pub use record::RecordSummary;

/// How long both clusters may deliver nothing before verification gives up.
const STALL: Duration = Duration::from_secs(30);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Queued digests (48 bytes each) across all partitions of one side before the busiest
/// partitions are paused.
const QUEUE_BUDGET: usize = 400_000;

/// What to verify: one flow's copy, optionally narrowed to some source topics.
#[derive(Debug, Clone)]
pub struct VerifySpec {
    pub flow: String,
    pub source: ClusterSpec,
    pub target: ClusterSpec,
    pub naming: NamingPolicy,
    pub selector: TopicSelector,
    /// The flow's offset map topic on the target.
    pub map_topic: String,
    /// Only source topics matching this (whole name) as well as the flow's selection.
    pub topics: Option<Regex>,
    /// The flow is one of a two-way pair (`FlowSpec::two_way`): source records that are
    /// copies from the target are left out by the flow, and the target's own records lie
    /// between the copies.
    pub two_way: bool,
}

/// Told how far verification has come, in source offsets.
pub trait Progress {
    fn begin(&self, partitions: usize, source_offsets: u64);
    fn advance(&self, source_offsets: u64);
}

/// No progress output.
pub struct Silent;
impl Progress for Silent {
    fn begin(&self, _: usize, _: u64) {}
    fn advance(&self, _: u64) {}
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub flow: String,
    pub partitions: Vec<PartitionReport>,
}

impl VerifyReport {
    /// Every partition verified without a difference.
    pub fn is_ok(&self) -> bool {
        self.partitions.iter().all(|p| p.status == Status::Verified)
    }
    /// Every partition verified, and up to the source end offset seen when it started:
    /// nothing on the source is left unverified.
    pub fn is_complete(&self) -> bool {
        self.is_ok() && self.partitions.iter().all(|p| p.source_to >= p.source_end)
    }
    pub fn records(&self) -> u64 {
        self.partitions.iter().map(|p| p.records).sum()
    }
    pub fn mismatches(&self) -> impl Iterator<Item = (&PartitionReport, &Mismatch)> {
        self.partitions
            .iter()
            .filter_map(|p| p.mismatch.as_ref().map(|m| (p, m)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every source record in the range has an identical copy at its mapped offset.
    Verified,
    /// See [`PartitionReport::mismatch`].
    Mismatch,
    /// The source partition has records but the offset map has nothing for it yet.
    NotReplicated,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: i32,
    pub target_topic: String,
    pub status: Status,
    /// Verified source range `[source_from, source_to)`: what the map says was handled,
    /// clipped to what the source still holds.
    pub source_from: i64,
    pub source_to: i64,
    /// Source end offset when verification started.
    pub source_end: i64,
    /// Target range `[target_from, target_to)` holding the copies of that range.
    pub target_from: i64,
    pub target_to: i64,
    /// The target was read up to here: every record in `[target_to, target_read_to)`,
    /// after the newest copy, is someone else's or a duplicate.
    pub target_read_to: i64,
    /// With identity naming, the target offsets after the newest copy (up to where the
    /// newest copies were read back): records applications wrote there, as they do once
    /// a migration moved them. Counted, not compared; with prefix naming they are
    /// differences instead.
    pub target_after_copies: i64,
    /// Source records compared and found identical to their copies.
    pub records: u64,
    /// Target records in the range that are copies of source records no longer there
    /// (compacted or deleted on the source after they were copied): not comparable.
    pub target_only: u64,
    /// Source records whose copies the target's retention has already deleted.
    pub expired_on_target: u64,
    /// A two-way flow's source records that are copies from its target, which the flow
    /// leaves out: not compared.
    pub copies_from_target: u64,
    /// A two-way flow's target records between its copies that the map names no copy:
    /// the target's own records, not compared.
    pub target_own: u64,
    /// xxh3-128 over the digests of the identical records, in order.
    pub digest: String,
    pub mismatch: Option<Mismatch>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub kind: MismatchKind,
    pub source_offset: i64,
    /// Where the copy should be.
    pub target_offset: Option<i64>,
    pub source_record: Option<RecordSummary>,
    pub target_record: Option<RecordSummary>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchKind {
    /// The record at the mapped target offset differs from the source record.
    ContentDiffers,
    /// No record at the mapped target offset (the target partition ends before it).
    MissingOnTarget,
    /// The source record lies in a range the map says holds nothing to copy.
    NotInMap,
    /// The record at the target offset is no copy (the map names none there, and the
    /// read-back of the newest copies found none): someone else's record, or a
    /// duplicate. `source_offset` is where the copying had got to.
    NotACopy,
}

impl MismatchKind {
    pub fn describe(self) -> &'static str {
        match self {
            Self::ContentDiffers => "the copy differs from the source record",
            Self::MissingOnTarget => "the copy is missing on the target",
            Self::NotInMap => "the offset map has no copy of this source record",
            Self::NotACopy => {
                "the record at the target offset is no copy of a source record: someone \
                 else's record, or a duplicate"
            }
        }
    }
}

/// Compares the copy of every selected partition with its source.
pub fn verify_flow(
    spec: &VerifySpec,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    let (source_config, target_config) = (client_config(&spec.source), client_config(&spec.target));
    let mut index = FlowIndex::load(&target_config, &spec.map_topic)?;
    let source = Side::new(&source_config, SideKind::Source, &spec.flow)?;
    let target = Side::new(&target_config, SideKind::Target, &spec.flow)?;
    let topics = source.topics(|t| {
        spec.selector.selects(t) && spec.topics.as_ref().is_none_or(|r| r.is_match(t))
    })?;

    // Each partition with a map, and its copy's (log start, end).
    let mut planned = Vec::new();
    for (topic, count) in &topics {
        let target_topic = spec.naming.target_topic(&spec.source.name, topic);
        for partition in 0..*count {
            let target_marks = match index.partition(topic, partition) {
                Some(_) => Some(target.watermarks(&target_topic, partition)?),
                None => None,
            };
            planned.push((topic.clone(), partition, target_topic.clone(), target_marks));
        }
    }

    // The persisted map trails the copies by up to a commit interval (more after a
    // crash). The copies written since are read back from the target, as `strait offsets
    // translate` does, so every copy is named, and a record after the newest copy is
    // known to be none (someone else's, or a duplicate).
    let ends: Vec<MapEnd> = planned
        .iter()
        .filter_map(|(topic, partition, _, _)| {
            let coverage = index.persisted_coverage(topic, *partition)?;
            Some(MapEnd {
                source_topic: topic.clone(),
                partition: *partition,
                target_next: coverage.target_next,
                source_next: coverage.through,
            })
        })
        .collect();
    let newest = copies_on_target((&spec.source, &spec.target, &spec.naming), true, &ends)?;
    let mut scanned_to = HashMap::new();
    for (end, found) in ends.iter().zip(newest) {
        index.add_copies(&end.source_topic, end.partition, &found.pairs);
        scanned_to.insert((end.source_topic.clone(), end.partition), found.scanned_to);
    }

    // A copy topic of prefix naming is Strait's alone; with identity naming,
    // applications write to the same topic once a migration moved them.
    let after_copies_differ = matches!(spec.naming, NamingPolicy::Prefix { .. });
    let mut partitions = Vec::new();
    for (topic, partition, target_topic, target_marks) in planned {
        // Read after the copies were: every copy found is of a record below it.
        let (low, high) = source.watermarks(&topic, partition)?;
        let map = index.partition(&topic, partition).cloned();
        let scanned = scanned_to
            .get(&(topic.clone(), partition))
            .copied()
            .flatten();
        partitions.push(PartitionRun::plan(
            &topic,
            partition,
            target_topic,
            map,
            (low, high),
            target_marks,
            TargetTail {
                scanned_to: scanned,
                after_copies_differ,
                two_way: spec.two_way,
            },
        ));
    }
    let total: u64 = partitions.iter().map(PartitionRun::span).sum();
    progress.begin(partitions.len(), total);
    let clusters = Clusters {
        source: &spec.source.name,
        left_out_from: spec.two_way.then_some(spec.target.name.as_str()),
    };
    compare(&mut partitions, &source, &target, clusters, progress)?;
    for p in &mut partitions {
        p.summarise_mismatch(&source_config, &target_config);
    }
    Ok(VerifyReport {
        flow: spec.flow.clone(),
        partitions: partitions.into_iter().map(|p| p.report).collect(),
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum SideKind {
    Source,
    Target,
}

/// One cluster's consumer, assigned every partition to read on that cluster.
struct Side {
    kind: SideKind,
    consumer: BaseConsumer,
}

impl Side {
    fn new(config: &ClientConfig, kind: SideKind, flow: &str) -> Result<Self, VerifyError> {
        let consumer = config
            .clone()
            .set("client.id", format!("strait-verify-{flow}"))
            .set("group.id", "strait-verify-unused")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.queue.backoff.ms", "10")
            .set("queued.max.messages.kbytes", "32768")
            .create()
            .map_err(|e| VerifyError::kafka(format!("connecting to the {}", kind.name()), e))?;
        Ok(Self { kind, consumer })
    }

    fn topics(&self, wanted: impl Fn(&str) -> bool) -> Result<Vec<(String, i32)>, VerifyError> {
        let metadata = self
            .consumer
            .fetch_metadata(None, METADATA_TIMEOUT)
            .map_err(|e| VerifyError::kafka("listing source topics", e))?;
        let mut topics: Vec<(String, i32)> = metadata
            .topics()
            .iter()
            .filter(|t| wanted(t.name()))
            .map(|t| (t.name().to_string(), t.partitions().len() as i32))
            .collect();
        topics.sort();
        Ok(topics)
    }

    /// (log start, end); (0, 0) for a partition that does not exist.
    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), VerifyError> {
        match self
            .consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
        {
            Ok(marks) => Ok(marks),
            Err(e)
                if e.rdkafka_error_code()
                    == Some(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition) =>
            {
                Ok((0, 0))
            }
            Err(e) => Err(VerifyError::kafka(
                format!(
                    "reading offsets of {topic}/{partition} on the {}",
                    self.kind.name()
                ),
                e,
            )),
        }
    }

    fn set_paused(&self, topic: &str, partition: i32, paused: bool) -> Result<(), VerifyError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let result = if paused {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        result.map_err(|e| VerifyError::kafka(format!("pausing {topic}/{partition}"), e))
    }
}

impl SideKind {
    fn name(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Target => "target",
        }
    }
}

/// What a partition's plan needs to know of the target beyond its watermarks.
struct TargetTail {
    /// Where the read-back of the newest copies reached.
    scanned_to: Option<i64>,
    /// Records after the newest copy are differences (prefix naming), not applications'.
    after_copies_differ: bool,
    /// A two-way flow's: the target's own records lie between the copies.
    two_way: bool,
}

/// One side of one partition: where to read, what has been read, and its queue.
#[derive(Default)]
struct Reading {
    from: i64,
    to: i64,
    done: bool,
    paused: bool,
    /// (offset, digest) read but not yet paired.
    queue: VecDeque<(i64, Digest)>,
}

impl Reading {
    fn new(from: i64, to: i64) -> Self {
        Self {
            from,
            to,
            done: from >= to,
            ..Self::default()
        }
    }
}

struct PartitionRun {
    map: Option<OffsetIndex>,
    /// A two-way flow's: target records the map names no copy are the target's own.
    two_way: bool,
    source: Reading,
    target: Reading,
    /// Target log start: copies below it were deleted by the target's retention.
    target_log_start: i64,
    finished: bool,
    /// Source offsets handed to the progress bar so far.
    progressed: i64,
    digest: Xxh3,
    /// Digest of the target record at a `ContentDiffers` mismatch, to look for the source
    /// record it is a copy of.
    differing_target_digest: Option<Digest>,
    report: PartitionReport,
}

impl PartitionRun {
    fn plan(
        topic: &str,
        partition: i32,
        target_topic: String,
        map: Option<OffsetIndex>,
        (source_low, source_high): (i64, i64),
        target_marks: Option<(i64, i64)>,
        TargetTail {
            scanned_to,
            after_copies_differ,
            two_way,
        }: TargetTail,
    ) -> Self {
        let mut report = PartitionReport {
            topic: topic.to_string(),
            partition,
            target_topic,
            status: Status::Verified,
            source_from: source_low,
            source_to: source_low,
            source_end: source_high,
            target_from: 0,
            target_to: 0,
            target_read_to: 0,
            target_after_copies: 0,
            records: 0,
            target_only: 0,
            expired_on_target: 0,
            copies_from_target: 0,
            target_own: 0,
            digest: String::new(),
            mismatch: None,
        };
        let covered = map.as_ref().and_then(|m| {
            let coverage = m.coverage()?;
            Some((coverage.from, m.handled_through()?))
        });
        let (mut source, mut target, mut target_log_start) =
            (Reading::default(), Reading::default(), 0);
        if let (Some(index), Some((map_from, handled)), Some((target_low, target_high))) =
            (&map, covered, target_marks)
        {
            // The read-back of the newest copies may have reached further than the end
            // read before it.
            let target_high = scanned_to.map_or(target_high, |s| s.max(target_high));
            let from = map_from.max(source_low);
            let to = handled.min(source_high).max(from);
            let target_at = |offset| match index.translate(offset) {
                Translation::Exact(t) => t,
                // Unreachable for offsets inside the coverage; an empty range is safe.
                Translation::Pending | Translation::BeforeMap { .. } => 0,
            };
            let (target_from, target_to) = (target_at(from), target_at(to));
            // Past the newest copy, up to where the read-back of the copies reached: it
            // named every copy before that.
            let past_copies = scanned_to
                .map_or(target_to, |scanned| target_to.max(scanned))
                .min(target_high);
            let read_to = if after_copies_differ {
                past_copies
            } else {
                report.target_after_copies = past_copies - target_to;
                target_to
            };
            report.source_from = from;
            report.source_to = to;
            report.target_from = target_from;
            report.target_to = target_to;
            report.target_read_to = read_to.max(target_to);
            source = Reading::new(from, to);
            target = Reading::new(target_from.max(target_low), read_to);
            target_log_start = target_low;
        } else {
            source.done = true;
            target.done = true;
            if source_high > source_low {
                report.status = Status::NotReplicated;
            }
        }
        let mut run = Self {
            map,
            two_way,
            source,
            target,
            target_log_start,
            finished: false,
            progressed: 0,
            digest: Xxh3::new(),
            differing_target_digest: None,
            report,
        };
        run.pair();
        run
    }

    fn span(&self) -> u64 {
        (self.report.source_to - self.report.source_from).max(0) as u64
    }

    fn reading(&mut self, side: SideKind) -> &mut Reading {
        match side {
            SideKind::Source => &mut self.source,
            SideKind::Target => &mut self.target,
        }
    }

    /// Pairs queued source records with their copies until one side runs dry, a
    /// difference is found, or the source range is done.
    fn pair(&mut self) {
        if self.finished {
            return;
        }
        let Some(map) = &self.map else {
            self.finish();
            return;
        };
        while let Some(&(source_offset, source_digest)) = self.source.queue.front() {
            let Some(target_offset) = map.copy_of(source_offset) else {
                self.report.mismatch =
                    Some(Mismatch::new(MismatchKind::NotInMap, source_offset, None));
                break;
            };
            if target_offset < self.target_log_start {
                self.report.expired_on_target += 1;
                self.source.queue.pop_front();
                continue;
            }
            // Copies of source records that are gone from the source now; a record the
            // map names no copy is someone else's, or a duplicate.
            if let Some(t) = pass_target_records_before(
                map,
                &mut self.target,
                self.two_way.then_some(&mut self.report.target_own),
                &mut self.report.target_only,
                target_offset,
            ) {
                self.report.mismatch = Some(Mismatch::new(
                    MismatchKind::NotACopy,
                    source_offset,
                    Some(t),
                ));
                break;
            }
            match self.target.queue.front() {
                Some(&(t, target_digest)) if t == target_offset => {
                    if !target_digest.is_copy_of(&source_digest) {
                        self.differing_target_digest = Some(target_digest);
                        self.report.mismatch = Some(Mismatch::new(
                            MismatchKind::ContentDiffers,
                            source_offset,
                            Some(target_offset),
                        ));
                        break;
                    }
                    self.digest.update(&source_digest.to_le_bytes());
                    self.report.records += 1;
                    self.source.queue.pop_front();
                    self.target.queue.pop_front();
                }
                Some(_) => {
                    self.report.mismatch = Some(Mismatch::new(
                        MismatchKind::MissingOnTarget,
                        source_offset,
                        Some(target_offset),
                    ));
                    break;
                }
                None if self.target.done => {
                    self.report.mismatch = Some(Mismatch::new(
                        MismatchKind::MissingOnTarget,
                        source_offset,
                        Some(target_offset),
                    ));
                    break;
                }
                None => return,
            }
        }
        if self.report.mismatch.is_none() && self.source.done && self.source.queue.is_empty() {
            // Every source record paired: whatever the target holds after the newest
            // copy, up to where it is read, is no copy.
            let passed = pass_target_records_before(
                map,
                &mut self.target,
                self.two_way.then_some(&mut self.report.target_own),
                &mut self.report.target_only,
                i64::MAX,
            );
            if let Some(t) = passed {
                self.report.mismatch = Some(Mismatch::new(
                    MismatchKind::NotACopy,
                    self.report.source_to,
                    Some(t),
                ));
            } else if !self.target.done {
                return;
            }
        }
        if self.report.mismatch.is_some() || (self.source.done && self.source.queue.is_empty()) {
            self.finish();
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        self.source.queue = VecDeque::new();
        self.target.queue = VecDeque::new();
        if self.report.mismatch.is_some() {
            self.report.status = Status::Mismatch;
        }
        self.report.digest = format!("{:032x}", self.digest.digest128());
    }

    /// Source offsets newly handled since the last call (for the progress bar).
    fn take_progress(&mut self) -> u64 {
        let position = if self.finished {
            self.report.source_to
        } else {
            self.source
                .queue
                .front()
                .map_or(self.source.from, |&(o, _)| o)
        };
        let done = (position - self.report.source_from).max(0);
        let delta = (done - self.progressed).max(0);
        self.progressed = done;
        delta as u64
    }

    fn summarise_mismatch(&mut self, source: &ClientConfig, target: &ClientConfig) {
        let (topic, target_topic, partition) = (
            self.report.topic.clone(),
            self.report.target_topic.clone(),
            self.report.partition,
        );
        if let Some(m) = &mut self.report.mismatch {
            m.source_record = read_record(source, &topic, partition, m.source_offset);
            m.target_record = m
                .target_offset
                .and_then(|t| read_record(target, &target_topic, partition, t));
            // Copies between provenance anchors carry no header: name the source record
            // the differing copy is of by its content, a little way past this one.
            if let (MismatchKind::ContentDiffers, Some(record), Some(wanted)) = (
                m.kind,
                m.target_record.as_mut(),
                self.differing_target_digest,
            ) {
                if record.copy_of_source_offset.is_none() {
                    record.copy_of_source_offset =
                        find_by_digest(source, &topic, partition, m.source_offset + 1, wanted);
                }
            }
            // A target record that is the copy of a *later* source record means this
            // one's copy was lost, not altered.
            if m.kind == MismatchKind::ContentDiffers
                && m.target_record
                    .as_ref()
                    .and_then(|r| r.copy_of_source_offset)
                    .is_some_and(|s| s > m.source_offset)
            {
                m.kind = MismatchKind::MissingOnTarget;
            }
        }
    }
}

/// Takes the queued target records before `target_offset` off the queue, counting in
/// `target_only` those the map names as copies (of source records no longer there, or
/// the comparison would have reached them); the offset of the first it names no copy.
/// With `target_own` (a two-way flow), a record the map names no copy is the target's
/// own, counted there and passed too.
fn pass_target_records_before(
    map: &OffsetIndex,
    target: &mut Reading,
    mut target_own: Option<&mut u64>,
    target_only: &mut u64,
    target_offset: i64,
) -> Option<i64> {
    while let Some(&(t, _)) = target.queue.front().filter(|(t, _)| *t < target_offset) {
        let counter = match (map.source_of(t), target_own.as_deref_mut()) {
            (Some(_), _) => &mut *target_only,
            (None, Some(own)) => own,
            (None, None) => return Some(t),
        };
        target.queue.pop_front();
        *counter += 1;
    }
    None
}

impl Mismatch {
    fn new(kind: MismatchKind, source_offset: i64, target_offset: Option<i64>) -> Self {
        Self {
            kind,
            source_offset,
            target_offset,
            source_record: None,
            target_record: None,
        }
    }
}

/// The clusters' names, as provenance headers give them.
#[derive(Clone, Copy)]
struct Clusters<'a> {
    /// The source's: the target's copies name it.
    source: &'a str,
    /// A two-way flow's target: source records naming it are copies the flow leaves out.
    left_out_from: Option<&'a str>,
}

/// Reads both sides until every partition is finished.
fn compare(
    runs: &mut [PartitionRun],
    source: &Side,
    target: &Side,
    clusters: Clusters<'_>,
    progress: &dyn Progress,
) -> Result<(), VerifyError> {
    let mut lookup: HashMap<(SideKind, String, i32), usize> = HashMap::new();
    for side in [source, target] {
        let mut tpl = TopicPartitionList::new();
        for (i, run) in runs.iter_mut().enumerate() {
            let topic = match side.kind {
                SideKind::Source => run.report.topic.clone(),
                SideKind::Target => run.report.target_topic.clone(),
            };
            let partition = run.report.partition;
            let finished = run.finished;
            let reading = run.reading(side.kind);
            if !finished && !reading.done {
                let from = reading.from;
                tpl.add_partition_offset(&topic, partition, Offset::Offset(from))
                    .map_err(|e| VerifyError::kafka("assigning partitions", e))?;
            }
            lookup.insert((side.kind, topic, partition), i);
        }
        side.consumer
            .assign(&tpl)
            .map_err(|e| VerifyError::kafka(format!("reading the {}", side.kind.name()), e))?;
    }
    let active = runs.iter().filter(|r| !r.finished).count().max(1);
    let queue_limit = (QUEUE_BUDGET / active).max(1000);

    let mut hasher = Xxh3::new();
    let mut last_progress = Instant::now();
    let mut last_position_check = Instant::now();
    while runs.iter().any(|r| !r.finished) {
        let mut received = 0;
        for side in [source, target] {
            let copy_of = (side.kind == SideKind::Target).then_some(clusters.source);
            let left_out_from = clusters
                .left_out_from
                .filter(|_| side.kind == SideKind::Source);
            let mut batch = 0;
            while batch < 4096 {
                let msg = match side.consumer.poll(Duration::ZERO) {
                    None => break,
                    // One broker down: librdkafka reconnects by itself, and the stall
                    // limit below still holds.
                    Some(Err(e)) if is_connection_trouble(&e) => break,
                    Some(Err(e)) => {
                        return Err(VerifyError::kafka(
                            format!("reading the {}", side.kind.name()),
                            e,
                        ))
                    }
                    Some(Ok(msg)) => msg,
                };
                batch += 1;
                let key = (side.kind, msg.topic().to_string(), msg.partition());
                let Some(&i) = lookup.get(&key) else { continue };
                let run = &mut runs[i];
                let finished = run.finished;
                let reading = run.reading(side.kind);
                if finished || reading.done || msg.offset() < reading.from {
                    continue;
                }
                if msg.offset() >= reading.to {
                    reading.done = true;
                } else {
                    if left_out_from.is_some_and(|c| record::is_copy_from(&msg, c)) {
                        run.report.copies_from_target += 1;
                    } else {
                        let d = record::digest(&msg, copy_of, &mut hasher);
                        run.reading(side.kind).queue.push_back((msg.offset(), d));
                    }
                    let reading = run.reading(side.kind);
                    reading.done = msg.offset() + 1 >= reading.to;
                }
                run.pair();
                throttle(run, side, queue_limit, &key.1, key.2)?;
            }
            received += batch;
        }
        if received > 0 {
            last_progress = Instant::now();
        }
        // Positions pass gaps (transaction markers, compaction) that deliver no record.
        if received == 0 || last_position_check.elapsed() > Duration::from_millis(200) {
            last_position_check = Instant::now();
            for side in [source, target] {
                mark_done_by_position(runs, side, &lookup, queue_limit)?;
            }
            let advanced: u64 = runs.iter_mut().map(PartitionRun::take_progress).sum();
            if advanced > 0 {
                progress.advance(advanced);
                last_progress = Instant::now();
            }
        }
        if received == 0 {
            if last_progress.elapsed() > STALL {
                let waiting: Vec<String> = runs
                    .iter()
                    .filter(|r| !r.finished)
                    .take(5)
                    .map(|r| format!("{}/{}", r.report.topic, r.report.partition))
                    .collect();
                return Err(VerifyError::Stalled(STALL, waiting.join(", ")));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let rest: u64 = runs.iter_mut().map(PartitionRun::take_progress).sum();
    progress.advance(rest);
    Ok(())
}

/// Pauses a side of a partition that is far ahead of the other (or done), resumes it
/// when the other side has caught up.
fn throttle(
    run: &mut PartitionRun,
    side: &Side,
    limit: usize,
    topic: &str,
    partition: i32,
) -> Result<(), VerifyError> {
    let finished = run.finished;
    let reading = run.reading(side.kind);
    let want_paused = finished || reading.done || reading.queue.len() >= limit;
    if want_paused != reading.paused {
        side.set_paused(topic, partition, want_paused)?;
        reading.paused = want_paused;
    }
    if finished {
        // The other side may be paused for backpressure and never resumed: stop both.
        let other = match side.kind {
            SideKind::Source => &mut run.target,
            SideKind::Target => &mut run.source,
        };
        other.done = true;
    }
    Ok(())
}

fn mark_done_by_position(
    runs: &mut [PartitionRun],
    side: &Side,
    lookup: &HashMap<(SideKind, String, i32), usize>,
    queue_limit: usize,
) -> Result<(), VerifyError> {
    let positions = side
        .consumer
        .position()
        .map_err(|e| VerifyError::kafka(format!("reading the {}", side.kind.name()), e))?;
    for element in positions.elements() {
        let Offset::Offset(position) = element.offset() else {
            continue;
        };
        let key = (side.kind, element.topic().to_string(), element.partition());
        let Some(&i) = lookup.get(&key) else { continue };
        let run = &mut runs[i];
        let reading = run.reading(side.kind);
        if !reading.done && position >= reading.to {
            reading.done = true;
            run.pair();
        }
        // Resume a side paused for backpressure once its queue has drained.
        let finished = run.finished;
        let reading = run.reading(side.kind);
        if reading.paused && !reading.done && !finished && reading.queue.len() < queue_limit / 2 {
            side.set_paused(&key.1, key.2, false)?;
            run.reading(side.kind).paused = false;
        }
        if run.finished || run.reading(side.kind).done {
            throttle(run, side, usize::MAX, &key.1, key.2)?;
        }
    }
    Ok(())
}

/// A consumer for reading a few records of a mismatch report, outside any group.
fn record_reader(config: &ClientConfig) -> Option<BaseConsumer> {
    config
        .clone()
        .set("group.id", "strait-verify-unused")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed")
        .create()
        .ok()
}

/// How many source records past a differing copy [`find_by_digest`] looks at: the
/// default provenance interval, so a copy is found wherever the next anchor would be.
const COPY_LOOKAHEAD: i64 = 1_000;

/// The offset of the first source record from `from` on (at most [`COPY_LOOKAHEAD`] of
/// them, up to the current end) whose digest is `wanted`.
fn find_by_digest(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    from: i64,
    wanted: Digest,
) -> Option<i64> {
    let consumer = record_reader(config)?;
    let (_, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .ok()?;
    let until = high.min(from.saturating_add(COPY_LOOKAHEAD));
    if from >= until {
        return None;
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .ok()?;
    consumer.assign(&tpl).ok()?;
    let mut hasher = Xxh3::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) if msg.offset() >= until => return None,
            Some(Ok(msg)) if wanted.is_copy_of(&record::digest(&msg, None, &mut hasher)) => {
                return Some(msg.offset())
            }
            Some(Ok(_)) | Some(Err(_)) => {}
            // Only transaction markers or aborted records may be left before `until`.
            None => {
                let position = consumer.position().ok()?;
                if let Some(Offset::Offset(p)) = position
                    .find_partition(topic, partition)
                    .map(|e| e.offset())
                {
                    if p >= until {
                        return None;
                    }
                }
            }
        }
    }
    None
}

/// One record, read for a report (`read_committed`). `None` if it is not there (any more).
pub fn read_record(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Option<RecordSummary> {
    let consumer = record_reader(config)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .ok()?;
    consumer.assign(&tpl).ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) if msg.offset() == offset => return Some(RecordSummary::of(&msg)),
            Some(Ok(_)) => return None,
            Some(Err(_)) | None => {}
        }
    }
    None
}
