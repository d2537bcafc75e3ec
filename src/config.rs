//! The configuration file: its schema, loading (TOML or YAML, plus `STRAIT__…` environment
//! overrides) and validation. Everything here runs before any connection is made.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use strait_offset_sync::{CheckpointSpec, GroupSelector};
use strait_replicator::{
    client_config, is_secret_key, ClusterSpec, Fence, FlowSpec, HeartbeatSpec, NamingPolicy,
    OnDataLoss, StartFrom, TopicSelector, Tuning,
};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub http: HttpConfig,
    pub clusters: BTreeMap<String, ClusterConfig>,
    pub flows: BTreeMap<String, FlowConfig>,
    #[serde(default)]
    pub tuning: TuningConfig,
    /// A staged migration of one flow (`strait migrate run`).
    pub migration: Option<MigrationConfig>,
}

/// `[migration]`: which flow and groups to move, and the gate of each stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationConfig {
    pub flow: String,
    /// Consumer groups to move (exact names).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Compacted topic on the target holding the migration's state; default
    /// `__strait.migration.<flow>`.
    pub state_topic: Option<String>,
    #[serde(default)]
    pub gates: Gates,
}

/// The gate of each stage: what must hold before the migration leaves it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gates {
    pub mirror: Gate,
    pub move_producers: Gate,
    pub drain: Gate,
    pub stop_consumers: Gate,
    pub translate_offsets: Gate,
    pub verify: Gate,
    pub start_consumers: Gate,
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            // Starting to move producers is the operator's decision.
            mirror: Gate::manual(),
            move_producers: Gate {
                producers_idle_for: Some(Duration::from_secs(10)),
                ..Gate::auto()
            },
            drain: Gate::auto(),
            stop_consumers: Gate::auto(),
            translate_offsets: Gate::auto(),
            verify: Gate::auto(),
            start_consumers: Gate::auto(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    pub approval: Approval,
    /// `move_producers` only: the source end offsets of every migrated topic must not
    /// have changed for this long.
    #[serde(default, with = "humantime_serde")]
    pub producers_idle_for: Option<Duration>,
    /// How long the stage may take before `on_timeout` applies.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

impl Gate {
    fn manual() -> Self {
        Self {
            approval: Approval::Manual,
            producers_idle_for: None,
            timeout: None,
            on_timeout: OnTimeout::Wait,
        }
    }
    fn auto() -> Self {
        Self {
            approval: Approval::Auto,
            ..Self::manual()
        }
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::auto()
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    /// Wait for `strait migrate approve`.
    Manual,
    /// Advance when the stage's condition holds.
    Auto,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// Keep waiting, with a warning.
    #[default]
    Wait,
    /// Abort the migration (back to plain mirroring).
    Abort,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address for `/metrics`, `/healthz`, `/readyz` and `/status`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Publish per-partition lag gauges. Turn off for thousands of partitions: the
    /// per-topic gauges and `/status` still cover every partition.
    #[serde(default = "yes")]
    pub per_partition_metrics: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            per_partition_metrics: true,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9644))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub bootstrap_servers: String,
    /// Any librdkafka client property, e.g. `"security.protocol" = "SASL_SSL"`.
    /// Environment overrides cannot contain dots, so `_` in a key is read as `.`:
    /// `STRAIT__CLUSTERS__PRIMARY__PROPERTIES__SASL_PASSWORD` sets `sasl.password`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let props: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret_key(k) {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("ClusterConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &props)
            .finish()
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    Identity,
    Prefix,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    pub source: String,
    pub target: String,
    /// Regexes; a topic is replicated if one matches its whole name.
    pub topics: Vec<String>,
    #[serde(default)]
    pub topics_exclude: Vec<String>,
    pub naming: Naming,
    /// Separator for `naming = "prefix"`; default ".".
    pub prefix_separator: Option<String>,
    #[serde(default)]
    pub start_from: StartFrom,
    /// Source records deleted (retention, DeleteRecords) before they were copied:
    /// "stop" the flow (default) or "continue" from the log start; reported either way.
    #[serde(default)]
    pub on_data_loss: OnDataLoss,
    /// What keeps an instance that lost a partition from writing to it after the next
    /// owner resumed: "none" (default) or "transactions" (docs/guarantees.md).
    #[serde(default)]
    pub fence: Fence,
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Source consumer group; default `strait-<flow>`.
    pub group_id: Option<String>,
    /// For created target topics; default: the target cluster's default.
    pub replication_factor: Option<i32>,
    #[serde(default = "yes")]
    pub provenance_header: bool,
    /// Records per partition between two provenance headers (an *anchor*); copies in
    /// between carry none. 1 stamps every record.
    #[serde(default = "default_provenance_interval")]
    pub provenance_interval: u32,
    #[serde(default)]
    pub offset_sync: OffsetSyncConfig,
    /// Write a heartbeat record to the source every `heartbeat_interval`, and replicate
    /// it. Default: on for `prefix` naming (DR), off for `identity` (migrations).
    pub heartbeats: Option<bool>,
    /// Topic on the source for heartbeats; default `strait.heartbeats.<flow>`.
    pub heartbeat_topic: Option<String>,
    #[serde(default = "default_heartbeat_interval", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
}

fn default_provenance_interval() -> u32 {
    1000
}

fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(1)
}

/// Exact offset translation for a flow: the persisted offset map, checkpoints and
/// (optionally) writing translated offsets into the target's consumer groups.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OffsetSyncConfig {
    pub enabled: bool,
    /// Compacted topic on the target holding the offset map; default
    /// `__strait.offsets.<flow>`.
    pub map_topic: Option<String>,
    /// Compacted topic on the target holding checkpoints; default
    /// `__strait.checkpoints.<flow>`.
    pub checkpoint_topic: Option<String>,
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Consumer groups to translate (regexes matching whole names).
    pub groups: Vec<String>,
    pub groups_exclude: Vec<String>,
    /// Write translated offsets into the same-named groups on the target. Default: on
    /// for `identity` naming (migrations), off for `prefix` (DR, where it is usually done
    /// at failover with `strait offsets translate --apply`).
    pub sync_group_offsets: Option<bool>,
}

impl Default for OffsetSyncConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            map_topic: None,
            checkpoint_topic: None,
            checkpoint_interval: Duration::from_secs(5),
            groups: vec![".*".into()],
            groups_exclude: Vec::new(),
            sync_group_offsets: None,
        }
    }
}

impl FlowConfig {
    /// The heartbeat topic, if heartbeats are on.
    pub fn heartbeat_topic(&self, flow: &str) -> Option<String> {
        let on = self
            .heartbeats
            .unwrap_or(matches!(self.naming, Naming::Prefix));
        on.then(|| {
            self.heartbeat_topic
                .clone()
                .unwrap_or_else(|| format!("strait.heartbeats.{flow}"))
        })
    }

    pub fn map_topic(&self, flow: &str) -> String {
        self.offset_sync
            .map_topic
            .clone()
            .unwrap_or_else(|| format!("__strait.offsets.{flow}"))
    }

    pub fn checkpoint_topic(&self, flow: &str) -> String {
        self.offset_sync
            .checkpoint_topic
            .clone()
            .unwrap_or_else(|| format!("__strait.checkpoints.{flow}"))
    }

    pub fn group_id(&self, flow: &str) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("strait-{flow}"))
    }
}

fn default_refresh() -> Duration {
    Duration::from_secs(30)
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TuningConfig {
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    pub batch_size: u32,
    pub compression: String,
    pub producer_queue_kbytes: u32,
    pub consumer_queue_kbytes: u32,
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for TuningConfig {
    fn default() -> Self {
        let t = Tuning::default();
        Self {
            commit_interval: t.commit_interval,
            linger: t.linger,
            batch_size: t.batch_size,
            compression: t.compression,
            producer_queue_kbytes: t.producer_queue_kbytes,
            consumer_queue_kbytes: t.consumer_queue_kbytes,
            drain_timeout: t.drain_timeout,
        }
    }
}

impl Config {
    /// Reads `path` (format from its extension) with `STRAIT__…` overrides, then validates.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            bail!("config file {} does not exist", path.display());
        }
        let raw = config::Config::builder()
            .add_source(config::File::from(path))
            .add_source(
                config::Environment::with_prefix("STRAIT")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .with_context(|| format!("reading {}", path.display()))?;
        let mut config: Config = raw
            .try_deserialize()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        config.normalize_property_keys();
        config.validate()?;
        Ok(config)
    }

    /// Environment overrides arrive with `_` where librdkafka keys have `.`; no librdkafka
    /// property contains `_`, so the mapping is lossless.
    fn normalize_property_keys(&mut self) {
        for cluster in self.clusters.values_mut() {
            cluster.properties = std::mem::take(&mut cluster.properties)
                .into_iter()
                .map(|(k, v)| (k.replace('_', "."), v))
                .collect();
        }
    }

    /// Cross-field rules. Each message names the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.clusters.is_empty() {
            bail!("clusters: at least one cluster is required");
        }
        if self.flows.is_empty() {
            bail!("flows: at least one flow is required");
        }
        for (name, cluster) in &self.clusters {
            check_name(&format!("clusters.{name}"), name)?;
            if cluster.bootstrap_servers.trim().is_empty() {
                bail!("clusters.{name}.bootstrap_servers: must not be empty");
            }
            if cluster.properties.contains_key("bootstrap.servers") {
                bail!("clusters.{name}.properties.\"bootstrap.servers\": set bootstrap_servers instead");
            }
        }
        let t = &self.tuning;
        if t.commit_interval.is_zero() {
            bail!("tuning.commit_interval: must be greater than zero");
        }
        if t.producer_queue_kbytes < 1024 {
            bail!("tuning.producer_queue_kbytes: at least 1024 (1 MiB) is needed to batch");
        }
        if t.consumer_queue_kbytes < 1024 {
            bail!("tuning.consumer_queue_kbytes: at least 1024 (1 MiB) is needed to fetch");
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&t.compression.as_str()) {
            bail!(
                "tuning.compression: '{}' is not one of none, gzip, snappy, lz4, zstd",
                t.compression
            );
        }

        let mut pairs: HashMap<(&str, &str), &str> = HashMap::new();
        let mut identity_targets: HashMap<(&str, Vec<&str>), &str> = HashMap::new();
        let mut internal: HashMap<(&str, String), &str> = HashMap::new();
        for (name, flow) in &self.flows {
            check_name(&format!("flows.{name}"), name)?;
            let field = |f: &str| format!("flows.{name}.{f}");
            self.clusters.get(&flow.source).with_context(|| {
                format!(
                    "{}: unknown cluster '{}' (known: {})",
                    field("source"),
                    flow.source,
                    self.cluster_names()
                )
            })?;
            self.clusters.get(&flow.target).with_context(|| {
                format!(
                    "{}: unknown cluster '{}' (known: {})",
                    field("target"),
                    flow.target,
                    self.cluster_names()
                )
            })?;
            if flow.topics.is_empty() {
                bail!(
                    "{}: at least one regex is required (use \".*\" for all topics)",
                    field("topics")
                );
            }
            check_regexes(&field("topics"), &flow.topics)?;
            check_regexes(&field("topics_exclude"), &flow.topics_exclude)?;
            if flow.naming == Naming::Identity && self.same_cluster(&flow.source, &flow.target) {
                bail!(
                    "{}: identity naming from cluster '{}' to '{}', which is the same cluster, \
                     would copy every record back into itself forever; use naming = \"prefix\"",
                    field("naming"),
                    flow.source,
                    flow.target
                );
            }
            match (&flow.prefix_separator, flow.naming) {
                (Some(_), Naming::Identity) => {
                    bail!(
                        "{}: only valid with naming = \"prefix\"",
                        field("prefix_separator")
                    )
                }
                (Some(sep), Naming::Prefix)
                    if sep.is_empty() || !sep.chars().all(is_topic_char) =>
                {
                    bail!(
                        "{}: '{sep}' must be non-empty and use only [A-Za-z0-9._-]",
                        field("prefix_separator")
                    )
                }
                _ => {}
            }
            if flow.refresh_interval < Duration::from_secs(1) {
                bail!("{}: must be at least 1s", field("refresh_interval"));
            }
            if let Some(rf) = flow.replication_factor {
                if rf < 1 {
                    bail!("{}: must be at least 1", field("replication_factor"));
                }
            }
            if let Some(topic) = flow.heartbeat_topic(name) {
                if topic.is_empty()
                    || topic.len() > 249
                    || !topic.chars().all(is_topic_char)
                    || topic.starts_with("__")
                {
                    bail!(
                        "{}: '{topic}' is not a valid heartbeat topic name ([A-Za-z0-9._-], at \
                         most 249, not starting with __, which is never replicated)",
                        field("heartbeat_topic")
                    );
                }
                if flow.heartbeat_interval < Duration::from_millis(100) {
                    bail!("{}: must be at least 100ms", field("heartbeat_interval"));
                }
            }
            if flow.provenance_interval == 0 {
                bail!(
                    "{}: must be at least 1 (1 puts the header on every record)",
                    field("provenance_interval")
                );
            }
            let o = &flow.offset_sync;
            if o.enabled {
                if !flow.provenance_header {
                    bail!(
                        "{}: offset sync needs provenance_header = true (a crash can lose the \
                         newest offset map entries, and they are rebuilt from the headers); \
                         set offset_sync.enabled = false to run without both",
                        field("offset_sync.enabled")
                    );
                }
                for (key, topic) in [
                    ("offset_sync.map_topic", flow.map_topic(name)),
                    ("offset_sync.checkpoint_topic", flow.checkpoint_topic(name)),
                ] {
                    if topic.is_empty() || topic.len() > 249 || !topic.chars().all(is_topic_char) {
                        bail!(
                            "{}: '{topic}' is not a valid topic name ([A-Za-z0-9._-], at most 249)",
                            field(key)
                        );
                    }
                    if let Some(other) =
                        internal.insert((flow.target.as_str(), topic.clone()), name)
                    {
                        bail!(
                            "{}: topic '{topic}' on cluster '{}' is already used by flow '{other}'",
                            field(key),
                            flow.target
                        );
                    }
                }
                if o.checkpoint_interval < Duration::from_secs(1) {
                    bail!(
                        "{}: must be at least 1s",
                        field("offset_sync.checkpoint_interval")
                    );
                }
                if o.groups.is_empty() {
                    bail!(
                        "{}: at least one regex is required (use \".*\" for all groups)",
                        field("offset_sync.groups")
                    );
                }
                check_regexes(&field("offset_sync.groups"), &o.groups)?;
                check_regexes(&field("offset_sync.groups_exclude"), &o.groups_exclude)?;
            }
            if let Some(other) = pairs.insert((&flow.source, &flow.target), name) {
                bail!(
                    "flows.{name}: flows '{other}' and '{name}' both replicate '{}' → '{}' and could \
                     write the same target topics; merge them into one flow",
                    flow.source,
                    flow.target
                );
            }
            if flow.naming == Naming::Identity {
                let mut topics: Vec<&str> = flow.topics.iter().map(String::as_str).collect();
                topics.sort_unstable();
                if let Some(other) = identity_targets.insert((&flow.target, topics), name) {
                    bail!(
                        "flows.{name}: flows '{other}' and '{name}' both write the same topics \
                         (same regexes, identity naming) to cluster '{}'",
                        flow.target
                    );
                }
            }
        }
        self.refuse_identity_loops()?;
        if let Some(m) = &self.migration {
            self.validate_migration(m)?;
        }
        Ok(())
    }

    /// Whether two cluster names are one cluster: the same name, or the same bootstrap
    /// servers under two names.
    fn same_cluster(&self, a: &str, b: &str) -> bool {
        a == b
            || match (self.clusters.get(a), self.clusters.get(b)) {
                (Some(a), Some(b)) => {
                    normalize_servers(&a.bootstrap_servers)
                        == normalize_servers(&b.bootstrap_servers)
                }
                _ => false,
            }
    }

    /// Two flows with identity naming in opposite directions between the same two
    /// clusters copy each other's copies back for ever (Strait replicates one way per
    /// pair of clusters), unless they select topics no name could match in both. That is
    /// proven only for lists of plain topic names; any other regex is refused.
    fn refuse_identity_loops(&self) -> Result<()> {
        let identity: Vec<(&String, &FlowConfig)> = self
            .flows
            .iter()
            .filter(|(_, f)| f.naming == Naming::Identity)
            .collect();
        for (i, (name, flow)) in identity.iter().enumerate() {
            for (other_name, other) in &identity[i + 1..] {
                let opposite = self.same_cluster(&flow.source, &other.target)
                    && self.same_cluster(&flow.target, &other.source);
                if opposite && may_select_the_same_topic(&flow.topics, &other.topics) {
                    bail!(
                        "flows.{other_name}: flows '{name}' ('{}' → '{}') and '{other_name}' \
                         ('{}' → '{}') both use identity naming in opposite directions, so each \
                         would copy the other's copies back, for ever. Two-way replication under \
                         the same topic names is not supported: use naming = \"prefix\" on one \
                         of them, or give both flows lists of plain topic names that share none",
                        flow.source,
                        flow.target,
                        other.source,
                        other.target
                    );
                }
            }
        }
        Ok(())
    }

    fn validate_migration(&self, m: &MigrationConfig) -> Result<()> {
        let flow = self.flows.get(&m.flow).with_context(|| {
            format!(
                "migration.flow: no flow '{}' (flows: {})",
                m.flow,
                self.flows.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        if !flow.offset_sync.enabled {
            bail!(
                "migration.flow: flow '{}' has offset_sync.enabled = false; the translate_offsets \
                 and verify stages need its offset map, so they could never pass",
                m.flow
            );
        }
        let own = flow.group_id(&m.flow);
        for (i, group) in m.groups.iter().enumerate() {
            if group.trim().is_empty() {
                bail!("migration.groups[{i}]: must not be empty");
            }
            if *group == own {
                bail!("migration.groups[{i}]: '{group}' is the flow's own replication group");
            }
            if m.groups[..i].contains(group) {
                bail!("migration.groups[{i}]: '{group}' is listed twice");
            }
        }
        let topic = self.migration_state_topic().unwrap_or_default();
        if topic.is_empty() || topic.len() > 249 || !topic.chars().all(is_topic_char) {
            bail!("migration.state_topic: '{topic}' is not a valid topic name ([A-Za-z0-9._-], at most 249)");
        }
        if self.internal_topics().contains(&topic) {
            bail!(
                "migration.state_topic: '{topic}' is already one of the flows' offset-sync topics"
            );
        }
        let g = &m.gates;
        for (stage, gate) in [
            ("mirror", &g.mirror),
            ("move_producers", &g.move_producers),
            ("drain", &g.drain),
            ("stop_consumers", &g.stop_consumers),
            ("translate_offsets", &g.translate_offsets),
            ("verify", &g.verify),
            ("start_consumers", &g.start_consumers),
        ] {
            let field = |f: &str| format!("migration.gates.{stage}.{f}");
            if stage != "move_producers" && gate.producers_idle_for.is_some() {
                bail!(
                    "{}: only applies to the move_producers gate",
                    field("producers_idle_for")
                );
            }
            if gate.timeout.is_some_and(|t| t.is_zero()) {
                bail!("{}: must be greater than zero", field("timeout"));
            }
            if stage == "start_consumers" && gate.on_timeout == OnTimeout::Abort {
                bail!(
                    "{}: a migration cannot be aborted once consumers are moving to the target",
                    field("on_timeout")
                );
            }
        }
        let mp = &g.move_producers;
        if mp.approval == Approval::Auto {
            let idle = mp.producers_idle_for.with_context(|| {
                "migration.gates.move_producers.producers_idle_for: required with approval = \"auto\""
            })?;
            if idle < Duration::from_secs(1) {
                bail!("migration.gates.move_producers.producers_idle_for: must be at least 1s");
            }
            if let (Some(timeout), OnTimeout::Abort) = (mp.timeout, mp.on_timeout) {
                if timeout <= idle {
                    bail!(
                        "migration.gates.move_producers.timeout: {} is not longer than \
                         producers_idle_for ({}), so the gate could never pass before the abort",
                        humantime::format_duration(timeout),
                        humantime::format_duration(idle)
                    );
                }
            }
        }
        Ok(())
    }

    /// The migration's state topic on the target, if there is a migration.
    pub fn migration_state_topic(&self) -> Option<String> {
        let m = self.migration.as_ref()?;
        Some(
            m.state_topic
                .clone()
                .unwrap_or_else(|| format!("__strait.migration.{}", m.flow)),
        )
    }

    /// Every compacted topic Strait keeps for itself, across flows.
    fn internal_topics(&self) -> Vec<String> {
        self.flows
            .iter()
            .filter(|(_, f)| f.offset_sync.enabled)
            .flat_map(|(name, f)| [f.map_topic(name), f.checkpoint_topic(name)])
            .collect()
    }

    /// The checkpointer of each flow with offset sync on.
    pub fn checkpoint_specs(&self) -> Result<Vec<CheckpointSpec>> {
        let own_groups: Vec<String> = self
            .flows
            .iter()
            .map(|(name, f)| regex::escape(&f.group_id(name)))
            .collect();
        self.flow_specs()?
            .into_iter()
            .filter_map(|spec| {
                let flow = &self.flows[&spec.name];
                flow.offset_sync.enabled.then_some((spec, flow))
            })
            .map(|(spec, flow)| {
                let o = &flow.offset_sync;
                let mut exclude = o.groups_exclude.clone();
                exclude.extend(own_groups.iter().cloned());
                let groups = GroupSelector::new(&o.groups, &exclude)
                    .with_context(|| format!("flows.{}.offset_sync.groups", spec.name))?;
                let naming = spec.naming.clone();
                let source_name = spec.source.name.clone();
                let selector = spec.selector.clone();
                Ok(CheckpointSpec {
                    flow: spec.name.clone(),
                    source: offset_sync_client_config(&spec.source, &spec.name),
                    target: offset_sync_client_config(&spec.target, &spec.name),
                    map_topic: flow.map_topic(&spec.name),
                    checkpoint_topic: flow.checkpoint_topic(&spec.name),
                    interval: o.checkpoint_interval,
                    groups,
                    sync_group_offsets: o
                        .sync_group_offsets
                        .unwrap_or(flow.naming == Naming::Identity),
                    replication_factor: spec.replication_factor,
                    rename: Arc::new(move |topic| naming.target_topic(&source_name, topic)),
                    topics: Arc::new(move |topic| selector.selects(topic)),
                })
            })
            .collect()
    }

    fn cluster_names(&self) -> String {
        self.clusters.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// Resolved, validated specs for the replicator, one per flow.
    pub fn flow_specs(&self) -> Result<Vec<FlowSpec>> {
        self.flows
            .iter()
            .map(|(name, flow)| {
                let source = self.cluster_spec(&flow.source);
                let target = self.cluster_spec(&flow.target);
                let naming = match flow.naming {
                    Naming::Identity => NamingPolicy::Identity,
                    Naming::Prefix => NamingPolicy::Prefix {
                        separator: flow.prefix_separator.clone().unwrap_or_else(|| ".".into()),
                    },
                };
                // A topic named `<target><sep>…` on the source is a copy a reverse flow made.
                let skip_prefix = match &naming {
                    NamingPolicy::Prefix { separator } => {
                        Some(format!("{}{separator}", flow.target))
                    }
                    NamingPolicy::Identity => None,
                };
                // Strait's own topics (of every flow) are never replicated.
                let mut exclude = flow.topics_exclude.clone();
                exclude.extend(self.internal_topics().iter().map(|t| regex::escape(t)));
                // The flow replicates its heartbeats whatever `topics` says.
                let heartbeat = flow.heartbeat_topic(name).map(|topic| HeartbeatSpec {
                    topic,
                    interval: flow.heartbeat_interval,
                });
                let mut include = flow.topics.clone();
                include.extend(heartbeat.iter().map(|h| regex::escape(&h.topic)));
                let selector = TopicSelector::new(&include, &exclude, skip_prefix)
                    .with_context(|| format!("flows.{name}.topics"))?;
                let t = &self.tuning;
                Ok(FlowSpec {
                    name: name.clone(),
                    source,
                    target,
                    selector,
                    naming,
                    start_from: flow.start_from,
                    on_data_loss: flow.on_data_loss,
                    fence: flow.fence,
                    refresh_interval: flow.refresh_interval,
                    group_id: flow.group_id(name),
                    replication_factor: flow.replication_factor,
                    provenance_header: flow.provenance_header,
                    provenance_interval: flow.provenance_interval,
                    offset_map_topic: flow.offset_sync.enabled.then(|| flow.map_topic(name)),
                    heartbeat,
                    partition_metrics: self.http.per_partition_metrics,
                    tuning: Tuning {
                        commit_interval: t.commit_interval,
                        linger: t.linger,
                        batch_size: t.batch_size,
                        compression: t.compression.clone(),
                        producer_queue_kbytes: t.producer_queue_kbytes,
                        consumer_queue_kbytes: t.consumer_queue_kbytes,
                        drain_timeout: t.drain_timeout,
                    },
                })
            })
            .collect()
    }

    fn cluster_spec(&self, name: &str) -> ClusterSpec {
        let cluster = &self.clusters[name];
        let mut properties = cluster.properties.clone();
        properties.insert(
            "bootstrap.servers".into(),
            cluster.bootstrap_servers.clone(),
        );
        ClusterSpec {
            name: name.to_string(),
            properties,
        }
    }
}

/// Every pattern must compile; the message names the field and index of the first that
/// does not.
fn check_regexes(field: &str, patterns: &[String]) -> Result<()> {
    for (i, p) in patterns.iter().enumerate() {
        if let Err(e) = regex::Regex::new(p) {
            bail!("{field}[{i}]: invalid regex '{p}': {e}");
        }
    }
    Ok(())
}

/// Cluster and flow names appear in topic names and provenance headers.
fn check_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() || !name.chars().all(is_topic_char) {
        bail!("{field}: name '{name}' must use only [A-Za-z0-9._-]");
    }
    Ok(())
}

/// Whether some topic name could be selected by a regex of `a` and one of `b`. Exact for
/// plain names (where `.` is the only regex character, matching any one character);
/// any other regex may match anything, as far as this can tell.
fn may_select_the_same_topic(a: &[String], b: &[String]) -> bool {
    let plain = |p: &String| p.chars().all(is_topic_char);
    if !a.iter().chain(b).all(plain) {
        return true;
    }
    a.iter().any(|x| {
        b.iter().any(|y| {
            x.len() == y.len()
                && x.bytes()
                    .zip(y.bytes())
                    .all(|(c, d)| c == d || c == b'.' || d == b'.')
        })
    })
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn normalize_servers(servers: &str) -> Vec<String> {
    let mut list: Vec<String> = servers
        .split(',')
        .map(|s| {
            s.trim()
                .to_ascii_lowercase()
                .replace("localhost", "127.0.0.1")
        })
        .filter(|s| !s.is_empty())
        .collect();
    list.sort();
    list
}

/// librdkafka settings for a flow's offset-sync clients of `cluster`.
///
/// Offset sync keeps one client per consumer group and cluster (librdkafka reads and
/// commits only its own `group.id`'s offsets), and such a client talks to its group's
/// coordinator and little else. So unlike the copying clients it connects to brokers only
/// as needed (librdkafka's sparse connections; the cluster's properties can still set
/// `enable.sparse.connections`): with every broker connected up front, 1,000 groups on a
/// 12-broker cluster would hold some 24,000 connections. Its `client.id` names the flow,
/// so that brokers' request logs and client quotas can tell these clients apart.
fn offset_sync_client_config(cluster: &ClusterSpec, flow: &str) -> rdkafka::ClientConfig {
    let mut config = client_config(cluster);
    if !cluster.properties.contains_key("enable.sparse.connections") {
        config.set("enable.sparse.connections", "true");
    }
    config.set("client.id", format!("strait-{flow}-offset-sync"));
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_lists_that_could_share_a_topic() {
        let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let overlap = |a: &[&str], b: &[&str]| may_select_the_same_topic(&list(a), &list(b));
        assert!(!overlap(&["orders"], &["payments"]));
        assert!(!overlap(&["orders", "audit"], &["payments", "ordersx"]));
        assert!(overlap(&["orders", "audit"], &["payments", "orders"]));
        assert!(
            overlap(&["orders.eu"], &["orders-eu"]),
            "'.' matches any character"
        );
        assert!(overlap(&["ab.c"], &["a.bc"]), "both match abbc");
        assert!(!overlap(&["orders.eu"], &["orders.us"]));
        assert!(overlap(&["orders"], &[".*"]), "a regex may match anything");
        assert!(
            overlap(&["orders.*"], &["payments"]),
            "a regex may match anything"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let cluster = ClusterConfig {
            bootstrap_servers: "b:9092".into(),
            properties: [("sasl.password".to_string(), "hunter2".to_string())].into(),
        };
        let shown = format!("{cluster:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn offset_sync_clients_are_named_and_connect_sparsely_unless_told_otherwise() {
        let cluster = |properties: &[(&str, &str)]| ClusterSpec {
            name: "primary".into(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let config = offset_sync_client_config(&cluster(&[("client.id", "mine")]), "dr");
        assert_eq!(config.get("client.id"), Some("strait-dr-offset-sync"));
        assert_eq!(config.get("enable.sparse.connections"), Some("true"));
        // The copying clients connect to every broker up front; these only as needed.
        assert_eq!(
            client_config(&cluster(&[])).get("enable.sparse.connections"),
            Some("false")
        );
        let told = cluster(&[("enable.sparse.connections", "false")]);
        assert_eq!(
            offset_sync_client_config(&told, "dr").get("enable.sparse.connections"),
            Some("false")
        );
    }
}
