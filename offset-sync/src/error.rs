use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

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

    /// The Kafka error code behind this error, if any (for metrics labels).
    pub fn error_code(&self) -> Option<RDKafkaErrorCode> {
        match self {
            Self::Kafka { source, .. } => source.rdkafka_error_code(),
            _ => None,
        }
    }
}
