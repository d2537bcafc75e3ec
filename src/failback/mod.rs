//! `strait failback`: going back to the primary after a failover. `plan` reads what the
//! primary holds that never reached the secondary; `keep` copies those records into side
//! topics on the secondary.

mod back;
mod finish;
mod keep;
mod placement;
mod primary;
mod translate;
mod unshipped;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use strait_offset_sync::groups::GroupClient;
use strait_offset_sync::FlowIndex;
use strait_replicator::{client_config, copies_on_target, plan as topic_plan, FlowSpec, MapEnd};

use self::primary::{rfc3339, PrimaryReader, RangeRecords};
use self::unshipped::{OffsetRange, PrimaryLog, Shipment};
use crate::config::Config;
use crate::progress::OffsetProgress;
use crate::OutputFormat;

pub use self::back::run;
pub use self::finish::finish;
pub use self::keep::{keep, KeepArgs};
pub use self::translate::translate;

pub struct PlanArgs {
    pub flow: String,
    pub output: OutputFormat,
}

#[derive(Serialize)]
struct PlanReport {
    flow: String,
    primary: String,
    secondary: String,
    partitions: Vec<PartitionPlan>,
    /// Records the primary holds that never reached the secondary, in all partitions.
    not_shipped_records: u64,
    /// Members the flow's group has on the primary: a running flow ships these records
    /// itself, after what the applications wrote on the secondary since the failover.
    /// `None` where the primary cannot describe groups.
    flow_members: Option<usize>,
}

#[derive(Serialize)]
struct PartitionPlan {
    topic: String,
    partition: i32,
    secondary_topic: String,
    primary_log: PrimaryLog,
    #[serde(flatten)]
    shipment: Shipment,
    /// The offset on the secondary after its newest copy of a primary record in this
    /// partition (0: it holds none): under `identity` naming, what the applications wrote
    /// on the secondary since the failover begins here, and `failback run` copies back
    /// from here.
    secondary_copies_end: i64,
    /// The records of `not_shipped`, counted.
    not_shipped_records: Option<RangeRecords>,
    /// Whether the secondary holds records that may be copies of some of
    /// `deleted_before_copied`: copies between provenance anchors carry no header and are
    /// named by comparing them with their originals, which are gone. `shipped_through`
    /// is then where the named copies end, and the true end may lie further on, before
    /// the primary's log start.
    deleted_may_include_copies: bool,
}

impl PartitionPlan {
    /// Where the applications' records begin on the secondary, which `failback run` copies
    /// back: after the copies under identity naming (one partition holds both), else where
    /// the reverse flow's map (`reverse`) begins in the applications' own topic.
    fn applications_start(&self, reverse: Option<&strait_offset_sync::OffsetIndex>) -> i64 {
        if self.secondary_topic == self.topic {
            self.secondary_copies_end
        } else {
            reverse.and_then(|m| m.coverage()).map_or(0, |c| c.from)
        }
    }

    fn is_settled(&self) -> bool {
        let s = &self.shipment;
        s.not_shipped.is_none()
            && s.deleted_before_copied.is_none()
            && s.copied_but_gone_from_primary.is_none()
            && s.open_transactions.is_none()
    }
}

/// `strait failback plan`: for each partition the flow copies, what the primary holds
/// past its copy on the secondary. Reads both clusters; writes nothing.
pub fn plan(config: &Config, args: &PlanArgs) -> Result<()> {
    let spec = flow_spec(config, &args.flow)?;
    let report = plan_flow(config, &spec)?;
    if let Some(members) = report.flow_members.filter(|m| *m > 0) {
        eprintln!("warning: {}", still_running(&spec, members));
    }
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print_text(&report),
    }
    Ok(())
}

/// Members of the flow's group on the primary (see [`PlanReport::flow_members`]).
fn flow_members(spec: &FlowSpec) -> Result<Option<usize>> {
    GroupClient::new(&client_config(&spec.source))?
        .members(&spec.group_id)
        .with_context(|| format!("is flow '{}' running", spec.name))
}

fn still_running(spec: &FlowSpec, members: usize) -> String {
    format!(
        "flow '{}' is running: its group '{}' has {members} member(s) on '{}', so it copies \
         the records listed here to '{}' itself, after what the applications wrote there \
         since the failover. Stop every `strait run` with this flow first (the member of \
         a process that died leaves once its session times out)",
        spec.name, spec.group_id, spec.source.name, spec.target.name
    )
}

fn flow_spec(config: &Config, name: &str) -> Result<FlowSpec> {
    let spec = config.mapped_flow_spec(name, "failback")?;
    if spec.two_way {
        // The primary's partitions hold the secondary's records too, which this flow
        // never copies back: they are not records the primary failed to ship.
        bail!(
            "--flow: '{name}' is one of two flows that replicate both ways under the same \
             topic names, whose failback is not done yet"
        );
    }
    Ok(spec)
}

/// Where the flow's copies of each partition end on the secondary, and what the primary
/// holds, without reading the records: the forward flow's map with the copies after it
/// added, and each partition's plan but for `not_shipped_records`.
fn shipped(config: &Config, spec: &FlowSpec) -> Result<(FlowIndex, Vec<PartitionPlan>)> {
    let (primary, secondary) = (&spec.source, &spec.target);
    let flow = &config.flows[&spec.name];
    // The flow's heartbeats are Strait's own records, not the applications': one not
    // copied is nothing to keep.
    let heartbeats = spec.heartbeat.as_ref().map(|h| h.topic.as_str());
    let topics: Vec<_> = topic_plan(spec)
        .with_context(|| format!("listing the topics flow '{}' copies", spec.name))?
        .into_iter()
        .filter(|t| Some(t.source_topic.as_str()) != heartbeats)
        .collect();
    let map_topic = flow.map_topic(&spec.name);
    let mut index = FlowIndex::load(&client_config(secondary), &map_topic)
        .with_context(|| format!("reading the offset map {map_topic} on '{}'", secondary.name))?;
    // Where each partition's copies end: the persisted map, then the copies after it read
    // back from the secondary (the map trails the copies by up to a commit interval, and
    // more after a crash). A partition the map does not cover is read from its start.
    let ends: Vec<MapEnd> = topics
        .iter()
        .flat_map(|t| (0..t.source_partitions).map(move |p| (t.source_topic.as_str(), p)))
        .map(|(topic, partition)| {
            let coverage = index.partition(topic, partition).and_then(|m| m.coverage());
            MapEnd {
                source_topic: topic.to_string(),
                partition,
                target_next: coverage.map_or(0, |c| c.target_next),
                source_next: coverage.map_or(0, |c| c.through),
            }
        })
        .collect();
    let copies = copies_on_target((primary, secondary, &spec.naming), true, &ends)
        .with_context(|| format!("reading the copies on '{}'", secondary.name))?;

    let reader = PrimaryReader::new(primary)?;
    let mut partitions = Vec::with_capacity(ends.len());
    for (end, copies) in ends.iter().zip(copies) {
        let (topic, partition) = (end.source_topic.as_str(), end.partition);
        index.add_copies(topic, partition, &copies.pairs);
        let from_map = index
            .partition(topic, partition)
            .and_then(|m| m.handled_through());
        let from_copies = copies.last().map(|(source, _)| source + 1);
        let shipped_through = from_map.max(from_copies);
        let secondary_copies_end = index
            .partition(topic, partition)
            .and_then(|m| m.last_copy())
            .max(copies.last())
            .map_or(0, |(_, target)| target + 1);
        let primary_log = reader.log(topic, partition)?;
        partitions.push(PartitionPlan {
            topic: topic.to_string(),
            partition,
            secondary_topic: spec.naming.target_topic(&primary.name, topic),
            primary_log,
            shipment: Shipment::new(shipped_through, primary_log),
            secondary_copies_end,
            not_shipped_records: None,
            deleted_may_include_copies: copies.named_from.is_some()
                && shipped_through.is_some_and(|s| s < primary_log.log_start),
        });
    }
    Ok((index, partitions))
}

fn plan_flow(config: &Config, spec: &FlowSpec) -> Result<PlanReport> {
    let (primary, secondary) = (&spec.source, &spec.target);
    let (_, mut partitions) = shipped(config, spec)?;
    let reader = PrimaryReader::new(primary)?;
    let to_read: Vec<(usize, OffsetRange)> = partitions
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.shipment.not_shipped.map(|r| (i, r)))
        .collect();
    let total: i64 = to_read.iter().map(|(_, r)| r.len()).sum();
    let progress = OffsetProgress::new(&format!("failback plan {}", spec.name));
    progress.begin(
        total.unsigned_abs(),
        &format!(
            "reading {total} offsets in {} partition(s) of '{}' never copied to '{}'",
            to_read.len(),
            primary.name,
            secondary.name
        ),
    );
    for (i, range) in to_read {
        let p = &mut partitions[i];
        let mut passed = 0;
        let records = reader.records(&p.topic, p.partition, range, &mut |at| {
            progress.advance((at - passed).unsigned_abs());
            passed = at;
        })?;
        progress.advance((range.len() - passed).unsigned_abs());
        p.not_shipped_records = Some(records);
    }
    let not_shipped_records = partitions
        .iter()
        .filter_map(|p| p.not_shipped_records.map(|r| r.records))
        .sum();
    progress.finish(&format!("{not_shipped_records} records never copied"));
    Ok(PlanReport {
        flow_members: flow_members(spec)?,
        flow: spec.name.clone(),
        primary: primary.name.clone(),
        secondary: secondary.name.clone(),
        partitions,
        not_shipped_records,
    })
}

fn print_text(report: &PlanReport) {
    let (primary, secondary) = (&report.primary, &report.secondary);
    println!(
        "flow {} ({primary} → {secondary}): what '{primary}' holds that never reached '{secondary}'",
        report.flow
    );
    let range = |r: Option<OffsetRange>| r.map(|r| format!("[{}, {})", r.from, r.to));
    let mut rows = Vec::new();
    for p in report.partitions.iter().filter(|p| !p.is_settled()) {
        let s = &p.shipment;
        let records = p.not_shipped_records;
        let written = records
            .and_then(|r| Some((r.first_timestamp_ms?, r.last_timestamp_ms?)))
            .map(|(first, last)| format!("{} … {}", rfc3339(first), rfc3339(last)));
        rows.push([
            format!("{}[{}]", p.topic, p.partition),
            s.shipped_through.map_or("-".into(), |o| o.to_string()),
            p.primary_log.stable_end.to_string(),
            range(s.not_shipped).unwrap_or_else(|| "-".into()),
            records.map_or("0".into(), |r| r.records.to_string()),
            written.unwrap_or_else(|| "-".into()),
        ]);
    }
    let header = [
        "PARTITION",
        "SHIPPED TO",
        "PRIMARY END",
        "NOT SHIPPED",
        "RECORDS",
        "WRITTEN",
    ];
    print_table(&header, &rows);
    for p in &report.partitions {
        let s = &p.shipment;
        let name = format!("{}[{}]", p.topic, p.partition);
        if let Some(r) = s
            .deleted_before_copied
            .filter(|_| p.deleted_may_include_copies)
        {
            println!(
                "  {name}: offsets [{}, {}) were deleted on '{primary}' (retention, or records \
                 deleted by hand) before they could be checked against their copies: \
                 '{secondary}' may hold copies of the first of them (copies between \
                 provenance anchors carry no header), and the rest are on neither cluster",
                r.from, r.to
            );
        } else if let Some(r) = s.deleted_before_copied {
            println!(
                "  {name}: offsets [{}, {}) were deleted on '{primary}' (retention, or records \
                 deleted by hand) before they were copied: they are on neither cluster",
                r.from, r.to
            );
        }
        if let Some(r) = s.copied_but_gone_from_primary {
            println!(
                "  {name}: '{secondary}' holds copies of offsets [{}, {}), which '{primary}' no \
                 longer has (it lost acknowledged records): their only copy is on '{secondary}'",
                r.from, r.to
            );
        }
        if let Some(r) = s.open_transactions {
            println!(
                "  {name}: offsets [{}, {}) are in transactions still open on '{primary}': \
                 run the plan again once they end",
                r.from, r.to
            );
        }
    }
    let affected = report
        .partitions
        .iter()
        .filter(|p| p.not_shipped_records.is_some_and(|r| r.records > 0))
        .count();
    println!(
        "{} records in {affected} of {} partitions never reached '{secondary}'",
        report.not_shipped_records,
        report.partitions.len()
    );
}

fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (cell, w) in cells.iter().zip(widths) {
            let pad = w.saturating_sub(cell.chars().count());
            out.push_str(cell);
            out.push_str(&" ".repeat(pad + 2));
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
