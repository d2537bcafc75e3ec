//! Which records of a target partition are copies of which source records: the tail
//! check's decisions, apart from its reads (those are in `provenance.rs`).
//!
//! The target partition is read oldest first. A record with a provenance header of ours
//! names its source offset. A record without one is the copy of the source record after
//! the previous copy if its content matches that record's (key, value, timestamp,
//! headers); otherwise it is someone else's record, and the next one is compared with the
//! same source record. Before the first named record nothing can be expected, so nothing
//! is named.
//!
//! A source record deleted since it was copied (retention, DeleteRecords) cannot be
//! compared: the comparison is then made with the first record the source still has, so
//! every copy from the source's log start on is named, and copies of deleted records stay
//! unnamed. [`FoundCopies::named_from`] says so, and a map rebuilt from these copies
//! alone begins there ([`FoundCopies::rebuilt_map_start`]): a translation below it would
//! otherwise skip the unnamed copies.

use crate::source_ids::same_topic_id;

/// Copies of one source partition found on the target.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FoundCopies {
    /// (source offset, target offset) of each copy named, oldest first.
    pub pairs: Vec<(i64, i64)>,
    /// Set when records were passed over that may be copies of source records below this
    /// offset, the source's log start: their originals are gone, so nothing can name
    /// them, and a map must not vouch for source offsets below it.
    pub named_from: Option<i64>,
    /// The target end the records were read up to, where known: every record before it
    /// after the newest copy named is not a copy.
    pub scanned_to: Option<i64>,
    /// The source topic ID on the newest copy named that carried one (anchors do, where
    /// the source names its topics' IDs), and that copy's target offset: which
    /// incarnation of the topic was copied.
    pub topic_id: Option<(String, i64)>,
}

impl FoundCopies {
    pub fn last(&self) -> Option<(i64, i64)> {
        self.pairs.last().copied()
    }

    /// Where a map rebuilt from these copies alone begins: the source offset from which
    /// every copy is named, and the target offset a consumer of everything from there
    /// starts at (the first such copy, else `target_end`, where the next copy lands).
    /// `None` if nothing was named.
    ///
    /// `source_head`: the source's log start and the first record it holds at or after
    /// it. When the first copy named is that record's, nothing a consumer could read lies
    /// before it on the source, and the map begins at the log start: a group committed
    /// on a compacted-away offset before it translates, as it did before the rebuild.
    pub fn rebuilt_map_start(
        &self,
        target_end: i64,
        source_head: Option<(i64, Option<i64>)>,
    ) -> Option<(i64, i64)> {
        let (first, _) = *self.pairs.first()?;
        let first = match source_head {
            Some((log_start, Some(head))) if head == first && self.named_from.is_none() => {
                log_start.min(first)
            }
            _ => first,
        };
        let from = self.named_from.map_or(first, |named| named.max(first));
        let target = self
            .pairs
            .iter()
            .find(|(source, _)| *source >= from)
            .map_or(target_end, |(_, target)| *target);
        Some((from, target))
    }
}

/// The naming of one target partition's records, fed one at a time, oldest first.
#[derive(Debug, Default)]
pub(crate) struct CopyNamer {
    /// The source offset the next copy without a header would be a copy of.
    next_source: Option<i64>,
    found: FoundCopies,
}

impl CopyNamer {
    /// `next_source`: what the first record read is a copy of if it has no header, when
    /// known (the position recorded with a commit, or the map's end).
    pub(crate) fn new(next_source: Option<i64>) -> Self {
        Self {
            next_source,
            found: FoundCopies::default(),
        }
    }

    /// A record whose header of ours names `source`. Copies are written in source order,
    /// so one naming a record before the copy expected next is a duplicate (written
    /// again, by someone else or by an instance that no longer owned the partition), not
    /// a copy in the sequence, and is passed over.
    pub(crate) fn named(&mut self, source: i64, target: i64) {
        if self.next_source.is_some_and(|next| source < next) {
            return;
        }
        self.found.pairs.push((source, target));
        self.next_source = Some(source + 1);
    }

    /// A record whose header of ours names `source`, with the source topic ID it
    /// carries, if any. An ID other than the previous anchor's starts the naming again:
    /// the source topic was created again, and its copies (from its own offsets, which
    /// start again) follow the old topic's, which are not copies of it.
    pub(crate) fn named_with_id(&mut self, source: i64, target: i64, topic_id: Option<&str>) {
        let another_topic = match (&self.found.topic_id, topic_id) {
            (Some((previous, _)), Some(id)) => !same_topic_id(previous, id),
            _ => false,
        };
        if another_topic {
            self.found = FoundCopies::default();
            self.next_source = None;
        }
        let before = self.found.pairs.len();
        self.named(source, target);
        if let Some(id) = topic_id.filter(|_| self.found.pairs.len() > before) {
            self.found.topic_id = Some((id.to_string(), target));
        }
    }

    /// The source offset a record without our header must be compared with: the first
    /// record the source holds at or after it, since deleted or skipped records (gaps)
    /// have no copy. `None`: the record cannot be named.
    pub(crate) fn expected(&self) -> Option<i64> {
        self.next_source
    }

    /// A record without our header at `target`, compared with the source record at
    /// `compared` (the first at or after [`Self::expected`] that the source holds, or
    /// `None` if it holds none). `same`: whether the contents matched. `source_start`:
    /// the source's log start.
    pub(crate) fn compared(
        &mut self,
        target: i64,
        compared: Option<i64>,
        same: bool,
        source_start: i64,
    ) {
        let Some(expected) = self.next_source else {
            return;
        };
        match compared {
            Some(source) if same => self.named(source, target),
            _ if expected < source_start => self.found.named_from = Some(source_start),
            _ => {}
        }
    }

    pub(crate) fn finish(self) -> FoundCopies {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use strait_offset_sync::{OffsetIndex, PartitionOffsetMap, Translation};

    #[test]
    fn an_anchor_of_another_topic_id_starts_the_naming_again() {
        let mut namer = CopyNamer::new(None);
        namer.named_with_id(0, 0, Some("old"));
        namer.named(1, 1);
        namer.named_with_id(2, 2, Some("old"));
        // The topic created again, copied after the old one's copies.
        namer.named_with_id(0, 3, Some("new"));
        namer.named(1, 4);
        let found = namer.finish();
        assert_eq!(found.pairs, vec![(0, 3), (1, 4)]);
        assert_eq!(found.topic_id, Some(("new".to_string(), 3)));
    }

    #[test]
    fn a_header_naming_an_earlier_record_is_a_duplicate() {
        let mut namer = CopyNamer::new(Some(30));
        namer.named(30, 100);
        // The first copies again, anchor first, then the one after it by content.
        namer.named(0, 101);
        namer.compared(102, Some(31), false, 0);
        namer.named(31, 103);
        assert_eq!(namer.finish().pairs, vec![(30, 100), (31, 103)]);
    }

    /// A source partition and its copy, as they are on the clusters.
    #[derive(Debug)]
    struct History {
        /// Source offsets with a record a `read_committed` consumer sees, ascending.
        visible: Vec<i64>,
        /// One past the last source offset.
        source_end: i64,
        /// The source's log start now (records below it are deleted).
        log_start: i64,
        /// The target partition from offset 0: `Some(source offset)` for a copy, with
        /// whether it carries the header; `None` for someone else's record.
        target: Vec<(Option<i64>, bool)>,
    }

    /// Source records with random gaps, all copied in order with anchors as the
    /// replicator writes them (the first copy, the first after a gap, every
    /// `interval`th), someone else's records in between, and a random log start.
    fn histories() -> impl Strategy<Value = History> {
        (
            proptest::collection::vec((any::<bool>(), 0usize..3), 1..120),
            2i64..8,
            0.0f64..1.2,
        )
            .prop_map(|(steps, interval, start_at)| {
                let mut visible = Vec::new();
                let mut target = Vec::new();
                let (mut offset, mut since_anchor, mut previous) = (0i64, 0i64, None);
                for (gap, foreign) in steps {
                    if gap {
                        offset += 1;
                    }
                    for _ in 0..foreign {
                        target.push((None, false));
                    }
                    let anchor =
                        previous.is_none_or(|p| p + 1 != offset) || since_anchor + 1 >= interval;
                    since_anchor = if anchor { 0 } else { since_anchor + 1 };
                    target.push((Some(offset), anchor));
                    visible.push(offset);
                    previous = Some(offset);
                    offset += 1;
                }
                let log_start = ((offset as f64) * start_at) as i64;
                History {
                    visible,
                    source_end: offset,
                    log_start: log_start.min(offset),
                    target,
                }
            })
    }

    /// What the tail check names, reading the whole target partition from 0 (a map
    /// rebuilt after its topic was deleted).
    fn name(history: &History) -> FoundCopies {
        let mut namer = CopyNamer::new(None);
        for (target, &(copy_of, anchor)) in history.target.iter().enumerate() {
            let target = target as i64;
            match (copy_of, anchor) {
                (Some(source), true) => namer.named(source, target),
                _ => {
                    let Some(expected) = namer.expected() else {
                        continue;
                    };
                    let compared = history
                        .visible
                        .iter()
                        .copied()
                        .find(|&o| o >= expected.max(history.log_start));
                    // Contents are equal exactly when it is the copy of that record.
                    let same = compared.is_some() && compared == copy_of;
                    namer.compared(target, compared, same, history.log_start);
                }
            }
        }
        namer.finish()
    }

    proptest! {
        /// A map rebuilt from the copies the tail check names never translates a
        /// committed offset past a copy it could not name (a copy of a record deleted
        /// from the source since): the answer is the first copy of a record at or after
        /// the committed offset, or no answer (before map). From where the map begins,
        /// every answer is exact.
        #[test]
        fn a_rebuilt_map_never_translates_past_an_unnamed_copy(history in histories()) {
            let found = name(&history);
            let target_end = history.target.len() as i64;
            // The first copy is always an anchor, so something is named.
            let head = history.visible.iter().copied().find(|&o| o >= history.log_start);
            let (from, target_next) = found
                .rebuilt_map_start(target_end, Some((history.log_start, head)))
                .expect("named");
            let mut map = PartitionOffsetMap::default();
            map.start_at(from, target_next);
            for &(source, target) in &found.pairs {
                prop_assert!(map.record(source, target));
            }
            map.advance_through(history.source_end);
            let mut index = OffsetIndex::default();
            for update in map.take_updates() {
                index.apply(update);
            }
            for committed in 0..=history.source_end {
                // Where a consumer of the target must start: the first copy of a record
                // at or after the committed offset, named or not; past every copy, the
                // offset after the newest.
                let copy_at = |t: &usize| history.target[*t].0.is_some();
                let after_newest = (0..history.target.len()).rev().find(copy_at).map_or(0, |t| t as i64 + 1);
                let truth = history
                    .target
                    .iter()
                    .position(|(copy_of, _)| copy_of.is_some_and(|s| s >= committed))
                    .map_or(after_newest, |t| t as i64);
                match index.translate(committed) {
                    Translation::Exact(t) => prop_assert_eq!(
                        t, truth, "committed {} (map from {}, named from {:?})",
                        committed, from, found.named_from
                    ),
                    other => prop_assert!(
                        committed < from,
                        "committed {} from the map's start {} on: {:?}", committed, from, other
                    ),
                }
            }
        }
    }
}
