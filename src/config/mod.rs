//! The run configuration: a TOML schema with a documented default for every
//! field, validation that names the key and the reason, and `--set`
//! overrides.
//!
//! A config is loaded in three steps: parse the file into a TOML table, apply
//! the `--set section.key=value` overrides to that table, then deserialise
//! (unknown keys are rejected by serde) and validate. What the file leaves
//! to be computed from the data (σ_data, a generated mixture's components)
//! is filled in by `data::resolve`, so that the `config.toml` a run writes
//! describes it fully. This is the ground floor: it names nothing of the
//! data, the models or the engine.

mod diffusers;
mod keys;
mod schema;
mod shared;
mod validate;
mod vp;

pub use diffusers::{Activation, BlockSummary, DiffusersFiles, DiffusersSpec, DiffusersUNet, Resampler};
pub use schema::*;
pub use shared::*;
pub use vp::{Betas, Prediction, VpSchedule};

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
        Self::parse_as(&text, &[], Written::ByRun)
            .with_context(|| format!("invalid config {}", path.display()))
    }

    /// A run's `config.toml` with the ranks it continues on changed
    /// (`--set parallel.…`): a resumed run may move to more or fewer
    /// ranks, and nothing else.
    pub fn load_run_on(path: &Path, overrides: &[String]) -> Result<Config> {
        Self::check_resume_overrides(overrides)?;
        let text = crate::files::read_toml(path)?;
        Self::parse_as(&text, overrides, Written::ByRun)
            .with_context(|| format!("invalid config {}", path.display()))
    }

    /// Refuses overrides a resumed run would ignore: all but `parallel.*`.
    pub fn check_resume_overrides(overrides: &[String]) -> Result<()> {
        if let Some(o) = overrides
            .iter()
            .find(|o| !o.trim_start().starts_with("parallel."))
        {
            bail!(
                "--set {o}: a resumed run keeps the config it started with; only parallel.* (the ranks \
                 it continues on) may change"
            );
        }
        Ok(())
    }

    /// Parses TOML text with overrides applied. Every problem is reported
    /// at once (a TOML syntax error stops the parse, so it comes alone),
    /// each naming its key; one that comes from a `--set` says so.
    pub fn parse(text: &str, overrides: &[String]) -> Result<Config> {
        Self::parse_as(text, overrides, Written::ByUser)
    }

    fn parse_as(text: &str, overrides: &[String], written: Written) -> Result<Config> {
        let mut table: toml::Table = toml::from_str(text)?;
        let mut set = Vec::new();
        for o in overrides {
            set.push((apply_override(&mut table, o)?, o));
        }
        // A pretrained teacher needs no data: without a [data] table there
        // is none (rather than the default demo's ring).
        let pretrained = table.get("teacher").and_then(|t| t.get("pretrained")).is_some();
        if pretrained && !table.contains_key("data") {
            let mut none = toml::Table::new();
            none.insert("kind".into(), "none".into());
            table.insert("data".into(), toml::Value::Table(none));
        }
        // A [data] table (or `--set data.dim=48` on the default) that
        // names no kind tunes the default demo's ring.
        if let Some(toml::Value::Table(data)) = table.get_mut("data")
            && !data.contains_key("kind")
        {
            data.insert("kind".into(), "ring".into());
        }
        let left_out = image_defaults_left_out(&table);
        let (mut config, mut problems) = deserialize_all(table);
        // A run's own config.toml holds every key it ran with; one written
        // before a key had an image default ran with the plain default,
        // and a resumed run keeps measuring as it did.
        if let Some(c) = &mut config
            && written == Written::ByUser
        {
            c.apply_image_defaults(&left_out);
        }
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

    /// σ_data of a resolved config (`data::resolve` computes it from the
    /// data when the file leaves it out).
    pub fn sigma_data(&self) -> f64 {
        self.diffusion
            .sigma_data
            .expect("a resolved config (data::resolve) carries its sigma_data")
    }

    /// The score network this config's data calls for: the ResNet-MLP of
    /// `score_net` on 2-D data, the U-Net of `unet` on images.
    pub fn net_spec(&self) -> NetSpec {
        if let Some(spec) = &self.teacher.diffusers {
            return NetSpec::Diffusers(Box::new(spec.clone()));
        }
        match self.data.image_shape() {
            Some(image) => NetSpec::UNet {
                image,
                config: self.unet.clone(),
            },
            None => NetSpec::Mlp(ScoreNetConfig {
                dim: self.data.point_dim().unwrap_or(2),
                ..self.score_net.clone()
            }),
        }
    }

    /// The generator of a resolved config: the random MLP of `generator`
    /// on 2-D data with `init = "random"`, else the score network at σ_g
    /// (on images a `random` generator is that network with fresh weights:
    /// an MLP from a latent to pixels is no image model).
    pub fn generator_spec(&self) -> GeneratorSpec {
        let g = &self.generator;
        match (g.init, self.net_spec()) {
            (GeneratorInit::Random, NetSpec::Mlp(_)) => GeneratorSpec::Mlp(MlpGeneratorSpec {
                latent_dim: g.latent_dim,
                dim: self.data.point_dim().unwrap_or(2),
                width: g.width,
                depth: g.depth,
                sigma_init: g.sigma_init,
            }),
            (init, net) => GeneratorSpec::Denoiser {
                net,
                sigma_data: self.sigma_data(),
                sigma_g: edm_to_data_units(g.sigma_g, self.sigma_data()),
                from_teacher: init == GeneratorInit::Teacher,
            },
        }
    }

    /// The config as TOML text.
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

/// Who wrote a config's text: a user (defaults for images apply to the
/// keys left out) or a run, as its `config.toml` (nothing is filled in
/// that the run did not run with).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Written {
    ByUser,
    ByRun,
}

/// The keys whose default differs on images ([`Config::apply_image_defaults`]).
const IMAGE_DEFAULT_KEYS: [&str; 5] = [
    "threads",
    "log.final_samples",
    "metrics.samples",
    "metrics.sampler_steps",
    "metrics.path_spread",
];

/// Which of [`IMAGE_DEFAULT_KEYS`] a config table leaves out.
fn image_defaults_left_out(table: &toml::Table) -> Vec<&'static str> {
    let set = |key: &str| match key.split_once('.') {
        Some((section, key)) => table.get(section).and_then(|t| t.get(key)).is_some(),
        None => table.contains_key(key),
    };
    IMAGE_DEFAULT_KEYS.into_iter().filter(|key| !set(key)).collect()
}

impl Config {
    /// Images' own defaults for the keys the file left out: every core
    /// (an image network's convolutions pay for each thread, where the
    /// toys' small products do not), a thousand final samples (each a
    /// network evaluation), and measurements that stay a small
    /// share of the run (each image sample costs network evaluations; see
    /// `MetricsConfig`). A run's `config.toml` writes them out, so a
    /// resumed run keeps them.
    fn apply_image_defaults(&mut self, left_out: &[&str]) {
        if !self.data.is_image() {
            return;
        }
        for &key in left_out {
            match key {
                "threads" => self.threads = 0,
                "log.final_samples" => self.log.final_samples = 1000,
                "metrics.samples" => self.metrics.samples = 64,
                "metrics.sampler_steps" => self.metrics.sampler_steps = 4,
                "metrics.path_spread" => self.metrics.path_spread = false,
                _ => unreachable!("{key} is not in IMAGE_DEFAULT_KEYS"),
            }
        }
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
