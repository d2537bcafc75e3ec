//! What the gates look at on the clusters: replication lag, group membership, and target
//! topics that hold records Strait did not write.

use super::*;

/// Live facts about the migrated flow, read from both clusters.
pub(super) struct Probe {
    pub(super) spec: FlowSpec,
    pub(super) source: BaseConsumer,
    pub(super) target: BaseConsumer,
    /// Any group's members (and the source's group list): one client per cluster, kept
    /// for the whole migration (gates ask every few seconds, for every migrated group).
    pub(super) source_groups: GroupClient,
    pub(super) target_groups: GroupClient,
    pub(super) index: FlowIndex,
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
    pub(super) fn new(config: &Config) -> Result<Self> {
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
    pub(super) fn topics(&self) -> Result<Vec<(String, i32)>> {
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
    pub(super) fn lags(&mut self) -> Result<Vec<PartitionLag>> {
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
    pub(super) fn lag_seconds(&self, lag: &PartitionLag) -> f64 {
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
    pub(super) fn members(&self, on_target: bool, group: &str) -> Result<Option<usize>> {
        let groups = if on_target {
            &self.target_groups
        } else {
            &self.source_groups
        };
        Ok(groups.members(group)?)
    }
}

/// A new migration with identity naming must not write into target topics that already
/// hold someone else's records: consumers moved there would read them too.
pub(super) fn check_no_foreign_data(config: &Config, probe: &Probe) -> Result<()> {
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
pub(super) fn warn_unknown(config: &Config, probe: &Probe) {
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

pub(super) fn verify_spec(config: &Config) -> Result<VerifySpec> {
    let flow = &migration(config)?.0.flow;
    crate::verify::specs(config, Some(flow), None)?
        .pop()
        .context("verify spec")
}
