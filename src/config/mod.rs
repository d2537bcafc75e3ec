//! The configuration file's schema: every section and key, with its default. Loading is
//! `load.rs`, the cross-field rules `validate.rs`, and what the config becomes for the
//! crates that run it `specs.rs`. Everything here runs before any connection is made.

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
    OnDataLoss, OnSourceTopicRecreated, StartFrom, TopicSelector, Tuning,
};

mod load;
mod specs;
mod validate;

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
    /// A source topic deleted and created again: "stop" the flow (default) or
    /// "continue" with the new topic into the same target topic; reported either way.
    #[serde(default)]
    pub on_source_topic_recreated: OnSourceTopicRecreated,
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
    /// at failover with `strait offsets translate --apply`) and for two-way flows, whose
    /// groups cannot be translated yet (validation refuses `true` there).
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

#[cfg(test)]
mod tests {
    use super::specs::offset_sync_client_config;
    use super::validate::may_select_the_same_topic;
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
