//! The run directory: what a run leaves behind, in one place, for the
//! headless runner and the terminal lab alike.
//!
//! ```text
//! config.toml          the resolved config (every default filled in)
//! metrics.jsonl        one JSON object per logged step
//! teacher.safetensors  the teacher this run distilled
//! path/                node-<i>.safetensors + nodes.json (DisBack)
//! generator/           at-node-<i>.safetensors (when leaving target i),
//!                      final.safetensors, saved-<cost>.safetensors
//! samples/             initial.csv, at-node-<i>.csv: generator snapshots
//! fields/              initial.json, final.json: teacher and s_φ fields
//! plots/               the figures (PNG and SVG)
//! state/               the resumable checkpoint
//! samples.csv          generator samples at the end (header x,y)
//! ```

use crate::data::Point;
use crate::files::atomic_write;
use anyhow::{Context, Result, bail};
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// `base/<name>-<local time>`, with a numeric suffix if that is taken.
    pub fn default_path(base: &Path, name: &str) -> PathBuf {
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
        let first = base.join(format!("{name}-{stamp}"));
        if !first.exists() {
            return first;
        }
        (2..)
            .map(|i| base.join(format!("{name}-{stamp}-{i}")))
            .find(|p| !p.exists())
            .expect("some suffix is free")
    }

    /// Refuses a folder that exists and holds anything.
    pub fn check_free(root: &Path) -> Result<()> {
        if root.read_dir().is_ok_and(|mut d| d.next().is_some()) {
            bail!(
                "run directory {} already exists; choose another --out, pass --force to \
                 overwrite it, or `disback run --resume {}` to continue it",
                root.display(),
                root.display()
            );
        }
        Ok(())
    }

    /// Creates a new run directory. An existing, non-empty one is an error
    /// unless `overwrite` is set, in which case it is emptied first.
    pub fn create(root: &Path, overwrite: bool) -> Result<Self> {
        if overwrite && Self::check_free(root).is_err() {
            std::fs::remove_dir_all(root).with_context(|| format!("cannot clear {}", root.display()))?;
        }
        Self::check_free(root)?;
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create run directory {}", root.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Opens an existing run directory (to resume it or redraw its plots).
    pub fn open(root: &Path) -> Result<Self> {
        let dir = Self {
            root: root.to_path_buf(),
        };
        if !dir.config().is_file() {
            bail!("{} is not a run directory: it has no config.toml", root.display());
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn teacher(&self) -> PathBuf {
        self.root.join("teacher.safetensors")
    }
    pub fn path_dir(&self) -> PathBuf {
        self.root.join("path")
    }
    pub fn generator_dir(&self) -> PathBuf {
        self.root.join("generator")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }
    pub fn samples(&self) -> PathBuf {
        self.root.join("samples.csv")
    }
    pub fn plots_dir(&self) -> PathBuf {
        self.root.join("plots")
    }
    /// `samples/<name>.csv`: generator samples at a moment of the run.
    pub fn snapshot(&self, name: &str) -> PathBuf {
        self.root.join("samples").join(format!("{name}.csv"))
    }
    /// `fields/<name>.json`: the teacher's and s_φ's score fields.
    pub fn field(&self, name: &str) -> PathBuf {
        self.root.join("fields").join(format!("{name}.json"))
    }
}

/// Writes points as CSV with the header `x,y`.
pub fn write_points_csv(path: &Path, points: &[Point]) -> Result<()> {
    let mut text = String::with_capacity(points.len() * 24 + 4);
    text.push_str("x,y\n");
    for p in points {
        writeln!(text, "{},{}", p[0], p[1]).expect("writing to a String");
    }
    atomic_write(path, text.as_bytes())
}

/// Reads points written by [`write_points_csv`].
pub fn read_points_csv(path: &Path) -> Result<Vec<Point>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("x,y") {
        bail!("{}: expected the header x,y", path.display());
    }
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let parse = || -> Option<Point> {
                let (x, y) = line.split_once(',')?;
                Some([x.trim().parse().ok()?, y.trim().parse().ok()?])
            };
            parse().with_context(|| format!("{}:{}: not a point: {line:?}", path.display(), i + 2))
        })
        .collect()
}
