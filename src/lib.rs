//! disback: Distribution Backtracking Distillation, as a library.
//!
//! Rooms, one idea each: [`config`] (the TOML schema), [`data`] (toy
//! distributions with exact scores), [`model`] (EDM denoiser, generator),
//! [`diffusion`] (EDM loss and sampler), [`distill`] (degradation path,
//! backtracking schedule, generator loss), [`engine`] (the steppable
//! session and run directories), [`runner`] (a run in its own process,
//! serving labs over a socket), [`ui`] (the terminal lab).

pub mod cli;
pub mod compare;
pub mod config;
pub mod data;
pub mod diffusion;
pub mod distill;
pub mod engine;
pub mod files;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod report;
pub mod rng;
pub mod rundir;
pub mod runner;
pub mod runtime;
pub mod transfer;
pub mod ui;
