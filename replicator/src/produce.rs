//! Handing a copy to the target producer through a topic handle kept per route.
//!
//! Why this module holds `unsafe`: rust-rdkafka's `BaseProducer::send` names each
//! record's topic, and librdkafka then looks the name up: a `CString` allocated and freed
//! per record, and `rd_kafka_topic_new0` taking the client's write lock (which the
//! producer's broker threads read under) to compare the name with every topic the producer
//! has written to, one `strlen` and `memcmp` each. With 300 target topics a send took
//! 869 ns against 171 ns through a handle, with 1,000 2,636 ns against 185 (500,000 sends
//! to a producer with no broker: the ignored test `send_cost_by_topic_count` below).
//! librdkafka's `rd_kafka_produceva` takes a topic handle (`RD_KAFKA_VTYPE_RKT`), which
//! rust-rdkafka does not expose: one handle per route, made when the route is, costs
//! neither.
//!
//! The unsafe surface is the topic handle's and the header list's life (each owned by one
//! guard that destroys it, or handed to librdkafka exactly when librdkafka takes it) and
//! one call, `rd_kafka_produceva`, whose pointers are valid for its duration: librdkafka
//! copies the payload (`RD_KAFKA_MSG_F_COPY`) and the key before it returns.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_void, CString};
use std::ptr::NonNull;
use std::sync::Arc;

use rdkafka::bindings as rd;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};

/// librdkafka's handle of one target topic, for as long as the producer it belongs to
/// (which it keeps alive: a handle must not outlive its client).
pub(crate) struct TargetTopic<C: ProducerContext> {
    handle: NonNull<rd::rd_kafka_topic_t>,
    producer: Arc<BaseProducer<C>>,
}

// librdkafka's topic handles are reference-counted and safe to use from any thread.
unsafe impl<C: ProducerContext> Send for TargetTopic<C> {}
unsafe impl<C: ProducerContext> Sync for TargetTopic<C> {}

impl<C: ProducerContext<DeliveryOpaque = usize>> TargetTopic<C> {
    /// The handle of `topic` on `producer`'s cluster. It does not need to exist yet:
    /// librdkafka learns its partitions from metadata, as it would for a name.
    pub(crate) fn new(
        producer: &Arc<BaseProducer<C>>,
        topic: &str,
    ) -> Result<Self, RDKafkaErrorCode> {
        let name = CString::new(topic).map_err(|_| RDKafkaErrorCode::InvalidTopic)?;
        // SAFETY: the client is alive (we hold it); the name is copied; a null
        // configuration means the producer's default topic configuration, as for a name.
        let handle = unsafe {
            rd::rd_kafka_topic_new(
                producer.client().native_ptr(),
                name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        match NonNull::new(handle) {
            Some(handle) => Ok(Self {
                handle,
                producer: producer.clone(),
            }),
            // SAFETY: reads this thread's last librdkafka error.
            None => Err(unsafe { rd::rd_kafka_last_error() }.into()),
        }
    }

    /// Queues one record for `partition`, as `BaseProducer::send` would with the same
    /// fields: the payload and key are copied, `opaque` comes back in the delivery report,
    /// a `None` timestamp means "now". On success the headers are librdkafka's (`headers`
    /// is emptied); on failure they stay the caller's, to send again (a full queue).
    pub(crate) fn send(
        &self,
        partition: i32,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        timestamp: Option<i64>,
        headers: &mut Option<OutgoingHeaders>,
        opaque: usize,
    ) -> Result<(), RDKafkaErrorCode> {
        let bytes = |b: Option<&[u8]>| match b {
            Some(b) => rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
                ptr: b.as_ptr().cast_mut().cast::<c_void>(),
                size: b.len(),
            },
            None => rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
                ptr: std::ptr::null_mut(),
                size: 0,
            },
        };
        let vu = |vtype, u| rd::rd_kafka_vu_t { vtype, u };
        use rd::rd_kafka_vtype_t as T;
        type U = rd::rd_kafka_vu_s__bindgen_ty_1;
        let fields = [
            vu(
                T::RD_KAFKA_VTYPE_RKT,
                U {
                    rkt: self.handle.as_ptr(),
                },
            ),
            vu(T::RD_KAFKA_VTYPE_PARTITION, U { i32_: partition }),
            vu(
                T::RD_KAFKA_VTYPE_MSGFLAGS,
                U {
                    i: rd::RD_KAFKA_MSG_F_COPY,
                },
            ),
            vu(
                T::RD_KAFKA_VTYPE_VALUE,
                U {
                    mem: bytes(payload),
                },
            ),
            vu(T::RD_KAFKA_VTYPE_KEY, U { mem: bytes(key) }),
            vu(
                T::RD_KAFKA_VTYPE_OPAQUE,
                U {
                    ptr: opaque as *mut c_void,
                },
            ),
            vu(
                T::RD_KAFKA_VTYPE_TIMESTAMP,
                U {
                    i64_: timestamp.unwrap_or(0),
                },
            ),
            vu(
                T::RD_KAFKA_VTYPE_HEADERS,
                U {
                    headers: headers
                        .as_ref()
                        .map_or(std::ptr::null_mut(), |h| h.list.as_ptr()),
                },
            ),
        ];
        // SAFETY: the client and the topic handle are alive (self holds both); every
        // pointer in `fields` is valid until the call returns, and librdkafka copies what
        // it keeps except the header list, which it takes only on success.
        let error = unsafe {
            rd::rd_kafka_produceva(
                self.producer.client().native_ptr(),
                fields.as_ptr(),
                fields.len(),
            )
        };
        if error.is_null() {
            if let Some(sent) = headers.take() {
                std::mem::forget(sent);
            }
            return Ok(());
        }
        // SAFETY: `error` is a live error object that we own and destroy once read.
        let code = unsafe {
            let code = rd::rd_kafka_error_code(error);
            rd::rd_kafka_error_destroy(error);
            code
        };
        Err(code.into())
    }
}

impl<C: ProducerContext> Drop for TargetTopic<C> {
    fn drop(&mut self) {
        // SAFETY: the handle was made by `rd_kafka_topic_new` on this client, which is
        // still alive (the Arc field is dropped after this). Queued records hold their own
        // references to the topic.
        unsafe { rd::rd_kafka_topic_destroy(self.handle.as_ptr()) }
    }
}

/// A header list being built for one copy.
pub(crate) struct OutgoingHeaders {
    list: NonNull<rd::rd_kafka_headers_t>,
}

// Owned by one thread at a time until librdkafka takes it.
unsafe impl Send for OutgoingHeaders {}

impl OutgoingHeaders {
    pub(crate) fn with_capacity(count: usize) -> Self {
        // SAFETY: allocates a new, empty list (librdkafka aborts if it cannot).
        let list = unsafe { rd::rd_kafka_headers_new(count) };
        Self {
            list: NonNull::new(list).expect("rd_kafka_headers_new never returns null"),
        }
    }

    /// Adds a header; a `None` value stays distinct from an empty one. Names are passed
    /// with their length, so they need not be valid C strings.
    pub(crate) fn add(&mut self, name: impl AsRef<[u8]>, value: Option<&[u8]>) {
        let name = name.as_ref();
        let (value, size) = match value {
            // An empty slice's pointer is not null, so an empty value stays empty.
            Some(v) => (v.as_ptr().cast::<c_void>(), v.len() as isize),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: the list is ours and writable (not yet handed over); name and value are
        // copied into it.
        let err = unsafe {
            rd::rd_kafka_header_add(
                self.list.as_ptr(),
                name.as_ptr().cast::<c_char>(),
                name.len() as isize,
                value,
                size,
            )
        };
        // It fails only on a read-only list (one librdkafka produced), never ours.
        debug_assert_eq!(err, rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
    }
}

impl Drop for OutgoingHeaders {
    fn drop(&mut self) {
        // SAFETY: the list is still ours: a sent list is forgotten, never dropped.
        unsafe { rd::rd_kafka_headers_destroy(self.list.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, DeliveryResult, PurgeConfig};
    use rdkafka::{ClientConfig, ClientContext};

    use super::*;

    /// Keeps what each delivery report (here: of a purged record) says.
    #[derive(Default)]
    struct Opaque {
        reports: std::sync::Mutex<Vec<Report>>,
    }
    #[derive(Debug, PartialEq)]
    struct Report {
        opaque: usize,
        topic: String,
        partition: i32,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        timestamp: Option<i64>,
        headers: Vec<(String, Option<Vec<u8>>)>,
    }
    impl ClientContext for Opaque {}
    impl ProducerContext for Opaque {
        type DeliveryOpaque = usize;
        fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
            let msg = match result {
                Ok(msg) | Err((_, msg)) => msg,
            };
            let headers = msg.headers().map_or_else(Vec::new, |h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            });
            self.reports.lock().expect("reports").push(Report {
                opaque,
                topic: msg.topic().to_string(),
                partition: msg.partition(),
                key: msg.key().map(<[u8]>::to_vec),
                payload: msg.payload().map(<[u8]>::to_vec),
                timestamp: msg.timestamp().to_millis(),
                headers,
            });
        }
    }

    /// A producer whose records stay queued, at most `queue_records` of them: no broker
    /// listens on port 1.
    fn unconnected_producer(queue_records: u32) -> Arc<BaseProducer<Opaque>> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("queue.buffering.max.messages", queue_records.to_string())
            .set("queue.buffering.max.kbytes", "4000000")
            .set("message.timeout.ms", "0")
            .set("log_level", "0")
            .create_with_context(Opaque::default())
            .expect("producer");
        Arc::new(producer)
    }

    #[test]
    fn a_record_sent_through_a_handle_is_queued_as_given_with_its_headers_handed_over() {
        let producer = unconnected_producer(10_000_000);
        let topic = TargetTopic::new(&producer, "primary.orders").expect("handle");
        let mut headers = Some(OutgoingHeaders::with_capacity(3));
        if let Some(h) = headers.as_mut() {
            h.add("null", None);
            h.add("empty", Some(b""));
            h.add("null", Some(b"again"));
        }
        topic
            .send(
                3,
                Some(b"k"),
                None,
                Some(1_700_000_000_000),
                &mut headers,
                7,
            )
            .expect("queued");
        assert!(
            headers.is_none(),
            "librdkafka owns the headers of a queued record"
        );
        // The same record through rust-rdkafka's `send`, for comparison.
        let same = OwnedHeaders::new()
            .insert(Header {
                key: "null",
                value: None::<&[u8]>,
            })
            .insert(Header {
                key: "empty",
                value: Some(&b""[..]),
            })
            .insert(Header {
                key: "null",
                value: Some(&b"again"[..]),
            });
        let record = BaseRecord::<[u8], [u8], usize>::with_opaque_to("primary.orders", 8)
            .partition(3)
            .key(&b"k"[..])
            .timestamp(1_700_000_000_000)
            .headers(same);
        producer.send(record).map_err(|(e, _)| e).expect("queued");
        // Purged, the records come back in delivery reports, as librdkafka queued them.
        producer.purge(PurgeConfig::default().queue());
        producer.poll(std::time::Duration::from_millis(100));
        let reports = std::mem::take(&mut *producer.context().reports.lock().expect("reports"));
        let null = |name: &str| (name.to_string(), None);
        let value = |name: &str, v: &[u8]| (name.to_string(), Some(v.to_vec()));
        let expected = |opaque| Report {
            opaque,
            topic: "primary.orders".into(),
            partition: 3,
            key: Some(b"k".to_vec()),
            payload: None,
            // librdkafka reports no timestamp for a record purged before it was sent.
            timestamp: None,
            headers: vec![null("null"), value("empty", b""), value("null", b"again")],
        };
        assert_eq!(reports, [expected(7), expected(8)]);
    }

    #[test]
    fn a_record_refused_for_a_full_queue_keeps_its_headers_for_the_next_try() {
        let producer = unconnected_producer(1);
        let topic = TargetTopic::new(&producer, "primary.orders").expect("handle");
        topic
            .send(0, None, Some(b"first"), None, &mut None, 0)
            .expect("queued");
        let mut headers = Some(OutgoingHeaders::with_capacity(1));
        if let Some(h) = headers.as_mut() {
            h.add("h", Some(b"v"));
        }
        let refused = topic.send(0, None, Some(b"second"), None, &mut headers, 1);
        assert_eq!(refused, Err(RDKafkaErrorCode::QueueFull));
        assert!(
            headers.is_some(),
            "a refused record's headers stay the caller's"
        );
        producer.purge(PurgeConfig::default().queue());
        producer.poll(std::time::Duration::from_millis(100));
        topic
            .send(0, None, Some(b"second"), None, &mut headers, 1)
            .expect("queued once there is room");
        assert!(headers.is_none());
        producer.purge(PurgeConfig::default().queue());
    }

    /// Prints what a send costs by the number of topics the producer writes to, by name
    /// (rust-rdkafka's `send`) and through a handle. A measurement, not a check:
    /// `cargo test --release -p strait-replicator -- --ignored --nocapture send_cost`.
    #[test]
    #[ignore = "prints figures"]
    fn send_cost_by_topic_count() {
        let sends = 500_000;
        let payload = [7u8; 100];
        for count in [1usize, 10, 100, 300, 1000] {
            let names: Vec<String> = (0..count)
                .map(|i| format!("primary.topic-{i:04}"))
                .collect();
            let by_name = unconnected_producer(10_000_000);
            for name in &names {
                let record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(name, 0);
                by_name
                    .send(record.partition(0).payload(&payload[..]))
                    .expect("queued");
            }
            let began = Instant::now();
            for i in 0..sends {
                let record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&names[i % count], 0);
                by_name
                    .send(record.partition(0).payload(&payload[..]))
                    .expect("queued");
            }
            let named = began.elapsed().as_nanos() as f64 / sends as f64;
            by_name.purge(PurgeConfig::default().queue());

            let through_handles = unconnected_producer(10_000_000);
            let handles: Vec<_> = names
                .iter()
                .map(|n| TargetTopic::new(&through_handles, n).expect("handle"))
                .collect();
            let began = Instant::now();
            for i in 0..sends {
                handles[i % count]
                    .send(0, None, Some(&payload), None, &mut None, 0)
                    .expect("queued");
            }
            let handled = began.elapsed().as_nanos() as f64 / sends as f64;
            through_handles.purge(PurgeConfig::default().queue());
            println!(
                "{count} topics: {named:.0} ns per send by name, {handled:.0} ns through a handle"
            );
        }
    }
}
