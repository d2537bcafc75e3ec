//! The configs of the copy's own clients: the source consumer and the target producer.

use super::*;

pub(super) fn consumer_config(spec: &FlowSpec) -> rdkafka::ClientConfig {
    let t = &spec.tuning;
    let mut config = rdkafka::ClientConfig::new();
    config
        .set(
            "queued.max.messages.kbytes",
            t.consumer_queue_kbytes.to_string(),
        )
        .set("fetch.wait.max.ms", "100")
        // librdkafka's 1 s default postpones a partition's next fetch that long whenever
        // the local queue was full, which a replicator's always is for a moment: measured
        // 2-3x throughput on a backlog with 10 ms.
        .set("fetch.queue.backoff.ms", "10")
        // Kafka's 45 s default would leave a crashed instance's partitions idle that long.
        .set("session.timeout.ms", "10000")
        // A cooperative rebalance's second round (which hands out the partitions revoked in
        // the first) waits for every member's next heartbeat: with the 3 s default, those
        // partitions sat unowned for about 3 s at every scale-out on the test bed.
        .set("heartbeat.interval.ms", "1000")
        .set("statistics.interval.ms", "2000")
        .set(
            "topic.metadata.refresh.interval.ms",
            spec.refresh_interval.as_millis().max(1000).to_string(),
        );
    apply_cluster(&mut config, &spec.source);
    config
        .set("client.id", format!("strait-{}", spec.name))
        .set("group.id", &spec.group_id)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed")
        .set(
            // Every partition starts at an offset Strait chose; one that falls out of the
            // log is Strait's to handle (`Pipeline::on_position_out_of_range`), not
            // something to skip past in silence.
            "auto.offset.reset",
            "error",
        );
    config
}

pub(super) fn producer(
    spec: &FlowSpec,
    progress: &SharedProgress,
    status: &Arc<FlowStatus>,
    transactional_id: Option<&str>,
) -> Result<BaseProducer<DeliveryContext>, ReplicatorError> {
    producer_config(spec, transactional_id)
        .create_with_context(DeliveryContext {
            progress: progress.clone(),
            status: status.clone(),
            cluster: spec.target.name.clone(),
            sample_latency: AtomicBool::new(false),
            latency: metrics::histogram!(
                telemetry::REPLICATION_LATENCY_SECONDS, "flow" => spec.name.clone()
            ),
            retries: metrics::counter!(telemetry::PRODUCE_RETRIES_TOTAL, "flow" => spec.name.clone()),
            flow: spec.name.clone(),
            two_way: spec.two_way,
        })
        .map_err(|e| {
            ReplicatorError::kafka(format!("creating producer for '{}'", spec.target.name), e)
        })
}

pub(super) fn producer_config(
    spec: &FlowSpec,
    transactional_id: Option<&str>,
) -> rdkafka::ClientConfig {
    let t = &spec.tuning;
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("linger.ms", t.linger.as_millis().to_string())
        .set("batch.size", t.batch_size.to_string())
        .set("compression.type", &t.compression)
        .set(
            "queue.buffering.max.kbytes",
            t.producer_queue_kbytes.to_string(),
        )
        .set("queue.buffering.max.messages", "1000000")
        // Produce requests reference the queued records instead of holding a second copy
        // of each payload (librdkafka copies records below 64 KiB by default): peak RSS
        // 0.89x on the backlog benchmark, throughput and CPU unchanged.
        .set("message.copy.max.bytes", "0")
        // Connection state for /readyz.
        .set("statistics.interval.ms", "2000");
    apply_cluster(&mut config, &spec.target);
    config
        .set("client.id", format!("strait-{}", spec.name))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Never time a record out: a timed-out record followed by a delivered one would
        // leave a hole that the provenance tail cannot see. Backpressure handles outages.
        .set("message.timeout.ms", "0")
        .set("enable.gapless.guarantee", "true")
        // A producer may have the broker auto-create a topic it writes to (librdkafka's
        // default, and Kafka's `auto.create.topics.enable` default): a deleted target
        // topic would come back empty, with the broker's defaults, and the copy would go
        // on as if nothing had happened. Never: the flow stops and says so instead.
        .set("allow.auto.create.topics", "false");
    if let Some(id) = transactional_id {
        let timeout = TRANSACTION_TIMEOUT.as_millis().to_string();
        // A record may wait no longer than its transaction may stay open. One that times
        // out fails its transaction, which is aborted whole: no hole for a reader of
        // committed records, so no gap-less guarantee needed either.
        config
            .set("transactional.id", id)
            .set("transaction.timeout.ms", &timeout)
            .set("message.timeout.ms", &timeout)
            .set("enable.gapless.guarantee", "false");
    }
    config
}

#[cfg(test)]
mod tests {
    use super::{consumer_config, producer_config};

    /// The copy's own clients get a cluster's secrets as written. rdkafka's
    /// `config_map()` puts a placeholder in place of `sasl.password`, so clients built
    /// from it cannot log in to any SASL cluster.
    #[test]
    fn the_copy_clients_keep_the_clusters_secrets() {
        let mut spec = crate::topics::tests::spec("127.0.0.1:1", "127.0.0.1:2");
        for cluster in [&mut spec.source, &mut spec.target] {
            cluster
                .properties
                .insert("sasl.password".into(), format!("{}-secret", cluster.name));
        }
        assert_eq!(
            consumer_config(&spec).get("sasl.password"),
            Some("src-secret")
        );
        assert_eq!(
            producer_config(&spec, None).get("sasl.password"),
            Some("dst-secret")
        );
    }
}
