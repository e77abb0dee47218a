//! A `diffusers` JSON description (`config.json`, `scheduler_config.json`)
//! read key by key the way diffusers reads it, every problem named by file
//! and key. Shared by the network's and the noise schedule's readers.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::Path;

/// A JSON file's top-level object, with keys read by name and problems
/// named by file and key.
pub(super) struct Keys<'a> {
    pub(super) file: &'a Path,
    pub(super) map: serde_json::Map<String, Value>,
}

impl<'a> Keys<'a> {
    pub(super) fn read(file: &'a Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
        match value {
            Value::Object(map) => Ok(Self { file, map }),
            _ => bail!("{}: not a JSON object", file.display()),
        }
    }

    pub(super) fn refuse<T>(&self, key: &str, why: String) -> Result<T> {
        bail!("{}: {key}: {why}", self.file.display())
    }

    /// The key's value; `default` (diffusers' own) when it is absent. A
    /// null is refused: diffusers passes it on as `None`, which no key
    /// read this way can take (those where null means something are read
    /// on their own).
    pub(super) fn get<T: serde::de::DeserializeOwned>(&self, key: &str, default: T) -> Result<T> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Null) => self.refuse(key, "null: diffusers cannot build a model with it".into()),
            Some(v) => serde_json::from_value(v.clone())
                .or_else(|e| self.refuse(key, format!("{v} cannot be read ({e})"))),
        }
    }

    /// An optional value (absent or null: None).
    pub(super) fn optional<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.get(key, None),
        }
    }

    /// A switch diffusers tests for truth: null is false, as Python's
    /// `if None` is (so `"add_attention": null` means no attention).
    pub(super) fn flag(&self, key: &str, default: bool) -> Result<bool> {
        match self.map.get(key) {
            Some(Value::Null) => Ok(false),
            _ => self.get(key, default),
        }
    }

    /// A string setting, one of `allowed` (absent: `default`).
    pub(super) fn choice(&self, key: &str, default: &str, allowed: &[&str]) -> Result<String> {
        let value: String = self.get(key, default.to_string())?;
        match allowed.contains(&value.as_str()) {
            true => Ok(value),
            false => self.refuse(
                key,
                format!("{value:?} is not supported (only {})", allowed.join(", ")),
            ),
        }
    }

    /// Refuses any value but null (absent: null), saying why.
    pub(super) fn absent(&self, key: &str, why: &str) -> Result<()> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(()),
            Some(v) => self.refuse(key, format!("{v} is not supported ({why})")),
        }
    }
}
