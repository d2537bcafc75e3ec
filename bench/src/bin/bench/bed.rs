//! The test clusters as the benchmark uses them: warming up, creating, waiting for leaders,
//! deleting and preloading topics.

use super::*;

/// A fresh cluster does some work once: it creates `__consumer_offsets` for the first
/// consumer group and allocates producer ids for the first idempotent producer. Each costs
/// about a second. Pay them here, on both clusters, so they do not land on whichever
/// system happens to run first.
pub(super) fn warm_up(topic: &str) -> Result<()> {
    warm_up_group_coordinator(PRIMARY, topic)?;
    let scratch = format!("{topic}-warm-up");
    create_topic(SECONDARY, &scratch, 1)?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", SECONDARY)
        .set("enable.idempotence", "true")
        .create()?;
    producer
        .send(BaseRecord::<[u8], [u8]>::to(&scratch).payload(b"warm-up"))
        .map_err(|(e, _)| e)?;
    producer.flush(Duration::from_secs(60))?;
    warm_up_group_coordinator(SECONDARY, &scratch)?;
    delete_topic(SECONDARY, &scratch)
}

/// Copies the backlog with the ceiling loop, unmeasured, until the brokers have warmed up.
/// Fresh brokers serve their first gigabytes of fetches and produce requests slowly (their
/// JVMs are still compiling those paths): on fresh brokers the copies cost them 6.7, 4.3,
/// 3.4, 2.1 and 2.4 CPU s, and measured runs after those still fell to 1.5; after a single
/// warm-up copy the first system of the first run, always the first one listed, took up
/// to twice as long as a run later. So it copies until two copies in a row have not cost
/// the brokers a tenth less CPU (the copy's time, if their pids are unknown) than the
/// cheapest copy before them, at most `--warm-up-copies` (8) times.
/// `--no-warm-up-copy` skips it, and the unmeasured round of every system
/// that follows it: after six loop copies, Strait's first run still cost the brokers 3.4
/// CPU s against 1.7 in its later runs (twice, on fresh brokers), so the loop alone does
/// not warm every path a system uses.
pub(super) fn warm_up_copy(
    bin_dir: &std::path::Path,
    source: &str,
    partitions: i32,
    records: u64,
) -> Result<()> {
    if options().no_warm_up_copy {
        return Ok(());
    }
    let copies = options().warm_up_copies;
    let mut cheapest = f64::INFINITY;
    let mut without_progress = 0;
    for copy in 1..=copies {
        let target = format!("warm-up-{copy}.{source}");
        create_topic(SECONDARY, &target, partitions)?;
        let watcher = wait_for_leaders(SECONDARY, &target, partitions)?;
        let child = Command::new(bin_dir.join("ceiling"))
            .args([PRIMARY, SECONDARY, source, &target])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (sample, child) = measure(
            "warm-up",
            child,
            &watcher,
            &[(target.clone(), partitions)],
            records as i64,
        )?;
        stop(child)?;
        eprintln!(
            "warm-up copy {copy} (ceiling loop, not counted): {:.2} s; brokers {:.1} CPU s",
            sample.seconds, sample.brokers_cpu_seconds
        );
        delete_topic(SECONDARY, &target)?;
        std::thread::sleep(Duration::from_secs(5));
        let cost = if sample.brokers_cpu_seconds.is_finite() {
            sample.brokers_cpu_seconds
        } else {
            sample.seconds
        };
        if cost < 0.9 * cheapest {
            without_progress = 0;
        } else {
            without_progress += 1;
            if without_progress == 2 {
                break;
            }
        }
        cheapest = cheapest.min(cost);
    }
    Ok(())
}

pub(super) fn warm_up_group_coordinator(servers: &str, topic: &str) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "strait-bench-warm-up")
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the group coordinator: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub(super) fn admin(servers: &str) -> Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()?)
}

pub(super) fn create_topic(servers: &str, topic: &str, partitions: i32) -> Result<()> {
    create_topic_with(servers, topic, partitions, &[])
}

pub(super) fn create_topic_with(
    servers: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new = new.set(key, value);
    }
    for r in block_on(admin(servers)?.create_topics([&new], &AdminOptions::new()))? {
        r.map_err(|(t, e)| format!("creating {t}: {e}"))?;
    }
    wait_for_leaders(servers, topic, partitions).map(drop)
}

/// Waits until every partition of a topic just created answers a ListOffsets request: a
/// broker takes seconds to elect leaders for 1,200 new partitions, and that time belongs
/// to the harness, not to whichever system runs first. Returns the client that asked,
/// which has the topic's metadata by then.
pub(super) fn wait_for_leaders(
    servers: &str,
    topic: &str,
    partitions: i32,
) -> Result<BaseConsumer> {
    wait_for_leaders_of(servers, &[(topic.to_string(), partitions)])
}

/// A client that has read the end offset of every partition of `topics` (name, partitions)
/// once, which needs a leader for each.
pub(super) fn wait_for_leaders_of(servers: &str, topics: &[(String, i32)]) -> Result<BaseConsumer> {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()?;
    let expected: i32 = topics.iter().map(|(_, p)| p).sum();
    let started = Instant::now();
    loop {
        let ready = probe
            .offsets_for_times(at_end(topics)?, Duration::from_secs(10))
            .is_ok_and(|found| {
                found.count() == expected as usize
                    && found.elements().iter().all(|e| e.error().is_ok())
            });
        if ready {
            return Ok(probe);
        }
        if started.elapsed() > Duration::from_secs(120) {
            let names = match topics {
                [(one, _)] => one.clone(),
                _ => format!("{} topics", topics.len()),
            };
            return Err(
                format!("{names} on {servers}: partitions without a leader after 120 s").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Deletes every topic on `servers` whose name `matches`.
pub(super) fn delete_topics_matching(servers: &str, matches: impl Fn(&str) -> bool) -> Result<()> {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()?;
    let metadata = probe.fetch_metadata(None, Duration::from_secs(10))?;
    let doomed: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|t| matches(t))
        .collect();
    if doomed.is_empty() {
        return Ok(());
    }
    for r in block_on(admin(servers)?.delete_topics(&doomed, &AdminOptions::new()))? {
        r.map_err(|(t, e)| format!("deleting {t}: {e}"))?;
    }
    Ok(())
}

pub(super) fn delete_topic(servers: &str, topic: &str) -> Result<()> {
    for r in block_on(admin(servers)?.delete_topics(&[topic], &AdminOptions::new()))? {
        r.map_err(|(t, e)| format!("deleting {t}: {e}"))?;
    }
    Ok(())
}

/// Writes `records` of `size` bytes round-robin over `topics`, each record of a topic to
/// its next partition.
pub(super) fn preload(
    topics: &[&str],
    records: u64,
    size: usize,
    partitions: i32,
    txn: Option<u64>,
) -> Result<()> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", PRIMARY)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "262144");
    if txn.is_some() {
        config.set(
            "transactional.id",
            format!("strait-bench-{}", std::process::id()),
        );
    }
    let producer: BaseProducer = config.create()?;
    if txn.is_some() {
        producer.init_transactions(Duration::from_secs(60))?;
        producer.begin_transaction()?;
    }
    // Incompressible-looking payload, different per record.
    let mut payload = vec![0u8; size];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let started = Instant::now();
    for i in 0..records {
        for chunk in payload.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        let n = topics.len() as u64;
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topics[(i % n) as usize])
            .partition((i / n % partitions as u64) as i32)
            .payload(&payload);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
        if let Some(n) = txn {
            if (i + 1) % n == 0 {
                producer.commit_transaction(Duration::from_secs(300))?;
                if i + 1 < records {
                    producer.begin_transaction()?;
                }
            }
        }
    }
    if txn.is_some_and(|n| records % n != 0) {
        producer.commit_transaction(Duration::from_secs(300))?;
    }
    producer.flush(Duration::from_secs(300))?;
    eprintln!("preloaded in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `at` as Unix seconds with milliseconds, as in Strait's log timestamps.
pub(super) fn unix_seconds(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", since.as_secs(), since.subsec_millis())
}
