//! `strait migrate`: a staged migration of one flow, driven by the `[migration]` section.
//!
//! Stages run in order; each has a gate (manual approval or an automatic condition) that
//! must pass before the next begins:
//!
//! mirror → move_producers → drain → stop_consumers → translate_offsets → verify →
//! start_consumers → done
//!
//! The state lives in a compacted topic on the target (key `state`, written only by the
//! daemon); `approve` and `abort` add records of their own (`approve/<attempt>/<stage>`,
//! `abort/<attempt>`) that the daemon reads, so commands and daemon never race on one
//! record. A restarted daemon resumes at the stage it was in.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use strait_offset_sync::groups::{GroupClient, Outcome};
use strait_offset_sync::{ensure_compacted_topic, FlowIndex, TopicReader, TopicWriter};
use strait_replicator::{client_config, FlowSpec};
use strait_verify::{verify_flow, Silent, VerifySpec};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Approval, Config, Gate, MigrationConfig, OnTimeout};
use crate::offsets;
use crate::telemetry;
use crate::OutputFormat;

const TICK: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Stage {
    Mirror,
    MoveProducers,
    Drain,
    StopConsumers,
    TranslateOffsets,
    Verify,
    StartConsumers,
    Done,
    Aborted,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Self::Mirror => "mirror",
            Self::MoveProducers => "move_producers",
            Self::Drain => "drain",
            Self::StopConsumers => "stop_consumers",
            Self::TranslateOffsets => "translate_offsets",
            Self::Verify => "verify",
            Self::StartConsumers => "start_consumers",
            Self::Done => "done",
            Self::Aborted => "aborted",
        }
    }

    fn next(self) -> Self {
        match self {
            Self::Mirror => Self::MoveProducers,
            Self::MoveProducers => Self::Drain,
            Self::Drain => Self::StopConsumers,
            Self::StopConsumers => Self::TranslateOffsets,
            Self::TranslateOffsets => Self::Verify,
            Self::Verify => Self::StartConsumers,
            Self::StartConsumers | Self::Done => Self::Done,
            Self::Aborted => Self::Aborted,
        }
    }

    fn gate(self, m: &MigrationConfig) -> Option<&Gate> {
        let g = &m.gates;
        Some(match self {
            Self::Mirror => &g.mirror,
            Self::MoveProducers => &g.move_producers,
            Self::Drain => &g.drain,
            Self::StopConsumers => &g.stop_consumers,
            Self::TranslateOffsets => &g.translate_offsets,
            Self::Verify => &g.verify,
            Self::StartConsumers => &g.start_consumers,
            Self::Done | Self::Aborted => return None,
        })
    }

    /// Until consumers start on the target, the source is still the truth and the
    /// migration can go back to plain mirroring.
    fn abortable(self) -> bool {
        self < Self::StartConsumers
    }

    /// Stages where an operator's approval stands for the condition; in the others it
    /// is required in addition, so a manual gate never advances while it is unsafe.
    fn approval_suffices(self) -> bool {
        matches!(
            self,
            Self::Mirror | Self::MoveProducers | Self::StartConsumers
        )
    }
}

/// Said when a gate on group membership needs the operator's word instead.
const CANNOT_DESCRIBE: &str = "cannot describe groups";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Everything the daemon persists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrationState {
    pub flow: String,
    /// Counts migrations of this flow; a new one starts after an abort.
    pub attempt: u32,
    pub stage: Stage,
    pub stage_entered_at_ms: i64,
    /// What the current stage waits for, in words.
    pub waiting_for: String,
    pub history: Vec<StageEntry>,
    /// Per group: the offsets written to the target.
    pub translated: BTreeMap<String, Vec<TranslatedPartition>>,
    pub verify: Option<VerifySummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageEntry {
    pub stage: Stage,
    pub entered_at_ms: i64,
    pub left_at_ms: Option<i64>,
    /// How the gate passed: "approved", or the condition that held.
    pub passed: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranslatedPartition {
    pub topic: String,
    pub partition: i32,
    pub source_offset: Option<i64>,
    pub target_topic: String,
    pub target_offset: Option<i64>,
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifySummary {
    pub ok: bool,
    pub complete: bool,
    pub partitions: usize,
    pub records: u64,
    pub differences: Vec<String>,
    pub at_ms: i64,
}

impl MigrationState {
    fn new(flow: &str, attempt: u32) -> Self {
        let now = now_ms();
        Self {
            flow: flow.to_string(),
            attempt,
            stage: Stage::Mirror,
            stage_entered_at_ms: now,
            waiting_for: String::new(),
            history: vec![StageEntry {
                stage: Stage::Mirror,
                entered_at_ms: now,
                left_at_ms: None,
                passed: None,
            }],
            translated: BTreeMap::new(),
            verify: None,
        }
    }

    fn enter(&mut self, stage: Stage, passed: String) {
        let now = now_ms();
        if let Some(last) = self.history.last_mut() {
            last.left_at_ms = Some(now);
            last.passed = Some(passed);
        }
        self.stage = stage;
        self.stage_entered_at_ms = now;
        self.waiting_for.clear();
        self.history.push(StageEntry {
            stage,
            entered_at_ms: now,
            left_at_ms: None,
            passed: None,
        });
    }
}

/// The state topic: the daemon's state plus operators' approvals and aborts.
struct Store {
    reader: TopicReader,
    writer: Option<TopicWriter>,
    state: Option<MigrationState>,
    approvals: BTreeSet<(u32, Stage)>,
    aborts: BTreeSet<u32>,
}

impl Store {
    fn open(config: &Config, writable: bool) -> Result<Self> {
        let (m, spec) = migration(config)?;
        let topic = config.migration_state_topic().context("migration")?;
        let target = client_config(&spec.target);
        if writable {
            ensure_compacted_topic(&target, &topic, spec.replication_factor)
                .with_context(|| format!("creating {topic} on '{}'", spec.target.name))?;
        }
        let mut store = Self {
            reader: TopicReader::new(&target, &topic)?,
            writer: if writable {
                Some(TopicWriter::new(&target, &topic, 0)?)
            } else {
                None
            },
            state: None,
            approvals: BTreeSet::new(),
            aborts: BTreeSet::new(),
        };
        store.refresh().with_context(|| {
            format!("reading migration state of flow '{}' from {topic}", m.flow)
        })?;
        Ok(store)
    }

    fn refresh(&mut self) -> Result<()> {
        let (state, approvals, aborts) = (&mut self.state, &mut self.approvals, &mut self.aborts);
        let mut bad = None;
        self.reader.read_new(|key, value| {
            let key = String::from_utf8_lossy(key);
            let parts: Vec<&str> = key.split('/').collect();
            match parts.as_slice() {
                ["state"] => match value.map(serde_json::from_slice::<MigrationState>) {
                    Some(Ok(s)) => *state = Some(s),
                    Some(Err(e)) => bad = Some(format!("state record: {e}")),
                    None => *state = None,
                },
                ["approve", attempt, stage] => {
                    if let (Ok(a), Ok(s)) = (attempt.parse(), Stage::from_str(stage, true)) {
                        approvals.insert((a, s));
                    }
                }
                ["abort", attempt] => {
                    if let Ok(a) = attempt.parse() {
                        aborts.insert(a);
                    }
                }
                _ => {}
            }
        })?;
        if let Some(bad) = bad {
            bail!("unreadable migration {bad}");
        }
        Ok(())
    }

    fn write(&self, key: &str, value: &[u8]) -> Result<()> {
        let writer = self
            .writer
            .as_ref()
            .context("state store opened read-only")?;
        writer.send(key.as_bytes(), value)?;
        writer.flush(TIMEOUT)?;
        Ok(())
    }

    fn save(&mut self, state: &MigrationState) -> Result<()> {
        self.write("state", &serde_json::to_vec(state)?)?;
        self.state = Some(state.clone());
        Ok(())
    }
}

fn migration(config: &Config) -> Result<(&MigrationConfig, FlowSpec)> {
    let m = config
        .migration
        .as_ref()
        .context("the config has no [migration] section")?;
    let spec = config
        .flow_specs()?
        .into_iter()
        .find(|s| s.name == m.flow)
        .context("migration.flow")?;
    Ok((m, spec))
}

/// Live facts about the migrated flow, read from both clusters.
struct Probe {
    spec: FlowSpec,
    source: BaseConsumer,
    target: BaseConsumer,
    /// Any group's members (and the source's group list): one client per cluster, kept
    /// for the whole migration (gates ask every few seconds, for every migrated group).
    source_groups: GroupClient,
    target_groups: GroupClient,
    index: FlowIndex,
}

/// One source partition's replication lag.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub source_end: i64,
    pub replicated_to: i64,
    pub lag_records: i64,
}

impl Probe {
    fn new(config: &Config) -> Result<Self> {
        let (m, spec) = migration(config)?;
        let connect = |c: &ClientConfig| -> Result<BaseConsumer> {
            Ok(c.clone()
                .set("group.id", "strait-migrate-probe-unused")
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed")
                .create()?)
        };
        let flow = &config.flows[&m.flow];
        let target = client_config(&spec.target);
        Ok(Self {
            source: connect(&client_config(&spec.source))?,
            target: connect(&target)?,
            source_groups: GroupClient::new(&client_config(&spec.source))?,
            target_groups: GroupClient::new(&target)?,
            index: FlowIndex::load(&target, &flow.map_topic(&m.flow))?,
            spec,
        })
    }

    /// Source topics the flow selects, with partition counts.
    fn topics(&self) -> Result<Vec<(String, i32)>> {
        let md = self
            .source
            .fetch_metadata(None, TIMEOUT)
            .context("listing source topics")?;
        let mut topics: Vec<(String, i32)> = md
            .topics()
            .iter()
            .filter(|t| self.spec.selector.selects(t.name()))
            // Heartbeats are Strait's, not the application's: they never go idle, and
            // their lag says nothing about the data being moved.
            .filter(|t| {
                self.spec
                    .heartbeat
                    .as_ref()
                    .is_none_or(|h| h.topic != t.name())
            })
            .map(|t| (t.name().to_string(), t.partitions().len() as i32))
            .collect();
        topics.sort();
        Ok(topics)
    }

    /// Lag of every partition: the source end against what the persisted offset map
    /// says was handled (the map is what translation and verification use).
    fn lags(&mut self) -> Result<Vec<PartitionLag>> {
        self.index.catch_up()?;
        let mut lags = Vec::new();
        for (topic, partitions) in self.topics()? {
            for partition in 0..partitions {
                let (low, high) = self
                    .source
                    .fetch_watermarks(&topic, partition, TIMEOUT)
                    .with_context(|| format!("end offset of {topic}/{partition}"))?;
                let replicated_to = self
                    .index
                    .partition(&topic, partition)
                    .and_then(|m| m.handled_through())
                    .unwrap_or(low)
                    .max(low);
                lags.push(PartitionLag {
                    topic: topic.clone(),
                    partition,
                    source_end: high,
                    replicated_to,
                    lag_records: (high - replicated_to).max(0),
                });
            }
        }
        Ok(lags)
    }

    /// Age in seconds of the oldest record not yet replicated (0 when caught up).
    fn lag_seconds(&self, lag: &PartitionLag) -> f64 {
        if lag.lag_records == 0 {
            return 0.0;
        }
        strait_verify::read_record(
            &client_config(&self.spec.source),
            &lag.topic,
            lag.partition,
            lag.replicated_to,
        )
        .and_then(|r| r.timestamp)
        .map_or(0.0, |ts| ((now_ms() - ts).max(0)) as f64 / 1000.0)
    }

    /// The group's members on one side; `None` if that cluster cannot describe groups.
    fn members(&self, on_target: bool, group: &str) -> Result<Option<usize>> {
        let groups = if on_target {
            &self.target_groups
        } else {
            &self.source_groups
        };
        Ok(groups.members(group)?)
    }
}

/// Whether a gate's condition holds now.
enum Check {
    Pass(String),
    Wait(String),
}

/// The daemon side: walks the stages until done or aborted.
pub struct Controller {
    config: Config,
    store: Store,
    probe: Probe,
    state: MigrationState,
    /// Source end offsets last seen, and when they last changed (move_producers).
    ends: BTreeMap<(String, i32), i64>,
    ends_changed: Instant,
    warned_overdue: bool,
    last_verify: Option<Instant>,
    /// The state as of the last step, for `/status`.
    shown: Arc<Mutex<Option<MigrationState>>>,
}

impl Controller {
    /// Loads (or starts) the migration. A new migration of an identity-named flow is
    /// refused if a target topic already holds records Strait did not write.
    pub fn start(config: Config) -> Result<Self> {
        let mut store = Store::open(&config, true)?;
        // The flow creates its map topic too, but the controller reads it first.
        let (m, spec) = migration(&config)?;
        let map_topic = config.flows[&m.flow].map_topic(&m.flow);
        ensure_compacted_topic(
            &client_config(&spec.target),
            &map_topic,
            spec.replication_factor,
        )?;
        let probe = Probe::new(&config)?;
        let flow = migration(&config)?.0.flow.clone();
        let state = match store.state.clone() {
            Some(s) if s.stage == Stage::Done => {
                bail!(
                    "the migration of flow '{flow}' (attempt {}) is already done; remove \
                     [migration] from the config to mirror on",
                    s.attempt
                )
            }
            Some(s) if s.stage != Stage::Aborted && !store.aborts.contains(&s.attempt) => {
                info!(
                    flow,
                    attempt = s.attempt,
                    stage = s.stage.name(),
                    "resuming migration"
                );
                s
            }
            previous => {
                let attempt = previous.map_or(1, |s| s.attempt + 1);
                check_no_foreign_data(&config, &probe)?;
                let state = MigrationState::new(&flow, attempt);
                store.save(&state)?;
                info!(flow, attempt, "migration started at stage mirror");
                state
            }
        };
        warn_unknown(&config, &probe);
        let shown = Arc::new(Mutex::new(Some(state.clone())));
        Ok(Self {
            config,
            store,
            probe,
            state,
            shown,
            ends: BTreeMap::new(),
            ends_changed: Instant::now(),
            warned_overdue: false,
            last_verify: None,
        })
    }

    /// Runs until the migration is done (cancels `shutdown`: nothing left to mirror),
    /// aborted (returns; mirroring goes on), or `shutdown` fires.
    /// Where `/status` reads the migration's state; updated after every step.
    pub fn status(&self) -> Arc<Mutex<Option<MigrationState>>> {
        self.shown.clone()
    }

    pub fn run(mut self, shutdown: CancellationToken) -> Result<()> {
        while !shutdown.is_cancelled() {
            let before = self.state.stage;
            let result = self.step();
            *self.shown.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.state.clone());
            match result {
                Ok(Stage::Done) => {
                    info!(flow = %self.state.flow, "migration done; stopping");
                    shutdown.cancel();
                    return Ok(());
                }
                Ok(Stage::Aborted) => {
                    info!(flow = %self.state.flow, "migration aborted; mirroring goes on");
                    return Ok(());
                }
                // Look at the new stage's gate at once, so status says what it waits for.
                Ok(stage) if stage != before => continue,
                Ok(_) => {}
                Err(e) => warn!(error = %crate::error_text(&e), "migration step failed; retrying"),
            }
            let deadline = Instant::now() + TICK;
            while Instant::now() < deadline && !shutdown.is_cancelled() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<Stage> {
        self.store.refresh()?;
        let stage = self.state.stage;
        metrics::gauge!(telemetry::MIGRATION_STAGE, "flow" => self.state.flow.clone(), "stage" => stage.name())
            .set(1.0);
        if self.store.aborts.contains(&self.state.attempt) && stage.abortable() {
            return self.abort("aborted by the operator");
        }
        let m = migration(&self.config)?.0;
        let Some(gate) = stage.gate(m).cloned() else {
            return Ok(stage);
        };
        let approved = self.store.approvals.contains(&(self.state.attempt, stage));
        if approved && self.state.waiting_for.contains("then approve") {
            // The check below can take seconds (translation, verification): say that the
            // approval arrived rather than keep asking for it.
            self.state.waiting_for = format!("approved; checking: {}", self.instruction(stage));
            self.store.save(&self.state.clone())?;
        }
        let check = match (gate.approval, approved) {
            (Approval::Manual, false) => Check::Wait(format!(
                "{}; then approve: strait migrate approve --config FILE {}",
                self.instruction(stage),
                stage.name()
            )),
            (Approval::Manual, true) if stage.approval_suffices() => Check::Pass("approved".into()),
            _ => self.condition(stage, &gate, approved)?,
        };
        match check {
            Check::Pass(how) => {
                let how = if approved && how != "approved" {
                    format!("approved; {how}")
                } else {
                    how
                };
                let next = stage.next();
                info!(flow = %self.state.flow, from = stage.name(), to = next.name(), passed = %how, "migration stage passed");
                metrics::gauge!(telemetry::MIGRATION_STAGE, "flow" => self.state.flow.clone(), "stage" => stage.name())
                    .set(0.0);
                self.state.enter(next, how);
                self.warned_overdue = false;
                self.store.save(&self.state.clone())?;
                Ok(next)
            }
            Check::Wait(mut why) => {
                let waited = Duration::from_millis(
                    (now_ms() - self.state.stage_entered_at_ms).max(0) as u64,
                );
                if let Some(timeout) = gate.timeout.filter(|t| waited > *t) {
                    if gate.on_timeout == OnTimeout::Abort && stage.abortable() {
                        return self.abort(&format!(
                            "stage {} timed out after {}",
                            stage.name(),
                            humantime::format_duration(timeout)
                        ));
                    }
                    if !self.warned_overdue {
                        warn!(stage = stage.name(), waiting_for = %why, "migration stage overdue");
                        self.warned_overdue = true;
                    }
                    why.push_str(&format!(
                        " (overdue: timeout {})",
                        humantime::format_duration(timeout)
                    ));
                }
                if why != self.state.waiting_for {
                    self.state.waiting_for = why;
                    self.store.save(&self.state.clone())?;
                }
                Ok(stage)
            }
        }
    }

    /// A gate on group membership, on a cluster that cannot describe groups (librdkafka's
    /// mock cluster, some Kafka-compatible services): the operator's approval stands in
    /// for the check, whatever the gate's `approval` setting, and status says so.
    fn attested(&self, stage: Stage, on_target: bool, approved: bool) -> Check {
        let spec = &self.probe.spec;
        let cluster = if on_target {
            &spec.target.name
        } else {
            &spec.source.name
        };
        if approved {
            Check::Pass(format!(
                "approved ('{cluster}' {CANNOT_DESCRIBE}, so the approval stands for the check)"
            ))
        } else {
            Check::Wait(format!(
                "{}; '{cluster}' {CANNOT_DESCRIBE}, so Strait cannot see it: then approve: \
                 strait migrate approve --config FILE {}",
                self.instruction(stage),
                stage.name()
            ))
        }
    }

    fn abort(&mut self, why: &str) -> Result<Stage> {
        warn!(flow = %self.state.flow, stage = self.state.stage.name(), why, "migration aborted");
        self.state.enter(Stage::Aborted, why.to_string());
        self.state.waiting_for = format!("{why}; mirroring goes on");
        self.store.save(&self.state.clone())?;
        Ok(Stage::Aborted)
    }

    fn instruction(&self, stage: Stage) -> String {
        let spec = &self.probe.spec;
        let groups = migration(&self.config)
            .map(|m| m.0.groups.join(", "))
            .unwrap_or_default();
        match stage {
            Stage::Mirror => format!("mirroring '{}' → '{}'", spec.source.name, spec.target.name),
            Stage::MoveProducers => format!(
                "stop producers on '{}' (start them on '{}' once stage drain has passed)",
                spec.source.name, spec.target.name
            ),
            Stage::Drain => format!(
                "replication catching up; producers may start on '{}' once this passes",
                spec.target.name
            ),
            Stage::StopConsumers => format!("stop consumers of {groups} on '{}'", spec.source.name),
            Stage::TranslateOffsets => "translate and write group offsets".into(),
            Stage::Verify => "verify the copy".into(),
            Stage::StartConsumers => {
                format!("start consumers of {groups} on '{}'", spec.target.name)
            }
            Stage::Done | Stage::Aborted => String::new(),
        }
    }

    fn condition(&mut self, stage: Stage, gate: &Gate, approved: bool) -> Result<Check> {
        let m = migration(&self.config)?.0.groups.clone();
        Ok(match stage {
            Stage::Mirror | Stage::Drain => {
                let lags = self.probe.lags()?;
                let behind: Vec<&PartitionLag> =
                    lags.iter().filter(|l| l.lag_records > 0).collect();
                if behind.is_empty() {
                    Check::Pass(format!(
                        "replication lag 0 on all {} partitions",
                        lags.len()
                    ))
                } else {
                    Check::Wait(format!(
                        "replication lag {} records on {} partition(s), e.g. {}/{}",
                        behind.iter().map(|l| l.lag_records).sum::<i64>(),
                        behind.len(),
                        behind[0].topic,
                        behind[0].partition
                    ))
                }
            }
            Stage::MoveProducers => {
                let idle_for = gate.producers_idle_for.unwrap_or(Duration::from_secs(10));
                let lags = self.probe.lags()?;
                let ends: BTreeMap<(String, i32), i64> = lags
                    .iter()
                    .map(|l| ((l.topic.clone(), l.partition), l.source_end))
                    .collect();
                let moved: Vec<String> = ends
                    .iter()
                    .filter(|(k, v)| self.ends.get(*k).is_some_and(|old| old != *v))
                    .map(|((t, p), _)| format!("{t}/{p}"))
                    .collect();
                if self.ends.is_empty() || !moved.is_empty() {
                    self.ends_changed = Instant::now();
                }
                self.ends = ends;
                let idle = self.ends_changed.elapsed();
                if !moved.is_empty() {
                    Check::Wait(format!(
                        "producers are still writing to '{}' ({} moved); {}",
                        self.probe.spec.source.name,
                        moved.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
                        self.instruction(stage)
                    ))
                } else if idle >= idle_for {
                    Check::Pass(format!(
                        "no new records on '{}' for {}",
                        self.probe.spec.source.name,
                        humantime::format_duration(idle_for)
                    ))
                } else {
                    Check::Wait(format!(
                        "no new records on '{}' for {}s of {}",
                        self.probe.spec.source.name,
                        idle.as_secs(),
                        humantime::format_duration(idle_for)
                    ))
                }
            }
            Stage::StopConsumers => {
                let (mut active, mut unknown) = (Vec::new(), false);
                for group in &m {
                    match self.probe.members(false, group)? {
                        Some(0) => {}
                        Some(n) => active.push(format!("{group} ({n} members)")),
                        None => unknown = true,
                    }
                }
                if unknown {
                    self.attested(stage, false, approved)
                } else if active.is_empty() {
                    Check::Pass(format!(
                        "every migrated group is empty on '{}'",
                        self.probe.spec.source.name
                    ))
                } else {
                    Check::Wait(format!(
                        "{}: still active there: {}",
                        self.instruction(stage),
                        active.join(", ")
                    ))
                }
            }
            Stage::TranslateOffsets => self.translate_offsets(&m)?,
            Stage::Verify => self.verify()?,
            Stage::StartConsumers => {
                let (mut waiting, mut unknown) = (Vec::new(), false);
                for group in &m {
                    match self.probe.members(true, group)? {
                        Some(0) => waiting.push(group.clone()),
                        Some(_) => {}
                        None => unknown = true,
                    }
                }
                if unknown {
                    self.attested(stage, true, approved)
                } else if waiting.is_empty() {
                    Check::Pass(format!(
                        "every migrated group has members on '{}'",
                        self.probe.spec.target.name
                    ))
                } else {
                    Check::Wait(format!(
                        "start consumers of {} on '{}' (offsets are in place)",
                        waiting.join(", "),
                        self.probe.spec.target.name
                    ))
                }
            }
            Stage::Done | Stage::Aborted => Check::Pass(String::new()),
        })
    }

    /// Writes each group's exact offsets to the target once; a group already written
    /// (also by a daemon that crashed after writing) is not written again.
    fn translate_offsets(&mut self, groups: &[String]) -> Result<Check> {
        let flow = self.state.flow.clone();
        for group in groups {
            if self.state.translated.contains_key(group) {
                continue;
            }
            // The group must still be stopped on the source: offsets translated while it
            // commits would be stale at once.
            // (Unknown on a cluster that cannot describe groups: the stop_consumers approval
            // covered it.)
            if let Some(members) = self.probe.members(false, group)?.filter(|n| *n > 0) {
                return Ok(Check::Wait(format!(
                    "group {group} has {members} members on '{}' again: stop them",
                    self.probe.spec.source.name
                )));
            }
            let translated = offsets::translate_group(&self.config, &flow, group, false)?;
            let mut results = translated.results;
            if let Some(r) = results
                .iter()
                .find(|r| !matches!(r.outcome, Outcome::Exact | Outcome::NoCommit))
            {
                return Ok(Check::Wait(format!(
                    "group {group}: {}/{} is {}",
                    r.topic,
                    r.partition,
                    r.outcome.label().replace('_', " ")
                )));
            }
            self.probe.index.catch_up()?;
            for r in &results {
                let (Some(t), Some(map)) = (
                    r.target_offset,
                    self.probe.index.partition(&r.topic, r.partition),
                ) else {
                    continue;
                };
                let foreign = map.foreign_below(t);
                if foreign > 0 {
                    return Ok(Check::Wait(format!(
                        "group {group}: {foreign} record(s) were written to {}/{} on '{}' between copies, \
                         before offset {t} (producers started there before the mirror drained); a consumer \
                         starting at {t} would skip them, so no offsets are written. Abort and start over",
                        r.target_topic,
                        r.partition,
                        self.probe.spec.target.name
                    )));
                }
            }
            offsets::apply(&translated.spec, group, &mut results, false)?;
            if let Some(r) = results.iter().find(|r| !r.outcome.is_ok()) {
                return Ok(Check::Wait(format!(
                    "group {group}: {}/{} not written ({}){}",
                    r.target_topic,
                    r.partition,
                    r.outcome.label().replace('_', " "),
                    if r.outcome == Outcome::GroupActive {
                        ": stop its consumers on the target until the offsets are written"
                    } else {
                        ""
                    }
                )));
            }
            info!(
                flow,
                group,
                partitions = results.len(),
                "group offsets written to the target"
            );
            self.state.translated.insert(
                group.clone(),
                results
                    .iter()
                    .map(|r| TranslatedPartition {
                        topic: r.topic.clone(),
                        partition: r.partition,
                        source_offset: r.source_offset,
                        target_topic: r.target_topic.clone(),
                        target_offset: r.target_offset,
                        outcome: r.outcome.label().to_string(),
                    })
                    .collect(),
            );
            self.store.save(&self.state.clone())?;
        }
        Ok(Check::Pass(format!(
            "exact offsets written for {} group(s)",
            groups.len()
        )))
    }

    fn verify(&mut self) -> Result<Check> {
        if let Some(v) = self.state.verify.as_ref().filter(|v| !v.ok) {
            return Ok(Check::Wait(format!(
                "verification found differences ({}); fix or abort: strait migrate abort --config FILE",
                v.differences.join("; ")
            )));
        }
        if self
            .last_verify
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            return Ok(Check::Wait(self.state.waiting_for.clone()));
        }
        self.last_verify = Some(Instant::now());
        let mut spec = verify_spec(&self.config)?;
        // The application's topics only: heartbeats never stop, so at the moment of a
        // check the map rarely covers their source end, and the stage waited on them
        // (an intermittent hold at `verify` in tests/observability.rs).
        let topics: Vec<String> = self
            .probe
            .topics()?
            .into_iter()
            .map(|(t, _)| regex::escape(&t))
            .collect();
        spec.topics = Some(
            regex::Regex::new(&format!("^(?:{})$", topics.join("|")))
                .context("the migration's topic list")?,
        );
        let report = verify_flow(&spec, &Silent)?;
        let summary = VerifySummary {
            ok: report.is_ok(),
            complete: report.is_complete(),
            partitions: report.partitions.len(),
            records: report.records(),
            differences: report
                .mismatches()
                .map(|(p, m)| {
                    format!(
                        "{}/{}: source offset {}, target offset {}: {}",
                        p.topic,
                        p.partition,
                        m.source_offset,
                        m.target_offset.map_or("-".into(), |t| t.to_string()),
                        m.kind.describe()
                    )
                })
                .collect(),
            at_ms: now_ms(),
        };
        metrics::gauge!(telemetry::MIGRATION_VERIFY_OK, "flow" => self.state.flow.clone())
            .set(if summary.ok { 1.0 } else { 0.0 });
        let check = if summary.complete {
            Check::Pass(format!(
                "verified {} records in {} partitions",
                summary.records, summary.partitions
            ))
        } else if summary.ok {
            Check::Wait("verifying: the offset map does not cover the source end yet".into())
        } else {
            warn!(differences = ?summary.differences, "verification found differences");
            Check::Wait(format!(
                "verification found differences ({})",
                summary.differences.join("; ")
            ))
        };
        if summary.ok {
            if summary.complete {
                self.state.verify = Some(summary);
            }
        } else {
            self.state.verify = Some(summary);
            self.store.save(&self.state.clone())?;
        }
        Ok(check)
    }
}

fn verify_spec(config: &Config) -> Result<VerifySpec> {
    let flow = &migration(config)?.0.flow;
    crate::verify::specs(config, Some(flow), None)?
        .pop()
        .context("verify spec")
}

/// A new migration with identity naming must not write into target topics that already
/// hold someone else's records: consumers moved there would read them too.
fn check_no_foreign_data(config: &Config, probe: &Probe) -> Result<()> {
    let spec = &probe.spec;
    if spec.naming != strait_replicator::NamingPolicy::Identity {
        return Ok(());
    }
    for (topic, partitions) in probe.topics()? {
        for partition in 0..partitions {
            let (low, high) = match probe.target.fetch_watermarks(&topic, partition, TIMEOUT) {
                Ok(w) => w,
                Err(_) => continue, // not on the target yet
            };
            let replicated = probe
                .index
                .partition(&topic, partition)
                .and_then(|m| m.coverage())
                .is_some();
            if high > low && !replicated {
                bail!(
                    "migration.flow '{}': target topic {topic} (partition {partition}) on '{}' \
                     already holds {} records that Strait did not copy; consumers moved there \
                     would read them too. Empty or delete the topic on the target first",
                    migration(config)?.0.flow,
                    spec.target.name,
                    high - low
                );
            }
        }
    }
    Ok(())
}

/// Unknown groups and topics are not errors (they may appear later) but are worth a line.
fn warn_unknown(config: &Config, probe: &Probe) {
    match probe.topics() {
        Ok(t) if t.is_empty() => warn!("migration: no source topic matches the flow's topics yet"),
        _ => {}
    }
    if let Ok(m) = migration(config) {
        if let Ok(Some(known)) = probe.source_groups.list_groups() {
            for g in &m.0.groups {
                if !known.contains(g) {
                    warn!(group = %g, "migration: group not found on the source (never committed?)");
                }
            }
        }
    }
}

/// `strait migrate status`.
#[derive(Serialize)]
struct StatusReport {
    flow: String,
    attempt: u32,
    stage: Stage,
    gate: Option<Approval>,
    stage_entered_at_ms: i64,
    waiting_for: String,
    history: Vec<StageEntry>,
    topics: Vec<TopicLag>,
    groups: Vec<GroupState>,
    translated: BTreeMap<String, Vec<TranslatedPartition>>,
    verify: Option<VerifySummary>,
}

#[derive(Serialize)]
struct TopicLag {
    topic: String,
    lag_records: i64,
    lag_seconds: f64,
}

#[derive(Serialize)]
struct GroupState {
    group: String,
    /// `None`: the cluster cannot describe groups.
    source_members: Option<usize>,
    target_members: Option<usize>,
}

pub fn status(config: &Config, output: OutputFormat) -> Result<()> {
    let store = Store::open(config, false)?;
    let m = migration(config)?.0;
    let Some(state) = store.state.clone() else {
        bail!(
            "no migration of flow '{}' has started: run `strait migrate run --config FILE`",
            m.flow
        );
    };
    let mut probe = Probe::new(config)?;
    let mut topics: BTreeMap<String, TopicLag> = BTreeMap::new();
    for lag in probe.lags()? {
        let seconds = probe.lag_seconds(&lag);
        let t = topics.entry(lag.topic.clone()).or_insert(TopicLag {
            topic: lag.topic.clone(),
            lag_records: 0,
            lag_seconds: 0.0,
        });
        t.lag_records += lag.lag_records;
        t.lag_seconds = t.lag_seconds.max(seconds);
    }
    let mut groups = Vec::new();
    for g in &m.groups {
        groups.push(GroupState {
            group: g.clone(),
            source_members: probe.members(false, g)?,
            target_members: probe.members(true, g)?,
        });
    }
    let report = StatusReport {
        flow: state.flow.clone(),
        attempt: state.attempt,
        stage: state.stage,
        gate: state.stage.gate(m).map(|g| g.approval),
        stage_entered_at_ms: state.stage_entered_at_ms,
        waiting_for: state.waiting_for.clone(),
        history: state.history.clone(),
        topics: topics.into_values().collect(),
        groups,
        translated: state.translated.clone(),
        verify: state.verify.clone(),
    };
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print_status(&report, &probe.spec),
    }
    Ok(())
}

fn print_status(r: &StatusReport, spec: &FlowSpec) {
    let since = Duration::from_secs(((now_ms() - r.stage_entered_at_ms).max(0) / 1000) as u64);
    println!(
        "migration of flow {} ({} → {}), attempt {}",
        r.flow, spec.source.name, spec.target.name, r.attempt
    );
    println!(
        "stage: {}{} for {}",
        r.stage.name(),
        match r.gate {
            Some(Approval::Manual) => " (manual gate)",
            Some(Approval::Auto) => " (auto gate)",
            None => "",
        },
        humantime::format_duration(since)
    );
    if !r.waiting_for.is_empty() {
        println!("waiting for: {}", r.waiting_for);
    }
    println!("stages:");
    for e in &r.history {
        println!(
            "  {:<18} {}",
            e.stage.name(),
            e.passed.as_deref().unwrap_or("(current)")
        );
    }
    println!("topics:");
    for t in &r.topics {
        println!(
            "  {:<30} lag {} records, {:.1} s",
            t.topic, t.lag_records, t.lag_seconds
        );
    }
    if !r.groups.is_empty() {
        println!("groups:");
        for g in &r.groups {
            println!(
                "  {:<30} {}: {}, {}: {}{}",
                g.group,
                spec.source.name,
                members_text(g.source_members),
                spec.target.name,
                members_text(g.target_members),
                match r.translated.get(&g.group) {
                    Some(p) if p.is_empty() => ", no commits on the migrated topics to translate",
                    Some(_) => ", offsets written to the target",
                    None => "",
                }
            );
        }
    }
    match &r.verify {
        None => println!("verify: not run yet"),
        Some(v) if v.ok && v.complete => println!(
            "verify: passed, {} records in {} partitions identical",
            v.records, v.partitions
        ),
        Some(v) => println!("verify: FAILED: {}", v.differences.join("; ")),
    }
}

pub fn approve(config: &Config, stage: Stage) -> Result<()> {
    let store = Store::open(config, true)?;
    let m = migration(config)?.0;
    let state = store
        .state
        .as_ref()
        .context("no migration has started: run `strait migrate run --config FILE`")?;
    if state.stage != stage {
        bail!(
            "cannot approve stage {}: the migration is at stage {}",
            stage.name(),
            state.stage.name()
        );
    }
    match stage.gate(m).map(|g| g.approval) {
        Some(Approval::Manual) => {}
        // The gate's check needs a request the cluster lacks; the operator attests it.
        Some(Approval::Auto) if state.waiting_for.contains(CANNOT_DESCRIBE) => {}
        Some(Approval::Auto) => bail!(
            "stage {} has an auto gate and advances on its own when: {}",
            stage.name(),
            state.waiting_for
        ),
        None => bail!("stage {} has no gate", stage.name()),
    }
    store.write(
        &format!("approve/{}/{}", state.attempt, stage.name()),
        now_ms().to_string().as_bytes(),
    )?;
    println!(
        "approved stage {} of migration attempt {}{}",
        stage.name(),
        state.attempt,
        if stage.approval_suffices() {
            ""
        } else {
            "; it advances once its condition holds too"
        }
    );
    Ok(())
}

pub fn abort(config: &Config) -> Result<()> {
    let store = Store::open(config, true)?;
    let state = store
        .state
        .as_ref()
        .context("no migration has started: nothing to abort")?;
    if !state.stage.abortable() {
        bail!(
            "cannot abort at stage {}: consumers are moving to the target (or have moved)",
            state.stage.name()
        );
    }
    store.write(
        &format!("abort/{}", state.attempt),
        now_ms().to_string().as_bytes(),
    )?;
    println!(
        "abort requested for migration attempt {} (stage {}); the daemon returns to plain \
         mirroring, and the next `strait migrate run` starts over",
        state.attempt,
        state.stage.name()
    );
    Ok(())
}

fn members_text(members: Option<usize>) -> String {
    members.map_or_else(
        || "members unknown (cannot describe groups)".into(),
        |n| format!("{n} members"),
    )
}
