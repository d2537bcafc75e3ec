//! `strait failback finish`: the original direction again. Sets the forward flow's
//! position on the primary, per partition, to right after the reverse flow's last copy
//! back, so that the next `strait run` copies to the secondary only what the applications
//! write on the primary from then on: never the copies back (the secondary holds their
//! originals) and never the records the primary did not ship before the failover (which
//! lie before them, and which `failback plan` listed).
//!
//! It is run once the reverse flow (`strait failback run`) has copied back everything
//! the applications wrote on the secondary and is stopped, and before the forward flow
//! starts. Each refusal names the partition and what to do.

use std::path::Path;

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use strait_offset_sync::groups::GroupClient;
use strait_offset_sync::{OffsetIndex, Translation};
use strait_replicator::{client_config, plan as topic_plan, CommitMetadata};

use super::back::{reverse_config, reverse_index};
use super::primary::PrimaryReader;
use super::{flow_members, flow_spec, print_table, shipped};
use crate::config::Config;

/// What the reverse flow did in one partition, as [`forward_start`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopiedBack {
    /// The end of the applications' partition on the secondary (the reverse flow's
    /// source), `None` if it does not exist.
    pub secondary_end: Option<i64>,
    /// Where the applications' records begin there: where the reverse flow started.
    pub applications_start: i64,
    /// The primary partition's end.
    pub primary_end: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotYet {
    /// The reverse flow has not copied back `[from, to)` of the secondary yet.
    NotCopiedBack { from: i64, to: i64 },
    /// `records` records that are not copies lie between the copies back on the primary:
    /// written there while the reverse flow still copied.
    Interleaved { records: i64 },
}

/// Where the forward flow resumes on the primary: after the reverse flow's last copy
/// back (everything after it was written on the primary since), or, where nothing was
/// copied back, at the primary's end. Refused until the reverse flow has copied back all
/// of the secondary's partition, and where records written on the primary lie between its
/// copies, since some of those would never reach the secondary.
pub(crate) fn forward_start(reverse: Option<&OffsetIndex>, at: CopiedBack) -> Result<i64, NotYet> {
    let handled = reverse
        .and_then(OffsetIndex::handled_through)
        .unwrap_or(at.applications_start);
    if let Some(end) = at.secondary_end.filter(|&end| end > handled) {
        return Err(NotYet::NotCopiedBack {
            from: handled,
            to: end,
        });
    }
    let after_copies = after_copies_back(reverse, at.primary_end);
    match reverse.map_or(0, |r| r.foreign_below(after_copies)) {
        0 => Ok(after_copies),
        records => Err(NotYet::Interleaved { records }),
    }
}

/// The primary offset after the reverse flow's last copy back, or the primary's end where
/// it has no map of the partition.
pub(crate) fn after_copies_back(reverse: Option<&OffsetIndex>, primary_end: i64) -> i64 {
    let Some((reverse, coverage)) = reverse.and_then(|r| Some((r, r.coverage()?))) else {
        return primary_end;
    };
    reverse
        .last_copy()
        .map_or(coverage.target_next, |(_, target)| {
            (target + 1).max(coverage.target_next)
        })
}

/// `strait failback finish --flow FORWARD`.
pub fn finish(path: &Path, forward_name: &str) -> Result<()> {
    let config = Config::load(path)?;
    let forward = flow_spec(&config, forward_name)?;
    let (primary, secondary) = (&forward.source, &forward.target);
    if let Some(members) = flow_members(&forward)?.filter(|m| *m > 0) {
        bail!(
            "flow '{forward_name}' is running (its group '{}' has {members} member(s) on '{}'): \
             it resumes where it stopped, before the copies back, so finish must run before it \
             starts. Stop it, run finish, and start it again",
            forward.group_id,
            primary.name
        );
    }
    let (reverse_config, reverse) = reverse_config(path, forward_name)?;
    let reverse_members = GroupClient::new(&client_config(&reverse.source))?
        .members(&reverse.group_id)
        .with_context(|| format!("is `strait failback run --flow {forward_name}` running"))?;
    if let Some(members) = reverse_members.filter(|m| *m > 0) {
        bail!(
            "`strait failback run --flow {forward_name}` is running (its group '{}' has \
             {members} member(s) on '{}'): stop it once its lag is 0, after the applications \
             stopped writing on '{}'",
            reverse.group_id,
            secondary.name,
            secondary.name
        );
    }
    let index = reverse_index(&reverse_config, &reverse)?;
    let (_, partitions) = shipped(&config, &forward)?;
    // The applications' partitions on the secondary (the reverse flow's sources).
    let applications: Vec<(String, i32)> = topic_plan(&reverse)
        .context("listing the secondary's topics")?
        .into_iter()
        .flat_map(|t| (0..t.source_partitions).map(move |p| (t.source_topic.clone(), p)))
        .collect();
    let secondary_reader = PrimaryReader::new(secondary)?;
    // Where the forward flow's group stands: a partition already past its start (a finish
    // that ran before, then the flow copied on) is left there, so running finish again is
    // safe at any time.
    let wanted: Vec<(String, i32)> = partitions
        .iter()
        .map(|p| (p.topic.clone(), p.partition))
        .collect();
    let forward_committed = GroupClient::new(&client_config(primary))?
        .committed(&forward.group_id, &wanted, &|_| false)
        .with_context(|| {
            format!(
                "reading group '{}''s offsets on '{}'",
                forward.group_id, primary.name
            )
        })?;

    let mut starts = TopicPartitionList::new();
    let mut rows = Vec::new();
    let mut refused = Vec::new();
    for p in &partitions {
        let name = format!("{}[{}]", p.topic, p.partition);
        let reverse_map = index.partition(&p.topic, p.partition);
        let secondary_end = if applications.contains(&(p.topic.clone(), p.partition)) {
            Some(secondary_reader.log(&p.topic, p.partition)?.stable_end)
        } else {
            None
        };
        let applications_start = p.applications_start(reverse_map);
        let at = CopiedBack {
            secondary_end,
            applications_start,
            primary_end: p.primary_log.log_end,
        };
        // A forward flow already past the copies back (a finish before this one, then
        // the flow copied on, which also lengthened the secondary's partition) stays.
        let committed = forward_committed
            .get(&(p.topic.clone(), p.partition))
            .copied();
        if let Some(committed) =
            committed.filter(|&c| c >= after_copies_back(reverse_map, at.primary_end))
        {
            rows.push([
                name,
                "-".into(),
                "-".into(),
                format!("{committed} (already)"),
                "-".into(),
            ]);
            continue;
        }
        let start = match forward_start(reverse_map, at) {
            Ok(start) => start,
            Err(NotYet::NotCopiedBack { from, to }) => {
                refused.push(format!(
                    "{name}: `strait failback run` has not copied back offsets [{from}, {to}) \
                     of '{}' yet: run it until its lag is 0",
                    secondary.name
                ));
                continue;
            }
            Err(NotYet::Interleaved { records }) => {
                refused.push(format!(
                    "{name}: {records} record(s) written on '{}' lie between the copies back \
                     (producers moved back before the copy back ended): the forward flow \
                     cannot start after the copies without leaving them out",
                    primary.name
                ));
                continue;
            }
        };
        let target_next = secondary_reader
            .log(&p.secondary_topic, p.partition)?
            .log_end;
        starts
            .add_partition_offset(&p.topic, p.partition, Offset::Offset(start))
            .context("partition list")?;
        if let Some(mut e) = starts.find_partition(&p.topic, p.partition) {
            e.set_metadata(
                CommitMetadata {
                    target_next: Some(target_next),
                    ..CommitMetadata::default()
                }
                .encode(),
            );
        }
        // The copies back begin where the reverse flow's map places its first record.
        let copied_back_from = reverse_map
            .and_then(|m| match m.translate(applications_start) {
                Translation::Exact(first) => Some(first.min(start)),
                _ => None,
            })
            .unwrap_or(start);
        let range = |from: i64, to: i64| {
            if from < to {
                format!("[{from}, {to})")
            } else {
                "-".into()
            }
        };
        let not_shipped = p
            .shipment
            .not_shipped
            .map_or("-".into(), |r| range(r.from, r.to.min(copied_back_from)));
        rows.push([
            name,
            not_shipped,
            range(copied_back_from, start),
            start.to_string(),
            format!("{}[{}] at {target_next}", p.secondary_topic, p.partition),
        ]);
    }
    if !refused.is_empty() {
        bail!(
            "nothing written; {} partition(s) not ready:\n  {}",
            refused.len(),
            refused.join("\n  ")
        );
    }
    if starts.count() == 0 {
        println!("flow {forward_name}: every partition already resumes after the copies back");
        return Ok(());
    }
    let consumer: BaseConsumer = client_config(primary)
        .set("group.id", &forward.group_id)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a client of the forward flow's group")?;
    consumer
        .commit(&starts, CommitMode::Sync)
        .with_context(|| {
            format!(
                "setting group '{}''s positions on '{}'",
                forward.group_id, primary.name
            )
        })?;
    println!(
        "flow {forward_name} ({} → {}) resumes after the copies back: neither they nor the \
         records never shipped go to '{}'. Start it with `strait run`",
        primary.name, secondary.name, secondary.name
    );
    print_table(
        &[
            "PARTITION",
            "NEVER SHIPPED",
            "COPIED BACK",
            "RESUMES AT",
            "NEXT COPY TO",
        ],
        &rows,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_offset_sync::PartitionOffsetMap;

    /// The reverse flow started at secondary offset 100 with the primary at 130, and
    /// copied `copies` (secondary offset, primary offset).
    fn reverse(copies: &[(i64, i64)], handled: i64) -> OffsetIndex {
        let mut map = PartitionOffsetMap::default();
        map.start_at(100, 130);
        for &(source, target) in copies {
            map.record(source, target);
        }
        map.advance_through(handled);
        let mut index = OffsetIndex::default();
        for u in map.take_updates() {
            index.apply(u);
        }
        index
    }

    fn at(secondary_end: i64, primary_end: i64) -> CopiedBack {
        CopiedBack {
            secondary_end: Some(secondary_end),
            applications_start: 100,
            primary_end,
        }
    }

    #[test]
    fn the_forward_flow_resumes_after_the_last_copy_back() {
        let copies: Vec<(i64, i64)> = (100..150).map(|o| (o, o + 30)).collect();
        let index = reverse(&copies, 150);
        // Producers on the primary since wrote 180..200: those are copied forward.
        assert_eq!(forward_start(Some(&index), at(150, 200)), Ok(180));
    }

    #[test]
    fn nothing_copied_back_resumes_at_the_primarys_end() {
        let index = reverse(&[], 100);
        assert_eq!(forward_start(Some(&index), at(100, 130)), Ok(130));
        let none = CopiedBack {
            secondary_end: None,
            applications_start: 0,
            primary_end: 130,
        };
        assert_eq!(forward_start(None, none), Ok(130));
    }

    #[test]
    fn the_copy_back_must_have_reached_the_secondarys_end() {
        let copies: Vec<(i64, i64)> = (100..140).map(|o| (o, o + 30)).collect();
        let index = reverse(&copies, 140);
        assert_eq!(
            forward_start(Some(&index), at(150, 170)),
            Err(NotYet::NotCopiedBack { from: 140, to: 150 })
        );
        // Never started in a partition holding applications' records.
        assert_eq!(
            forward_start(None, at(150, 130)),
            Err(NotYet::NotCopiedBack { from: 100, to: 150 })
        );
    }

    #[test]
    fn records_written_between_the_copies_back_are_refused() {
        // Two producer records landed at 150 and 151, between copies.
        let copies: Vec<(i64, i64)> = (100..150)
            .map(|o| (o, if o < 120 { o + 30 } else { o + 32 }))
            .collect();
        let index = reverse(&copies, 150);
        assert_eq!(
            forward_start(Some(&index), at(150, 182)),
            Err(NotYet::Interleaved { records: 2 })
        );
    }
}
