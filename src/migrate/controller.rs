//! The daemon side: walks the stages, checking each gate, until done or aborted.

use super::*;

/// The daemon side: walks the stages until done or aborted.
pub struct Controller {
    pub(super) config: Config,
    pub(super) store: Store,
    pub(super) probe: Probe,
    pub(super) state: MigrationState,
    /// Source end offsets last seen, and when they last changed (move_producers).
    pub(super) ends: BTreeMap<(String, i32), i64>,
    pub(super) ends_changed: Instant,
    pub(super) warned_overdue: bool,
    pub(super) last_verify: Option<Instant>,
    /// The state as of the last step, for `/status`.
    pub(super) shown: Arc<Mutex<Option<MigrationState>>>,
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

    pub(super) fn step(&mut self) -> Result<Stage> {
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
        let decided = approval_decides(stage, gate.approval, approved, &self.instruction(stage));
        let check = match decided {
            Some(check) => check,
            None => self.condition(stage, &gate, approved)?,
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
                match overdue(stage, &gate, waited) {
                    Overdue::No => {}
                    Overdue::Abort(timeout) => {
                        return self.abort(&format!(
                            "stage {} timed out after {}",
                            stage.name(),
                            humantime::format_duration(timeout)
                        ));
                    }
                    Overdue::Warn(timeout) => {
                        if !self.warned_overdue {
                            warn!(stage = stage.name(), waiting_for = %why, "migration stage overdue");
                            self.warned_overdue = true;
                        }
                        why.push_str(&format!(
                            " (overdue: timeout {})",
                            humantime::format_duration(timeout)
                        ));
                    }
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
    pub(super) fn attested(&self, stage: Stage, on_target: bool, approved: bool) -> Check {
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

    pub(super) fn abort(&mut self, why: &str) -> Result<Stage> {
        warn!(flow = %self.state.flow, stage = self.state.stage.name(), why, "migration aborted");
        self.state.enter(Stage::Aborted, why.to_string());
        self.state.waiting_for = format!("{why}; mirroring goes on");
        self.store.save(&self.state.clone())?;
        Ok(Stage::Aborted)
    }

    pub(super) fn instruction(&self, stage: Stage) -> String {
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

    pub(super) fn condition(&mut self, stage: Stage, gate: &Gate, approved: bool) -> Result<Check> {
        let m = migration(&self.config)?.0.groups.clone();
        let source = self.probe.spec.source.name.clone();
        let target = self.probe.spec.target.name.clone();
        Ok(match stage {
            Stage::Mirror | Stage::Drain => lag_check(&self.probe.lags()?),
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
                producers_idle(&moved, idle, idle_for, &source, &self.instruction(stage))
            }
            Stage::StopConsumers => {
                let mut members = Vec::new();
                for group in &m {
                    members.push((group.clone(), self.probe.members(false, group)?));
                }
                match groups_stopped(&members) {
                    Membership::Unknown => self.attested(stage, false, approved),
                    Membership::Holds => {
                        Check::Pass(format!("every migrated group is empty on '{source}'"))
                    }
                    Membership::Not(active) => Check::Wait(format!(
                        "{}: still active there: {}",
                        self.instruction(stage),
                        active.join(", ")
                    )),
                }
            }
            Stage::TranslateOffsets => self.translate_offsets(&m)?,
            Stage::Verify => self.verify()?,
            Stage::StartConsumers => {
                let mut members = Vec::new();
                for group in &m {
                    members.push((group.clone(), self.probe.members(true, group)?));
                }
                match groups_started(&members) {
                    Membership::Unknown => self.attested(stage, true, approved),
                    Membership::Holds => {
                        Check::Pass(format!("every migrated group has members on '{target}'"))
                    }
                    Membership::Not(waiting) => Check::Wait(format!(
                        "start consumers of {} on '{target}' (offsets are in place)",
                        waiting.join(", ")
                    )),
                }
            }
            Stage::Done | Stage::Aborted => Check::Pass(String::new()),
        })
    }

    /// Writes each group's exact offsets to the target once; a group already written
    /// (also by a daemon that crashed after writing) is not written again.
    pub(super) fn translate_offsets(&mut self, groups: &[String]) -> Result<Check> {
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
            // With the probe's client, open since the migration started: a client made
            // for this one write and dropped at once was torn down while its own group
            // coordinator connection was still logging in, and librdkafka logged that as
            // a SASL authentication error (seen in CI on the SASL_SSL test bed).
            strait_offset_sync::groups::apply(
                &self.probe.target_groups,
                group,
                &mut results,
                false,
                false,
            )
            .with_context(|| {
                format!(
                    "writing offsets of group '{group}' on '{}'",
                    self.probe.spec.target.name
                )
            })?;
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

    pub(super) fn verify(&mut self) -> Result<Check> {
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
