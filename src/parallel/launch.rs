//! Where a process stands in a launched team, from the environment that
//! launchers set: torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT`), or Slurm's srun (`SLURM_PROCID`,
//! `SLURM_NTASKS`, `SLURM_LOCALID`, with the master's address given as
//! for torchrun).

use anyhow::{Context, Result, bail};

/// This process's place in a team that a launcher started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchedRank {
    pub rank: usize,
    pub world: usize,
    /// The rank's index on its own machine: the GPU it takes (`cuda:N`).
    pub local_rank: usize,
    /// Where rank 0 hands out the team's id: `MASTER_ADDR:MASTER_PORT`.
    pub master: String,
}

/// The launched rank the environment describes; `None` when no launcher
/// set a world (`WORLD_SIZE` or `SLURM_NTASKS`).
pub fn launched_rank() -> Result<Option<LaunchedRank>> {
    from_vars(|name| std::env::var(name).ok())
}

fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<LaunchedRank>> {
    // torchrun's names first; srun's where torchrun's are absent.
    let pick = |torch: &str, slurm: &str| {
        var(torch)
            .map(|v| (torch.to_string(), v))
            .or(var(slurm).map(|v| (slurm.to_string(), v)))
    };
    let Some(world) = pick("WORLD_SIZE", "SLURM_NTASKS") else {
        return Ok(None);
    };
    let number = |(name, value): (String, String)| -> Result<usize> {
        value
            .trim()
            .parse()
            .with_context(|| format!("{name}={value:?} is not a whole number"))
    };
    let world_name = world.0.clone();
    let world = number(world)?;
    let rank = number(
        pick("RANK", "SLURM_PROCID").context("WORLD_SIZE is set but RANK is not: a launcher sets both")?,
    )?;
    let local_rank = match pick("LOCAL_RANK", "SLURM_LOCALID") {
        Some(v) => number(v)?,
        None => rank,
    };
    if world == 0 || rank >= world {
        bail!("rank {rank} of a world of {world} ({world_name}): the rank must be below the world size");
    }
    let addr = var("MASTER_ADDR").context(
        "MASTER_ADDR is not set: rank 0's address (torchrun sets it; under srun export the first node's name)",
    )?;
    let port = var("MASTER_PORT").context("MASTER_PORT is not set: a free TCP port on rank 0's machine")?;
    let mut port = number(("MASTER_PORT".into(), port))?;
    // torchrun's agent on node 0 serves its own store on MASTER_PORT and
    // says so: rank 0 listens on the next port.
    if var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        port += 1;
    }
    Ok(Some(LaunchedRank {
        rank,
        world,
        local_rank,
        master: format!("{addr}:{port}"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<LaunchedRank>> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn torchrun_and_srun_environments_are_read() {
        assert_eq!(read(&[]).unwrap(), None);
        let torchrun = read(&[
            ("WORLD_SIZE", "8"),
            ("RANK", "5"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((torchrun.rank, torchrun.world, torchrun.local_rank), (5, 8, 1));
        assert_eq!(torchrun.master, "node0:29500");
        // Under torchrun's agent store, which holds MASTER_PORT itself.
        let agent = read(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(agent.master, "node0:29501");
        let srun = read(&[
            ("SLURM_NTASKS", "4"),
            ("SLURM_PROCID", "3"),
            ("SLURM_LOCALID", "3"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "12345"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((srun.rank, srun.world, srun.local_rank), (3, 4, 3));
    }

    #[test]
    fn a_broken_environment_is_named() {
        let err = |pairs: &[(&str, &str)]| format!("{:#}", read(pairs).unwrap_err());
        let base = [("MASTER_ADDR", "a"), ("MASTER_PORT", "1")];
        let e = err(&[("WORLD_SIZE", "2"), ("RANK", "two"), base[0], base[1]]);
        assert!(e.contains("RANK=\"two\" is not a whole number"), "{e}");
        let e = err(&[("WORLD_SIZE", "2"), ("RANK", "2"), base[0], base[1]]);
        assert!(e.contains("rank 2 of a world of 2"), "{e}");
        let e = err(&[("WORLD_SIZE", "2"), ("RANK", "0")]);
        assert!(e.contains("MASTER_ADDR is not set"), "{e}");
        let e = err(&[("WORLD_SIZE", "2"), base[0], base[1]]);
        assert!(e.contains("RANK is not"), "{e}");
    }
}
