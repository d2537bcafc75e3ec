//! Where a newly assigned source partition resumes: right after the newest record whose
//! copy the target is known to hold, by whichever witness knows the most.
//!
//! Three witnesses, each a lower bound on what was copied:
//! - the group's committed offset (with the target offset stored beside it);
//! - the persisted offset map's end: its coverage is written only for copies the target
//!   acknowledged (and, on fenced flows, whose transaction committed);
//! - the newest copy the tail scan found on the target.
//!
//! None of them alone is enough. Source commits can fail for long stretches while copying
//! goes on: a member between generations has every commit refused (IllegalGeneration),
//! seen for 11 s on the replicated test bed, and an instance killed then has committed
//! nothing past its claim while its map says thousands of records were copied. The tail
//! scan begins where the commit's target offset says or, without one, at the map's end,
//! so in that case it finds nothing new and only the map still knows what was copied.
//! Resuming at the stale commit would copy every one of those records a second time.
//!
//! Where the tail scan begins is decided here too ([`scan_start`]).

use crate::provenance::ScanStart;

/// What is known of a partition's copies when it is assigned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Witnesses {
    /// The group's committed source offset, and the target offset stored with it.
    pub committed: Option<(i64, Option<i64>)>,
    /// What the persisted offset map covers.
    pub map: OffsetMap,
    /// The newest copy the tail scan found: (source offset, target offset).
    pub last_copied: Option<(i64, i64)>,
    /// The target partition's end (for `read_committed` readers) when assigned.
    pub target_end: Option<i64>,
    /// The map's newest copy holds the same record (key, value, timestamp) as the source
    /// at the offset it was copied from; checked when the group has no commit.
    pub map_confirmed: bool,
}

/// Where copying resumes: the next source offset to copy, and the target offset after
/// the newest copy, where known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Resume {
    pub source_next: Option<i64>,
    pub target_next: Option<i64>,
}

/// The furthest position any witness vouches for, with the target offset that belongs to
/// it (the largest one known among the witnesses at that position; a target offset
/// belonging to an earlier position is never paired with a later one).
///
/// The map's end counts only
/// - while the target still ends at or past it: a target that lost acknowledged copies
///   (an unclean election) no longer holds what the map names;
/// - and while the group has a commit for the partition, or else the map's newest copy
///   was found to hold the source's record at its offset: deleting a topic deletes its
///   group offsets, so a partition without one may belong to a topic created again under
///   the same name, which the map (keyed by name) cannot tell from the old one. Group
///   offsets also go without the topic: an empty group's expire
///   (`offsets.retention.minutes`, 7 days by default), an operator deletes them, or every
///   commit of the instance that copied was refused. Trusting only the commit, each of
///   those copied the partition again from its start.
///
/// Otherwise the other witnesses decide.
pub(crate) fn resume_point(witnesses: &Witnesses) -> Resume {
    let map_end = match witnesses.map {
        OffsetMap::Covers {
            through,
            target_next,
        } if (witnesses.committed.is_some() || witnesses.map_confirmed)
            && witnesses.target_end.is_some_and(|end| end >= target_next) =>
        {
            Some((through, target_next))
        }
        _ => None,
    };
    let candidates = [
        witnesses.committed,
        map_end.map(|(source, target)| (source, Some(target))),
        witnesses
            .last_copied
            .map(|(source, target)| (source + 1, Some(target + 1))),
    ];
    let source_next = candidates.iter().flatten().map(|&(source, _)| source).max();
    let target_next = candidates
        .iter()
        .flatten()
        .filter(|&&(source, _)| Some(source) == source_next)
        .filter_map(|&(_, target)| target)
        .max();
    Resume {
        source_next,
        target_next,
    }
}

/// What the flow's persisted offset map knows of a partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum OffsetMap {
    /// The flow keeps no map (offset sync off).
    #[default]
    Off,
    /// The map has nothing for this partition.
    Empty,
    /// The map covers source offsets below `through`, whose newest copy ends at
    /// `target_next`.
    Covers { through: i64, target_next: i64 },
}

/// Where to read copies back from the target: after the last commit (its target offset
/// and the source offset whose copy is there), or earlier if the persisted map ends before
/// it, since the map must be rebuilt from its end. A partition with a commit but nothing
/// in the map is read from the target's start, to rebuild the map. `None`: search
/// backwards from the end for the newest anchor (nothing says where the copies are).
///
/// `committed`: the group's committed source offset and the target offset stored with it.
pub(crate) fn scan_start(
    committed: Option<(i64, Option<i64>)>,
    map: OffsetMap,
) -> Option<ScanStart> {
    let after_commit = committed.and_then(|(source_next, target)| {
        target.map(|target| ScanStart {
            target,
            source_next: Some(source_next),
        })
    });
    match map {
        OffsetMap::Covers {
            through,
            target_next,
        } => match after_commit {
            Some(start) if start.target <= target_next => Some(start),
            _ => Some(ScanStart {
                target: target_next,
                source_next: Some(through),
            }),
        },
        OffsetMap::Empty if committed.is_some() => Some(ScanStart {
            target: 0,
            source_next: None,
        }),
        OffsetMap::Empty | OffsetMap::Off => after_commit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(start: Option<ScanStart>) -> Option<(i64, Option<i64>)> {
        start.map(|s| (s.target, s.source_next))
    }

    #[test]
    fn the_scan_starts_at_the_commit_unless_the_map_ends_before_it() {
        let covers = OffsetMap::Covers {
            through: 500,
            target_next: 520,
        };
        assert_eq!(
            scan(scan_start(Some((480, Some(500))), covers)),
            Some((500, Some(480)))
        );
        // The commit is past the map's end: the map is rebuilt from its end.
        assert_eq!(
            scan(scan_start(Some((600, Some(630))), covers)),
            Some((520, Some(500)))
        );
        // A commit with no target offset (a claim before any copy, or an older commit).
        assert_eq!(
            scan(scan_start(Some((0, None)), covers)),
            Some((520, Some(500)))
        );
    }

    #[test]
    fn a_commit_without_a_map_is_rebuilt_from_the_targets_start() {
        assert_eq!(
            scan(scan_start(Some((700, Some(710))), OffsetMap::Empty)),
            Some((0, None))
        );
        // Nothing committed and nothing mapped: nothing says where copies are.
        assert_eq!(scan(scan_start(None, OffsetMap::Empty)), None);
    }

    #[test]
    fn without_offset_sync_the_commit_alone_says_where_to_scan() {
        assert_eq!(
            scan(scan_start(Some((700, Some(710))), OffsetMap::Off)),
            Some((710, Some(700)))
        );
        assert_eq!(scan(scan_start(Some((700, None)), OffsetMap::Off)), None);
        assert_eq!(scan(scan_start(None, OffsetMap::Off)), None);
    }

    fn resume(source_next: i64, target_next: Option<i64>) -> Resume {
        Resume {
            source_next: Some(source_next),
            target_next,
        }
    }

    #[test]
    fn nothing_known_resumes_nowhere() {
        assert_eq!(resume_point(&Witnesses::default()), Resume::default());
    }

    #[test]
    fn the_commit_alone_decides_after_a_clean_hand_over() {
        let w = Witnesses {
            committed: Some((500, Some(520))),
            map: OffsetMap::Covers {
                through: 500,
                target_next: 520,
            },
            target_end: Some(521),
            ..Witnesses::default()
        };
        assert_eq!(resume_point(&w), resume(500, Some(520)));
    }

    #[test]
    fn copies_found_past_the_commit_move_the_start_past_them() {
        let w = Witnesses {
            committed: Some((500, Some(520))),
            map: OffsetMap::Covers {
                through: 500,
                target_next: 520,
            },
            last_copied: Some((540, 561)),
            target_end: Some(562),
            map_confirmed: false,
        };
        assert_eq!(resume_point(&w), resume(541, Some(562)));
    }

    /// Every commit after the claim refused: the claim named no target offset, and the
    /// scan (from the map's end) finds nothing newer.
    #[test]
    fn a_map_ahead_of_a_stale_commit_decides() {
        let w = Witnesses {
            committed: Some((0, None)),
            map: OffsetMap::Covers {
                through: 5_063,
                target_next: 5_079,
            },
            last_copied: None,
            target_end: Some(5_080),
            map_confirmed: false,
        };
        assert_eq!(resume_point(&w), resume(5_063, Some(5_079)));
    }

    #[test]
    fn a_map_the_target_no_longer_holds_is_not_trusted() {
        let w = Witnesses {
            committed: Some((100, Some(100))),
            map: OffsetMap::Covers {
                through: 900,
                target_next: 900,
            },
            target_end: Some(400),
            ..Witnesses::default()
        };
        assert_eq!(resume_point(&w), resume(100, Some(100)));
        let unknown_end = Witnesses {
            target_end: None,
            ..w
        };
        assert_eq!(resume_point(&unknown_end), resume(100, Some(100)));
    }

    #[test]
    fn a_target_offset_is_never_paired_with_a_later_source_offset() {
        // The commit is furthest but stored no target offset: the map's target offset
        // belongs to an earlier record, so none is known.
        let w = Witnesses {
            committed: Some((700, None)),
            map: OffsetMap::Covers {
                through: 600,
                target_next: 650,
            },
            target_end: Some(800),
            ..Witnesses::default()
        };
        assert_eq!(resume_point(&w), resume(700, None));
    }

    #[test]
    fn without_a_commit_the_scan_decides_and_the_map_does_not() {
        let scanned = Witnesses {
            last_copied: Some((41, 90)),
            target_end: Some(91),
            ..Witnesses::default()
        };
        assert_eq!(resume_point(&scanned), resume(42, Some(91)));
        // Perhaps a topic deleted and created again: its group offsets went with it.
        let mapped = Witnesses {
            map: OffsetMap::Covers {
                through: 42,
                target_next: 91,
            },
            target_end: Some(91),
            ..Witnesses::default()
        };
        assert_eq!(resume_point(&mapped), Resume::default());
        // The map's newest copy holds the source's record at its offset: the same topic,
        // whose group offsets went some other way (expired, deleted).
        let confirmed = Witnesses {
            map_confirmed: true,
            ..mapped
        };
        assert_eq!(resume_point(&confirmed), resume(42, Some(91)));
        // Still not past a target that lost the copies.
        let lost = Witnesses {
            target_end: Some(50),
            ..confirmed
        };
        assert_eq!(resume_point(&lost), Resume::default());
    }

    #[test]
    fn equal_positions_keep_the_largest_target_offset() {
        // A fenced flow's commit marker follows the last copy: the commit may record the
        // offset after the copy while the scan sees only the copy.
        let w = Witnesses {
            committed: Some((10, Some(21))),
            last_copied: Some((9, 19)),
            target_end: Some(22),
            ..Witnesses::default()
        };
        assert_eq!(resume_point(&w), resume(10, Some(21)));
    }
}
