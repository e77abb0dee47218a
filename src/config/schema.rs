//! The TOML schema. Every field has a default (documented on the field), so
//! an empty file is the default demo: DisBack on 10 Gaussians on a ring.

use super::diffusers::DiffusersSpec;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Name used for run directories; defaults to the config file's stem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `disback` (record a degradation path, then backtrack it) or
    /// `diff-instruct` (distil straight from the teacher). Default `disback`.
    pub method: Method,
    /// Seed of every random number the distillation draws (teacher
    /// pretraining has its own, `teacher.seed`). Default 0.
    pub seed: u64,
    /// `auto` (the GPU when the build has CUDA and a GPU is there, else the
    /// CPU), `cpu`, or `cuda:N`. Default `auto`.
    pub device: DeviceChoice,
    /// CPU threads for tensor work; 0 uses every available core, and more
    /// than the machine has are cut to them (with a note). Default 1 on
    /// 2-D data: at the toys' sizes a second thread gives no speed-up on a
    /// 2-core machine and collapses under load (`disback bench` shows
    /// both), and one thread leaves a core for the terminal lab. Default 0
    /// (every core) on images, whose convolutions pay for every thread.
    pub threads: usize,
    pub data: DataConfig,
    pub diffusion: DiffusionConfig,
    pub score_net: ScoreNetConfig,
    pub unet: UNetConfig,
    pub teacher: TeacherConfig,
    pub generator: GeneratorConfig,
    pub record: RecordConfig,
    pub distill: DistillConfig,
    pub schedule: ScheduleConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub parallel: ParallelConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: None,
            method: Method::Disback,
            seed: 0,
            device: DeviceChoice::Auto,
            threads: 1,
            data: DataConfig::default(),
            diffusion: DiffusionConfig::default(),
            score_net: ScoreNetConfig::default(),
            unet: UNetConfig::default(),
            teacher: TeacherConfig::default(),
            generator: GeneratorConfig::default(),
            record: RecordConfig::default(),
            distill: DistillConfig::default(),
            schedule: ScheduleConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            parallel: ParallelConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Disback,
    DiffInstruct,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Disback => "DisBack",
            Method::DiffInstruct => "Diff-Instruct",
        })
    }
}

/// Where tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("{s:?} is not a device: use auto, cpu or cuda:N")),
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The data distribution `q_0`: a 2-D toy or images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DataConfig {
    /// A Gaussian mixture given component by component.
    Gmm {
        components: Vec<ComponentConfig>,
        /// Dimension the mixture's plane is embedded in (≥ 2). Default 2:
        /// the plane itself. See [`DataConfig::embedding`].
        #[serde(default = "defaults::two", skip_serializing_if = "defaults::is_two")]
        dim: usize,
        /// Standard deviation of the isotropic Gaussian noise off the
        /// plane (in its dim − 2 orthogonal directions); > 0 only with
        /// dim > 2. Default 0.
        #[serde(default, skip_serializing_if = "defaults::is_zero")]
        off_plane_std: f64,
        /// Seed of the plane's orientation in `dim` dimensions. Default 0.
        #[serde(default, skip_serializing_if = "defaults::is_zero_u64")]
        seed: u64,
    },
    /// A mixture preset: `modes` equal Gaussians evenly spaced on a circle.
    /// Written out as explicit components in a run's `config.toml`.
    Ring {
        #[serde(default = "defaults::ring_modes")]
        modes: usize,
        #[serde(default = "defaults::ring_radius")]
        radius: f64,
        #[serde(default = "defaults::ring_std")]
        std: f64,
        /// Dimension the mixture's plane is embedded in (≥ 2). Default 2:
        /// the plane itself. See [`DataConfig::embedding`].
        #[serde(default = "defaults::two", skip_serializing_if = "defaults::is_two")]
        dim: usize,
        /// Standard deviation of the isotropic Gaussian noise off the
        /// plane (in its dim − 2 orthogonal directions); > 0 only with
        /// dim > 2. Default 0.
        #[serde(default, skip_serializing_if = "defaults::is_zero")]
        off_plane_std: f64,
        /// Seed of the plane's orientation in `dim` dimensions. Default 0.
        #[serde(default, skip_serializing_if = "defaults::is_zero_u64")]
        seed: u64,
    },
    /// A random mixture drawn from `seed`: `modes` components with means in
    /// the square [−3, 3]², standard deviations from 0.08 to 0.3 and weights
    /// from 1 to 3 (both log-uniform), any two means at least 3 (s_i + s_j)
    /// apart so that every mode is its own cluster. A test bed for mixtures
    /// nobody tuned for. Written out as explicit components in a run's
    /// `config.toml`. `seed` also orients the plane when `dim` > 2.
    Random {
        #[serde(default = "defaults::random_modes")]
        modes: usize,
        #[serde(default)]
        seed: u64,
        /// Dimension the mixture's plane is embedded in (≥ 2). Default 2:
        /// the plane itself. See [`DataConfig::embedding`].
        #[serde(default = "defaults::two", skip_serializing_if = "defaults::is_two")]
        dim: usize,
        /// Standard deviation of the isotropic Gaussian noise off the
        /// plane (in its dim − 2 orthogonal directions); > 0 only with
        /// dim > 2. Default 0.
        #[serde(default, skip_serializing_if = "defaults::is_zero")]
        off_plane_std: f64,
    },
    /// Uniform density on the dark squares of a `cells`×`cells` board of
    /// side `size`, centred on the origin. No exact score.
    Checkerboard {
        #[serde(default = "defaults::checker_cells")]
        cells: usize,
        #[serde(default = "defaults::checker_size")]
        size: f64,
    },
    /// A 2-D swiss roll scaled to about `scale` in radius, with Gaussian
    /// jitter `noise`. No exact score.
    SwissRoll {
        #[serde(default = "defaults::roll_scale")]
        scale: f64,
        #[serde(default = "defaults::roll_noise")]
        noise: f64,
    },
    /// The UCI 8×8 handwritten digits (1,797 images, 10 classes), shipped
    /// inside the binary; resized to `size`×`size` (default 8).
    Digits {
        #[serde(default = "defaults::digits_size")]
        size: usize,
    },
    /// Procedural shapes (disc, square, triangle, ring, cross) of random
    /// place, size and grey level (`channels = 1`) or colour (3), drawn
    /// fresh for every batch from the run's seed. Default 16×16, grey.
    Shapes {
        #[serde(default = "defaults::shapes_size")]
        size: usize,
        #[serde(default = "defaults::one_channel")]
        channels: usize,
    },
    /// MNIST-format IDX files, plain or gzipped (MNIST, Fashion-MNIST):
    /// `path` the images, `labels` the optional labels. Paths are relative
    /// to the working directory. Images are centre cropped to a square and
    /// resized to `size`×`size` (default 28, MNIST's own).
    Idx {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        labels: Option<PathBuf>,
        #[serde(default = "defaults::idx_size")]
        size: usize,
    },
    /// CIFAR-10's binary version: `path` is the folder holding
    /// `data_batch_1.bin` … `data_batch_5.bin`, or one batch file.
    /// `size` resizes (default 32).
    Cifar10 {
        path: PathBuf,
        #[serde(default = "defaults::cifar_size")]
        size: usize,
    },
    /// No data: distil a pretrained teacher (`teacher.pretrained`) alone.
    /// The images' shape is the teacher's; what needs data (distances to
    /// it, the mismatch degree, class coverage) is not measured. The
    /// default when a pretrained teacher is given and `[data]` is not.
    None {
        #[serde(default)]
        channels: usize,
        #[serde(default)]
        size: usize,
    },
    /// A folder of PNG/JPEG images, centre cropped and resized to
    /// `size`×`size` (default 32), grey (`channels = 1`) or colour (3,
    /// the default). Sub-folder names are class labels when images are in
    /// sub-folders.
    Folder {
        path: PathBuf,
        #[serde(default = "defaults::folder_size")]
        size: usize,
        #[serde(default = "defaults::three_channels")]
        channels: usize,
    },
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig::Ring {
            modes: defaults::ring_modes(),
            radius: defaults::ring_radius(),
            std: defaults::ring_std(),
            dim: 2,
            off_plane_std: 0.0,
            seed: 0,
        }
    }
}

/// One isotropic Gaussian component of a mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    pub mean: [f64; 2],
    /// Standard deviation per coordinate (> 0).
    pub std: f64,
    /// Relative weight (> 0); normalised by the loader. Default 1.
    #[serde(default = "defaults::one")]
    pub weight: f64,
}

/// EDM preconditioning, training noise and sampler. The noise levels
/// (p_mean, p_std, sigma_min, sigma_max) are in EDM's units, tuned for data
/// with σ_data = 0.5, and are scaled by σ_data / 0.5 for the data at hand:
/// the same as standardising the data to EDM's scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiffusionConfig {
    /// σ_data of the EDM preconditioning. Default: the data's own standard
    /// deviation per coordinate (exact for mixtures), so the network sees
    /// unit-scale inputs whatever the data's size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigma_data: Option<f64>,
    /// Mean of ln σ for the denoising loss of the teacher and of the
    /// recording (EDM units). Default −2.0, below EDM's −1.2: the teacher
    /// must be exact at the small σ where tight modes separate. Measured
    /// (teacher's own Heun samples, share within 3 std of a mode): on the
    /// 3×3 grid of std 0.12, 0.63 at −1.2 (two teacher seeds) and 0.98 at
    /// −2.0; on the ring 0.95 and 0.96. s_φ is trained at the generator
    /// loss's noise levels instead (`distill.sigma`).
    pub p_mean: f64,
    /// Standard deviation of ln σ for the denoising loss. Default 1.6,
    /// wider than EDM's 1.2: on the default ring it halves the teacher's
    /// score error at σ = 0.1 (0.15 vs 0.29 relative) at the same cost.
    pub p_std: f64,
    /// Smallest σ of the Karras grid. Default 0.002.
    pub sigma_min: f64,
    /// Largest σ of the Karras grid. Default 80.
    pub sigma_max: f64,
    /// Karras grid exponent ρ. Default 7.
    pub rho: f64,
    /// Heun sampler steps for teacher / node previews. Default 40.
    pub sampler_steps: usize,
}

impl Default for DiffusionConfig {
    fn default() -> Self {
        Self {
            sigma_data: None,
            p_mean: -2.0,
            p_std: 1.6,
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
            sampler_steps: 40,
        }
    }
}

/// The ResNet-MLP shared by the teacher, the path nodes and the fake score
/// on 2-D data (images use [`UNetConfig`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreNetConfig {
    /// Hidden width. Default 128.
    pub width: usize,
    /// Residual blocks. Default 3.
    pub blocks: usize,
    /// Size of the Fourier embedding of the noise level (even). Default 16.
    pub emb_dim: usize,
    /// Inputs and outputs: the data's dimension, filled in from `data.dim`
    /// when the network is built (leave it out; a value that differs
    /// from the data's is refused). Default 2.
    #[serde(default = "defaults::two", skip_serializing_if = "defaults::is_two")]
    pub dim: usize,
}

impl Default for ScoreNetConfig {
    fn default() -> Self {
        Self {
            width: 128,
            blocks: 3,
            emb_dim: 16,
            dim: 2,
        }
    }
}

/// The U-Net shared by the teacher, the path nodes and the fake score on
/// image data (DDPM++/EDM style: residual blocks with GroupNorm and SiLU,
/// the noise embedding as a per-channel scale and shift in every block,
/// stride-2 convolutions down, nearest-neighbour upsampling and a
/// convolution up, skip connections between the two halves).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UNetConfig {
    /// Channels at full resolution. Default 32.
    pub channels: usize,
    /// Channel multiplier of each level; every level after the first
    /// halves the resolution, so the image side must divide by
    /// 2^(levels − 1). Default [1, 2] (32 channels at 8×8, 64 at 4×4 on
    /// the digits).
    pub multipliers: Vec<usize>,
    /// Residual blocks per level on the way down (one more on the way up,
    /// as in DDPM++). Default 1.
    pub blocks: usize,
    /// Self-attention at the lowest resolution. Default false: at 8×8 and
    /// 16×16 the convolutions already see the whole image.
    pub attention: bool,
    /// Size of the Fourier embedding of the noise level (even); an MLP maps
    /// it to 4 × `channels`. Default 32.
    pub emb_dim: usize,
    /// GroupNorm groups; every level's channels must divide by it.
    /// Default 8.
    pub groups: usize,
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self {
            channels: 32,
            multipliers: vec![1, 2],
            blocks: 1,
            attention: false,
            emb_dim: 32,
            groups: 8,
        }
    }
}

/// Teacher pretraining (EDM loss on data samples), or a file to load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeacherConfig {
    /// Load the teacher from this safetensors file instead of training one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Distil a pretrained `diffusers` `UNet2DModel` instead: a model
    /// folder (`config.json`, `diffusion_pytorch_model.safetensors`, and
    /// the scheduler's `scheduler_config.json` beside them or in
    /// `../scheduler/`) or a pipeline folder (`unet/`, `scheduler/`). Its
    /// noise schedule sets the σ range; no `[data]` is needed (then
    /// nothing is measured against data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// The pretrained model's architecture and noise schedule, as read
    /// from its folder when the run started (written into a run's
    /// `config.toml`; never set by hand).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diffusers: Option<DiffusersSpec>,
    /// Pretraining steps. Default 3000.
    pub steps: usize,
    /// Batch size. Default 512.
    pub batch: usize,
    /// Adam learning rate (cosine-decayed to 5% over the steps). Default 2e-3.
    pub lr: f64,
    /// Seed of pretraining, apart from the run's, so that runs with other
    /// seeds share one teacher. Default 0.
    pub seed: u64,
    /// Where pretrained teachers are cached, keyed by a hash of the data,
    /// diffusion, network and teacher settings. Default `runs/teachers`.
    pub cache_dir: PathBuf,
}

impl Default for TeacherConfig {
    fn default() -> Self {
        Self {
            file: None,
            pretrained: None,
            diffusers: None,
            steps: 3000,
            batch: 512,
            lr: 2e-3,
            seed: 0,
            cache_dir: PathBuf::from("runs/teachers"),
        }
    }
}

/// The one-step generator `G(z)`, `z ~ N(0, I)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// `teacher`: the teacher's own network and weights called at one
    /// noise level, `G(z) = D_θ(σ_g z; σ_g)` with `z` of the data's
    /// dimension (Diff-Instruct's and DMD's setting); `latent_dim`, `width`,
    /// `depth` and `sigma_init` then do not apply. `random`: an MLP on
    /// `sigma_init · z`, randomly initialised (the paper's 2-D toy).
    /// Default `teacher`: G⁰ already spreads over every mode, and the
    /// denoiser's architecture can make the sharp cuts between modes that a
    /// one-step generator needs. Measured on the ring, 2 seeds: precision
    /// 0.83 vs 0.46, energy 0.005 vs 0.025, and the hard mixture's six
    /// modes all kept (`docs/toys.md`).
    pub init: GeneratorInit,
    /// σ_g of the teacher-initialised generator, in EDM units (scaled by
    /// σ_data / 0.5 like every noise level, so 0.5 means σ_g = σ_data).
    /// Default 0.5: on the ring precision 0.83 at 0.5, 0.63 at 2.5 (SiD's
    /// value); at DMD2's 80 the teacher maps every z to the data mean.
    pub sigma_g: f64,
    /// Dimension of the latent z ~ N(0, I). Default 4.
    pub latent_dim: usize,
    /// Hidden width. Default 128.
    pub width: usize,
    /// Hidden layers. Default 3.
    pub depth: usize,
    /// Scale applied to z before the network. Default 1.
    pub sigma_init: f64,
    /// Adam learning rate. Default 3e-4.
    pub lr: f64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            init: GeneratorInit::Teacher,
            sigma_g: 0.5,
            latent_dim: 4,
            width: 128,
            depth: 3,
            sigma_init: 1.0,
            lr: 3e-4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorInit {
    Random,
    Teacher,
}

/// Stage 1: degradation recording (DisBack only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordConfig {
    /// Fine-tuning iterations of the teacher copy on G⁰'s samples.
    /// Default 200 (the paper's EDM runs).
    pub iterations: usize,
    /// Where on the recording the N nodes after the teacher are saved, when
    /// neither `nodes` nor `node_every` is given: `geometric` (nodes after
    /// `first_node` · f^(k−1) iterations, k = 1 … N, with the factor f that
    /// puts node N at `iterations`: 2, 9, 43, 200 by default — most nodes
    /// near the teacher, where the generator gains most per step) or
    /// `uniform` (after k · iterations / N: 50, 100, 150, 200, the paper's
    /// choice, every K/N iterations). Default `geometric`
    /// (docs/backtracking.md: it made DisBack pay where uniform did not).
    pub placement: Placement,
    /// N, the nodes after the teacher (node 0). Default 4 (the paper's EDM
    /// runs).
    pub node_count: usize,
    /// `geometric` only: the recording iteration of the first node. Default
    /// 2: one step of fine-tuning barely moves the copy, and the nodes
    /// nearest the teacher are the ones that pay.
    pub first_node: usize,
    /// The old key, kept working: a node every this many iterations (uniform
    /// placement, N = iterations / node_every, which it must divide). Not
    /// set by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_every: Option<usize>,
    /// The nodes' recording iterations, listed (e.g. [2, 6, 20, 200]):
    /// increasing, the last at `iterations`. Overrides `placement`,
    /// `node_count` and `first_node`. Not set by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<usize>>,
    /// Adam learning rate. Sets how far the path reaches: it should end
    /// near G⁰ with the nodes spread along the way. Default 2e-4 (measured
    /// on the default ring with uniform nodes: their energy distances to
    /// the data are 0.03, 0.26, 0.76, 1.26 and G⁰'s is 1.80; at 1e-3 nodes
    /// 2–4 already equal G⁰ and give backtracking nothing to follow).
    pub lr: f64,
    /// Batch size. Default 512.
    pub batch: usize,
    /// The noise levels the teacher's copy degrades at: `teacher` (the
    /// teacher's own denoising law, ln σ ~ N(p_mean, p_std²): the paper's
    /// Algorithm 1, which reuses the teacher's training loss) or `distill`
    /// (the law stage 2 queries the targets at, `distill.sigma`, so that
    /// every node is degraded where backtracking reads it). Default
    /// `teacher`.
    pub sigma: RecordSigma,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            iterations: 200,
            placement: Placement::Geometric,
            node_count: 4,
            first_node: 2,
            node_every: None,
            nodes: None,
            lr: 2e-4,
            batch: 512,
            sigma: RecordSigma::Teacher,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    Uniform,
    Geometric,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordSigma {
    Teacher,
    Distill,
}

impl RecordConfig {
    /// The recording iterations after which nodes 1 … N are saved, by the
    /// first rule given: `nodes`, `node_every`, `placement`. Validation
    /// checks they increase and end at `iterations`.
    pub fn node_iterations(&self) -> Vec<usize> {
        if let Some(nodes) = &self.nodes {
            return nodes.clone();
        }
        if let Some(every) = self.node_every {
            let n = self.iterations.checked_div(every).unwrap_or(0);
            return (1..=n).map(|k| k * every).collect();
        }
        let (n, total) = (self.node_count, self.iterations as f64);
        match self.placement {
            Placement::Uniform => (1..=n)
                .map(|k| (k as f64 * total / n as f64).round() as usize)
                .collect(),
            Placement::Geometric if n <= 1 => vec![self.iterations; n],
            Placement::Geometric => {
                let first = self.first_node as f64;
                let factor = (total / first).powf(1.0 / (n - 1) as f64);
                (0..n)
                    .map(|k| (first * factor.powi(k as i32)).round() as usize)
                    .collect()
            }
        }
    }

    /// Number of recorded nodes after the teacher (N).
    pub fn nodes(&self) -> usize {
        self.node_iterations().len()
    }
}

/// Stage 2 (and the baseline): score distillation into the generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillConfig {
    /// Batch of generator samples per update. Default 256.
    pub batch: usize,
    /// Adam learning rate of the fake score s_φ. Default 1e-3.
    pub fake_lr: f64,
    /// Fake-score (DSM) updates per generator update. Default 2 (the
    /// paper's EDM runs use 1; DMD2 uses 5): s_φ must track the generator,
    /// or a lagging s_φ starves light modes. Measured on the random 8-mode
    /// mixture, seeds 0–4: the smallest mode share 0.56, 0.51, 0.86, 0.82,
    /// 0.84 at 2 against 0.73, 0.44, 0.46, 0.56, 0.86 at 1, median energy
    /// 0.0023 against 0.0099. Each iteration costs 1.26× as much. Keeping
    /// the time of one update with fewer generator steps ([200, 200, 200,
    /// 1000]) starved a mode again on 2 of 10 seeds (ring and random).
    pub fake_steps_per_generator_step: usize,
    /// Generator-loss weighting: `dmd` (score difference in x_0 space,
    /// divided per sample by mean |x_0 − D_target|, DMD's normaliser) or
    /// `raw` (Diff-Instruct: σ²-weighted score difference, D_fake − D_target,
    /// unnormalised). Default `dmd`.
    pub weighting: Weighting,
    /// σ for the generator loss: `karras` (a uniformly drawn index between
    /// `karras_min_index` and `karras_max_index` of a 1000-step Karras grid,
    /// as DMD2) or `log-normal` (ln σ ~ N(p_mean, p_std), as Diff-Instruct).
    /// Default `karras`.
    pub sigma: SigmaDistribution,
    /// Default 20.
    pub karras_min_index: usize,
    /// Default 980.
    pub karras_max_index: usize,
    /// Diff-Instruct only: s_φ starts as the `teacher`, or is first `fit`
    /// to G⁰ for `record.iterations` DSM steps (the same cost as DisBack's
    /// recording). Default `teacher`.
    pub baseline_fake_init: FakeInit,
    /// Decay of the exponential moving average of the generator's weights
    /// (updated after every generator step). The average is what is
    /// sampled, measured, previewed and saved; the raw weights only train.
    /// 0 turns it off. Default 0.99.
    pub generator_ema: f64,
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            batch: 256,
            fake_lr: 1e-3,
            fake_steps_per_generator_step: 2,
            weighting: Weighting::Dmd,
            sigma: SigmaDistribution::Karras,
            karras_min_index: 20,
            karras_max_index: 980,
            baseline_fake_init: FakeInit::Teacher,
            generator_ema: 0.99,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Weighting {
    Dmd,
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SigmaDistribution {
    Karras,
    LogNormal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FakeInit {
    Teacher,
    Fit,
}

/// When stage 2 moves to the next target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// `fixed`: exactly `steps[i]` generator steps on the i-th target.
    /// `auto`: leave a non-teacher target once its gap stalls (see below),
    /// or after `steps[i]` at the latest. `manual`: stay on a target until
    /// told (terminal lab only). Default `fixed`.
    pub policy: SchedulePolicy,
    /// Generator steps per target, from the most degraded target (node N−1)
    /// to the teacher (node 0), which is always last and always runs its
    /// full count. DisBack needs one entry per recorded node (N);
    /// Diff-Instruct exactly one. Default `[20, 100, 100, 1780]`: 1%, 5%
    /// and 5% of the budget on the degraded nodes. The paper's EDM runs
    /// give them about 2%, 20% and 20% ([40, 400, 400, 1160] here); on the
    /// 2-D mixtures every step on a degraded node delayed convergence, and
    /// the short schedule was the fastest DisBack at the same final quality
    /// (docs/backtracking.md: on the ring 0.28× Diff-Instruct's speed
    /// against 0.12× with the paper's proportions and 0.13× with equal
    /// shares).
    pub steps: Vec<usize>,
    /// `auto`: the gap (mean |D_fake − D_target| over the batch) is averaged
    /// over windows of this many steps. Default 50.
    pub window: usize,
    /// `auto`: a window "improves" when its mean gap is below the previous
    /// window's by at least this fraction. Default 0.02.
    pub min_improvement: f64,
    /// `auto`: switch after this many consecutive windows without
    /// improvement. Default 2.
    pub patience: usize,
    /// `auto`: never switch before this many steps on a target. Default 100.
    pub min_steps: usize,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            policy: SchedulePolicy::Fixed,
            steps: vec![20, 100, 100, 1780],
            window: 50,
            min_improvement: 0.02,
            patience: 2,
            min_steps: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulePolicy {
    Fixed,
    Auto,
    Manual,
}

/// What a run writes, and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `metrics.jsonl` line every this many iterations. Default 10.
    pub every: usize,
    /// The resumable state (generator, s_φ, optimisers, RNG) is saved every
    /// this many iterations. Default 500.
    pub checkpoint_every: usize,
    /// Generator samples written to `samples.csv` at the end (images:
    /// `samples.safetensors`). Default 10000 on 2-D data, 1000 on images,
    /// where each is a network evaluation.
    pub final_samples: usize,
    /// Also write TensorBoard event files, `tensorboard/events.out.tfevents.*`:
    /// every number of `metrics.jsonl`, the rate, node switches, and a
    /// picture of the samples at each measurement. Default false.
    pub tensorboard: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            every: 10,
            checkpoint_every: 500,
            final_samples: 10_000,
            tensorboard: false,
        }
    }
}

/// Quality measurements during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Distances, mode coverage and mismatch degree are measured every this
    /// many generator steps (0: only at the end). Default 100.
    pub every: usize,
    /// Generator samples per measurement (the energy distance is quadratic
    /// in it), and without data the teacher samples that stand in for it.
    /// Default 1000 on 2-D data: a measurement costs about 50 ms on the
    /// default config, 6% of training at `every = 100`. Default 64 on
    /// images, where every sample is a network pass (see `docs/images.md`,
    /// "What measuring costs").
    pub samples: usize,
    /// Heun steps of the samples a measurement draws from a score model
    /// (each costs 2 × steps − 1 network evaluations): the teacher's samples
    /// standing in for data a run has none of, and each node's samples
    /// (`path_spread`). Default 18 on 2-D data (EDM's CIFAR-10 sampler),
    /// 4 on images (7 evaluations a sample: measuring stays under a tenth
    /// of an image run; docs/images.md).
    pub sampler_steps: usize,
    /// σ grid for the mismatch degree. Default 0.05 … 5 (7 values).
    pub mismatch_sigmas: Vec<f64>,
    /// Data samples of the Stable Target Field reference batch (data
    /// without an exact score). Default 4096.
    pub stf_reference: usize,
    /// Measure every node of the path as it is recorded: its Heun samples'
    /// distance to the data and to G⁰ (`path/nodes.json`, the lab's path
    /// panel). Default true on 2-D data; false on images, where each node's
    /// samples cost `samples` × (2 × `sampler_steps` − 1) network
    /// evaluations.
    pub path_spread: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            every: 100,
            samples: 1000,
            sampler_steps: 18,
            mismatch_sigmas: vec![0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0],
            stf_reference: 4096,
            path_spread: true,
        }
    }
}

/// Data parallelism: the ranks split every batch, average their gradients
/// and so hold the same weights; rank 0 alone writes and serves the lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParallelConfig {
    /// How many ranks. With `threads`, the threads this process starts;
    /// with `nccl`, the processes (one per GPU, `cuda:0` … `cuda:N−1`)
    /// this one starts on its box, unless a launcher (torchrun, srun) set
    /// `WORLD_SIZE`, which then says. Default 1.
    pub ranks: usize,
    /// `solo` (one rank), `threads` (ranks as threads of one process, on
    /// the CPU or sharing one device: for tests and CPU machines) or
    /// `nccl` (one process per GPU, gradients averaged by NCCL; needs the
    /// `cuda` build). Default `solo`.
    pub backend: ParallelBackend,
    /// Seconds a rank waits for the others at a gradient exchange before
    /// it stops the run, naming the ranks that did not come (a hung rank):
    /// a `threads` rank at its exchange, an `nccl` rank by its watchdog,
    /// which ends the hung process. Also how long ranks may take to join at
    /// the start and to leave at the end, and how long a follower that got
    /// a signal waits for rank 0 to end the team. Waits for rank 0's
    /// measurements are not limited; NCCL ranks learn of a dead rank from
    /// its closed connection at once. Default 600.
    pub timeout_s: f64,
}

impl Default for ParallelConfig {
    fn default() -> Self {
        Self {
            ranks: 1,
            backend: ParallelBackend::Solo,
            timeout_s: 600.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParallelBackend {
    Solo,
    Threads,
    Nccl,
}

impl fmt::Display for ParallelBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Solo => "solo",
            Self::Threads => "threads",
            Self::Nccl => "nccl",
        })
    }
}

mod defaults {
    pub fn one() -> f64 {
        1.0
    }
    pub fn two() -> usize {
        2
    }
    pub fn is_two(n: &usize) -> bool {
        *n == 2
    }
    pub fn is_zero(x: &f64) -> bool {
        *x == 0.0
    }
    pub fn is_zero_u64(x: &u64) -> bool {
        *x == 0
    }
    pub fn ring_modes() -> usize {
        10
    }
    pub fn ring_radius() -> f64 {
        2.5
    }
    pub fn ring_std() -> f64 {
        0.15
    }
    pub fn random_modes() -> usize {
        8
    }
    pub fn checker_cells() -> usize {
        4
    }
    pub fn checker_size() -> f64 {
        4.0
    }
    pub fn roll_scale() -> f64 {
        2.5
    }
    pub fn roll_noise() -> f64 {
        0.05
    }
    pub fn digits_size() -> usize {
        8
    }
    pub fn shapes_size() -> usize {
        16
    }
    pub fn idx_size() -> usize {
        28
    }
    pub fn cifar_size() -> usize {
        32
    }
    pub fn folder_size() -> usize {
        32
    }
    pub fn one_channel() -> usize {
        1
    }
    pub fn three_channels() -> usize {
        3
    }
}
