//! disback: Distribution Backtracking Distillation, as a library. Each
//! module is one idea; imports only go down this list (config at the
//! bottom, the front ends on top).
//!
//! - [`files`]: atomic, checksummed writes and checked reads of every file.
//! - [`transfer`]: every host↔device copy, counted.
//! - [`config`]: the TOML schema, validation, `--set`, and the plain types every floor shares.
//! - [`parallel`]: ranks that share every batch: averaged gradients, rank 0's orders, failures.
//! - [`rng`]: seeded random streams, one per purpose.
//! - [`data`]: the data distributions (mixtures with exact scores, toys, images) and resolving a config against its data.
//! - [`kernels`]: fused CPU ops with hand-written backward passes.
//! - [`model`]: score networks behind EDM's preconditioning, the one-step generator, save and load.
//! - [`optim`]: Adam with moments we own.
//! - [`diffusion`]: noise levels, the denoising loss, the Heun sampler.
//! - [`distill`]: the method itself: degradation recording, backtracking, the schedule, the generator loss.
//! - [`metrics`]: distances, mode statistics, mismatch degree, the image classifier.
//! - [`rundir`]: the run directory's files (paths, lock, metrics log, score fields).
//! - [`report`]: figures and image grids drawn from those files.
//! - [`runtime`]: devices, threads and the memory check.
//! - [`engine`]: the steppable session, its protocol with front ends, the training thread.
//! - [`compare`]: comparisons and sweeps of DisBack against Diff-Instruct.
//! - [`export`]: a run's generator for other tools (a `diffusers` folder, or PyTorch).
//! - [`runner`]: a run in its own process, serving labs over a socket.
//! - [`ui`]: the terminal lab.
//! - [`cli`]: the command line.

pub mod cli;
pub mod compare;
pub mod config;
pub mod data;
pub mod diffusion;
pub mod distill;
pub mod engine;
pub mod export;
pub mod files;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod report;
pub mod rng;
pub mod rundir;
pub mod runner;
pub mod runtime;
pub mod transfer;
pub mod ui;
