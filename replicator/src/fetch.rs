//! Taking consumed records off librdkafka a batch at a time.
//!
//! Why this module holds `unsafe`: rust-rdkafka's `BaseConsumer::poll` hands over one
//! record per call, and each call costs more than the record's copy needs: librdkafka
//! reads the clock three times (`rd_kafka_app_poll_start`, the timeout, and
//! `rd_kafka_app_polled`), wraps the record in an event, and rust-rdkafka reads the clock
//! again and allocates an `Arc` for that event. In a profile of the backlog benchmark the
//! clock reads alone were 5 % of Strait's samples. librdkafka's
//! `rd_kafka_consume_batch_queue` pays that once per batch, but it serves a rebalance on
//! its queue itself (without rust-rdkafka's rebalance callback, so without Strait's start
//! offsets or its drain before a hand-over). So the records take a queue of their own:
//! each assigned partition's fetch queue is forwarded to a [`FetchQueue`] (before the
//! partition is assigned, see [`FetchQueue::route`]), which holds only records and
//! per-partition consumer errors, and is read in batches; the consumer's own queue keeps
//! the rebalances, commits and errors, and is still polled through rust-rdkafka between
//! batches. rust-rdkafka does the same split for `split_partition_queue`, one queue per
//! partition.
//!
//! The unsafe surface: the queue and the consumer-queue handle (owned here, destroyed in
//! `Drop`, while the consumer they belong to is kept alive by an `Arc`), the records of a
//! batch (owned by [`Fetched`], destroyed with it, and read only while it lives), and the
//! wake-up callback (whose opaque pointer, the queue, outlives its registration: the
//! registration is removed, under the consumer queue's lock that every call of the
//! callback holds, before the queue is destroyed).
#![allow(unsafe_code)]

use std::ffi::{c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;

/// The most records one batch takes: large enough to make the per-batch costs vanish,
/// small enough that the delivery reports and timers served between batches keep flowing.
pub(crate) const BATCH_SIZE: usize = 256;

/// The queue the assigned partitions' records are forwarded to.
pub(crate) struct FetchQueue<C: ConsumerContext> {
    queue: NonNull<rd::rd_kafka_queue_t>,
    /// The consumer's own queue (rebalances, commits, errors), whose first event wakes a
    /// wait on `queue`.
    consumer_queue: NonNull<rd::rd_kafka_queue_t>,
    consumer: Arc<BaseConsumer<C>>,
}

// librdkafka's queues are safe to use from any thread.
unsafe impl<C: ConsumerContext> Send for FetchQueue<C> {}
unsafe impl<C: ConsumerContext> Sync for FetchQueue<C> {}

/// Called by librdkafka (on whichever thread enqueued, under the consumer queue's lock)
/// when the consumer queue goes from empty to not empty: ends a wait in
/// [`FetchQueue::take`], so that a rebalance is served at once even while no records come.
unsafe extern "C" fn wake_fetch_queue(_rk: *mut rd::rd_kafka_t, queue: *mut c_void) {
    // SAFETY: `queue` is the FetchQueue's queue, which outlives this registration.
    unsafe { rd::rd_kafka_queue_yield(queue.cast()) }
}

impl<C: ConsumerContext> FetchQueue<C> {
    /// A queue for `consumer`'s records. `None` if the consumer has no group (no queue of
    /// its own): a flow's consumer always has one.
    pub(crate) fn new(consumer: &Arc<BaseConsumer<C>>) -> Option<Self> {
        let rk = consumer.client().native_ptr();
        // SAFETY: the client is alive (we hold it from here on).
        let consumer_queue = NonNull::new(unsafe { rd::rd_kafka_queue_get_consumer(rk) })?;
        // SAFETY: as above; the new queue is ours to destroy.
        let queue = NonNull::new(unsafe { rd::rd_kafka_queue_new(rk) })
            .expect("rd_kafka_queue_new never returns null");
        // SAFETY: both queues are alive; the registration is removed before `queue` is
        // destroyed (Drop).
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(
                consumer_queue.as_ptr(),
                Some(wake_fetch_queue),
                queue.as_ptr().cast(),
            )
        };
        Some(Self {
            queue,
            consumer_queue,
            consumer: consumer.clone(),
        })
    }

    /// Sends `topic`'s `partition`'s records here from now on. Called before the
    /// partition is assigned, so that none of its records reach the consumer's queue
    /// first; librdkafka keeps a forward set by the application across later assignments.
    /// Returns `false` if librdkafka has no such partition (its records then come through
    /// the consumer's queue, which [`SourceRecord::of`] reads too).
    pub(crate) fn route(&self, topic: &str, partition: i32) -> bool {
        let Ok(name) = CString::new(topic) else {
            return false;
        };
        let rk = self.consumer.client().native_ptr();
        // SAFETY: the client is alive; the partition's queue handle is destroyed right
        // after forwarding (the forward is kept on the partition's queue, not the handle).
        unsafe {
            let partition_queue = rd::rd_kafka_queue_get_partition(rk, name.as_ptr(), partition);
            if partition_queue.is_null() {
                return false;
            }
            rd::rd_kafka_queue_forward(partition_queue, self.queue.as_ptr());
            rd::rd_kafka_queue_destroy(partition_queue);
        }
        true
    }

    /// Takes up to [`BATCH_SIZE`] records (and per-partition consumer errors) that are
    /// ready. If there are none and `wait` is given, waits that long for the first, or
    /// until the consumer's queue has an event to serve.
    pub(crate) fn take(&self, wait: Option<Duration>) -> Fetched<'_> {
        let mut records: Vec<*mut rd::rd_kafka_message_t> = Vec::with_capacity(BATCH_SIZE);
        // SAFETY: the queue is alive; librdkafka writes at most `BATCH_SIZE` pointers into
        // the buffer, each to a record we then own, and says how many.
        let taken = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                0,
                records.as_mut_ptr(),
                BATCH_SIZE,
            )
        };
        if taken > 0 {
            // SAFETY: librdkafka initialised the first `taken` elements.
            unsafe { records.set_len(taken as usize) };
        } else if let Some(wait) = wait {
            // A batch call waits until the batch is full: ask for one record, then come
            // back for the rest without waiting.
            // SAFETY: the consumer queue is alive; its length is read under its lock.
            let events_waiting = unsafe { rd::rd_kafka_queue_length(self.consumer_queue.as_ptr()) };
            if events_waiting == 0 {
                let timeout_ms = wait.as_millis().min(i32::MAX as u128) as i32;
                // SAFETY: as for the batch above, with room for one.
                let taken = unsafe {
                    rd::rd_kafka_consume_batch_queue(
                        self.queue.as_ptr(),
                        timeout_ms,
                        records.as_mut_ptr(),
                        1,
                    )
                };
                if taken > 0 {
                    // SAFETY: librdkafka initialised the first element.
                    unsafe { records.set_len(1) };
                }
            }
        }
        Fetched {
            records,
            _queue: PhantomData,
        }
    }
}

impl<C: ConsumerContext> Drop for FetchQueue<C> {
    fn drop(&mut self) {
        // SAFETY: both queues are ours and alive, as is the consumer (the Arc field is
        // dropped after this). The callback is unregistered first, under the consumer
        // queue's lock, so no call of it can still reach `queue`. Destroying the queue
        // disables it and frees the records still on it; partitions still forwarding here
        // find it disabled and drop their records (none of them was handed over, so none is
        // committed).
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(
                self.consumer_queue.as_ptr(),
                None,
                std::ptr::null_mut(),
            );
            rd::rd_kafka_queue_destroy(self.consumer_queue.as_ptr());
            rd::rd_kafka_queue_destroy(self.queue.as_ptr());
        }
    }
}

/// One batch of taken records, in the order librdkafka handed them over (each partition's
/// in offset order). Dropping it frees them.
pub(crate) struct Fetched<'q> {
    records: Vec<*mut rd::rd_kafka_message_t>,
    _queue: PhantomData<&'q ()>,
}

impl Fetched<'_> {
    /// The records, or for an entry that carries a consumer error (librdkafka reports a
    /// partition's fetch errors in its place), that entry: its error, topic, partition
    /// and offset say what failed where.
    pub(crate) fn records(
        &self,
    ) -> impl Iterator<Item = Result<SourceRecord<'_>, SourceRecord<'_>>> {
        self.records.iter().map(|&ptr| {
            let record = SourceRecord {
                // SAFETY: librdkafka never puts a null pointer in a batch.
                msg: NonNull::new(ptr).expect("a batch holds no null record"),
                _owner: PhantomData,
            };
            match record.error() {
                None => Ok(record),
                Some(_) => Err(record),
            }
        })
    }
}

impl Drop for Fetched<'_> {
    fn drop(&mut self) {
        for &ptr in &self.records {
            // SAFETY: each record is ours, and no `SourceRecord` outlives the batch.
            unsafe { rd::rd_kafka_message_destroy(ptr) }
        }
    }
}

/// A consumed record, read where librdkafka keeps it.
pub(crate) struct SourceRecord<'a> {
    msg: NonNull<rd::rd_kafka_message_t>,
    _owner: PhantomData<&'a ()>,
}

impl<'a> SourceRecord<'a> {
    /// A record that came through rust-rdkafka's `poll` instead of a batch.
    pub(crate) fn of(msg: &'a BorrowedMessage<'_>) -> Self {
        Self {
            msg: NonNull::new(msg.ptr()).expect("a message is never null"),
            _owner: PhantomData,
        }
    }

    fn raw(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: the record lives as long as `'a` (its batch or its BorrowedMessage).
        // librdkafka changes only its private header cache after handing it over.
        unsafe { self.msg.as_ref() }
    }

    /// The consumer error this entry carries instead of a record, if any.
    pub(crate) fn error(&self) -> Option<KafkaError> {
        let err = self.raw().err;
        if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        Some(
            if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF {
                KafkaError::PartitionEOF(self.partition())
            } else {
                KafkaError::MessageConsumption(err.into())
            },
        )
    }

    /// librdkafka's handle of the record's topic, as a number that identifies the topic
    /// for as long as a record or an assigned partition of it exists: never dereferenced.
    pub(crate) fn topic_handle(&self) -> usize {
        self.raw().rkt as usize
    }

    pub(crate) fn topic(&self) -> &'a str {
        // SAFETY: a consumed record's topic handle is alive while the record is, and its
        // name is a NUL-terminated string owned by it.
        let name = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(self.raw().rkt)) };
        // Kafka topic names are ASCII; a name that is not UTF-8 matches no route.
        name.to_str().unwrap_or_default()
    }

    pub(crate) fn partition(&self) -> i32 {
        self.raw().partition
    }

    pub(crate) fn offset(&self) -> i64 {
        self.raw().offset
    }

    pub(crate) fn key(&self) -> Option<&'a [u8]> {
        let raw = self.raw();
        // SAFETY: the key lives as long as the record.
        (!raw.key.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(raw.key.cast::<u8>(), raw.key_len) })
    }

    pub(crate) fn payload(&self) -> Option<&'a [u8]> {
        let raw = self.raw();
        // SAFETY: the payload lives as long as the record.
        (!raw.payload.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(raw.payload.cast::<u8>(), raw.len) })
    }

    /// The record's timestamp (CreateTime or LogAppendTime) in ms, if it has one.
    pub(crate) fn timestamp(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the record is alive.
        let ms = unsafe { rd::rd_kafka_message_timestamp(self.msg.as_ptr(), &mut kind) };
        (ms != -1 && kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE)
            .then_some(ms)
    }

    /// The record's headers, in order; a null value stays distinct from an empty one.
    pub(crate) fn headers(&self) -> SourceHeaders<'a> {
        let mut list = std::ptr::null_mut();
        // SAFETY: the record is alive; librdkafka parses its headers on first use and
        // keeps the list with the record.
        let err = unsafe { rd::rd_kafka_message_headers(self.msg.as_ptr(), &mut list) };
        let list = (err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
            .then(|| NonNull::new(list))
            .flatten();
        SourceHeaders {
            list,
            _owner: PhantomData,
        }
    }
}

/// A consumed record's header list.
pub(crate) struct SourceHeaders<'a> {
    list: Option<NonNull<rd::rd_kafka_headers_t>>,
    _owner: PhantomData<&'a ()>,
}

impl<'a> SourceHeaders<'a> {
    pub(crate) fn count(&self) -> usize {
        // SAFETY: the list lives as long as its record.
        self.list
            .map_or(0, |l| unsafe { rd::rd_kafka_header_cnt(l.as_ptr()) })
    }

    /// Each header's name (bytes, as librdkafka holds it) and value.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + '_ {
        (0..self.count()).filter_map(|idx| {
            let list = self.list?;
            let mut name = std::ptr::null();
            let mut value = std::ptr::null();
            let mut size = 0;
            // SAFETY: idx is below the count; the name and value live as long as the
            // record, the name NUL-terminated.
            unsafe {
                let err = rd::rd_kafka_header_get_all(
                    list.as_ptr(),
                    idx,
                    &mut name,
                    &mut value,
                    &mut size,
                );
                if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                    return None;
                }
                let value = (!value.is_null())
                    .then(|| std::slice::from_raw_parts(value.cast::<u8>(), size));
                Some((CStr::from_ptr(name).to_bytes(), value))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rdkafka::config::RDKafkaLogLevel;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    use rdkafka::{ClientConfig, ClientContext};

    use super::*;

    /// A consumer context that routes every assigned partition to the fetch queue, as the
    /// pipeline's does, and counts assignments.
    #[derive(Default)]
    struct Routing {
        fetch: std::sync::OnceLock<std::sync::Weak<FetchQueue<Routing>>>,
        assignments: std::sync::atomic::AtomicUsize,
    }
    impl ClientContext for Routing {}
    impl ConsumerContext for Routing {
        fn rebalance(
            &self,
            consumer: &BaseConsumer<Self>,
            err: rd::rd_kafka_resp_err_t,
            tpl: &mut TopicPartitionList,
        ) {
            if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
                if let Some(fetch) = self.fetch.get().and_then(std::sync::Weak::upgrade) {
                    for e in tpl.elements() {
                        assert!(fetch.route(e.topic(), e.partition()));
                    }
                }
                consumer.incremental_assign(tpl).expect("assign");
                self.assignments
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            } else {
                consumer.incremental_unassign(tpl).expect("unassign");
            }
        }
    }

    fn consumer(servers: &str) -> Arc<BaseConsumer<Routing>> {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", servers)
            .set("group.id", "fetch-test")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set_log_level(RDKafkaLogLevel::Emerg)
            .create_with_context(Routing::default())
            .expect("consumer");
        Arc::new(consumer)
    }

    /// What a test reads of a record: (partition, offset, key, value, timestamp, headers).
    type Seen = (
        i32,
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<i64>,
        Vec<(Vec<u8>, Option<Vec<u8>>)>,
    );

    fn seen(record: &SourceRecord<'_>) -> Seen {
        (
            record.partition(),
            record.offset(),
            record.key().map(<[u8]>::to_vec),
            record.payload().map(<[u8]>::to_vec),
            record.timestamp(),
            record
                .headers()
                .iter()
                .map(|(n, v)| (n.to_vec(), v.map(<[u8]>::to_vec)))
                .collect(),
        )
    }

    /// Records of routed partitions come through batches, field for field as produced
    /// (a null key, a tombstone, a null header value distinct from an empty one), each
    /// partition in order; none reach the consumer's own queue.
    #[test]
    fn routed_partitions_records_come_through_batches_as_produced() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("orders", 2, 1).expect("topic");
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .expect("producer");
        let mut expected = Vec::new();
        for i in 0..600i64 {
            let partition = (i % 2) as i32;
            let key = (i % 3 != 0).then(|| format!("k{i}").into_bytes());
            let value = (i % 5 != 0).then(|| vec![b'v'; (i % 7) as usize]);
            let headers = match i % 4 {
                0 => vec![],
                1 => vec![(b"null".to_vec(), None)],
                2 => vec![(b"empty".to_vec(), Some(Vec::new()))],
                _ => vec![
                    (b"a".to_vec(), Some(b"1".to_vec())),
                    (b"a".to_vec(), None),
                    (b"b".to_vec(), Some(b"2".to_vec())),
                ],
            };
            let mut record = BaseRecord::<[u8], [u8]>::to("orders")
                .partition(partition)
                .timestamp(1_700_000_000_000 + i);
            if let Some(k) = &key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &value {
                record = record.payload(v.as_slice());
            }
            if !headers.is_empty() {
                let mut list = OwnedHeaders::new();
                for (name, value) in &headers {
                    list = list.insert(Header {
                        key: std::str::from_utf8(name).expect("ascii"),
                        value: value.as_deref(),
                    });
                }
                record = record.headers(list);
            }
            producer.send(record).map_err(|(e, _)| e).expect("queued");
            let offset = i / 2;
            expected.push((
                partition,
                offset,
                key,
                value,
                Some(1_700_000_000_000 + i),
                headers,
            ));
        }
        producer.flush(Duration::from_secs(10)).expect("flushed");

        let consumer = consumer(&cluster.bootstrap_servers());
        let fetch = FetchQueue::new(&consumer).expect("the consumer has a group");
        let mut tpl = TopicPartitionList::new();
        for partition in 0..2 {
            assert!(fetch.route("orders", partition));
            tpl.add_partition_offset("orders", partition, Offset::Beginning)
                .expect("offset");
        }
        consumer.assign(&tpl).expect("assign");

        let mut got = Vec::new();
        let mut largest_batch = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < expected.len() && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::ZERO) {
                panic!("a routed partition's record reached the consumer's queue: {m:?}");
            }
            let batch = fetch.take(Some(Duration::from_millis(100)));
            let records: Vec<Seen> = batch
                .records()
                .map(|r| match r {
                    Ok(record) => seen(&record),
                    Err(failed) => panic!("consumer error {:?}", failed.error()),
                })
                .collect();
            largest_batch = largest_batch.max(records.len());
            got.extend(records);
        }
        assert!(largest_batch <= BATCH_SIZE);
        assert!(largest_batch > 1, "records came one at a time");
        got.sort_by_key(|s| (s.0, s.1));
        expected.sort_by_key(|s| (s.0, s.1));
        assert_eq!(got, expected);
    }

    /// A wait for records ends as soon as the consumer's own queue has an event (here the
    /// group's first assignment), so a rebalance is served at once while no records come.
    #[test]
    fn a_wait_for_records_ends_at_a_consumer_event() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("quiet", 1, 1).expect("topic");
        let consumer = consumer(&cluster.bootstrap_servers());
        let fetch = Arc::new(FetchQueue::new(&consumer).expect("the consumer has a group"));
        let _ = consumer.context().fetch.set(Arc::downgrade(&fetch));
        consumer.subscribe(&["quiet"]).expect("subscribe");
        let began = Instant::now();
        let wait = Duration::from_secs(60);
        let assigned = || {
            consumer
                .context()
                .assignments
                .load(std::sync::atomic::Ordering::SeqCst)
                > 0
        };
        for waits in 0.. {
            // Serves the assignment, once there is one.
            let _ = consumer.poll(Duration::ZERO);
            if assigned() {
                break;
            }
            assert!(
                waits < 5,
                "no assignment after {waits} waits ({:?})",
                began.elapsed()
            );
            let batch = fetch.take(Some(wait));
            assert_eq!(batch.records().count(), 0, "the topic is empty");
        }
        // Without the wake-up the assignment would wait for a whole `wait` to end.
        assert!(
            began.elapsed() < wait,
            "the assignment waited for the wait to end: {:?}",
            began.elapsed()
        );
    }
}
