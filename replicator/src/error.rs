use std::time::Duration;

/// Why a flow stopped or restarted.
#[derive(Debug, thiserror::Error)]
pub enum ReplicatorError {
    /// A Kafka client call failed; `context` says which call and where.
    #[error("{context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
        /// Whether trying again later can succeed (broker down, timeout, leader moving).
        retriable: bool,
    },
    /// The target refused a record for a reason that retrying cannot fix. Everything
    /// before `offset` is on the target; nothing from `offset` on was skipped.
    #[error(
        "target refused {source_topic}[{partition}] offset {offset} → {target_topic}: {reason}{hint}"
    )]
    RecordRefused {
        source_topic: String,
        target_topic: String,
        partition: i32,
        offset: i64,
        reason: String,
        /// Extra detail, e.g. which record of a refused batch was too large.
        hint: String,
    },
    /// The target producer stopped for good: librdkafka's fatal error, e.g. a produce
    /// request the broker refused, which the idempotent producer's gap-less guarantee
    /// makes fatal. Every record still queued then fails with a bare "Fatal"; this says
    /// why. Nothing after a partition's last acknowledged record is committed.
    #[error(
        "the producer to '{cluster}' stopped: {reason} ({code}). Records not yet on the \
         target stay uncommitted and are copied after a restart"
    )]
    ProducerStopped {
        cluster: String,
        code: String,
        reason: String,
    },
    /// Another instance took over partitions of this flow and fenced this pipeline's
    /// transactions (`fence = "transactions"`): nothing more it sends is accepted, and
    /// what it had not committed is aborted. The pipeline restarts with a new producer.
    #[error(
        "the producer to '{cluster}' was fenced: another instance took over partitions this \
         one held. Its uncommitted copies are aborted; the pipeline restarts"
    )]
    Fenced { cluster: String },
    /// A source record is itself a copy of a record from the flow's target cluster
    /// (its provenance header says so): copying it would send it back where it came
    /// from, and a flow in the opposite direction would copy it again, for ever. The
    /// record is not copied; nothing from it on is committed.
    #[error(
        "{source_topic}[{partition}] offset {offset} is a copy of {origin_topic}[{origin_partition}] \
         offset {origin_offset} on '{target}', this flow's target: copying it back would loop \
         (two flows with identity naming in opposite directions copy each other's copies for \
         ever). Replicate one direction only, or use naming = \"prefix\""
    )]
    CopyLoop {
        source_topic: String,
        partition: i32,
        offset: i64,
        target: String,
        origin_topic: String,
        origin_partition: i32,
        origin_offset: i64,
    },
    /// Source records not yet copied are gone from the source (`on_data_loss = "stop"`).
    #[error(
        "{topic}[{partition}] source offsets [{from}, {to}) were deleted from the source \
         (retention or DeleteRecords) before they were copied: {lost} record(s) lost. The \
         flow stops so that this is seen; set on_data_loss = \"continue\" on the flow to go \
         on from the log start (the loss stays in /status and strait_records_lost_total)",
        lost = to - from
    )]
    SourceDataLoss {
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
    },
    /// The source partition ends below records already copied from it: its offsets went
    /// back. Stops the flow whatever `on_data_loss` says.
    #[error(
        "{topic}[{partition}] on the source ends at offset {end}, below the {copied_to} \
         records already copied from it: its offsets went back (an unclean leader election, \
         or the topic was deleted and created again). Records the source writes at offsets \
         [{end}, {copied_to}) from now on would be taken for ones already copied, and the \
         offset map could not tell them apart, so the flow stops whatever on_data_loss says \
         (docs/guarantees.md)"
    )]
    SourceOffsetsWentBack {
        topic: String,
        partition: i32,
        end: i64,
        copied_to: i64,
    },
    /// A source partition holds other records than the ones its copies were made of: the
    /// topic was replaced. `evidence` says how that was found (another topic ID, or
    /// another record at a copied offset). Stops copying that topic whatever
    /// `on_data_loss` says, unless `on_source_topic_recreated = "continue"`.
    #[error(
        "{topic}[{partition}] on the source is not the partition this flow copied to \
         {target_topic}: {evidence} (the topic was deleted and created again). Its records \
         below offset {copied_to} would be taken for ones already copied, so copying it \
         stops; set on_source_topic_recreated = \"continue\" on the flow to copy the new \
         topic after the old one's copies (docs/guarantees.md)"
    )]
    SourceTopicReplaced {
        topic: String,
        partition: i32,
        target_topic: String,
        evidence: String,
        copied_to: i64,
    },
    /// The flow stopped copying a source topic (see [`crate::FlowStatus::stopped_topics`]):
    /// the pipeline restarts without it, and the flow's other topics go on.
    #[error(
        "stopped copying source topic {topic} (see /status, stopped_topics); restarting \
         without it"
    )]
    SourceTopicStopped { topic: String },
    /// Source topics the flow stopped copying, reported when it stops: the process exits
    /// with an error so that they are not missed.
    #[error("source topics stopped: {0}")]
    SourceTopicsStopped(String),
    /// A source topic's ID changed while the pipeline copied it: the topic was deleted
    /// and created again. The pipeline restarts, and the assignment compares the IDs
    /// recorded with its copies and commits (the `source_ids` module).
    #[error(
        "source topic {topic} was created again while it was copied (topic ID {was}, now \
         {now}); restarting to check what was copied"
    )]
    SourceTopicIdChanged {
        topic: String,
        was: String,
        now: String,
    },
    /// Copies the target acknowledged are gone from it (`on_data_loss = "stop"`).
    #[error(
        "{target_topic}[{partition}] on '{cluster}' ends at offset {end}, below the {acked} \
         copies it acknowledged: the target lost copies (an unclean leader election, or the \
         topic was deleted and created again). The flow stops so that this is seen; set \
         on_data_loss = \"continue\" on the flow to go on copying after them (the loss stays \
         in /status and strait_records_lost_total)"
    )]
    TargetDataLoss {
        cluster: String,
        target_topic: String,
        partition: i32,
        end: i64,
        acked: i64,
    },
    /// Two flows would write the same target topic.
    #[error("flow '{flow}' would write {cluster}/{topic}, which flow '{owner}' already writes")]
    TargetConflict {
        flow: String,
        owner: String,
        cluster: String,
        topic: String,
    },
    /// Something the replicator relies on did not hold.
    #[error("{0}")]
    Invariant(String),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// Persisting the offset map failed. Retried: a restart reloads the map and rebuilds
    /// what was lost from the copies on the target.
    #[error("offset map: {0}")]
    OffsetMap(#[from] strait_offset_sync::OffsetSyncError),
}

impl ReplicatorError {
    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        let retriable = is_retriable(&source);
        Self::Kafka {
            context: context.into(),
            source,
            retriable,
        }
    }

    /// Says why a connection failed, where the error itself shows only its effect (a
    /// transport failure, a timeout): `failure` is a client's last login failure.
    pub(crate) fn with_login_failure(self, failure: &str) -> Self {
        match self {
            Self::Kafka {
                context,
                source,
                retriable,
            } if !matches!(
                error_code(&source),
                Some(
                    rdkafka::error::RDKafkaErrorCode::Authentication
                        | rdkafka::error::RDKafkaErrorCode::SaslAuthenticationFailed
                )
            ) =>
            {
                Self::Kafka {
                    context: format!("{context} ({failure})"),
                    source,
                    retriable,
                }
            }
            Self::Timeout(after, what) => Self::Timeout(after, format!("{what} ({failure})")),
            other => other,
        }
    }

    /// Retriable errors restart the flow's pipeline after a backoff; the rest stop the flow.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Kafka { retriable, .. } => *retriable,
            Self::Timeout(..)
            | Self::OffsetMap(_)
            | Self::Fenced { .. }
            | Self::SourceTopicIdChanged { .. }
            | Self::SourceTopicStopped { .. } => true,
            Self::RecordRefused { .. }
            | Self::CopyLoop { .. }
            | Self::SourceDataLoss { .. }
            | Self::SourceOffsetsWentBack { .. }
            | Self::SourceTopicReplaced { .. }
            | Self::SourceTopicsStopped(_)
            | Self::TargetDataLoss { .. }
            | Self::ProducerStopped { .. }
            | Self::TargetConflict { .. }
            | Self::Invariant(_) => false,
        }
    }
}

/// The error code, including that of admin operations, which rdkafka's own
/// `rdkafka_error_code()` leaves out.
pub(crate) fn error_code(
    err: &rdkafka::error::KafkaError,
) -> Option<rdkafka::error::RDKafkaErrorCode> {
    match err {
        rdkafka::error::KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    }
}

/// Errors that say "not now" rather than "never".
fn is_retriable(err: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    let Some(code) = error_code(err) else {
        // Client-side problems (bad config, bad argument) do not fix themselves.
        return false;
    };
    !matches!(
        code,
        C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication
            | C::MessageSizeTooLarge
            | C::InvalidRecord
            | C::InvalidConfig
            | C::InvalidArgument
            | C::Fatal
            | C::UnsupportedVersion
            | C::InvalidMessage
    )
}
