use std::time::Duration;

use rdkafka::error::KafkaError;

/// Everything that can go wrong while persisting or translating offsets.
#[derive(Debug, thiserror::Error)]
pub enum OffsetSyncError {
    #[error("{context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },
    #[error("timed out after {0:?} {1}")]
    Timeout(Duration, String),
    #[error("writing to '{topic}' failed: {reason}")]
    Write { topic: String, reason: String },
}

impl OffsetSyncError {
    pub(crate) fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        Self::Kafka {
            context: context.into(),
            source,
        }
    }
}
