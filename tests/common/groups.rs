//! Consumer groups: committing and reading offsets as an application does, and resuming one on the secondary.

use super::*;

/// Commits `offsets` ((partition, offset) pairs of `topic`) for `group`, as an application
/// does, without joining the group.
pub fn commit_offsets(servers: &str, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    commit_offsets_with_metadata(servers, group, topic, offsets, "");
}

/// [`commit_offsets`], each with `metadata` (none if empty).
pub fn commit_offsets_with_metadata(
    servers: &str,
    group: &str,
    topic: &str,
    offsets: &[(i32, i64)],
    metadata: &str,
) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .unwrap();
        if !metadata.is_empty() {
            tpl.find_partition(topic, *p)
                .unwrap()
                .set_metadata(metadata);
        }
    }
    // Right after a broker starts, its group coordinator may still be loading or moving
    // (`NotCoordinator`, seen in CI): those errors pass, anything else fails the test.
    wait_until(
        Duration::from_secs(30),
        "a group coordinator to commit",
        || match consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync) {
            Ok(()) => true,
            Err(e) => match e.rdkafka_error_code() {
                Some(
                    rdkafka::error::RDKafkaErrorCode::NotCoordinator
                    | rdkafka::error::RDKafkaErrorCode::CoordinatorLoadInProgress
                    | rdkafka::error::RDKafkaErrorCode::CoordinatorNotAvailable,
                ) => false,
                _ => panic!("committing offsets of group {group}: {e}"),
            },
        },
    );
}

/// Deletes `group` and its committed offsets, as an operator does (or as Kafka does once
/// an empty group's offsets expire, `offsets.retention.minutes`). The group must be empty.
pub fn delete_group(servers: &str, group: &str) {
    for result in block_on(admin(servers).delete_groups(&[group], &AdminOptions::new())).unwrap() {
        result.unwrap_or_else(|(g, e)| panic!("deleting group {g}: {e}"));
    }
}

/// `group`'s committed offset on one partition, if any.
pub fn committed_offset(servers: &str, group: &str, topic: &str, partition: i32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let c = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    match c.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// Resumes `group` on the secondary from its committed offsets on `partitions` of
/// `topic`, reads each to its end, and returns per partition the source offsets of what
/// it read (offsets in `sources`, the source topic as read from the primary earlier). A
/// partition without a committed offset panics: it must never silently start somewhere.
///
/// Copies carry the provenance header only on anchors; a copy without one is the copy of
/// the source offset after the previous copy. Either way, the source record at the offset
/// named is compared with what was read, so a duplicate or a wrong record fails here.
pub fn resume_on_secondary(
    group: &str,
    sources: &BTreeMap<i32, Vec<Rec>>,
    topic: &str,
    partitions: &[i32],
) -> BTreeMap<i32, Vec<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", SECONDARY)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    // Strait writes the target without transactions, so its offsets have no gaps: a
    // partition is done when the offset after the last record read reaches the end.
    let mut next = BTreeMap::new();
    let mut high = BTreeMap::new();
    for &p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Stored).unwrap();
        let committed = committed_offset(SECONDARY, group, topic, p)
            .unwrap_or_else(|| panic!("group {group} has no committed offset on {topic}[{p}]"));
        next.insert(p, committed);
        high.insert(p, watermarks(SECONDARY, topic, p).1);
    }
    consumer.assign(&tpl).unwrap();
    let mut read: BTreeMap<i32, Vec<i64>> = partitions.iter().map(|p| (*p, Vec::new())).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while partitions.iter().any(|p| next[p] < high[p]) {
        assert!(
            Instant::now() < deadline,
            "group {group} did not reach the end of {topic}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                let copy = Rec::of(&m);
                let originals = sources.get(&m.partition()).map_or(&[][..], Vec::as_slice);
                let seen = read.entry(m.partition()).or_default();
                let source_offset = match (copy.provenance_offset(), seen.last()) {
                    (Some(s), _) => s,
                    (None, Some(previous)) => previous + 1,
                    // The first record read, without a header: find it by content.
                    (None, None) => originals
                        .iter()
                        .find(|s| s.content() == copy.without_provenance())
                        .map(|s| s.offset)
                        .unwrap_or_else(|| {
                            panic!(
                                "{topic}[{}]@{}: no source record has this content",
                                m.partition(),
                                m.offset()
                            )
                        }),
                };
                let original = originals
                    .iter()
                    .find(|s| s.offset == source_offset)
                    .unwrap_or_else(|| {
                        panic!("{topic}[{}]@{}: names source offset {source_offset}, which the source does not hold", m.partition(), m.offset())
                    });
                assert_eq!(
                    copy.without_provenance(),
                    original.content(),
                    "{topic}[{}]@{} is not the copy of source offset {source_offset}",
                    m.partition(),
                    m.offset()
                );
                seen.push(source_offset);
            }
            Some(Err(e)) => panic!("group {group} on the secondary: {e}"),
            None => {}
        }
    }
    read
}

/// What an application in `group` reads from every partition of `topics` on `servers`:
/// from the group's committed offsets (from the start where it has none), up to the
/// partitions' ends when it starts, or `limit` records. Commits what it read, and returns
/// the records with their topics.
pub fn consume(servers: &str, group: &str, topics: &[&str], limit: usize) -> Vec<(String, Rec)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut high = BTreeMap::new();
    for topic in topics {
        for p in 0..partition_count(servers, topic).unwrap_or(0) {
            tpl.add_partition_offset(topic, p, Offset::Stored).unwrap();
            let start = committed_offset(servers, group, topic, p)
                .unwrap_or_else(|| watermarks(servers, topic, p).0);
            next.insert((topic.to_string(), p), start);
            high.insert((topic.to_string(), p), watermarks(servers, topic, p).1);
        }
    }
    consumer.assign(&tpl).unwrap();
    let mut read = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while read.len() < limit && next.iter().any(|(k, n)| *n < high[k]) {
        assert!(
            Instant::now() < deadline,
            "group {group} did not reach the end of {topics:?}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
                read.push((m.topic().to_string(), Rec::of(&m)));
            }
            Some(Err(e)) => panic!("group {group} reading {topics:?}: {e}"),
            None => {}
        }
    }
    let mut commit = TopicPartitionList::new();
    for ((topic, p), offset) in &next {
        commit
            .add_partition_offset(topic, *p, Offset::Offset(*offset))
            .unwrap();
    }
    consumer
        .commit(&commit, rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    read
}
