//! Who this process is in a data-parallel job, read from the environment its launcher set: the
//! variables of `torchrun` (as `torch.distributed`'s `env://` reads them) or of a Slurm step
//! started by `srun`. Nothing dis2-specific: `torchrun --nproc-per-node N --no-python dis2 ...`
//! and `srun dis2 ...` just work.

use anyhow::{bail, Context, Result};
use std::fmt;
use std::time::Duration;

/// How long collectives and the rendezvous wait for the other ranks before failing, unless
/// `DIS2_DIST_TIMEOUT` (seconds) says otherwise: NCCL's default in PyTorch.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The port of the rendezvous under Slurm without `MASTER_PORT`: this base plus the job id
/// modulo 10000, so that jobs sharing a node meet on different ports.
const SLURM_PORT_BASE: u32 = 29500;

/// What started the processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// `torchrun` (or anything setting `WORLD_SIZE` and `RANK` the same way).
    Torchrun,
    /// A Slurm step (`srun`) of more than one task.
    Slurm,
}

/// This process's place in a data-parallel job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub launcher: Launcher,
    /// This process's number, 0 to `world_size - 1`; rank 0 writes the run's outputs.
    pub rank: usize,
    /// The number of processes.
    pub world_size: usize,
    /// This process's number on its node: the CUDA device it takes.
    pub local_rank: usize,
    /// Where the rendezvous store listens (rank 0's node).
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already serves the store at the master address
    /// (`TORCHELASTIC_USE_AGENT_STORE=True`): every rank connects as a client.
    pub agent_store: bool,
    /// torchrun's restart count: a restarted job meets under fresh keys.
    pub attempt: u64,
    /// How long collectives and the rendezvous wait for the other ranks.
    pub timeout: Duration,
}

impl fmt::Display for Launch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = match self.launcher {
            Launcher::Torchrun => "torchrun",
            Launcher::Slurm => "Slurm",
        };
        write!(
            f,
            "rank {} of {} (local rank {}, {by}, rendezvous {}:{})",
            self.rank, self.world_size, self.local_rank, self.master_addr, self.master_port
        )
    }
}

impl Launch {
    /// The launch described by this process's environment, or `None` for a process started on
    /// its own (no `WORLD_SIZE`, and no Slurm step of several tasks). Errors name the variable
    /// that is missing or malformed.
    pub(crate) fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|key| std::env::var(key).ok())
    }

    /// [`Launch::from_env`] over any source of variables (for tests).
    pub(crate) fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let timeout = timeout(&var)?;
        if var("WORLD_SIZE").is_some() {
            return torchrun(&var, timeout).map(Some);
        }
        slurm(&var, timeout)
    }
}

/// `DIS2_DIST_TIMEOUT` in seconds, or [`DEFAULT_TIMEOUT`].
fn timeout(var: &impl Fn(&str) -> Option<String>) -> Result<Duration> {
    match var("DIS2_DIST_TIMEOUT") {
        None => Ok(DEFAULT_TIMEOUT),
        Some(text) => {
            let secs: f64 = text
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| *s > 0.0)
                .with_context(|| {
                    format!(
                        "DIS2_DIST_TIMEOUT: expected a positive number of seconds, found {text:?}"
                    )
                })?;
            Ok(Duration::from_secs_f64(secs))
        }
    }
}

/// A required variable parsed as `T`, naming the launcher's convention when it is absent.
fn required<T: std::str::FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    key: &str,
    why: &str,
) -> Result<T> {
    let text = var(key).with_context(|| format!("{key} is not set ({why})"))?;
    text.trim()
        .parse()
        .ok()
        .with_context(|| format!("{key}: expected a non-negative integer, found {text:?}"))
}

/// The torchrun convention: `WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`.
fn torchrun(var: &impl Fn(&str) -> Option<String>, timeout: Duration) -> Result<Launch> {
    let why = "WORLD_SIZE is set, so this is taken for a torchrun process, which has WORLD_SIZE, \
               RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT";
    let world_size: usize = required(var, "WORLD_SIZE", why)?;
    let rank: usize = required(var, "RANK", why)?;
    let local_rank: usize = match var("LOCAL_RANK") {
        Some(_) => required(var, "LOCAL_RANK", why)?,
        None => rank,
    };
    let master_addr =
        var("MASTER_ADDR").with_context(|| format!("MASTER_ADDR is not set ({why})"))?;
    let master_port: u16 = required(var, "MASTER_PORT", why)?;
    let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True");
    let attempt = var("TORCHELASTIC_RESTART_COUNT")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    check_rank(rank, world_size, "RANK", "WORLD_SIZE")?;
    Ok(Launch {
        launcher: Launcher::Torchrun,
        rank,
        world_size,
        local_rank,
        master_addr,
        master_port,
        agent_store,
        attempt,
        timeout,
    })
}

/// A Slurm step of several tasks: `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`; the master is
/// `MASTER_ADDR` or the first node of the step, the port `MASTER_PORT` or one derived from the
/// job id. Only inside a step (`SLURM_STEP_ID`): a batch script's own shell also sees
/// `SLURM_NTASKS`, but runs a single process.
fn slurm(var: &impl Fn(&str) -> Option<String>, timeout: Duration) -> Result<Option<Launch>> {
    let in_step = var("SLURM_STEP_ID").is_some_and(|s| s.trim().parse::<u64>().is_ok());
    let (Some(_), Some(_), true) = (var("SLURM_PROCID"), var("SLURM_NTASKS"), in_step) else {
        return Ok(None);
    };
    let why = "inside a Slurm step";
    let world_size: usize = required(var, "SLURM_NTASKS", why)?;
    if world_size <= 1 {
        return Ok(None);
    }
    let rank: usize = required(var, "SLURM_PROCID", why)?;
    let local_rank: usize = required(var, "SLURM_LOCALID", why)?;
    check_rank(rank, world_size, "SLURM_PROCID", "SLURM_NTASKS")?;
    let master_addr = match var("MASTER_ADDR") {
        Some(addr) => addr,
        None => {
            let list = [
                "SLURM_STEP_NODELIST",
                "SLURM_JOB_NODELIST",
                "SLURM_NODELIST",
            ]
            .iter()
            .find_map(|k| var(k))
            .context("no SLURM_STEP_NODELIST or SLURM_JOB_NODELIST to take the master from")?;
            first_host(&list)?
        }
    };
    let master_port = match var("MASTER_PORT") {
        Some(_) => required(var, "MASTER_PORT", why)?,
        None => {
            let job: u32 = required(var, "SLURM_JOB_ID", "to derive the rendezvous port")?;
            (SLURM_PORT_BASE + job % 10000) as u16
        }
    };
    Ok(Some(Launch {
        launcher: Launcher::Slurm,
        rank,
        world_size,
        local_rank,
        master_addr,
        master_port,
        agent_store: false,
        attempt: 0,
        timeout,
    }))
}

fn check_rank(rank: usize, world_size: usize, rank_key: &str, size_key: &str) -> Result<()> {
    if world_size == 0 {
        bail!("{size_key} is 0: a job has at least one process");
    }
    if rank >= world_size {
        bail!(
            "{rank_key} is {rank}, but {size_key} is {world_size}: ranks run from 0 to {}",
            world_size - 1
        );
    }
    Ok(())
}

/// The first host of a Slurm host list: `node[03-05,9],gpu1` gives `node03`, `rack[1-2]-n[7-8]`
/// gives `rack1-n7`.
pub(crate) fn first_host(list: &str) -> Result<String> {
    let mut host = String::new();
    let mut chars = list.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            ',' => break,
            '[' => {
                let range: String = chars.by_ref().take_while(|&c| c != ']').collect();
                let first = range.split([',', '-']).next().unwrap_or_default();
                if first.is_empty() {
                    bail!("host list {list:?}: an empty range");
                }
                host.push_str(first);
            }
            c => host.push(c),
        }
    }
    if host.is_empty() {
        bail!("host list {list:?}: no host");
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn nothing_set_is_a_single_process() {
        assert_eq!(launch(&[]).unwrap(), None);
        assert_eq!(launch(&[("PATH", "/bin")]).unwrap(), None);
    }

    #[test]
    fn torchrun_variables() {
        let l = launch(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node7"),
            ("MASTER_PORT", "29400"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(l.launcher, Launcher::Torchrun);
        assert_eq!((l.rank, l.world_size, l.local_rank), (3, 4, 1));
        assert_eq!((l.master_addr.as_str(), l.master_port), ("node7", 29400));
        assert!(l.agent_store);
        assert_eq!(l.attempt, 2);
        assert_eq!(l.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn incomplete_torchrun_variables_are_named() {
        let err = launch(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "h")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("MASTER_PORT is not set"), "{err}");
        let err = launch(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("RANK is 2") && err.contains("0 to 1"), "{err}");
        let err = launch(&[("DIS2_DIST_TIMEOUT", "soon")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DIS2_DIST_TIMEOUT"), "{err}");
    }

    #[test]
    fn slurm_step_variables() {
        let step = [
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_JOB_ID", "123456"),
            ("SLURM_STEP_NODELIST", "gpu[03-06]"),
            ("DIS2_DIST_TIMEOUT", "30"),
        ];
        let l = launch(&step).unwrap().unwrap();
        assert_eq!(l.launcher, Launcher::Slurm);
        assert_eq!((l.rank, l.world_size, l.local_rank), (5, 8, 1));
        assert_eq!(
            (l.master_addr.as_str(), l.master_port),
            ("gpu03", 29500 + 3456)
        );
        assert_eq!(l.timeout, Duration::from_secs(30));
        // The batch script's own shell (no step) and single-task steps run alone.
        let batch: Vec<_> = step
            .iter()
            .filter(|(k, _)| *k != "SLURM_STEP_ID")
            .copied()
            .collect();
        assert_eq!(launch(&batch).unwrap(), None);
        let mut one = step.to_vec();
        one[1] = ("SLURM_NTASKS", "1");
        assert_eq!(launch(&one).unwrap(), None);
        // torchrun inside a Slurm job wins.
        let mut both = step.to_vec();
        both.extend([
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("MASTER_ADDR", "a"),
            ("MASTER_PORT", "9"),
        ]);
        assert_eq!(launch(&both).unwrap().unwrap().launcher, Launcher::Torchrun);
    }

    #[test]
    fn first_host_of_slurm_lists() {
        assert_eq!(first_host("node[03-05,9],gpu1").unwrap(), "node03");
        assert_eq!(first_host("rack[1-2]-n[7-8]").unwrap(), "rack1-n7");
        assert_eq!(first_host("a,b").unwrap(), "a");
        assert_eq!(first_host("localhost").unwrap(), "localhost");
        assert!(first_host("").is_err());
    }
}
