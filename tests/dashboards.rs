//! The Grafana dashboards against a real Prometheus (Debian's `prometheus` package, which
//! `scripts/test.sh` installs) scraping a Strait that replicates between the real test
//! clusters and runs a staged migration up to its last gate. Every PromQL expression in
//! every dashboard must evaluate without error and return at least one series.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(scrape_port: u16) -> Self {
        let binary = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: strait\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{scrape_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start '{binary}' ({e}): scripts/test.sh installs Debian's prometheus package")
            });
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// An instant query; `Err` carries Prometheus's error.
    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let raw = http_get(
            self.port,
            &format!("/api/v1/query?query={}", encode(promql)),
        )
        .ok_or("no answer from prometheus")?;
        let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: Value = serde_json::from_str(body).map_err(|e| format!("{e}: {raw}"))?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Grafana's variables, as the dashboards would expand them with "All" selected.
fn expand(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$lag_budget_seconds", "60")
        .replace("$flow", ".*")
        .replace("$topic", ".*")
}

fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut found: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, v)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        found.len(),
        2,
        "expected the two dashboards in {}",
        dir.display()
    );
    found
}

/// Every panel, including those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

#[test]
fn every_dashboard_query_returns_series_from_a_real_prometheus() {
    // A migration that runs through verify and then waits at its last (manual) gate, so
    // replication, offset sync and migration metrics all exist.
    let flow = unique("dash");
    let topic = unique("dash-orders");
    let group = unique("dash-app");
    create_topic(PRIMARY, &topic, 3, &[]);
    produce_simple(PRIMARY, &topic, 3, 3_000, "dash");
    commit_offsets(PRIMARY, &group, &topic, &[(0, 400), (1, 500), (2, 600)]);
    let gates = "[migration.gates.mirror]\napproval = \"auto\"\n\
                 [migration.gates.move_producers]\napproval = \"auto\"\nproducers_idle_for = \"1s\"\n\
                 [migration.gates.start_consumers]\napproval = \"manual\"\n";
    let config = format!(
        "{}\n[migration]\nflow = \"{flow}\"\ngroups = [\"{group}\"]\n{gates}",
        flow_config(
            &flow,
            &topic,
            "identity",
            &format!(
                "[flows.{flow}.offset_sync]\ncheckpoint_interval = \"1s\"\ngroups = [\"{group}\"]"
            ),
        )
    );
    let strait = Strait::spawn_command(&config, &["migrate", "run"]);
    let prometheus = Prometheus::start(strait.port);

    // On a timeout, say where the migration stood: a stage that never passes is the
    // failure this test exists to show.
    let mut last_status = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let raw = http_get(strait.port, "/status").unwrap_or_default();
        let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
        if let Ok(status) = serde_json::from_str::<Value>(body) {
            last_status = status;
        }
        if last_status["migration"]["stage"] == "start_consumers" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the migration did not reach start_consumers in 120 s; last /status: {last_status}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_until(
        Duration::from_secs(30),
        "prometheus scraping strait",
        || {
            prometheus
                .query("up{job=\"strait\"} == 1")
                .is_ok_and(|r| !r.is_empty())
        },
    );
    // A few more scrapes, so that rate() windows hold at least two samples after the
    // migration's last metrics appeared.
    std::thread::sleep(Duration::from_secs(5));

    let mut failures = Vec::new();
    let mut checked = 0;
    for (path, dashboard) in dashboards() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // Template variables: label_values(selector, label) must list something.
        for var in dashboard["templating"]["list"].as_array().unwrap() {
            let Some(q) = var["query"]["query"].as_str() else {
                continue;
            };
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{name}: unexpected variable query {q}"));
            let (selector, label) = inner.rsplit_once(',').unwrap();
            let promql = expand(&format!("count by ({}) ({selector})", label.trim()));
            match prometheus.query(&promql) {
                Ok(r) if r.is_empty() => failures.push(format!("{name} variable {q}: no values")),
                Ok(_) => {}
                Err(e) => failures.push(format!("{name} variable {q}: {e}")),
            }
            checked += 1;
        }
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or("?");
            if panel["type"] == "row" {
                continue;
            }
            let unit = panel["fieldConfig"]["defaults"]["unit"].as_str();
            assert!(unit.is_some(), "{name} panel '{title}' has no unit");
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                match prometheus.query(&expand(expr)) {
                    Ok(r) if r.is_empty() => {
                        failures.push(format!("{name} '{title}': no series for {expr}"))
                    }
                    Ok(_) => {}
                    Err(e) => failures.push(format!("{name} '{title}': {e} in {expr}")),
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} expressions found");
    assert!(
        failures.is_empty(),
        "{} of {checked} dashboard expressions failed:\n{}\n--- /metrics ---\n{}",
        failures.len(),
        failures.join("\n"),
        strait.metrics()
    );
}
