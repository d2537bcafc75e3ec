//! The independent checker: reads the source and the target with plain Kafka consumers
//! and decides from the records alone (their `<partition>:<sequence>` values, see
//! `load.rs`) whether the copy is exact. It never asks Strait, and reads no header Strait
//! writes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::load::sequence_of;

/// One partition's records in log order: (offset, sequence), `None` for a record the
/// load did not write.
pub type Log = Vec<(i64, Option<u64>)>;

/// Reads every partition of `topic` from its log start to its end as of now.
pub fn read_logs(servers: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Log> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        // Named but never joined or committed to: rdkafka's assign() wants a group id.
        .set("group.id", "fault-checker")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // What an application reading the target sees. A fenced flow's aborted attempts
        // must not show there; an unfenced flow writes no transactions, so for it this
        // hides nothing.
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("watermarks of {topic}[{p}] on {servers}: {e}"));
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut logs: BTreeMap<i32, Log> = (0..partitions).map(|p| (p, Vec::new())).collect();
    let mut next: HashMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (0..partitions).any(|p| next[&p] < ends[&p]) {
        assert!(
            Instant::now() < deadline,
            "reading {topic} on {servers}: stuck at {next:?} of {ends:?}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if m.offset() >= ends[&m.partition()] {
                    continue;
                }
                next.insert(m.partition(), m.offset() + 1);
                let seq = m
                    .payload()
                    .and_then(sequence_of)
                    .filter(|(p, _)| *p == m.partition())
                    .map(|(_, seq)| seq);
                logs.get_mut(&m.partition())
                    .unwrap()
                    .push((m.offset(), seq));
            }
            Some(Err(e)) => eprintln!("checker reading {topic} on {servers}: {e}"),
            None => {
                // The range may end in transaction markers, which are never delivered.
                if let Ok(positions) = consumer.position() {
                    for e in positions.elements() {
                        if let Offset::Offset(o) = e.offset() {
                            let at = next.get_mut(&e.partition()).unwrap();
                            *at = (*at).max(o);
                        }
                    }
                }
            }
        }
    }
    logs
}

/// What the checker found in one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    pub source_records: usize,
    pub target_records: usize,
    /// Source records with no copy.
    pub lost: usize,
    /// Copies beyond the first of a source record.
    pub duplicated: usize,
    /// Copies that come after the copy of a later source record.
    pub out_of_order: usize,
    /// Target records that are no source record's copy.
    pub foreign: usize,
}

impl PartitionReport {
    pub fn exact(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0 && self.foreign == 0
    }
}

/// Compares a target partition with its source partition, by sequence number.
pub fn compare(source: &Log, target: &Log) -> PartitionReport {
    let written: HashMap<u64, usize> = source
        .iter()
        .filter_map(|(_, seq)| *seq)
        .enumerate()
        .map(|(position, seq)| (seq, position))
        .collect();
    let mut copies: HashMap<u64, usize> = HashMap::new();
    let mut report = PartitionReport {
        source_records: source.len(),
        target_records: target.len(),
        ..Default::default()
    };
    let mut furthest: Option<usize> = None;
    for (_, seq) in target {
        let Some(position) = seq.and_then(|s| written.get(&s).copied()) else {
            report.foreign += 1;
            continue;
        };
        let seen = copies.entry(seq.unwrap()).or_default();
        *seen += 1;
        if *seen > 1 {
            report.duplicated += 1;
            continue;
        }
        if furthest.is_some_and(|f| position < f) {
            report.out_of_order += 1;
        }
        furthest = Some(furthest.map_or(position, |f| f.max(position)));
    }
    report.lost = written.len() - copies.len();
    report
}

/// Every partition's report, and the scenario's figures, printed as one table.
pub struct Report {
    pub scenario: String,
    pub partitions: BTreeMap<i32, PartitionReport>,
    /// From the end of the last fault to the target holding every source record.
    pub recovery: Duration,
    /// Pipeline restarts logged by all instances together, one log line each.
    pub restarts: Vec<String>,
}

impl Report {
    pub fn check(scenario: &str, source: &str, target: &str, topic: &str, partitions: i32) -> Self {
        let sources = read_logs(source, topic, partitions);
        let targets = read_logs(target, topic, partitions);
        Self {
            scenario: scenario.to_string(),
            partitions: sources
                .iter()
                .map(|(p, log)| (*p, compare(log, &targets[p])))
                .collect(),
            recovery: Duration::ZERO,
            restarts: Vec::new(),
        }
    }

    pub fn total(&self) -> PartitionReport {
        let mut sum = PartitionReport::default();
        for r in self.partitions.values() {
            sum.source_records += r.source_records;
            sum.target_records += r.target_records;
            sum.lost += r.lost;
            sum.duplicated += r.duplicated;
            sum.out_of_order += r.out_of_order;
            sum.foreign += r.foreign;
        }
        sum
    }

    pub fn assert_exact(&self) {
        assert!(
            self.partitions.values().all(PartitionReport::exact),
            "the copy is not exact:\n{self}"
        );
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scenario {}", self.scenario)?;
        writeln!(
            f,
            "| partition | source | target | lost | duplicated | out of order | foreign |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|")?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, r: &PartitionReport| {
            writeln!(
                f,
                "| {name} | {} | {} | {} | {} | {} | {} |",
                r.source_records, r.target_records, r.lost, r.duplicated, r.out_of_order, r.foreign
            )
        };
        for (p, r) in &self.partitions {
            if !r.exact() {
                row(f, &p.to_string(), r)?;
            }
        }
        row(f, "all", &self.total())?;
        writeln!(
            f,
            "recovered {:.1} s after the last fault; {} pipeline restarts",
            self.recovery.as_secs_f64(),
            self.restarts.len()
        )?;
        for line in &self.restarts {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

#[test]
fn compare_counts_each_kind_of_error() {
    let log = |seqs: &[Option<u64>]| -> Log {
        seqs.iter()
            .enumerate()
            .map(|(o, s)| (o as i64, *s))
            .collect()
    };
    let source = log(&[Some(0), Some(1), Some(2), Some(3), Some(4)]);
    assert!(compare(&source, &source).exact());
    let target = log(&[Some(0), Some(2), Some(1), Some(2), None, Some(9)]);
    let r = compare(&source, &target);
    assert_eq!(
        (r.lost, r.duplicated, r.out_of_order, r.foreign),
        (2, 1, 1, 2),
        "{r:?}"
    );
}
