//! The HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (liveness),
//! `/readyz` (every flow running and connected to both clusters) and `/status` (JSON).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use strait_offset_sync::{CheckpointSnapshot, CheckpointStatus};
use strait_replicator::{DataLoss, FlowStatus, TopicStatus};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::login_failures;
use crate::migrate::MigrationState;
use crate::telemetry;

/// Buckets of the end-to-end latency histogram, in seconds: from a busy local pair of
/// clusters (milliseconds) to a replicator that is catching up (minutes).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Installs the global metrics recorder and publishes build info.
pub fn install_metrics() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(strait_replicator::telemetry::REPLICATION_LATENCY_SECONDS.into()),
            LATENCY_BUCKETS,
        )
        .context("configuring histogram buckets")?
        .set_buckets_for_metric(
            Matcher::Full(strait_replicator::telemetry::TRANSACTION_COMMIT_SECONDS.into()),
            LATENCY_BUCKETS,
        )
        .context("configuring histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    for catalog in [
        telemetry::METRICS,
        strait_replicator::telemetry::METRICS,
        strait_offset_sync::telemetry::METRICS,
    ] {
        strait_offset_sync::telemetry::describe(catalog);
    }
    metrics::gauge!(telemetry::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// What the endpoints report on, shared with the flows, checkpointers and migration.
#[derive(Clone, Default)]
pub struct Observed {
    pub flows: Vec<ObservedFlow>,
    pub migration: Option<Arc<Mutex<Option<MigrationState>>>>,
}

#[derive(Clone)]
pub struct ObservedFlow {
    pub name: String,
    pub source: String,
    pub target: String,
    pub status: Arc<FlowStatus>,
    pub checkpoints: Option<Arc<CheckpointStatus>>,
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    observed: Arc<Observed>,
}

/// Binds `listen` (failing clearly if it is taken) and serves until `shutdown`.
pub async fn serve(
    listen: SocketAddr,
    metrics: PrometheusHandle,
    observed: Observed,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>> {
    let state = AppState {
        metrics,
        observed: Arc::new(observed),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("http.listen: cannot bind {listen}"))?;
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    }))
}

async fn metrics_text(State(state): State<AppState>) -> String {
    // Histograms keep raw samples until upkeep folds them into buckets.
    state.metrics.run_upkeep();
    state.metrics.render()
}

/// Liveness: the process serves requests. Lists each flow's state for people reading it.
async fn healthz(State(state): State<AppState>) -> (StatusCode, String) {
    let mut body = String::from("ok\n");
    for flow in &state.observed.flows {
        let running = if flow.status.is_up() {
            "running"
        } else {
            "restarting or stopped"
        };
        body.push_str(&format!("flow {}: {running}\n", flow.name));
    }
    (StatusCode::OK, body)
}

/// Readiness: 200 when every flow is running, both of its clients hold a connection to
/// their cluster (from librdkafka's statistics, refreshed every 2 s) and it stopped no
/// topic; 503 otherwise, saying what is missing.
async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let mut ready = true;
    let mut body = String::new();
    for flow in &state.observed.flows {
        let s = &flow.status;
        let mut missing = Vec::new();
        if let Some(error) = s.failure() {
            // Its clients are gone with it: their connections say nothing.
            ready = false;
            body.push_str(&format!("flow {}: failed: {error}\n", flow.name));
            continue;
        }
        if !s.is_up() {
            missing.push("not running".to_string());
        }
        if !s.is_source_connected() {
            missing.push(format!("not connected to source '{}'", flow.source));
        }
        if !s.is_target_connected() {
            missing.push(format!("not connected to target '{}'", flow.target));
        }
        for (topic, error) in s.stopped_topics() {
            missing.push(format!("topic {topic} stopped: {error}"));
        }
        if missing.is_empty() {
            body.push_str(&format!("flow {}: ready\n", flow.name));
        } else {
            ready = false;
            body.push_str(&format!("flow {}: {}\n", flow.name, missing.join(", ")));
        }
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

#[derive(Serialize)]
struct StatusBody {
    version: &'static str,
    ready: bool,
    flows: Vec<FlowBody>,
    migration: Option<MigrationState>,
}

#[derive(Serialize)]
struct FlowBody {
    name: String,
    running: bool,
    ready: bool,
    /// The error the flow stopped with for good; the other flows go on.
    failed: Option<String>,
    /// Source topics the flow stopped copying, each with the error that stopped it; its
    /// other topics go on.
    stopped_topics: std::collections::BTreeMap<String, String>,
    source: ClusterBody,
    target: ClusterBody,
    lag_records: i64,
    lag_seconds: Option<f64>,
    topics: Vec<TopicStatus>,
    /// Source records found gone before they were copied (see `on_data_loss`).
    data_loss: Vec<DataLoss>,
    offset_sync: Option<CheckpointSnapshot>,
}

#[derive(Serialize)]
struct ClusterBody {
    cluster: String,
    connected: bool,
}

async fn status(
    State(state): State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let observed = &state.observed;
    let flows: Vec<FlowBody> = observed
        .flows
        .iter()
        .map(|f| {
            let topics = f.status.topics();
            FlowBody {
                name: f.name.clone(),
                running: f.status.is_up(),
                ready: f.status.is_ready(),
                failed: f.status.failure(),
                stopped_topics: f.status.stopped_topics(),
                source: ClusterBody {
                    cluster: f.source.clone(),
                    connected: f.status.is_source_connected(),
                },
                target: ClusterBody {
                    cluster: f.target.clone(),
                    connected: f.status.is_target_connected(),
                },
                lag_records: topics.iter().map(|t| t.lag_records).sum(),
                lag_seconds: topics.iter().filter_map(|t| t.lag_seconds).reduce(f64::max),
                topics,
                data_loss: f.status.losses(),
                offset_sync: f.checkpoints.as_ref().map(|c| {
                    // Offset sync's clients report a failed login only by its effect (a
                    // transport failure, a timeout); the reason is in librdkafka's log.
                    let mut snapshot = c.snapshot();
                    snapshot.last_error = snapshot.last_error.map(login_failures::explain);
                    snapshot
                }),
            }
        })
        .collect();
    let body = StatusBody {
        version: env!("CARGO_PKG_VERSION"),
        ready: flows.iter().all(|f| f.ready),
        flows,
        migration: observed
            .migration
            .as_ref()
            .and_then(|m| m.lock().unwrap_or_else(|p| p.into_inner()).clone()),
    };
    let json =
        serde_json::to_string_pretty(&body).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    ([(CONTENT_TYPE, "application/json")], json)
}
