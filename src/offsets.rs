//! `strait offsets translate`: a group's committed source offsets, translated exactly to
//! the target with the flow's offset map, and optionally written to the target group.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use strait_offset_sync::groups::{self, GroupClient, Offsets, PartitionResult};
use strait_offset_sync::FlowIndex;
use strait_replicator::{client_config, copies_on_target, FlowSpec, MapEnd};

use crate::config::Config;
use crate::OutputFormat;

/// What to translate, and whether to write it: `offsets translate` and `failback
/// translate` take the same arguments.
#[derive(clap::Args)]
pub struct TranslateArgs {
    /// The flow (for `failback translate`, the one from the primary to the secondary).
    #[arg(long)]
    pub flow: String,
    #[arg(long)]
    pub group: String,
    /// Write the translated offsets to the same group on the cluster translated to
    /// (refused while the group has members there, and for partitions where it would move
    /// backwards).
    #[arg(long)]
    pub apply: bool,
    /// With --apply: also move partitions backwards.
    #[arg(long, requires = "apply")]
    pub force: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Serialize)]
pub(crate) struct Report<'a> {
    pub flow: &'a str,
    pub group: &'a str,
    /// "source" when the committed offsets were read from the source cluster,
    /// "checkpoints" when the source was unreachable and the last checkpoints were used.
    pub offsets_from: &'static str,
    pub applied: bool,
    pub partitions: &'a [PartitionResult],
}

pub fn translate(config: &Config, args: &TranslateArgs) -> Result<()> {
    let translated = translate_group(config, &args.flow, &args.group, true)?;
    let (spec, offsets_from) = (&translated.spec, translated.offsets_from);
    if translated.committed_anywhere == 0 {
        bail!(
            "group '{}' has no committed offsets on the topics of flow '{}' (read from the {offsets_from})",
            args.group,
            args.flow
        );
    }
    let mut results = translated.results;
    if args.apply {
        apply(spec, &args.group, &mut results, args.force)?;
    }
    let report = Report {
        flow: &args.flow,
        group: &args.group,
        offsets_from,
        applied: args.apply,
        partitions: &results,
    };
    print_report(&report, spec, args.output)
}

/// Prints a translation (`output`), and fails if any partition is not in the state asked
/// for.
pub(crate) fn print_report(
    report: &Report<'_>,
    spec: &FlowSpec,
    output: OutputFormat,
) -> Result<()> {
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(report)?),
        OutputFormat::Text => print_text(report, &spec.source.name, &spec.target.name),
    }
    let failed: Vec<String> = report
        .partitions
        .iter()
        .filter(|r| !r.outcome.is_ok())
        .map(|r| format!("{}[{}]", r.topic, r.partition))
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} partition(s) not {}: {}",
            failed.len(),
            if report.applied {
                "applied"
            } else {
                "translated"
            },
            failed.join(", ")
        );
    }
    Ok(())
}

/// A group's committed source offsets, translated with the flow's offset map.
pub struct Translated {
    pub spec: FlowSpec,
    /// "source", or "checkpoints" when the source was unreachable.
    pub offsets_from: &'static str,
    /// Partitions with a commit.
    pub committed_anywhere: usize,
    pub results: Vec<PartitionResult>,
}

/// Translates `group`'s committed offsets for `flow` exactly. With `allow_checkpoints`,
/// an unreachable source falls back to the flow's last checkpoints.
pub fn translate_group(
    config: &Config,
    flow_name: &str,
    group: &str,
    allow_checkpoints: bool,
) -> Result<Translated> {
    let spec = config.mapped_flow_spec(flow_name, "translation")?;
    let flow = &config.flows[flow_name];
    if spec.two_way {
        bail!(
            "--flow: '{flow_name}' is one of two flows that replicate both ways under the same \
             topic names, whose groups cannot be translated yet: a group's position on one \
             cluster covers records of both, which lie in another order on the other"
        );
    }
    let (source, target) = (client_config(&spec.source), client_config(&spec.target));
    let map_topic = flow.map_topic(flow_name);

    let mut index = FlowIndex::load(&target, &map_topic).with_context(|| {
        format!(
            "reading the offset map {map_topic} on '{}'",
            spec.target.name
        )
    })?;
    if index.partitions().next().is_none() {
        bail!(
            "the offset map {map_topic} on '{}' is empty: has `strait run` replicated flow '{flow_name}' yet?",
            spec.target.name,
        );
    }
    let partitions: Vec<(String, i32)> = index
        .partitions()
        .map(|(t, p, _)| (t.to_string(), p))
        .collect();
    let (committed, log_starts, offsets_from) =
        match source_offsets(&source, group, &partitions, &spec) {
            Ok((committed, log_starts)) => (committed, log_starts, "source"),
            Err(e) if allow_checkpoints => {
                eprintln!(
                    "source cluster '{}' unreachable ({}); using the last checkpoints on '{}'",
                    spec.source.name,
                    crate::error_text(&e),
                    spec.target.name
                );
                let checkpoint_topic = flow.checkpoint_topic(flow_name);
                let checkpoints = groups::load_checkpoints(&target, &checkpoint_topic)
                    .with_context(|| format!("reading checkpoints from {checkpoint_topic}"))?;
                let committed: Offsets = checkpoints
                    .into_values()
                    .filter(|c| c.group == group)
                    .map(|c| ((c.topic, c.partition), c.source_offset))
                    .collect();
                (committed, Offsets::new(), "checkpoints")
            }
            Err(e) => return Err(e),
        };
    // The persisted map may trail the copies by up to a commit interval (or more after a
    // crash): read the copies after it back from the target, so the answer is never
    // based on a map that is behind the data. Copies between provenance anchors are
    // checked against the source; with the source down, the read stops at the first one.
    // Only the partitions the group committed on need an answer.
    let source_reachable = offsets_from == "source";
    let ends: Vec<MapEnd> = index
        .partitions()
        .filter(|(t, p, _)| committed.contains_key(&(t.to_string(), *p)))
        .filter_map(|(t, p, m)| {
            m.coverage().map(|c| MapEnd {
                source_topic: t.to_string(),
                partition: p,
                target_next: c.target_next,
                source_next: c.through,
            })
        })
        .collect();
    let copies = copies_on_target(
        (&spec.source, &spec.target, &spec.naming),
        source_reachable,
        &ends,
    )
    .context("reading the copies after the persisted offset map on the target")?;
    // Copies the scan could not name are of records below the source's log start, and
    // a committed offset below it is translated from the log start (see
    // `groups::translate_group`), so the named copies are all a translation needs.
    for (end, copies) in ends.iter().zip(copies) {
        index.add_copies(&end.source_topic, end.partition, &copies.pairs);
    }

    let rename = |t: &str| spec.naming.target_topic(&spec.source.name, t);
    let results = groups::translate_group(index.partitions(), &committed, &log_starts, &rename);
    Ok(Translated {
        committed_anywhere: committed.len(),
        spec,
        offsets_from,
        results,
    })
}

/// Writes exact translations to the same-named group on the target (see
/// [`groups::apply`] for what is refused).
pub fn apply(
    spec: &FlowSpec,
    group: &str,
    results: &mut [PartitionResult],
    force: bool,
) -> Result<()> {
    let client = GroupClient::new(&client_config(&spec.target))?;
    groups::apply(&client, group, results, force, false).with_context(|| {
        format!(
            "writing offsets of group '{group}' on '{}'",
            spec.target.name
        )
    })
}

fn source_offsets(
    source: &rdkafka::ClientConfig,
    group: &str,
    partitions: &[(String, i32)],
    spec: &FlowSpec,
) -> Result<(Offsets, Offsets)> {
    let client = GroupClient::new(source)?;
    let committed = client.committed(group, partitions, &|topic| spec.selector.selects(topic))?;
    let wanted: Vec<(String, i32)> = committed.keys().cloned().collect();
    let log_starts = client.log_starts(&wanted);
    Ok((committed, log_starts))
}

fn print_text(report: &Report<'_>, source: &str, target: &str) {
    println!(
        "flow {} ({source} → {target}), group {}: committed offsets read from the {}{}",
        report.flow,
        report.group,
        match report.offsets_from {
            "source" => "source cluster",
            _ => "last checkpoints (source unreachable)",
        },
        if report.applied {
            ""
        } else {
            " (dry run: add --apply to write)"
        }
    );
    let rows: Vec<[String; 5]> = report
        .partitions
        .iter()
        .map(|r| {
            let source_offset = match (r.source_offset, r.source_log_start) {
                (Some(c), Some(low)) => format!("{c} (log start {low})"),
                (Some(c), None) => c.to_string(),
                (None, _) => "-".into(),
            };
            let status = r.outcome.label().replace('_', " ");
            let status = match (r.outcome, r.target_committed) {
                (groups::Outcome::WouldRewind | groups::Outcome::CommittedElsewhere, Some(c)) => {
                    format!("{status} (target group at {c}; --force)")
                }
                _ => status,
            };
            [
                format!("{}[{}]", r.topic, r.partition),
                source_offset,
                format!("{}[{}]", r.target_topic, r.partition),
                r.target_offset.map_or("-".into(), |t| t.to_string()),
                status,
            ]
        })
        .collect();
    let header = ["SOURCE", "COMMITTED", "TARGET", "TARGET OFFSET", "STATUS"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
}
