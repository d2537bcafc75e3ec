//! `strait verify`: compares each flow's copy with its source, record by record.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use regex::Regex;
use strait_verify::{verify_flow, Progress, Status, VerifyReport, VerifySpec};

use crate::config::Config;
use crate::progress::OffsetProgress;
use crate::OutputFormat;

pub struct VerifyArgs {
    pub flow: Option<String>,
    pub topics: Option<String>,
    pub output: OutputFormat,
}

/// The flows to verify: the named one, or every flow that keeps an offset map.
pub fn specs(config: &Config, flow: Option<&str>, topics: Option<&str>) -> Result<Vec<VerifySpec>> {
    let topics = topics
        .map(|t| Regex::new(&format!("^(?:{t})$")))
        .transpose()
        .context("--topics: invalid regex")?;
    let flows = match flow {
        Some(name) => vec![config.mapped_flow_spec(name, "verification")?],
        None => config.flow_specs()?,
    };
    let specs: Vec<VerifySpec> = flows
        .into_iter()
        .filter(|s| config.flows[&s.name].offset_sync.enabled)
        .map(|s| VerifySpec {
            map_topic: config.flows[&s.name].map_topic(&s.name),
            flow: s.name,
            source: s.source,
            target: s.target,
            naming: s.naming,
            selector: s.selector,
            topics: topics.clone(),
            two_way: s.two_way,
        })
        .collect();
    if specs.is_empty() {
        bail!("no flow keeps an offset map (offset_sync.enabled): nothing to verify");
    }
    Ok(specs)
}

pub fn run(config: &Config, args: &VerifyArgs) -> Result<()> {
    let mut reports = Vec::new();
    for spec in specs(config, args.flow.as_deref(), args.topics.as_deref())? {
        let progress = Reporter::new(&spec.flow);
        let started = Instant::now();
        let report = verify_flow(&spec, &progress)
            .with_context(|| format!("verifying flow '{}'", spec.flow))?;
        progress.finish(&report, started.elapsed());
        reports.push(report);
    }
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        OutputFormat::Text => reports.iter().for_each(print_text),
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.is_ok())
        .map(|r| r.flow.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("verification failed for flow(s) {}", failed.join(", "));
    }
    Ok(())
}

pub fn print_text(report: &VerifyReport) {
    println!("flow {}:", report.flow);
    for p in &report.partitions {
        let state = match p.status {
            Status::Verified => "ok",
            Status::Mismatch => "MISMATCH",
            Status::NotReplicated => "NOT REPLICATED",
        };
        let unverified = (p.source_end - p.source_to).max(0);
        println!(
            "  {}/{} → {}/{}: {state}, {} records identical, source [{}, {}) ↔ target [{}, {}){}",
            p.topic,
            p.partition,
            p.target_topic,
            p.partition,
            p.records,
            p.source_from,
            p.source_to,
            p.target_from,
            p.target_to,
            if unverified > 0 {
                format!(", {unverified} newer source offsets not replicated yet")
            } else {
                String::new()
            }
        );
        if p.copies_from_target + p.target_own > 0 {
            println!(
                "    both ways: {} source records are copies from the target (left out), {} \
                 target records are the target's own",
                p.copies_from_target, p.target_own
            );
        }
        if let Some(m) = &p.mismatch {
            println!(
                "    first difference: source offset {}, target offset {}: {}",
                m.source_offset,
                m.target_offset
                    .map_or_else(|| "-".to_string(), |t| t.to_string()),
                m.kind.describe()
            );
            match &m.source_record {
                Some(r) => println!("      source: {r}"),
                None => println!("      source: (not readable)"),
            }
            match &m.target_record {
                Some(r) => println!("      target: {r}"),
                None => println!("      target: (no record)"),
            }
        }
    }
    let mismatched = report.mismatches().count();
    println!(
        "  {} partitions, {} records identical, {} with differences{}",
        report.partitions.len(),
        report.records(),
        mismatched,
        if report.is_complete() {
            ", source fully replicated"
        } else {
            ""
        }
    );
}

/// Verification's progress, on stderr.
struct Reporter(OffsetProgress);

impl Reporter {
    fn new(flow: &str) -> Self {
        Self(OffsetProgress::new(&format!("verify {flow}")))
    }

    fn finish(&self, report: &VerifyReport, took: Duration) {
        self.0.finish(&format!(
            "{} records compared in {:.1} s",
            report.records(),
            took.as_secs_f64()
        ));
    }
}

impl Progress for Reporter {
    fn begin(&self, partitions: usize, source_offsets: u64) {
        self.0.begin(
            source_offsets,
            &format!("{partitions} partitions, {source_offsets} source offsets"),
        );
    }

    fn advance(&self, source_offsets: u64) {
        self.0.advance(source_offsets);
    }
}
