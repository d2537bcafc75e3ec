//! The provenance header: where a copied record came from.
//!
//! Copies carry `strait.source = <cluster>/<topic>/<partition>/<offset>` (ASCII): every
//! copy with `provenance_interval = 1`, otherwise only *anchors* (the first copy a
//! producer writes to a partition, the first after a gap in the source offsets, and every
//! `provenance_interval`th). After a crash the replicator reads the target partition's
//! tail back to learn which source records already arrived, so none is written twice.
//!
//! A copy without the header is the copy of the source offset after the previous copy in
//! the partition: the producer is idempotent and gapless, and a gap always starts a new
//! anchor. Other producers may write to the same partition, though, so the scan does not
//! take that on trust: it compares each such record with the source record it would be a
//! copy of (key, value, timestamp, headers), and a record that differs is someone else's.
//! Without the source (a translation while the primary is down) it stops at the first
//! record it cannot name, which leaves later offsets *pending* rather than guessed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers, Message, OwnedMessage, Timestamp};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use strait_offset_sync::{
    is_connection_trouble, is_leader_settling, offsets_learning_partitions, settled_watermarks,
    settling_backoff,
};
use tracing::debug;

use crate::copies::{CopyNamer, FoundCopies};
use crate::source_ids::TOPIC_ID_HEADER;
use crate::topics::{client_config, learn_partitions};
use crate::{offsets_of, ClusterSpec, NamingPolicy, ReplicatorError};

/// Header key stamped on anchor copies (every copy with `provenance_interval = 1`).
pub const PROVENANCE_HEADER: &str = "strait.source";

/// A decoded provenance header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance<'a> {
    pub cluster: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl<'a> Provenance<'a> {
    /// Writes the header value into `buf` (cleared first), reusing its allocation.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        Self::encode_with_prefix(
            &Self::prefix(self.cluster, self.topic),
            self.partition,
            self.offset,
            buf,
        );
    }

    /// `<cluster>/<topic>/`, the part of the value that is the same for a whole topic.
    pub(crate) fn prefix(cluster: &str, topic: &str) -> Vec<u8> {
        format!("{cluster}/{topic}/").into_bytes()
    }

    /// The per-record encoding: a cached prefix plus two integers, without `fmt`.
    pub(crate) fn encode_with_prefix(
        prefix: &[u8],
        partition: i32,
        offset: i64,
        buf: &mut Vec<u8>,
    ) {
        let mut digits = itoa::Buffer::new();
        buf.clear();
        buf.extend_from_slice(prefix);
        buf.extend_from_slice(digits.format(partition).as_bytes());
        buf.push(b'/');
        buf.extend_from_slice(digits.format(offset).as_bytes());
    }

    /// Parses a header value. Cluster and topic names cannot contain '/', so the split is
    /// unambiguous.
    pub fn decode(value: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.rsplitn(3, '/');
        let offset = parts.next()?.parse().ok()?;
        let partition = parts.next()?.parse().ok()?;
        let (cluster, topic) = parts.next()?.split_once('/')?;
        Some(Self {
            cluster,
            topic,
            partition,
            offset,
        })
    }
}

/// The provenance, if the header (`name`, `value`) is one naming `cluster` as where the
/// record was copied from: proof that the record came from `cluster` (a record copied
/// along a chain carries a header per hop), so copying it to `cluster` would bring it
/// back where it started, and two such flows would copy it back and forth for ever.
pub fn copied_from<'h>(
    (name, value): (&[u8], Option<&'h [u8]>),
    cluster: &str,
) -> Option<Provenance<'h>> {
    if name != PROVENANCE_HEADER.as_bytes() {
        return None;
    }
    value
        .and_then(Provenance::decode)
        .filter(|p| p.cluster == cluster)
}

/// A source partition, as named in provenance headers.
pub(crate) struct SourcePartition<'a> {
    pub cluster: &'a str,
    pub topic: &'a str,
    pub partition: i32,
}

/// Reads provenance headers back from target partitions.
pub(crate) struct TailScanner {
    consumer: BaseConsumer,
    cluster: String,
    /// Reads the source records that copies without a header are checked against;
    /// `None` when the source is unreachable. With the source cluster's name.
    source: Option<(BaseConsumer, String)>,
}

/// Where a forward scan begins: a target offset, and the source offset whose copy is
/// there unless that copy carries its own header (the commit metadata, or the persisted
/// map's coverage).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanStart {
    pub target: i64,
    pub source_next: Option<i64>,
}

/// A scan that makes no progress for this long has lost its broker.
const SCAN_STALL: Duration = Duration::from_secs(30);
/// Records read per backwards step when there is no committed target position.
const FIRST_WINDOW: i64 = 1_000;

impl TailScanner {
    pub(crate) fn new(
        target: &ClusterSpec,
        source: Option<&ClusterSpec>,
    ) -> Result<Self, ReplicatorError> {
        let source = match source {
            Some(spec) => Some((
                client_config(spec)
                    .set("client.id", "strait-tail-check")
                    .set("group.id", "strait-tail-check-unused")
                    .set("enable.auto.commit", "false")
                    .set("enable.partition.eof", "false")
                    .set("isolation.level", "read_committed")
                    .set("fetch.wait.max.ms", "10")
                    // The log start may move during a scan: read on from the new one
                    // (librdkafka's default, the end, would skip everything).
                    .set("auto.offset.reset", "earliest")
                    // It reads at most an interval of records past the last anchor.
                    .set("queued.max.messages.kbytes", "4096")
                    .create()
                    .map_err(|e| {
                        ReplicatorError::kafka(
                            format!("creating tail checker for '{}'", spec.name),
                            e,
                        )
                    })?,
                spec.name.clone(),
            )),
            None => None,
        };
        let consumer = client_config(target)
            .set("client.id", "strait-tail-scan")
            .set("group.id", "strait-tail-scan-unused")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "10")
            .create()
            .map_err(|e| {
                ReplicatorError::kafka(format!("creating tail scanner for '{}'", target.name), e)
            })?;
        Ok(Self {
            consumer,
            cluster: target.name.clone(),
            source,
        })
    }

    /// Makes both clients know `partitions` partitions of the topic (see
    /// [`learn_partitions`]), after the source topic grew and its target with it.
    pub(crate) fn learn_partitions(
        &self,
        source_topic: &str,
        target_topic: &str,
        partitions: i32,
    ) -> Result<(), ReplicatorError> {
        learn_partitions(
            self.consumer.client(),
            &self.cluster,
            target_topic,
            partitions,
        )?;
        if let Some((consumer, cluster)) = &self.source {
            learn_partitions(consumer.client(), cluster, source_topic, partitions)?;
        }
        Ok(())
    }

    /// Every copy of `source`'s partition written to `target_topic` after the committed
    /// position, within the target partition's (log start, end).
    ///
    /// With `from` (the target offset recorded with the last commit) this reads forward
    /// from there. Without it, it searches backwards from the end in growing windows
    /// for the newest anchor, because other producers may have written to the partition
    /// since.
    pub(crate) fn copies_after_commit(
        &self,
        target_topic: &str,
        source: &SourcePartition<'_>,
        from: Option<ScanStart>,
        (low, high): (i64, i64),
    ) -> Result<FoundCopies, ReplicatorError> {
        if let Some(from) = from {
            // Below the log start the copies are gone, and so is the position they named.
            let (start, source_next) = if from.target >= low {
                (from.target, from.source_next)
            } else {
                (low, None)
            };
            return self.scan(target_topic, source, start, high, source_next);
        }
        let mut end = high;
        let mut window = FIRST_WINDOW;
        while end > low {
            let start = (end - window).max(low);
            let found = self.scan(target_topic, source, start, end, None)?;
            if !found.pairs.is_empty() {
                return Ok(found);
            }
            end = start;
            window = window.saturating_mul(4);
        }
        Ok(FoundCopies::default())
    }

    /// The source partition's log start, and the first record a `read_committed`
    /// consumer sees at or after it (`None`: none before the end); `None` without the
    /// source.
    pub(crate) fn source_head(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<(i64, Option<i64>)>, ReplicatorError> {
        let Some((consumer, _)) = &self.source else {
            return Ok(None);
        };
        let mut cursor = SourceCursor::open(consumer, topic, partition)?;
        let start = cursor.start;
        let head = cursor.first_from(start)?.map(|m| m.offset());
        consumer
            .unassign()
            .map_err(|e| ReplicatorError::kafka("reading the source's first record", e))?;
        Ok(Some((start, head)))
    }

    /// (log start, end) of one target partition: from `batch` (see [`Self::watermarks`]),
    /// else read on its own, which reports what kept it from the batch; `None` if the
    /// topic does not exist.
    pub(crate) fn watermarks_in(
        &self,
        batch: &HashMap<(String, i32), (i64, i64)>,
        target_topic: &str,
        partition: i32,
    ) -> Result<Option<(i64, i64)>, ReplicatorError> {
        match batch.get(&(target_topic.to_string(), partition)) {
            Some(&w) => Ok(Some(w)),
            None => self.watermarks_of(target_topic, partition),
        }
    }

    /// The end of a target partition's log, past records of transactions still open or
    /// whose markers are not written yet, which the (log start, end) of
    /// [`Self::watermarks_in`] leaves out: this scanner reads committed records only, and
    /// its end is the last stable offset. `None` if the topic does not exist. A client of
    /// its own, made for the call: it is needed only when the stable end falls short.
    pub(crate) fn log_end(
        &self,
        target: &ClusterSpec,
        target_topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, ReplicatorError> {
        let context = || {
            format!(
                "reading the log end of {target_topic}[{partition}] on '{}'",
                self.cluster
            )
        };
        let client: BaseConsumer = client_config(target)
            .set("client.id", "strait-tail-scan-log-end")
            .set("isolation.level", "read_uncommitted")
            .create()
            .map_err(|e| ReplicatorError::kafka(context(), e))?;
        match settled_watermarks(&client, target_topic, partition, SCAN_STALL) {
            Ok((_, end)) => Ok(Some(end)),
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                Ok(None)
            }
            Err(e) => Err(ReplicatorError::kafka(context(), e)),
        }
    }

    /// (log start, end) of one target partition; `None` if the topic does not exist.
    pub(crate) fn watermarks_of(
        &self,
        target_topic: &str,
        partition: i32,
    ) -> Result<Option<(i64, i64)>, ReplicatorError> {
        // A topic created moments ago (by Strait, or by an operator just before a start)
        // has partitions whose leader the broker has not settled yet; with 1,200 of them
        // that takes seconds. Those errors pass, so they are retried here rather than
        // restarting the whole flow.
        match settled_watermarks(&self.consumer, target_topic, partition, SCAN_STALL) {
            Ok(w) => Ok(Some(w)),
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                Ok(None)
            }
            Err(e) => Err(ReplicatorError::kafka(
                format!(
                    "reading end offsets of {target_topic}[{partition}] on '{}'",
                    self.cluster
                ),
                e,
            )),
        }
    }

    /// Whether the target record at `target_offset` (below `target_end`) holds the same
    /// key, value and timestamp as the source record at `source_offset`: `None` when that
    /// cannot be told (no access to the source, or either record is gone).
    pub(crate) fn copy_matches_source(
        &self,
        target_topic: &str,
        source: &SourcePartition<'_>,
        (source_offset, target_offset): (i64, i64),
        target_end: i64,
    ) -> Result<Option<bool>, ReplicatorError> {
        let Some((checker, _)) = &self.source else {
            return Ok(None);
        };
        if target_offset >= target_end {
            return Ok(None);
        }
        let context = || {
            format!(
                "reading {target_topic}[{}] on '{}' to check it against the source",
                source.partition, self.cluster
            )
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            target_topic,
            source.partition,
            Offset::Offset(target_offset),
        )
        .map_err(|e| ReplicatorError::kafka(context(), e))?;
        self.consumer
            .assign(&tpl)
            .map_err(|e| ReplicatorError::kafka(context(), e))?;
        let began = Instant::now();
        let copy = loop {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(msg))
                    if msg.topic() == target_topic && msg.partition() == source.partition =>
                {
                    break (msg.offset() == target_offset).then(|| msg.detach());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) if is_connection_trouble(&e) => {}
                Some(Err(e)) => return Err(ReplicatorError::kafka(context(), e)),
                // Only transaction markers or aborted records left before the end.
                None if self
                    .fetch_position(target_topic, source.partition)
                    .is_some_and(|p| p >= target_end) =>
                {
                    break None;
                }
                None => {}
            }
            if began.elapsed() > SCAN_STALL {
                return Err(ReplicatorError::Timeout(SCAN_STALL, context()));
            }
        };
        self.consumer
            .unassign()
            .map_err(|e| ReplicatorError::kafka(context(), e))?;
        let Some(copy) = copy else {
            return Ok(None);
        };
        let mut originals = SourceCursor::open(checker, source.topic, source.partition)?;
        let same = originals
            .first_from(source_offset)?
            .filter(|original| original.offset() == source_offset)
            .map(|original| {
                original.key() == copy.key()
                    && original.payload() == copy.payload()
                    && same_timestamp(original.timestamp(), copy.timestamp())
            });
        checker
            .unassign()
            .map_err(|e| ReplicatorError::kafka(context(), e))?;
        Ok(same)
    }

    /// Copies of `source`'s partition among target offsets [start, end). `source_next`
    /// names the copy at `start` if it carries no header; otherwise records before the
    /// first anchor cannot be named and are passed over.
    fn scan(
        &self,
        target_topic: &str,
        source: &SourcePartition<'_>,
        start: i64,
        end: i64,
        source_next: Option<i64>,
    ) -> Result<FoundCopies, ReplicatorError> {
        let mut namer = CopyNamer::new(source_next);
        // Opened on the first record that needs checking: after a clean stop there is none.
        let mut originals: Option<SourceCursor<'_>> = None;
        if start >= end {
            return Ok(namer.finish());
        }
        let context = || {
            format!(
                "reading the tail of {target_topic}[{}] on '{}'",
                source.partition, self.cluster
            )
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(target_topic, source.partition, Offset::Offset(start))
            .map_err(|e| ReplicatorError::kafka(context(), e))?;
        self.consumer
            .assign(&tpl)
            .map_err(|e| ReplicatorError::kafka(context(), e))?;
        let mut last_progress = Instant::now();
        let mut position = start;
        // Done once the fetch position reaches `end`. The position, not the last record,
        // decides: the range may end in transaction markers, which are never delivered.
        while position < end {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(msg))
                    if msg.topic() == target_topic && msg.partition() == source.partition =>
                {
                    last_progress = Instant::now();
                    if msg.offset() >= end {
                        break;
                    }
                    position = msg.offset() + 1;
                    match provenance_of(&msg) {
                        Some(p)
                            if p.cluster == source.cluster
                                && p.topic == source.topic
                                && p.partition == source.partition =>
                        {
                            namer.named_with_id(p.offset, msg.offset(), topic_id_of(&msg));
                        }
                        // No header of ours: our copy of the next source record (which
                        // may carry an upstream copier's header), or someone else's.
                        _ => {
                            let Some(expected) = namer.expected() else {
                                continue;
                            };
                            let Some((consumer, _)) = &self.source else {
                                // Cannot be checked: name nothing from here on.
                                break;
                            };
                            let originals = match &mut originals {
                                Some(cursor) => cursor,
                                None => originals.insert(SourceCursor::open(
                                    consumer,
                                    source.topic,
                                    source.partition,
                                )?),
                            };
                            let source_start = originals.start;
                            let (compared, same) = match originals.first_from(expected)? {
                                Some(original) => {
                                    (Some(original.offset()), same_content(original, &msg))
                                }
                                None => (None, false),
                            };
                            namer.compared(msg.offset(), compared, same, source_start);
                        }
                    }
                }
                Some(Ok(_)) => {}
                // One broker unreachable, while the others lead every partition this scan
                // reads: librdkafka reconnects by itself, and the stall limit still holds.
                Some(Err(e)) if is_connection_trouble(&e) => {
                    debug!(topic = target_topic, partition = source.partition, error = %e, "connection trouble while reading the tail");
                    if last_progress.elapsed() > SCAN_STALL {
                        return Err(ReplicatorError::Timeout(SCAN_STALL, context()));
                    }
                }
                Some(Err(e)) => return Err(ReplicatorError::kafka(context(), e)),
                None => {
                    if let Some(pos) = self.fetch_position(target_topic, source.partition) {
                        if pos > position {
                            position = pos;
                            last_progress = Instant::now();
                        }
                    }
                    if last_progress.elapsed() > SCAN_STALL {
                        return Err(ReplicatorError::Timeout(SCAN_STALL, context()));
                    }
                }
            }
        }
        self.consumer
            .unassign()
            .map_err(|e| ReplicatorError::kafka(context(), e))?;
        if originals.is_some() {
            // Or the checker would keep prefetching that source partition.
            if let Some((consumer, _)) = &self.source {
                consumer
                    .unassign()
                    .map_err(|e| ReplicatorError::kafka(context(), e))?;
            }
        }
        Ok(namer.finish())
    }
}

impl TailScanner {
    /// (log start, end) of target partitions, in two requests per broker rather than
    /// two per partition: with 1,200 partitions, one at a time took 14 s on localhost.
    /// Partitions whose leader is still being elected (a topic created moments ago) are
    /// asked again, within the scan's stall limit; any that cannot be read are left out
    /// (the caller reads them one by one).
    pub(crate) fn watermarks(
        &self,
        partitions: &[(String, i32)],
    ) -> HashMap<(String, i32), (i64, i64)> {
        let mut known = HashMap::new();
        let mut pending: Vec<(String, i32)> = partitions.to_vec();
        let mut backoff = settling_backoff(SCAN_STALL).build();
        loop {
            let starts = self.offsets_at(&pending, Offset::Beginning);
            let ends = self.offsets_at(&pending, Offset::End);
            pending.retain(|key| match (starts.get(key), ends.get(key)) {
                (Some(Ok(low)), Some(Ok(high))) => {
                    known.insert(key.clone(), (*low, *high));
                    false
                }
                (Some(Err(code)), _) | (_, Some(Err(code))) if is_leader_settling(*code) => true,
                (None, _) | (_, None) => true,
                // Any other error: left to the one-by-one read, which reports it.
                answers => {
                    debug!(topic = %key.0, partition = key.1, ?answers, "target partition offsets left to a read of their own");
                    false
                }
            });
            if pending.is_empty() {
                return known;
            }
            match backoff.next() {
                Some(delay) => {
                    debug!(partitions = pending.len(), retry_in = ?delay, "target partition leaders settling");
                    std::thread::sleep(delay)
                }
                None => return known,
            }
        }
    }

    /// Each partition's offset at `at` (log start or end), or its error code; partitions
    /// are missing when the whole request failed with an error that passes.
    fn offsets_at(
        &self,
        partitions: &[(String, i32)],
        at: Offset,
    ) -> HashMap<(String, i32), Result<i64, RDKafkaErrorCode>> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            // Only fails for an invalid offset, and Beginning and End are valid.
            let _ = tpl.add_partition_offset(topic, *partition, at);
        }
        // A topic grown (or created) since this client read it: the next try knows.
        match offsets_learning_partitions(&self.consumer, tpl, SCAN_STALL) {
            Ok(found) => found
                .elements()
                .iter()
                .filter_map(|e| {
                    let answer = match (e.error(), e.offset()) {
                        (Ok(()), Offset::Offset(o)) => Ok(o),
                        (Err(err), _) => Err(err.rdkafka_error_code()?),
                        _ => return None,
                    };
                    Some(((e.topic().to_string(), e.partition()), answer))
                })
                .collect(),
            Err(e) => match e.rdkafka_error_code() {
                // The whole request failed on one partition's error: report it for all,
                // so a settling leader is retried and anything else is left alone.
                Some(code) if !is_leader_settling(code) => partitions
                    .iter()
                    .map(|key| (key.clone(), Err(code)))
                    .collect(),
                _ => HashMap::new(),
            },
        }
    }

    fn fetch_position(&self, topic: &str, partition: i32) -> Option<i64> {
        let positions = self.consumer.position().ok()?;
        match positions.find_partition(topic, partition)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }
}

/// Where a persisted offset map of one partition ends: the target offset after its
/// newest copy, and the source offset that copy's successor would have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEnd {
    pub source_topic: String,
    pub partition: i32,
    pub target_next: i64,
    pub source_next: i64,
}

/// For each map end, the copies of that source partition on the target from
/// `target_next` on, as (source offset, target offset) pairs, oldest first: what a map
/// that lost its newest entries is rebuilt from. Answers are in the order asked.
///
/// With `source_reachable` the copies between anchors are checked against the source;
/// without, an answer stops at the first copy that carries no header.
///
/// One scanner (two clients) serves every partition, and the target's watermarks are
/// read in one request per broker: a client per partition cost about 200 ms each, and
/// `strait offsets translate` took 85 s for a map of 625 partitions.
pub fn copies_on_target(
    (source, target, naming): (&ClusterSpec, &ClusterSpec, &NamingPolicy),
    source_reachable: bool,
    ends: &[MapEnd],
) -> Result<Vec<FoundCopies>, ReplicatorError> {
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    let target_topics: Vec<(String, i32)> = ends
        .iter()
        .map(|e| {
            let topic = naming.target_topic(&source.name, &e.source_topic);
            (topic, e.partition)
        })
        .collect();
    // The scanner's clients have a group coordinator to log in to (librdkafka assigns
    // partitions only to a consumer with a group.id); one made for nothing was gone
    // before its login was done, which librdkafka reports as an authentication error.
    // So the ends are read first by a client without a group, and only partitions
    // whose target holds more than the map covers are scanned.
    let target_ends = target_ends(target, &target_topics);
    let to_scan = |(end, key): (&MapEnd, &(String, i32))| {
        target_ends
            .get(key)
            .is_none_or(|&target_end| end.target_next < target_end)
    };
    if !ends.iter().zip(&target_topics).any(to_scan) {
        return Ok(target_topics
            .iter()
            .map(|key| FoundCopies {
                scanned_to: target_ends.get(key).copied(),
                ..FoundCopies::default()
            })
            .collect());
    }
    let scanner = TailScanner::new(target, source_reachable.then_some(source))?;
    let watermarks = scanner.watermarks(&target_topics);
    ends.iter()
        .zip(&target_topics)
        .map(|(end, key)| {
            let Some(target_watermarks) = scanner.watermarks_in(&watermarks, &key.0, key.1)? else {
                // The target topic does not exist (any more): no copies.
                return Ok(FoundCopies::default());
            };
            let mut found = scanner.copies_after_commit(
                &key.0,
                &SourcePartition {
                    cluster: &source.name,
                    topic: &end.source_topic,
                    partition: end.partition,
                },
                Some(ScanStart {
                    target: end.target_next,
                    source_next: Some(end.source_next),
                }),
                target_watermarks,
            )?;
            found.scanned_to = Some(target_watermarks.1);
            Ok(found)
        })
        .collect()
}

/// The end offsets of target partitions, read by a client of no group in one request
/// per broker; partitions whose end could not be read are left out.
fn target_ends(target: &ClusterSpec, partitions: &[(String, i32)]) -> HashMap<(String, i32), i64> {
    let Ok(client) = client_config(target)
        .set("client.id", "strait-tail-ends")
        .create::<BaseConsumer>()
    else {
        return HashMap::new();
    };
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        // Only fails for an invalid offset, and End is valid.
        let _ = tpl.add_partition_offset(topic, *partition, Offset::End);
    }
    offsets_learning_partitions(&client, tpl, SCAN_STALL)
        .map(|found| offsets_of(&found))
        .unwrap_or_default()
}

/// Reads one source partition forward for the tail check, keeping the last record read
/// so that a run of someone else's records on the target compares against it again.
struct SourceCursor<'a> {
    consumer: &'a BaseConsumer,
    topic: &'a str,
    partition: i32,
    /// The source's log start when the scan began: records below it are gone, and the
    /// first record at or after an offset below it is the first one at or after it.
    start: i64,
    /// The source end when the scan began: no copy can be of a record at or after it.
    end: i64,
    /// The offset the consumer delivers from next, once assigned.
    position: Option<i64>,
    /// (offset asked for, the first visible record at or after it).
    held: Option<(i64, OwnedMessage)>,
    /// No visible record at or after this offset.
    exhausted_from: Option<i64>,
}

impl<'a> SourceCursor<'a> {
    fn open(
        consumer: &'a BaseConsumer,
        topic: &'a str,
        partition: i32,
    ) -> Result<Self, ReplicatorError> {
        let (start, end) = consumer
            .fetch_watermarks(topic, partition, SCAN_STALL)
            .map_err(|e| {
                ReplicatorError::kafka(
                    format!("reading end offsets of {topic}[{partition}] on the source"),
                    e,
                )
            })?;
        Ok(Self {
            consumer,
            topic,
            partition,
            start,
            end,
            position: None,
            held: None,
            exhausted_from: None,
        })
    }

    /// The first record a `read_committed` consumer sees at or after `offset`.
    fn first_from(&mut self, offset: i64) -> Result<Option<&OwnedMessage>, ReplicatorError> {
        // Asked from below the log start, the consumer would reset its position, and
        // this cursor would not know where to.
        let offset = offset.max(self.start);
        if let Some((from, msg)) = &self.held {
            if *from <= offset && offset <= msg.offset() {
                return Ok(self.held.as_ref().map(|(_, m)| m));
            }
        }
        if offset >= self.end || self.exhausted_from.is_some_and(|e| e <= offset) {
            return Ok(None);
        }
        let context = || {
            format!(
                "reading {}[{}] on the source to check the target's tail",
                self.topic, self.partition
            )
        };
        if self.position != Some(offset) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(self.topic, self.partition, Offset::Offset(offset))
                .map_err(|e| ReplicatorError::kafka(context(), e))?;
            self.consumer
                .assign(&tpl)
                .map_err(|e| ReplicatorError::kafka(context(), e))?;
            self.position = Some(offset);
        }
        let mut last_progress = Instant::now();
        loop {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(msg)) if msg.topic() == self.topic && msg.partition() == self.partition => {
                    last_progress = Instant::now();
                    self.position = Some(msg.offset() + 1);
                    if msg.offset() < offset {
                        continue;
                    }
                    self.held = Some((offset, msg.detach()));
                    return Ok(self.held.as_ref().map(|(_, m)| m));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) if is_connection_trouble(&e) => {
                    debug!(topic = self.topic, partition = self.partition, error = %e, "connection trouble while reading the source");
                    if last_progress.elapsed() > SCAN_STALL {
                        return Err(ReplicatorError::Timeout(SCAN_STALL, context()));
                    }
                }
                Some(Err(e)) => return Err(ReplicatorError::kafka(context(), e)),
                None => {
                    // Transaction markers and aborted records at the end are never
                    // delivered; the fetch position says when they are passed.
                    let position = self.consumer.position().ok().and_then(|tpl| {
                        tpl.find_partition(self.topic, self.partition)
                            .map(|e| e.offset())
                    });
                    if let Some(Offset::Offset(p)) = position {
                        if p >= self.end {
                            self.exhausted_from = Some(offset);
                            self.held = None;
                            return Ok(None);
                        }
                        if Some(p) > self.position {
                            self.position = Some(p);
                            last_progress = Instant::now();
                        }
                    }
                    if last_progress.elapsed() > SCAN_STALL {
                        return Err(ReplicatorError::Timeout(SCAN_STALL, context()));
                    }
                }
            }
        }
    }
}

/// Whether `copy` (a target record without our header) has the content of `original`:
/// the same key, value, timestamp and headers, in order, null kept apart from empty.
fn same_content<A: Message, B: Message>(original: &A, copy: &B) -> bool {
    original.key() == copy.key()
        && original.payload() == copy.payload()
        && same_timestamp(original.timestamp(), copy.timestamp())
        && match (original.headers(), copy.headers()) {
            (None, None) => true,
            (Some(a), Some(b)) => a
                .iter()
                .map(|h| (h.key, h.value))
                .eq(b.iter().map(|h| (h.key, h.value))),
            _ => false,
        }
}

/// Whether a copy's timestamp matches its original's. A target topic with
/// `message.timestamp.type=LogAppendTime` stamps every record with the time the broker
/// appended it, whatever the producer set, so such a copy's timestamp says nothing about
/// its original; the rest of the content still has to match.
fn same_timestamp(original: Timestamp, copy: Timestamp) -> bool {
    match copy {
        Timestamp::LogAppendTime(_) => true,
        _ => original.to_millis() == copy.to_millis(),
    }
}

/// The newest provenance header of a record (a record copied along a chain of clusters
/// carries one per hop; the last is ours).
fn provenance_of<M: Message>(msg: &M) -> Option<Provenance<'_>> {
    msg.headers()?
        .iter()
        .filter(|h| h.key == PROVENANCE_HEADER)
        .last()
        .and_then(|h| h.value.and_then(Provenance::decode))
}

/// The source topic ID a copy carries (anchors only), if it is text.
fn topic_id_of<M: Message>(msg: &M) -> Option<&str> {
    msg.headers()?
        .iter()
        .filter(|h| h.key == TOPIC_ID_HEADER)
        .last()
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = Provenance {
            cluster: "primary",
            topic: "orders.eu-1",
            partition: 7,
            offset: 123_456_789,
        };
        let mut buf = Vec::new();
        p.encode_into(&mut buf);
        assert_eq!(buf, b"primary/orders.eu-1/7/123456789");
        assert_eq!(Provenance::decode(&buf), Some(p));
        assert_eq!(Provenance::decode(b"garbage"), None);
        assert_eq!(Provenance::decode(b"a/b/x/1"), None);
    }

    #[test]
    fn a_header_of_any_hop_names_the_origin() {
        let origin = |headers: &[(&[u8], Option<&'static [u8]>)], cluster: &str| {
            headers.iter().find_map(|h| copied_from(*h, cluster))
        };
        let own: &[(&[u8], Option<&[u8]>)] = &[
            (b"trace", Some(b"x")),
            (b"strait.source", Some(b"east/orders/3/17")),
            (b"strait.source", Some(b"west/orders/3/40")),
        ];
        let found = origin(own, "east").expect("east is an origin");
        assert_eq!(
            (found.topic, found.partition, found.offset),
            ("orders", 3, 17)
        );
        assert!(origin(own, "west").is_some());
        assert!(origin(own, "north").is_none());
        let unreadable: &[(&[u8], Option<&[u8]>)] =
            &[(b"strait.source", None), (b"strait.source", Some(b"east"))];
        assert!(origin(unreadable, "east").is_none());
        let other_name: &[(&[u8], Option<&[u8]>)] = &[(b"source", Some(b"east/orders/3/17"))];
        assert!(origin(other_name, "east").is_none());
    }

    #[test]
    fn a_log_append_time_copy_matches_whatever_its_timestamp() {
        use Timestamp::{CreateTime, LogAppendTime, NotAvailable};
        assert!(same_timestamp(CreateTime(5), CreateTime(5)));
        assert!(!same_timestamp(CreateTime(5), CreateTime(6)));
        assert!(!same_timestamp(CreateTime(5), NotAvailable));
        assert!(same_timestamp(CreateTime(5), LogAppendTime(9_000)));
        assert!(same_timestamp(LogAppendTime(5), CreateTime(5)));
        assert!(!same_timestamp(LogAppendTime(5), CreateTime(6)));
    }
}
