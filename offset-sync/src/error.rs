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
    /// An admin call rust-rdkafka does not wrap (a group's offsets, topic IDs) failed.
    #[error("{context}: {reason} ({code:?})")]
    Admin {
        context: String,
        code: rdkafka::error::RDKafkaErrorCode,
        reason: String,
    },
    /// A broker refused the client's login; `reason` is librdkafka's, naming the broker.
    #[error("{context}: logging in failed: {reason}")]
    Login { context: String, reason: String },
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

    pub(crate) fn login(context: impl Into<String>, reason: String) -> Self {
        Self::Login {
            context: context.into(),
            reason,
        }
    }

    pub(crate) fn admin(
        context: impl Into<String>,
        source: crate::group_offsets::AdminCallError,
    ) -> Self {
        Self::Admin {
            context: context.into(),
            code: source.code,
            reason: source.reason,
        }
    }
}
