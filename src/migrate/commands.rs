//! The operator's commands: `strait migrate status`, `approve` and `abort`.

use super::*;

/// `strait migrate status`.
#[derive(Serialize)]
pub(super) struct StatusReport {
    pub(super) flow: String,
    pub(super) attempt: u32,
    pub(super) stage: Stage,
    pub(super) gate: Option<Approval>,
    pub(super) stage_entered_at_ms: i64,
    pub(super) waiting_for: String,
    pub(super) history: Vec<StageEntry>,
    pub(super) topics: Vec<TopicLag>,
    pub(super) groups: Vec<GroupState>,
    pub(super) translated: BTreeMap<String, Vec<TranslatedPartition>>,
    pub(super) verify: Option<VerifySummary>,
}

#[derive(Serialize)]
pub(super) struct TopicLag {
    pub(super) topic: String,
    pub(super) lag_records: i64,
    pub(super) lag_seconds: f64,
}

#[derive(Serialize)]
pub(super) struct GroupState {
    pub(super) group: String,
    /// `None`: the cluster cannot describe groups.
    pub(super) source_members: Option<usize>,
    pub(super) target_members: Option<usize>,
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

pub(super) fn print_status(r: &StatusReport, spec: &FlowSpec) {
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

pub(super) fn members_text(members: Option<usize>) -> String {
    members.map_or_else(
        || "members unknown (cannot describe groups)".into(),
        |n| format!("{n} members"),
    )
}
