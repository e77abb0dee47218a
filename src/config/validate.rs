//! Validation: every rule names the key and says why the value is wrong.
//! All problems are reported at once, so a user fixes a file in one pass.

use super::schema::*;
use super::shared::{ImageShape, PlaneEmbedding};
use anyhow::{Result, bail};

/// Collects the problems found in a config.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn require(&mut self, ok: bool, key: &str, why: impl FnOnce() -> String) {
        if !ok {
            self.0.push(format!("{key}: {}", why()));
        }
    }

    fn positive(&mut self, value: f64, key: &str) {
        self.require(value.is_finite() && value > 0.0, key, || {
            format!("{value} must be a positive number")
        });
    }

    fn at_least(&mut self, value: usize, min: usize, key: &str) {
        self.require(value >= min, key, || format!("{value} must be at least {min}"));
    }
}

impl Config {
    /// Checks every rule; the error lists each broken one.
    pub fn validate(&self) -> Result<()> {
        let mut p = Problems::default();
        self.data.check(&mut p);
        self.check_diffusion(&mut p);
        self.check_networks(&mut p);
        self.check_training(&mut p);
        self.check_schedule(&mut p);
        self.check_outputs(&mut p);
        self.check_parallel(&mut p);
        if p.0.is_empty() {
            Ok(())
        } else {
            bail!("{}", p.0.join("\n"))
        }
    }

    fn check_diffusion(&self, p: &mut Problems) {
        let d = &self.diffusion;
        if let Some(s) = d.sigma_data {
            p.positive(s, "diffusion.sigma_data");
        }
        p.require(d.p_mean.is_finite(), "diffusion.p_mean", || {
            format!("{} must be a finite number", d.p_mean)
        });
        p.positive(d.p_std, "diffusion.p_std");
        p.positive(d.sigma_min, "diffusion.sigma_min");
        p.positive(d.sigma_max, "diffusion.sigma_max");
        p.require(d.sigma_min < d.sigma_max, "diffusion.sigma_min", || {
            format!("{} must be below sigma_max = {}", d.sigma_min, d.sigma_max)
        });
        p.positive(d.rho, "diffusion.rho");
        p.at_least(d.sampler_steps, 2, "diffusion.sampler_steps");
    }

    fn check_networks(&self, p: &mut Problems) {
        let s = &self.score_net;
        p.at_least(s.width, 1, "score_net.width");
        p.at_least(s.blocks, 1, "score_net.blocks");
        p.require(
            s.emb_dim >= 2 && s.emb_dim.is_multiple_of(2),
            "score_net.emb_dim",
            || {
                format!(
                    "{} must be an even number of at least 2 (sin/cos pairs)",
                    s.emb_dim
                )
            },
        );
        let data_dim = self.data.point_dim().unwrap_or(2);
        p.require(s.dim == 2 || s.dim == data_dim, "score_net.dim", || {
            format!(
                "{} differs from the data's dimension ({data_dim}); it is set from data.dim, leave it out",
                s.dim
            )
        });
        // A pretrained teacher brings its own network (checked when its
        // folder is read); the project's U-Net is checked otherwise.
        if let Some(image) = self.data.image_shape()
            && self.teacher.pretrained.is_none()
        {
            self.check_unet(image, p);
        }
        let g = &self.generator;
        p.at_least(g.latent_dim, 1, "generator.latent_dim");
        p.at_least(g.width, 1, "generator.width");
        p.at_least(g.depth, 1, "generator.depth");
        p.positive(g.sigma_init, "generator.sigma_init");
        p.positive(g.lr, "generator.lr");
        p.positive(g.sigma_g, "generator.sigma_g");
    }

    fn check_unet(&self, image: ImageShape, p: &mut Problems) {
        let u = &self.unet;
        p.at_least(u.channels, 1, "unet.channels");
        p.at_least(u.blocks, 1, "unet.blocks");
        p.require(!u.multipliers.is_empty(), "unet.multipliers", || {
            "the U-Net needs at least one level".into()
        });
        p.require(u.multipliers.iter().all(|&m| m >= 1), "unet.multipliers", || {
            format!("{:?}: every multiplier must be at least 1", u.multipliers)
        });
        p.at_least(u.groups, 1, "unet.groups");
        let bad_group = u
            .multipliers
            .iter()
            .find(|&&m| u.groups == 0 || !(u.channels * m).is_multiple_of(u.groups));
        p.require(bad_group.is_none(), "unet.groups", || {
            format!(
                "{}: every level's channels (unet.channels × multiplier: {:?}) must divide by it",
                u.groups,
                u.multipliers.iter().map(|m| u.channels * m).collect::<Vec<_>>()
            )
        });
        p.require(
            u.emb_dim >= 2 && u.emb_dim.is_multiple_of(2),
            "unet.emb_dim",
            || {
                format!(
                    "{} must be an even number of at least 2 (sin/cos pairs)",
                    u.emb_dim
                )
            },
        );
        let halvings = u.multipliers.len().saturating_sub(1).min(16);
        p.require(image.height.is_multiple_of(1 << halvings), "data.size", || {
            format!(
                "{}: a U-Net of {} levels halves the image {halvings} times, so the side must divide by {}",
                image.height,
                u.multipliers.len(),
                1 << halvings
            )
        });
    }

    fn check_training(&self, p: &mut Problems) {
        let t = &self.teacher;
        if t.file.is_none() && t.pretrained.is_none() {
            p.at_least(t.steps, 1, "teacher.steps");
        }
        p.require(
            t.file.is_none() || t.pretrained.is_none(),
            "teacher.pretrained",
            || {
                "give either teacher.file (a teacher this lab trained) or teacher.pretrained (a diffusers \
             model folder), not both"
                    .into()
            },
        );
        p.require(
            t.pretrained.is_some() || !matches!(self.data, DataConfig::None { .. }),
            "data.kind",
            || "\"none\" needs a pretrained teacher (teacher.pretrained): without data there is nothing to train one on".into(),
        );
        if let (Some(spec), Some(image)) = (&t.diffusers, self.data.image_shape()) {
            let u = &spec.unet;
            p.require(
                (image.channels, image.height) == (u.in_channels, u.sample_size),
                "data",
                || {
                    format!(
                        "{}×{}×{} images, but the pretrained teacher is for {}×{}×{}",
                        image.channels,
                        image.height,
                        image.width,
                        u.in_channels,
                        u.sample_size,
                        u.sample_size
                    )
                },
            );
        }
        p.at_least(t.batch, 1, "teacher.batch");
        p.positive(t.lr, "teacher.lr");

        let r = &self.record;
        if self.records_path() {
            p.at_least(r.iterations, 1, "record.iterations");
            r.check_nodes(p);
        }
        p.positive(r.lr, "record.lr");
        p.at_least(r.batch, 1, "record.batch");

        let d = &self.distill;
        p.at_least(d.batch, 1, "distill.batch");
        p.positive(d.fake_lr, "distill.fake_lr");
        p.at_least(
            d.fake_steps_per_generator_step,
            1,
            "distill.fake_steps_per_generator_step",
        );
        p.require(
            (0.0..1.0).contains(&d.generator_ema),
            "distill.generator_ema",
            || format!("{} must be in [0, 1): 0 turns the average off", d.generator_ema),
        );
        p.require(d.karras_max_index <= 999, "distill.karras_max_index", || {
            format!("{} must be at most 999 (a 1000-step grid)", d.karras_max_index)
        });
        p.require(
            d.karras_min_index < d.karras_max_index,
            "distill.karras_min_index",
            || {
                format!(
                    "{} must be below karras_max_index = {}",
                    d.karras_min_index, d.karras_max_index
                )
            },
        );
    }

    fn check_schedule(&self, p: &mut Problems) {
        let s = &self.schedule;
        p.require(s.steps.iter().all(|&n| n >= 1), "schedule.steps", || {
            format!("{:?}: every target needs at least one generator step", s.steps)
        });
        match self.method {
            Method::Disback => {
                let nodes = self.record.nodes();
                p.require(nodes == 0 || s.steps.len() == nodes, "schedule.steps", || {
                    format!(
                        "has {} entries, but the path has {nodes} targets (nodes {} down to the \
                         teacher, node 0): one entry per target, the teacher's last, or the \
                         schedule does not end on the teacher",
                        s.steps.len(),
                        nodes - 1
                    )
                });
            }
            Method::DiffInstruct => p.require(s.steps.len() == 1, "schedule.steps", || {
                format!(
                    "has {} entries; Diff-Instruct has one target (the teacher), so give one",
                    s.steps.len()
                )
            }),
        }
        if s.policy == SchedulePolicy::Auto {
            p.at_least(s.window, 1, "schedule.window");
            p.require(
                s.min_improvement.is_finite() && s.min_improvement >= 0.0,
                "schedule.min_improvement",
                || format!("{} must be a number ≥ 0", s.min_improvement),
            );
            p.at_least(s.patience, 1, "schedule.patience");
        }
    }

    fn check_outputs(&self, p: &mut Problems) {
        p.at_least(self.log.every, 1, "log.every");
        p.at_least(self.log.checkpoint_every, 1, "log.checkpoint_every");
        p.at_least(self.log.final_samples, 1, "log.final_samples");
        let m = &self.metrics;
        p.at_least(m.samples, 2, "metrics.samples");
        p.at_least(m.sampler_steps, 2, "metrics.sampler_steps");
        p.require(!m.mismatch_sigmas.is_empty(), "metrics.mismatch_sigmas", || {
            "needs at least one σ".into()
        });
        for (i, &s) in m.mismatch_sigmas.iter().enumerate() {
            p.positive(s, &format!("metrics.mismatch_sigmas[{i}]"));
        }
        p.at_least(m.stf_reference, 1, "metrics.stf_reference");
    }

    fn check_parallel(&self, p: &mut Problems) {
        let par = &self.parallel;
        p.at_least(par.ranks, 1, "parallel.ranks");
        p.require(
            par.ranks == 1 || par.backend != ParallelBackend::Solo,
            "parallel.backend",
            || {
                format!(
                    "solo runs one rank, not parallel.ranks = {}: choose threads (ranks as threads \
                     of this process) or nccl (one process per GPU)",
                    par.ranks
                )
            },
        );
        p.positive(par.timeout_s, "parallel.timeout_s");
        if par.ranks >= 1 {
            self.check_world(par.ranks, p);
        }
    }

    /// Every batch must split evenly among `world` ranks: each rank takes
    /// an equal share, so that the average of their gradients is the
    /// gradient of the whole batch.
    fn check_world(&self, world: usize, p: &mut Problems) {
        let trains_teacher = self.teacher.file.is_none() && self.teacher.pretrained.is_none();
        let batches = [
            ("teacher.batch", self.teacher.batch, trains_teacher),
            ("record.batch", self.record.batch, self.records_path()),
            ("distill.batch", self.distill.batch, true),
        ];
        for (key, batch, used) in batches {
            p.require(!used || batch.is_multiple_of(world), key, || {
                format!("{batch} does not split evenly among {world} ranks: make it a multiple of {world}")
            });
        }
    }

    /// Checks that every batch splits among `world` ranks (the world a
    /// launcher such as torchrun set, which the config does not know).
    pub fn validate_world(&self, world: usize) -> Result<()> {
        let mut p = Problems::default();
        self.check_world(world, &mut p);
        match p.0.is_empty() {
            true => Ok(()),
            false => bail!("{}", p.0.join("\n")),
        }
    }

    /// Recorded nodes after the teacher that this config plans (N; 0 for
    /// the baseline, whose only target is the teacher).
    pub fn planned_nodes(&self) -> usize {
        match self.method {
            Method::Disback => self.record.nodes(),
            Method::DiffInstruct => 0,
        }
    }

    /// Whether this run records a degradation path (stage 1), or fits s_φ
    /// to G⁰ for the same number of iterations (the baseline's `fit`).
    pub fn records_path(&self) -> bool {
        self.method == Method::Disback || self.distill.baseline_fake_init == FakeInit::Fit
    }
}

/// A mixture's embedding: at least the plane, and off-plane noise only
/// where there is room off the plane.
fn check_embedding(e: PlaneEmbedding, p: &mut Problems) {
    p.at_least(e.dim, 2, "data.dim");
    let off = e.off_plane_std;
    p.require(off.is_finite() && off >= 0.0, "data.off_plane_std", || {
        format!("{off} must be a finite number ≥ 0")
    });
    p.require(
        off <= 0.0 || e.dim > 2 || !off.is_finite(),
        "data.off_plane_std",
        || {
            format!(
                "{off} needs data.dim > 2 (data.dim = {}: the plane is the whole space, there is no \
             direction off it for the noise)",
                e.dim
            )
        },
    );
}

impl DataConfig {
    fn check(&self, p: &mut Problems) {
        match self {
            DataConfig::Gmm { components, .. } => {
                p.require(!components.is_empty(), "data.components", || {
                    "a mixture needs at least one component".into()
                });
                for (i, c) in components.iter().enumerate() {
                    let key = |f: &str| format!("data.components[{i}].{f}");
                    p.require(c.mean.iter().all(|m| m.is_finite()), &key("mean"), || {
                        format!("{:?} must be finite", c.mean)
                    });
                    p.positive(c.std, &key("std"));
                    p.positive(c.weight, &key("weight"));
                }
            }
            DataConfig::Ring {
                modes, radius, std, ..
            } => {
                p.at_least(*modes, 1, "data.modes");
                p.require(radius.is_finite() && *radius >= 0.0, "data.radius", || {
                    format!("{radius} must be a number ≥ 0")
                });
                p.positive(*std, "data.std");
            }
            DataConfig::Random { modes, .. } => {
                p.require((1..=16).contains(modes), "data.modes", || {
                    format!("{modes} must be from 1 to 16 (more do not fit the square apart)")
                });
            }
            DataConfig::Checkerboard { cells, size } => {
                p.at_least(*cells, 2, "data.cells");
                p.positive(*size, "data.size");
            }
            DataConfig::SwissRoll { scale, noise } => {
                p.positive(*scale, "data.scale");
                p.require(noise.is_finite() && *noise >= 0.0, "data.noise", || {
                    format!("{noise} must be a number ≥ 0")
                });
            }
            DataConfig::Digits { size } | DataConfig::Idx { size, .. } | DataConfig::Cifar10 { size, .. } => {
                check_image_size(*size, p);
            }
            DataConfig::Shapes { size, channels } | DataConfig::Folder { size, channels, .. } => {
                check_image_size(*size, p);
                p.require(*channels == 1 || *channels == 3, "data.channels", || {
                    format!("{channels} must be 1 (grey) or 3 (colour)")
                });
            }
            // The teacher's shape, filled in when the config is resolved.
            DataConfig::None { .. } => {}
        }
        if let Some(e) = self.embedding() {
            check_embedding(e, p);
            // A random mixture's seed draws the mixture; the others' seed
            // only orients the plane, which on the plane itself is nothing:
            // refused, so a user who meant it to change the data hears so.
            let seed_only_orients = !matches!(self, DataConfig::Random { .. });
            p.require(
                !(seed_only_orients && e.dim == 2 && e.seed != 0),
                "data.seed",
                || {
                    format!(
                        "{} only orients the mixture's plane in data.dim dimensions and changes \
                         nothing with data.dim = 2 (set data.dim > 2, or drop data.seed)",
                        e.seed
                    )
                },
            );
        }
    }
}

fn check_image_size(size: usize, p: &mut Problems) {
    p.require((4..=256).contains(&size), "data.size", || {
        format!("{size} must be from 4 to 256 pixels")
    });
}

impl RecordConfig {
    /// The nodes' recording iterations, by whichever rule places them:
    /// increasing, at least one, the last at `iterations` (recording past
    /// the last node would be paid for and never used).
    fn check_nodes(&self, p: &mut Problems) {
        let before = p.0.len();
        p.require(
            self.nodes.is_none() || self.node_every.is_none(),
            "record.nodes",
            || "is given together with record.node_every: give one of them".into(),
        );
        let key = if self.nodes.is_some() {
            "record.nodes"
        } else if let Some(every) = self.node_every {
            p.at_least(every, 1, "record.node_every");
            p.require(
                every == 0 || self.iterations.is_multiple_of(every),
                "record.node_every",
                || format!("{every} must divide record.iterations = {}", self.iterations),
            );
            "record.node_every"
        } else {
            p.at_least(self.node_count, 1, "record.node_count");
            if self.placement == Placement::Geometric {
                p.require(
                    (1..self.iterations.max(2)).contains(&self.first_node) || self.node_count == 1,
                    "record.first_node",
                    || {
                        format!(
                            "{} must be at least 1 and below record.iterations = {}",
                            self.first_node, self.iterations
                        )
                    },
                );
            }
            "record.node_count"
        };
        let at = self.node_iterations();
        let Some(&last) = at.last() else {
            p.require(false, "record", || {
                format!(
                    "the degradation path has zero nodes ({key}): record.iterations = {} must \
                     hold at least one node",
                    self.iterations
                )
            });
            return;
        };
        if p.0.len() > before {
            return; // the rule itself is wrong: its nodes say nothing more
        }
        p.require(at[0] >= 1 && at.windows(2).all(|w| w[0] < w[1]), key, || {
            format!(
                "places nodes after {at:?} recording iterations: they must be at least 1 \
                     and strictly increasing (no two nodes at one iteration){}",
                if key == "record.nodes" {
                    ""
                } else {
                    "; ask for fewer nodes or more record.iterations"
                }
            )
        });
        p.require(last == self.iterations, key, || {
            format!(
                "places the last node after {last} recording iterations, but record.iterations \
                 = {}: the last node must be where recording ends ({})",
                self.iterations,
                if last > self.iterations {
                    "a node beyond it is never reached"
                } else {
                    "recording past it is paid for and never used"
                }
            )
        });
    }
}
