//! Every metric offset sync records, by name, with its type and what it means (the `# HELP`
//! line Prometheus shows), in one place. docs/metrics.md lists the same metrics; a test
//! checks the two agree.

pub const OFFSET_MAP_SEGMENTS: &str = "strait_offset_map_segments";
pub const CHECKPOINT_AGE_SECONDS: &str = "strait_checkpoint_age_seconds";
pub const CHECKPOINT_UNREADABLE_GROUPS: &str = "strait_checkpoint_unreadable_groups";
pub const GROUPS_TRANSLATED: &str = "strait_groups_translated";
pub const GROUP_PARTITIONS_TRANSLATED: &str = "strait_group_partitions_translated";
pub const GROUP_OFFSETS_PENDING: &str = "strait_group_offsets_pending";
pub const GROUP_OFFSET_WRITES_TOTAL: &str = "strait_group_offset_writes_total";
pub const GROUP_OFFSET_WRITES_REFUSED_TOTAL: &str = "strait_group_offset_writes_refused_total";

/// Each metric above, with its type and its `# HELP` text.
pub const METRICS: &[Metric] = &[
    Metric {
        name: OFFSET_MAP_SEGMENTS,
        kind: MetricKind::Gauge,
        help: "Segments in the persisted offset map (grows with source gaps, not records).",
    },
    Metric {
        name: CHECKPOINT_AGE_SECONDS,
        kind: MetricKind::Gauge,
        help: "Seconds since the last complete checkpoint round.",
    },
    Metric {
        name: CHECKPOINT_UNREADABLE_GROUPS,
        kind: MetricKind::Gauge,
        help: "Selected groups left out of the last round because their committed offsets could not be read (see Checkpoints and group sync).",
    },
    Metric {
        name: GROUPS_TRANSLATED,
        kind: MetricKind::Gauge,
        help: "Groups with committed offsets translated in the last round.",
    },
    Metric {
        name: GROUP_PARTITIONS_TRANSLATED,
        kind: MetricKind::Gauge,
        help: "(group, partition) pairs translated exactly in the last round.",
    },
    Metric {
        name: GROUP_OFFSETS_PENDING,
        kind: MetricKind::Gauge,
        help: "(group, partition) pairs not yet translatable (pending or before the map).",
    },
    Metric {
        name: GROUP_OFFSET_WRITES_TOTAL,
        kind: MetricKind::Counter,
        help: "Partitions written to target groups by group sync.",
    },
    Metric {
        name: GROUP_OFFSET_WRITES_REFUSED_TOTAL,
        kind: MetricKind::Counter,
        help: "Group-sync writes refused: group_active, would_rewind, committed_elsewhere or error.",
    },
];

/// A metric's type, as Prometheus knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: its name, type and help text.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
}

/// Registers the help text of each of `metrics` with the installed recorder.
pub fn describe(metrics: &[Metric]) {
    for m in metrics {
        match m.kind {
            MetricKind::Counter => metrics::describe_counter!(m.name, m.help),
            MetricKind::Gauge => metrics::describe_gauge!(m.name, m.help),
            MetricKind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}
