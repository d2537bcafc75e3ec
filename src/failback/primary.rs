//! Reads partitions for failback: the primary's log bounds, the records of a range as a
//! `read_committed` consumer reads them, and a range read record by record.

use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use strait_offset_sync::{is_connection_trouble, settled_watermarks};
use strait_replicator::{client_config, ClusterSpec};

use super::unshipped::{OffsetRange, PrimaryLog};

/// How long a read may go without a record or a move of its position before it fails.
const READ_STALL: Duration = Duration::from_secs(30);

/// The records of a range that a consumer reads: transaction markers and aborted
/// records take offsets but are never read, so the count can be below the range's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RangeRecords {
    pub records: u64,
    /// Timestamps (ms since the epoch) of the first and last record read.
    pub first_timestamp_ms: Option<i64>,
    pub last_timestamp_ms: Option<i64>,
}

pub struct PrimaryReader {
    cluster: String,
    /// Reads committed records, and gives the last stable offset as a partition's end.
    committed: BaseConsumer,
    /// Gives the high watermark, past records of open transactions.
    uncommitted: BaseConsumer,
}

impl PrimaryReader {
    pub fn new(primary: &ClusterSpec) -> Result<Self> {
        let consumer = |isolation: &str| -> Result<BaseConsumer> {
            client_config(primary)
                .set("client.id", "strait-failback-plan")
                // librdkafka assigns partitions only to a consumer with a group.id; this
                // one never joins or commits.
                .set("group.id", "strait-failback-plan-unused")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "false")
                .set("isolation.level", isolation)
                .set("fetch.wait.max.ms", "10")
                // Retention may move the log start during a read: read on from there.
                .set("auto.offset.reset", "earliest")
                .create()
                .with_context(|| format!("creating a reader for '{}'", primary.name))
        };
        Ok(Self {
            cluster: primary.name.clone(),
            committed: consumer("read_committed")?,
            uncommitted: consumer("read_uncommitted")?,
        })
    }

    pub fn log(&self, topic: &str, partition: i32) -> Result<PrimaryLog> {
        let context = || {
            format!(
                "reading the log bounds of {topic}[{partition}] on '{}'",
                self.cluster
            )
        };
        let (log_start, stable_end) =
            settled_watermarks(&self.committed, topic, partition, READ_STALL)
                .with_context(context)?;
        let (_, log_end) = settled_watermarks(&self.uncommitted, topic, partition, READ_STALL)
            .with_context(context)?;
        Ok(PrimaryLog {
            log_start,
            stable_end,
            log_end: log_end.max(stable_end),
        })
    }

    /// Reads `range` of the partition and counts its records. `on_progress` gets the
    /// offsets passed so far.
    pub fn records(
        &self,
        topic: &str,
        partition: i32,
        range: OffsetRange,
        on_progress: &mut dyn FnMut(i64),
    ) -> Result<RangeRecords> {
        let mut found = RangeRecords {
            records: 0,
            first_timestamp_ms: None,
            last_timestamp_ms: None,
        };
        read_range(&self.committed, topic, partition, range, &mut |msg| {
            found.records += 1;
            let timestamp = msg.timestamp().to_millis();
            found.first_timestamp_ms = found.first_timestamp_ms.or(timestamp);
            found.last_timestamp_ms = timestamp.or(found.last_timestamp_ms);
            on_progress(msg.offset() + 1 - range.from);
            Ok(())
        })
        .with_context(|| {
            format!(
                "reading {topic}[{partition}] offsets [{}, {}) on '{}'",
                range.from, range.to, self.cluster
            )
        })?;
        Ok(found)
    }
}

/// Reads `range` of a partition with `consumer`, calling `each` for every record it
/// delivers. The position, not the last record, ends the read: the range may end in
/// transaction markers, which are never delivered.
pub fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    range: OffsetRange,
    each: &mut dyn FnMut(&BorrowedMessage<'_>) -> Result<()>,
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(range.from))?;
    consumer.assign(&tpl)?;
    let mut position = range.from;
    let mut last_progress = Instant::now();
    while position < range.to {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) if msg.topic() == topic && msg.partition() == partition => {
                if msg.offset() >= range.to {
                    break;
                }
                position = msg.offset() + 1;
                last_progress = Instant::now();
                each(&msg)?;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) if is_connection_trouble(&e) => {}
            Some(Err(e)) => return Err(e.into()),
            None => {
                // Past markers, which deliver no record.
                let moved = consumer
                    .position()
                    .ok()
                    .and_then(|p| p.find_partition(topic, partition).map(|e| e.offset()));
                if let Some(Offset::Offset(o)) = moved {
                    if o > position {
                        position = o;
                        last_progress = Instant::now();
                    }
                }
            }
        }
        if last_progress.elapsed() > READ_STALL {
            bail!("no progress for {READ_STALL:?} at offset {position}");
        }
    }
    consumer.unassign()?;
    Ok(())
}

/// A timestamp in ms as RFC 3339, for the text report.
pub fn rfc3339(ms: i64) -> String {
    let Ok(ms) = u64::try_from(ms) else {
        return ms.to_string();
    };
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
