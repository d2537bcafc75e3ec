//! Where a consumer group continues on the primary after the failback, from where it
//! stands on the secondary. Pure: the maps and positions are read by the caller.
//!
//! On the secondary a group reads two runs of records per partition: the copies of the
//! primary's records (made by the forward flow before the failover), then what the
//! applications wrote there since (which the reverse flow copies back). Under `identity`
//! naming both lie in one partition, the copies first; under `prefix` naming the copies
//! lie in `<primary>.<topic>` and the applications' records in `<topic>`.
//!
//! On the primary the same partition holds the originals of the copies, then the records
//! the primary never shipped (`failback plan`), then the reverse flow's copies of the
//! applications' records. So:
//! - a group still inside the copies continues at the original of the next copy: it then
//!   reads the rest of the originals, the records never shipped (which it never saw on
//!   the secondary), and everything copied back;
//! - a group past the copies continues at the copy of its next record on the secondary,
//!   with the reverse flow's map: the records never shipped lie before it, and are not
//!   read (`failback keep` holds them on the secondary);
//! - a group that read some of the applications' records before it finished the copies
//!   (only possible under `prefix` naming, two topics) has no one position on the primary
//!   that continues both, and is refused.

use strait_offset_sync::{OffsetIndex, Translation};

/// A group's committed offsets on the secondary for one primary partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OnSecondary {
    /// In the partition holding the copies.
    pub copies: Option<i64>,
    /// In the partition holding the applications' records (under identity naming, the
    /// same partition and the same offset as `copies`).
    pub applications: Option<i64>,
}

/// Where the runs begin and end on the secondary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Runs {
    /// The offset after the newest copy of a primary record.
    pub copies_end: i64,
    /// Where the applications' records begin: where the reverse flow started.
    pub applications_start: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Continue at this primary offset; `in_copies`: the group was inside the copies.
    Exact { offset: i64, in_copies: bool },
    /// The reverse flow has not copied back far enough yet.
    Pending,
    /// The group's position on the secondary is below where the map that would place it
    /// begins: the forward flow's for a position inside the copies, the reverse flow's
    /// past them.
    BeforeMap,
    /// The group never committed on this partition.
    NoCommit,
    /// The group read applications' records before it finished the copies.
    ReadBoth,
}

/// Where the group continues on the primary. `forward`: the forward flow's map (primary
/// → secondary) of this partition, with the copies found after it; `reverse`: the
/// reverse flow's map (secondary → primary), `None` if it has copied nothing here yet.
pub(crate) fn place(
    at: OnSecondary,
    runs: Runs,
    forward: Option<&OffsetIndex>,
    reverse: Option<&OffsetIndex>,
) -> Placement {
    if at.copies.is_none() && at.applications.is_none() {
        return Placement::NoCommit;
    }
    let inside_copies = at.copies.filter(|&c| c < runs.copies_end);
    let read_applications = at.applications.filter(|&a| a > runs.applications_start);
    if let Some(next) = inside_copies {
        if read_applications.is_some() {
            return Placement::ReadBoth;
        }
        // Copies below the map's first one are not named by it (the map began after
        // them): their originals are not known.
        let Some(forward) = forward else {
            return Placement::BeforeMap;
        };
        let first_copy = forward
            .coverage()
            .and_then(|c| match forward.translate(c.from) {
                Translation::Exact(target) => Some(target),
                _ => None,
            });
        if first_copy.is_none_or(|first| next < first) {
            return Placement::BeforeMap;
        }
        // The original of the first copy at or after the group's position. Target
        // offsets between copies that are no copy (the forward flow's transaction
        // markers) are passed over.
        let original = (next..runs.copies_end).find_map(|t| forward.source_of(t));
        if let Some(offset) = original {
            return Placement::Exact {
                offset,
                in_copies: true,
            };
        }
    }
    let next = at
        .applications
        .map_or(runs.applications_start, |a| a.max(runs.applications_start));
    match reverse.map(|r| r.translate(next)) {
        Some(Translation::Exact(offset)) => Placement::Exact {
            offset,
            in_copies: false,
        },
        Some(Translation::BeforeMap { .. }) => Placement::BeforeMap,
        Some(Translation::Pending) | None => Placement::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_offset_sync::PartitionOffsetMap;

    /// A map of copies: each (source offset, target offset), handled through the last.
    fn map(from: (i64, i64), copies: &[(i64, i64)]) -> OffsetIndex {
        let mut map = PartitionOffsetMap::default();
        map.start_at(from.0, from.1);
        for &(source, target) in copies {
            map.record(source, target);
        }
        if let Some(&(source, _)) = copies.last() {
            map.advance_through(source + 1);
        }
        let mut index = OffsetIndex::default();
        for u in map.take_updates() {
            index.apply(u);
        }
        index
    }

    /// The forward flow copied primary offsets 0..100 to secondary offsets 0..100; the
    /// primary holds 30 more it never shipped (100..130); the applications wrote 50
    /// records on the secondary at 100..150 (identity naming), which the reverse flow
    /// copied back to the primary at 130..180.
    fn identity() -> (Runs, OffsetIndex, OffsetIndex) {
        let forward: Vec<(i64, i64)> = (0..100).map(|o| (o, o)).collect();
        let reverse: Vec<(i64, i64)> = (100..150).map(|o| (o, o + 30)).collect();
        (
            Runs {
                copies_end: 100,
                applications_start: 100,
            },
            map((0, 0), &forward),
            map((100, 130), &reverse),
        )
    }

    fn at(offset: i64) -> OnSecondary {
        OnSecondary {
            copies: Some(offset),
            applications: Some(offset),
        }
    }

    #[test]
    fn a_group_inside_the_copies_continues_at_the_next_original() {
        let (runs, forward, reverse) = identity();
        assert_eq!(
            place(at(40), runs, Some(&forward), Some(&reverse)),
            Placement::Exact {
                offset: 40,
                in_copies: true
            }
        );
        assert_eq!(
            place(at(0), runs, Some(&forward), Some(&reverse)),
            Placement::Exact {
                offset: 0,
                in_copies: true
            }
        );
    }

    #[test]
    fn a_group_past_the_copies_skips_what_the_primary_never_shipped() {
        let (runs, forward, reverse) = identity();
        // At the end of the copies: the first record copied back, past 100..130.
        assert_eq!(
            place(at(100), runs, Some(&forward), Some(&reverse)),
            Placement::Exact {
                offset: 130,
                in_copies: false
            }
        );
        assert_eq!(
            place(at(120), runs, Some(&forward), Some(&reverse)),
            Placement::Exact {
                offset: 150,
                in_copies: false
            }
        );
        // Read everything: after the last copy back.
        assert_eq!(
            place(at(150), runs, Some(&forward), Some(&reverse)),
            Placement::Exact {
                offset: 180,
                in_copies: false
            }
        );
    }

    #[test]
    fn a_position_the_reverse_flow_has_not_reached_is_pending() {
        let (runs, forward, reverse) = identity();
        assert_eq!(
            place(at(151), runs, Some(&forward), Some(&reverse)),
            Placement::Pending
        );
        assert_eq!(
            place(at(120), runs, Some(&forward), None),
            Placement::Pending
        );
    }

    #[test]
    fn a_position_below_the_forward_maps_first_copy_is_not_guessed() {
        // The map began at primary offset 50, copied to 50: copies below it are not named.
        let copies: Vec<(i64, i64)> = (50..100).map(|o| (o, o)).collect();
        let forward = map((50, 50), &copies);
        let (runs, _, reverse) = identity();
        assert_eq!(
            place(at(10), runs, Some(&forward), Some(&reverse)),
            Placement::BeforeMap
        );
        assert_eq!(
            place(at(10), runs, None, Some(&reverse)),
            Placement::BeforeMap
        );
        assert_eq!(
            place(at(60), runs, Some(&forward), Some(&reverse)),
            Placement::Exact {
                offset: 60,
                in_copies: true
            }
        );
    }

    #[test]
    fn transaction_markers_between_copies_are_passed_over() {
        // Copies at 0..10 and 11..21 (a marker at 10).
        let copies: Vec<(i64, i64)> = (0..20).map(|o| (o, o + i64::from(o >= 10))).collect();
        let forward = map((0, 0), &copies);
        let runs = Runs {
            copies_end: 21,
            applications_start: 21,
        };
        assert_eq!(
            place(at(10), runs, Some(&forward), None),
            Placement::Exact {
                offset: 10,
                in_copies: true
            }
        );
    }

    #[test]
    fn under_prefix_naming_the_two_topics_are_placed_together() {
        // Copies in primary.<topic> at 0..100, the applications' records in <topic> at
        // 0..50, copied back to 130..180.
        let forward: Vec<(i64, i64)> = (0..100).map(|o| (o, o)).collect();
        let reverse: Vec<(i64, i64)> = (0..50).map(|o| (o, o + 130)).collect();
        let (forward, reverse) = (map((0, 0), &forward), map((0, 130), &reverse));
        let runs = Runs {
            copies_end: 100,
            applications_start: 0,
        };
        let place = |copies, applications| {
            place(
                OnSecondary {
                    copies,
                    applications,
                },
                runs,
                Some(&forward),
                Some(&reverse),
            )
        };
        assert_eq!(
            place(Some(60), None),
            Placement::Exact {
                offset: 60,
                in_copies: true
            }
        );
        // A commit at the applications' start read nothing of them.
        assert_eq!(
            place(Some(60), Some(0)),
            Placement::Exact {
                offset: 60,
                in_copies: true
            }
        );
        assert_eq!(
            place(Some(100), Some(20)),
            Placement::Exact {
                offset: 150,
                in_copies: false
            }
        );
        assert_eq!(
            place(None, Some(20)),
            Placement::Exact {
                offset: 150,
                in_copies: false
            }
        );
        assert_eq!(
            place(Some(100), None),
            Placement::Exact {
                offset: 130,
                in_copies: false
            }
        );
        assert_eq!(place(Some(60), Some(20)), Placement::ReadBoth);
        assert_eq!(place(None, None), Placement::NoCommit);
    }
}
