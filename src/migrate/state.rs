//! The migration's state and where it lives: a compacted topic on the target, with the
//! daemon's `state` record and the operators' `approve/…` and `abort/…` records.

use super::*;

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
    pub(super) fn new(flow: &str, attempt: u32) -> Self {
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

    pub(super) fn enter(&mut self, stage: Stage, passed: String) {
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
pub(super) struct Store {
    pub(super) reader: TopicReader,
    pub(super) writer: Option<TopicWriter>,
    pub(super) state: Option<MigrationState>,
    pub(super) approvals: BTreeSet<(u32, Stage)>,
    pub(super) aborts: BTreeSet<u32>,
}

impl Store {
    pub(super) fn open(config: &Config, writable: bool) -> Result<Self> {
        let (m, spec) = migration(config)?;
        let topic = config.migration_state_topic().context("migration")?;
        let target = client_config(&spec.target);
        let mut store = Self {
            reader: TopicReader::new(&target, &topic)?,
            writer: None,
            state: None,
            approvals: BTreeSet::new(),
            aborts: BTreeSet::new(),
        };
        // Read first: a read names a refused login (a wrong password) within seconds, where
        // the admin client that creates the topic fails with only a transport error. A
        // topic that does not exist yet reads as empty.
        store.refresh().with_context(|| {
            format!("reading migration state of flow '{}' from {topic}", m.flow)
        })?;
        if writable {
            ensure_compacted_topic(&target, &topic, spec.replication_factor)
                .with_context(|| format!("creating {topic} on '{}'", spec.target.name))?;
            store.writer = Some(TopicWriter::new(&target, &topic, 0)?);
        }
        Ok(store)
    }

    pub(super) fn refresh(&mut self) -> Result<()> {
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

    pub(super) fn write(&self, key: &str, value: &[u8]) -> Result<()> {
        let writer = self
            .writer
            .as_ref()
            .context("state store opened read-only")?;
        writer.send(key.as_bytes(), value)?;
        writer.flush(TIMEOUT)?;
        Ok(())
    }

    pub(super) fn save(&mut self, state: &MigrationState) -> Result<()> {
        self.write("state", &serde_json::to_vec(state)?)?;
        self.state = Some(state.clone());
        Ok(())
    }
}
