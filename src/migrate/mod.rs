//! `strait migrate`: a staged migration of one flow, driven by the `[migration]` section.
//!
//! Stages run in order; each has a gate (manual approval or an automatic condition) that
//! must pass before the next begins:
//!
//! mirror → move_producers → drain → stop_consumers → translate_offsets → verify →
//! start_consumers → done
//!
//! The state lives in a compacted topic on the target (key `state`, written only by the
//! daemon); `approve` and `abort` add records of their own (`approve/<attempt>/<stage>`,
//! `abort/<attempt>`) that the daemon reads, so commands and daemon never race on one
//! record. A restarted daemon resumes at the stage it was in.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use strait_offset_sync::groups::{GroupClient, Outcome};
use strait_offset_sync::{ensure_compacted_topic, FlowIndex, TopicReader, TopicWriter};
use strait_replicator::{client_config, FlowSpec};
use strait_verify::{verify_flow, Silent, VerifySpec};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Approval, Config, Gate, MigrationConfig, OnTimeout};
use crate::offsets;
use crate::telemetry;
use crate::OutputFormat;

mod commands;
mod controller;
mod gates;
mod probe;
mod stage;
mod state;

pub use commands::{abort, approve, status};
pub use controller::Controller;
use gates::*;
use probe::*;
pub use stage::Stage;
pub use state::MigrationState;
use state::*;

const TICK: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(10);

/// Said when a gate on group membership needs the operator's word instead.
const CANNOT_DESCRIBE: &str = "cannot describe groups";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn migration(config: &Config) -> Result<(&MigrationConfig, FlowSpec)> {
    let m = config
        .migration
        .as_ref()
        .context("the config has no [migration] section")?;
    let spec = config
        .flow_specs()?
        .into_iter()
        .find(|s| s.name == m.flow)
        .context("migration.flow")?;
    Ok((m, spec))
}
