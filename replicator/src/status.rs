//! What a flow is doing right now, for `/readyz`, `/status` and the `strait_flow_up`
//! gauge. The pipeline updates it once per commit interval and from client statistics,
//! never per record.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use serde::Serialize;

use crate::telemetry;
use crate::ReplicatorError;

/// A flow's live state, shared between its pipeline and the HTTP endpoints.
#[derive(Debug, Default)]
pub struct FlowStatus {
    up: AtomicBool,
    source_connected: AtomicBool,
    target_connected: AtomicBool,
    snapshot: Mutex<Vec<TopicStatus>>,
    /// Reported by the copy's consumer and producer during the current pipeline run.
    pub(crate) login: LoginFailure,
    /// Whether the flow got as far as copying (see [`FlowStatus::wait_started`]).
    started: Mutex<bool>,
    /// Source records found gone before they were copied, oldest first.
    losses: Mutex<Vec<DataLoss>>,
    /// Why the flow stopped for good, if it did: the error it failed with.
    failure: Mutex<Option<String>>,
    /// Source topics the flow stopped copying, each with the error that stopped it; its
    /// other topics go on. Kept across pipeline restarts, for the life of the process.
    stopped_topics: Mutex<BTreeMap<String, String>>,
    started_changed: Condvar,
}

/// Records lost to the copy: gone from the source before the flow copied them, copies
/// the target acknowledged and no longer has, or source offsets that went back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataLoss {
    pub source_topic: String,
    pub partition: i32,
    /// Where the records were lost: `source` or `target`; `from` and `to` are offsets of
    /// that side.
    pub on: &'static str,
    /// The lost offsets: `[from, to)` (transaction markers among them included).
    pub from: i64,
    pub to: i64,
    /// Why: `deleted_before_copy` (retention or DeleteRecords moved the source's log
    /// start past records not yet copied), `lost_on_target` (the target partition ends
    /// below copies it acknowledged: an unclean leader election, or the topic was
    /// deleted and created again), or `source_offsets_went_back` (the source partition
    /// ends below records already copied: the same causes on the source; `[from, to)`
    /// are the source offsets it will use again), or `source_topic_replaced` (the source
    /// topic is not the one copied: its topic ID is another than the one recorded with
    /// the group's commit or the newest anchor copy, or without IDs its record at the
    /// newest copy's source offset differs from that copy; `[from, to)` are the source
    /// offsets that would be taken for copies, empty when the flow goes on with the new
    /// topic).
    pub reason: &'static str,
    /// What the flow did: `stopped`, or `continued` from the log start.
    pub action: &'static str,
    /// When it was found (Unix ms).
    pub found_at_ms: i64,
}

/// Replication state of one source topic.
#[derive(Debug, Clone, Serialize)]
pub struct TopicStatus {
    pub source_topic: String,
    pub target_topic: String,
    pub records_replicated: u64,
    pub bytes_replicated: u64,
    /// Sum over this instance's assigned partitions.
    pub lag_records: i64,
    /// The largest partition lag in seconds; `None` when no partition's is known.
    pub lag_seconds: Option<f64>,
    pub partitions: Vec<PartitionStatus>,
}

/// Replication state of one source partition.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub partition: i32,
    /// Whether this instance currently replicates the partition.
    pub assigned: bool,
    /// The source's last stable offset (what a `read_committed` reader can reach), as of
    /// librdkafka's last statistics (every 2 s), or the replicated position if that is
    /// further.
    pub source_end: Option<i64>,
    /// Every source record below this offset is on the target (or was never delivered:
    /// transaction markers, aborted records).
    pub replicated_next: Option<i64>,
    /// The target offset after the last acknowledged copy.
    pub target_next: Option<i64>,
    /// The offset last committed to the source group.
    pub committed_next: Option<i64>,
    pub lag_records: Option<i64>,
    /// How old the oldest record not yet on the target is; 0 when caught up.
    pub lag_seconds: Option<f64>,
}

impl FlowStatus {
    /// Keeps a loss for `/status`, once per partition and range.
    pub(crate) fn record_loss(&self, loss: DataLoss) {
        let mut losses = self.losses.lock().unwrap_or_else(|p| p.into_inner());
        let known = losses.iter().any(|l| {
            (l.source_topic.as_str(), l.partition, l.from, l.to)
                == (
                    loss.source_topic.as_str(),
                    loss.partition,
                    loss.from,
                    loss.to,
                )
        });
        if !known {
            losses.push(loss);
        }
    }

    /// Every loss found since the flow started.
    pub fn losses(&self) -> Vec<DataLoss> {
        self.losses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The error the flow failed with, once it stopped for good; the other flows of the
    /// process go on.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_failure(&self, error: &ReplicatorError) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
    }

    /// The source topics this flow stopped copying, with the error that stopped each.
    pub fn stopped_topics(&self) -> BTreeMap<String, String> {
        self.stopped_topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn stop_topic(&self, topic: &str, error: &ReplicatorError) {
        self.stopped_topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_string(), error.to_string());
    }

    pub(crate) fn is_topic_stopped(&self, topic: &str) -> bool {
        self.stopped_topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(topic)
    }

    /// The pipeline is running (it may still be connecting).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Running, both clients report a connection to a broker of their cluster, and no
    /// topic was stopped.
    pub fn is_ready(&self) -> bool {
        self.is_up()
            && self.is_source_connected()
            && self.is_target_connected()
            && self
                .stopped_topics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
    }

    pub fn is_source_connected(&self) -> bool {
        self.source_connected.load(Ordering::Relaxed)
    }

    pub fn is_target_connected(&self) -> bool {
        self.target_connected.load(Ordering::Relaxed)
    }

    /// The topics as of the last commit interval, sorted by source topic.
    pub fn topics(&self) -> Vec<TopicStatus> {
        self.snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until the flow got as far as copying (its first partitions were assigned,
    /// it found nothing to copy, or its pipeline stopped), or for `timeout`; returns
    /// whether it did. Start-up work that is not on the way to the first record waits
    /// for this: a KRaft controller creates topics one after another, about 25 ms each,
    /// and the offset map's topic, which the first assignment needs, queued behind the
    /// checkpoint topic.
    pub fn wait_started(&self, timeout: Duration) -> bool {
        let started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        let (started, _) = self
            .started_changed
            .wait_timeout_while(started, timeout, |started| !*started)
            .unwrap_or_else(|p| p.into_inner());
        *started
    }

    pub(crate) fn mark_started(&self) {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if !*started {
            *started = true;
            self.started_changed.notify_all();
        }
    }

    pub(crate) fn set_up(&self, flow: &str, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        if up {
            self.login.clear();
        } else {
            // The next pipeline run proves its connections afresh.
            self.source_connected.store(false, Ordering::Relaxed);
            self.target_connected.store(false, Ordering::Relaxed);
        }
        metrics::gauge!(telemetry::FLOW_UP, "flow" => flow.to_string())
            .set(f64::from(u8::from(up)));
    }

    pub(crate) fn observe_source(&self, statistics: &Statistics) {
        self.source_connected
            .store(any_broker_up(statistics), Ordering::Relaxed);
    }

    pub(crate) fn observe_target(&self, statistics: &Statistics) {
        self.target_connected
            .store(any_broker_up(statistics), Ordering::Relaxed);
    }

    pub(crate) fn set_topics(&self, mut topics: Vec<TopicStatus>) {
        topics.sort_by(|a, b| a.source_topic.cmp(&b.source_topic));
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = topics;
    }
}

/// The last login failure (SASL or TLS) clients reported, per cluster. The request that
/// needed the connection fails only with a transport failure or a timeout, which does
/// not say why (a wrong password, an untrusted certificate). Kept per cluster so that an
/// error names every cluster that refused the login, not just the last one to report
/// (with both passwords wrong, "listing topics on 'primary'" was explained by the
/// target's failure alone).
#[derive(Debug, Default)]
pub(crate) struct LoginFailure(Mutex<BTreeMap<String, String>>);

impl LoginFailure {
    /// A client's global error: logged (as rdkafka does by default), and kept if it says
    /// that logging in to `cluster` failed.
    pub(crate) fn client_error(&self, cluster: &str, error: &KafkaError, reason: &str) {
        tracing::error!("librdkafka: {error}: {reason}");
        let login = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::SSL
            )
        );
        if login {
            self.keep(cluster, reason);
        }
    }

    /// The same from a librdkafka log line. An admin client's global errors are never
    /// served (nothing polls its main queue), but its connection failures are logged,
    /// under the `FAIL` facility, as they happen.
    pub(crate) fn log_line(&self, cluster: &str, fac: &str, message: &str) {
        if fac == "FAIL"
            && (message.contains("SASL authentication error") || message.contains("SSL handshake"))
        {
            self.keep(cluster, message);
        }
    }

    /// `err`, saying why the connection failed if login failures were kept.
    pub(crate) fn explain(&self, err: ReplicatorError) -> ReplicatorError {
        let failures = self.lock();
        if failures.is_empty() {
            return err;
        }
        let failure = failures
            .iter()
            .map(|(cluster, reason)| format!("logging in to '{cluster}' failed: {reason}"))
            .collect::<Vec<_>>()
            .join("; ");
        err.with_login_failure(&failure)
    }

    /// Forgets the kept failures: the connections were proved since.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn keep(&self, cluster: &str, reason: &str) {
        self.lock().insert(cluster.to_string(), reason.to_string());
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether the client holds an open connection to at least one broker. librdkafka's
/// statistics list every broker it knows with its connection state; "UP" means
/// connected (and authenticated, when SASL is on).
fn any_broker_up(statistics: &Statistics) -> bool {
    statistics.brokers.values().any(|b| b.state == "UP")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn waiting_for_the_start_ends_when_it_is_marked_or_at_the_timeout() {
        let status = Arc::new(FlowStatus::default());
        let began = Instant::now();
        assert!(!status.wait_started(Duration::from_millis(50)));
        assert!(began.elapsed() >= Duration::from_millis(50));

        let marker = status.clone();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            marker.mark_started();
        });
        assert!(status.wait_started(Duration::from_secs(30)));
        handle.join().expect("the marking thread panicked");
        // Once started, it stays started.
        assert!(status.wait_started(Duration::ZERO));
    }

    #[test]
    fn an_error_names_every_cluster_whose_login_failed_until_cleared() {
        let transport = || {
            ReplicatorError::kafka(
                "listing topics on 'primary'",
                KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure),
            )
        };
        let login = LoginFailure::default();
        assert_eq!(
            login.explain(transport()).to_string(),
            transport().to_string()
        );
        let authentication = KafkaError::Global(RDKafkaErrorCode::Authentication);
        login.client_error("primary", &authentication, "wrong password on primary");
        login.log_line(
            "secondary",
            "FAIL",
            "SASL authentication error: wrong password on secondary",
        );
        // Only the connection failures that are about logging in.
        login.log_line("secondary", "FAIL", "Connect to ipv4#127.0.0.1:1 failed");
        login.client_error(
            "primary",
            &KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert_eq!(
            login.explain(transport()).to_string(),
            "listing topics on 'primary' (logging in to 'primary' failed: wrong password on \
             primary; logging in to 'secondary' failed: SASL authentication error: wrong \
             password on secondary): Meta data fetch error: BrokerTransportFailure (Local: \
             Broker transport failure)"
        );
        login.clear();
        assert_eq!(
            login.explain(transport()).to_string(),
            transport().to_string()
        );
    }
}
