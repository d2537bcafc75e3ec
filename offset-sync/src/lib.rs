//! The exact source→target offset map.
//!
//! Every record the replicator copies is acknowledged by the target with the offset it was
//! written at. Those (source offset → target offset) pairs arrive here, in order per
//! partition. We keep them as *segments*: runs where both offsets advance by exactly one.
//! A new segment starts only where either side skips (compaction, transaction markers,
//! aborted records, a moved log start on the source; foreign writes on the target), so
//! memory grows with the number of gaps, not with the number of records.
//!
//! This crate only knows offsets; it never talks to Kafka. The replicator keeps one
//! [`PartitionOffsetMap`] per source partition and feeds it from delivery reports;
//! persistence and consumer-group translation build on it.

/// A run of `len` copied records in which source and target offsets both advance by one,
/// starting at (`source`, `target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub source: i64,
    pub target: i64,
    pub len: i64,
}

impl Segment {
    fn last_source(&self) -> i64 {
        self.source + self.len - 1
    }
    fn last_target(&self) -> i64 {
        self.target + self.len - 1
    }
}

/// Where a source offset lands on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// The target offset of the first replicated record at or after the source offset.
    Exact(i64),
    /// Nothing at or after this source offset has been replicated yet, so the answer is
    /// not known. Never guessed.
    Pending,
}

/// The map for one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionOffsetMap {
    segments: Vec<Segment>,
}

impl PartitionOffsetMap {
    /// Records that the source record at `source` was written at `target`.
    /// Returns `false` (and changes nothing) when the pair is not after the last one.
    pub fn record(&mut self, source: i64, target: i64) -> bool {
        match self.segments.last_mut() {
            Some(seg) if source <= seg.last_source() || target <= seg.last_target() => {
                return false
            }
            Some(seg) if source == seg.last_source() + 1 && target == seg.last_target() + 1 => {
                seg.len += 1;
            }
            _ => self.segments.push(Segment {
                source,
                target,
                len: 1,
            }),
        }
        true
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The newest replicated (source, target) pair.
    pub fn last(&self) -> Option<(i64, i64)> {
        self.segments
            .last()
            .map(|s| (s.last_source(), s.last_target()))
    }

    /// The target offset of the first replicated record whose source offset is ≥ `source`.
    pub fn translate(&self, source: i64) -> Translation {
        // The first segment that still has records at or after `source`.
        let idx = self.segments.partition_point(|s| s.last_source() < source);
        match self.segments.get(idx) {
            None => Translation::Pending,
            // `source` is inside this segment, or in the gap before it.
            Some(seg) => Translation::Exact(seg.target + (source - seg.source).max(0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn contiguous_copy_is_one_segment() {
        let mut m = PartitionOffsetMap::default();
        for i in 0..1000 {
            assert!(m.record(i, i + 50));
        }
        assert_eq!(m.segments().len(), 1);
        assert_eq!(m.translate(0), Translation::Exact(50));
        assert_eq!(m.translate(999), Translation::Exact(1049));
        assert_eq!(m.translate(1000), Translation::Pending);
    }

    #[test]
    fn source_gap_maps_to_next_copied_record() {
        let mut m = PartitionOffsetMap::default();
        // Source 0..=4 copied, 5..=9 compacted away, 10.. copied.
        for (t, s) in (0..5).chain(10..15).enumerate() {
            m.record(s, t as i64);
        }
        assert_eq!(m.segments().len(), 2);
        assert_eq!(m.translate(4), Translation::Exact(4));
        assert_eq!(m.translate(5), Translation::Exact(5));
        assert_eq!(m.translate(9), Translation::Exact(5));
        assert_eq!(m.translate(10), Translation::Exact(5));
        assert_eq!(m.translate(11), Translation::Exact(6));
    }

    #[test]
    fn out_of_order_is_refused() {
        let mut m = PartitionOffsetMap::default();
        assert!(m.record(5, 0));
        assert!(!m.record(5, 1), "repeated source offset");
        assert!(!m.record(6, 0), "repeated target offset");
        assert_eq!(m.last(), Some((5, 0)));
    }

    proptest! {
        /// For random gaps on both sides, translation equals a brute-force search for the
        /// first copied record at or after the source offset.
        #[test]
        fn translate_matches_brute_force(
            steps in proptest::collection::vec((1i64..5, 1i64..4), 1..200),
            probe in 0i64..1000,
        ) {
            let mut m = PartitionOffsetMap::default();
            let (mut s, mut t) = (0i64, 0i64);
            let mut pairs = Vec::new();
            for (ds, dt) in steps {
                s += ds;
                t += dt;
                prop_assert!(m.record(s, t));
                pairs.push((s, t));
            }
            let expected = pairs
                .iter()
                .find(|(src, _)| *src >= probe)
                .map_or(Translation::Pending, |(_, tgt)| Translation::Exact(*tgt));
            prop_assert_eq!(m.translate(probe), expected);
            // Segments only where a side skipped.
            let gaps = pairs.windows(2).filter(|w| w[1].0 != w[0].0 + 1 || w[1].1 != w[0].1 + 1).count();
            prop_assert_eq!(m.segments().len(), gaps + 1);
        }
    }
}
