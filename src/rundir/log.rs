//! `metrics.jsonl`: one [`MetricsRecord`] per logged step. The same type
//! feeds the terminal lab, the plots and the comparisons.

use crate::files::atomic_write;
use crate::metrics::Evaluation;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Training the teacher with the EDM loss on data.
    Pretrain,
    /// Stage 1: fitting the teacher's copy to G⁰, saving path nodes (for the
    /// baseline with `baseline_fake_init = "fit"`: fitting s_φ to G⁰).
    Record,
    /// Stage 2: distilling into the generator, target by target.
    Backtrack,
    Done,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Pretrain => "teacher pretraining",
            Stage::Record => "degradation recording",
            Stage::Backtrack => "backtracking",
            Stage::Done => "done",
        })
    }
}

/// One line of `metrics.jsonl`. Losses are means over the steps since the
/// previous line; `stage`, `step`, `target_node`, `loss_g` and `loss_fake`
/// are always present (null where they do not apply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    pub stage: Stage,
    /// Iteration within the stage (1-based).
    pub step: usize,
    /// Distillation iterations so far: recording iterations plus generator
    /// steps. The x axis of every DisBack vs Diff-Instruct comparison.
    pub cost: usize,
    /// What those iterations cost in network passes (a forward and backward
    /// pass of the score network on a distillation batch); absent while
    /// pretraining and in logs written before it was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passes: Option<f64>,
    pub target_node: Option<usize>,
    pub loss_g: Option<f64>,
    /// The fake score's (or, while recording, the degrading copy's)
    /// denoising loss on generator samples.
    pub loss_fake: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_teacher: Option<f64>,
    /// Mean ‖D_fake − D_target‖ (see `distill::GeneratorLoss::gap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<Evaluation>,
}

impl MetricsRecord {
    /// Whether two records were logged at the same moment of a run.
    fn same_moment(&self, other: &MetricsRecord) -> bool {
        (self.stage, self.step, self.cost) == (other.stage, other.step, other.cost)
    }
}

/// Appends records to `metrics.jsonl`, one flushed line each.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    /// None: a log that only counts (a rank other than 0 writes nothing).
    file: Option<std::fs::File>,
    lines: usize,
}

impl MetricsLog {
    /// Starts an empty log (replacing any file there).
    pub fn create(path: &Path) -> Result<Self> {
        atomic_write(path, b"")?;
        Self::append_to(path, 0)
    }

    /// Reopens a run's log at its checkpoint: every line up to the
    /// checkpoint's last record (`last`, the `lines`-th line) must be a
    /// record, and is kept; what follows was written after the checkpoint
    /// and is dropped, to be written again. The record is found by content,
    /// so a damaged line is reported rather than kept in place of a real one.
    pub fn resume(path: &Path, last: Option<&MetricsRecord>, lines: usize) -> Result<Self> {
        let text = match last {
            Some(_) => {
                std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
            }
            None => String::new(),
        };
        let mut kept = String::new();
        let (mut count, mut found) = (0, false);
        if let Some(last) = last {
            // The checkpoint's record is line `lines` (an earlier line may be
            // of the same moment: the end's measurement repeats the last
            // step's line).
            for (i, line) in text.lines().take(lines).enumerate() {
                let record: MetricsRecord = serde_json::from_str(line).with_context(|| {
                    format!(
                        "{}:{}: not a metrics record, in the part the checkpoint covers; repair \
                         or delete that line, then resume",
                        path.display(),
                        i + 1
                    )
                })?;
                kept.push_str(line);
                kept.push('\n');
                count += 1;
                found = record.same_moment(last);
            }
            if !found || count != lines {
                bail!(
                    "{}: the checkpoint's last record ({} step {}) should be line {lines}, but {}; the \
                     log was changed, refusing to resume over it",
                    path.display(),
                    last.stage,
                    last.step,
                    match count == lines {
                        true => "that line is another record".to_string(),
                        false => format!("the file has {count} lines"),
                    }
                );
            }
        }
        atomic_write(path, kept.as_bytes())?;
        Self::append_to(path, count)
    }

    /// A log that counts its records and writes none: the log of a rank
    /// other than 0, whose records rank 0 writes.
    pub fn silent(lines: usize) -> Self {
        Self {
            path: PathBuf::new(),
            file: None,
            lines,
        }
    }

    fn append_to(path: &Path, lines: usize) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(file),
            lines,
        })
    }

    pub fn append(&mut self, record: &MetricsRecord) -> Result<()> {
        if let Some(file) = &mut self.file {
            let mut line = serde_json::to_string(record)?;
            line.push('\n');
            file.write_all(line.as_bytes())
                .with_context(|| format!("cannot write {}", self.path.display()))?;
        }
        self.lines += 1;
        Ok(())
    }

    pub fn lines(&self) -> usize {
        self.lines
    }
}

/// Reads every record of a `metrics.jsonl`.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRecord>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a metrics record", path.display(), i + 1))
        })
        .collect()
}
