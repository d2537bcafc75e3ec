//! Topics on the test clusters: creating, growing, deleting, their offsets and configs.

use super::*;

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::rng().random::<u32>())
}

pub fn admin(servers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap()
}

pub fn create_topic(servers: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = block_on(admin(servers).create_topics([&t], &AdminOptions::new())).unwrap();
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("create {t}: {e}"));
    }
    // Wait until metadata shows the topic, so producers do not race its creation.
    wait_until(Duration::from_secs(30), &format!("{topic} visible"), || {
        partition_count(servers, topic) == Some(partitions)
    });
}

/// Deletes the records before `offset` in each listed partition (DeleteRecords), so the
/// log start moves there.
pub fn delete_records_before(servers: &str, topic: &str, before: &[(i32, i64)]) {
    let mut tpl = TopicPartitionList::new();
    for &(partition, offset) in before {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .unwrap();
    }
    block_on(admin(servers).delete_records(&tpl, &AdminOptions::new())).unwrap();
}

/// Deletes `topic` and waits until the cluster no longer knows it, so that creating it
/// again cannot fail on the deletion still under way.
pub fn delete_topic(servers: &str, topic: &str) {
    for result in block_on(admin(servers).delete_topics(&[topic], &AdminOptions::new())).unwrap() {
        result.unwrap_or_else(|(t, e)| panic!("deleting {t}: {e}"));
    }
    wait_until(Duration::from_secs(30), &format!("{topic} deleted"), || {
        partition_count(servers, topic).is_none()
    });
}

pub fn add_partitions(servers: &str, topic: &str, total: usize) {
    let res = block_on(
        admin(servers).create_partitions([&NewPartitions::new(topic, total)], &AdminOptions::new()),
    )
    .unwrap();
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("grow {t}: {e}"));
    }
}

pub fn partition_count(servers: &str, topic: &str) -> Option<i32> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let t = md.topics().first()?;
    if t.error().is_some() {
        return None;
    }
    Some(t.partitions().len() as i32)
}

/// Low and high watermarks; retries while a new topic's leader is being elected.
pub fn watermarks(servers: &str, topic: &str, partition: i32) -> (i64, i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap();
    let mut attempts = 0;
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok(w) => return w,
            Err(e) if attempts < 40 => {
                attempts += 1;
                eprintln!("watermarks of {topic}[{partition}]: {e}; retrying");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("watermarks of {topic}[{partition}]: {e}"),
        }
    }
}

/// Sum of `topic`'s end offsets, in one request per broker (a topic of hundreds of
/// partitions read one by one takes seconds). Partitions that cannot be read yet (a
/// leader still being elected) count as 0, so a wait for a total waits longer; a topic
/// that does not exist yet has 0.
pub fn end_offsets(servers: &str, topic: &str) -> i64 {
    let n = partition_count(servers, topic).unwrap_or(0);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(topic, p, Offset::End).unwrap();
    }
    consumer
        .offsets_for_times(tpl, Duration::from_secs(10))
        .map_or(0, |found| {
            found
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) if e.error().is_ok() => Some(o),
                    _ => None,
                })
                .sum()
        })
}

/// A topic's dynamic (explicitly set) configs.
pub fn topic_configs(servers: &str, topic: &str) -> BTreeMap<String, String> {
    use rdkafka::admin::{ConfigSource, ResourceSpecifier};
    let results = block_on(
        admin(servers).describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new()),
    )
    .unwrap();
    results
        .into_iter()
        .flatten()
        .flat_map(|r| r.entries)
        .filter(|e| matches!(e.source, ConfigSource::DynamicTopic))
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

/// Replaces a topic's dynamic configs with `configs` (Kafka's AlterConfigs).
pub fn set_topic_configs(servers: &str, topic: &str, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (k, v) in configs {
        alter = alter.set(k, v);
    }
    let results = block_on(admin(servers).alter_configs([&alter], &AdminOptions::new())).unwrap();
    for r in results {
        r.unwrap();
    }
}
