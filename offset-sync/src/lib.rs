//! Exact consumer-group offset translation.
//!
//! Every record the replicator copies is acknowledged by the target with the offset it was
//! written at. Those (source offset → target offset) pairs become a per-partition map
//! ([`map`]), persisted as compacted records on the target ([`records`], [`store`]) so it
//! is there when the source is gone. A group's committed source offset is translated with
//! [`OffsetIndex::translate`], a pure function; [`groups`] reads and writes group offsets
//! and checkpoints on real clusters.

mod checkpointer;
mod error;
mod group_offsets;
pub mod groups;
pub mod map;
pub mod records;
mod settling;
pub mod store;
pub mod telemetry;
mod topic_ids;

pub use checkpointer::{
    run_checkpoints, CheckpointSnapshot, CheckpointSpec, CheckpointStatus, GroupSelector,
};
pub use error::OffsetSyncError;
pub use map::{Coverage, Epoch, MapUpdate, OffsetIndex, PartitionOffsetMap, Segment, Translation};
pub use records::{Checkpoint, MapRecord};
pub use settling::{
    is_connection_trouble, is_leader_settling, offsets_learning_partitions, settled_watermarks,
    settling_backoff,
};
pub use store::{
    ensure_compacted_topic, ensure_single_partition_topic, ensure_single_partition_topics,
    log_librdkafka, FlowIndex, MapWriter, SinglePartitionTopic, TopicReader, TopicWriter,
};
pub use topic_ids::{topic_ids, TopicId};
