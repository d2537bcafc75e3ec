//! The flow's offset map on the target: loaded in the background at start, written as
//! copies are acknowledged.

use super::*;

/// The persisted offset map and its writer. Creating the map topic and reading it takes
/// a few hundred milliseconds, so it happens on a thread of its own while the consumer
/// joins its group; the first user (normally the first assignment) waits for it.
pub(super) struct PersistedMap {
    pub(super) pending: Mutex<Option<JoinHandle<Result<LoadedMap, ReplicatorError>>>>,
    pub(super) ready: OnceLock<LoadedMap>,
}

pub(super) struct LoadedMap {
    pub(super) index: Mutex<FlowIndex>,
    pub(super) writer: MapWriter,
}

impl PersistedMap {
    /// Loads the map on a thread of its own, once `prepared` (if any) fires: see
    /// [`Prepared::on_target`]. Its reader is set up before that, and the topic is not
    /// looked up again when the preparation made sure of it.
    pub(super) fn start(spec: &FlowSpec, topic: &str, prepared: Option<OwnTopicsOnTarget>) -> Self {
        let mut target = client_config(&spec.target);
        target.set("client.id", format!("strait-{}-offset-map", spec.name));
        let topic = topic.to_string();
        let (flow, replication_factor) = (spec.name.clone(), spec.replication_factor);
        let load = std::thread::spawn(move || {
            let mut index = FlowIndex::open(&target, &topic)?;
            let exists = prepared.is_some_and(|p| block_on(p).unwrap_or(false));
            if !exists {
                ensure_compacted_topic(&target, &topic, replication_factor)?;
            }
            index.catch_up()?;
            info!(flow = %flow, topic, segments = index.segment_count(), "offset map loaded");
            Ok(LoadedMap {
                index: Mutex::new(index),
                writer: MapWriter::new(&target, &topic)?,
            })
        });
        Self {
            pending: Mutex::new(Some(load)),
            ready: OnceLock::new(),
        }
    }

    /// The loaded map, waiting for the load if it is still running.
    pub(super) fn get(&self) -> Result<&LoadedMap, ReplicatorError> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(load) = pending.take() {
            let loaded = load.join().map_err(|_| {
                ReplicatorError::Invariant("the thread loading the offset map panicked".into())
            })??;
            let _ = self.ready.set(loaded);
        }
        self.ready.get().ok_or_else(|| {
            ReplicatorError::Invariant(
                "the offset map is unavailable: loading it failed (see the earlier error)".into(),
            )
        })
    }

    pub(super) fn writer(map: Option<&Self>) -> Result<Option<&MapWriter>, ReplicatorError> {
        Ok(map.map(Self::get).transpose()?.map(|m| &m.writer))
    }

    /// The writer if the map was loaded, without waiting for a load still running.
    pub(super) fn loaded_writer(map: Option<&Self>) -> Option<&MapWriter> {
        map.and_then(|m| m.ready.get()).map(|m| &m.writer)
    }
}
