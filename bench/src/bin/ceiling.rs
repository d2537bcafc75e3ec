//! The machine's ceiling: the smallest rdkafka consume→produce loop that copies records
//! faithfully (key, value, timestamp, partition and the source's headers), with the same
//! client settings Strait uses (see replicator/src/pipeline/clients.rs), and none of its
//! bookkeeping: no provenance header, no progress tracking, no commits.
//!
//! Keeping the source's headers costs every record a header parse in librdkafka (a cache
//! miss and a buffer allocation, even for a record without headers), which any replicator
//! that keeps them pays. `CEILING_DROP_HEADERS=1` drops them instead: a loop that is not a
//! faithful copy, measured by the bench as `ceiling-bare` for comparison.
//!
//! The loop takes records one at a time with rust-rdkafka's `poll`. Strait takes them in
//! batches (replicator/src/fetch.rs), which saves librdkafka's and rust-rdkafka's
//! per-call costs; `CEILING_BATCH=1` does the same here (each partition's records
//! forwarded to a queue of the loop's own, read with `rd_kafka_consume_batch_queue`, up
//! to 256 at a time), measured by the bench as `ceiling-batch`: what Strait costs beyond a
//! loop that consumes the way it does.
//!
//! ceiling SOURCE_SERVERS TARGET_SERVERS SOURCE_TOPIC TARGET_TOPIC
//! Exits after copying every record that was in SOURCE_TOPIC when it started.

// Only the batch mode's queue (`BatchQueue`) and its records are read through librdkafka's
// C API, as in replicator/src/fetch.rs.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::time::Duration;

use rdkafka::bindings as rd;
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
    // Forwarded before the assignment, so that no record reaches the consumer's queue.
    let batches = match std::env::var_os("CEILING_BATCH") {
        Some(_) => Some(BatchQueue::new(&consumer, topic, partitions)?),
        None => None,
    };
    consumer.assign(&assignment)?;
    let keep_headers = std::env::var_os("CEILING_DROP_HEADERS").is_none();
    // Experiment: CEILING_ADD_HEADER=1 adds a 40-byte header per record (what a provenance
    // header on every copy costs).
    let add_header = std::env::var_os("CEILING_ADD_HEADER").is_some();
    if let Some(queue) = batches {
        queue.copy_all(&consumer, &producer, dest, remaining, keep_headers)?;
        producer.flush(Duration::from_secs(120))?;
        return Ok(());
    }
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
        send_waiting_for_room(&producer, record)?;
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

/// `CEILING_BATCH=1`: a queue of the loop's own that every partition's records are
/// forwarded to, read in batches.
struct BatchQueue(*mut rd::rd_kafka_queue_t);

impl BatchQueue {
    fn new(
        consumer: &BaseConsumer,
        topic: &str,
        partitions: i32,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let rk = consumer.client().native_ptr();
        let name = CString::new(topic)?;
        // SAFETY: the client outlives the queue (dropped at the end of main, after it);
        // each partition queue handle is destroyed once forwarded.
        unsafe {
            let queue = Self(rd::rd_kafka_queue_new(rk));
            for partition in 0..partitions {
                let of_partition = rd::rd_kafka_queue_get_partition(rk, name.as_ptr(), partition);
                if of_partition.is_null() {
                    return Err(format!("no queue for {topic}[{partition}]").into());
                }
                rd::rd_kafka_queue_forward(of_partition, queue.0);
                rd::rd_kafka_queue_destroy(of_partition);
            }
            Ok(queue)
        }
    }

    /// Copies `remaining` records, as the per-record loop does, a batch at a time; the
    /// consumer's own queue (statistics only: no group, no rebalance) is polled once a
    /// batch, as Strait does.
    fn copy_all(
        &self,
        consumer: &BaseConsumer,
        producer: &BaseProducer,
        dest: &str,
        mut remaining: i64,
        keep_headers: bool,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let mut batch: Vec<*mut rd::rd_kafka_message_t> = Vec::with_capacity(256);
        while remaining > 0 {
            let _ = consumer.poll(Duration::ZERO);
            // SAFETY: librdkafka writes at most the given count of pointers, each to a
            // record we own until it is destroyed below.
            unsafe {
                let mut taken =
                    rd::rd_kafka_consume_batch_queue(self.0, 0, batch.as_mut_ptr(), 256);
                if taken == 0 {
                    // Waiting for a full batch would wait the whole timeout: one record.
                    taken = rd::rd_kafka_consume_batch_queue(self.0, 100, batch.as_mut_ptr(), 1);
                }
                batch.set_len(taken.max(0) as usize);
            }
            for &msg in &batch {
                // SAFETY: a record of this batch, alive until destroyed after the loop.
                let result = unsafe { copy_one(producer, dest, msg, keep_headers) };
                if let Err(e) = result {
                    for &m in &batch {
                        // SAFETY: as below.
                        unsafe { rd::rd_kafka_message_destroy(m) };
                    }
                    return Err(e);
                }
            }
            remaining -= batch.len() as i64;
            for &msg in &batch {
                // SAFETY: each record is ours and no longer read.
                unsafe { rd::rd_kafka_message_destroy(msg) };
            }
            batch.clear();
            serve_delivery_reports(producer);
        }
        Ok(())
    }
}

impl Drop for BatchQueue {
    fn drop(&mut self) {
        // SAFETY: the queue is ours; the consumer is still alive (see `new`).
        unsafe { rd::rd_kafka_queue_destroy(self.0) }
    }
}

/// Sends a copy of one record taken from a [`BatchQueue`], as the per-record loop does.
///
/// # Safety
/// `msg` must be a live record of the consumer.
unsafe fn copy_one(
    producer: &BaseProducer,
    dest: &str,
    msg: *mut rd::rd_kafka_message_t,
    keep_headers: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let raw = unsafe { &*msg };
    if raw.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Err(format!("consumer error: {:?}", RDKafkaErrorCode::from(raw.err)).into());
    }
    let bytes = |ptr: *mut std::ffi::c_void, len: usize| {
        (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
    };
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(dest).partition(raw.partition);
    let mut list = std::ptr::null_mut();
    let has_headers = keep_headers
        && unsafe { rd::rd_kafka_message_headers(msg, &mut list) }
            == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
    if has_headers {
        let count = unsafe { rd::rd_kafka_header_cnt(list) };
        let mut headers = OwnedHeaders::new_with_capacity(count);
        for idx in 0..count {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
            unsafe { rd::rd_kafka_header_get_all(list, idx, &mut name, &mut value, &mut size) };
            headers = headers.insert(Header {
                key: unsafe { CStr::from_ptr(name) }.to_str()?,
                value: bytes(value.cast_mut(), size),
            });
        }
        record = record.headers(headers);
    }
    if let Some(k) = bytes(raw.key, raw.key_len) {
        record = record.key(k);
    }
    if let Some(v) = bytes(raw.payload, raw.len) {
        record = record.payload(v);
    }
    let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
    let ts = unsafe { rd::rd_kafka_message_timestamp(msg, &mut kind) };
    if ts != -1 {
        record = record.timestamp(ts);
    }
    send_waiting_for_room(producer, record)
}

/// Sends `record`, serving delivery reports while the producer queue is full.
fn send_waiting_for_room(
    producer: &BaseProducer,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), Box<dyn std::error::Error>> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(20));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
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
