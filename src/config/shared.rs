//! Plain types every floor above shares: the shape of an image, which
//! network a score model is, and EDM's unit of noise. They live here, at
//! the bottom, so that the schema can name them without reaching up into
//! the data or the models.

use super::diffusers::DiffusersSpec;
use super::schema::{DataConfig, ScoreNetConfig, UNetConfig};
use serde::{Deserialize, Serialize};

/// Channels, height and width of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    pub fn square(channels: usize, size: usize) -> Self {
        Self {
            channels,
            height: size,
            width: size,
        }
    }

    /// Values per image.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DataConfig {
    /// The shape of one image, known from the config alone (files are not
    /// read); `None` for the 2-D toys.
    pub fn image_shape(&self) -> Option<ImageShape> {
        match self {
            DataConfig::Digits { size } | DataConfig::Idx { size, .. } => Some(ImageShape::square(1, *size)),
            DataConfig::Cifar10 { size, .. } => Some(ImageShape::square(3, *size)),
            DataConfig::Shapes { size, channels } | DataConfig::Folder { size, channels, .. } => {
                Some(ImageShape::square(*channels, *size))
            }
            // Known once resolved against the teacher.
            DataConfig::None { channels, size } => Some(ImageShape::square(*channels, *size)),
            _ => None,
        }
    }

    /// Whether this is image data (else a 2-D toy).
    pub fn is_image(&self) -> bool {
        self.image_shape().is_some()
    }

    /// How a mixture's plane sits in `dim` dimensions; `None` for the
    /// kinds that are not Gaussian mixtures.
    pub fn embedding(&self) -> Option<PlaneEmbedding> {
        match *self {
            DataConfig::Gmm {
                dim,
                off_plane_std,
                seed,
                ..
            }
            | DataConfig::Ring {
                dim,
                off_plane_std,
                seed,
                ..
            }
            | DataConfig::Random {
                dim,
                off_plane_std,
                seed,
                ..
            } => Some(PlaneEmbedding {
                dim,
                off_plane_std,
                seed,
            }),
            _ => None,
        }
    }

    /// Values per point of the non-image data: `data.dim` for mixtures, 2
    /// for the other toys; `None` for images.
    pub fn point_dim(&self) -> Option<usize> {
        match self.embedding() {
            Some(e) => Some(e.dim),
            None => (!self.is_image()).then_some(2),
        }
    }
}

/// A mixture's plane in `dim` dimensions: an orthonormal map Q (dim × 2)
/// drawn from `seed` (the identity when `dim` = 2), with isotropic
/// Gaussian noise of `off_plane_std` in the directions orthogonal to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlaneEmbedding {
    pub dim: usize,
    pub off_plane_std: f64,
    pub seed: u64,
}

impl PlaneEmbedding {
    /// The plane itself: no embedding.
    pub const PLANE: PlaneEmbedding = PlaneEmbedding {
        dim: 2,
        off_plane_std: 0.0,
        seed: 0,
    };
}

/// Which network a score model is, with every setting that fixes its
/// parameters' names and shapes: written into model files and checked on
/// load, and what a deep copy rebuilds from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetSpec {
    /// The ResNet-MLP on 2-D points.
    Mlp(ScoreNetConfig),
    /// The U-Net on images of one shape.
    UNet { image: ImageShape, config: UNetConfig },
    /// A pretrained `diffusers` `UNet2DModel`, with the noise schedule it
    /// was trained on.
    Diffusers(Box<DiffusersSpec>),
}

/// In words, for headers: "ResNet-MLP 128 wide × 3 blocks" or
/// "U-Net 32·[1, 2] channels × 1 block on 1×8×8".
impl std::fmt::Display for NetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetSpec::Mlp(c) => write!(f, "ResNet-MLP {} wide × {} blocks", c.width, c.blocks),
            NetSpec::UNet { image, config: c } => write!(
                f,
                "U-Net {}·{:?} channels × {} block{}{} on {}×{}×{}",
                c.channels,
                c.multipliers,
                c.blocks,
                if c.blocks == 1 { "" } else { "s" },
                if c.attention { ", attention" } else { "" },
                image.channels,
                image.height,
                image.width
            ),
            NetSpec::Diffusers(d) => write!(
                f,
                "diffusers UNet2DModel {:?} channels × {} layers on {}×{}×{}",
                d.unet.block_out_channels,
                d.unet.layers_per_block,
                d.unet.in_channels,
                d.unet.sample_size,
                d.unet.sample_size
            ),
        }
    }
}

/// The σ_data that EDM's noise settings were tuned for (images in [−1, 1]).
/// Every noise level a config gives (p_mean, sigma_min, sigma_max, σ_g) is
/// in these units.
pub const EDM_SIGMA_DATA: f64 = 0.5;

/// A noise level in EDM's units, in the units of data whose standard
/// deviation is `sigma_data`: the same as standardising the data to EDM's
/// scale (spec §3). The one place this conversion is written.
pub fn edm_to_data_units(edm_sigma: f64, sigma_data: f64) -> f64 {
    edm_sigma * sigma_data / EDM_SIGMA_DATA
}

/// The random MLP generator of the paper's 2-D toy: `G(z) = MLP(σ_init z)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpGeneratorSpec {
    pub latent_dim: usize,
    /// Outputs: the data's dimension (written only where it is not 2).
    #[serde(default = "plane_dim", skip_serializing_if = "is_plane_dim")]
    pub dim: usize,
    pub width: usize,
    pub depth: usize,
    pub sigma_init: f64,
}

fn plane_dim() -> usize {
    2
}

fn is_plane_dim(dim: &usize) -> bool {
    *dim == 2
}

/// Which one-step generator, with every setting that fixes its weights and
/// what they mean.
#[derive(Debug, Clone, PartialEq)]
pub enum GeneratorSpec {
    /// An MLP from a latent to a point, randomly initialised.
    Mlp(MlpGeneratorSpec),
    /// A score network called at one noise level, `G(z) = D(σ_g z; σ_g)`,
    /// `z` of the data's shape; `from_teacher`: its weights are copied from
    /// the teacher (else they keep their random start).
    Denoiser {
        net: NetSpec,
        sigma_data: f64,
        /// σ_g in the data's units.
        sigma_g: f64,
        from_teacher: bool,
    },
}
