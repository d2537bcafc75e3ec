//! Running a copier and measuring it: Strait (and its A/B twin), the loop or MirrorMaker 2,
//! timed from the target's end offsets.

use super::*;

/// `--alt`: the environment overrides (`KEY=VALUE;…`) of the `strait-alt` system.
pub(super) fn alt_settings() -> Result<Vec<(String, String)>> {
    options()
        .alt
        .split(';')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
            None => Err(format!("--alt: '{kv}' is not KEY=VALUE").into()),
        })
        .collect()
}

pub(super) fn spawn_strait(
    bin_dir: &std::path::Path,
    dir: &std::path::Path,
    alias: &str,
    source: &str,
    offset_sync: bool,
    alt: bool,
) -> Result<Child> {
    // Each run gets its own map and checkpoint topics: runs replicate the same source
    // topic into different target topics, and one map must describe one target.
    let sync = if offset_sync {
        format!(
            "[flows.bench.offset_sync]\nmap_topic = \"__strait.offsets.{source}.{alias}\"\n\
             checkpoint_topic = \"__strait.checkpoints.{source}.{alias}\"\n\
             checkpoint_interval = \"1s\"\n\
             groups = [\"bench-app-.*\", \"bench-failover-.*\"]\nsync_group_offsets = true\n"
        )
    } else {
        "[flows.bench.offset_sync]\nenabled = false\n".to_string()
    };
    let config = dir.join("strait.toml");
    // The source cluster's alias names the target topic (`<alias>.<topic>`), so each run
    // writes a fresh topic.
    std::fs::write(
        &config,
        format!(
            r#"[http]
listen = "127.0.0.1:0"
[clusters.{alias}]
bootstrap_servers = "{PRIMARY}"
[clusters.secondary]
bootstrap_servers = "{SECONDARY}"
[flows.bench]
source = "{alias}"
target = "secondary"
topics = ["{source}"]
naming = "prefix"
group_id = "strait-bench-{alias}-{pid}"
{extra}
{sync}
"#,
            pid = std::process::id(),
            // Extra flow settings for experiments, e.g. --flow-extra 'provenance_header = false'.
            extra = options().flow_extra.replace("\\n", "\n")
        ),
    )?;
    let log = std::fs::File::create(dir.join("strait.log"))?;
    // The `strait-alt` system: another build and/or other settings.
    let (binary, env) = if alt {
        let binary = options()
            .alt_bin
            .clone()
            .unwrap_or_else(|| bin_dir.join("strait"));
        (binary, alt_settings()?)
    } else {
        (bin_dir.join("strait"), Vec::new())
    };
    Ok(wrapped(binary)
        .envs(env)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", &options().log)
        .stdout(Stdio::null())
        .stderr(if options().trace {
            Stdio::inherit()
        } else {
            log.into()
        })
        .spawn()?)
}

/// Waits until `target` holds `records`, sampling the process's CPU and RSS meanwhile.
pub(super) fn measure(
    system: &str,
    mut child: Child,
    watcher: &BaseConsumer,
    targets: &[(String, i32)],
    records: i64,
) -> Result<(Sample, Child)> {
    let started = Instant::now();
    let pid = child.id();
    let ticks = clock_ticks();
    let brokers_before = brokers_cpu_seconds(ticks);
    let by_thread = options().broker_threads.then(brokers_thread_ticks);
    let (mut cpu, mut rss) = (0.0, 0.0);
    let mut startup = None;
    // --trace prints progress twice a second, to see stalls.
    let trace = options().trace;
    let mut last_trace = Instant::now();
    loop {
        if let Some((c, r)) = proc_usage(pid, ticks) {
            cpu = c;
            rss = f64::max(rss, r);
        }
        let copied = end_offsets_sum(watcher, targets);
        if trace && last_trace.elapsed() >= Duration::from_millis(500) {
            eprintln!(
                "  {system} t={:.1}s copied={copied}",
                started.elapsed().as_secs_f64()
            );
            last_trace = Instant::now();
        }
        if copied > 0 && startup.is_none() {
            startup = Some(started.elapsed().as_secs_f64());
            if trace {
                // Wall-clock moments, to line up with the system's own log.
                eprintln!(
                    "  {system} spawned at {} s, first record seen at {} s (Unix time)",
                    unix_seconds(SystemTime::now() - started.elapsed()),
                    unix_seconds(SystemTime::now())
                );
            }
        }
        if copied >= records {
            break;
        }
        if let Some(status) = child.try_wait()? {
            // It may have finished since `copied` was read.
            let copied = end_offsets_sum(watcher, targets);
            if copied >= records {
                break;
            }
            {
                return Err(
                    format!("{system} exited ({status}) with {copied}/{records} copied").into(),
                );
            }
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            return Err(
                format!("{system} copied only {copied}/{records} in {RUN_TIMEOUT:?}").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seconds = started.elapsed().as_secs_f64();
    let brokers_cpu = brokers_cpu_seconds(ticks) - brokers_before;
    if let Some(before) = &by_thread {
        print_brokers_threads(system, before, ticks);
    }
    if let Some((c, r)) = proc_usage(pid, ticks) {
        cpu = c;
        rss = f64::max(rss, r);
    }
    Ok((
        Sample {
            run: 0,
            system: system.to_string(),
            seconds,
            startup: startup.unwrap_or(seconds),
            cpu_seconds: cpu,
            peak_rss_mb: rss,
            brokers_cpu_seconds: brokers_cpu,
        },
        child,
    ))
}

/// `--systems` (comma-separated), or `default`.
pub(super) fn systems_to_measure(default: &str) -> Vec<String> {
    options()
        .systems
        .as_deref()
        .unwrap_or(default)
        .split(',')
        .map(str::to_string)
        .collect()
}

/// Every partition of `topics` (name, partitions), at its end: what the copy's progress
/// and the leaders' readiness are read from.
pub(super) fn at_end(
    topics: &[(String, i32)],
) -> rdkafka::error::KafkaResult<rdkafka::TopicPartitionList> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (topic, partitions) in topics {
        for p in 0..*partitions {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::End)?;
        }
    }
    Ok(tpl)
}

/// The sum of the end offsets of topics (name, partitions), in one request per broker
/// (1,200 requests one by one took seconds, which blurred the timing); partitions that
/// cannot be read count 0.
pub(super) fn end_offsets_sum(watcher: &BaseConsumer, topics: &[(String, i32)]) -> i64 {
    let Ok(tpl) = at_end(topics) else {
        return 0;
    };
    watcher
        .offsets_for_times(tpl, Duration::from_secs(10))
        .map_or(0, |found| {
            found
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    rdkafka::Offset::Offset(o) if e.error().is_ok() => Some(o),
                    _ => None,
                })
                .sum()
        })
}

/// A command for Strait or the ceiling loop; `--wrap 'valgrind --tool=callgrind …'`
/// runs them under another program, to profile both the same way (the warm-up copies are
/// not wrapped). Such a run's times and CPU seconds measure that program too.
pub(super) fn wrapped(binary: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut words = options().wrap.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(binary);
            command
        }
        None => Command::new(binary),
    }
}

/// SIGTERM, then SIGKILL after a minute.
pub(super) fn stop(mut child: Child) -> Result<()> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
