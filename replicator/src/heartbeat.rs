//! Heartbeats: a small record written to the source cluster every interval and replicated
//! like any other topic. On a flow whose application topics are idle, they keep the
//! end-to-end latency histogram and the heartbeat topic's lag in seconds meaningful, so a
//! stalled flow shows as one even when nobody writes.
//!
//! The topic (default `strait.heartbeats.<flow>`, one per flow so that two flows never
//! write the same copy) lives on the source cluster; its copy is named by the flow's
//! naming policy (`<source>.strait.heartbeats.<flow>` with prefix naming). Each record's
//! key is the flow name and its value the emit time in milliseconds, and its timestamp is
//! the emit time, which is what latency is measured from.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use strait_offset_sync::{
    ensure_single_partition_topic, ensure_single_partition_topics, SinglePartitionTopic,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::telemetry;
use crate::topics::client_config;
use crate::FlowSpec;

/// Where and how often a flow writes heartbeats.
#[derive(Debug, Clone)]
pub struct HeartbeatSpec {
    pub topic: String,
    pub interval: Duration,
}

/// Heartbeats are kept for a day: enough to look back at, small (one record per flow
/// per interval), and deleted rather than compacted so that a copy's records stay
/// comparable one by one with the source's (`strait verify`).
const RETENTION_MS: &str = "86400000";

/// What [`prepare`] tells a flow's first pipeline start, each side as soon as it is done.
/// A sender dropped unsent (no heartbeats, or a panic) reads as "nothing to wait for".
pub(crate) struct Prepared {
    /// Whether the heartbeat topic exists on the source: the first discovery waits for
    /// this, so that the first subscription already holds the topic.
    pub(crate) on_source: oneshot::Receiver<bool>,
    /// Fires once the heartbeat copy and the offset map topic were looked up on the
    /// target and created where missing (`true`; a creation the cluster refused has been
    /// warned about, naming what to create by hand), or the lookup failed (`false`).
    /// Loading the map and the first assignment wait for it; discovery, the group join and
    /// the check of the other target topics go ahead meanwhile.
    pub(crate) on_target: OwnTopicsOnTarget,
}

/// See [`Prepared::on_target`]; each waiter has a clone.
pub(crate) type OwnTopicsOnTarget = Shared<oneshot::Receiver<bool>>;

/// The sending halves of [`Prepared`], for the heartbeat thread.
pub(crate) struct Preparing {
    on_source: oneshot::Sender<bool>,
    on_target: oneshot::Sender<bool>,
}

/// A pair of [`Preparing`] (for [`prepare`]) and [`Prepared`] (for the pipeline).
pub(crate) fn preparation() -> (Preparing, Prepared) {
    let (source_tx, source_rx) = oneshot::channel();
    let (target_tx, target_rx) = oneshot::channel();
    (
        Preparing {
            on_source: source_tx,
            on_target: target_tx,
        },
        Prepared {
            on_source: source_rx,
            on_target: target_rx.shared(),
        },
    )
}

/// Creates the heartbeat topic if it is missing, and its copy on the target with the same
/// settings the pipeline would copy, both at once: one after the other they were the
/// largest part of a first start's wait for its first record. The copy is created in one
/// request with `also_on_target` (the flow's offset map topic), since a KRaft controller
/// answers creation requests one at a time (see [`ensure_single_partition_topics`]). Each
/// side is reported through `preparing` as soon as it is done (see [`Prepared`] for who
/// waits for which). Each side is one admin client's lookups, and one creation only where
/// topics are missing. Failures are warnings: heartbeats never stop a flow, and the
/// pipeline creates a missing copy or map topic itself.
pub(crate) fn prepare(
    spec: &FlowSpec,
    heartbeat: &HeartbeatSpec,
    also_on_target: &[SinglePartitionTopic<'_>],
    preparing: Preparing,
) {
    let configs = [("cleanup.policy", "delete"), ("retention.ms", RETENTION_MS)];
    let copy = spec
        .naming
        .target_topic(&spec.source.name, &heartbeat.topic);
    let mut on_target = vec![SinglePartitionTopic {
        name: &copy,
        replication_factor: spec.replication_factor,
        configs: &configs,
    }];
    on_target.extend_from_slice(also_on_target);
    let Preparing {
        on_source,
        on_target: target_done,
    } = preparing;
    std::thread::scope(|threads| {
        threads.spawn(|| {
            let target = client_config(&spec.target);
            let created = ensure_single_partition_topics(&target, &on_target);
            if let Err(e) = &created {
                debug!(flow = %spec.name, topic = %copy, error = %e, "heartbeat copy (and offset map topic) not created ahead; the pipeline creates them");
            }
            let _ = target_done.send(created.is_ok());
        });
        let source = client_config(&spec.source);
        let exists = match ensure_single_partition_topic(&source, &heartbeat.topic, None, &configs)
        {
            Ok(()) => true,
            Err(e) => {
                warn!(flow = %spec.name, topic = %heartbeat.topic, error = %e, "could not create the heartbeat topic; writing heartbeats anyway (the cluster may create it)");
                false
            }
        };
        let _ = on_source.send(exists);
    });
}

/// Writes heartbeats until `cancel` fires. Blocking: run it on a thread of its own.
/// Errors are logged and retried; heartbeats never stop the flow.
pub(crate) fn run_heartbeats(
    spec: &FlowSpec,
    heartbeat: &HeartbeatSpec,
    cancel: &CancellationToken,
) {
    let producer: BaseProducer = match client_config(&spec.source)
        .set("client.id", format!("strait-{}-heartbeat", spec.name))
        .set("linger.ms", "0")
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            warn!(flow = %spec.name, error = %e, "heartbeats off: cannot create their producer");
            return;
        }
    };
    info!(flow = %spec.name, topic = %heartbeat.topic, interval = ?heartbeat.interval, "writing heartbeats");
    let sent = metrics::counter!(telemetry::HEARTBEATS_SENT_TOTAL, "flow" => spec.name.clone());
    let mut next = Instant::now();
    let mut warned = false;
    while !cancel.is_cancelled() {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let value = now_ms.to_string();
        let record = BaseRecord::to(&heartbeat.topic)
            .key(spec.name.as_bytes())
            .payload(value.as_bytes())
            .timestamp(now_ms);
        match producer.send(record) {
            Ok(()) => {
                sent.increment(1);
                warned = false;
            }
            // A full queue means the source is unreachable; one warning per outage.
            Err((e, _)) if !warned => {
                warn!(flow = %spec.name, error = %e, "heartbeat not written");
                warned = true;
            }
            Err(_) => {}
        }
        next += heartbeat.interval;
        // Sleep, then serve delivery reports without waiting: rdkafka's `poll(timeout)`
        // rounds what is left of its timeout down to whole milliseconds and spins through
        // the last one, which showed as a busy thread next to replication.
        while !cancel.is_cancelled() && Instant::now() < next {
            std::thread::sleep(Duration::from_millis(100).min(next - Instant::now()));
            producer.poll(Duration::ZERO);
        }
    }
    let _ = producer.flush(Duration::from_secs(5));
}
