//! A partition whose topic was created moments ago has no leader until the controller
//! elects one; reads and writes against it fail for a few seconds with errors that pass
//! on their own. Both crates that create topics and then use them at once (the offset map
//! and migration state here, target topics in the replicator) retry those errors with
//! [`settling_backoff`] instead of failing the flow.

use std::collections::BTreeSet;
use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder};
use rdkafka::client::Client;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, TopicPartitionList};
use tracing::debug;

/// Errors of a partition whose leader is being elected: they pass within seconds.
///
/// That includes librdkafka's local "unknown partition": a client whose metadata was
/// read before another client created or grew the topic does not know the new
/// partitions until its next metadata answer (seen in CI: a 600-partition copy, created
/// by the target's admin client, read by the tail scanner's consumer 300 ms later). That
/// answer has to be asked for: see [`refresh_unknown_partitions`]. A partition that
/// really does not exist still fails, once the caller's time is up. (An unknown *topic*
/// is not in this list: callers read it as "no such topic".)
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

/// A consumer's client-level connection errors, which librdkafka recovers from by itself:
/// one broker of a replicated cluster unreachable (down for maintenance, restarting, the
/// first in `bootstrap_servers`) shows as these while the others serve every partition.
/// A reader passes over them and relies on its own stall limit instead.
pub fn is_connection_trouble(err: &KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::OperationTimedOut
        )
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

/// Asks the cluster for the metadata of `topics`, so that `client` learns partitions
/// added since it last read them.
///
/// librdkafka answers a partition beyond a topic's cached partition count with a local
/// "unknown partition", without asking a broker, until its next periodic metadata refresh
/// (`topic.metadata.refresh.interval.ms`, 5 min by default): on the test bed a client
/// that had read a topic with 2 partitions still failed on the fourth 40 s after another
/// client grew it to 4, asked once a second. A metadata request for the topic updates the
/// cache at once. Best effort: a failed request leaves the next attempt to fail as before.
///
/// Returns the error to give up with if the answer says the principal may not describe a
/// topic: librdkafka reports such a topic's partitions as unknown too, which would
/// otherwise be retried for the caller's whole time and then read as "no such topic" (a
/// migration's state topic without ACLs looked like no migration, after 30 s).
fn refresh_unknown_partitions<'a, C: ClientContext>(
    client: &Client<C>,
    topics: impl IntoIterator<Item = &'a str>,
    within: Duration,
) -> Option<KafkaError> {
    for topic in topics {
        match client.fetch_metadata(Some(topic), within) {
            Ok(metadata) => {
                let refused = metadata
                    .topics()
                    .iter()
                    .filter_map(|t| t.error())
                    .map(RDKafkaErrorCode::from)
                    .find(|code| *code == RDKafkaErrorCode::TopicAuthorizationFailed);
                if let Some(code) = refused {
                    return Some(KafkaError::MetadataFetch(code));
                }
            }
            Err(e) => debug!(topic, error = %e, "topic metadata not refreshed"),
        }
    }
    None
}

/// (log start, end) of a partition, asking again while its leader is being elected (or
/// this client has yet to learn that the partition exists), for at most `within` (also
/// each request's timeout).
pub fn settled_watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    within: Duration,
) -> KafkaResult<(i64, i64)> {
    let attempt = || {
        consumer
            .fetch_watermarks(topic, partition, within)
            .map_err(|e| {
                if is_unknown_partition(&e) {
                    if let Some(refused) =
                        refresh_unknown_partitions(consumer.client(), [topic], within)
                    {
                        return refused;
                    }
                }
                e
            })
    };
    attempt
        .retry(settling_backoff(within))
        .sleep(std::thread::sleep)
        .when(|e| e.rdkafka_error_code().is_some_and(is_leader_settling))
        .notify(|e, delay| debug!(topic, partition, error = %e, retry_in = ?delay, "partition leader settling"))
        .call()
}

fn is_unknown_partition(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownPartition)
}

/// `consumer.offsets_for_times(partitions, within)`, after which a lookup that failed
/// (wholly or for some partition) on a partition this client does not know yet asks for
/// the metadata of the topics asked about, so that the next lookup knows them: see
/// [`refresh_unknown_partitions`].
pub fn offsets_learning_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: TopicPartitionList,
    within: Duration,
) -> KafkaResult<TopicPartitionList> {
    let topics: BTreeSet<String> = partitions
        .elements()
        .iter()
        .map(|e| e.topic().to_string())
        .collect();
    let found = consumer.offsets_for_times(partitions, within);
    if missed_unknown_partition(&found) {
        if let Some(refused) =
            refresh_unknown_partitions(consumer.client(), topics.iter().map(String::as_str), within)
        {
            return Err(refused);
        }
    }
    found
}

/// Whether an offsets lookup failed, wholly or for some partition, because this client
/// does not know a partition (yet). librdkafka fails the whole lookup for one such
/// partition.
fn missed_unknown_partition(found: &KafkaResult<TopicPartitionList>) -> bool {
    match found {
        Ok(list) => list
            .elements()
            .iter()
            .any(|e| e.error().err().is_some_and(|e| is_unknown_partition(&e))),
        Err(e) => is_unknown_partition(e),
    }
}
