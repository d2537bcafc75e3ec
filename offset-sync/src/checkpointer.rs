//! The daemon side of offset sync: every interval, read the committed offsets of the
//! selected groups on the source, translate them, write checkpoints to the target and,
//! if enabled, write the translated offsets into the same groups on the target.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use regex::Regex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::groups::{self, GroupClient, Offsets, Outcome};
use crate::records::Checkpoint;
use crate::store::{ensure_compacted_topic, FlowIndex};
use crate::telemetry;
use crate::OffsetSyncError;

/// Which consumer groups a flow translates. Regexes match whole names.
#[derive(Debug, Clone)]
pub struct GroupSelector {
    include: Vec<Regex>,
    exclude: Vec<Regex>,
}

impl GroupSelector {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, regex::Error> {
        let anchored = |p: &String| Regex::new(&format!("^(?:{p})$"));
        Ok(Self {
            include: include.iter().map(anchored).collect::<Result<_, _>>()?,
            exclude: exclude.iter().map(anchored).collect::<Result<_, _>>()?,
        })
    }

    /// The include patterns that can be read as a group name (only `[A-Za-z0-9._-]`), for
    /// clusters that cannot list their groups.
    pub fn literal_names(&self) -> Vec<String> {
        self.include
            .iter()
            .filter_map(|r| {
                let inner = r.as_str().strip_prefix("^(?:")?.strip_suffix(")$")?;
                let plain = !inner.is_empty()
                    && inner
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
                plain.then(|| inner.to_string())
            })
            .filter(|g| self.selects(g))
            .collect()
    }

    pub fn selects(&self, group: &str) -> bool {
        self.include.iter().any(|r| r.is_match(group))
            && !self.exclude.iter().any(|r| r.is_match(group))
    }
}

/// Everything one flow's checkpointer needs.
#[derive(Clone)]
pub struct CheckpointSpec {
    pub flow: String,
    pub source: ClientConfig,
    pub target: ClientConfig,
    pub map_topic: String,
    pub checkpoint_topic: String,
    pub interval: Duration,
    pub groups: GroupSelector,
    /// Write translated offsets into the same-named groups on the target.
    pub sync_group_offsets: bool,
    pub replication_factor: Option<i32>,
    /// Source topic → target topic.
    pub rename: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// Whether the flow copies a source topic: a group's commits on such a topic are
    /// translated (or reported pending) even before the map has anything of it.
    pub topics: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

/// What a flow's checkpointer last did, for `/status`.
#[derive(Debug, Default)]
pub struct CheckpointStatus(Mutex<CheckpointSnapshot>);

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointSnapshot {
    /// When the last round completed (Unix ms).
    pub last_round_unix_ms: Option<i64>,
    pub map_segments: u64,
    pub groups_translated: u64,
    pub partitions_translated: u64,
    /// Partitions whose translation waits for replication to copy far enough.
    pub partitions_pending: u64,
    /// Groups whose translated offsets were not written to the target, with the reason.
    pub refused_groups: BTreeMap<String, String>,
    /// Groups left out of the last round because their committed offsets on the source
    /// could not be read, with the error.
    pub unreadable_groups: BTreeMap<String, String>,
    /// The last round's error, cleared by a successful round.
    pub last_error: Option<String>,
}

impl CheckpointStatus {
    pub fn snapshot(&self) -> CheckpointSnapshot {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut CheckpointSnapshot)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Runs until `cancel` fires. Errors in a round are logged and retried next round; the
/// checkpoint age metric shows how long it has been since a round completed.
pub fn run_checkpoints(
    spec: CheckpointSpec,
    status: Arc<CheckpointStatus>,
    cancel: CancellationToken,
) {
    let mut state = None;
    let mut last_round: Option<Instant> = None;
    while !cancel.is_cancelled() {
        let started = Instant::now();
        if state.is_none() {
            match Checkpointer::new(&spec) {
                Ok(s) => state = Some(s),
                Err(e) => {
                    warn!(flow = %spec.flow, error = %e, "offset sync could not start; retrying");
                    status.update(|s| s.last_error = Some(e.to_string()));
                }
            }
        }
        if let Some(s) = &mut state {
            match s.round(&spec) {
                Ok(summary) => {
                    last_round = Some(Instant::now());
                    let refused = s
                        .refused
                        .iter()
                        .map(|(g, o)| (g.clone(), o.label().to_string()))
                        .collect();
                    status.update(|st| {
                        *st = CheckpointSnapshot {
                            last_round_unix_ms: Some(unix_ms()),
                            refused_groups: refused,
                            unreadable_groups: s.unreadable.clone(),
                            last_error: None,
                            ..summary
                        }
                    });
                }
                Err(e) => {
                    status.update(|st| st.last_error = Some(e.to_string()));
                    // Start over with new clients: a writer that failed once stays failed.
                    warn!(flow = %spec.flow, error = %e, "checkpoint round failed; retrying");
                    state = None;
                }
            }
        }
        if let Some(at) = last_round {
            metrics::gauge!(telemetry::CHECKPOINT_AGE_SECONDS, "flow" => spec.flow.clone())
                .set(at.elapsed().as_secs_f64());
        }
        let until = started + spec.interval;
        while !cancel.is_cancelled() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
        }
    }
}

struct Checkpointer {
    index: FlowIndex,
    writer: groups::CheckpointWriter,
    /// Last checkpoint written per (group, topic, partition).
    written: BTreeMap<(String, String, i32), Checkpoint>,
    /// Reads every selected group's offsets on the source, lists groups there and reads
    /// log starts; one client for all groups (see [`GroupClient`]).
    source: GroupClient,
    /// Writes translated offsets into the selected groups on the target (when
    /// `sync_group_offsets` is on).
    target: Option<GroupClient>,
    /// Groups whose target offsets match their latest translation: nothing to write until
    /// the group commits again on the source. Without this, every round described and
    /// wrote every group on the target; with 11 groups at a 1 s interval, a new commit
    /// took 15 s to reach its checkpoint.
    in_sync: std::collections::HashSet<String>,
    /// Groups whose refusal was logged, with the reason, so it is logged once per change.
    refused: HashMap<String, Outcome>,
    /// Groups whose committed offsets could not be read in the last round, with the
    /// error; logged once per change.
    unreadable: BTreeMap<String, String>,
    warned_no_group_list: bool,
}

impl Checkpointer {
    fn new(spec: &CheckpointSpec) -> Result<Self, OffsetSyncError> {
        ensure_compacted_topic(
            &spec.target,
            &spec.checkpoint_topic,
            spec.replication_factor,
        )?;
        let written = groups::load_checkpoints(&spec.target, &spec.checkpoint_topic)?;
        info!(flow = %spec.flow, checkpoints = written.len(), topic = %spec.checkpoint_topic, "offset sync started");
        Ok(Self {
            index: FlowIndex::load(&spec.target, &spec.map_topic)?,
            writer: groups::CheckpointWriter::new(&spec.target, &spec.checkpoint_topic)?,
            written,
            source: GroupClient::new(&spec.source)?,
            target: spec
                .sync_group_offsets
                .then(|| GroupClient::new(&spec.target))
                .transpose()?,
            in_sync: Default::default(),
            refused: HashMap::new(),
            unreadable: BTreeMap::new(),
            warned_no_group_list: false,
        })
    }

    /// One round; returns its counts (the caller fills in the rest of the snapshot).
    fn round(&mut self, spec: &CheckpointSpec) -> Result<CheckpointSnapshot, OffsetSyncError> {
        let started = Instant::now();
        self.index.catch_up()?;
        debug!(flow = %spec.flow, elapsed = ?started.elapsed(), "offset map read");
        let labels = [("flow", spec.flow.clone())];
        metrics::gauge!(telemetry::OFFSET_MAP_SEGMENTS, &labels)
            .set(self.index.segment_count() as f64);
        let partitions: Vec<(String, i32)> = self
            .index
            .partitions()
            .map(|(t, p, _)| (t.to_string(), p))
            .collect();
        let mut summary = CheckpointSnapshot {
            map_segments: self.index.segment_count() as u64,
            ..CheckpointSnapshot::default()
        };
        if partitions.is_empty() {
            return Ok(summary);
        }
        let selected: Vec<String> = match self.source.list_groups()? {
            Some(all) => all.into_iter().filter(|g| spec.groups.selects(g)).collect(),
            None => {
                let named = spec.groups.literal_names();
                if !self.warned_no_group_list {
                    warn!(flow = %spec.flow, groups = ?named, "the source cluster cannot list consumer groups; translating the groups named literally in offset_sync.groups");
                    self.warned_no_group_list = true;
                }
                named
            }
        };
        self.in_sync.retain(|g| selected.contains(g));
        let now_ms = unix_ms();
        let (mut groups_done, mut exact, mut pending) = (0u64, 0u64, 0u64);
        let mut checkpoints = Vec::new();
        let names: Vec<&str> = selected.iter().map(String::as_str).collect();
        let answers = self
            .source
            .committed_each(&names, &partitions, spec.topics.as_ref());
        // A group that cannot be read this round is left out of it, and the others go on:
        // when one group failed the whole round, a group whose coordinator was unreachable
        // (one source broker down, say) stopped the checkpoints of every group. Only when
        // no group can be read is the source itself taken to be the trouble.
        let mut unreadable = BTreeMap::new();
        let mut first_error = None;
        let mut committed_by_group: Vec<(&String, Offsets)> = Vec::new();
        for (group, answer) in selected.iter().zip(answers) {
            match answer {
                Ok(committed) if committed.is_empty() => {}
                Ok(committed) => committed_by_group.push((group, committed)),
                Err(e) => {
                    unreadable.insert(group.clone(), e.to_string());
                    first_error.get_or_insert(e);
                }
            }
        }
        if unreadable.len() == selected.len() {
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        self.note_unreadable(spec, unreadable);
        // One ListOffsets request for every group's partitions, not one per group: a round
        // runs every checkpoint interval, beside the copy, on the same brokers.
        let wanted: BTreeSet<&(String, i32)> = committed_by_group
            .iter()
            .flat_map(|(_, committed)| committed.keys())
            .collect();
        let log_starts = if wanted.is_empty() {
            Default::default()
        } else {
            let wanted: Vec<(String, i32)> = wanted.into_iter().cloned().collect();
            self.source.log_starts(&wanted)
        };
        for (group, committed) in committed_by_group {
            let mut results = groups::translate_group(
                self.index.partitions(),
                &committed,
                &log_starts,
                spec.rename.as_ref(),
            );
            groups_done += 1;
            let unchanged = checkpoints.len();
            for r in &results {
                match r.outcome {
                    Outcome::Exact => exact += 1,
                    Outcome::Pending | Outcome::BeforeMap => pending += 1,
                    _ => continue,
                }
                let Some(source_offset) = r.source_offset else {
                    continue;
                };
                let key = (group.clone(), r.topic.clone(), r.partition);
                let previous = self.written.get(&key);
                // A checkpoint moves back only when the group itself was rewound on the
                // source; a translation never does.
                if previous.is_some_and(|p| {
                    p.source_offset == source_offset && p.target_offset == r.target_offset
                }) {
                    continue;
                }
                checkpoints.push(Checkpoint {
                    group: group.clone(),
                    topic: r.topic.clone(),
                    partition: r.partition,
                    source_offset,
                    target_topic: r.target_topic.clone(),
                    target_offset: r.target_offset,
                    read_at_ms: now_ms,
                });
            }
            let changed = checkpoints.len() > unchanged;
            if spec.sync_group_offsets && (changed || !self.in_sync.contains(group)) {
                self.sync_group(spec, group, &mut results)?;
            }
        }
        debug!(flow = %spec.flow, groups = groups_done, written = checkpoints.len(), elapsed = ?started.elapsed(), "checkpoint round");
        self.writer.write(&checkpoints)?;
        for c in checkpoints {
            self.written
                .insert((c.group.clone(), c.topic.clone(), c.partition), c);
        }
        metrics::gauge!(telemetry::GROUPS_TRANSLATED, &labels).set(groups_done as f64);
        metrics::gauge!(telemetry::GROUP_PARTITIONS_TRANSLATED, &labels).set(exact as f64);
        metrics::gauge!(telemetry::GROUP_OFFSETS_PENDING, &labels).set(pending as f64);
        summary.groups_translated = groups_done;
        summary.partitions_translated = exact;
        summary.partitions_pending = pending;
        Ok(summary)
    }

    /// Keeps the groups left out of this round (see [`Self::round`]), logging each once
    /// per change of its error, and when it can be read again.
    fn note_unreadable(&mut self, spec: &CheckpointSpec, now: BTreeMap<String, String>) {
        for (group, error) in &now {
            if self.unreadable.get(group) != Some(error) {
                warn!(flow = %spec.flow, group = %group, error = %error, "committed offsets of the group not readable; its checkpoints wait, the other groups' go on");
            }
        }
        for group in self.unreadable.keys() {
            if !now.contains_key(group) {
                info!(flow = %spec.flow, group = %group, "committed offsets of the group readable again");
            }
        }
        metrics::gauge!(telemetry::CHECKPOINT_UNREADABLE_GROUPS, "flow" => spec.flow.clone())
            .set(now.len() as f64);
        self.unreadable = now;
    }

    fn sync_group(
        &mut self,
        spec: &CheckpointSpec,
        group: &str,
        results: &mut [groups::PartitionResult],
    ) -> Result<(), OffsetSyncError> {
        // In sync until the next change, unless the write fails or is refused below. A
        // pending partition that becomes exact is a change (a new checkpoint).
        self.in_sync.insert(group.to_string());
        if !results.iter().any(|r| r.outcome == Outcome::Exact) {
            return Ok(());
        }
        let Some(target) = &self.target else {
            return Ok(());
        };
        if let Err(e) = groups::apply(target, group, results, false, true) {
            metrics::counter!(telemetry::GROUP_OFFSET_WRITES_REFUSED_TOTAL,
                "flow" => spec.flow.clone(), "reason" => "error")
            .increment(1);
            warn!(flow = %spec.flow, group, error = %e, "writing translated offsets to the target group failed");
            self.in_sync.remove(group);
            return Ok(());
        }
        let applied = results
            .iter()
            .filter(|r| r.outcome == Outcome::Applied)
            .count();
        if applied > 0 {
            metrics::counter!(telemetry::GROUP_OFFSET_WRITES_TOTAL, "flow" => spec.flow.clone())
                .increment(applied as u64);
            debug!(flow = %spec.flow, group, partitions = applied, "wrote translated offsets to the target group");
        }
        let refusal = results.iter().map(|r| r.outcome).find(|o| {
            matches!(
                o,
                Outcome::GroupActive | Outcome::WouldRewind | Outcome::CommittedElsewhere
            )
        });
        match refusal {
            Some(reason) => {
                self.in_sync.remove(group);
                let label = reason.label();
                metrics::counter!(telemetry::GROUP_OFFSET_WRITES_REFUSED_TOTAL,
                    "flow" => spec.flow.clone(), "reason" => label)
                .increment(1);
                if self.refused.get(group) != Some(&reason) {
                    warn!(
                        flow = %spec.flow, group, reason = label,
                        "not writing translated offsets to the target group: {}",
                        match reason {
                            Outcome::GroupActive => "it has active members on the target; offsets of an active group are never changed",
                            Outcome::CommittedElsewhere => "someone else committed to it on the target (a consumer that assigns partitions itself commits without being a member); the group is left to them, and `strait offsets translate --apply` takes it over",
                            _ => "the target group is ahead of the translation; `strait offsets translate --apply --force` moves it back",
                        }
                    );
                    self.refused.insert(group.to_string(), reason);
                }
            }
            None => {
                self.refused.remove(group);
            }
        }
        Ok(())
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
