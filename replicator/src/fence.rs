//! The hand-over fence of flows with `fence = "transactions"`.
//!
//! Without a fence, an instance that lost its partitions while copies were still queued
//! (frozen past `session.timeout.ms`, or its drain timed out against a slow target) can
//! still land them after the next owner read the target's tail and resumed: duplicates,
//! interleaved with the new owner's copies. With the fence:
//! 1. Each pipeline run's producer is transactional, under an id of its own
//!    ([`transactional_id`]). Copies are committed in transactions: every
//!    `commit_interval`, and before partitions are handed over. Source commits and the
//!    offset map only ever cover committed transactions.
//! 2. The owner of a partition names its transactional id in the metadata of the
//!    partition's source commit ([`CommitMetadata`]): from its assignment on (a claim,
//!    committed before its first copy) until it hands the partition over with its
//!    transaction committed (the release, which names no owner).
//! 3. A new owner that finds another id named there opens a producer under that id and
//!    calls `init_transactions` ([`fence_previous_owner`]). The transaction coordinator
//!    bumps the id's epoch and aborts its open transaction, writing abort markers to every
//!    partition it touched. From then on the broker refuses everything the previous owner
//!    sends (`PRODUCER_FENCED`), and what it wrote without committing is invisible to
//!    `read_committed` readers, the tail scan included. Only then does the new owner read
//!    the target's tail.
//!
//! Kafka's own consumer-group fencing (KIP-447) cannot do this across clusters: the group
//! lives on the source, the transactions on the target.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::producer::{BaseProducer, Producer};
use tracing::info;

use crate::telemetry;
use crate::topics::client_config;
use crate::{ClusterSpec, ReplicatorError};

/// Prefix of the metadata of every source commit a flow makes.
const METADATA_PREFIX: &str = "strait:";

/// How long a transaction may stay open before the target's coordinator aborts it. It
/// bounds how long a partition's records can stay invisible to `read_committed` readers
/// when an owner vanished with a transaction open and no one took the partition over;
/// a new owner does not wait for it (it fences). Kafka's `transaction.max.timeout.ms`
/// defaults to 15 minutes, above this.
pub(crate) const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// How long committing a transaction should take at most; see [`TransactionPace`].
const COMMIT_WITHIN: Duration = Duration::from_secs(2);
/// The fewest copies in flight at which a transaction may be committed early.
const MIN_IN_FLIGHT: u64 = 1_000;
/// The producer's own bound on queued records (`queue.buffering.max.messages`).
const MAX_IN_FLIGHT: u64 = 1_000_000;
/// A transaction stays open at least this many times as long as the last commit took.
const OPEN_PER_COMMIT: u32 = 20;
/// The longest a transaction is kept open for [`OPEN_PER_COMMIT`]: well within
/// [`TRANSACTION_TIMEOUT`], and the longest a `read_committed` reader of a busy flow waits
/// for a copy on that account.
const MAX_OPEN: Duration = Duration::from_secs(10);

/// When a fenced pipeline commits its transaction.
///
/// A commit stops the copy until every copy in its transaction is acknowledged: on a
/// saturated pipeline, the whole producer queue (64 MiB at the default
/// `producer_queue_kbytes`, about 0.25 s into a local broker). Committed every
/// `commit_interval` (1 s by default), a backlog copy stood still a quarter of the time. So
/// a transaction stays open for the longest of `commit_interval` and [`OPEN_PER_COMMIT`]
/// times the last commit's duration (at most [`MAX_OPEN`]), which keeps commits to about
/// 5 % of the time; but once the flow has caught up with its source, a transaction open
/// for `commit_interval` is committed at once, so that an idle flow's copies are visible
/// to `read_committed` readers within `commit_interval`, as without the fence.
///
/// And it commits early when too many copies are in flight. A commit waits for every copy
/// in its transaction: bounded only by the producer queue (tens of MB), a transaction
/// against a slow target (a produce quota) would take minutes to commit, past the
/// transaction timeout, and be aborted whole and copied again, for ever. So a commit that
/// took longer than [`COMMIT_WITHIN`] sets the in-flight limit to what would have
/// committed within it at the same pace, and one that took less doubles it, up to the
/// producer queue's own bound. It starts low, at [`MIN_IN_FLIGHT`]. Judged by the commit's
/// own duration rather than by the copies' pace, a quick commit always lets the next
/// transaction grow: derived from the pace, which slow commits themselves lower, the limit
/// shrank for good once commits were slow for other reasons (many partitions), and more,
/// smaller transactions made them slower still.
#[derive(Debug)]
pub(crate) struct TransactionPace {
    commit_interval: Duration,
    open_for: Duration,
    limit: u64,
}

/// What [`TransactionPace::due`] decides on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenTransaction {
    /// Since the transaction began.
    pub age: Duration,
    /// Copies sent and not yet acknowledged.
    pub in_flight: u64,
    /// The last wait for source records brought none.
    pub caught_up: bool,
}

impl TransactionPace {
    pub fn new(commit_interval: Duration) -> Self {
        Self {
            commit_interval,
            open_for: commit_interval,
            limit: MIN_IN_FLIGHT,
        }
    }

    /// Whether to commit the open transaction now.
    pub fn due(&self, open: OpenTransaction) -> bool {
        open.in_flight > self.limit
            || open.age >= self.open_for
            || (open.caught_up && open.age >= self.commit_interval)
    }

    /// A transaction with `in_flight` copies not yet acknowledged was committed, which
    /// took `took`.
    pub fn committed(&mut self, in_flight: u64, took: Duration) {
        self.limit = if took > COMMIT_WITHIN {
            let within = in_flight as f64 * COMMIT_WITHIN.as_secs_f64() / took.as_secs_f64();
            (within as u64).clamp(MIN_IN_FLIGHT, MAX_IN_FLIGHT)
        } else {
            self.limit.saturating_mul(2).min(MAX_IN_FLIGHT)
        };
        self.open_for = (took * OPEN_PER_COMMIT)
            .clamp(self.commit_interval, MAX_OPEN.max(self.commit_interval));
    }

    /// How long the next transaction stays open unless the flow catches up.
    #[cfg(test)]
    fn open_for(&self) -> Duration {
        self.open_for
    }

    /// Copies in flight beyond which the transaction is committed now.
    #[cfg(test)]
    fn limit(&self) -> u64 {
        self.limit
    }
}

/// A transactional id for one pipeline run of `flow`: never reused, so that fencing an
/// earlier run can never fence a later one. Under the `strait-` prefix that the
/// documented ACLs grant.
pub(crate) fn transactional_id(flow: &str) -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "strait-{flow}-{}-{nanos:x}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a flow's source commit carries besides the offset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitMetadata {
    /// The target offset after the committed prefix's last copy.
    pub target_next: Option<i64>,
    /// The transactional id of the partition's owner, while it owns the partition.
    pub owner: Option<String>,
    /// The ID of the source topic the commit was made for (see the `source_ids` module).
    pub source_topic_id: Option<String>,
}

impl CommitMetadata {
    /// `strait:t=<target_next>;x=<owner>;i=<source topic ID>`, each part left out when
    /// absent (older versions wrote `strait:t=<target_next>` only).
    pub fn encode(&self) -> String {
        let mut parts = Vec::with_capacity(3);
        if let Some(t) = self.target_next {
            parts.push(format!("t={t}"));
        }
        if let Some(owner) = &self.owner {
            parts.push(format!("x={owner}"));
        }
        if let Some(id) = &self.source_topic_id {
            parts.push(format!("i={id}"));
        }
        format!("{METADATA_PREFIX}{}", parts.join(";"))
    }

    /// Reads what [`Self::encode`] wrote; anything else (another tool's metadata, or
    /// none) carries nothing. Transactional ids are Strait's own and hold no `;`, and
    /// topic IDs are URL-safe base64.
    pub fn decode(metadata: &str) -> Self {
        let Some(rest) = metadata.strip_prefix(METADATA_PREFIX) else {
            return Self::default();
        };
        let mut decoded = Self::default();
        for part in rest.split(';') {
            if let Some(t) = part.strip_prefix("t=") {
                decoded.target_next = t.parse().ok();
            } else if let Some(owner) = part.strip_prefix("x=").filter(|o| !o.is_empty()) {
                decoded.owner = Some(owner.to_string());
            } else if let Some(id) = part.strip_prefix("i=").filter(|i| !i.is_empty()) {
                decoded.source_topic_id = Some(id.to_string());
            }
        }
        decoded
    }
}

/// The transactional ids named in `owners` that are not `own`, each once: the previous
/// owners a new assignment must fence before it reads the target's tail.
pub(crate) fn owners_to_fence<'a>(
    owners: impl IntoIterator<Item = Option<&'a str>>,
    own: &str,
) -> Vec<&'a str> {
    let mut ids: Vec<&str> = owners
        .into_iter()
        .flatten()
        .filter(|id| *id != own)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Fences the transactional id `id` on `target`: see the module header. Returns once
/// the coordinator has aborted its open transaction, if it had one.
pub(crate) fn fence_previous_owner(
    flow: &str,
    target: &ClusterSpec,
    id: &str,
    timeout: Duration,
) -> Result<(), ReplicatorError> {
    let context = || {
        format!(
            "fencing the previous owner's transactions ({id}) on '{}'",
            target.name
        )
    };
    let producer: BaseProducer = client_config(target)
        .set("transactional.id", id)
        .set("client.id", format!("strait-{flow}-fence"))
        .create()
        .map_err(|e| ReplicatorError::kafka(context(), e))?;
    producer
        .init_transactions(timeout)
        .map_err(|e| ReplicatorError::kafka(context(), e))?;
    metrics::counter!(telemetry::FENCED_OWNERS_TOTAL, "flow" => flow.to_string()).increment(1);
    info!(flow, transactional_id = id, "fenced the previous owner of partitions now assigned here: its open transaction is aborted and nothing more it sends is accepted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_metadata_round_trips_and_reads_the_older_form() {
        let both = CommitMetadata {
            target_next: Some(1_234),
            owner: Some("strait-f-1-abc-0".into()),
            source_topic_id: None,
        };
        assert_eq!(both.encode(), "strait:t=1234;x=strait-f-1-abc-0");
        assert_eq!(CommitMetadata::decode(&both.encode()), both);

        let released = CommitMetadata {
            target_next: Some(7),
            owner: None,
            source_topic_id: None,
        };
        assert_eq!(released.encode(), "strait:t=7");
        assert_eq!(CommitMetadata::decode("strait:t=7"), released);

        let owner_only = CommitMetadata {
            target_next: None,
            owner: Some("strait-f-2-def-1".into()),
            source_topic_id: None,
        };
        assert_eq!(CommitMetadata::decode(&owner_only.encode()), owner_only);
        let all = CommitMetadata {
            target_next: Some(9),
            owner: Some("strait-f-2-def-1".into()),
            source_topic_id: Some("q1Vs3yJzQ2-Xb_6QfS0Lbg".into()),
        };
        assert_eq!(
            all.encode(),
            "strait:t=9;x=strait-f-2-def-1;i=q1Vs3yJzQ2-Xb_6QfS0Lbg"
        );
        assert_eq!(CommitMetadata::decode(&all.encode()), all);

        assert_eq!(CommitMetadata::decode(""), CommitMetadata::default());
        assert_eq!(
            CommitMetadata::decode("strait: translated"),
            CommitMetadata::default()
        );
        assert_eq!(CommitMetadata::decode("t=5"), CommitMetadata::default());
    }

    #[test]
    fn only_other_owners_are_fenced_and_each_once() {
        let named = [Some("b"), None, Some("own"), Some("a"), Some("b")];
        assert_eq!(owners_to_fence(named, "own"), vec!["a", "b"]);
        assert!(owners_to_fence([None, Some("own")], "own").is_empty());
    }

    #[test]
    fn a_transaction_commits_within_about_two_seconds() {
        let mut pace = TransactionPace::new(Duration::from_secs(1));
        assert_eq!(pace.limit(), MIN_IN_FLIGHT);
        // Quick commits double the limit, up to the producer queue's bound.
        for _ in 0..12 {
            pace.committed(pace.limit(), Duration::from_millis(50));
        }
        assert_eq!(pace.limit(), MAX_IN_FLIGHT);
        // A quota: 60,000 copies in flight took 20 s to commit; 6,000 would take 2 s.
        pace.committed(60_000, Duration::from_secs(20));
        assert_eq!(pace.limit(), 6_000);
        // Never below the floor, however slow.
        pace.committed(1_000, Duration::from_secs(100));
        assert_eq!(pace.limit(), MIN_IN_FLIGHT);
        // Slow commits with nothing in flight (a busy coordinator) do not shrink it more.
        pace.committed(0, Duration::from_secs(5));
        assert_eq!(pace.limit(), MIN_IN_FLIGHT);
        pace.committed(1_000, Duration::from_secs(1));
        assert_eq!(pace.limit(), 2 * MIN_IN_FLIGHT);
    }

    fn open(age_ms: u64, in_flight: u64, caught_up: bool) -> OpenTransaction {
        OpenTransaction {
            age: Duration::from_millis(age_ms),
            in_flight,
            caught_up,
        }
    }

    #[test]
    fn too_many_copies_in_flight_commit_at_once() {
        let pace = TransactionPace::new(Duration::from_secs(1));
        assert!(!pace.due(open(10, MIN_IN_FLIGHT, false)));
        assert!(pace.due(open(10, MIN_IN_FLIGHT + 1, false)));
    }

    #[test]
    fn quick_commits_keep_the_commit_interval() {
        let mut pace = TransactionPace::new(Duration::from_secs(1));
        pace.committed(10, Duration::from_millis(3));
        assert_eq!(pace.open_for(), Duration::from_secs(1));
        assert!(!pace.due(open(999, 0, false)));
        assert!(pace.due(open(1_000, 0, false)));
    }

    #[test]
    fn slow_commits_keep_transactions_open_twenty_times_as_long() {
        let mut pace = TransactionPace::new(Duration::from_secs(1));
        // A saturated pipeline: the producer queue took 0.25 s to drain.
        pace.committed(60_000, Duration::from_millis(250));
        assert_eq!(pace.open_for(), Duration::from_secs(5));
        assert!(!pace.due(open(4_999, 0, false)));
        assert!(pace.due(open(5_000, 0, false)));
        // Never longer than MAX_OPEN.
        pace.committed(1_000, Duration::from_secs(2));
        assert_eq!(pace.open_for(), MAX_OPEN);
        // A commit interval above MAX_OPEN stays the floor.
        let mut long = TransactionPace::new(Duration::from_secs(30));
        long.committed(1_000, Duration::from_secs(2));
        assert_eq!(long.open_for(), Duration::from_secs(30));
    }

    #[test]
    fn a_flow_that_caught_up_commits_after_the_commit_interval() {
        let mut pace = TransactionPace::new(Duration::from_secs(1));
        pace.committed(60_000, Duration::from_millis(250));
        // Caught up, but the transaction is younger than the commit interval: a trickle of
        // records does not commit a transaction per record.
        assert!(!pace.due(open(400, 1, true)));
        assert!(pace.due(open(1_000, 1, true)));
        assert!(!pace.due(open(1_000, 1, false)));
    }

    #[test]
    fn every_run_gets_a_transactional_id_of_its_own() {
        let (a, b) = (transactional_id("f"), transactional_id("f"));
        assert_ne!(a, b);
        assert!(a.starts_with("strait-f-"));
        assert!(!a.contains(';'));
    }
}
