//! Sweeps as Slurm job arrays.
//!
//! In: a sweep spec, its run folder, where and how to run. Out: `DIR/slurm/array-N.sh`, a
//! job-array script with one task per point that has no row yet (each task runs `perfwatt
//! sweep-task DIR --key KEY`: the point's replicates, resuming, then its `row.json`,
//! written atomically), submitted with `sbatch` unless it is a dry run. Tasks are
//! requeueable: a preempted or requeued task starts again and skips the replicates it
//! finished. `perfwatt collect DIR` merges the rows; rerunning `--slurm` submits only the
//! points still missing. scripts/slurm-local.sh starts a one-node cluster to try it on.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::files::write_atomic;
use crate::sweep::{collect, prepare_dir, SweepSpec};

/// Where and how the array's tasks run.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub gpus_per_task: Option<u32>,
    pub cpus_per_task: Option<u32>,
    /// At most this many tasks at once (`--array=...%M`).
    pub max_parallel: Option<u32>,
    /// Wall-clock limit per task (Slurm's format, e.g. `2:00:00`).
    pub time: Option<String>,
    /// Write the script, do not submit it.
    pub dry_run: bool,
}

/// What `submit` did.
#[derive(Debug, Clone)]
pub struct Submission {
    /// None when every point already has its row.
    pub script: Option<PathBuf>,
    pub keys: Vec<String>,
    pub job_id: Option<String>,
    pub job_name: String,
}

impl Submission {
    /// What `sweep --slurm` prints: what was written or submitted, and what to run next.
    pub fn to_text(&self, dir: &Path) -> String {
        match (&self.script, &self.job_id) {
            (None, _) => format!(
                "every point of {} has its row: nothing to submit",
                dir.display()
            ),
            (Some(script), None) => format!(
                "{} points: {} written, not submitted (--dry-run); submit it with sbatch {}",
                self.keys.len(),
                script.display(),
                script.display()
            ),
            (Some(script), Some(id)) => format!(
                "submitted job {id} ({}): {} array tasks, one per point ({})
watch: squeue -n {}
then:  perfwatt collect {} --report   (rerun this command to resubmit what is missing)",
                self.job_name,
                self.keys.len(),
                script.display(),
                self.job_name,
                dir.display()
            ),
        }
    }
}

/// The job name of a run folder's tasks: the sweep's name and a hash of the folder, so two
/// run folders of one spec do not see each other's tasks.
fn job_name(spec: &SweepSpec, dir: &Path) -> String {
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    format!(
        "perfwatt-{}-{:08x}",
        spec.name,
        crc32fast::hash(abs.display().to_string().as_bytes())
    )
}

/// Write (and unless `opts.dry_run`, submit) the job array of the points of `dir` that have
/// no row yet. `exe` is the perfwatt binary the tasks run (on a cluster: a path every node
/// sees, like the run folder).
pub fn submit(spec: &SweepSpec, dir: &Path, exe: &Path, opts: &SlurmOptions) -> Result<Submission> {
    prepare_dir(spec, dir)?;
    let (_, missing) = collect(dir)?;
    let name = job_name(spec, dir);
    let mut sub = Submission {
        script: None,
        keys: missing,
        job_id: None,
        job_name: name.clone(),
    };
    if sub.keys.is_empty() {
        return Ok(sub);
    }
    if !opts.dry_run {
        let queued = queued_tasks(&name)?;
        if queued > 0 {
            return Err(Error::Config(format!(
                "{queued} task(s) of this sweep are still queued or running (squeue -n {name}); \
                 wait for them or scancel them, then rerun to submit what is missing"
            )));
        }
    }
    let sdir = dir.join("slurm");
    std::fs::create_dir_all(&sdir).at(&sdir)?;
    let n = (0..)
        .find(|i| !sdir.join(format!("array-{i}.sh")).exists())
        .expect("a free name");
    let script = sdir.join(format!("array-{n}.sh"));
    write_atomic(
        &script,
        array_script(dir, exe, &name, &sub.keys, opts)?.as_bytes(),
    )?;
    sub.script = Some(script.clone());
    if opts.dry_run {
        return Ok(sub);
    }
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(&script)
        .output()
        .map_err(|e| {
            Error::Config(format!(
                "cannot run sbatch ({e}): is this a Slurm login node? (scripts/slurm-local.sh \
                 starts a one-node cluster; --dry-run only writes {})",
                script.display()
            ))
        })?;
    if !out.status.success() {
        return Err(Error::Config(format!(
            "sbatch {} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let jobs = sdir.join("jobs.txt");
    let mut log = std::fs::read_to_string(&jobs).unwrap_or_default();
    log.push_str(&format!(
        "{id} {} {} points\n",
        script.display(),
        sub.keys.len()
    ));
    write_atomic(&jobs, log.as_bytes())?;
    sub.job_id = Some(id);
    Ok(sub)
}

/// Tasks of job `name` that squeue still lists (pending, running, requeued).
fn queued_tasks(name: &str) -> Result<usize> {
    let out = Command::new("squeue")
        .args(["-h", "-r", "-n", name, "-o", "%i"])
        .output()
        .map_err(|e| Error::Config(format!("cannot run squeue ({e}): is Slurm installed here?")))?;
    if !out.status.success() {
        return Err(Error::Config(format!(
            "squeue failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count())
}

/// The job-array script: one task per key, each `perfwatt sweep-task DIR --key KEY`.
fn array_script(
    dir: &Path,
    exe: &Path,
    name: &str,
    keys: &[String],
    o: &SlurmOptions,
) -> Result<String> {
    let abs = |p: &Path| std::fs::canonicalize(p).at(p);
    let (dir, exe) = (abs(dir)?, abs(exe)?);
    let cwd = std::env::current_dir().at(".")?;
    let mut s = format!(
        "#!/bin/bash\n\
         # Written by `perfwatt sweep --slurm`: one array task per point of {dir} without a\n\
         # row. Each task runs the point's replicates (skipping finished ones, so a requeued\n\
         # task resumes) and writes points/KEY/row.json; `perfwatt collect {dir}` merges them.\n\
         #SBATCH --job-name={name}\n\
         #SBATCH --array=0-{last}{limit}\n\
         #SBATCH --output={dir}/slurm/%A_%a.out\n\
         #SBATCH --open-mode=append\n\
         #SBATCH --requeue\n\
         #SBATCH --chdir={cwd}\n",
        dir = dir.display(),
        last = keys.len() - 1,
        limit = o.max_parallel.map_or(String::new(), |m| format!("%{m}")),
        cwd = cwd.display(),
    );
    if let Some(p) = &o.partition {
        s.push_str(&format!("#SBATCH --partition={p}\n"));
    }
    if let Some(g) = o.gpus_per_task {
        s.push_str(&format!("#SBATCH --gpus-per-task={g}\n"));
    }
    if let Some(c) = o.cpus_per_task {
        s.push_str(&format!("#SBATCH --cpus-per-task={c}\n"));
    }
    if let Some(t) = &o.time {
        s.push_str(&format!("#SBATCH --time={t}\n"));
    }
    s.push_str("set -euo pipefail\nKEYS=(\n");
    for k in keys {
        s.push_str(&format!("  {k}\n"));
    }
    s.push_str(&format!(
        ")\nexec {} sweep-task {} --key \"${{KEYS[$SLURM_ARRAY_TASK_ID]}}\"\n",
        exe.display(),
        dir.display()
    ));
    Ok(s)
}
