//! Failover exactness: consumer groups stopped at random points on the primary, and what
//! each would re-read or miss after resuming on the secondary from the offsets the
//! replicator wrote there.
//!
//! The backlog has no offset gaps (no transactions, no compaction) and every run copies it
//! into a fresh topic, so a source record and its copy have the same offset: a group that
//! committed C on the primary and finds T on the secondary re-reads C − T records when
//! T < C and misses T − C records when T > C. A group with no offset on the secondary
//! after the wait is reported as not synced: it would start wherever its
//! `auto.offset.reset` says.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::{admin, Result, PRIMARY, SECONDARY};

pub const GROUPS: usize = 10;
/// Longest wait for the replicator's group offsets after the copy is complete.
const SYNC_WAIT: Duration = Duration::from_secs(90);
/// Offsets unchanged for this long count as final.
const SETTLED: Duration = Duration::from_secs(6);

/// Committed source offsets: group → partition → next offset to read.
pub type Points = BTreeMap<String, BTreeMap<i32, i64>>;

#[derive(Clone, Debug)]
pub struct GroupOutcome {
    pub group: String,
    pub reread: i64,
    pub missed: i64,
    /// Partitions with no committed offset on the secondary.
    pub unsynced: usize,
}

pub fn group_name(g: usize) -> String {
    format!("bench-failover-{g}")
}

/// Commits `GROUPS` groups on the primary: the first caught up (at the end of every
/// partition), the others at random points (a fixed seed, so every run and system faces
/// the same points).
pub fn stop_groups(topic: &str, partitions: i32) -> Result<Points> {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", PRIMARY)
        .create()?;
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        ends.insert(
            p,
            probe.fetch_watermarks(topic, p, Duration::from_secs(10))?.1,
        );
    }
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut points = Points::new();
    for g in 0..GROUPS {
        let group = group_name(g);
        let mut tpl = TopicPartitionList::new();
        let mut at = BTreeMap::new();
        for (&p, &end) in &ends {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let offset = if g == 0 {
                end
            } else {
                (x % (end as u64 + 1)) as i64
            };
            tpl.add_partition_offset(topic, p, Offset::Offset(offset))?;
            at.insert(p, offset);
        }
        let committer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", PRIMARY)
            .set("group.id", &group)
            .create()?;
        committer.commit(&tpl, CommitMode::Sync)?;
        points.insert(group, at);
    }
    Ok(points)
}

/// With the replicator still running and the copy complete: waits until the groups'
/// offsets on the secondary (on `target_topic`) have settled, then compares them with
/// the points the groups stopped at.
pub fn outcomes(points: &Points, target_topic: &str) -> Result<Vec<GroupOutcome>> {
    let started = Instant::now();
    let mut last = BTreeMap::new();
    let mut settled_since = Instant::now();
    loop {
        let now = read_target(points, target_topic)?;
        if now != last {
            last = now;
            settled_since = Instant::now();
        }
        let all_synced = points
            .iter()
            .all(|(group, at)| last.get(group).is_some_and(|m| m.len() == at.len()));
        let settled = settled_since.elapsed() >= SETTLED;
        if (all_synced && settled) || started.elapsed() >= SYNC_WAIT {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(points
        .iter()
        .map(|(group, at)| {
            let synced = last.get(group);
            let mut outcome = GroupOutcome {
                group: group.clone(),
                reread: 0,
                missed: 0,
                unsynced: 0,
            };
            for (p, &committed) in at {
                match synced.and_then(|s| s.get(p)) {
                    Some(&t) if t < committed => outcome.reread += committed - t,
                    Some(&t) => outcome.missed += t - committed,
                    None => outcome.unsynced += 1,
                }
            }
            outcome
        })
        .collect())
}

/// group → partition → committed offset on the secondary, for partitions that have one.
fn read_target(points: &Points, topic: &str) -> Result<BTreeMap<String, BTreeMap<i32, i64>>> {
    let mut out = BTreeMap::new();
    for (group, at) in points {
        let reader: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", SECONDARY)
            .set("group.id", group)
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for &p in at.keys() {
            tpl.add_partition(topic, p);
        }
        let committed = reader.committed_offsets(tpl, Duration::from_secs(10))?;
        let offsets = committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect();
        out.insert(group.clone(), offsets);
    }
    Ok(out)
}

/// Removes the groups from the secondary, so the next run starts without them.
pub fn forget_on_target(points: &Points) -> Result<()> {
    let names: Vec<&str> = points.keys().map(String::as_str).collect();
    // A group the replicator never wrote does not exist; that is fine.
    let _ = block_on(admin(SECONDARY)?.delete_groups(&names, &AdminOptions::new()))?;
    Ok(())
}

/// Removes the groups from the primary at the end of the benchmark.
pub fn forget_on_source(points: &Points) -> Result<()> {
    let names: Vec<&str> = points.keys().map(String::as_str).collect();
    let _ = block_on(admin(PRIMARY)?.delete_groups(&names, &AdminOptions::new()))?;
    Ok(())
}
