//! `strait failback translate`: a consumer group's position on the secondary, translated
//! exactly to the primary (see the `placement` module for where it lands), and with
//! `--apply` written to the same-named group there.
//!
//! It reads the group's commits on the secondary, the forward flow's map and copies (for
//! a group still inside the copies), and the reverse flow's (`strait failback run`) for a
//! group past them. Like `strait offsets translate`, it never guesses: a position the
//! reverse flow has not copied back yet is `pending`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use strait_offset_sync::groups::{GroupClient, Outcome, PartitionResult};
use strait_replicator::client_config;

use super::back::{reverse_config, reverse_index};
use super::placement::{place, OnSecondary, Placement, Runs};
use super::{flow_spec, shipped};
use crate::config::Config;
use crate::offsets::{print_report, Report, TranslateArgs};

pub fn translate(path: &Path, args: &TranslateArgs) -> Result<()> {
    let config = Config::load(path)?;
    let forward = flow_spec(&config, &args.flow)?;
    let (reverse_config, reverse) = reverse_config(path, &args.flow)?;
    let secondary = &forward.target;
    let (forward_index, partitions) = shipped(&config, &forward)?;

    let reverse_index = reverse_index(&reverse_config, &reverse)?;

    // The copies' and the applications' partitions on the secondary: under identity
    // naming the same ones.
    let mut wanted: Vec<(String, i32)> = partitions
        .iter()
        .flat_map(|p| {
            [
                (p.secondary_topic.clone(), p.partition),
                (p.topic.clone(), p.partition),
            ]
        })
        .collect();
    wanted.sort();
    wanted.dedup();
    let committed = GroupClient::new(&client_config(secondary))?
        .committed(&args.group, &wanted, &|_| false)
        .with_context(|| {
            format!(
                "reading group '{}''s offsets on '{}'",
                args.group, secondary.name
            )
        })?;
    if committed.is_empty() {
        bail!(
            "group '{}' has no committed offsets on '{}' on the topics of flow '{}'",
            args.group,
            secondary.name,
            args.flow
        );
    }
    // Topics the group never committed on are left out, as `offsets translate` does.
    let read = |topic: &str| committed.keys().any(|(t, _)| t == topic);
    let mut results: Vec<PartitionResult> = partitions
        .iter()
        .filter(|p| read(&p.secondary_topic) || read(&p.topic))
        .map(|p| {
            let at = OnSecondary {
                copies: committed
                    .get(&(p.secondary_topic.clone(), p.partition))
                    .copied(),
                applications: committed.get(&(p.topic.clone(), p.partition)).copied(),
            };
            let reverse_map = reverse_index.partition(&p.topic, p.partition);
            let runs = Runs {
                copies_end: p.secondary_copies_end,
                applications_start: p.applications_start(reverse_map),
            };
            let forward_map = forward_index.partition(&p.topic, p.partition);
            let placement = place(at, runs, forward_map, reverse_map);
            // The secondary partition the answer comes from.
            let (topic, offset) = match placement {
                Placement::Exact {
                    in_copies: true, ..
                } => (&p.secondary_topic, at.copies),
                _ if at.applications.is_some() => (&p.topic, at.applications),
                _ => (&p.secondary_topic, at.copies),
            };
            let (target_offset, outcome) = match placement {
                Placement::Exact { offset, .. } => (Some(offset), Outcome::Exact),
                Placement::Pending => (None, Outcome::Pending),
                Placement::BeforeMap => (None, Outcome::BeforeMap),
                Placement::NoCommit => (None, Outcome::NoCommit),
                Placement::ReadBoth => (None, Outcome::ReadBoth),
            };
            PartitionResult {
                topic: topic.clone(),
                partition: p.partition,
                source_offset: offset,
                source_log_start: None,
                target_topic: p.topic.clone(),
                target_offset,
                target_committed: None,
                outcome,
            }
        })
        .collect();
    if args.apply {
        // The reverse flow's target is the primary.
        crate::offsets::apply(&reverse, &args.group, &mut results, args.force)?;
    }
    let report = Report {
        flow: &reverse.name,
        group: &args.group,
        offsets_from: "source",
        applied: args.apply,
        partitions: &results,
    };
    print_report(&report, &reverse, args.output)
}
