//! A live producer of sequence-numbered records: the workload every fault scenario runs
//! under. Each record's value starts with `<partition>:<sequence>`, the sequence counting
//! up from 0 in each partition, so that the checker can tell lost, duplicated and
//! reordered copies apart from the records alone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

/// Value bytes per record: a small record, as most event streams carry.
const VALUE_BYTES: usize = 100;
/// Records are sent in ticks of this length, `rate / 100` at a time.
const TICK: Duration = Duration::from_millis(10);

pub struct SequencedLoad {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Written>>,
}

/// What the load wrote: records the source acknowledged, and records it refused (with
/// the first refusal's reason).
#[derive(Debug, Default)]
pub struct Written {
    pub acked: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
}

#[derive(Default)]
struct Deliveries {
    acked: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_failure.lock().unwrap();
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

impl SequencedLoad {
    /// Writes `rate` records a second, round-robin over `partitions`, until stopped, or
    /// until `max_records` or `max_time` is reached, whichever comes first.
    pub fn start(
        servers: &str,
        topic: &str,
        partitions: i32,
        rate: u64,
        max_records: u64,
        max_time: Duration,
    ) -> Self {
        let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
            .set("bootstrap.servers", servers)
            .set("client.id", "fault-load")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // Rides out a source leader's election or a node's restart rather than failing
            // records: the checker takes the source as written, whatever it holds.
            .set("message.timeout.ms", "300000")
            .create_with_context(Deliveries::default())
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let topic = topic.to_string();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let per_tick = (rate / 100).max(1);
            let mut next_seq = vec![0u64; partitions as usize];
            let padding = "x".repeat(VALUE_BYTES);
            let began = Instant::now();
            let mut sent = 0u64;
            let mut tick = Instant::now();
            while !stopping.load(Ordering::Relaxed)
                && sent < max_records
                && began.elapsed() < max_time
            {
                for _ in 0..per_tick.min(max_records - sent) {
                    let partition = (sent % partitions as u64) as i32;
                    let seq = next_seq[partition as usize];
                    let value = format!("{partition}:{seq}:{padding}");
                    let mut record = BaseRecord::<(), _>::to(&topic)
                        .partition(partition)
                        .payload(&value);
                    // A full queue (the source is electing a leader): wait for room.
                    loop {
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((_, back)) => {
                                record = back;
                                std::thread::sleep(Duration::from_millis(5));
                            }
                        }
                    }
                    next_seq[partition as usize] += 1;
                    sent += 1;
                }
                tick += TICK;
                if let Some(wait) = tick.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            producer.flush(Duration::from_secs(120)).unwrap();
            let deliveries = producer.context();
            let written = Written {
                acked: deliveries.acked.load(Ordering::Relaxed),
                failed: deliveries.failed.load(Ordering::Relaxed),
                first_failure: deliveries.first_failure.lock().unwrap().take(),
            };
            assert_eq!(
                written.acked + written.failed,
                sent,
                "every record reported"
            );
            written
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the producer, waits for every record's delivery report, and says what was
    /// written.
    pub fn stop(mut self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for SequencedLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `<partition>:<sequence>` of a record this load wrote, or `None` for anything else.
pub fn sequence_of(value: &[u8]) -> Option<(i32, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.splitn(3, ':');
    let partition = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some((partition, seq))
}
