//! The run configuration: a TOML schema with a documented default for every
//! field, validation that names the key and the reason, and `--set`
//! overrides.
//!
//! A config is loaded in three steps: parse the file into a TOML table, apply
//! the `--set section.key=value` overrides to that table, then deserialise
//! (unknown keys are rejected by serde) and validate. [`Config::resolved`]
//! fills in what the file left to be computed (σ_data, a generated mixture's
//! components) so that the `config.toml` a run writes describes it fully.

mod schema;
mod validate;

pub use schema::*;

use anyhow::{Context, Result, anyhow, bail};
use std::path::Path;

impl Config {
    /// Reads, overrides, deserialises and validates a config file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config =
            Self::parse(&text, overrides).with_context(|| format!("invalid config {}", path.display()))?;
        if config.name.is_none() {
            config.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(config)
    }

    /// Reads the `config.toml` a run wrote, refusing it if it was changed
    /// since: a resumed run continues the run that was checkpointed.
    pub fn load_run(path: &Path) -> Result<Config> {
        let text = crate::files::read_toml(path)?;
        Self::parse(&text, &[]).with_context(|| format!("invalid config {}", path.display()))
    }

    /// Parses TOML text with overrides applied. Every problem is reported
    /// at once (a TOML syntax error stops the parse, so it comes alone),
    /// each naming its key; one that comes from a `--set` says so.
    pub fn parse(text: &str, overrides: &[String]) -> Result<Config> {
        let mut table: toml::Table = toml::from_str(text)?;
        let mut set = Vec::new();
        for o in overrides {
            set.push((apply_override(&mut table, o)?, o));
        }
        let (config, mut problems) = deserialize_all(table);
        if let Some(c) = &config
            && let Err(e) = c.validate()
        {
            problems.extend(e.to_string().lines().map(str::to_string));
        }
        if problems.is_empty() {
            return Ok(config.expect("no problems means it deserialised"));
        }
        let blame = |line: &String| match set.iter().find(|(key, _)| is_about(line, key)) {
            Some((_, spec)) => format!("{line} (from --set {spec})"),
            None => line.clone(),
        };
        bail!("{}", problems.iter().map(blame).collect::<Vec<_>>().join("\n"))
    }

    /// The built-in default config (the 2-D ring demo), with overrides.
    pub fn default_with(overrides: &[String]) -> Result<Config> {
        Self::parse("", overrides)
    }

    /// The name used for run directories.
    pub fn run_name(&self) -> &str {
        self.name.as_deref().unwrap_or("run")
    }

    /// Fills in what the file left to be computed: σ_data (the data's std)
    /// and a ring preset's explicit components. A run writes this form, so
    /// its `config.toml` alone reproduces it.
    pub fn resolved(mut self) -> Config {
        if self.diffusion.sigma_data.is_none() {
            self.diffusion.sigma_data = Some(self.default_sigma_data());
        }
        use crate::data::GaussianMixture;
        let components = match self.data {
            DataConfig::Ring { modes, radius, std } => {
                Some(GaussianMixture::ring_components(modes, radius, std))
            }
            DataConfig::Random { modes, seed } => Some(GaussianMixture::random_components(modes, seed)),
            _ => None,
        };
        if let Some(components) = components {
            self.data = DataConfig::Gmm { components };
        }
        self
    }

    /// σ_data of a resolved config.
    pub fn sigma_data(&self) -> f64 {
        self.diffusion
            .sigma_data
            .unwrap_or_else(|| self.default_sigma_data())
    }

    /// The 2-D data's own standard deviation per coordinate; for images
    /// EDM's 0.5 (pixels in [−1, 1]), so that no file is read to know it.
    fn default_sigma_data(&self) -> f64 {
        match crate::data::PlaneData::new(&self.data) {
            Some(plane) => plane.std(),
            None => crate::diffusion::EDM_SIGMA_DATA,
        }
    }

    /// The score network this config's data calls for: the ResNet-MLP of
    /// `score_net` on 2-D data, the U-Net of `unet` on images.
    pub fn net_spec(&self) -> crate::model::NetSpec {
        match self.data.image_shape() {
            Some(image) => crate::model::NetSpec::UNet {
                image,
                config: self.unet.clone(),
            },
            None => crate::model::NetSpec::Mlp(self.score_net.clone()),
        }
    }

    /// The name of this config's pretrained teacher in the cache: a hash of
    /// everything that shapes it (data, diffusion, network, pretraining
    /// settings and seed) and nothing that does not (the run's own seed,
    /// paths, distillation settings), so runs of any seed share one teacher.
    /// The name of this config's image classifier in the cache (beside
    /// the teachers): a hash of the data alone.
    pub fn classifier_cache_key(&self) -> String {
        use sha2::{Digest, Sha256};
        let shape = serde_json::json!({ "format": 1, "data": self.clone().resolved().data });
        let digest = Sha256::digest(shape.to_string().as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    pub fn teacher_cache_key(&self) -> String {
        use sha2::{Digest, Sha256};
        let resolved = self.clone().resolved();
        let (t, d) = (&resolved.teacher, &resolved.diffusion);
        let shape = serde_json::json!({
            "format": 4,
            "data": resolved.data,
            "diffusion": [d.sigma_data, d.p_mean, d.p_std],
            "net": resolved.net_spec(),
            "teacher": [t.steps, t.batch, t.lr, t.seed],
        });
        let digest = Sha256::digest(shape.to_string().as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The config as TOML text.
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

/// Deserialises a config table, collecting every problem: each bad key is
/// reported, then taken out (falling back to its default) and the rest
/// tried again, because serde stops at the first error. Returns the config
/// when what is left deserialises.
fn deserialize_all(mut table: toml::Table) -> (Option<Config>, Vec<String>) {
    let mut problems = Vec::new();
    // Each round removes a key, so this ends; the cap is a safeguard.
    for _ in 0..100 {
        let error = match serde_path_to_error::deserialize(toml::Value::Table(table.clone())) {
            Ok(config) => return (Some(config), problems),
            Err(e) => e,
        };
        let message = error.inner().message().trim().to_string();
        let path = error.path().to_string();
        let mut key: Vec<String> = match path.as_str() {
            "." => Vec::new(),
            p => p.split('.').map(str::to_string).collect(),
        };
        // Make sure an unknown key's path ends with the key itself.
        if let Some(unknown) = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
            .filter(|u| key.last().map(String::as_str) != Some(*u))
        {
            key.push(unknown.to_string());
        }
        let name = if key.is_empty() {
            "(top level)".into()
        } else {
            key.join(".")
        };
        problems.push(format!("{name}: {message}"));
        if key.is_empty() || remove_key(&mut table, &key).is_none() {
            break;
        }
    }
    (None, problems)
}

/// Removes `key` (a path of table names) from the table.
fn remove_key(table: &mut toml::Table, key: &[String]) -> Option<toml::Value> {
    let (last, sections) = key.split_last()?;
    let mut current = table;
    for section in sections {
        current = current.get_mut(section)?.as_table_mut()?;
    }
    current.remove(last)
}

/// Whether a problem line is about `key` or something inside or above it.
fn is_about(problem: &str, key: &str) -> bool {
    let name = problem.split(':').next().unwrap_or_default();
    let inside = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}."));
    inside(name, key) || inside(key, name)
}

/// Applies one `section.key=value` override to the raw table. The value is
/// read as a TOML value (`3`, `1e-3`, `"cpu"`, `[1, 2]`), and as a bare
/// string when it is not one (`device=cpu`). Returns the key.
fn apply_override(table: &mut toml::Table, spec: &str) -> Result<String> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {spec:?}: expected section.key=value"))?;
    let key = key.trim();
    let raw = raw.trim();
    let value = parse_value(raw);
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("--set {spec:?}: {key:?} is not a valid key path");
    }
    let (last, sections) = parts.split_last().expect("split yields one part");
    let mut current = table;
    for (i, section) in sections.iter().enumerate() {
        let entry = current
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| anyhow!("--set {spec:?}: {} is not a section", parts[..=i].join(".")))?;
    }
    current.insert(last.to_string(), value);
    Ok(key.to_string())
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").expect("key v was just parsed"),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests;
