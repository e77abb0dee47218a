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
//! tensorboard/         events.out.tfevents.* (with log.tensorboard)
//! state/               the resumable checkpoint
//! samples.csv          generator samples at the end (header x,y)
//! run.lock             held by the process writing the run
//! ```

mod fields;
mod lock;
mod log;
mod tensorboard;

pub use fields::{FIELD_GRID, ScoreField};
pub use lock::RunLock;
pub use log::{MetricsLog, MetricsRecord, Stage, read_metrics};
pub use tensorboard::{EventLog, TENSORBOARD_DIR, read_events};
/// The event file's messages, for readers (tests, tools).
pub mod events {
    pub use super::tensorboard::{Event, Image, Kind, Summary, Value, What};
}

use crate::data::Samples;
use crate::files::atomic_write;
use anyhow::{Context, Result, bail};
use lock::LOCK_FILE;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A run directory; a writer holds its lock (shared by clones).
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
    lock: Option<Arc<RunLock>>,
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

    /// Refuses a folder that exists and holds anything (but a lock file).
    /// `again` says how to continue what is there, if it can be.
    pub fn check_free(root: &Path, again: Option<&str>) -> Result<()> {
        let held = |e: &std::fs::DirEntry| e.file_name() != LOCK_FILE;
        if root.read_dir().is_ok_and(|d| d.flatten().any(|e| held(&e))) {
            let resume = again.map_or(String::new(), |cmd| {
                format!(", or `{cmd} {}` to continue it", root.display())
            });
            bail!(
                "{} already exists; choose another --out, or pass --force to overwrite it{resume}",
                root.display()
            );
        }
        Ok(())
    }

    /// Creates a new run directory and takes its lock. An existing,
    /// non-empty one is an error unless `overwrite` is set, in which case it
    /// is emptied, once its lock shows that no other process writes it.
    pub fn create(root: &Path, overwrite: bool) -> Result<Self> {
        if !overwrite {
            Self::check_free(root, Some("disback run --resume"))?;
        }
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create run directory {}", root.display()))?;
        let lock = RunLock::acquire(root)?;
        if overwrite {
            for entry in std::fs::read_dir(root)?.flatten() {
                let path = entry.path();
                let cleared = match entry.file_type()?.is_dir() {
                    _ if path == lock.path() => Ok(()),
                    true => std::fs::remove_dir_all(&path),
                    false => std::fs::remove_file(&path),
                };
                cleared.with_context(|| format!("cannot clear {}", path.display()))?;
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            lock: Some(Arc::new(lock)),
        })
    }

    /// A folder to continue what it holds (created if it is missing),
    /// with its lock taken: nothing in it is cleared.
    pub fn reopen(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
        Self::written_by_another(root).locked()
    }

    /// A run directory that another process writes (rank 0's, for a rank
    /// that only reads what rank 0 wrote); it need not exist yet.
    pub fn written_by_another(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            lock: None,
        }
    }

    /// Opens an existing run directory to read it (plots); see
    /// [`RunDir::locked`] to write it.
    pub fn open(root: &Path) -> Result<Self> {
        let dir = Self {
            root: root.to_path_buf(),
            lock: None,
        };
        if !dir.config().is_file() {
            bail!("{} is not a run directory: it has no config.toml", root.display());
        }
        Ok(dir)
    }

    /// The same directory with its lock held (taken now if it is not yet):
    /// a second writer is refused with the holder's pid and command.
    pub fn locked(mut self) -> Result<Self> {
        if self.lock.is_none() {
            self.lock = Some(Arc::new(RunLock::acquire(&self.root)?));
        }
        Ok(self)
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
    /// The final samples of a 2-D run.
    pub fn samples(&self) -> PathBuf {
        self.root.join("samples.csv")
    }
    /// The final samples of an image run: one (N, C, H, W) tensor `samples`.
    pub fn samples_tensor(&self) -> PathBuf {
        self.root.join("samples.safetensors")
    }
    pub fn plots_dir(&self) -> PathBuf {
        self.root.join("plots")
    }
    /// TensorBoard's event files (`log.tensorboard`).
    pub fn tensorboard_dir(&self) -> PathBuf {
        self.root.join(TENSORBOARD_DIR)
    }
    /// `samples/<name>.csv`: generator samples at a moment of a 2-D run.
    pub fn snapshot(&self, name: &str) -> PathBuf {
        self.root.join("samples").join(format!("{name}.csv"))
    }
    /// `samples/<name>.png`: a grid of generator samples at a moment of an
    /// image run.
    pub fn snapshot_grid(&self, name: &str) -> PathBuf {
        self.root.join("samples").join(format!("{name}.png"))
    }
    /// `fields/<name>.json`: the teacher's and s_φ's score fields.
    pub fn field(&self, name: &str) -> PathBuf {
        self.root.join("fields").join(format!("{name}.json"))
    }
}

/// The CSV header of samples of `dim` values: `x,y` in the plane,
/// `x0,x1,…` in more dimensions.
fn csv_header(dim: usize) -> String {
    match dim {
        2 => "x,y".to_string(),
        _ => (0..dim).map(|d| format!("x{d}")).collect::<Vec<_>>().join(","),
    }
}

/// Writes samples of points as CSV, one sample a row with every one of
/// its coordinates: the header `x,y` for 2-D data, `x0,x1,…,x47` for a
/// mixture embedded in 48 dimensions (its full coordinates, not the
/// plane's: a picture projects them with the run's Q).
pub fn write_points_csv(path: &Path, samples: &Samples) -> Result<()> {
    let dim = samples.dim();
    let mut text = String::with_capacity(samples.values.len() * 12 + 8 * dim);
    text.push_str(&csv_header(dim));
    text.push('\n');
    for row in samples.rows() {
        for (d, v) in row.iter().enumerate() {
            let sep = if d + 1 == dim { '\n' } else { ',' };
            write!(text, "{v}{sep}").expect("writing to a String");
        }
    }
    atomic_write(path, text.as_bytes())
}

/// Reads samples written by [`write_points_csv`], of any dimension.
pub fn read_points_csv(path: &Path) -> Result<Samples> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    let header = lines.next().map(str::trim).unwrap_or("");
    let dim = header.split(',').count();
    if dim < 2 || header != csv_header(dim) {
        bail!(
            "{}: expected the header x,y (or x0,x1,… in more dimensions), found {header:?}",
            path.display()
        );
    }
    let mut values = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let start = values.len();
        values.extend(line.split(',').map_while(|v| v.trim().parse::<f32>().ok()));
        if values.len() - start != dim || line.split(',').count() != dim {
            bail!(
                "{}:{}: not a point of {dim} numbers: {line:?}",
                path.display(),
                i + 2
            );
        }
    }
    Ok(Samples {
        shape: vec![dim],
        values,
    })
}
