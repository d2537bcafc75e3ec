//! `strait failback run`: the way back. A flow from the secondary to the primary, under
//! the primary's own topic names, that copies only what the applications wrote on the
//! secondary since the failover, never the secondary's copies of the primary's records:
//! - under `prefix` naming those copies live in `<primary><separator><topic>` topics,
//!   which the flow leaves out, and the applications' topics hold only their records;
//! - under `identity` naming the copies and the applications' records share the topics,
//!   the copies first (the forward flow was stopped at the failover). Before the flow
//!   first starts, its group's position on each partition is set to where the copies
//!   end, as `failback plan` finds them, so no copy is read. A copy that turns up past
//!   that point (the forward flow ran again) carries the provenance header naming the
//!   primary, and stops the flow before it is copied back (a copy loop).
//!
//! The flow is an ordinary one, run by the daemon's own machinery: it resumes where it
//! stopped after any interruption, keeps an offset map on the primary, and is observed
//! on the HTTP endpoints like any flow.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use strait_offset_sync::FlowIndex;
use strait_replicator::{
    client_config, copies_on_target, CommitMetadata, FlowSpec, MapEnd, NamingPolicy, StartFrom,
};
use tracing::{info, warn};

use super::{flow_members, flow_spec, shipped, still_running};
use crate::config::{Config, FlowConfig, Naming, OffsetSyncConfig};

const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The reverse flow's name: `<forward>-failback`.
pub(crate) fn reverse_name(forward: &str) -> String {
    format!("{forward}-failback")
}

/// `strait failback run --flow FORWARD`: replicates the reverse of `FORWARD` until a
/// signal, like `strait run`.
pub fn run(path: &Path, forward: &str) -> Result<()> {
    let config = Config::load(path)?;
    let spec = flow_spec(&config, forward)?;
    if let Some(members) = flow_members(&spec)?.filter(|m| *m > 0) {
        bail!("{}", still_running(&spec, members));
    }
    let (reverse, reverse_spec) = reverse_config(path, forward)?;
    let name = reverse_spec.name.clone();
    if spec.naming == NamingPolicy::Identity {
        start_after_copies(&config, &spec, &reverse_spec)?;
    }
    info!(
        flow = %name, from = %reverse_spec.source.name, to = %reverse_spec.target.name,
        "copying back what the applications wrote on '{}' since the failover",
        reverse_spec.source.name
    );
    crate::run_flows(reverse, None)
}

/// A config of the reverse of flow `forward` alone, and its spec. `Config` is read again
/// rather than cloned, as it holds what was read from the file and the environment once.
pub(crate) fn reverse_config(path: &Path, forward: &str) -> Result<(Config, FlowSpec)> {
    let mut reverse = Config::load(path)?;
    let forward_flow = reverse.flows.remove(forward).context("the forward flow")?;
    let name = reverse_name(forward);
    reverse.flows = BTreeMap::from([(name.clone(), reverse_flow(forward, forward_flow))]);
    reverse.migration = None;
    reverse
        .validate()
        .with_context(|| format!("the reverse flow '{name}'"))?;
    let spec = reverse
        .flow_specs()?
        .pop()
        .context("the reverse flow's spec")?;
    Ok((reverse, spec))
}

/// The reverse flow's offset map (on the primary) with the copies after it, read back
/// from the primary: the map trails the copies.
pub(crate) fn reverse_index(reverse_config: &Config, reverse: &FlowSpec) -> Result<FlowIndex> {
    let (secondary, primary) = (&reverse.source, &reverse.target);
    let map_topic = reverse_config.flows[&reverse.name].map_topic(&reverse.name);
    let mut index = FlowIndex::load(&client_config(primary), &map_topic)
        .with_context(|| format!("reading the offset map {map_topic} on '{}'", primary.name))?;
    let ends: Vec<MapEnd> = index
        .partitions()
        .filter_map(|(topic, partition, m)| {
            m.coverage().map(|c| MapEnd {
                source_topic: topic.to_string(),
                partition,
                target_next: c.target_next,
                source_next: c.through,
            })
        })
        .collect();
    let copies = copies_on_target((secondary, primary, &reverse.naming), true, &ends)
        .with_context(|| format!("reading the copies back on '{}'", primary.name))?;
    for (end, copies) in ends.iter().zip(copies) {
        index.add_copies(&end.source_topic, end.partition, &copies.pairs);
    }
    Ok(index)
}

/// The flow from the forward flow's target back to its source, under the source's topic
/// names, with its own group, offset map and checkpoints (default names from its own
/// name), and a provenance header on every copy.
pub(crate) fn reverse_flow(forward_name: &str, forward: FlowConfig) -> FlowConfig {
    let primary = forward.source.clone();
    let separator = forward
        .prefix_separator
        .clone()
        .unwrap_or_else(|| ".".into());
    let mut exclude = forward.topics_exclude.clone();
    // The secondary's copies under prefix naming, and `failback keep`'s side topics
    // (default prefix `<primary>.unshipped.`): the primary's own records.
    exclude.push(format!(
        "{}.*",
        regex::escape(&format!("{primary}{separator}"))
    ));
    exclude.push(format!(
        "{}.*",
        regex::escape(&format!("{primary}.unshipped."))
    ));
    // The forward flow's heartbeats are Strait's own records, copied from the primary.
    exclude.extend(
        forward
            .heartbeat_topic(forward_name)
            .map(|t| regex::escape(&t)),
    );
    FlowConfig {
        source: forward.target,
        target: forward.source,
        topics: forward.topics,
        topics_exclude: exclude,
        naming: Naming::Identity,
        prefix_separator: None,
        start_from: StartFrom::Earliest,
        on_data_loss: forward.on_data_loss,
        on_source_topic_recreated: forward.on_source_topic_recreated,
        fence: forward.fence,
        refresh_interval: forward.refresh_interval,
        group_id: None,
        replication_factor: forward.replication_factor,
        provenance_header: true,
        provenance_interval: 1,
        offset_sync: OffsetSyncConfig {
            enabled: true,
            map_topic: None,
            checkpoint_topic: None,
            sync_group_offsets: Some(false),
            ..forward.offset_sync
        },
        heartbeats: Some(false),
        heartbeat_topic: None,
        heartbeat_interval: forward.heartbeat_interval,
    }
}

/// Sets the reverse flow's group position on each partition it has never committed to
/// where the secondary's copies of the primary's records end, with the primary's end as
/// where its copies go: the flow then reads only what came after the copies. Partitions
/// it has committed to (an earlier run) keep their position.
fn start_after_copies(config: &Config, forward: &FlowSpec, reverse: &FlowSpec) -> Result<()> {
    let (_, partitions) = shipped(config, forward)?;
    let secondary = &reverse.source.name;
    let consumer: BaseConsumer = client_config(&reverse.source)
        .set("group.id", &reverse.group_id)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a client of the reverse flow's group")?;
    let mut wanted = TopicPartitionList::new();
    for p in &partitions {
        wanted.add_partition(&p.secondary_topic, p.partition);
    }
    let committed = consumer
        .committed_offsets(wanted, COMMIT_TIMEOUT)
        .with_context(|| {
            format!(
                "reading group '{}''s offsets on '{secondary}'",
                reverse.group_id
            )
        })?;
    let mut start = TopicPartitionList::new();
    for p in &partitions {
        let name = format!("{}[{}]", p.secondary_topic, p.partition);
        let earlier = committed
            .find_partition(&p.secondary_topic, p.partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        if let Some(offset) = earlier {
            info!(partition = %name, offset, "copying back resumes where an earlier run committed");
            continue;
        }
        if p.deleted_may_include_copies {
            warn!(
                partition = %name, from = p.secondary_copies_end,
                "records past the named copies may be copies of records deleted on the primary \
                 (see `strait failback plan`); they are copied back"
            );
        }
        start
            .add_partition_offset(
                &p.secondary_topic,
                p.partition,
                Offset::Offset(p.secondary_copies_end),
            )
            .context("partition list")?;
        let metadata = CommitMetadata {
            target_next: Some(p.primary_log.log_end),
            ..CommitMetadata::default()
        }
        .encode();
        if let Some(mut e) = start.find_partition(&p.secondary_topic, p.partition) {
            e.set_metadata(metadata);
        }
        info!(
            partition = %name, from = p.secondary_copies_end, primary_end = p.primary_log.log_end,
            "copies of the primary's records end here: copying back starts after them"
        );
    }
    if start.count() > 0 {
        consumer.commit(&start, CommitMode::Sync).with_context(|| {
            format!(
                "setting group '{}''s start after the copies on '{secondary}'",
                reverse.group_id
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn forward(naming: &str) -> FlowConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strait.toml");
        let text = format!(
            r#"
            [clusters.primary]
            bootstrap_servers = "127.0.0.1:19092"
            [clusters.secondary]
            bootstrap_servers = "127.0.0.1:29092"
            [flows.dr]
            source = "primary"
            target = "secondary"
            topics = [".*"]
            topics_exclude = ["tmp"]
            naming = "{naming}"
            heartbeats = true
            provenance_interval = 100
            group_id = "dr-group"
            [flows.dr.offset_sync]
            map_topic = "dr-map"
            sync_group_offsets = true
            "#
        );
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        config.flows.into_values().next().unwrap()
    }

    #[test]
    fn the_reverse_flow_copies_the_applications_topics_under_their_own_names() {
        for naming in ["identity", "prefix"] {
            let reverse = reverse_flow("dr", forward(naming));
            assert_eq!(
                (reverse.source.as_str(), reverse.target.as_str()),
                ("secondary", "primary")
            );
            assert_eq!(reverse.naming, Naming::Identity);
            assert_eq!(reverse.topics, [".*"]);
            assert_eq!(reverse.start_from, StartFrom::Earliest);
            // Its own group, map and checkpoints, never the forward flow's.
            let name = reverse_name("dr");
            assert_eq!(reverse.group_id(&name), "strait-dr-failback");
            assert_eq!(reverse.map_topic(&name), "__strait.offsets.dr-failback");
            assert_eq!(reverse.offset_sync.sync_group_offsets, Some(false));
            assert!(reverse.provenance_header && reverse.provenance_interval == 1);
            assert_eq!(reverse.heartbeat_topic(&name), None);
        }
    }

    #[test]
    fn the_reverse_flow_leaves_out_copies_side_topics_and_heartbeats() {
        for naming in ["identity", "prefix"] {
            let reverse = reverse_flow("dr", forward(naming));
            let selector = strait_replicator::TopicSelector::new(
                &reverse.topics,
                &reverse.topics_exclude,
                None,
            )
            .unwrap();
            assert!(selector.selects("orders"), "{naming}");
            assert!(selector.selects("strait.heartbeats.other"), "{naming}");
            assert!(!selector.selects("tmp"), "{naming}");
            assert!(!selector.selects("primary.orders"), "{naming}");
            assert!(!selector.selects("primary.unshipped.orders"), "{naming}");
            assert!(!selector.selects("strait.heartbeats.dr"), "{naming}");
        }
    }
}
