//! Cross-field rules, checked before anything connects: each error names the field.

use super::*;

impl Config {
    /// Cross-field rules. Each message names the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.clusters.is_empty() {
            bail!("clusters: at least one cluster is required");
        }
        if self.flows.is_empty() {
            bail!("flows: at least one flow is required");
        }
        for (name, cluster) in &self.clusters {
            check_name(&format!("clusters.{name}"), name)?;
            if cluster.bootstrap_servers.trim().is_empty() {
                bail!("clusters.{name}.bootstrap_servers: must not be empty");
            }
            if cluster.properties.contains_key("bootstrap.servers") {
                bail!("clusters.{name}.properties.\"bootstrap.servers\": set bootstrap_servers instead");
            }
        }
        let t = &self.tuning;
        if t.commit_interval.is_zero() {
            bail!("tuning.commit_interval: must be greater than zero");
        }
        if t.producer_queue_kbytes < 1024 {
            bail!("tuning.producer_queue_kbytes: at least 1024 (1 MiB) is needed to batch");
        }
        if t.consumer_queue_kbytes < 1024 {
            bail!("tuning.consumer_queue_kbytes: at least 1024 (1 MiB) is needed to fetch");
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&t.compression.as_str()) {
            bail!(
                "tuning.compression: '{}' is not one of none, gzip, snappy, lz4, zstd",
                t.compression
            );
        }

        let mut pairs: HashMap<(&str, &str), &str> = HashMap::new();
        let mut identity_targets: HashMap<(&str, Vec<&str>), &str> = HashMap::new();
        let mut internal: HashMap<(&str, String), &str> = HashMap::new();
        for (name, flow) in &self.flows {
            check_name(&format!("flows.{name}"), name)?;
            let field = |f: &str| format!("flows.{name}.{f}");
            self.clusters.get(&flow.source).with_context(|| {
                format!(
                    "{}: unknown cluster '{}' (known: {})",
                    field("source"),
                    flow.source,
                    self.cluster_names()
                )
            })?;
            self.clusters.get(&flow.target).with_context(|| {
                format!(
                    "{}: unknown cluster '{}' (known: {})",
                    field("target"),
                    flow.target,
                    self.cluster_names()
                )
            })?;
            if flow.topics.is_empty() {
                bail!(
                    "{}: at least one regex is required (use \".*\" for all topics)",
                    field("topics")
                );
            }
            check_regexes(&field("topics"), &flow.topics)?;
            check_regexes(&field("topics_exclude"), &flow.topics_exclude)?;
            if flow.naming == Naming::Identity && self.same_cluster(&flow.source, &flow.target) {
                bail!(
                    "{}: identity naming from cluster '{}' to '{}', which is the same cluster, \
                     would copy every record back into itself forever; use naming = \"prefix\"",
                    field("naming"),
                    flow.source,
                    flow.target
                );
            }
            match (&flow.prefix_separator, flow.naming) {
                (Some(_), Naming::Identity) => {
                    bail!(
                        "{}: only valid with naming = \"prefix\"",
                        field("prefix_separator")
                    )
                }
                (Some(sep), Naming::Prefix)
                    if sep.is_empty() || !sep.chars().all(is_topic_char) =>
                {
                    bail!(
                        "{}: '{sep}' must be non-empty and use only [A-Za-z0-9._-]",
                        field("prefix_separator")
                    )
                }
                _ => {}
            }
            if flow.refresh_interval < Duration::from_secs(1) {
                bail!("{}: must be at least 1s", field("refresh_interval"));
            }
            if let Some(rf) = flow.replication_factor {
                if rf < 1 {
                    bail!("{}: must be at least 1", field("replication_factor"));
                }
            }
            if let Some(topic) = flow.heartbeat_topic(name) {
                if topic.is_empty()
                    || topic.len() > 249
                    || !topic.chars().all(is_topic_char)
                    || topic.starts_with("__")
                {
                    bail!(
                        "{}: '{topic}' is not a valid heartbeat topic name ([A-Za-z0-9._-], at \
                         most 249, not starting with __, which is never replicated)",
                        field("heartbeat_topic")
                    );
                }
                if flow.heartbeat_interval < Duration::from_millis(100) {
                    bail!("{}: must be at least 100ms", field("heartbeat_interval"));
                }
            }
            if flow.provenance_interval == 0 {
                bail!(
                    "{}: must be at least 1 (1 puts the header on every record)",
                    field("provenance_interval")
                );
            }
            let o = &flow.offset_sync;
            if o.enabled {
                if !flow.provenance_header {
                    bail!(
                        "{}: offset sync needs provenance_header = true (a crash can lose the \
                         newest offset map entries, and they are rebuilt from the headers); \
                         set offset_sync.enabled = false to run without both",
                        field("offset_sync.enabled")
                    );
                }
                for (key, topic) in [
                    ("offset_sync.map_topic", flow.map_topic(name)),
                    ("offset_sync.checkpoint_topic", flow.checkpoint_topic(name)),
                ] {
                    if topic.is_empty() || topic.len() > 249 || !topic.chars().all(is_topic_char) {
                        bail!(
                            "{}: '{topic}' is not a valid topic name ([A-Za-z0-9._-], at most 249)",
                            field(key)
                        );
                    }
                    if let Some(other) =
                        internal.insert((flow.target.as_str(), topic.clone()), name)
                    {
                        bail!(
                            "{}: topic '{topic}' on cluster '{}' is already used by flow '{other}'",
                            field(key),
                            flow.target
                        );
                    }
                }
                if o.checkpoint_interval < Duration::from_secs(1) {
                    bail!(
                        "{}: must be at least 1s",
                        field("offset_sync.checkpoint_interval")
                    );
                }
                if o.groups.is_empty() {
                    bail!(
                        "{}: at least one regex is required (use \".*\" for all groups)",
                        field("offset_sync.groups")
                    );
                }
                check_regexes(&field("offset_sync.groups"), &o.groups)?;
                check_regexes(&field("offset_sync.groups_exclude"), &o.groups_exclude)?;
            }
            if let Some(other) = pairs.insert((&flow.source, &flow.target), name) {
                bail!(
                    "flows.{name}: flows '{other}' and '{name}' both replicate '{}' → '{}' and could \
                     write the same target topics; merge them into one flow",
                    flow.source,
                    flow.target
                );
            }
            if flow.naming == Naming::Identity {
                let mut topics: Vec<&str> = flow.topics.iter().map(String::as_str).collect();
                topics.sort_unstable();
                if let Some(other) = identity_targets.insert((&flow.target, topics), name) {
                    bail!(
                        "flows.{name}: flows '{other}' and '{name}' both write the same topics \
                         (same regexes, identity naming) to cluster '{}'",
                        flow.target
                    );
                }
            }
        }
        self.check_two_way_pairs()?;
        if let Some(m) = &self.migration {
            self.validate_migration(m)?;
        }
        Ok(())
    }

    /// Whether two cluster names are one cluster: the same name, or the same bootstrap
    /// servers under two names.
    pub(super) fn same_cluster(&self, a: &str, b: &str) -> bool {
        a == b
            || match (self.clusters.get(a), self.clusters.get(b)) {
                (Some(a), Some(b)) => {
                    normalize_servers(&a.bootstrap_servers)
                        == normalize_servers(&b.bootstrap_servers)
                }
                _ => false,
            }
    }

    /// Pairs of flows (names) with identity naming in opposite directions between the
    /// same two clusters that may select the same topic: two-way replication under the
    /// same names. Only lists of plain topic names are proven apart; any other regex may
    /// meet the other flow's topics.
    pub(crate) fn two_way_pairs(&self) -> Vec<(&str, &str)> {
        let identity: Vec<(&String, &FlowConfig)> = self
            .flows
            .iter()
            .filter(|(_, f)| f.naming == Naming::Identity)
            .collect();
        let mut pairs = Vec::new();
        for (i, (name, flow)) in identity.iter().enumerate() {
            for (other_name, other) in &identity[i + 1..] {
                let opposite = self.same_cluster(&flow.source, &other.target)
                    && self.same_cluster(&flow.target, &other.source);
                if opposite && may_select_the_same_topic(&flow.topics, &other.topics) {
                    pairs.push((name.as_str(), other_name.as_str()));
                }
            }
        }
        pairs
    }

    /// The two flows of a two-way pair never copy back a record the other copied: each
    /// tells such copies by their provenance header, so each must put it on every copy. A
    /// copy without it would go back as a duplicate.
    pub(super) fn check_two_way_pairs(&self) -> Result<()> {
        for (a, b) in self.two_way_pairs() {
            for (name, other) in [(a, b), (b, a)] {
                let flow = &self.flows[name];
                if flow.offset_sync.sync_group_offsets == Some(true) {
                    bail!(
                        "flows.{name}.offset_sync.sync_group_offsets: flows '{a}' and '{b}' \
                         replicate both ways under the same topic names, whose groups cannot \
                         be translated yet (a group's position on one cluster covers records \
                         of both, which lie in another order on the other); leave it unset"
                    );
                }
                if self.migration.as_ref().is_some_and(|m| m.flow == name) {
                    bail!(
                        "migration.flow: flow '{name}' replicates both ways with '{other}', whose \
                         groups cannot be translated yet; migrate with a one-way flow"
                    );
                }
                if !flow.provenance_header || flow.provenance_interval != 1 {
                    bail!(
                        "flows.{name}.provenance_interval: flows '{a}' and '{b}' replicate \
                         both ways under the same topic names, so each must put the \
                         provenance header on every copy (provenance_header = true, \
                         provenance_interval = 1): '{other}' tells copies from its own \
                         cluster's records by it, and would copy one without it back, as a \
                         duplicate. Set both, or use naming = \"prefix\" on one of them"
                    );
                }
            }
        }
        Ok(())
    }

    pub(super) fn validate_migration(&self, m: &MigrationConfig) -> Result<()> {
        let flow = self.flows.get(&m.flow).with_context(|| {
            format!(
                "migration.flow: no flow '{}' (flows: {})",
                m.flow,
                self.flows.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        if !flow.offset_sync.enabled {
            bail!(
                "migration.flow: flow '{}' has offset_sync.enabled = false; the translate_offsets \
                 and verify stages need its offset map, so they could never pass",
                m.flow
            );
        }
        let own = flow.group_id(&m.flow);
        for (i, group) in m.groups.iter().enumerate() {
            if group.trim().is_empty() {
                bail!("migration.groups[{i}]: must not be empty");
            }
            if *group == own {
                bail!("migration.groups[{i}]: '{group}' is the flow's own replication group");
            }
            if m.groups[..i].contains(group) {
                bail!("migration.groups[{i}]: '{group}' is listed twice");
            }
        }
        let topic = self.migration_state_topic().unwrap_or_default();
        if topic.is_empty() || topic.len() > 249 || !topic.chars().all(is_topic_char) {
            bail!("migration.state_topic: '{topic}' is not a valid topic name ([A-Za-z0-9._-], at most 249)");
        }
        if self.internal_topics().contains(&topic) {
            bail!(
                "migration.state_topic: '{topic}' is already one of the flows' offset-sync topics"
            );
        }
        let g = &m.gates;
        for (stage, gate) in [
            ("mirror", &g.mirror),
            ("move_producers", &g.move_producers),
            ("drain", &g.drain),
            ("stop_consumers", &g.stop_consumers),
            ("translate_offsets", &g.translate_offsets),
            ("verify", &g.verify),
            ("start_consumers", &g.start_consumers),
        ] {
            let field = |f: &str| format!("migration.gates.{stage}.{f}");
            if stage != "move_producers" && gate.producers_idle_for.is_some() {
                bail!(
                    "{}: only applies to the move_producers gate",
                    field("producers_idle_for")
                );
            }
            if gate.timeout.is_some_and(|t| t.is_zero()) {
                bail!("{}: must be greater than zero", field("timeout"));
            }
            if stage == "start_consumers" && gate.on_timeout == OnTimeout::Abort {
                bail!(
                    "{}: a migration cannot be aborted once consumers are moving to the target",
                    field("on_timeout")
                );
            }
        }
        let mp = &g.move_producers;
        if mp.approval == Approval::Auto {
            let idle = mp.producers_idle_for.with_context(|| {
                "migration.gates.move_producers.producers_idle_for: required with approval = \"auto\""
            })?;
            if idle < Duration::from_secs(1) {
                bail!("migration.gates.move_producers.producers_idle_for: must be at least 1s");
            }
            if let (Some(timeout), OnTimeout::Abort) = (mp.timeout, mp.on_timeout) {
                if timeout <= idle {
                    bail!(
                        "migration.gates.move_producers.timeout: {} is not longer than \
                         producers_idle_for ({}), so the gate could never pass before the abort",
                        humantime::format_duration(timeout),
                        humantime::format_duration(idle)
                    );
                }
            }
        }
        Ok(())
    }
}

/// Every pattern must compile; the message names the field and index of the first that
/// does not.
pub(super) fn check_regexes(field: &str, patterns: &[String]) -> Result<()> {
    for (i, p) in patterns.iter().enumerate() {
        if let Err(e) = regex::Regex::new(p) {
            bail!("{field}[{i}]: invalid regex '{p}': {e}");
        }
    }
    Ok(())
}

/// Cluster and flow names appear in topic names and provenance headers.
pub(super) fn check_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() || !name.chars().all(is_topic_char) {
        bail!("{field}: name '{name}' must use only [A-Za-z0-9._-]");
    }
    Ok(())
}

/// Whether some topic name could be selected by a regex of `a` and one of `b`. Exact for
/// plain names (where `.` is the only regex character, matching any one character);
/// any other regex may match anything, as far as this can tell.
pub(super) fn may_select_the_same_topic(a: &[String], b: &[String]) -> bool {
    let plain = |p: &String| p.chars().all(is_topic_char);
    if !a.iter().chain(b).all(plain) {
        return true;
    }
    a.iter().any(|x| {
        b.iter().any(|y| {
            x.len() == y.len()
                && x.bytes()
                    .zip(y.bytes())
                    .all(|(c, d)| c == d || c == b'.' || d == b'.')
        })
    })
}

pub(super) fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

pub(super) fn normalize_servers(servers: &str) -> Vec<String> {
    let mut list: Vec<String> = servers
        .split(',')
        .map(|s| {
            s.trim()
                .to_ascii_lowercase()
                .replace("localhost", "127.0.0.1")
        })
        .filter(|s| !s.is_empty())
        .collect();
    list.sort();
    list
}
