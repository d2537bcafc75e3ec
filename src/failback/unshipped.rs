//! What a primary partition holds past its copy on the secondary: the decision behind
//! `strait failback plan`, from where the copies end and the primary's log, with no I/O.

use serde::Serialize;

/// Source offsets `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OffsetRange {
    pub from: i64,
    pub to: i64,
}

impl OffsetRange {
    /// `None` for an empty range.
    fn new(from: i64, to: i64) -> Option<Self> {
        (from < to).then_some(Self { from, to })
    }

    pub fn len(&self) -> i64 {
        self.to - self.from
    }
}

/// The primary's log of one partition, as a `read_committed` reader and the broker see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PrimaryLog {
    /// The first offset still held (retention deletes below it).
    pub log_start: i64,
    /// The last stable offset: records below it are committed or outside transactions.
    pub stable_end: i64,
    /// The high watermark: above the stable end lie transactions still open.
    pub log_end: i64,
}

/// How a primary partition stands against its copy, in source offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shipment {
    /// Every source offset below it was copied to the secondary, or holds nothing a
    /// consumer reads; `None` when the secondary has no copy of this partition.
    pub shipped_through: Option<i64>,
    /// Records the primary still holds that never reached the secondary. Applications
    /// that moved to the secondary never read them.
    pub not_shipped: Option<OffsetRange>,
    /// Offsets retention deleted on the primary before they were copied: on neither
    /// cluster any more.
    pub deleted_before_copied: Option<OffsetRange>,
    /// Offsets the secondary holds copies of but the primary's log no longer reaches:
    /// the primary lost acknowledged records (an unclean leader election, or a broker
    /// restored from an older disk). Their only copy is the secondary's.
    pub copied_but_gone_from_primary: Option<OffsetRange>,
    /// Offsets in transactions still open on the primary: they are committed or aborted
    /// once the transaction ends or times out, and until then the plan is not final.
    pub open_transactions: Option<OffsetRange>,
}

impl Shipment {
    pub fn new(shipped_through: Option<i64>, log: PrimaryLog) -> Self {
        // Nothing copied: the whole of what the primary holds stayed there.
        let copied_to = shipped_through.unwrap_or(log.log_start);
        let unread_from = copied_to.max(log.log_start);
        Self {
            shipped_through,
            not_shipped: OffsetRange::new(unread_from, log.stable_end),
            deleted_before_copied: OffsetRange::new(copied_to, log.log_start),
            copied_but_gone_from_primary: OffsetRange::new(log.log_end, copied_to),
            open_transactions: OffsetRange::new(unread_from.max(log.stable_end), log.log_end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(log_start: i64, stable_end: i64, log_end: i64) -> PrimaryLog {
        PrimaryLog {
            log_start,
            stable_end,
            log_end,
        }
    }

    fn range(from: i64, to: i64) -> Option<OffsetRange> {
        Some(OffsetRange { from, to })
    }

    #[test]
    fn the_records_after_the_last_copy_were_not_shipped() {
        let s = Shipment::new(Some(1_200), log(0, 1_300, 1_300));
        assert_eq!(s.not_shipped, range(1_200, 1_300));
        assert_eq!(s.not_shipped.map(|r| r.len()), Some(100));
        assert_eq!(s.deleted_before_copied, None);
        assert_eq!(s.copied_but_gone_from_primary, None);
        assert_eq!(s.open_transactions, None);
    }

    #[test]
    fn a_partition_copied_to_its_end_has_nothing_left() {
        let s = Shipment::new(Some(1_300), log(50, 1_300, 1_300));
        assert_eq!(
            s,
            Shipment {
                shipped_through: Some(1_300),
                not_shipped: None,
                deleted_before_copied: None,
                copied_but_gone_from_primary: None,
                open_transactions: None,
            }
        );
    }

    #[test]
    fn a_partition_never_copied_stayed_whole_on_the_primary() {
        let s = Shipment::new(None, log(40, 90, 90));
        assert_eq!(s.not_shipped, range(40, 90));
        assert_eq!(s.deleted_before_copied, None);
        // An empty partition never copied has nothing to report.
        assert_eq!(Shipment::new(None, log(7, 7, 7)).not_shipped, None);
    }

    #[test]
    fn records_deleted_before_they_were_copied_are_named_apart_from_those_still_held() {
        let s = Shipment::new(Some(100), log(250, 400, 400));
        assert_eq!(s.deleted_before_copied, range(100, 250));
        assert_eq!(s.not_shipped, range(250, 400));
    }

    #[test]
    fn copies_past_the_primarys_end_are_records_the_primary_lost() {
        let s = Shipment::new(Some(1_000), log(0, 940, 940));
        assert_eq!(s.copied_but_gone_from_primary, range(940, 1_000));
        assert_eq!(s.not_shipped, None);
        assert_eq!(s.open_transactions, None);
    }

    #[test]
    fn an_open_transaction_is_reported_apart_until_it_ends() {
        let s = Shipment::new(Some(500), log(0, 520, 600));
        assert_eq!(s.not_shipped, range(500, 520));
        assert_eq!(s.open_transactions, range(520, 600));
        // All of the open transaction lies past the copies.
        let s = Shipment::new(Some(500), log(0, 480, 600));
        assert_eq!(s.not_shipped, None);
        assert_eq!(s.open_transactions, range(500, 600));
    }
}
