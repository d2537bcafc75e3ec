//! A partition whose topic was created moments ago has no leader until the controller
//! elects one; reads and writes against it fail for a few seconds with errors that pass
//! on their own. Both crates that create topics and then use them at once (the offset map
//! and migration state here, target topics in the replicator) retry those errors with
//! [`settling_backoff`] instead of failing the flow.

use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};
use tracing::debug;

/// Errors of a partition whose leader is being elected: they pass within seconds.
///
/// That includes librdkafka's local "unknown partition": a client whose metadata was
/// read before another client created the topic does not know its partitions until its
/// next metadata answer (seen in CI: a 600-partition copy, created by the target's admin
/// client, read by the tail scanner's consumer 300 ms later). A partition that really
/// does not exist still fails, once the caller's time is up. (An unknown *topic* is not
/// in this list: callers read it as "no such topic".)
pub fn is_leader_settling(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::UnknownPartition
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
    )
}

/// Retries quickly at first and gives up after `within` in all. (backon stops after
/// 3 attempts unless told otherwise, far too few for an election under load.) The first
/// retry comes after 10 ms: a single-node cluster elects the leader of a topic it has
/// just created within a few milliseconds, and a first start reads such topics (the
/// offset map's, the heartbeat copy) on the way to its first record.
pub fn settling_backoff(within: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_secs(1))
        .with_total_delay(Some(within))
        .without_max_times()
}

/// (log start, end) of a partition, asking again while its leader is being elected, for
/// at most `within` (also each request's timeout).
pub fn settled_watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    within: Duration,
) -> KafkaResult<(i64, i64)> {
    (|| consumer.fetch_watermarks(topic, partition, within))
        .retry(settling_backoff(within))
        .sleep(std::thread::sleep)
        .when(|e| e.rdkafka_error_code().is_some_and(is_leader_settling))
        .notify(|e, delay| debug!(topic, partition, error = %e, retry_in = ?delay, "partition leader settling"))
        .call()
}
