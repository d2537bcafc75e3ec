//! The per-partition source→target offset map: written by the replicator from delivery
//! reports ([`PartitionOffsetMap`]), read back for translation ([`OffsetIndex`]).
//!
//! Both keep *segments*: runs where source and target offsets advance by exactly one. A
//! new segment starts only where a side skips (compaction, transaction markers, aborted
//! records, a moved log start on the source; foreign writes on the target), so size grows
//! with the number of gaps, not the number of records.

use std::collections::BTreeMap;

/// A run of `len` copied records in which source and target offsets both advance by one,
/// starting at (`source`, `target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    pub source: i64,
    pub target: i64,
    pub len: i64,
}

impl Segment {
    /// One past the last source offset.
    pub fn source_end(&self) -> i64 {
        self.source + self.len
    }
    /// One past the last target offset.
    pub fn target_end(&self) -> i64 {
        self.target + self.len
    }
    /// Whether `other` describes the same (source, target) pairs where the two overlap or
    /// touch, so that they can be merged into one run.
    fn continues_into(&self, other: &Segment) -> bool {
        other.source <= self.source_end()
            && other.source >= self.source
            && self.target + (other.source - self.source) == other.target
    }
}

/// How far a partition's map is complete: every source offset in `[from, through)` is
/// either in a segment or known to hold nothing a `read_committed` consumer would read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Coverage {
    /// Lowest source offset the map covers.
    pub from: i64,
    /// Source offset up to which (exclusive) the map covers.
    pub through: i64,
    /// Target offset after the newest copy: where a consumer starts that has read all of
    /// `[from, through)`.
    pub target_next: i64,
}

/// The start of a new map for a partition whose source topic was deleted and created
/// again: what was written for it before describes the old topic's records, and is
/// dropped. Its copies stay on the target, before `target_from`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Epoch {
    /// The new source topic's ID, where the source names it.
    pub topic_id: Option<String>,
    /// The target offset where the new topic's copies begin.
    pub target_from: i64,
}

/// One change to a partition's map, as persisted. Segments are keyed by their source
/// start, so rewriting a growing segment replaces it under log compaction. An epoch
/// (one key per partition) drops what came before it in the map topic: compaction keeps
/// the order of the records it keeps, so an old segment or coverage it has not replaced
/// still comes before the epoch, and a reader drops it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapUpdate {
    Segment(Segment),
    Coverage(Coverage),
    Epoch(Epoch),
}

/// The writer's map for one partition, fed in delivery order.
///
/// It keeps only what is not yet persisted plus the newest segment (which may still
/// grow), so the replicator's memory does not grow with the number of gaps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionOffsetMap {
    /// A new epoch not yet persisted: written before anything else.
    epoch: Option<Epoch>,
    /// Oldest first: the newest persisted segment (it may still grow), then new ones.
    segments: Vec<Segment>,
    /// Index of the first segment that changed since the last [`Self::take_updates`].
    dirty_from: Option<usize>,
    coverage: Option<Coverage>,
    coverage_dirty: bool,
}

impl PartitionOffsetMap {
    /// Records that the source record at `source` was written at `target`.
    /// Returns `false` (and changes nothing) when the pair is not after the last one.
    /// This is on the hot path: one comparison and an increment in the common case.
    pub fn record(&mut self, source: i64, target: i64) -> bool {
        match self.segments.last_mut() {
            Some(seg) if source < seg.source_end() || target < seg.target_end() => return false,
            Some(seg) if source == seg.source_end() && target == seg.target_end() => {
                seg.len += 1;
            }
            _ => self.segments.push(Segment {
                source,
                target,
                len: 1,
            }),
        }
        let changed = self.segments.len() - 1;
        self.dirty_from = Some(self.dirty_from.map_or(changed, |d| d.min(changed)));
        true
    }

    /// The newest replicated (source, target) pair.
    pub fn last(&self) -> Option<(i64, i64)> {
        self.segments
            .last()
            .map(|s| (s.source_end() - 1, s.target_end() - 1))
    }

    /// Declares where the map starts being complete (see [`Coverage::from`]), with the
    /// target offset a consumer of everything from there would start at.
    pub fn start_at(&mut self, from: i64, target_next: i64) {
        self.coverage = Some(Coverage {
            from,
            through: from,
            target_next,
        });
        self.coverage_dirty = true;
    }

    /// Declares that every source record below `through` has been handled: copied and
    /// acknowledged, or not a record a `read_committed` consumer sees. Never goes back.
    pub fn advance_through(&mut self, through: i64) {
        let target_next = self.last().map(|(_, t)| t + 1);
        if let Some(c) = &mut self.coverage {
            if through > c.through {
                c.through = through;
                self.coverage_dirty = true;
            }
            if let Some(t) = target_next.filter(|t| *t > c.target_next) {
                c.target_next = t;
                self.coverage_dirty = true;
            }
        }
    }

    pub fn coverage(&self) -> Option<Coverage> {
        self.coverage
    }

    /// Starts the map again for a source topic created again (see [`Epoch`]): nothing
    /// recorded so far is kept, and the epoch is the next update.
    pub fn begin_epoch(&mut self, epoch: Epoch) {
        *self = Self {
            epoch: Some(epoch),
            ..Self::default()
        };
    }

    /// Changes since the last call, oldest first: a new epoch first, coverage last (so
    /// a reader never sees coverage before the segments it vouches for). Drops the
    /// persisted segments.
    pub fn take_updates(&mut self) -> Vec<MapUpdate> {
        let mut updates: Vec<MapUpdate> = self
            .epoch
            .take()
            .map(MapUpdate::Epoch)
            .into_iter()
            .collect();
        if let Some(from) = self.dirty_from.take() {
            updates.extend(self.segments[from..].iter().map(|s| MapUpdate::Segment(*s)));
        }
        let n = self.segments.len();
        if n > 1 {
            self.segments.drain(..n - 1);
        }
        if self.coverage_dirty {
            if let Some(c) = self.coverage {
                updates.push(MapUpdate::Coverage(c));
            }
            self.coverage_dirty = false;
        }
        updates
    }
}

/// Where a group's committed source offset lands on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", content = "target_offset", rename_all = "snake_case")]
pub enum Translation {
    /// Start the target consumer here: it reads exactly the copies of the source records
    /// at or after the committed offset.
    Exact(i64),
    /// The replicator has not handled the source up to the committed offset yet, so the
    /// answer is not known. Never guessed.
    Pending,
    /// The committed offset is below where the map begins: records between the two may
    /// exist on the source but were never copied (or were copied before the map existed).
    BeforeMap { from: i64 },
}

/// The reader's map for one partition, rebuilt from persisted updates in any order of
/// writers: segments from different writers may overlap, as long as they agree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    /// Non-overlapping segments keyed by source start.
    segments: BTreeMap<i64, Segment>,
    coverage: Option<Coverage>,
}

impl OffsetIndex {
    pub fn apply(&mut self, update: MapUpdate) {
        match update {
            MapUpdate::Segment(seg) => self.insert(seg),
            MapUpdate::Epoch(_) => *self = Self::default(),
            MapUpdate::Coverage(c) => {
                // Every coverage ever written was true when written (its segments were
                // persisted before it), so the union of them is true too: a late write
                // from a stale owner cannot shrink what is known.
                self.coverage = Some(match self.coverage {
                    None => c,
                    Some(old) => Coverage {
                        from: old.from.min(c.from),
                        through: old.through.max(c.through),
                        target_next: old.target_next.max(c.target_next),
                    },
                });
            }
        }
    }

    fn insert(&mut self, mut seg: Segment) {
        if seg.len <= 0 {
            return;
        }
        // Merge with the predecessor if it runs into this one consistently.
        if let Some((&start, prev)) = self.segments.range(..=seg.source).next_back() {
            if prev.continues_into(&seg) {
                let end = prev.source_end().max(seg.source_end());
                seg = Segment {
                    source: start,
                    target: prev.target,
                    len: end - start,
                };
            } else if prev.source_end() > seg.source {
                // Disagreement: the newer write describes the current target; cut the
                // older one short.
                let cut = Segment {
                    len: seg.source - prev.source,
                    ..*prev
                };
                self.segments.insert(start, cut);
                if cut.len == 0 {
                    self.segments.remove(&start);
                }
            }
        }
        // Absorb or trim successors that start inside this one.
        let overlapping: Vec<Segment> = self
            .segments
            .range(seg.source + 1..seg.source_end())
            .map(|(_, s)| *s)
            .collect();
        for next in overlapping {
            self.segments.remove(&next.source);
            if seg.continues_into(&next) {
                let end = seg.source_end().max(next.source_end());
                seg.len = end - seg.source;
            } else if next.source_end() > seg.source_end() {
                let skip = seg.source_end() - next.source;
                self.segments.insert(
                    seg.source_end(),
                    Segment {
                        source: next.source + skip,
                        target: next.target + skip,
                        len: next.len - skip,
                    },
                );
            }
        }
        // Join a successor that starts exactly where this one ends.
        if let Some(next) = self.segments.get(&seg.source_end()).copied() {
            if seg.continues_into(&next) {
                self.segments.remove(&next.source);
                seg.len += next.len;
            }
        }
        self.segments.insert(seg.source, seg);
    }

    pub fn coverage(&self) -> Option<Coverage> {
        self.coverage
    }

    /// Number of segments: the map's size, which grows with gaps, not records.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The newest copy the map knows: (source offset, target offset).
    pub fn last_copy(&self) -> Option<(i64, i64)> {
        let seg = self.segments.values().next_back()?;
        Some((seg.source_end() - 1, seg.target_end() - 1))
    }

    /// The target offset of the copy of the source record at `source`, if the map says it
    /// was copied (`None` in a source gap or outside the map).
    pub fn copy_of(&self, source: i64) -> Option<i64> {
        let (_, seg) = self.segments.range(..=source).next_back()?;
        (source < seg.source_end()).then(|| seg.target + (source - seg.source))
    }

    /// The source offset whose copy is at target offset `target`, if the map says a copy
    /// is there: a target record the map does not name is not a copy (someone else's, a
    /// duplicate, or a copy the map never learned of).
    pub fn source_of(&self, target: i64) -> Option<i64> {
        // Copies are written in source order, so target offsets rise with source offsets.
        let seg = self
            .segments
            .values()
            .take_while(|s| s.target <= target)
            .last()?;
        (target < seg.target_end()).then(|| seg.source + (target - seg.target))
    }

    /// Source offset below which the replicator has handled everything: the larger of
    /// the persisted coverage and the end of the newest copy.
    pub fn handled_through(&self) -> Option<i64> {
        let coverage = self.coverage?;
        let last = self.segments.values().next_back();
        Some(last.map_or(coverage.through, |s| s.source_end().max(coverage.through)))
    }

    /// Target offsets below `target` that lie between copies but are not copies: records
    /// written to the target partition by someone else while the replicator was copying.
    /// A consumer starting at a translated offset would skip those, so a migration must
    /// not translate over them.
    pub fn foreign_below(&self, target: i64) -> i64 {
        let mut foreign = 0;
        let mut previous_end: Option<i64> = None;
        for seg in self.segments.values() {
            if let Some(end) = previous_end {
                if end >= target {
                    break;
                }
                foreign += (seg.target.min(target) - end).max(0);
            }
            previous_end = Some(seg.target_end());
        }
        foreign
    }

    /// The target offset at which a consumer reads exactly the copies of the source
    /// records at or after `committed` (the next offset the group would read).
    ///
    /// * `committed` inside a copied run: the matching target offset.
    /// * `committed` in a source gap (compacted away, transaction marker, aborted
    ///   records): the target offset of the next copied record.
    /// * `committed` after every copy but not beyond what the replicator has handled
    ///   ([`Coverage::through`], or the newest copy): the target offset after the newest
    ///   copy.
    /// * Beyond that: [`Translation::Pending`], because records the replicator has not
    ///   seen yet may still be copied.
    /// * Below [`Coverage::from`]: [`Translation::BeforeMap`].
    pub fn translate(&self, committed: i64) -> Translation {
        let Some(coverage) = self.coverage else {
            return Translation::Pending;
        };
        if committed < coverage.from {
            return Translation::BeforeMap {
                from: coverage.from,
            };
        }
        if let Some((_, seg)) = self.segments.range(..=committed).next_back() {
            if committed < seg.source_end() {
                return Translation::Exact(seg.target + (committed - seg.source));
            }
        }
        // Copies are written in source order, so a copy at or beyond `committed` proves
        // the replicator handled everything before it, even when the persisted coverage
        // lags behind (copies found on the target after a crash).
        let last = self.segments.values().next_back();
        let handled = last.map_or(coverage.through, |s| s.source_end().max(coverage.through));
        if committed > handled {
            return Translation::Pending;
        }
        match self.segments.range(committed..).next() {
            Some((_, next)) => Translation::Exact(next.target),
            None => Translation::Exact(last.map_or(coverage.target_next, |s| {
                s.target_end().max(coverage.target_next)
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn index_of(map: &mut PartitionOffsetMap) -> OffsetIndex {
        let mut index = OffsetIndex::default();
        for u in map.take_updates() {
            index.apply(u);
        }
        index
    }

    #[test]
    fn an_epoch_drops_the_old_topics_map_and_the_new_one_starts_after_its_copies() {
        let mut map = PartitionOffsetMap::default();
        map.start_at(0, 0);
        for o in 0..1_000 {
            map.record(o, o);
        }
        map.advance_through(1_000);
        let mut index = OffsetIndex::default();
        for u in map.take_updates() {
            index.apply(u);
        }
        assert_eq!(index.translate(500), Translation::Exact(500));

        // The topic created again: its offsets start at 0, its copies at 1,000.
        map.begin_epoch(Epoch {
            topic_id: Some("new".into()),
            target_from: 1_000,
        });
        map.start_at(0, 1_000);
        for o in 0..10 {
            map.record(o, 1_000 + o);
        }
        map.advance_through(10);
        let updates = map.take_updates();
        assert!(
            matches!(updates.first(), Some(MapUpdate::Epoch(e)) if e.target_from == 1_000),
            "{updates:?}"
        );
        for u in updates {
            index.apply(u);
        }
        assert_eq!(index.last_copy(), Some((9, 1_009)));
        assert_eq!(index.translate(5), Translation::Exact(1_005));
        assert_eq!(
            index.coverage(),
            Some(Coverage {
                from: 0,
                through: 10,
                target_next: 1_010
            }),
            "the old coverage is not merged into the new one"
        );
        // The old topic's records beyond the new topic's are not vouched for.
        assert!(!matches!(index.translate(500), Translation::Exact(_)));
    }

    #[test]
    fn contiguous_copy_is_one_segment() {
        let mut m = PartitionOffsetMap::default();
        m.start_at(0, 50);
        for i in 0..1000 {
            assert!(m.record(i, i + 50));
        }
        m.advance_through(1000);
        let updates = m.take_updates();
        assert_eq!(updates.len(), 2, "one segment and the coverage");
        let mut index = OffsetIndex::default();
        updates.into_iter().for_each(|u| index.apply(u));
        assert_eq!(index.segment_count(), 1);
        assert_eq!(index.translate(0), Translation::Exact(50));
        assert_eq!(index.translate(999), Translation::Exact(1049));
        assert_eq!(index.translate(1000), Translation::Exact(1050), "caught up");
        assert_eq!(index.translate(1001), Translation::Pending);
        assert_eq!(index.copy_of(0), Some(50));
        assert_eq!(index.copy_of(999), Some(1049));
        assert_eq!(index.copy_of(1000), None, "not copied (yet)");
        assert_eq!(index.source_of(50), Some(0));
        assert_eq!(index.source_of(1049), Some(999));
        assert_eq!(index.source_of(49), None, "before the first copy");
        assert_eq!(index.source_of(1050), None, "after the newest copy");
        assert_eq!(index.last_copy(), Some((999, 1049)));
        assert_eq!(index.handled_through(), Some(1000));
        assert_eq!(index.foreign_below(2000), 0);
        assert_eq!(OffsetIndex::default().last_copy(), None);
    }

    #[test]
    fn gaps_and_trailing_markers() {
        let mut m = PartitionOffsetMap::default();
        m.start_at(0, 0);
        // Source 0..=4 copied, 5..=9 compacted away, 10..=14 copied, 15 a commit marker.
        for (t, s) in (0..5).chain(10..15).enumerate() {
            m.record(s, t as i64);
        }
        m.advance_through(16);
        let index = index_of(&mut m);
        assert_eq!(index.segment_count(), 2);
        assert_eq!(index.translate(4), Translation::Exact(4));
        assert_eq!(index.translate(5), Translation::Exact(5));
        assert_eq!(index.translate(9), Translation::Exact(5));
        assert_eq!(index.translate(10), Translation::Exact(5));
        assert_eq!(index.translate(11), Translation::Exact(6));
        assert_eq!(index.translate(15), Translation::Exact(10), "on the marker");
        assert_eq!(
            index.translate(16),
            Translation::Exact(10),
            "after the marker"
        );
        assert_eq!(index.translate(17), Translation::Pending);
    }

    #[test]
    fn foreign_writes_between_copies_are_counted() {
        let mut m = PartitionOffsetMap::default();
        m.start_at(0, 0);
        // Copies at target 0..5, someone else's records at 5..8, copies at 8..10.
        for s in 0..5 {
            m.record(s, s);
        }
        for s in 5..7 {
            m.record(s, s + 3);
        }
        m.advance_through(7);
        let index = index_of(&mut m);
        assert_eq!(index.source_of(4), Some(4));
        assert_eq!(index.source_of(5), None, "someone else's record");
        assert_eq!(index.source_of(7), None, "someone else's record");
        assert_eq!(index.source_of(8), Some(5));
        assert_eq!(index.foreign_below(5), 0);
        assert_eq!(index.foreign_below(6), 1);
        assert_eq!(index.foreign_below(8), 3);
        assert_eq!(index.foreign_below(10), 3);
        assert_eq!(index.translate(7), Translation::Exact(10));
    }

    #[test]
    fn below_the_map_and_without_coverage() {
        let mut m = PartitionOffsetMap::default();
        m.record(100, 0);
        let mut index = index_of(&mut m);
        assert_eq!(index.translate(100), Translation::Pending);
        m.start_at(100, 0);
        m.advance_through(101);
        m.take_updates().into_iter().for_each(|u| index.apply(u));
        assert_eq!(index.translate(99), Translation::BeforeMap { from: 100 });
        assert_eq!(index.translate(100), Translation::Exact(0));
    }

    #[test]
    fn out_of_order_is_refused() {
        let mut m = PartitionOffsetMap::default();
        assert!(m.record(5, 0));
        assert!(!m.record(5, 1), "repeated source offset");
        assert!(!m.record(6, 0), "repeated target offset");
        assert_eq!(m.last(), Some((5, 0)));
    }

    #[test]
    fn writer_keeps_only_the_newest_segment() {
        let mut m = PartitionOffsetMap::default();
        for s in (0..100).step_by(2) {
            m.record(s, s / 2);
        }
        assert_eq!(m.take_updates().len(), 50);
        assert_eq!(m.segments.len(), 1);
        assert!(m.take_updates().is_empty(), "nothing changed");
        m.record(100, 50);
        assert_eq!(m.take_updates().len(), 1);
    }

    #[test]
    fn overlapping_writers_merge() {
        let mut index = OffsetIndex::default();
        index.apply(MapUpdate::Segment(Segment {
            source: 0,
            target: 10,
            len: 100,
        }));
        // A new owner rebuilt part of the same run and continued it.
        index.apply(MapUpdate::Segment(Segment {
            source: 50,
            target: 60,
            len: 100,
        }));
        // A growing segment rewritten under its key.
        index.apply(MapUpdate::Segment(Segment {
            source: 0,
            target: 10,
            len: 120,
        }));
        assert_eq!(index.segment_count(), 1);
        assert_eq!(
            index.segments.values().next().copied(),
            Some(Segment {
                source: 0,
                target: 10,
                len: 150
            })
        );
    }

    /// Pairs with random gaps on both sides, from random writers, in random persistence
    /// batches.
    fn pairs_strategy() -> impl Strategy<Value = (Vec<(i64, i64)>, i64)> {
        (
            proptest::collection::vec((1i64..5, 1i64..4), 1..200),
            0i64..4,
        )
            .prop_map(|(steps, trailing)| {
                let (mut s, mut t) = (0i64, 0i64);
                let pairs = steps
                    .into_iter()
                    .map(|(ds, dt)| {
                        s += ds;
                        t += dt;
                        (s, t)
                    })
                    .collect::<Vec<_>>();
                (pairs, trailing)
            })
    }

    proptest! {
        /// Translation equals a brute-force search for the first copied record at or
        /// after the committed offset, however the updates were batched and replayed.
        #[test]
        fn translate_matches_brute_force(
            (pairs, trailing) in pairs_strategy(),
            batch in 1usize..50,
            replay_from in 0usize..200,
            probe in 0i64..1000,
        ) {
            let mut m = PartitionOffsetMap::default();
            m.start_at(1, 1);
            let mut persisted = Vec::new();
            for (i, (s, t)) in pairs.iter().enumerate() {
                prop_assert!(m.record(*s, *t));
                if i % batch == 0 {
                    m.advance_through(s + 1);
                    persisted.extend(m.take_updates());
                }
            }
            let (last_s, last_t) = *pairs.last().expect("non-empty");
            let through = last_s + 1 + trailing;
            m.advance_through(through);
            persisted.extend(m.take_updates());
            // A second writer (after a crash) re-sends a tail of what was persisted.
            let replay = persisted[replay_from.min(persisted.len())..].to_vec();
            let mut index = OffsetIndex::default();
            for u in persisted.into_iter().chain(replay) {
                index.apply(u);
            }
            let expected = if probe < 1 {
                Translation::BeforeMap { from: 1 }
            } else if probe > through {
                Translation::Pending
            } else {
                pairs.iter().find(|(src, _)| *src >= probe)
                    .map_or(Translation::Exact(last_t + 1), |(_, tgt)| Translation::Exact(*tgt))
            };
            prop_assert_eq!(index.translate(probe), expected);
            // And back: each copy's target offset names its source offset, nothing else.
            let copies: BTreeMap<i64, i64> = pairs.iter().map(|(s, t)| (*t, *s)).collect();
            for target in 0..=last_t + 2 {
                prop_assert_eq!(index.source_of(target), copies.get(&target).copied());
            }
            // Segments only where a side skipped.
            let gaps = pairs.windows(2)
                .filter(|w| w[1].0 != w[0].0 + 1 || w[1].1 != w[0].1 + 1).count();
            prop_assert_eq!(index.segment_count(), gaps + 1);
        }

        /// Checkpoints never go backwards unless the group does: translation is
        /// monotonic in the committed offset, also while the map grows between the two
        /// translations (a later checkpoint round sees more of the map).
        #[test]
        fn translation_never_goes_backwards(
            (pairs, trailing) in pairs_strategy(),
            split in 0usize..200,
            first in 0i64..1000,
            step in 0i64..100,
        ) {
            let mut m = PartitionOffsetMap::default();
            m.start_at(1, 1);
            let split = split.min(pairs.len());
            let mut early = OffsetIndex::default();
            for (s, t) in &pairs[..split] {
                prop_assert!(m.record(*s, *t));
            }
            if let Some((s, _)) = pairs[..split].last() {
                m.advance_through(s + 1);
            }
            let updates = m.take_updates();
            updates.iter().for_each(|u| early.apply(u.clone()));
            let mut late = early.clone();
            for (s, t) in &pairs[split..] {
                prop_assert!(m.record(*s, *t));
            }
            let (last_s, _) = *pairs.last().expect("non-empty");
            m.advance_through(last_s + 1 + trailing);
            m.take_updates().into_iter().for_each(|u| late.apply(u));
            let second = first + step;
            let exact = |t: Translation| match t {
                Translation::Exact(o) => Some(o),
                _ => None,
            };
            if let (Some(a), Some(b)) = (exact(early.translate(first)), exact(late.translate(second))) {
                prop_assert!(b >= a, "commit {first} -> {a}, later commit {second} -> {b}");
            }
            if let (Some(a), Some(b)) = (exact(late.translate(first)), exact(late.translate(second))) {
                prop_assert!(b >= a);
            }
        }
    }
}
