//! Every metric the data plane records, by name, with its type and what it means (the `# HELP`
//! line Prometheus shows), in one place. docs/metrics.md lists the same metrics; a test
//! checks the two agree.

use strait_offset_sync::telemetry::{Metric, MetricKind};

pub const RECORDS_REPLICATED_TOTAL: &str = "strait_records_replicated_total";
pub const BYTES_REPLICATED_TOTAL: &str = "strait_bytes_replicated_total";
pub const REPLICATION_LAG_RECORDS: &str = "strait_replication_lag_records";
pub const REPLICATION_LAG_PARTITION_RECORDS: &str = "strait_replication_lag_partition_records";
pub const REPLICATION_LAG_SECONDS: &str = "strait_replication_lag_seconds";
pub const REPLICATION_LAG_PARTITION_SECONDS: &str = "strait_replication_lag_partition_seconds";
pub const REPLICATION_LATENCY_SECONDS: &str = "strait_replication_latency_seconds";
pub const FLOW_UP: &str = "strait_flow_up";
pub const FLOW_RESTARTS_TOTAL: &str = "strait_flow_restarts_total";
pub const RECORDS_LOST_TOTAL: &str = "strait_records_lost_total";
pub const TRANSACTION_COMMIT_SECONDS: &str = "strait_transaction_commit_seconds";
pub const FENCED_OWNERS_TOTAL: &str = "strait_fenced_owners_total";
pub const TARGET_FOREIGN_RECORDS_TOTAL: &str = "strait_target_foreign_records_total";
pub const RECORDS_SKIPPED_AS_RESENT_TOTAL: &str = "strait_records_skipped_as_resent_total";
pub const RECORDS_NOT_COPIED_BACK_TOTAL: &str = "strait_records_not_copied_back_total";
pub const TARGET_TOPICS_CREATED_TOTAL: &str = "strait_target_topics_created_total";
pub const TARGET_TOPIC_CONFIG_SYNCS_TOTAL: &str = "strait_target_topic_config_syncs_total";
pub const PRODUCE_ERRORS_TOTAL: &str = "strait_produce_errors_total";
pub const PRODUCE_RETRIES_TOTAL: &str = "strait_produce_retries_total";
pub const CONSUME_ERRORS_TOTAL: &str = "strait_consume_errors_total";
pub const HEARTBEATS_SENT_TOTAL: &str = "strait_heartbeats_sent_total";

/// Each metric above, with its type and its `# HELP` text.
pub const METRICS: &[Metric] = &[
    Metric {
        name: RECORDS_REPLICATED_TOTAL,
        kind: MetricKind::Counter,
        help: "Records acknowledged by the target.",
    },
    Metric {
        name: BYTES_REPLICATED_TOTAL,
        kind: MetricKind::Counter,
        help: "Key + value bytes acknowledged by the target.",
    },
    Metric {
        name: REPLICATION_LAG_RECORDS,
        kind: MetricKind::Gauge,
        help: "Source last stable offset minus the replicated position, summed over this instance's partitions.",
    },
    Metric {
        name: REPLICATION_LAG_PARTITION_RECORDS,
        kind: MetricKind::Gauge,
        help: "The same, per partition.",
    },
    Metric {
        name: REPLICATION_LAG_SECONDS,
        kind: MetricKind::Gauge,
        help: "Age of the oldest record not yet on the target (largest over partitions); 0 when caught up.",
    },
    Metric {
        name: REPLICATION_LAG_PARTITION_SECONDS,
        kind: MetricKind::Gauge,
        help: "The same, per partition.",
    },
    Metric {
        name: REPLICATION_LATENCY_SECONDS,
        kind: MetricKind::Histogram,
        help: "End-to-end latency: target acknowledgement time minus the source record's timestamp, sampled once per round of delivery reports (buckets 5 ms to 300 s).",
    },
    Metric {
        name: FLOW_UP,
        kind: MetricKind::Gauge,
        help: "1 while the flow's pipeline runs, 0 while it restarts or after it stopped.",
    },
    Metric {
        name: FLOW_RESTARTS_TOTAL,
        kind: MetricKind::Counter,
        help: "Pipeline restarts after retriable errors (the flow-level retry).",
    },
    Metric {
        name: RECORDS_LOST_TOTAL,
        kind: MetricKind::Counter,
        help: "Offsets lost to the copy, found when a partition is assigned (also after a position fell out of the source's log while copying): deleted_before_copy (source records removed by retention or DeleteRecords before they were copied), lost_on_target (acknowledged copies the target no longer has) source_offsets_went_back (the source ends below records already copied) or source_topic_replaced (the source topic is another than the one copied, by its topic ID or by its record at the newest copy's offset: the topic created again); also in /status data_loss.",
    },
    Metric {
        name: TRANSACTION_COMMIT_SECONDS,
        kind: MetricKind::Histogram,
        help: "How long each transaction of copies took to commit (fence = \"transactions\"), its copies' acknowledgements included; its count is the number of transactions.",
    },
    Metric {
        name: FENCED_OWNERS_TOTAL,
        kind: MetricKind::Counter,
        help: "Previous owners of newly assigned partitions whose transactions this instance fenced (fence = \"transactions\"): each is a crashed, frozen or cut-off instance, whose open transaction was aborted.",
    },
    Metric {
        name: TARGET_FOREIGN_RECORDS_TOTAL,
        kind: MetricKind::Counter,
        help: "Records found in a flow's target partition between its copies that the flow did not write (another copier of the partition, such as an instance that lost it and still sent what it held, or an application writing to the target), each range also an ERROR with its target offsets; consumers of the target read them: duplicates or foreign records (strait verify names each).",
    },
    Metric {
        name: RECORDS_SKIPPED_AS_RESENT_TOTAL,
        kind: MetricKind::Counter,
        help: "Source records the consumer handed over again after they were sent (a fetch position that went back), skipped rather than copied twice; now and then a few (at most a batch of 256) at a rebalance are expected (see \"Rebalances while copying\").",
    },
    Metric {
        name: RECORDS_NOT_COPIED_BACK_TOTAL,
        kind: MetricKind::Counter,
        help: "Source records of a two-way flow that the other flow of the pair copied from this flow's target (their provenance header says so), left out rather than copied back.",
    },
    Metric {
        name: TARGET_TOPICS_CREATED_TOTAL,
        kind: MetricKind::Counter,
        help: "Target topics created.",
    },
    Metric {
        name: TARGET_TOPIC_CONFIG_SYNCS_TOTAL,
        kind: MetricKind::Counter,
        help: "Target topics whose data configs were updated from the source.",
    },
    Metric {
        name: PRODUCE_ERRORS_TOTAL,
        kind: MetricKind::Counter,
        help: "Records the target refused.",
    },
    Metric {
        name: PRODUCE_RETRIES_TOTAL,
        kind: MetricKind::Counter,
        help: "Produce requests librdkafka retried (from its statistics; restarts from 0 with the pipeline, which Prometheus treats as a counter reset).",
    },
    Metric {
        name: CONSUME_ERRORS_TOTAL,
        kind: MetricKind::Counter,
        help: "Errors reported by the source consumer.",
    },
    Metric {
        name: HEARTBEATS_SENT_TOTAL,
        kind: MetricKind::Counter,
        help: "Heartbeat records written to the source.",
    },
];
