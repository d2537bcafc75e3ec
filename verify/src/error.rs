use std::time::Duration;

use rdkafka::error::KafkaError;

/// Why a verification could not run to its end. A copy that differs from its source is
/// not an error: it is a result ([`crate::Mismatch`]).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },
    #[error("reading the offset map: {0}")]
    OffsetMap(#[from] strait_offset_sync::OffsetSyncError),
    #[error("reading the newest copies back from the target: {0}")]
    NewestCopies(#[from] strait_replicator::ReplicatorError),
    #[error("no progress for {0:?} while reading {1}")]
    Stalled(Duration, String),
}

impl VerifyError {
    pub(crate) fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        Self::Kafka {
            context: context.into(),
            source,
        }
    }
}
