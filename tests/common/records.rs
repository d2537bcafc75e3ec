//! Writing records to the test clusters, reading them back, and comparing a copy with its source.

use super::*;

/// Key, value, headers and timestamp: what must survive a copy.
pub type Content = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
    Option<i64>,
);

/// A record as an application sees it. `headers` keeps order and null-vs-empty values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
}

impl Rec {
    pub fn of<M: Message>(m: &M) -> Self {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Rec {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: m.timestamp().to_millis(),
        }
    }

    /// The same record without Strait's provenance and source topic ID headers, for
    /// comparing with the source.
    pub fn without_provenance(&self) -> Content {
        let headers = self
            .headers
            .iter()
            .filter(|(k, _)| k != "strait.source" && k != "strait.source.topic_id")
            .cloned()
            .collect();
        (
            self.key.clone(),
            self.value.clone(),
            headers,
            self.timestamp,
        )
    }

    pub fn content(&self) -> Content {
        (
            self.key.clone(),
            self.value.clone(),
            self.headers.clone(),
            self.timestamp,
        )
    }

    /// Source offset from the provenance header.
    pub fn provenance_offset(&self) -> Option<i64> {
        let (_, v) = self
            .headers
            .iter()
            .rev()
            .find(|(k, _)| k == "strait.source")?;
        parse_provenance_offset(v.as_deref()?)
    }
}

/// The source offset in a provenance header value (`<cluster>/<topic>/<partition>/<offset>`).
fn parse_provenance_offset(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value)
        .ok()?
        .rsplit('/')
        .next()?
        .parse()
        .ok()
}

pub fn producer(servers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// A record to produce.
#[derive(Debug, Clone)]
pub struct Out {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
}

pub fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, out: &Out) {
    let mut headers = OwnedHeaders::new();
    for (k, v) in &out.headers {
        headers = headers.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(out.partition);
    if !out.headers.is_empty() {
        rec = rec.headers(headers);
    }
    if let Some(k) = &out.key {
        rec = rec.key(k);
    }
    if let Some(v) = &out.value {
        rec = rec.payload(v);
    }
    if let Some(ts) = out.timestamp {
        rec = rec.timestamp(ts);
    }
    let mut rec = rec;
    loop {
        match producer.send(rec) {
            Ok(()) => return,
            Err((e, r)) => {
                assert!(
                    matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ),
                    "send: {e}"
                );
                rec = r;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

pub fn flush(producer: &ThreadedProducer<DefaultProducerContext>) {
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// Simple values: `count` records spread round-robin over `partitions`.
pub fn produce_simple(servers: &str, topic: &str, partitions: i32, count: usize, tag: &str) {
    produce_keyed(servers, topic, partitions, count, |i| {
        format!("{tag}-{i}").into_bytes()
    });
}

/// Simple values: `count` records, all in `partition`.
pub fn produce_into(servers: &str, topic: &str, partition: i32, count: usize, tag: &str) {
    let p = producer(servers);
    for i in 0..count {
        let out = Out {
            partition,
            key: None,
            value: Some(format!("{tag}-{i}").into_bytes()),
            headers: vec![],
            timestamp: None,
        };
        send(&p, topic, &out);
    }
    flush(&p);
}

/// `count` records of `size` bytes each (plus a key), spread round-robin over `partitions`.
pub fn produce_sized(servers: &str, topic: &str, partitions: i32, count: usize, size: usize) {
    let value = vec![b'v'; size];
    produce_keyed(servers, topic, partitions, count, |_| value.clone());
}

/// Records keyed `k<i>` with `value(i)`, spread round-robin over `partitions`.
fn produce_keyed(
    servers: &str,
    topic: &str,
    partitions: i32,
    count: usize,
    value: impl Fn(usize) -> Vec<u8>,
) {
    let p = producer(servers);
    for i in 0..count {
        let out = Out {
            partition: (i % partitions as usize) as i32,
            key: Some(format!("k{i}").into_bytes()),
            value: Some(value(i)),
            headers: vec![],
            timestamp: None,
        };
        send(&p, topic, &out);
    }
    flush(&p);
}

/// Every committed record of every partition of `topic`, by partition, in order.
pub fn read_all(servers: &str, topic: &str) -> BTreeMap<i32, Vec<Rec>> {
    let partitions =
        partition_count(servers, topic).unwrap_or_else(|| panic!("{topic} missing on {servers}"));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "strait-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut out = BTreeMap::new();
    let mut open = 0;
    for p in 0..partitions {
        // A topic created moments ago answers "not leader" until its leaders settle.
        let settle_by = Instant::now() + Duration::from_secs(30);
        let (low, high) = loop {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(10)) {
                Err(e)
                    if Instant::now() < settle_by
                        && matches!(
                            e.rdkafka_error_code(),
                            Some(
                                RDKafkaErrorCode::NotLeaderForPartition
                                    | RDKafkaErrorCode::LeaderNotAvailable
                            )
                        ) =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => break other.unwrap(),
            }
        };
        out.insert(p, Vec::new());
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
            open += 1;
        }
    }
    if open == 0 {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut eofs = std::collections::HashSet::new();
    while eofs.len() < open {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                out.get_mut(&m.partition()).unwrap().push(Rec::of(&m));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eofs.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

pub fn count_all(servers: &str, topic: &str) -> usize {
    read_all(servers, topic).values().map(Vec::len).sum()
}

/// Asserts the target has each source record exactly once, same partition, same order and
/// content; every provenance header (anchors only) names the right source offset.
pub fn assert_exact_copy(source_topic: &str, target_topic: &str) {
    assert_copy(source_topic, target_topic, true, true);
}

/// [`assert_exact_copy`] for a flow with `provenance_header = false`: the same records,
/// none of them with a header.
pub fn assert_exact_copy_without_headers(source_topic: &str, target_topic: &str) {
    assert_copy(source_topic, target_topic, false, true);
}

/// [`assert_exact_copy`] for a target topic with `message.timestamp.type=LogAppendTime`,
/// whose broker replaces every copy's timestamp with its own clock.
pub fn assert_exact_copy_but_timestamps(source_topic: &str, target_topic: &str) {
    assert_copy(source_topic, target_topic, true, false);
}

fn assert_copy(source_topic: &str, target_topic: &str, headers: bool, timestamps: bool) {
    let source = read_all(PRIMARY, source_topic);
    let target = read_all(SECONDARY, target_topic);
    for (partition, src) in &source {
        let tgt = target.get(partition).cloned().unwrap_or_default();
        assert_eq!(
            tgt.len(),
            src.len(),
            "{source_topic}[{partition}]: {} source records, {} on target (target watermarks {:?})",
            src.len(),
            tgt.len(),
            watermarks(SECONDARY, target_topic, *partition)
        );
        // Anchors carry the header: the first copy of each partition at least.
        if let Some(first) = tgt.first() {
            assert_eq!(
                first.provenance_offset().is_some(),
                headers,
                "{target_topic}[{partition}]: whether the first copy carries a provenance header"
            );
        }
        for (i, (s, t)) in src.iter().zip(&tgt).enumerate() {
            if let Some(named) = t.provenance_offset() {
                assert_eq!(
                    named, s.offset,
                    "{target_topic}[{partition}] record {i}: provenance"
                );
            }
            let (mut copy, mut original) = (t.without_provenance(), s.content());
            if !timestamps {
                (copy.3, original.3) = (None, None);
            }
            assert_eq!(
                copy, original,
                "{target_topic}[{partition}] record {i} (source offset {})",
                s.offset
            );
        }
    }
}
