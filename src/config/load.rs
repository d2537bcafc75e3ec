//! Loading a config file: TOML or YAML, with `STRAIT__…` environment overrides.

use super::*;

impl Config {
    /// Reads `path` (format from its extension) with `STRAIT__…` overrides, then validates.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            bail!("config file {} does not exist", path.display());
        }
        let raw = config::Config::builder()
            .add_source(config::File::from(path))
            .add_source(
                config::Environment::with_prefix("STRAIT")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .with_context(|| format!("reading {}", path.display()))?;
        let mut config: Config = raw
            .try_deserialize()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        config.normalize_property_keys();
        config.validate()?;
        Ok(config)
    }

    /// Environment overrides arrive with `_` where librdkafka keys have `.`; no librdkafka
    /// property contains `_`, so the mapping is lossless.
    pub(super) fn normalize_property_keys(&mut self) {
        for cluster in self.clusters.values_mut() {
            cluster.properties = std::mem::take(&mut cluster.properties)
                .into_iter()
                .map(|(k, v)| (k.replace('_', "."), v))
                .collect();
        }
    }
}
