//! `strait failback keep`: copies the records the primary never shipped into side topics
//! on the secondary, so that none of them is lost when the primary is emptied, rebuilt or
//! made a copy of the secondary again.
//!
//! Each side record is the primary's record (key, value, headers, timestamp, partition)
//! with a provenance header naming its primary offset. A run reads where the side
//! partition's copies end and copies on from there, in transactions: after a SIGKILL the
//! open transaction is aborted when the next run starts (same transactional id), so a
//! run again copies each record exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use strait_offset_sync::settled_watermarks;
use strait_replicator::{client_config, ClusterSpec, FlowSpec, Provenance, PROVENANCE_HEADER};

use super::primary::read_range;
use super::unshipped::OffsetRange;
use super::{flow_members, flow_spec, plan_flow, still_running};
use crate::config::Config;
use crate::progress::OffsetProgress;

pub struct KeepArgs {
    pub flow: String,
    /// Side topics are named `<prefix><primary topic>`; default `<primary>.unshipped.`.
    pub topic_prefix: Option<String>,
    /// Records per transaction: what an interrupted run loses and the next copies again.
    pub records_per_transaction: u64,
}

const TIMEOUT: Duration = Duration::from_secs(30);
/// A commit waits for every record of its transaction to be acknowledged.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(120);

pub fn keep(config: &Config, args: &KeepArgs) -> Result<()> {
    let spec = flow_spec(config, &args.flow)?;
    let (primary, secondary) = (&spec.source, &spec.target);
    let prefix = args
        .topic_prefix
        .clone()
        .unwrap_or_else(|| format!("{}.unshipped.", primary.name));
    // Records the flow copies on its own must not be kept as well.
    if let Some(members) = flow_members(&spec)?.filter(|m| *m > 0) {
        bail!("{}", still_running(&spec, members));
    }
    let plan = plan_flow(config, &spec)?;
    let mut partitions_of: BTreeMap<&str, i32> = BTreeMap::new();
    for p in &plan.partitions {
        let n = partitions_of.entry(&p.topic).or_default();
        *n = (*n).max(p.partition + 1);
    }
    let todo: Vec<(&str, i32, OffsetRange)> = plan
        .partitions
        .iter()
        .filter(|p| p.not_shipped_records.is_some_and(|r| r.records > 0))
        .filter_map(|p| Some((p.topic.as_str(), p.partition, p.shipment.not_shipped?)))
        .collect();
    if todo.is_empty() {
        println!(
            "flow {}: '{}' holds no record that never reached '{}': nothing to keep",
            spec.name, primary.name, secondary.name
        );
        return Ok(());
    }
    let side_topics: BTreeMap<String, i32> = todo
        .iter()
        .map(|(topic, _, _)| (format!("{prefix}{topic}"), partitions_of[topic]))
        .collect();
    ensure_topics(secondary, &side_topics)?;

    let keeper = Keeper::new(&spec, args.records_per_transaction)?;
    let total: i64 = todo.iter().map(|(_, _, r)| r.len()).sum();
    let progress = OffsetProgress::new(&format!("failback keep {}", spec.name));
    progress.begin(
        total.unsigned_abs(),
        &format!(
            "copying {total} offsets in {} partition(s) into topics {prefix}* on '{}'",
            todo.len(),
            secondary.name
        ),
    );
    let mut rows = Vec::new();
    for (topic, partition, range) in todo {
        let side = format!("{prefix}{topic}");
        let kept_before = keeper.kept_through(&side, topic, partition)?;
        let from = kept_before.map_or(range.from, |k| k.clamp(range.from, range.to));
        progress.advance((from - range.from).unsigned_abs());
        let copied = keeper.copy(
            topic,
            partition,
            OffsetRange { from, to: range.to },
            &side,
            &progress,
        )?;
        let what = if from == range.from {
            format!("{copied} records copied")
        } else if from == range.to {
            "all kept by an earlier run".to_string()
        } else {
            format!("{copied} records copied from offset {from} on, the ones before kept by an earlier run")
        };
        rows.push(format!(
            "  {topic}[{partition}] offsets [{}, {}) → {side}[{partition}]: {what}",
            range.from, range.to
        ));
    }
    progress.finish("done");
    println!(
        "flow {}: the records '{}' never shipped are kept on '{}'",
        spec.name, primary.name, secondary.name
    );
    for row in rows {
        println!("{row}");
    }
    Ok(())
}

/// Creates the side topics that do not exist yet, with the primary topic's partition
/// count and the secondary's default replication.
fn ensure_topics(cluster: &ClusterSpec, topics: &BTreeMap<String, i32>) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(cluster)
        .create()
        .with_context(|| format!("creating an admin client for '{}'", cluster.name))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(-1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let results = block_on(admin.create_topics(&new, &options))
        .with_context(|| format!("creating side topics on '{}'", cluster.name))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("creating {topic} on '{}': {code}", cluster.name),
        }
    }
    Ok(())
}

struct Keeper {
    primary: ClusterSpec,
    /// Reads the primary's records.
    reader: BaseConsumer,
    /// Reads where the side partitions' copies end.
    side_reader: BaseConsumer,
    producer: BaseProducer,
    records_per_transaction: u64,
}

impl Keeper {
    fn new(spec: &FlowSpec, records_per_transaction: u64) -> Result<Self> {
        let consumer = |cluster: &ClusterSpec| -> Result<BaseConsumer> {
            client_config(cluster)
                .set("client.id", "strait-failback-keep")
                // librdkafka assigns partitions only to a consumer with a group.id; this
                // one never joins or commits.
                .set("group.id", "strait-failback-keep-unused")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "false")
                .set("isolation.level", "read_committed")
                .set("fetch.wait.max.ms", "10")
                .set("auto.offset.reset", "earliest")
                .create()
                .with_context(|| format!("creating a reader for '{}'", cluster.name))
        };
        let producer: BaseProducer = client_config(&spec.target)
            .set("client.id", "strait-failback-keep")
            // One per flow: a run fences the one before it and aborts its open transaction.
            .set(
                "transactional.id",
                format!("strait-failback-keep-{}", spec.name),
            )
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .with_context(|| format!("creating a producer for '{}'", spec.target.name))?;
        producer.init_transactions(TIMEOUT).with_context(|| {
            format!(
                "starting transactions on '{}' (keeping needs transactions on the secondary)",
                spec.target.name
            )
        })?;
        Ok(Self {
            primary: spec.source.clone(),
            reader: consumer(&spec.source)?,
            side_reader: consumer(&spec.target)?,
            producer,
            records_per_transaction,
        })
    }

    /// The primary offset after the newest record of `topic[partition]` already in the
    /// side partition; `None` if none is there.
    fn kept_through(&self, side: &str, topic: &str, partition: i32) -> Result<Option<i64>> {
        let context = || format!("reading where {side}[{partition}] ends");
        let (low, high) = settled_watermarks(&self.side_reader, side, partition, TIMEOUT)
            .with_context(context)?;
        let mut end = high;
        let mut window = 100;
        // Backwards in growing windows: the newest copies are at the end, after any
        // aborted records and markers.
        while end > low {
            let start = (end - window).max(low);
            let mut newest = None;
            read_range(
                &self.side_reader,
                side,
                partition,
                OffsetRange {
                    from: start,
                    to: end,
                },
                &mut |msg| {
                    if let Some(p) = provenance(msg, &self.primary.name, topic, partition) {
                        newest = Some(p + 1);
                    }
                    Ok(())
                },
            )
            .with_context(context)?;
            if newest.is_some() {
                return Ok(newest);
            }
            end = start;
            window = window.saturating_mul(4);
        }
        Ok(None)
    }

    /// Copies the primary's records in `range` to the same partition of `side`; returns
    /// how many.
    fn copy(
        &self,
        topic: &str,
        partition: i32,
        range: OffsetRange,
        side: &str,
        progress: &OffsetProgress,
    ) -> Result<u64> {
        let context = || {
            format!(
                "copying {topic}[{partition}] offsets [{}, {}) on '{}' to {side}",
                range.from, range.to, self.primary.name
            )
        };
        let mut copied = 0;
        let mut in_transaction = 0;
        let mut passed = range.from;
        let mut value = Vec::new();
        self.producer.begin_transaction().with_context(context)?;
        read_range(&self.reader, topic, partition, range, &mut |msg| {
            Provenance {
                cluster: &self.primary.name,
                topic,
                partition,
                offset: msg.offset(),
            }
            .encode_into(&mut value);
            let mut headers = OwnedHeaders::new();
            if let Some(original) = msg.headers() {
                for h in original.iter() {
                    headers = headers.insert(h);
                }
            }
            headers = headers.insert(Header {
                key: PROVENANCE_HEADER,
                value: Some(&value),
            });
            let mut record = BaseRecord::<[u8], [u8]>::to(side)
                .partition(partition)
                .headers(headers);
            if let Some(key) = msg.key() {
                record = record.key(key);
            }
            if let Some(payload) = msg.payload() {
                record = record.payload(payload);
            }
            if let Some(ts) = msg.timestamp().to_millis() {
                record = record.timestamp(ts);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((e, back))
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                    {
                        self.producer.poll(Duration::from_millis(50));
                        record = back;
                    }
                    Err((e, _)) => return Err(e).with_context(context),
                }
            }
            self.producer.poll(Duration::ZERO);
            copied += 1;
            in_transaction += 1;
            progress.advance((msg.offset() + 1 - passed).unsigned_abs());
            passed = msg.offset() + 1;
            if in_transaction == self.records_per_transaction {
                self.producer
                    .commit_transaction(COMMIT_TIMEOUT)
                    .with_context(context)?;
                self.producer.begin_transaction().with_context(context)?;
                in_transaction = 0;
            }
            Ok(())
        })
        .with_context(context)?;
        self.producer
            .commit_transaction(TIMEOUT)
            .with_context(context)?;
        progress.advance((range.to - passed).unsigned_abs());
        Ok(copied)
    }
}

/// The primary offset a side record was copied from, if it is a copy of
/// `cluster`'s `topic[partition]`.
fn provenance<M: Message>(msg: &M, cluster: &str, topic: &str, partition: i32) -> Option<i64> {
    let headers = msg.headers()?;
    headers
        .iter()
        .filter(|h| h.key == PROVENANCE_HEADER)
        .filter_map(|h| h.value.and_then(Provenance::decode))
        .find(|p| p.cluster == cluster && p.topic == topic && p.partition == partition)
        .map(|p| p.offset)
}
