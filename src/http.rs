//! `/metrics` (Prometheus text format) and `/healthz`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use strait_replicator::FlowStatus;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Installs the global metrics recorder and publishes build info.
pub fn install_metrics() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    metrics::gauge!("strait_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    flows: Arc<Vec<(String, Arc<FlowStatus>)>>,
}

/// Binds `listen` (failing clearly if it is taken) and serves until `shutdown`.
pub async fn serve(
    listen: SocketAddr,
    metrics: PrometheusHandle,
    flows: Vec<(String, Arc<FlowStatus>)>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>> {
    let state = AppState {
        metrics,
        flows: Arc::new(flows),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
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
    state.metrics.render()
}

/// Liveness: the process serves requests. Lists each flow's state for people reading it.
async fn healthz(State(state): State<AppState>) -> (StatusCode, String) {
    let mut body = String::from("ok\n");
    for (name, status) in state.flows.iter() {
        let state = if status.is_up() {
            "running"
        } else {
            "restarting or stopped"
        };
        body.push_str(&format!("flow {name}: {state}\n"));
    }
    (StatusCode::OK, body)
}
