//! Topic discovery on the source, and creation and growth of target topics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use backon::BlockingRetryable;
use futures::executor::block_on;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigResource, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication, TopicResult,
};
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use strait_offset_sync::settling_backoff;
use tracing::{info, warn};

use crate::error::error_code;
use crate::status::LoginFailure;
use crate::telemetry;
use crate::{ClusterSpec, FlowSpec, ReplicatorError};

const METADATA_TIMEOUT: Duration = Duration::from_secs(15);
/// Admin requests on a healthy cluster take milliseconds. A cluster that answers metadata
/// but lets an admin request time out does not serve that API (librdkafka waits for a
/// broker that supports it), so the wait is kept short.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT))
}

/// Topic configs that describe the data and so travel with it. Everything else
/// (throttles, `min.insync.replicas`, timestamp type, placement) belongs to a cluster.
const COPIED_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

/// One line of a flow's plan: a source topic and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPlan {
    pub source_topic: String,
    pub source_partitions: i32,
    pub target_topic: String,
    /// `None` when the target topic does not exist yet and will be created.
    pub target_partitions: Option<i32>,
}

/// Base librdkafka settings for any client of `cluster`.
pub fn client_config(cluster: &ClusterSpec) -> ClientConfig {
    let mut config = ClientConfig::new();
    apply_cluster(&mut config, cluster);
    config
}

/// Sets the base settings and `properties` of `cluster` on `config`, over what it has.
/// Clients that need their own defaults under the cluster's properties start from those
/// and call this. (Not by copying `client_config(cluster).config_map()`: rdkafka puts a
/// placeholder in that map for secrets such as `sasl.password`, and a client built from
/// it failed to log in.)
pub(crate) fn apply_cluster(config: &mut ClientConfig, cluster: &ClusterSpec) {
    // Connect to every broker when the client starts instead of when first needed. With
    // librdkafka's sparse connections, a new client's first or second request waited
    // about 50 ms for a connection to the broker named in the bootstrap answer (connection
    // attempts are spaced `reconnect.backoff.ms` / 2 apart), and a flow's start makes
    // several new clients one after another on the way to its first record. The cost is a
    // connection per broker per client; a cluster's properties can set it back.
    config.set("enable.sparse.connections", "false");
    for (key, value) in &cluster.properties {
        config.set(key, value);
    }
}

/// Source topics the flow selects, with their partition counts.
pub(crate) fn discover<C: ClientContext>(
    source: &Client<C>,
    spec: &FlowSpec,
) -> Result<BTreeMap<String, i32>, ReplicatorError> {
    let metadata = source.fetch_metadata(None, METADATA_TIMEOUT).map_err(|e| {
        ReplicatorError::kafka(format!("listing topics on '{}'", spec.source.name), e)
    })?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && spec.selector.selects(t.name()))
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

/// Partition counts of existing topics on a cluster.
fn partition_counts<C: ClientContext>(
    client: &Client<C>,
    cluster: &str,
) -> Result<BTreeMap<String, i32>, ReplicatorError> {
    let metadata = client
        .fetch_metadata(None, METADATA_TIMEOUT)
        .map_err(|e| ReplicatorError::kafka(format!("listing topics on '{cluster}'"), e))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

/// Asks for `topic`'s metadata through `client` until it shows at least `partitions`
/// partitions. A client answers for a partition beyond the count of its last metadata
/// answer with a local "unknown partition" until its next periodic refresh (see
/// `strait_offset_sync::offsets_learning_partitions`), and a broker may apply a growth a
/// moment after the controller confirmed it.
pub(crate) fn learn_partitions<C: ClientContext>(
    client: &Client<C>,
    cluster: &str,
    topic: &str,
    partitions: i32,
) -> Result<(), ReplicatorError> {
    let shown = || -> Result<(), ReplicatorError> {
        let metadata = client
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|e| ReplicatorError::kafka(format!("reading {topic} on '{cluster}'"), e))?;
        let have = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        if have >= partitions {
            return Ok(());
        }
        Err(ReplicatorError::Timeout(
            METADATA_TIMEOUT,
            format!("{topic} on '{cluster}' to show {partitions} partitions (it shows {have})"),
        ))
    };
    shown
        .retry(settling_backoff(METADATA_TIMEOUT))
        .sleep(std::thread::sleep)
        .call()
}

/// Connects to both clusters and reports what the flow would replicate, without changing
/// anything.
pub fn plan(spec: &FlowSpec) -> Result<Vec<TopicPlan>, ReplicatorError> {
    let source = watched_client(&spec.source)?;
    let target = watched_client(&spec.target)?;
    let wanted = discover(source.client(), spec).map_err(|e| explain(&source, e))?;
    let existing =
        partition_counts(target.client(), &spec.target.name).map_err(|e| explain(&target, e))?;
    Ok(wanted
        .into_iter()
        .map(|(topic, partitions)| {
            let target_topic = spec.naming.target_topic(&spec.source.name, &topic);
            TopicPlan {
                target_partitions: existing.get(&target_topic).copied(),
                source_topic: topic,
                source_partitions: partitions,
                target_topic,
            }
        })
        .collect())
}

pub(crate) fn admin_client(
    cluster: &ClusterSpec,
) -> Result<AdminClient<DefaultClientContext>, ReplicatorError> {
    client_config(cluster).create().map_err(|e| {
        ReplicatorError::kafka(format!("creating admin client for '{}'", cluster.name), e)
    })
}

/// A client for metadata requests whose log lines and errors are served (an admin
/// client's never are: nothing polls its main queue), so that a failed request can say
/// why it failed.
fn watched_client(cluster: &ClusterSpec) -> Result<BaseProducer<LoginWatch>, ReplicatorError> {
    client_config(cluster)
        .create_with_context(LoginWatch {
            cluster: cluster.name.clone(),
            login: LoginFailure::default(),
        })
        .map_err(|e| ReplicatorError::kafka(format!("connecting to '{}'", cluster.name), e))
}

/// `err`, with the client's last login failure if it had one.
fn explain(client: &BaseProducer<LoginWatch>, err: ReplicatorError) -> ReplicatorError {
    // Serve what the client has queued (its log lines and errors), one event per poll.
    for _ in 0..1_000 {
        client.poll(Duration::ZERO);
    }
    client.context().login.explain(err)
}

/// The context of [`watched_client`]: keeps the client's last login failure.
struct LoginWatch {
    cluster: String,
    login: LoginFailure,
}

impl ClientContext for LoginWatch {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        strait_offset_sync::log_librdkafka(level, fac, log_message);
        self.login.log_line(&self.cluster, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.login.client_error(&self.cluster, &error, reason);
    }
}

impl ProducerContext for LoginWatch {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Keeps target topics in step with the source: creates missing ones with the source's
/// partition count and data configs, and grows partition counts. Never deletes or shrinks.
pub(crate) struct TargetTopics {
    source_admin: AdminClient<DefaultClientContext>,
    target_admin: AdminClient<DefaultClientContext>,
    /// Set once the target (or source) turned out not to support an admin API, so the
    /// warning is logged once and replication carries on with the topics as they are.
    admin_unsupported: HashSet<&'static str>,
    /// Per target topic: how many of its partitions exist and are known to the clients
    /// that write and read it (see [`Self::partitions_to_learn`]).
    known: HashMap<String, i32>,
}

impl TargetTopics {
    pub(crate) fn new(spec: &FlowSpec) -> Result<Self, ReplicatorError> {
        Ok(Self {
            source_admin: admin_client(&spec.source)?,
            target_admin: admin_client(&spec.target)?,
            admin_unsupported: HashSet::new(),
            known: HashMap::new(),
        })
    }

    /// Notes the target topics of `wanted` (source topic → partitions), just synced, as
    /// known to the clients with those counts, unless already noted. Clients that have
    /// never used a topic look it up when they first do; only a count they already hold
    /// can be out of date.
    pub(crate) fn note_synced(&mut self, spec: &FlowSpec, wanted: &BTreeMap<String, i32>) {
        for (source_topic, &partitions) in wanted {
            let target_topic = spec.naming.target_topic(&spec.source.name, source_topic);
            self.known.entry(target_topic).or_insert(partitions);
        }
    }

    /// For a new assignment of `assigned` (source topic, partition): the topics with
    /// partitions the clients may not know of yet, as (source topic, target topic, count
    /// to learn) (see [`learn_partitions`]); target topics that lack those partitions are
    /// grown first.
    ///
    /// Both happen on a partition-count increase. librdkafka's consumer notices it at its
    /// own metadata refresh and may assign the new partitions before the flow's next
    /// refresh grows the target (seen on the test bed: the assignment then waited on
    /// target partitions that did not exist until the flow restarted, a minute later).
    /// And a client keeps a topic's partition count from its last metadata answer, for
    /// 5 minutes by default.
    pub(crate) fn partitions_to_learn<C: ClientContext>(
        &mut self,
        spec: &FlowSpec,
        source: &Client<C>,
        assigned: &[(String, i32)],
    ) -> Result<Vec<(String, String, i32)>, ReplicatorError> {
        let mut lacking: BTreeMap<String, i32> = BTreeMap::new();
        for (source_topic, partition) in assigned {
            let target_topic = spec.naming.target_topic(&spec.source.name, source_topic);
            if self
                .known
                .get(&target_topic)
                .is_some_and(|&k| *partition < k)
            {
                continue;
            }
            let needed = lacking.entry(source_topic.clone()).or_insert(0);
            *needed = (*needed).max(partition + 1);
        }
        if lacking.is_empty() {
            return Ok(Vec::new());
        }
        // The whole source topic, not just the partitions assigned here: the group may
        // have given the rest of the new ones to another instance.
        for (source_topic, needed) in lacking.iter_mut() {
            let metadata = source
                .fetch_metadata(Some(source_topic), METADATA_TIMEOUT)
                .map_err(|e| {
                    ReplicatorError::kafka(
                        format!("reading {source_topic} on '{}'", spec.source.name),
                        e,
                    )
                })?;
            if let Some(topic) = metadata.topics().first() {
                *needed = (*needed).max(topic.partitions().len() as i32);
            }
        }
        self.sync(spec, &lacking)?;
        Ok(lacking
            .into_iter()
            .map(|(s, n)| {
                let target_topic = spec.naming.target_topic(&spec.source.name, &s);
                (s, target_topic, n)
            })
            .collect())
    }

    /// Notes that the clients now know `partitions` partitions of `target_topic`.
    pub(crate) fn learned(&mut self, target_topic: &str, partitions: i32) {
        self.known.insert(target_topic.to_string(), partitions);
    }

    /// Makes every target topic for `wanted` (source topic → partitions) exist with at
    /// least as many partitions.
    pub(crate) fn sync(
        &mut self,
        spec: &FlowSpec,
        wanted: &BTreeMap<String, i32>,
    ) -> Result<(), ReplicatorError> {
        let existing = partition_counts(self.target_admin.inner(), &spec.target.name)?;
        for (source_topic, &partitions) in wanted {
            let target_topic = spec.naming.target_topic(&spec.source.name, source_topic);
            match existing.get(&target_topic) {
                None => self.create(spec, source_topic, &target_topic, partitions)?,
                Some(&have) if have < partitions => {
                    self.grow(spec, &target_topic, partitions)?;
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Copies data configs (see [`COPIED_CONFIGS`]) that were changed on the source to
    /// existing target topics, so that, say, a longer retention reaches the copy. Kafka's
    /// AlterConfigs replaces a topic's whole dynamic config, so the target's other
    /// dynamic settings (its own `min.insync.replicas`, say) are sent back unchanged.
    /// Best effort: a failure is a warning, never a reason to stop replicating.
    pub(crate) fn sync_configs(&mut self, spec: &FlowSpec, wanted: &BTreeMap<String, i32>) {
        let topics: Vec<(String, String)> = wanted
            .keys()
            .map(|s| (s.clone(), spec.naming.target_topic(&spec.source.name, s)))
            .collect();
        if topics.is_empty()
            || self.admin_unsupported.contains("DescribeConfigs")
            || self.admin_unsupported.contains("AlterConfigs")
        {
            return;
        }
        let sources: Vec<&str> = topics.iter().map(|(s, _)| s.as_str()).collect();
        let targets: Vec<&str> = topics.iter().map(|(_, t)| t.as_str()).collect();
        let (Some(source), Some(target)) = (
            self.describe(spec, true, &sources),
            self.describe(spec, false, &targets),
        ) else {
            return;
        };
        for (source_topic, target_topic) in &topics {
            let (Some(src), Some(dst)) = (source.get(source_topic), target.get(target_topic))
            else {
                continue;
            };
            let changed: BTreeMap<&str, &str> = src
                .entries
                .iter()
                .filter(|e| {
                    matches!(e.source, ConfigSource::DynamicTopic)
                        && COPIED_CONFIGS.contains(&e.name.as_str())
                })
                .filter_map(|e| Some((e.name.as_str(), e.value.as_deref()?)))
                .filter(|(name, value)| {
                    dst.entries
                        .iter()
                        .find(|t| t.name == *name)
                        .is_none_or(|t| t.value.as_deref() != Some(*value))
                })
                .collect();
            if changed.is_empty() {
                continue;
            }
            let mut alter = AlterConfig::new(ResourceSpecifier::Topic(target_topic));
            for e in &dst.entries {
                if let (ConfigSource::DynamicTopic, Some(value)) = (&e.source, e.value.as_deref()) {
                    alter = alter.set(&e.name, value);
                }
            }
            for (name, value) in &changed {
                alter = alter.set(name, value);
            }
            let result = block_on(self.target_admin.alter_configs([&alter], &admin_options()));
            let outcome = match result {
                Ok(mut results) => match results.pop() {
                    Some(Err((_, code))) => Err(code),
                    _ => Ok(()),
                },
                Err(e) => Err(error_code(&e).unwrap_or(RDKafkaErrorCode::Unknown)),
            };
            match outcome {
                Ok(()) => {
                    metrics::counter!(telemetry::TARGET_TOPIC_CONFIG_SYNCS_TOTAL, "flow" => spec.name.clone())
                        .increment(1);
                    info!(flow = %spec.name, topic = %target_topic, changed = ?changed, "synced target topic configs from the source");
                }
                Err(code) if admin_unsupported(code) => {
                    self.warn_unsupported(spec, "AlterConfigs", code, target_topic);
                    return;
                }
                Err(code) => {
                    warn!(flow = %spec.name, topic = %target_topic, error = %code, "could not sync target topic configs; retrying at the next refresh");
                }
            }
        }
    }

    /// The configs of `topics` on the source (or target), by topic; `None` (warned) if the
    /// cluster cannot describe them.
    fn describe(
        &mut self,
        spec: &FlowSpec,
        on_source: bool,
        topics: &[&str],
    ) -> Option<HashMap<String, ConfigResource>> {
        let admin = if on_source {
            &self.source_admin
        } else {
            &self.target_admin
        };
        let resources: Vec<ResourceSpecifier<'_>> =
            topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        match block_on(admin.describe_configs(&resources, &admin_options())) {
            Ok(results) => Some(
                results
                    .into_iter()
                    .flatten()
                    .filter_map(|r| match &r.specifier {
                        rdkafka::admin::OwnedResourceSpecifier::Topic(name) => {
                            Some((name.clone(), r))
                        }
                        _ => None,
                    })
                    .collect(),
            ),
            Err(e) => {
                match error_code(&e) {
                    Some(code) if admin_unsupported(code) => {
                        self.warn_unsupported(spec, "DescribeConfigs", code, topics[0])
                    }
                    _ => {
                        warn!(flow = %spec.name, error = %e, "could not read topic configs; config sync retries at the next refresh")
                    }
                }
                None
            }
        }
    }

    fn create(
        &mut self,
        spec: &FlowSpec,
        source_topic: &str,
        target_topic: &str,
        partitions: i32,
    ) -> Result<(), ReplicatorError> {
        if self.admin_unsupported.contains("CreateTopics") {
            return Ok(());
        }
        let configs = self.data_configs(spec, source_topic);
        let replication = TopicReplication::Fixed(spec.replication_factor.unwrap_or(-1));
        let mut new_topic = NewTopic::new(target_topic, partitions, replication);
        for (key, value) in &configs {
            new_topic = new_topic.set(key, value);
        }
        let result = block_on(
            self.target_admin
                .create_topics([&new_topic], &admin_options()),
        );
        if self.settle(spec, "CreateTopics", target_topic, result)? {
            metrics::counter!(telemetry::TARGET_TOPICS_CREATED_TOTAL, "flow" => spec.name.clone())
                .increment(1);
            info!(flow = %spec.name, topic = target_topic, partitions, configs = ?configs, "created target topic");
        }
        Ok(())
    }

    fn grow(
        &mut self,
        spec: &FlowSpec,
        target_topic: &str,
        partitions: i32,
    ) -> Result<(), ReplicatorError> {
        if self.admin_unsupported.contains("CreatePartitions") {
            return Ok(());
        }
        let grow = NewPartitions::new(target_topic, partitions as usize);
        let result = block_on(
            self.target_admin
                .create_partitions([&grow], &admin_options()),
        );
        if self.settle(spec, "CreatePartitions", target_topic, result)? {
            info!(flow = %spec.name, topic = target_topic, partitions, "grew target topic");
        }
        Ok(())
    }

    /// Sorts the outcome of one admin request on the target for `topic`: `Ok(true)` when
    /// it was carried out, `Ok(false)` when there was nothing to do or the target does not
    /// serve `api` (warned once, and not asked again), `Err` for real failures.
    fn settle(
        &mut self,
        spec: &FlowSpec,
        api: &'static str,
        topic: &str,
        result: rdkafka::error::KafkaResult<Vec<TopicResult>>,
    ) -> Result<bool, ReplicatorError> {
        let context = || format!("{api} for {topic} on '{}'", spec.target.name);
        let outcomes = match result {
            Ok(outcomes) => outcomes,
            Err(e) => match error_code(&e) {
                Some(code) if admin_unsupported(code) => {
                    self.warn_unsupported(spec, api, code, topic);
                    return Ok(false);
                }
                _ => return Err(ReplicatorError::kafka(context(), e)),
            },
        };
        for outcome in outcomes {
            match outcome {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => return Ok(false),
                Err((_, code)) if admin_unsupported(code) => {
                    self.warn_unsupported(spec, api, code, topic);
                    return Ok(false);
                }
                Err((_, code)) => {
                    return Err(ReplicatorError::kafka(
                        context(),
                        rdkafka::error::KafkaError::AdminOp(code),
                    ))
                }
            }
        }
        Ok(true)
    }

    /// The source topic's explicitly set data configs. Best effort: a source that cannot
    /// describe configs still gets its topics created with the target's defaults.
    fn data_configs(&mut self, spec: &FlowSpec, source_topic: &str) -> Vec<(String, String)> {
        if self.admin_unsupported.contains("DescribeConfigs") {
            return Vec::new();
        }
        let described = block_on(
            self.source_admin
                .describe_configs([&ResourceSpecifier::Topic(source_topic)], &admin_options()),
        );
        let resource = match described.map(|mut r| r.pop()) {
            Ok(Some(Ok(resource))) => resource,
            Ok(Some(Err(code))) => {
                self.warn_unsupported(spec, "DescribeConfigs", code, source_topic);
                return Vec::new();
            }
            Ok(None) => return Vec::new(),
            Err(e) => {
                match error_code(&e) {
                    Some(code) if admin_unsupported(code) => {
                        self.warn_unsupported(spec, "DescribeConfigs", code, source_topic)
                    }
                    _ => {
                        warn!(flow = %spec.name, topic = source_topic, error = %e, "could not read source topic configs; creating target topic with defaults")
                    }
                }
                return Vec::new();
            }
        };
        resource
            .entries
            .into_iter()
            .filter(|e| {
                matches!(e.source, ConfigSource::DynamicTopic)
                    && COPIED_CONFIGS.contains(&e.name.as_str())
            })
            .filter_map(|e| Some((e.name, e.value?)))
            .collect()
    }

    fn warn_unsupported(
        &mut self,
        spec: &FlowSpec,
        api: &'static str,
        code: RDKafkaErrorCode,
        topic: &str,
    ) {
        if self.admin_unsupported.insert(api) {
            warn!(
                flow = %spec.name, api, error = %code, topic,
                "cluster does not support this admin API; topics must be created by hand, replication carries on"
            );
        }
    }
}

/// How a cluster that does not serve an admin API answers it: Kafka-compatible services
/// reject the request, and where no broker advertises the API at all (the librdkafka mock)
/// librdkafka waits for one until the request times out. Reaching an admin call means
/// metadata on the same cluster just succeeded, so a timeout here is not an outage.
fn admin_unsupported(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnsupportedVersion
            | RDKafkaErrorCode::UnsupportedFeature
            | RDKafkaErrorCode::InvalidRequest
            | RDKafkaErrorCode::UnsupportedForMessageFormat
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{NamingPolicy, StartFrom, TopicSelector, Tuning};
    use rdkafka::mocking::MockCluster;

    pub(crate) fn spec(source: &str, target: &str) -> FlowSpec {
        let cluster = |name: &str, servers: &str| ClusterSpec {
            name: name.into(),
            properties: [("bootstrap.servers".to_string(), servers.to_string())].into(),
        };
        FlowSpec {
            name: "mock".into(),
            source: cluster("src", source),
            target: cluster("dst", target),
            selector: TopicSelector::new(&[".*".into()], &[], None).expect("regex"),
            naming: NamingPolicy::Identity,
            start_from: StartFrom::Earliest,
            on_data_loss: crate::OnDataLoss::Stop,
            on_source_topic_recreated: crate::OnSourceTopicRecreated::Stop,
            fence: crate::Fence::None,
            refresh_interval: Duration::from_secs(1),
            group_id: "mock".into(),
            replication_factor: None,
            provenance_header: true,
            provenance_interval: 1,
            two_way: false,
            offset_map_topic: None,
            heartbeat: None,
            partition_metrics: true,
            tuning: Tuning::default(),
        }
    }

    /// librdkafka's mock cluster has neither CreateTopics nor DescribeConfigs, like some
    /// Kafka-compatible services: syncing must warn and carry on, not fail the flow.
    #[test]
    fn a_target_without_admin_apis_is_not_fatal() {
        let source = MockCluster::new(1).expect("mock source");
        let target = MockCluster::new(1).expect("mock target");
        source.create_topic("orders", 3, 1).expect("source topic");
        target.create_topic("orders", 2, 1).expect("target topic");
        let spec = spec(&source.bootstrap_servers(), &target.bootstrap_servers());
        let mut topics = TargetTopics::new(&spec).expect("admin clients");
        let wanted: BTreeMap<String, i32> =
            [("orders".to_string(), 3), ("new-topic".to_string(), 1)].into();
        topics.sync(&spec, &wanted).expect("sync carries on");
        assert!(
            topics.admin_unsupported.contains("CreateTopics"),
            "{:?}",
            topics.admin_unsupported
        );
        assert!(
            topics.admin_unsupported.contains("CreatePartitions"),
            "{:?}",
            topics.admin_unsupported
        );
        // A second pass warns no more and still succeeds.
        topics.sync(&spec, &wanted).expect("sync carries on again");
    }
}
