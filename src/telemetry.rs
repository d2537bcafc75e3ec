//! Every metric the binary records, by name, with its type and what it means (the `# HELP`
//! line Prometheus shows), in one place. docs/metrics.md lists the same metrics; a test
//! checks the two agree.

use strait_offset_sync::telemetry::{Metric, MetricKind};

pub const BUILD_INFO: &str = "strait_build_info";
pub const MIGRATION_STAGE: &str = "strait_migration_stage";
pub const MIGRATION_VERIFY_OK: &str = "strait_migration_verify_ok";

/// Each metric above, with its type and its `# HELP` text.
pub const METRICS: &[Metric] = &[
    Metric {
        name: BUILD_INFO,
        kind: MetricKind::Gauge,
        help: "Always 1.",
    },
    Metric {
        name: MIGRATION_STAGE,
        kind: MetricKind::Gauge,
        help: "1 for the stage migrate run is in, 0 for stages it has left.",
    },
    Metric {
        name: MIGRATION_VERIFY_OK,
        kind: MetricKind::Gauge,
        help: "1 if the migration's last verify found no difference, else 0.",
    },
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use strait_offset_sync::telemetry::MetricKind;

    /// Every metric of every crate, by name, with its type.
    fn catalog() -> BTreeMap<&'static str, MetricKind> {
        [
            super::METRICS,
            strait_replicator::telemetry::METRICS,
            strait_offset_sync::telemetry::METRICS,
        ]
        .into_iter()
        .flatten()
        .map(|m| (m.name, m.kind))
        .collect()
    }

    /// The metrics table of docs/metrics.md: name → type.
    fn documented() -> BTreeMap<String, String> {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
            .unwrap();
        docs.lines()
            .filter_map(|line| {
                let mut cells = line.strip_prefix("| `strait_")?.split(" | ");
                let name = format!("strait_{}", cells.next()?.strip_suffix('`')?);
                Some((name, cells.next()?.to_string()))
            })
            .collect()
    }

    #[test]
    fn every_metric_is_documented_with_its_type_and_nothing_else_is() {
        let documented = documented();
        let catalog = catalog();
        assert!(catalog.len() > 20, "{catalog:?}");
        for (name, kind) in &catalog {
            let kind = format!("{kind:?}").to_lowercase();
            assert_eq!(
                documented.get(*name),
                Some(&kind),
                "{name} in docs/metrics.md"
            );
        }
        for name in documented.keys() {
            assert!(
                catalog.contains_key(name.as_str()),
                "{name} is documented but no crate records it"
            );
        }
    }

    /// Metric names are written only in the telemetry modules: a name typed at a call
    /// site would escape the catalog and its documentation.
    #[test]
    fn metric_names_are_written_only_in_the_telemetry_modules() {
        let root = env!("CARGO_MANIFEST_DIR");
        let mut offenders = Vec::new();
        for dir in ["src", "replicator/src", "offset-sync/src", "verify/src"] {
            for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().is_some_and(|n| n == "telemetry.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let compact: String = text.split_whitespace().collect();
                for call in [
                    "counter!(\"strait_",
                    "gauge!(\"strait_",
                    "histogram!(\"strait_",
                ] {
                    if compact.contains(call) {
                        offenders.push(format!("{}: {call}", path.display()));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:?}");
    }
}
