//! A live producer of sequence-numbered records: the workload every fault scenario runs
//! under. Each record's value starts with `<partition>:<sequence>`, the sequence counting
//! up from 0 in each partition, so that the checker can tell lost, duplicated and
//! reordered copies apart from the records alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// Value bytes per record: a small record, as most event streams carry.
const VALUE_BYTES: usize = 100;
/// Records are sent in ticks of this length, `rate / 100` at a time.
const TICK: Duration = Duration::from_millis(10);

pub struct SequencedLoad {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
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
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", servers)
            .set("client.id", "fault-load")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // Rides out a source leader's election or a node's restart rather than failing
            // records: the checker takes the source as written, whatever it holds.
            .set("message.timeout.ms", "300000")
            .create()
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
            sent
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the producer, waits for its records to be acknowledged, and returns how many
    /// it sent.
    pub fn stop(mut self) -> u64 {
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
