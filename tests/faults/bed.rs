//! The replicated test bed (`scripts/kafka.sh replicated start`): two clusters of three
//! KRaft nodes, replication factor 3 and `min.insync.replicas=2` by default, and the
//! faults the scenarios inject into them: real signals to real broker processes, and
//! Kafka's own leader-election tool.

use std::process::Command;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The two clusters, by the names `scripts/kafka.sh` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cluster {
    Primary,
    Secondary,
}

impl Cluster {
    pub fn name(self) -> &'static str {
        match self {
            Cluster::Primary => "rprimary",
            Cluster::Secondary => "rsecondary",
        }
    }

    /// Client port of node `n` (1-3).
    pub fn port(self, n: u8) -> u16 {
        let base = match self {
            Cluster::Primary => 17092,
            Cluster::Secondary => 27092,
        };
        base + 100 * (n as u16 - 1)
    }

    /// All three nodes, node 1 first.
    pub fn bootstrap(self) -> String {
        (1..=3)
            .map(|n| format!("127.0.0.1:{}", self.port(n)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The sum of `topic`'s partitions' end offsets, each asked again until it answers
    /// (a leader moving answers NotLeaderForPartition for a moment).
    pub fn end_offsets(self, topic: &str, partitions: i32) -> i64 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        (0..partitions)
            .map(|p| {
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                loop {
                    match consumer.fetch_watermarks(topic, p, Duration::from_secs(10)) {
                        Ok((_, high)) => break high,
                        Err(e) if std::time::Instant::now() < deadline => {
                            eprintln!("end offset of {topic}[{p}]: {e}; asked again");
                            std::thread::sleep(Duration::from_millis(500));
                        }
                        Err(e) => panic!("end offset of {topic}[{p}] on {}: {e}", self.name()),
                    }
                }
            })
            .sum()
    }

    /// The node that leads `partition` of `topic` now.
    pub fn leader_of(self, topic: &str, partition: i32) -> u8 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let leader = md.topics()[0]
            .partitions()
            .iter()
            .find(|p| p.id() == partition)
            .unwrap_or_else(|| panic!("{topic}[{partition}] not in metadata"))
            .leader();
        u8::try_from(leader).unwrap_or_else(|_| panic!("{topic}[{partition}] has no leader"))
    }

    /// The node that leads most partitions of `topic`.
    pub fn busiest_leader(self, topic: &str, partitions: i32) -> u8 {
        let mut led = [0usize; 4];
        for p in 0..partitions {
            led[self.leader_of(topic, p) as usize] += 1;
        }
        (1..=3u8).max_by_key(|n| led[*n as usize]).unwrap()
    }

    /// `scripts/kafka.sh node <what> <cluster> <n>`: start, stop, kill, pause or resume.
    pub fn node(self, what: &str, n: u8) {
        kafka_sh(&["node", what, self.name(), &n.to_string()]);
    }

    /// Moves every partition's leadership back to its preferred replica, with Kafka's own
    /// leader-election tool.
    pub fn elect_preferred_leaders(self) {
        let out = Command::new("java")
            .args(["-cp", &classpath()])
            .args([
                "org.apache.kafka.tools.LeaderElectionCommand",
                "--bootstrap-server",
                &self.bootstrap(),
                "--election-type",
                "preferred",
                "--all-topic-partitions",
            ])
            .output()
            .unwrap();
        // "no election needed" for partitions already led by their preferred replica is
        // reported on stderr with a non-zero status; any other failure is the test's.
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success()
                || text.contains("ElectionNotNeeded")
                || text.contains("not needed"),
            "leader election on {}: {text}",
            self.name()
        );
    }
}

pub fn kafka_sh(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    let out = Command::new(script).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "scripts/kafka.sh {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn classpath() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    let out = Command::new(script).arg("classpath").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Restores every node of both clusters when dropped, so a failed scenario leaves no
/// node down or paused for the next one.
pub struct AllNodesBack;

impl Drop for AllNodesBack {
    fn drop(&mut self) {
        for cluster in [Cluster::Primary, Cluster::Secondary] {
            for n in 1..=3 {
                let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
                let _ = Command::new(script)
                    .args(["node", "resume", cluster.name(), &n.to_string()])
                    .output();
                let _ = Command::new(script)
                    .args(["node", "start", cluster.name(), &n.to_string()])
                    .output();
            }
        }
    }
}

/// How a network fault treats a connection's packets.
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    /// Dropped without an answer: connections stall, and new ones time out.
    Stall,
    /// Answered with a TCP reset: connections fail at once.
    Refuse,
}

/// A firewall rule (iptables, `OUTPUT`, matched on the owner) that cuts every process
/// running as `uid` off from `cluster`'s three nodes until dropped; other processes (the
/// load, the checker, the brokers themselves) are not affected. Needs root and iptables.
pub struct NetworkCut {
    rules: Vec<Vec<String>>,
}

impl NetworkCut {
    pub fn new(uid: u32, cluster: Cluster, how: Cut) -> Self {
        let target: &[&str] = match how {
            Cut::Stall => &["DROP"],
            Cut::Refuse => &["REJECT", "--reject-with", "tcp-reset"],
        };
        let rules: Vec<Vec<String>> = (1..=3)
            .map(|n| {
                let mut rule: Vec<String> = ["OUTPUT", "-p", "tcp", "-m", "owner", "--uid-owner"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                rule.push(uid.to_string());
                rule.extend([
                    "--dport".to_string(),
                    cluster.port(n).to_string(),
                    "-j".to_string(),
                ]);
                rule.extend(target.iter().map(|s| s.to_string()));
                rule
            })
            .collect();
        for rule in &rules {
            iptables("-A", rule);
        }
        Self { rules }
    }
}

impl Drop for NetworkCut {
    fn drop(&mut self) {
        for rule in &self.rules {
            iptables("-D", rule);
        }
    }
}

fn iptables(change: &str, rule: &[String]) {
    let out = Command::new("iptables")
        .arg(change)
        .args(rule)
        .output()
        .expect("iptables (scripts/test.sh installs it)");
    if !out.status.success() && !std::thread::panicking() {
        panic!(
            "iptables {change} {}: {}",
            rule.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
