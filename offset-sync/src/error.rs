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
    /// A consumer-group admin call (listing or altering a group's offsets) failed.
    #[error("{context}: {reason} ({code:?})")]
    Group {
        context: String,
        code: rdkafka::error::RDKafkaErrorCode,
        reason: String,
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

    pub(crate) fn group(
        context: impl Into<String>,
        source: crate::group_offsets::AdminCallError,
    ) -> Self {
        Self::Group {
            context: context.into(),
            code: source.code,
            reason: source.reason,
        }
    }
}
