//! The degradation path on disk: node 0 is the teacher, node i the
//! teacher's copy after `NodeInfo::iteration` recording iterations (the
//! i-th of `record.node_iterations()`, except a last node made by skipping,
//! which is wherever the skip came). Nodes live as safetensors files beside a JSON index.

use super::protocol::{NodeGap, NodeSpread};
use crate::distill::NodeSource;
use crate::files::{read_json, write_json};
use crate::model::Denoiser;
use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub index: usize,
    /// Recording iterations behind this node (0 for the teacher).
    pub iteration: usize,
    /// File name inside the path folder.
    pub file: String,
    /// Mean denoising loss on G⁰'s samples over the iterations since the
    /// previous node (none for the teacher).
    pub loss: Option<f64>,
    /// How far the node's samples lie from the data and from G⁰'s: an
    /// over-degraded path (the paper's Table 6 failure) shows as nodes far
    /// from the data that are no nearer G⁰ either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<NodeSpread>,
    /// How far the node's denoiser lies from the teacher's and from the
    /// last node's on a fixed probe (`engine::probe`): a path collapsed
    /// onto G⁰ shows as nodes near the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<NodeGap>,
}

#[derive(Debug, Clone)]
/// `nodes.json`: the nodes recorded so far.
#[derive(Serialize, Deserialize)]
struct NodeIndex {
    nodes: Vec<NodeInfo>,
}

pub struct DegradationPath {
    dir: PathBuf,
    nodes: Vec<NodeInfo>,
    /// Whether this path writes its files (rank 0), or only keeps the
    /// index of the files rank 0 writes (the other ranks).
    writes: bool,
}

impl DegradationPath {
    const INDEX: &'static str = "nodes.json";

    /// An empty path stored in `dir`, which it `writes` or only reads.
    pub fn new(dir: &Path, writes: bool) -> Self {
        Self {
            dir: dir.to_path_buf(),
            nodes: Vec::new(),
            writes,
        }
    }

    /// Reads a path written earlier (to resume a run).
    pub fn open(dir: &Path, writes: bool) -> Result<Self> {
        let index = dir.join(Self::INDEX);
        if !index.exists() {
            return Ok(Self::new(dir, writes));
        }
        let NodeIndex { nodes } = read_json(&index)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            nodes,
            writes,
        })
    }

    /// Saves `model` as the next node and updates the index.
    pub fn record(
        &mut self,
        model: &Denoiser,
        iteration: usize,
        loss: Option<f64>,
        spread: Option<NodeSpread>,
        gap: Option<NodeGap>,
    ) -> Result<&NodeInfo> {
        let index = self.nodes.len();
        let file = format!("node-{index}.safetensors");
        if self.writes {
            model.save(&self.dir.join(&file))?;
        }
        self.nodes.push(NodeInfo {
            index,
            iteration,
            file,
            loss,
            spread,
            gap,
        });
        self.write_index()?;
        Ok(self.nodes.last().expect("just pushed"))
    }

    /// Keeps the first `len` nodes (a run resumed from a checkpoint records
    /// the later ones again).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        self.nodes.truncate(len);
        self.write_index()
    }

    /// Adds each node's distance from the last node, measured once
    /// recording is over (`to_start[i]` for node i).
    pub fn set_distances_to_start(&mut self, to_start: &[f64]) -> Result<()> {
        for (node, &d) in self.nodes.iter_mut().zip(to_start) {
            if let Some(gap) = &mut node.gap {
                gap.to_start = Some(d);
            }
        }
        self.write_index()
    }

    fn write_index(&self) -> Result<()> {
        if !self.writes {
            return Ok(());
        }
        let index = NodeIndex {
            nodes: self.nodes.clone(),
        };
        write_json(&self.dir.join(Self::INDEX), &index)
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// Number of nodes, the teacher included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn file(&self, index: usize) -> PathBuf {
        self.dir.join(&self.nodes[index].file)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Switches load node files: every weight, checked against the file's
/// metadata and shapes (`Denoiser::load`).
impl NodeSource for DegradationPath {
    fn load_node(&self, index: usize, model: &Denoiser) -> Result<()> {
        ensure!(
            index < self.len(),
            "the path has {} nodes, not node {index}",
            self.len()
        );
        model.load(&self.file(index))
    }
}
