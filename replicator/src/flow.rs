//! A flow's supervisor: runs the pipeline, restarts it after retriable errors with
//! exponential backoff, and stops the flow on fatal ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use strait_offset_sync::SinglePartitionTopic;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::heartbeat::Prepared;
use crate::pipeline::{self, SharedProgress};
use crate::status::FlowStatus;
use crate::telemetry;
use crate::{FlowSpec, ReplicatorError};

/// How long start-up work off the path to the first record (offset sync's checkpoints)
/// waits for the flow to start copying.
pub const START_WAIT: Duration = Duration::from_secs(3);

/// A pipeline that ran this long without failing counts as healthy: the backoff resets.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Which flow writes which target topic, shared by every flow in a process, so two flows
/// never write into the same topic.
#[derive(Debug, Clone, Default)]
pub struct TargetClaims(Arc<Mutex<HashMap<(String, String), String>>>);

impl TargetClaims {
    fn claim(&self, flow: &str, cluster: &str, topic: &str) -> Result<(), ReplicatorError> {
        let mut claims = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let owner = claims
            .entry((cluster.to_string(), topic.to_string()))
            .or_insert_with(|| flow.to_string());
        if owner == flow {
            Ok(())
        } else {
            Err(ReplicatorError::TargetConflict {
                flow: flow.to_string(),
                owner: owner.clone(),
                cluster: cluster.to_string(),
                topic: topic.to_string(),
            })
        }
    }
}

/// Runs one flow until `cancel` fires (returns `Ok`) or a fatal error (returns it).
/// Blocking: call it from a thread of its own.
pub fn run_flow(
    spec: FlowSpec,
    claims: TargetClaims,
    status: Arc<FlowStatus>,
    cancel: CancellationToken,
) -> Result<(), ReplicatorError> {
    let progress = SharedProgress::default();
    // Heartbeats run beside the pipeline, across its restarts, until the flow stops.
    let heartbeats_stop = cancel.child_token();
    // The heartbeat topic is prepared (created on a first start, with its copy and the
    // offset map's topic) beside the pipeline's start. The pipeline waits for the source
    // side before its first discovery, so that discovery finds the topic and the first
    // subscription holds it. (Subscribing to it later was ~50 ms faster to the first
    // record, but the cooperative rebalance that added it mid-copy was followed once by
    // the consumer handing over records already sent.) It waits for the target side only
    // before loading the offset map and assigning partitions: the group join and the
    // check of the other target topics go on meanwhile. Heartbeats are written only once the topic exists: a producer's first
    // record would otherwise have the broker auto-create it with other settings.
    let (preparing, prepared) = crate::heartbeat::preparation();
    let heartbeats = spec.heartbeat.clone().map(|heartbeat| {
        let (spec, stop) = (spec.clone(), heartbeats_stop.clone());
        std::thread::spawn(move || {
            let map_topic = spec
                .offset_map_topic
                .as_deref()
                .map(|topic| SinglePartitionTopic::compacted(topic, spec.replication_factor));
            let also_on_target = map_topic.as_slice();
            crate::heartbeat::prepare(&spec, &heartbeat, also_on_target, preparing);
            crate::heartbeat::run_heartbeats(&spec, &heartbeat, &stop)
        })
    });
    // Without heartbeats `preparing` is dropped unsent, and waiting on it returns at once.
    let mut prepared = Some(prepared);
    let result = supervise(&spec, &claims, &status, &cancel, &progress, &mut prepared);
    heartbeats_stop.cancel();
    if let Some(handle) = heartbeats {
        let _ = handle.join();
    }
    let stopped = status.stopped_topics();
    match result {
        // Stopped topics make the stop an error: the process exits with one.
        Ok(()) if !stopped.is_empty() => Err(ReplicatorError::SourceTopicsStopped(
            stopped
                .iter()
                .map(|(topic, error)| format!("{topic}: {error}"))
                .collect::<Vec<_>>()
                .join("; "),
        )),
        result => result,
    }
}

/// Runs the pipeline until cancelled or a fatal error, restarting it after retriable ones.
fn supervise(
    spec: &FlowSpec,
    claims: &TargetClaims,
    status: &Arc<FlowStatus>,
    cancel: &CancellationToken,
    progress: &SharedProgress,
    prepared: &mut Option<Prepared>,
) -> Result<(), ReplicatorError> {
    let mut backoff = new_backoff();
    info!(flow = %spec.name, source = %spec.source.name, target = %spec.target.name, "flow started");
    loop {
        let started = Instant::now();
        status.set_up(&spec.name, true);
        let mut claim = |names: &[String]| {
            names.iter().try_for_each(|t| {
                let target = spec.naming.target_topic(&spec.source.name, t);
                claims.claim(&spec.name, &spec.target.name, &target)
            })
        };
        let result = pipeline::run(spec, progress, status, cancel, &mut claim, prepared)
            .map_err(|err| status.login.explain(err));
        status.set_up(&spec.name, false);
        status.mark_started();
        match result {
            Ok(()) => {
                info!(flow = %spec.name, "flow stopped");
                return Ok(());
            }
            Err(err) if err.is_retriable() && !cancel.is_cancelled() => {
                if started.elapsed() > HEALTHY_AFTER {
                    backoff = new_backoff();
                }
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                metrics::counter!(telemetry::FLOW_RESTARTS_TOTAL, "flow" => spec.name.clone())
                    .increment(1);
                warn!(flow = %spec.name, error = %err, retry_in = ?delay, "flow interrupted; restarting");
                sleep_unless_cancelled(cancel, delay);
                // Stopped during the wait: a new pipeline would only meet the same trouble
                // (its calls to an unreachable cluster held a SIGTERM up 30 s).
                if cancel.is_cancelled() {
                    info!(flow = %spec.name, "flow stopped while waiting to restart");
                    return Ok(());
                }
            }
            // Stopping was asked for while the pipeline was failing with an error that a
            // restart would have retried (a cluster unreachable, a login refused): that is
            // a stop, not a failure of the flow.
            Err(err) if err.is_retriable() => {
                warn!(flow = %spec.name, error = %err, "flow stopped while interrupted");
                return Ok(());
            }
            Err(err) => {
                error!(flow = %spec.name, error = %err, "flow failed; the other flows go on");
                status.set_failure(&err);
                return Err(err);
            }
        }
    }
}

fn new_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Sleeps for `delay`, waking early if the flow is cancelled.
fn sleep_unless_cancelled(cancel: &CancellationToken, delay: Duration) {
    let until = Instant::now() + delay;
    while !cancel.is_cancelled() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
    }
}
