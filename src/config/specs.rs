//! What the config becomes for the crates that run it: flow, cluster and checkpoint specs, and
//! the internal topics it names.

use super::*;

impl Config {
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
    pub(super) fn internal_topics(&self) -> Vec<String> {
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
                        .unwrap_or(flow.naming == Naming::Identity && !spec.two_way),
                    replication_factor: spec.replication_factor,
                    rename: Arc::new(move |topic| naming.target_topic(&source_name, topic)),
                    topics: Arc::new(move |topic| selector.selects(topic)),
                })
            })
            .collect()
    }

    pub(super) fn cluster_names(&self) -> String {
        self.clusters.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The spec of the flow an operator named with `--flow`, which `purpose` (a command's
    /// work) reads the offset map of: an unknown name lists the flows there are, and a flow
    /// without the map names the setting.
    pub fn mapped_flow_spec(&self, name: &str, purpose: &str) -> Result<FlowSpec> {
        let Some(flow) = self.flows.get(name) else {
            bail!(
                "--flow: no flow '{name}' in the config (flows: {})",
                self.flows.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        };
        if !flow.offset_sync.enabled {
            bail!(
                "flows.{name}.offset_sync.enabled is false: {purpose} needs the flow's offset map"
            );
        }
        self.flow_specs()?
            .into_iter()
            .find(|s| s.name == name)
            .context("flow spec")
    }

    /// Resolved, validated specs for the replicator, one per flow.
    pub fn flow_specs(&self) -> Result<Vec<FlowSpec>> {
        let two_way: Vec<&str> = self
            .two_way_pairs()
            .into_iter()
            .flat_map(|(a, b)| [a, b])
            .collect();
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
                    on_source_topic_recreated: flow.on_source_topic_recreated,
                    fence: flow.fence,
                    refresh_interval: flow.refresh_interval,
                    group_id: flow.group_id(name),
                    replication_factor: flow.replication_factor,
                    provenance_header: flow.provenance_header,
                    provenance_interval: flow.provenance_interval,
                    two_way: two_way.contains(&name.as_str()),
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

    pub(super) fn cluster_spec(&self, name: &str) -> ClusterSpec {
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

/// librdkafka settings for a flow's offset-sync clients of `cluster`.
///
/// Offset sync keeps one client per consumer group and cluster (librdkafka reads and
/// commits only its own `group.id`'s offsets), and such a client talks to its group's
/// coordinator and little else. So unlike the copying clients it connects to brokers only
/// as needed (librdkafka's sparse connections; the cluster's properties can still set
/// `enable.sparse.connections`): with every broker connected up front, 1,000 groups on a
/// 12-broker cluster would hold some 24,000 connections. Its `client.id` names the flow,
/// so that brokers' request logs and client quotas can tell these clients apart.
pub(super) fn offset_sync_client_config(
    cluster: &ClusterSpec,
    flow: &str,
) -> rdkafka::ClientConfig {
    let mut config = client_config(cluster);
    if !cluster.properties.contains_key("enable.sparse.connections") {
        config.set("enable.sparse.connections", "true");
    }
    config.set("client.id", format!("strait-{flow}-offset-sync"));
    config
}
