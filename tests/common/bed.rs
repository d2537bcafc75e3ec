//! The test bed itself (scripts/kafka.sh): stopping and restarting clusters, quotas and ACLs.

use super::*;

/// Runs `scripts/kafka.sh` (e.g. `stop secondary`), failing the test if it fails.
pub fn kafka_sh(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    let status = Command::new(script).args(args).status().unwrap();
    assert!(status.success(), "scripts/kafka.sh {args:?} failed");
}

/// Starts a test cluster (`primary` or `secondary`) again when dropped, whatever happens
/// in a test that stopped it.
pub struct ClusterBack(pub &'static str);

impl Drop for ClusterBack {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
        let _ = Command::new(script).args(["start", self.0]).status();
    }
}

/// A broker-enforced produce quota for one client id, removed again when dropped. Set
/// with Kafka's own `kafka-configs` tool (rdkafka has no client-quota admin API).
pub struct ProducerQuota {
    servers: &'static str,
    client_id: &'static str,
}

impl ProducerQuota {
    pub fn set(servers: &'static str, client_id: &'static str, bytes_per_second: u64) -> Self {
        let config = format!("producer_byte_rate={bytes_per_second}");
        assert!(
            kafka_configs(servers, client_id, &["--add-config", &config]),
            "setting {config} for client {client_id} on {servers} failed"
        );
        Self { servers, client_id }
    }
}

impl Drop for ProducerQuota {
    fn drop(&mut self) {
        let _ = kafka_configs(
            self.servers,
            self.client_id,
            &["--delete-config", "producer_byte_rate"],
        );
    }
}

/// What `scripts/kafka.sh <what>` prints (`classpath`, `tls-ca`), trimmed.
pub fn kafka_sh_output(what: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    let out = Command::new(script).arg(what).output().unwrap();
    assert!(out.status.success(), "scripts/kafka.sh {what} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Adds or removes (`change` = `--add` or `--remove`) ACLs with Kafka's own `kafka-acls`
/// tool over a cluster's PLAINTEXT listener, whose clients are super users on the test
/// bed. `args` are the tool's: principal, operations and resource.
pub fn kafka_acls(servers: &str, change: &str, args: &[&str]) {
    let out = Command::new("java")
        .args(["-cp", &kafka_sh_output("classpath")])
        .arg("org.apache.kafka.tools.AclCommand")
        .args(["--bootstrap-server", servers, change, "--force"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka-acls {change} {args:?} on {servers} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn kafka_configs(servers: &str, client_id: &str, change: &[&str]) -> bool {
    Command::new("java")
        .args([
            "-cp",
            &kafka_sh_output("classpath"),
            "kafka.admin.ConfigCommand",
        ])
        .args(["--bootstrap-server", servers, "--alter"])
        .args(["--entity-type", "clients", "--entity-name", client_id])
        .args(change)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
