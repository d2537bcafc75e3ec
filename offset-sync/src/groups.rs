//! Consumer groups on real clusters: reading committed offsets on the source, translating
//! them with the offset map, and writing them to the same-named group on the target under
//! the rules that keep a group safe (never while it has members, never backwards unless
//! forced).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, BlockingRetryable};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use serde::Serialize;

use crate::group_offsets;
use crate::map::{OffsetIndex, Translation};
use crate::records::Checkpoint;
use crate::settling::{offsets_learning_partitions, settling_backoff};
use crate::store::{log_librdkafka, TopicReader, TopicWriter};
use crate::OffsetSyncError;

/// Offset requests to a healthy cluster take milliseconds; an unreachable one is reported
/// after this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// (topic, partition) → offset.
pub type Offsets = BTreeMap<(String, i32), i64>;

/// (topic, partition) → offset, and the metadata committed with it.
type Commits = BTreeMap<(String, i32), (i64, String)>;

/// The `group.id` of [`GroupClient`]s, a group nobody joins.
const GROUP_CLIENT_ID: &str = "strait-offsets-client";

/// The metadata Strait commits with every offset it writes to a group: a target offset
/// with other metadata was committed by someone else (applications commit none, or
/// their own).
pub const WRITTEN_BY_STRAIT: &str = "strait: translated";

/// A client that reads and writes the offsets of any consumer group on one cluster,
/// without joining a group: reading and committing offsets this way never triggers a
/// rebalance of a group's real members. One client serves every group (see
/// [`crate::group_offsets`] for why that needs librdkafka's admin calls).
pub struct GroupClient {
    consumer: BaseConsumer<GroupClientContext>,
}

/// Passes librdkafka's log lines and errors on as rdkafka does by default, until the
/// client is dropped. A client made for one call is often dropped while the connection
/// to its own group's coordinator is still logging in (it joins no group, so nothing
/// waited for it), and librdkafka reports that torn-down login as a SASL authentication
/// error, which says nothing about the cluster: on a SASL_SSL test bed, every staged
/// migration logged one. From the drop on, such lines are debug.
#[derive(Default)]
struct GroupClientContext {
    dropping: AtomicBool,
}

impl ClientContext for GroupClientContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if self.dropping.load(Ordering::Relaxed) {
            // Not under the `librdkafka` target, where login failures are collected to
            // explain later errors.
            tracing::debug!("librdkafka, client closing: {fac} {log_message}");
        } else {
            log_librdkafka(level, fac, log_message);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.dropping.load(Ordering::Relaxed) {
            tracing::debug!("librdkafka, client closing: {error}: {reason}");
        } else {
            tracing::error!(target: "librdkafka", "librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for GroupClientContext {}

impl Drop for GroupClient {
    fn drop(&mut self) {
        self.consumer
            .context()
            .dropping
            .store(true, Ordering::Relaxed);
    }
}

impl GroupClient {
    pub fn new(config: &ClientConfig) -> Result<Self, OffsetSyncError> {
        // This client joins no group and names one in each request. It still has a
        // `group.id`, which it never joins or commits to: librdkafka (2.12) answers a
        // NotCoordinator reply to an offset read (the group's coordinator moved: a broker
        // restarted) by asking the client's own group to look its coordinator up again,
        // and a client without one crashes there (a null group, SIGSEGV). The name is
        // under `strait-`, the prefix the documented ACLs let Strait describe.
        let consumer = config
            .clone()
            .set("group.id", GROUP_CLIENT_ID)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create_with_context(GroupClientContext::default())
            .map_err(|e| OffsetSyncError::kafka("creating a client for consumer groups", e))?;
        Ok(Self { consumer })
    }

    /// `group`'s committed offsets on `partitions`, and on every partition of the topics
    /// `topics` selects; partitions it never committed are left out.
    pub fn committed(
        &self,
        group: &str,
        partitions: &[(String, i32)],
        topics: &dyn Fn(&str) -> bool,
    ) -> Result<Offsets, OffsetSyncError> {
        self.committed_each(&[group], partitions, topics)
            .pop()
            .unwrap_or_else(|| Ok(Offsets::new()))
    }

    /// [`Self::committed`] of each of `groups`, in their order, asked all at once. Each
    /// group has its own answer: one that cannot be read (its coordinator unreachable,
    /// say), or one of whose wanted partitions cannot be read, is an error naming it,
    /// beside the others' offsets. A partition read as "no commit" when the broker said
    /// it could not tell would let a migration start the group from its reset policy.
    ///
    /// `topics` adds partitions the caller does not know of yet: a partition the source
    /// topic grew by, which the offset map has nothing of until it is copied, must be
    /// reported (as pending), not left out as if the group had never read it.
    pub fn committed_each(
        &self,
        groups: &[&str],
        partitions: &[(String, i32)],
        topics: &dyn Fn(&str) -> bool,
    ) -> Vec<Result<Offsets, OffsetSyncError>> {
        self.commits_each(groups, partitions, topics)
            .into_iter()
            .map(|answer| Ok(answer?.into_iter().map(|(k, (o, _))| (k, o)).collect()))
            .collect()
    }

    /// [`Self::committed`], with the metadata committed with each offset.
    fn commits(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<Commits, OffsetSyncError> {
        self.commits_each(&[group], partitions, &|_| false)
            .pop()
            .unwrap_or_else(|| Ok(Commits::new()))
    }

    /// [`Self::committed_each`], with the metadata committed with each offset.
    fn commits_each(
        &self,
        groups: &[&str],
        partitions: &[(String, i32)],
        topics: &dyn Fn(&str) -> bool,
    ) -> Vec<Result<Commits, OffsetSyncError>> {
        // No partitions, no offsets.
        if partitions.is_empty() {
            return groups.iter().map(|_| Ok(Commits::new())).collect();
        }
        let wanted: HashSet<(&str, i32)> = partitions
            .iter()
            .map(|(topic, partition)| (topic.as_str(), *partition))
            .collect();
        // Each group is asked for every partition it committed on (as MirrorMaker 2 asks),
        // and the answer is cut to `partitions` here. Naming the partitions in the request
        // makes the broker answer each of them for every group, committed or not: on the
        // test bed, 1,185 groups took 1.17 s for a flow of 600 partitions (0.20 s asked
        // this way), and over 10 s, the request timeout, while that flow copied. Most
        // groups commit on a few topics of their own, not on the flow's.
        let mut answers =
            group_offsets::list(self.consumer.client(), groups, None, REQUEST_TIMEOUT);
        // Groups whose coordinator is moving (see `coordinator_moving`) are asked again.
        let mut backoff = settling_backoff(REQUEST_TIMEOUT).build();
        loop {
            let moving: Vec<usize> = (0..answers.len())
                .filter(|&i| match &answers[i] {
                    Err(e) => coordinator_moving(e.code),
                    Ok(list) => list.iter().any(|p| p.error.is_some_and(coordinator_moving)),
                })
                .collect();
            let Some(delay) = (!moving.is_empty()).then(|| backoff.next()).flatten() else {
                break;
            };
            std::thread::sleep(delay);
            let again: Vec<&str> = moving.iter().map(|&i| groups[i]).collect();
            let asked = group_offsets::list(self.consumer.client(), &again, None, REQUEST_TIMEOUT);
            for (i, answer) in moving.into_iter().zip(asked) {
                answers[i] = answer;
            }
        }
        // A group with no commit anywhere answers with nothing, and so does a service
        // that ignores a request for "every partition" (librdkafka's mock cluster does):
        // those groups are asked again, naming the partitions.
        let unanswered: Vec<usize> = (0..answers.len())
            .filter(|&i| matches!(&answers[i], Ok(list) if list.is_empty()))
            .collect();
        if !unanswered.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition) in partitions {
                tpl.add_partition(topic, *partition);
            }
            let again: Vec<&str> = unanswered.iter().map(|&i| groups[i]).collect();
            let named =
                group_offsets::list(self.consumer.client(), &again, Some(&tpl), REQUEST_TIMEOUT);
            for (i, answer) in unanswered.into_iter().zip(named) {
                answers[i] = answer;
            }
        }
        groups
            .iter()
            .zip(answers)
            .map(|(group, answer)| {
                let context = || format!("reading committed offsets of group '{group}'");
                let mut offsets = Commits::new();
                for p in answer.map_err(|e| OffsetSyncError::admin(context(), e))? {
                    if !wanted.contains(&(p.topic.as_str(), p.partition)) && !topics(&p.topic) {
                        continue;
                    }
                    if let Some(code) = p.error {
                        return Err(OffsetSyncError::admin(
                            format!("{} on {}[{}]", context(), p.topic, p.partition),
                            group_offsets::AdminCallError {
                                code,
                                reason: code.to_string(),
                            },
                        ));
                    }
                    if let Some(offset) = p.offset {
                        offsets.insert((p.topic, p.partition), (offset, p.metadata));
                    }
                }
                Ok(offsets)
            })
            .collect()
    }

    /// Members `group` has right now (0 for an empty or unknown group), or `None` if the
    /// cluster cannot describe groups (librdkafka's mock cluster, some Kafka-compatible
    /// services). Groups of either protocol, classic or KIP-848's, are counted.
    pub fn members(&self, group: &str) -> Result<Option<usize>, OffsetSyncError> {
        Ok(self.describe(group)?.map(|d| d.members))
    }

    /// `group`'s state and members (see [`group_offsets::describe`]), or `None` if the
    /// cluster cannot describe groups.
    pub fn describe(
        &self,
        group: &str,
    ) -> Result<Option<group_offsets::GroupDescription>, OffsetSyncError> {
        // As for commits: a coordinator that moved, or is still loading its groups after
        // a restart, answers NotCoordinator or CoordinatorLoadInProgress until librdkafka
        // has found it again.
        (|| group_offsets::describe(self.consumer.client(), group, REQUEST_TIMEOUT))
            .retry(settling_backoff(REQUEST_TIMEOUT))
            .sleep(std::thread::sleep)
            .when(|e| coordinator_moving(e.code))
            .call()
            .map_err(|e| OffsetSyncError::admin(format!("describing group '{group}'"), e))
    }

    /// Commits `offsets` for `group`. The broker itself refuses this while the group has
    /// members, which closes the race with a consumer joining after [`Self::members`].
    pub fn commit(&self, group: &str, offsets: &Offsets) -> Result<(), OffsetSyncError> {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|e| OffsetSyncError::kafka("building offsets", e))?;
            if let Some(mut elem) = tpl.find_partition(topic, *partition) {
                elem.set_metadata(WRITTEN_BY_STRAIT);
            }
        }
        let context = || format!("committing offsets of group '{group}'");
        // The group's coordinator moves with the leadership of its `__consumer_offsets`
        // partition (a broker restarting, a preferred-leader election); until librdkafka
        // has looked it up again, commits answer NotCoordinator: asked again.
        let attempt = || {
            let written =
                group_offsets::alter(self.consumer.client(), group, &tpl, REQUEST_TIMEOUT)
                    .map_err(|e| (None, e))?;
            match written
                .into_iter()
                .find_map(|p| p.error.map(|code| (p, code)))
            {
                Some((p, code)) => Err((
                    Some(format!("on {}[{}]", p.topic, p.partition)),
                    group_offsets::AdminCallError {
                        code,
                        reason: code.to_string(),
                    },
                )),
                None => Ok(()),
            }
        };
        attempt
            .retry(settling_backoff(REQUEST_TIMEOUT))
            .sleep(std::thread::sleep)
            .when(|(_, e)| coordinator_moving(e.code))
            .call()
            .map_err(|(partition, e)| {
                let context = match partition {
                    Some(partition) => format!("{} {partition}", context()),
                    None => context(),
                };
                OffsetSyncError::admin(context, e)
            })
    }

    /// Every consumer group on the cluster, or `None` if the cluster cannot list groups.
    pub fn list_groups(&self) -> Result<Option<Vec<String>>, OffsetSyncError> {
        group_offsets::list_group_names(self.consumer.client(), REQUEST_TIMEOUT)
            .map_err(|e| OffsetSyncError::admin("listing consumer groups", e))
    }

    /// Earliest offsets of `partitions` (their log start), in one request per broker.
    /// Partitions whose log start cannot be read (a deleted topic, say) are left out.
    pub fn log_starts(&self, partitions: &[(String, i32)]) -> Offsets {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            // ListOffsets with the "earliest" timestamp answers the log start.
            if tpl
                .add_partition_offset(topic, *partition, Offset::Beginning)
                .is_err()
            {
                return Offsets::new();
            }
        }
        // Partitions added since this client last read their topics are known next round.
        match offsets_learning_partitions(&self.consumer, tpl, REQUEST_TIMEOUT) {
            Ok(found) => found
                .elements()
                .iter()
                .filter(|e| e.error().is_ok())
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                    _ => None,
                })
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "log start offsets not readable");
                Offsets::new()
            }
        }
    }
}

/// The group's coordinator is moving to another broker: an answer that passes once
/// librdkafka has found the new one.
fn coordinator_moving(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::CoordinatorLoadInProgress
    )
}

/// What happened to one partition of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Translated exactly (not written).
    Exact,
    /// Not replicated far enough yet.
    Pending,
    /// Committed below where the offset map begins.
    BeforeMap,
    /// The group never committed on this partition: nothing to translate.
    NoCommit,
    /// Not written: the group has active members on the target.
    GroupActive,
    /// Not written: the target group is further ahead; `--force` moves it back.
    WouldRewind,
    /// Not written by the daemon's group sync: the target group's offset was committed by
    /// someone else (a consumer that assigns its partitions itself commits without being
    /// a member). Also reported after a write that someone else's commit overtook.
    /// `strait offsets translate --apply` takes the group over.
    CommittedElsewhere,
    /// The group read records of two source partitions that lie apart on the target, and
    /// no one target offset continues both (`strait failback translate`: the copies and
    /// the applications' own records on the secondary under prefix naming).
    ReadBoth,
    /// The target group already has exactly this offset.
    Unchanged,
    /// Written to the target group.
    Applied,
}

impl Outcome {
    /// Whether this partition is in the state the operator asked for.
    pub fn is_ok(self) -> bool {
        matches!(
            self,
            Self::Exact | Self::NoCommit | Self::Unchanged | Self::Applied
        )
    }

    /// The name used in JSON output and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Pending => "pending",
            Self::BeforeMap => "before_map",
            Self::NoCommit => "no_commit",
            Self::GroupActive => "group_active",
            Self::WouldRewind => "would_rewind",
            Self::CommittedElsewhere => "committed_elsewhere",
            Self::ReadBoth => "read_both",
            Self::Unchanged => "unchanged",
            Self::Applied => "applied",
        }
    }
}

/// One partition of a group's translation.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionResult {
    pub topic: String,
    pub partition: i32,
    /// The group's committed source offset.
    pub source_offset: Option<i64>,
    /// The source log start, when it is above the committed offset: what the group would
    /// read next on the source, and what was translated.
    pub source_log_start: Option<i64>,
    pub target_topic: String,
    pub target_offset: Option<i64>,
    /// The target group's committed offset before any write.
    pub target_committed: Option<i64>,
    pub outcome: Outcome,
}

/// Translates a group's committed offsets with the map (`maps`: each partition's, as
/// [`crate::FlowIndex::partitions`] gives them), for every partition of the topics it
/// committed on. Pure: no I/O.
///
/// A committed partition the map has nothing of (the source topic grew, and nothing of
/// the new partition is copied yet) is pending: its answer is not known yet, and leaving
/// it out would let the group start there from its reset policy.
///
/// `log_starts` (when the source is reachable) lifts an offset below the source log start
/// to the log start, since those records no longer exist on the source either.
pub fn translate_group<'m>(
    maps: impl IntoIterator<Item = (&'m str, i32, &'m OffsetIndex)>,
    committed: &Offsets,
    log_starts: &Offsets,
    rename: &dyn Fn(&str) -> String,
) -> Vec<PartitionResult> {
    // Partitions of topics the group never committed on are left out: a flow may copy
    // hundreds of topics, and a group reads a few.
    let topics: BTreeSet<&str> = committed.keys().map(|(t, _)| t.as_str()).collect();
    let mut partitions: BTreeMap<(&str, i32), Option<&OffsetIndex>> = maps
        .into_iter()
        .filter(|(topic, _, _)| topics.contains(topic))
        .map(|(topic, partition, map)| ((topic, partition), Some(map)))
        .collect();
    for (topic, partition) in committed.keys() {
        partitions.entry((topic, *partition)).or_insert(None);
    }
    partitions
        .into_iter()
        .map(|((topic, partition), map)| {
            let key = (topic.to_string(), partition);
            let source_offset = committed.get(&key).copied();
            let log_start = log_starts
                .get(&key)
                .copied()
                .filter(|low| source_offset.is_some_and(|c| c < *low));
            let (target_offset, outcome) = match (source_offset, map) {
                (None, _) => (None, Outcome::NoCommit),
                (Some(_), None) => (None, Outcome::Pending),
                (Some(c), Some(map)) => match map.translate(log_start.unwrap_or(c)) {
                    Translation::Exact(t) => (Some(t), Outcome::Exact),
                    Translation::Pending => (None, Outcome::Pending),
                    Translation::BeforeMap { .. } => (None, Outcome::BeforeMap),
                },
            };
            PartitionResult {
                topic: topic.to_string(),
                partition,
                source_offset,
                source_log_start: log_start,
                target_topic: rename(topic),
                target_offset,
                target_committed: None,
                outcome,
            }
        })
        .collect()
}

/// Writes the exact translations to the group on the target. Nothing is written unless
/// the group is empty there (no members, not rebalancing), and no partition moves
/// backwards, unless `force`. With `only_own` (the daemon's group sync), nothing is
/// written over an offset that someone else committed (see [`WRITTEN_BY_STRAIT`]),
/// unless `force`: a consumer that assigns its partitions itself commits without being
/// a member, so the group looks empty while it is in use.
///
/// Kafka has no conditional commit, so such a consumer can still commit between the read
/// here and the write. The offsets are read again after the write, and a partition that
/// no longer holds what was written is reported as [`Outcome::CommittedElsewhere`]: a
/// commit that lands after Strait's is detected and stands; one that lands between the
/// read and the write (milliseconds) is overwritten without a trace.
pub fn apply(
    target: &GroupClient,
    group: &str,
    results: &mut [PartitionResult],
    force: bool,
    only_own: bool,
) -> Result<(), OffsetSyncError> {
    // A cluster that cannot describe groups still refuses this commit while the group
    // has members (see `GroupClient::commit`).
    let active = target
        .describe(group)?
        .is_some_and(|d| d.members > 0 || !matches!(d.state.as_str(), "Empty" | "Dead"));
    let wanted: Vec<(String, i32)> = results
        .iter()
        .map(|r| (r.target_topic.clone(), r.partition))
        .collect();
    let current = target.commits(group, &wanted)?;
    let mut to_commit = Offsets::new();
    for r in results.iter_mut() {
        let key = (r.target_topic.clone(), r.partition);
        let here = current.get(&key);
        r.target_committed = here.map(|(o, _)| *o);
        let Some(t) = r.target_offset.filter(|_| r.outcome == Outcome::Exact) else {
            continue;
        };
        let someone_elses = only_own && here.is_some_and(|(_, m)| m != WRITTEN_BY_STRAIT);
        r.outcome = decide_write(t, r.target_committed, someone_elses, active, force);
        if r.outcome == Outcome::Applied {
            to_commit.insert(key, t);
        }
    }
    if to_commit.is_empty() {
        return Ok(());
    }
    target.commit(group, &to_commit)?;
    let wanted: Vec<(String, i32)> = to_commit.keys().cloned().collect();
    let after = target.commits(group, &wanted)?;
    for r in results.iter_mut().filter(|r| r.outcome == Outcome::Applied) {
        let key = (r.target_topic.clone(), r.partition);
        let ours = (to_commit[&key], WRITTEN_BY_STRAIT.to_string());
        if after.get(&key) != Some(&ours) {
            r.outcome = Outcome::CommittedElsewhere;
            r.target_committed = after.get(&key).map(|(o, _)| *o);
        }
    }
    Ok(())
}

/// What to do with translation `t` of one partition of a target group whose committed
/// offset is `current`; `someone_elses`: that offset was committed by someone else.
pub fn decide_write(
    t: i64,
    current: Option<i64>,
    someone_elses: bool,
    active: bool,
    force: bool,
) -> Outcome {
    if active {
        Outcome::GroupActive
    } else if current == Some(t) {
        Outcome::Unchanged
    } else if someone_elses && !force {
        Outcome::CommittedElsewhere
    } else if current.is_some_and(|c| c > t) && !force {
        Outcome::WouldRewind
    } else {
        Outcome::Applied
    }
}

/// Reads every checkpoint of a flow (newest per group and partition).
pub fn load_checkpoints(
    config: &ClientConfig,
    topic: &str,
) -> Result<BTreeMap<(String, String, i32), Checkpoint>, OffsetSyncError> {
    let mut checkpoints = BTreeMap::new();
    TopicReader::new(config, topic)?.read_new(|_, value| {
        if let Some(c) = Checkpoint::decode(value) {
            checkpoints.insert((c.group.clone(), c.topic.clone(), c.partition), c);
        }
    })?;
    Ok(checkpoints)
}

/// Writes checkpoints to the flow's checkpoint topic.
pub struct CheckpointWriter(TopicWriter);

impl CheckpointWriter {
    pub fn new(config: &ClientConfig, topic: &str) -> Result<Self, OffsetSyncError> {
        TopicWriter::new(config, topic, 20).map(Self)
    }

    /// Writes and waits for the acknowledgement, so a round's checkpoints are durable
    /// before it counts as done.
    pub fn write(&self, checkpoints: &[Checkpoint]) -> Result<(), OffsetSyncError> {
        for c in checkpoints {
            self.0.send(&c.key(), &c.value())?;
        }
        self.0.flush(REQUEST_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use rdkafka::ClientConfig;

    use super::{GroupClient, Offsets, Outcome};

    /// Each group gets its own answer: one whose offsets cannot be read is an error in
    /// its place, beside the other groups' offsets, so one group never fails the
    /// checkpoint round of every group. The mock cluster refuses the first
    /// offset read; which group's request comes first is up to librdkafka.
    #[test]
    fn one_unreadable_group_leaves_the_other_groups_answers() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 2, 1).expect("topic");
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", cluster.bootstrap_servers());
        let client = GroupClient::new(&config).expect("client");
        let partitions = [("t".to_string(), 0), ("t".to_string(), 1)];
        let offsets = |n: i64| -> Offsets { [(("t".to_string(), 0), n)].into_iter().collect() };
        client.commit("g1", &offsets(11)).expect("commit g1");
        client.commit("g2", &offsets(22)).expect("commit g2");
        assert_eq!(
            client
                .committed_each(&["g1", "g2"], &partitions, &|_| false)
                .into_iter()
                .map(|a| a.expect("readable"))
                .collect::<Vec<_>>(),
            vec![offsets(11), offsets(22)]
        );

        cluster.request_errors(
            RDKafkaApiKey::OffsetFetch,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED],
        );
        let answers = client.committed_each(&["g1", "g2"], &partitions, &|_| false);
        let refused: Vec<usize> = (0..2).filter(|&i| answers[i].is_err()).collect();
        assert_eq!(refused.len(), 1, "{answers:?}");
        let (bad, good) = (refused[0], 1 - refused[0]);
        let error = answers[bad].as_ref().expect_err("refused").to_string();
        assert!(error.contains(["g1", "g2"][bad]), "{error}");
        assert_eq!(answers[good].as_ref().ok(), Some(&offsets([11, 22][good])));
    }

    /// A coordinator that moved (NotCoordinator) is looked up again and asked again, for
    /// writes and reads alike: it moves whenever a broker of the target restarts.
    #[test]
    fn a_moving_coordinator_is_asked_again() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 1, 1).expect("topic");
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", cluster.bootstrap_servers());
        let client = GroupClient::new(&config).expect("client");
        let partitions = [("t".to_string(), 0)];
        let offsets: Offsets = [(("t".to_string(), 0), 7)].into_iter().collect();
        let moved = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR; 2];
        cluster.request_errors(RDKafkaApiKey::OffsetCommit, &moved);
        client
            .commit("g", &offsets)
            .expect("committed once the coordinator is found");
        cluster.request_errors(RDKafkaApiKey::OffsetFetch, &moved);
        let read = client.committed_each(&["g"], &partitions, &|_| false);
        assert_eq!(read[0].as_ref().ok(), Some(&offsets), "{read:?}");
    }

    /// A partition the group committed on that the map knows nothing of (the source
    /// topic grew since it was copied) is pending, not left out.
    #[test]
    fn a_committed_partition_missing_from_the_map_is_pending() {
        use crate::map::{Coverage, MapUpdate, OffsetIndex, Segment};
        let mut copied = OffsetIndex::default();
        copied.apply(MapUpdate::Segment(Segment {
            source: 0,
            target: 0,
            len: 1000,
        }));
        copied.apply(MapUpdate::Coverage(Coverage {
            from: 0,
            through: 1000,
            target_next: 1000,
        }));
        let key = |t: &str, p: i32| (t.to_string(), p);
        let committed: Offsets = [(key("t", 0), 1000), (key("t", 2), 500), (key("new", 0), 7)]
            .into_iter()
            .collect();
        let maps = [("t", 0, &copied), ("t", 1, &copied), ("other", 0, &copied)];
        let results =
            super::translate_group(maps, &committed, &Offsets::new(), &|t| format!("x.{t}"));
        let rows: Vec<(&str, i32, Outcome, Option<i64>)> = results
            .iter()
            .map(|r| (r.topic.as_str(), r.partition, r.outcome, r.target_offset))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("new", 0, Outcome::Pending, None),
                ("t", 0, Outcome::Exact, Some(1000)),
                ("t", 1, Outcome::NoCommit, None),
                ("t", 2, Outcome::Pending, None),
            ]
        );
        assert!(
            !Outcome::Pending.is_ok(),
            "--apply refuses a pending partition"
        );
    }

    #[test]
    fn a_group_is_written_only_while_nobody_else_uses_it() {
        use super::decide_write;
        use Outcome::*;
        // (target group's offset, someone else's, group active, --force) → outcome, for
        // a translation to 10.
        let cases = [
            ((None, false, false, false), Applied),
            ((Some(4), false, false, false), Applied),
            ((Some(10), false, false, false), Unchanged),
            ((Some(12), false, false, false), WouldRewind),
            ((Some(12), false, false, true), Applied),
            ((Some(4), false, true, true), GroupActive),
            // Someone else's commit, forwards or backwards, is left alone unless forced.
            ((Some(4), true, false, false), CommittedElsewhere),
            ((Some(12), true, false, false), CommittedElsewhere),
            ((Some(4), true, false, true), Applied),
            ((Some(4), true, true, false), GroupActive),
            // Whoever committed it, the translation is already there.
            ((Some(10), true, false, false), Unchanged),
        ];
        for ((current, someone_elses, active, force), outcome) in cases {
            assert_eq!(
                decide_write(10, current, someone_elses, active, force),
                outcome,
                "{current:?}, someone else's {someone_elses}, active {active}, force {force}"
            );
        }
    }

    #[test]
    fn labels_match_the_json_names() {
        for o in [
            Outcome::Exact,
            Outcome::Pending,
            Outcome::BeforeMap,
            Outcome::NoCommit,
            Outcome::GroupActive,
            Outcome::WouldRewind,
            Outcome::CommittedElsewhere,
            Outcome::Unchanged,
            Outcome::Applied,
        ] {
            assert_eq!(serde_json::to_value(o).ok(), Some(o.label().into()));
        }
    }
}
