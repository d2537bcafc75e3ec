//! Strait's data plane: one *flow* copies the selected topics of a source cluster to a
//! target cluster, record by record, partition for partition.
//!
//! Data moves one way: source consumer → [`pipeline`] → target producer, and the target's
//! delivery reports feed the per-partition offset maps of `strait-offset-sync`.
//!
//! The public surface is small: describe a flow with [`FlowSpec`], then [`run_flow`] it
//! until its cancellation token fires, or ask [`plan`] what it would replicate.

mod copies;
mod error;
mod fence;
mod fetch;
mod flow;
mod heartbeat;
mod naming;
mod pipeline;
mod produce;
mod provenance;
mod resume;
mod source_ids;
mod status;
pub mod telemetry;
mod topics;

pub use copies::FoundCopies;
pub use error::ReplicatorError;
pub use fence::CommitMetadata;
pub use flow::{run_flow, TargetClaims, START_WAIT};
pub use heartbeat::HeartbeatSpec;
pub use naming::{NamingPolicy, TopicSelector};
pub use provenance::{copied_from, Provenance, PROVENANCE_HEADER};
pub use provenance::{copies_on_target, MapEnd};
pub use source_ids::TOPIC_ID_HEADER;
pub use status::{DataLoss, FlowStatus, PartitionStatus, TopicStatus};
pub use topics::{client_config, plan, TopicPlan};

use std::collections::BTreeMap;
use std::time::Duration;

/// Where to start on a source partition that has no progress yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
}

/// What a flow does when source records it has not copied are gone from the source
/// (deleted by retention or DeleteRecords while the flow was behind or stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnDataLoss {
    /// Stop the flow with an error naming the lost range, until the operator decides.
    #[default]
    Stop,
    /// Record the loss (log, metric, `/status`) and go on from the source's log start.
    Continue,
}

/// What a flow does when a source topic it copies was deleted and created again under
/// the same name (told by its topic ID, or without IDs by its records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnSourceTopicRecreated {
    /// Stop copying that topic, with an error naming it, until the operator decides; the
    /// flow's other topics go on.
    #[default]
    Stop,
    /// Copy the new topic from its start (`start_from`) into the same target topic, after
    /// the old topic's copies, with a new offset map epoch; reported either way.
    Continue,
}

/// What keeps an instance that lost a partition from writing to it after the next owner
/// resumed (see docs/guarantees.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fence {
    /// Idempotent copies, no fence: a hand-over whose drain timed out, or an instance
    /// frozen past `session.timeout.ms` with copies queued, can leave duplicates on the
    /// target, each reported (`strait_target_foreign_records_total`).
    #[default]
    None,
    /// Copies in transactions, each partition's owner named in its source commit, and
    /// every new owner fencing the previous one before it resumes: no duplicates for
    /// `read_committed` readers of the target.
    Transactions,
}

/// A named Kafka cluster and the librdkafka properties every client for it gets.
#[derive(Clone)]
pub struct ClusterSpec {
    pub name: String,
    /// `bootstrap.servers` plus any other librdkafka property (security, SASL, TLS ...).
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for ClusterSpec {
    /// Secrets never reach logs: values of secret-looking keys are redacted.
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
        f.debug_struct("ClusterSpec")
            .field("name", &self.name)
            .field("properties", &props)
            .finish()
    }
}

/// librdkafka properties whose values are credentials.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "token",
        "key.pem",
        "certificate.pem",
        "credential",
    ]
    .iter()
    .any(|needle| key.contains(needle))
}

/// Client settings that trade latency for throughput; defaults favour throughput.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// How often acknowledged progress is committed to the source cluster.
    pub commit_interval: Duration,
    /// Producer `linger.ms`.
    pub linger: Duration,
    /// Producer `batch.size` in bytes.
    pub batch_size: u32,
    /// Producer `compression.type` on the target.
    pub compression: String,
    /// Upper bound on records waiting in the producer (`queue.buffering.max.kbytes`).
    /// This is the backpressure point: when it is full, consuming pauses.
    pub producer_queue_kbytes: u32,
    /// Upper bound on pre-fetched records (`queued.max.messages.kbytes`).
    pub consumer_queue_kbytes: u32,
    /// How long shutdown and partition hand-over wait for in-flight deliveries.
    pub drain_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            commit_interval: Duration::from_secs(1),
            linger: Duration::from_millis(10),
            batch_size: 1_000_000,
            compression: "none".into(),
            producer_queue_kbytes: 64 * 1024,
            consumer_queue_kbytes: 32 * 1024,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Everything one flow needs, already validated.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    pub name: String,
    pub source: ClusterSpec,
    pub target: ClusterSpec,
    pub selector: TopicSelector,
    pub naming: NamingPolicy,
    pub start_from: StartFrom,
    pub on_data_loss: OnDataLoss,
    pub on_source_topic_recreated: OnSourceTopicRecreated,
    pub fence: Fence,
    pub refresh_interval: Duration,
    /// Consumer group on the source through which instances share partitions.
    pub group_id: String,
    /// Replication factor for created target topics; `None` uses the target's default.
    pub replication_factor: Option<i32>,
    /// Stamp copies with a [`PROVENANCE_HEADER`]. It is what makes restarts
    /// duplicate-free; without it a crash can re-copy up to one commit interval.
    pub provenance_header: bool,
    /// With the header on: a copy carries it if it is the first this producer sends to
    /// its partition, follows a gap in the source offsets, or is the `provenance_interval`th
    /// since the last one. The copies in between are identified by position and checked
    /// by content against the source (see the `provenance` module).
    pub provenance_interval: u32,
    /// One of two flows that replicate both ways between the same two clusters under the
    /// same topic names (configured together, each stamping every copy). A source record
    /// whose provenance header names this flow's target is the other flow's copy and is
    /// skipped; in any other flow such a record stops the flow
    /// ([`ReplicatorError::CopyLoop`]), since a copy without the header could not be told
    /// apart.
    pub two_way: bool,
    /// Persist the exact source→target offset map to this compacted topic on the target
    /// (offset sync). `None` turns it off. Requires the provenance header, from which a
    /// map that lost its newest entries in a crash is rebuilt.
    pub offset_map_topic: Option<String>,
    /// Write heartbeats to the source, which this flow then replicates like any topic.
    pub heartbeat: Option<HeartbeatSpec>,
    /// Publish per-partition lag gauges (off for clusters with thousands of partitions:
    /// per-topic gauges and `/status` still cover them).
    pub partition_metrics: bool,
    pub tuning: Tuning,
}

/// The offsets in a list, by (topic, partition); partitions with an error or without an
/// offset are left out.
pub(crate) fn offsets_of(
    tpl: &rdkafka::TopicPartitionList,
) -> std::collections::HashMap<(String, i32), i64> {
    tpl.elements()
        .iter()
        .filter(|e| e.error().is_ok())
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect()
}
