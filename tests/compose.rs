//! `docker-compose.yml` and the `Dockerfile`, checked statically: there is no Docker engine
//! on the machines that run the tests, so nothing here builds or starts a container. What
//! it does check: the files parse, every mounted file exists, every image is pinned (Kafka
//! at the test bed's version), published ports are unique, on 127.0.0.1 and clear of the
//! test bed's, the services refer to each other by the right names and ports, the Strait
//! config it mounts passes `strait check-config --offline`, and the image is a multi-stage
//! build that runs as a non-root user.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The test bed's client and controller ports (scripts/kafka.sh).
const TEST_BED_PORTS: [u16; 4] = [19092, 19093, 29092, 29093];

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    config::Config::builder()
        .add_source(config::File::from_str(
            &read(path),
            config::FileFormat::Yaml,
        ))
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .unwrap_or_err(path)
}

trait OrPanic<T> {
    fn unwrap_or_err(self, what: &str) -> T;
}

impl<T, E: std::fmt::Display> OrPanic<T> for Result<T, E> {
    fn unwrap_or_err(self, what: &str) -> T {
        self.unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

fn kafka_version() -> String {
    let pom = read("testbed/pom.xml");
    let start = pom.find("<kafka.version>").unwrap() + "<kafka.version>".len();
    let end = pom[start..].find('<').unwrap() + start;
    pom[start..end].to_string()
}

/// `name:tag`, with a tag that names a version rather than a moving target.
fn assert_pinned(image: &str, whose: &str) {
    let (_, tag) = image
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{whose}: image {image} has no tag"));
    assert!(
        tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()),
        "{whose}: image {image} is not pinned to a version"
    );
}

fn services(compose: &Value) -> &serde_json::Map<String, Value> {
    compose["services"].as_object().unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_file_is_complete_and_consistent() {
    let compose = yaml("docker-compose.yml");
    let services = services(&compose);
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    for wanted in [
        "primary",
        "secondary",
        "loadgen",
        "consumer",
        "strait",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(wanted), "no '{wanted}' service in {names:?}");
    }

    let version = kafka_version();
    let mut host_ports = BTreeSet::new();
    for (name, service) in services {
        // Images: pinned; Kafka's is the test bed's version; Strait's is built here.
        match (service["image"].as_str(), service.get("build")) {
            (_, Some(build)) => {
                let context = build.as_str().unwrap_or(".");
                assert!(
                    Path::new(ROOT).join(context).join("Dockerfile").is_file(),
                    "{name}: no Dockerfile in build context {context}"
                );
            }
            (Some(image), None) => {
                assert_pinned(image, name);
                if image.starts_with("apache/kafka:") {
                    assert_eq!(
                        image,
                        format!("apache/kafka:{version}"),
                        "{name}: Kafka image differs from the test bed's version"
                    );
                }
            }
            (None, None) => panic!("{name}: neither image nor build"),
        }
        // Bind mounts: the file or directory exists in the repository.
        for volume in strings(&service["volumes"]) {
            let source = volume.split(':').next().unwrap();
            assert!(
                source.starts_with("./"),
                "{name}: {volume} is not a bind mount of the repository"
            );
            assert!(
                Path::new(ROOT).join(source).exists(),
                "{name}: mounted {source} does not exist"
            );
        }
        // Ports: published on 127.0.0.1 only, each host port once, none of the test bed's.
        for port in strings(&service["ports"]) {
            let parts: Vec<&str> = port.split(':').collect();
            assert_eq!(
                parts.len(),
                3,
                "{name}: port {port} must be 127.0.0.1:HOST:CONTAINER"
            );
            assert_eq!(
                parts[0], "127.0.0.1",
                "{name}: port {port} is published beyond 127.0.0.1"
            );
            let host: u16 = parts[1].parse().unwrap();
            assert!(
                host_ports.insert(host),
                "{name}: host port {host} published twice"
            );
            assert!(
                !TEST_BED_PORTS.contains(&host),
                "{name}: host port {host} clashes with the test bed"
            );
        }
        // depends_on names existing services.
        if let Some(deps) = service["depends_on"].as_object() {
            for dep in deps.keys() {
                assert!(
                    names.contains(dep.as_str()),
                    "{name} depends on unknown {dep}"
                );
            }
        }
        for dep in strings(&service["depends_on"]) {
            assert!(
                names.contains(dep.as_str()),
                "{name} depends on unknown {dep}"
            );
        }
    }

    // Strait's mounted config is valid offline, and Prometheus scrapes the port it serves.
    let strait = &services["strait"];
    let mount = strings(&strait["volumes"])
        .into_iter()
        .find(|v| v.contains(":/etc/strait/strait.toml"))
        .expect("strait mounts /etc/strait/strait.toml");
    let config_path = mount.split(':').next().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["check-config", "--offline"])
        .arg(Path::new(ROOT).join(config_path))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{config_path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = read(config_path);
    assert!(
        config.contains("listen = \"0.0.0.0:9644\""),
        "Strait must listen beyond the container's loopback"
    );
    for cluster in ["primary:9092", "secondary:9092"] {
        assert!(
            config.contains(cluster),
            "{config_path} does not name {cluster}"
        );
    }
    assert!(strings(&strait["ports"]).contains(&"127.0.0.1:9644:9644".to_string()));

    let prometheus = &services["prometheus"];
    let prom_mount = strings(&prometheus["volumes"])
        .into_iter()
        .find(|v| v.ends_with("/etc/prometheus/prometheus.yml:ro"))
        .expect("prometheus mounts its config");
    let prom = yaml(prom_mount.split(':').next().unwrap());
    let targets: Vec<String> = prom["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["static_configs"].as_array().unwrap().iter())
        .flat_map(|s| strings(&s["targets"]))
        .collect();
    assert!(
        targets.contains(&"strait:9644".to_string()),
        "prometheus targets: {targets:?}"
    );

    // Grafana: no login step, the datasource points at the prometheus service, and the
    // dashboards directory is where the provider looks.
    let grafana = &services["grafana"];
    let env = &grafana["environment"];
    assert_eq!(env["GF_AUTH_ANONYMOUS_ENABLED"], "true", "{env}");
    assert_eq!(env["GF_AUTH_DISABLE_LOGIN_FORM"], "true", "{env}");
    let datasources = yaml("dashboards/provisioning/datasources/prometheus.yml");
    assert_eq!(
        datasources["datasources"][0]["url"],
        "http://prometheus:9090"
    );
    assert_eq!(datasources["datasources"][0]["uid"], "prometheus");
    let providers = yaml("dashboards/provisioning/dashboards/strait.yml");
    let path = providers["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(
        strings(&grafana["volumes"]).contains(&format!("./dashboards:{path}:ro")),
        "dashboards not mounted at the provider's path {path}"
    );
}

#[test]
fn dockerfile_is_multi_stage_pinned_and_non_root() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.trim_start().starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "not a multi-stage build: {stages:?}");
    for from in &stages {
        let image = from.split_whitespace().nth(1).unwrap();
        assert_pinned(image, "Dockerfile");
    }
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(
        !last_stage.contains("cargo "),
        "the runtime stage must not build"
    );
    let user = last_stage
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let user = user.split(':').next().unwrap().trim();
    assert!(user != "root" && user != "0", "runs as root: USER {user}");
    assert!(
        read(".dockerignore").lines().any(|l| l.trim() == "target/"),
        ".dockerignore must keep target/ out of the build context"
    );
    // The build uses the lock file and builds the binary the compose file runs.
    assert!(dockerfile.contains("cargo build --release --locked -p strait"));
}
