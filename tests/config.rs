//! Configuration: bad files fail before connecting with a message naming the field, and
//! every example in config/ is valid.
#![allow(clippy::unwrap_used)]

use std::process::Command;

mod common;
use common::strait_err;

fn check(config: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strait.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["check-config", "--offline"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

const CLUSTERS: &str = r#"
[clusters.primary]
bootstrap_servers = "127.0.0.1:19092"
[clusters.secondary]
bootstrap_servers = "127.0.0.1:29092"
"#;

fn flow(body: &str) -> String {
    format!("{CLUSTERS}\n[flows.dr]\nsource = \"primary\"\ntarget = \"secondary\"\n{body}\n")
}

fn assert_rejected(config: &str, expected: &[&str]) {
    let (ok, text) = check(config, &[]);
    assert!(!ok, "accepted:\n{config}");
    for e in expected {
        assert!(text.contains(e), "error should mention {e:?}; got:\n{text}");
    }
}

#[test]
fn a_valid_file_passes() {
    let (ok, text) = check(&flow("topics = [\".*\"]\nnaming = \"prefix\""), &[]);
    assert!(ok, "{text}");
}

#[test]
fn unknown_keys_are_rejected() {
    assert_rejected(
        &flow("topics = [\".*\"]\nnaming = \"prefix\"\ntopic_regex = \"x\""),
        &["topic_regex"],
    );
    assert_rejected(&format!("{CLUSTERS}\n[tunning]\nlinger = \"5ms\"\n[flows.dr]\nsource=\"primary\"\ntarget=\"secondary\"\ntopics=[\".*\"]\nnaming=\"prefix\""), &["tunning"]);
}

#[test]
fn invalid_regex_is_rejected() {
    assert_rejected(
        &flow("topics = [\"orders\", \"pay(ments\"]\nnaming = \"prefix\""),
        &["flows.dr.topics[1]", "pay(ments"],
    );
    assert_rejected(
        &flow("topics = [\".*\"]\ntopics_exclude = [\"[\"]\nnaming = \"prefix\""),
        &["flows.dr.topics_exclude[0]"],
    );
}

#[test]
fn unknown_cluster_is_rejected() {
    let config = format!("{CLUSTERS}\n[flows.dr]\nsource = \"primray\"\ntarget = \"secondary\"\ntopics = [\".*\"]\nnaming = \"prefix\"");
    assert_rejected(&config, &["flows.dr.source", "primray"]);
}

#[test]
fn identity_to_the_same_cluster_is_rejected() {
    let config = format!("{CLUSTERS}\n[flows.loop]\nsource = \"primary\"\ntarget = \"primary\"\ntopics = [\".*\"]\nnaming = \"identity\"");
    assert_rejected(&config, &["flows.loop.naming", "forever"]);
    // Two names for one cluster are caught by their bootstrap servers.
    let alias = format!("{CLUSTERS}\n[clusters.again]\nbootstrap_servers = \"localhost:19092\"\n[flows.loop]\nsource = \"primary\"\ntarget = \"again\"\ntopics = [\".*\"]\nnaming = \"identity\"");
    assert_rejected(&alias, &["flows.loop.naming"]);
    // Prefix naming to the same cluster is fine: copies get new names.
    let prefix = format!("{CLUSTERS}\n[flows.local]\nsource = \"primary\"\ntarget = \"primary\"\ntopics = [\"orders\"]\nnaming = \"prefix\"");
    let (ok, text) = check(&prefix, &[]);
    assert!(ok, "{text}");
}

#[test]
fn identity_flows_in_opposite_directions_must_stamp_every_copy() {
    let both = |a_topics: &str, b_topics: &str, b_naming: &str, stamp: &str| {
        format!(
            "{CLUSTERS}\n[flows.east]\nsource = \"primary\"\ntarget = \"secondary\"\ntopics = {a_topics}\nnaming = \"identity\"\nprovenance_interval = 1\n\
             [flows.west]\nsource = \"secondary\"\ntarget = \"primary\"\ntopics = {b_topics}\nnaming = \"{b_naming}\"\n{stamp}"
        )
    };
    // West would put the header on every 1,000th copy only (the default): east could not
    // tell the copies in between from the secondary's own records.
    assert_rejected(
        &both(r#"["orders"]"#, r#"["orders"]"#, "identity", ""),
        &[
            "flows.west.provenance_interval",
            "'east'",
            "'west'",
            "both ways",
            "provenance_interval = 1",
            "prefix",
        ],
    );
    // A regex could select a topic of the other list: it counts as the same topics.
    assert_rejected(
        &both(r#"[".*"]"#, r#"["payments"]"#, "identity", ""),
        &["flows.west.provenance_interval", "'east'", "'west'"],
    );
    assert_rejected(
        &both(
            r#"["orders"]"#,
            r#"["orders"]"#,
            "identity",
            "provenance_interval = 1\nprovenance_header = false\n[flows.west.offset_sync]\nenabled = false",
        ),
        &["flows.west.provenance_interval", "provenance_header = true"],
    );
    // The same cluster under two names is caught by its bootstrap servers.
    let alias = format!(
        "{CLUSTERS}\n[clusters.again]\nbootstrap_servers = \"localhost:19092\"\n\
         [flows.east]\nsource = \"primary\"\ntarget = \"secondary\"\ntopics = [\"orders\"]\nnaming = \"identity\"\n\
         [flows.west]\nsource = \"secondary\"\ntarget = \"again\"\ntopics = [\"orders\"]\nnaming = \"identity\""
    );
    assert_rejected(&alias, &["both ways"]);
    // Their groups cannot be translated yet: no group sync, no migration, no translation.
    let pair = both(
        r#"["orders"]"#,
        r#"["orders"]"#,
        "identity",
        "provenance_interval = 1",
    );
    assert_rejected(
        &format!("{pair}\n[flows.west.offset_sync]\nsync_group_offsets = true"),
        &["flows.west.offset_sync.sync_group_offsets", "both ways"],
    );
    assert_rejected(
        &format!("{pair}\n[migration]\nflow = \"east\"\ngroups = [\"app\"]"),
        &["migration.flow", "'east'", "'west'"],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strait.toml");
    std::fs::write(&path, &pair).unwrap();
    let stderr = strait_err(
        &["offsets", "translate", "--flow", "east", "--group", "app"],
        &path,
    );
    assert!(
        stderr.contains("both ways") && stderr.contains("--flow"),
        "{stderr}"
    );
    // Nor failed back: the primary's partitions hold the secondary's records too.
    let stderr = strait_err(&["failback", "plan", "--flow", "east"], &path);
    assert!(
        stderr.contains("both ways") && stderr.contains("failback"),
        "{stderr}"
    );
    for fine in [
        pair.clone(),
        both(r#"["orders"]"#, r#"["payments"]"#, "identity", ""),
        both(r#"[".*"]"#, r#"[".*"]"#, "prefix", ""),
    ] {
        let (ok, text) = check(&fine, &[]);
        assert!(ok, "{fine}\n{text}");
    }
}

#[test]
fn two_flows_writing_the_same_topics_are_rejected() {
    let config = format!(
        "{CLUSTERS}\n[clusters.third]\nbootstrap_servers = \"127.0.0.1:39092\"\n\
         [flows.a]\nsource = \"primary\"\ntarget = \"secondary\"\ntopics = [\"orders\"]\nnaming = \"identity\"\n\
         [flows.b]\nsource = \"third\"\ntarget = \"secondary\"\ntopics = [\"orders\"]\nnaming = \"identity\""
    );
    assert_rejected(&config, &["flows.b", "'a'", "same topics"]);
    let pair = format!(
        "{CLUSTERS}\n[flows.a]\nsource = \"primary\"\ntarget = \"secondary\"\ntopics = [\"orders\"]\nnaming = \"prefix\"\n\
         [flows.b]\nsource = \"primary\"\ntarget = \"secondary\"\ntopics = [\"pay\"]\nnaming = \"prefix\""
    );
    assert_rejected(&pair, &["flows.b", "merge"]);
}

#[test]
fn bad_durations_and_values_name_the_field() {
    assert_rejected(
        &flow("topics = [\".*\"]\nnaming = \"prefix\"\nrefresh_interval = \"soon\""),
        &["refresh_interval"],
    );
    assert_rejected(
        &flow("topics = [\".*\"]\nnaming = \"sideways\""),
        &["sideways"],
    );
    assert_rejected(
        &flow("topics = [\".*\"]\nnaming = \"identity\"\nprefix_separator = \"-\""),
        &["flows.dr.prefix_separator"],
    );
    assert_rejected(
        &format!(
            "{}\n[tuning]\ncompression = \"brotli\"",
            flow("topics = [\".*\"]\nnaming = \"prefix\"")
        ),
        &["tuning.compression"],
    );
}

#[test]
fn environment_overrides_keys_and_secrets_never_print() {
    let config = format!(
        "{CLUSTERS}\n[clusters.secondary.properties]\n\"sasl.username\" = \"strait\"\n{}",
        "[flows.dr]\nsource = \"primary\"\ntarget = \"secondary\"\ntopics = [\".*\"]\nnaming = \"prefix\""
    );
    // The override is applied: a bad value from the environment is reported by field.
    let (ok, text) = check(
        &config,
        &[("STRAIT__FLOWS__DR__REFRESH_INTERVAL", "not-a-duration")],
    );
    assert!(!ok && text.contains("refresh_interval"), "{text}");
    // A password from the environment never appears, even when the file is rejected.
    let (ok, text) = check(
        &format!("{config}\n[tuning]\ncompression = \"brotli\""),
        &[(
            "STRAIT__CLUSTERS__SECONDARY__PROPERTIES__SASL_PASSWORD",
            "hunter2-secret",
        )],
    );
    assert!(!ok);
    assert!(!text.contains("hunter2-secret"), "{text}");
}

#[test]
fn every_example_config_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strait"));
        cmd.args(["check-config", "--offline"]).arg(&path);
        // The SASL example documents its password override; exercise it.
        if text.contains("STRAIT__CLUSTERS__PRIMARY__PROPERTIES__SASL_PASSWORD") {
            cmd.env(
                "STRAIT__CLUSTERS__PRIMARY__PROPERTIES__SASL_PASSWORD",
                "from-env",
            );
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        seen += 1;
    }
    assert!(seen >= 3, "examples found: {seen}");
}

#[test]
fn offset_sync_settings_are_validated() {
    let base = "topics = [\".*\"]\nnaming = \"prefix\"\n";
    assert_rejected(
        &flow(&format!("{base}provenance_header = false")),
        &["flows.dr.offset_sync.enabled", "provenance_header"],
    );
    let (ok, text) = check(
        &flow(&format!(
            "{base}provenance_header = false\n[flows.dr.offset_sync]\nenabled = false"
        )),
        &[],
    );
    assert!(ok, "offset sync off without the header is fine: {text}");
    assert_rejected(
        &flow(&format!("{base}provenance_interval = 0")),
        &["flows.dr.provenance_interval", "at least 1"],
    );
    assert_rejected(
        &flow(&format!(
            "{base}[flows.dr.offset_sync]\ngroups = [\"app(\"]"
        )),
        &["flows.dr.offset_sync.groups[0]", "app("],
    );
    assert_rejected(
        &flow(&format!(
            "{base}[flows.dr.offset_sync]\nmap_topic = \"bad topic\""
        )),
        &["flows.dr.offset_sync.map_topic", "bad topic"],
    );
    assert_rejected(
        &flow(&format!(
            "{base}[flows.dr.offset_sync]\ncheckpoint_interval = \"100ms\""
        )),
        &["flows.dr.offset_sync.checkpoint_interval"],
    );
    assert_rejected(
        &flow(&format!("{base}[flows.dr.offset_sync]\ngroup = [\".*\"]")),
        &["group"],
    );
    // Two flows into one cluster cannot share a map topic.
    let two = format!(
        "{CLUSTERS}\n[clusters.third]\nbootstrap_servers = \"127.0.0.1:39092\"\n\
         [flows.a]\nsource = \"primary\"\ntarget = \"secondary\"\ntopics = [\"x\"]\nnaming = \"prefix\"\n\
         [flows.a.offset_sync]\nmap_topic = \"__strait.shared\"\n\
         [flows.b]\nsource = \"third\"\ntarget = \"secondary\"\ntopics = [\"y\"]\nnaming = \"prefix\"\n\
         [flows.b.offset_sync]\nmap_topic = \"__strait.shared\"\n"
    );
    assert_rejected(
        &two,
        &[
            "flows.b.offset_sync.map_topic",
            "__strait.shared",
            "flow 'a'",
        ],
    );
}

#[test]
fn migration_settings_are_validated() {
    let base = flow("topics = [\".*\"]\nnaming = \"identity\"");
    let (ok, text) = check(
        &format!(
            "{base}\n[migration]\nflow = \"dr\"\ngroups = [\"app\"]\n\
             [migration.gates.drain]\napproval = \"manual\"\ntimeout = \"10m\"\non_timeout = \"abort\"\n"
        ),
        &[],
    );
    assert!(ok, "{text}");
    assert_rejected(
        &format!("{base}\n[migration]\nflow = \"nope\""),
        &["migration.flow", "nope"],
    );
    assert_rejected(
        &format!(
            "{base}\n[migration]\nflow = \"dr\"\n[migration.gates.drain]\napproval = \"sometimes\""
        ),
        &["sometimes"],
    );
    assert_rejected(
        &format!("{base}\n[migration]\nflow = \"dr\"\n[migration.gates.dran]\napproval = \"auto\""),
        &["dran"],
    );
    // Gates that can never pass.
    assert_rejected(
        &format!(
            "{base}\n[migration]\nflow = \"dr\"\n[migration.gates.move_producers]\napproval = \"auto\"\n\
             producers_idle_for = \"5m\"\ntimeout = \"1m\"\non_timeout = \"abort\""
        ),
        &["migration.gates.move_producers.timeout", "could never pass"],
    );
    assert_rejected(
        &format!(
            "{base}\n[migration]\nflow = \"dr\"\n[migration.gates.drain]\napproval = \"auto\"\n\
             producers_idle_for = \"5s\""
        ),
        &["migration.gates.drain.producers_idle_for", "only applies"],
    );
    assert_rejected(
        &format!(
            "{}\n[flows.dr.offset_sync]\nenabled = false\n[migration]\nflow = \"dr\"",
            flow("topics = [\".*\"]\nnaming = \"identity\"")
        ),
        &[
            "migration.flow",
            "offset_sync.enabled = false",
            "never pass",
        ],
    );
    assert_rejected(
        &format!(
            "{base}\n[migration]\nflow = \"dr\"\n[migration.gates.start_consumers]\napproval = \"auto\"\n\
             timeout = \"1m\"\non_timeout = \"abort\""
        ),
        &["migration.gates.start_consumers.on_timeout"],
    );
    assert_rejected(
        &format!("{base}\n[migration]\nflow = \"dr\"\ngroups = [\"a\", \"a\"]"),
        &["migration.groups[1]", "twice"],
    );
}

#[test]
fn heartbeat_settings_are_validated() {
    let base = "topics = [\".*\"]\nnaming = \"prefix\"\n";
    assert_rejected(
        &flow(&format!("{base}heartbeat_topic = \"__beats\"")),
        &["flows.dr.heartbeat_topic", "__beats"],
    );
    assert_rejected(
        &flow(&format!("{base}heartbeat_interval = \"10ms\"")),
        &["flows.dr.heartbeat_interval", "100ms"],
    );
    // Off, the settings are not checked; on for identity, they are.
    let (ok, text) = check(
        &flow(&format!(
            "{base}heartbeats = false\nheartbeat_topic = \"__beats\""
        )),
        &[],
    );
    assert!(ok, "{text}");
    assert_rejected(
        &flow("topics = [\".*\"]\nnaming = \"identity\"\nheartbeats = true\nheartbeat_topic = \"bad topic\""),
        &["flows.dr.heartbeat_topic"],
    );
}

/// The fields of every config section (each `deny_unknown_fields` struct in
/// src/config/mod.rs, the schema), by name as written in the file.
fn config_fields(source: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut lines = source.lines().peekable();
    while let Some(line) = lines.next() {
        if !(line.starts_with("#[serde(") && line.contains("deny_unknown_fields")) {
            continue;
        }
        let header = lines.next().unwrap_or_default();
        let Some(name) = header
            .strip_prefix("pub struct ")
            .and_then(|rest| rest.split_whitespace().next())
        else {
            continue;
        };
        let mut attributes = String::new();
        for line in lines.by_ref() {
            if line == "}" {
                break;
            }
            let line = line.trim();
            if line.starts_with("#[") {
                attributes.push_str(line);
                continue;
            }
            if let Some(field) = line
                .strip_prefix("pub ")
                .and_then(|rest| rest.split(':').next())
            {
                let renamed = attributes
                    .split("rename = \"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next());
                if !attributes.contains("skip") {
                    fields.push((name.to_string(), renamed.unwrap_or(field).to_string()));
                }
            }
            if !line.starts_with("///") {
                attributes.clear();
            }
        }
    }
    fields
}

/// Whether `docs` documents `field`: as a key in an example (`field =`), a table
/// (`[….field]`), or by name in the text.
fn documents(docs: &str, field: &str) -> bool {
    docs.lines().any(|line| {
        let line = line.trim_start();
        line.starts_with(&format!("{field} ")) || line.starts_with(&format!("{field}="))
    }) || docs.contains(&format!(".{field}]"))
        || docs.contains(&format!("[{field}"))
        || docs.contains(&format!("`{field}`"))
}

#[test]
fn every_config_field_is_documented_in_the_reference() {
    let root = env!("CARGO_MANIFEST_DIR");
    let source = std::fs::read_to_string(format!("{root}/src/config/mod.rs")).unwrap();
    let docs = std::fs::read_to_string(format!("{root}/docs/configuration.md")).unwrap();
    let fields = config_fields(&source);
    // The parse itself must find the sections, or this test would pass on nothing.
    for (section, field) in [
        ("Config", "flows"),
        ("FlowConfig", "fence"),
        ("OffsetSyncConfig", "map_topic"),
        ("TuningConfig", "commit_interval"),
        ("Gate", "approval"),
    ] {
        assert!(
            fields.iter().any(|(s, f)| s == section && f == field),
            "{section}.{field} not found among {fields:?}"
        );
    }
    let missing: Vec<String> = fields
        .iter()
        .filter(|(_, field)| !documents(&docs, field))
        .map(|(section, field)| format!("{section}.{field}"))
        .collect();
    assert!(
        missing.is_empty(),
        "config fields missing from docs/configuration.md: {missing:?}"
    );
}

#[test]
fn config_fields_are_read_with_renames_and_skips() {
    let source = r#"
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Section {
    /// Documented.
    pub plain: u32,
    #[serde(rename = "wire_name")]
    /// Renamed.
    pub rust_name: u32,
    #[serde(skip)]
    pub internal: u32,
}
"#;
    assert_eq!(
        config_fields(source),
        vec![
            ("Section".to_string(), "plain".to_string()),
            ("Section".to_string(), "wire_name".to_string()),
        ]
    );
}

#[test]
fn failback_needs_the_flows_offset_map() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strait.toml");
    let config =
        flow("topics = [\"orders\"]\nnaming = \"prefix\"\n[flows.dr.offset_sync]\nenabled = false");
    std::fs::write(&path, config).unwrap();
    for command in [
        &["plan"][..],
        &["keep"],
        &["run"],
        &["translate", "--group", "app"],
        &["finish"],
    ] {
        let args: Vec<&str> = ["failback"]
            .iter()
            .chain(command)
            .chain(&["--flow", "dr"])
            .copied()
            .collect();
        let stderr = strait_err(&args, &path);
        assert!(
            stderr.contains("flows.dr.offset_sync.enabled is false"),
            "failback {command:?}: {stderr}"
        );
    }
    let stderr = strait_err(
        &[
            "failback",
            "keep",
            "--flow",
            "dr",
            "--records-per-transaction",
            "0",
        ],
        &path,
    );
    assert!(stderr.contains("--records-per-transaction"), "{stderr}");
}
