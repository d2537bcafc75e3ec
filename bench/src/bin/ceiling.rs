//! The machine's ceiling: the smallest rdkafka consume→produce loop that copies records
//! faithfully (key, value, timestamp, partition and the source's headers), with the same
//! client settings Strait uses (see replicator/src/pipeline.rs), and none of its
//! bookkeeping: no provenance header, no progress tracking, no commits.
//!
//! Keeping the source's headers costs every record a header parse in librdkafka (a cache
//! miss and a buffer allocation, even for a record without headers), which any replicator
//! that keeps them pays. `CEILING_DROP_HEADERS=1` drops them instead: a loop that is not a
//! faithful copy, measured by the bench as `ceiling-bare` for comparison.
//!
//! ceiling SOURCE_SERVERS TARGET_SERVERS SOURCE_TOPIC TARGET_TOPIC
//! Exits after copying every record that was in SOURCE_TOPIC when it started.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, target, topic, dest] = args.as_slice() else {
        return Err("usage: ceiling SOURCE TARGET SOURCE_TOPIC TARGET_TOPIC".into());
    };
    let mut consumer_config = ClientConfig::new();
    // CEILING_CONSUMER_EXTRA="key=value;key=value" adds consumer settings, for experiments.
    for kv in std::env::var("CEILING_CONSUMER_EXTRA")
        .unwrap_or_default()
        .split(';')
        .filter(|s| !s.is_empty())
    {
        if let Some((k, v)) = kv.split_once('=') {
            consumer_config.set(k, v);
        }
    }
    let consumer: BaseConsumer = consumer_config
        .set("bootstrap.servers", source)
        .set("group.id", format!("ceiling-{}", std::process::id()))
        .set("queued.max.messages.kbytes", "32768")
        .set("fetch.wait.max.ms", "100")
        .set("fetch.queue.backoff.ms", "10")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("statistics.interval.ms", "2000")
        .set("enable.sparse.connections", "false")
        .create()?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", target)
        .set("linger.ms", "10")
        .set("batch.size", "1000000")
        .set("compression.type", "none")
        .set("queue.buffering.max.kbytes", "65536")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.copy.max.bytes", "0")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "0")
        .set("acks", "all")
        .set("enable.gapless.guarantee", "true")
        .set("enable.sparse.connections", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata.topics()[0].partitions().len() as i32;
    // Assigned, not subscribed: no group join and no rebalance that could hand a partition
    // back from its start (with 1,200 partitions one did, and records were copied twice).
    let mut remaining: i64 = 0;
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        remaining += high - low;
        assignment.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let keep_headers = std::env::var_os("CEILING_DROP_HEADERS").is_none();
    // Experiment: CEILING_ADD_HEADER=1 adds a 40-byte header per record (what a provenance
    // header on every copy costs).
    let add_header = std::env::var_os("CEILING_ADD_HEADER").is_some();
    let mut since_poll = 0u32;
    while remaining > 0 {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            serve_delivery_reports(&producer);
            continue;
        };
        let msg = msg?;
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(dest).partition(msg.partition());
        let source_headers = if keep_headers { msg.headers() } else { None };
        let extra = usize::from(add_header);
        let count = source_headers.map_or(0, |h| h.count()) + extra;
        if count > 0 {
            let mut headers = OwnedHeaders::new_with_capacity(count);
            for h in source_headers.iter().flat_map(|h| h.iter()) {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
            let value;
            if add_header {
                value = format!("cluster/{dest}/{}/{}", msg.partition(), msg.offset());
                headers = headers.insert(Header {
                    key: "strait.source",
                    value: Some(value.as_bytes()),
                });
            }
            record = record.headers(headers);
        }
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(v) = msg.payload() {
            record = record.payload(v);
        }
        if let Some(ts) = msg.timestamp().to_millis() {
            record = record.timestamp(ts);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(20));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        remaining -= 1;
        since_poll += 1;
        if since_poll >= 256 {
            serve_delivery_reports(&producer);
            since_poll = 0;
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(())
}

/// Serves every delivery report that has arrived: `poll(Duration::ZERO)` serves at most
/// one event (one produce batch's reports). Same as the replicator's.
fn serve_delivery_reports<C: rdkafka::producer::ProducerContext>(producer: &BaseProducer<C>) {
    for _ in 0..10_000 {
        let before = producer.in_flight_count();
        producer.poll(Duration::ZERO);
        if before == 0 || producer.in_flight_count() >= before {
            return;
        }
    }
}
