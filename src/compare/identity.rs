//! What makes two sweep points the same study: their resolved configs
//! (the file's content with every `--set` and every default filled in),
//! hashed. A point's folder is named by its hash and the sweep's spec
//! keeps each point's config, so an edited config file is noticed, and
//! the keys it changed can be named.
//!
//! Two things a config does not say are added: what the files it names
//! hold (a teacher or data file replaced under the same path), and whether
//! `device = "auto"` means a GPU here (CPU and GPU runs differ). A file's
//! content is known by its size and modification time, as make and cargo
//! know theirs: teachers and data sets run to hundreds of megabytes, too
//! much to hash each time a sweep starts. Folders (an image folder) are
//! not covered: a loader may write next to its data.

use crate::config::Config;
use anyhow::Result;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Keys that say where or how fast a run goes, not what it computes: a
/// sweep continued with another of them is still the same study. (`name`
/// defaults to the file's stem: renaming the file changes no result.)
/// Every `log.*` key (what a run writes for people to read) is left out
/// too.
const NOT_IDENTITY: [&str; 3] = ["name", "threads", "teacher.cache_dir"];

/// A point's resolved config as it identifies the point.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// Every key of the config but [`NOT_IDENTITY`], dotted
    /// (`generator.lr`), with its value as TOML writes it.
    pub keys: BTreeMap<String, String>,
}

impl Identity {
    pub fn of(config: &Config) -> Result<Self> {
        let table: toml::Table = toml::from_str(&config.to_toml()?)?;
        let mut identity = Self::of_table(&table);
        let files: Vec<(String, String)> = identity
            .keys
            .iter()
            .filter_map(|(key, value)| Some((format!("{key}.content"), content(value)?)))
            .collect();
        identity.keys.extend(files);
        let gpu = crate::runtime::tensors_on_gpu(config.device);
        let kind = if gpu { "\"gpu\"" } else { "\"cpu\"" };
        identity.keys.insert("device.kind".into(), kind.into());
        Ok(identity)
    }

    /// Reads what [`Identity::text`] wrote.
    pub fn parse(text: &str) -> Result<Self> {
        Ok(Self::of_table(&toml::from_str(text)?))
    }

    fn of_table(table: &toml::Table) -> Self {
        let mut keys = BTreeMap::new();
        flatten("", table, &mut keys);
        for key in NOT_IDENTITY {
            keys.remove(key);
        }
        keys.retain(|k, _| !k.starts_with("log."));
        Self { keys }
    }

    /// The keys as TOML lines, `key = value`, sorted: what is hashed.
    pub fn text(&self) -> String {
        self.keys.iter().map(|(k, v)| format!("{k:?} = {v}\n")).collect()
    }

    /// The SHA-256 of [`Identity::text`], in hex.
    pub fn hash(&self) -> String {
        Sha256::digest(self.text().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The keys whose values differ, as `key: old → new` (`unset` where a
    /// side has none).
    pub fn changes_to(&self, new: &Identity) -> Vec<String> {
        let value = |side: &Identity, k: &str| side.keys.get(k).cloned().unwrap_or("unset".into());
        let mut keys: Vec<&String> = self.keys.keys().chain(new.keys.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| self.keys.get(*k) != new.keys.get(*k))
            .map(|k| format!("{k}: {} → {}", value(self, k), value(new, k)))
            .collect()
    }
}

/// A file's size and modification time, for a value (as TOML writes it)
/// that names a file.
fn content(value: &str) -> Option<String> {
    let path: String = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()?
        .get("v")?
        .as_str()?
        .into();
    let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
    let modified = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(format!(
        "\"{} bytes, modified {}.{:09}\"",
        meta.len(),
        modified.as_secs(),
        modified.subsec_nanos()
    ))
}

/// Every leaf of a table under its dotted key. Arrays are leaves (a
/// schedule is one setting), tables inside arrays included.
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (key, value) in table {
        let dotted = match prefix {
            "" => key.clone(),
            p => format!("{p}.{key}"),
        };
        match value {
            toml::Value::Table(t) => flatten(&dotted, t, out),
            leaf => {
                out.insert(dotted, leaf.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sets: &[&str]) -> Config {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::default_with(&sets).unwrap()
    }

    #[test]
    fn a_file_the_config_names_is_known_by_its_content_and_log_keys_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("teacher.safetensors");
        std::fs::write(&file, b"one").unwrap();
        let set = format!("teacher.file={:?}", file.display().to_string());
        let before = Identity::of(&config(&[&set])).unwrap();
        assert_eq!(Identity::of(&config(&[&set])).unwrap().hash(), before.hash());
        // Another teacher under the same name: another study, named.
        std::fs::write(&file, b"other").unwrap();
        let after = Identity::of(&config(&[&set])).unwrap();
        assert_ne!(after.hash(), before.hash());
        let changes = before.changes_to(&after);
        assert!(
            changes.len() == 1 && changes[0].starts_with("teacher.file.content: "),
            "{changes:?}"
        );
        // The device's kind is part of it; what is logged is not.
        assert!(after.keys.contains_key("device.kind"));
        let mut logged = toml::Table::new();
        logged.insert(
            "log".into(),
            toml::Value::Table(toml::toml! { tensorboard = true }),
        );
        assert!(Identity::of_table(&logged).keys.is_empty());
    }

    #[test]
    fn the_hash_follows_what_a_run_computes_and_names_what_changed() {
        let base = Identity::of(&config(&[])).unwrap();
        assert_eq!(base.hash().len(), 64);
        // A default written out is the same study.
        let lr = config(&[]).generator.lr;
        let same = Identity::of(&config(&[&format!("generator.lr={lr:?}")])).unwrap();
        assert_eq!(same.hash(), base.hash());
        // Where and how fast: the same study.
        let elsewhere = Identity::of(&config(&[
            "name=\"other\"",
            "threads=3",
            "teacher.cache_dir=\"x\"",
        ]))
        .unwrap();
        assert_eq!(elsewhere.hash(), base.hash());
        // What it computes: another one, its keys named.
        let changed = Identity::of(&config(&["generator.lr=0.125", "seed=99"])).unwrap();
        assert_ne!(changed.hash(), base.hash());
        let changes = base.changes_to(&changed);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(
            changes[0].starts_with("generator.lr: ") && changes[0].ends_with(" → 0.125"),
            "{changes:?}"
        );
        assert!(
            changes[1].starts_with("seed: ") && changes[1].ends_with(" → 99"),
            "{changes:?}"
        );
        // Written and read back, it is the same identity.
        assert_eq!(Identity::parse(&changed.text()).unwrap(), changed);
    }
}
