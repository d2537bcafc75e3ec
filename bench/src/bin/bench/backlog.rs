//! The backlog copy: every system copies the same preloaded backlog in turn, with
//! failover exactness, `strait verify`'s rate and offset sync's cost measured beside it.

use super::*;

/// Scenario 1 (and 4): copies a preloaded backlog with each system in turn, `runs` times;
/// with `extras`, also the failover exactness of groups and Kafka's perf tools.
pub(super) fn backlog(
    bin_dir: &std::path::Path,
    records: u64,
    size: usize,
    partitions: i32,
    runs: u64,
    extras: bool,
) -> Result<serde_json::Value> {
    println!(
        "\n## Backlog copy: {records} records of {size} B in {partitions} partitions, {runs} runs"
    );
    let bin_dir = bin_dir.to_path_buf();
    let stamp = format!("{}p{partitions}", std::process::id());
    let source = format!("bench-{stamp}");
    create_topic(PRIMARY, &source, partitions)?;
    eprintln!("preloading {records} records of {size} B into {source} ({partitions} partitions)");
    let txn = options().txn;
    preload(&[&source], records, size, partitions, txn)?;
    warm_up(&source)?;
    warm_up_copy(&bin_dir, &source, partitions, records)?;
    // The failover arithmetic needs a source without offset gaps (see failover.rs), so
    // a transactional backlog (`--offset-sync`) skips it.
    let failover_points = if extras && txn.is_none() {
        Some(failover::stop_groups(&source, partitions)?)
    } else {
        None
    };
    let systems = systems_to_measure("strait,mm2,ceiling");

    let mut samples = Vec::new();
    let mut sync_samples = Vec::new();
    let mut verify_samples = Vec::new();
    let mut failover_samples = Vec::new();
    let mut tool_samples = Vec::new();
    let verify = options().verify;
    // One unmeasured round of every system first (see `warm_up_copy`), unless skipped.
    let unmeasured = u64::from(!options().no_warm_up_copy);
    for round in 0..unmeasured + runs {
        let warming = round < unmeasured;
        let run = round.saturating_sub(unmeasured);
        let label = if warming {
            "warm-up (not counted)".to_string()
        } else {
            format!("run {run}")
        };
        // Alternate which goes first, so none always meets a cold or a warm broker.
        let mut order = systems.clone();
        order.rotate_left(run as usize % systems.len());
        for system in order {
            let system = system.as_str();
            let alias = if warming {
                format!("{}w", system.replace('-', ""))
            } else {
                format!("{}{run}", system.replace('-', ""))
            };
            // MirrorMaker 2 runs with identity naming; the others write `<alias>.<topic>`.
            let target = if system == "mm2" {
                source.clone()
            } else {
                format!("{alias}.{source}")
            };
            if system.starts_with("ceiling") && options().only_strait {
                continue;
            }
            create_topic(SECONDARY, &target, partitions)?;
            // The client that reads the target's end offsets, answered once before the
            // system starts: a new client's first answer for a new topic can take half a
            // second, which would count as the system's time to the first record.
            let watcher = wait_for_leaders(SECONDARY, &target, partitions)?;
            let dir = std::env::temp_dir().join(format!("strait-bench-{stamp}-{alias}"));
            std::fs::create_dir_all(&dir)?;
            let child = match system {
                "strait" => spawn_strait(&bin_dir, &dir, &alias, &source, true, false)?,
                "strait-nosync" => spawn_strait(&bin_dir, &dir, &alias, &source, false, false)?,
                "strait-alt" => spawn_strait(&bin_dir, &dir, &alias, &source, true, true)?,
                "mm2" => mm2::spawn(&dir, &alias, &source)?,
                "ceiling" | "ceiling-bare" | "ceiling-batch" => {
                    let mut ceiling = wrapped(bin_dir.join("ceiling"));
                    if system == "ceiling-bare" {
                        ceiling.env("CEILING_DROP_HEADERS", "1");
                    }
                    if system == "ceiling-batch" {
                        ceiling.env("CEILING_BATCH", "1");
                    }
                    ceiling
                        .args([PRIMARY, SECONDARY, &source, &target])
                        .stdout(Stdio::null())
                        .stderr(Stdio::inherit())
                        .spawn()?
                }
                other => return Err(format!("unknown system '{other}' in --systems").into()),
            };
            let (mut sample, child) = measure(
                system,
                child,
                &watcher,
                &[(target.clone(), partitions)],
                records as i64,
            )?;
            sample.run = run;
            if system == "strait" && systems.iter().any(|s| s == "strait-nosync") {
                let s = offset_sync_cost(&alias, &source, partitions)?;
                eprintln!(
                    "{label}  strait: offset map {} records / {} keys / {} B; checkpoint lag {:.2} s",
                    s.map_records, s.map_keys, s.map_bytes, s.checkpoint_lag
                );
                if !warming {
                    sync_samples.push(s);
                }
            }
            if let Some(points) = failover_points
                .as_ref()
                .filter(|_| system == "strait" || system == "mm2")
            {
                let outcomes = failover::outcomes(points, &target)?;
                eprintln!(
                    "{label} {system:>7}: failover of {} groups: {} records re-read, {} missed, {} partitions without an offset",
                    outcomes.len(),
                    outcomes.iter().map(|o| o.reread).sum::<i64>(),
                    outcomes.iter().map(|o| o.missed).sum::<i64>(),
                    outcomes.iter().map(|o| o.unsynced).sum::<usize>(),
                );
                failover::forget_on_target(points)?;
                if !warming {
                    failover_samples.push((system.to_string(), outcomes));
                }
            }
            stop(child)?;
            if system == "mm2" {
                mm2::clean_up(&alias)?;
            }
            if verify && system == "strait" {
                let seconds = time_verify(&bin_dir, &dir.join("strait.toml"), records)?;
                eprintln!(
                    "{label}  verify: {seconds:.2} s, {:.0} MB/s (replication {:.0} MB/s)",
                    mb(records, size) / seconds,
                    mb(records, size) / sample.seconds
                );
                if !warming {
                    verify_samples.push((sample.seconds, seconds));
                }
            }
            eprintln!(
                "{label} {system:>7}: {:.2} s ({:.2} s to the first record), {:.0} records/s, {:.1} CPU s, {:.0} MB peak RSS; brokers {:.1} CPU s",
                sample.seconds,
                sample.startup,
                records as f64 / sample.seconds,
                sample.cpu_seconds,
                sample.peak_rss_mb,
                sample.brokers_cpu_seconds
            );
            if !warming {
                samples.push(sample);
            }
            delete_topic(SECONDARY, &target)?;
            if system.starts_with("strait") {
                // Strait's own topics on the target (heartbeat copy, offset map,
                // checkpoints), so that no run starts from an earlier run's leftovers.
                let own = [
                    format!("{alias}.{HEARTBEAT_TOPIC}"),
                    format!("__strait.offsets.{source}.{alias}"),
                    format!("__strait.checkpoints.{source}.{alias}"),
                ];
                delete_topics_matching(SECONDARY, |t| own.iter().any(|o| o == t))?;
            }
            // The broker removes the files a second later (scripts/kafka.sh sets
            // log.segment.delete.delay.ms=1000); let that happen before the next run.
            std::thread::sleep(Duration::from_secs(5));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    if extras && !options().no_tools {
        for run in 0..runs {
            let produce = kafka_tools::produce_rate(run, records, size, partitions)?;
            let consume = kafka_tools::consume_rate(&source, records)?;
            eprintln!("run {run} kafka perf tools: produce {produce:.0} MB/s (secondary), consume {consume:.0} MB/s (primary)");
            tool_samples.push((produce, consume));
        }
    }
    if let Some(points) = &failover_points {
        failover::forget_on_source(points)?;
    }
    delete_topic(PRIMARY, &source)?;
    delete_topics_matching(PRIMARY, |t| t == HEARTBEAT_TOPIC)?;
    let mut json = report(&samples, records, size);
    if extras && samples.iter().any(|s| s.system == "mm2") {
        print_mm2_settings();
        json["mm2_settings"] = mm2::SETTINGS
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
    }
    if !failover_samples.is_empty() {
        json["failover"] = report_failover(&failover_samples);
    }
    if !tool_samples.is_empty() {
        json["kafka_perf_tools"] = report_tools(&tool_samples, size);
    }
    if !verify_samples.is_empty() {
        report_verify(&verify_samples, records, size);
    }
    if !sync_samples.is_empty() {
        report_offset_sync(&samples, &sync_samples, records, partitions, txn);
    }
    Ok(json)
}

/// Runs `strait verify` on a finished run's config; fails unless every record matched.
pub(super) fn time_verify(
    bin_dir: &std::path::Path,
    config: &std::path::Path,
    records: u64,
) -> Result<f64> {
    let started = Instant::now();
    let out = Command::new(bin_dir.join("strait"))
        .args(["verify", "--output", "json", "--config"])
        .arg(config)
        .stderr(Stdio::inherit())
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "strait verify failed: {}",
            String::from_utf8_lossy(&out.stdout)
        )
        .into());
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let compared: u64 = report[0]["partitions"]
        .as_array()
        .ok_or("verify printed no partitions")?
        .iter()
        .filter_map(|p| p["records"].as_u64())
        .sum();
    if compared != records {
        return Err(format!("verify compared {compared} records, expected {records}").into());
    }
    Ok(seconds)
}

pub(super) fn report_verify(samples: &[(f64, f64)], records: u64, size: usize) {
    println!("\n| run | replication MB/s | verify MB/s | verify / replication |");
    println!("|---|---|---|---|");
    for (i, (copy, verify)) in samples.iter().enumerate() {
        println!(
            "| {i} | {:.0} | {:.0} | {:.2} |",
            mb(records, size) / copy,
            mb(records, size) / verify,
            copy / verify
        );
    }
    let ratios: Vec<f64> = samples.iter().map(|(c, v)| c / v).collect();
    let verify: Vec<f64> = samples.iter().map(|(_, v)| mb(records, size) / v).collect();
    println!(
        "\nverify: median {:.0} MB/s; median verify/replication rate ratio {:.2} (goal: >= 1)",
        median(verify),
        median(ratios)
    );
}

/// With Strait still running after a copy: commits a group at the source's end offsets,
/// times how long until the secondary holds exact checkpoints for all of them, and reads
/// the offset map topic's size.
pub(super) fn offset_sync_cost(alias: &str, source: &str, partitions: i32) -> Result<SyncSample> {
    let group = format!("bench-app-{alias}");
    let committer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", PRIMARY)
        .set("group.id", &group)
        .create()?;
    let mut ends = BTreeMap::new();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = committer.fetch_watermarks(source, p, Duration::from_secs(10))?;
        ends.insert(p, high);
        tpl.add_partition_offset(source, p, rdkafka::Offset::Offset(high))?;
    }
    // One long-lived reader of the checkpoint topic, so the lag measured is Strait's, not
    // a new client's start-up.
    let checkpoints = format!("__strait.checkpoints.{source}.{alias}");
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", SECONDARY)
        .set("group.id", "strait-bench-checkpoint-watcher")
        .set("fetch.wait.max.ms", "20")
        .create()?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment.add_partition_offset(&checkpoints, 0, rdkafka::Offset::Beginning)?;
    watcher.assign(&assignment)?;
    committer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)?;
    let committed_at = Instant::now();
    let mut exact = std::collections::BTreeSet::new();
    let checkpoint_lag = loop {
        use rdkafka::message::Message;
        if let Some(Ok(m)) = watcher.poll(Duration::from_millis(50)) {
            let c: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
            let partition = c["partition"].as_i64().unwrap_or(-1) as i32;
            if c["group"] == group.as_str()
                && c["target_offset"].is_i64()
                && ends
                    .get(&partition)
                    .is_some_and(|end| c["source_offset"] == *end)
            {
                exact.insert(partition);
            }
        }
        if exact.len() >= partitions as usize {
            break committed_at.elapsed().as_secs_f64();
        }
        if committed_at.elapsed() > Duration::from_secs(120) {
            return Err(format!("no exact checkpoints for {group} after 120 s").into());
        }
    };
    let map = read_topic(SECONDARY, &format!("__strait.offsets.{source}.{alias}"))?;
    let keys: std::collections::BTreeSet<&Vec<u8>> = map.iter().map(|(k, _)| k).collect();
    Ok(SyncSample {
        map_records: map.len() as i64,
        map_bytes: map.iter().map(|(k, v)| k.len() + v.len()).sum(),
        map_keys: keys.len(),
        checkpoint_lag,
    })
}

/// Every (key, value) of a single-partition topic.
pub(super) fn read_topic(servers: &str, topic: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use rdkafka::message::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "strait-bench-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let (low, high) = match consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)) {
        Ok(w) => w,
        Err(_) => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    if high <= low {
        return Ok(out);
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                out.push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
                if m.offset() + 1 >= high {
                    return Ok(out);
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Err(format!("reading {topic} took over 60 s").into())
}

pub(super) fn report_offset_sync(
    samples: &[Sample],
    sync: &[SyncSample],
    records: u64,
    partitions: i32,
    txn: Option<u64>,
) {
    let secs = |system: &str| {
        median(
            samples
                .iter()
                .filter(|s| s.system == system)
                .map(|s| s.seconds)
                .collect(),
        )
    };
    let (on, off) = (secs("strait"), secs("strait-nosync"));
    let gaps = txn.map_or(0, |n| records / n) * partitions as u64;
    println!(
        "\nOffset sync: {records} records, {} source offset gaps (commit markers); median {on:.2} s \
         with offset sync, {off:.2} s without: throughput cost {:.1}%",
        gaps,
        100.0 * (on - off) / off
    );
    println!(
        "Offset map topic after a run (median): {:.0} records, {:.0} distinct keys, {:.0} KB; \
         checkpoint lag (group commit → exact checkpoint on the secondary) median {:.2} s",
        median(sync.iter().map(|s| s.map_records as f64).collect()),
        median(sync.iter().map(|s| s.map_keys as f64).collect()),
        median(sync.iter().map(|s| s.map_bytes as f64 / 1e3).collect()),
        median(sync.iter().map(|s| s.checkpoint_lag).collect()),
    );
}
