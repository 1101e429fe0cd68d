#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests and for reading: how perfwatt
# expects to be run on a cluster. Installs Debian's slurm-wlm and munge if missing, writes
# a minimal slurm.conf (one node = this host with all its CPUs, one partition `debug`,
# requeue on node failure, no cgroups, no accounting) into $STATE (default
# target/slurm-local), starts munged, slurmctld and slurmd, and waits for the node to be
# idle. Then: `export SLURM_CONF=$STATE/slurm.conf` and use sbatch/squeue/scancel or
# `perfwatt sweep SPEC --slurm`.
# Usage: scripts/slurm-local.sh start|stop|status     (prints the SLURM_CONF line on start)
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=$(realpath -m "${STATE:-target/slurm-local}")
CONF=$STATE/slurm.conf
export SLURM_CONF=$CONF
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
HOST=$(hostname -s)

install() {
  local missing=""
  for p in slurm-wlm munge; do dpkg -s $p >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  fi
}

write_conf() {
  mkdir -p "$STATE/ctld" "$STATE/d"
  local mem; mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  cat > "$CONF.tmp" <<CONF
# Written by scripts/slurm-local.sh: a one-node cluster for perfwatt's tests.
ClusterName=perfwatt-local
# Addresses by IP: a machine whose name does not resolve still reaches itself.
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits for its old credential to expire (default 120 s): 10 s here.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# Batch jobs are requeueable unless they say otherwise.
JobRequeue=1
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
  mv "$CONF.tmp" "$CONF"
}

start() {
  install
  write_conf
  if ! pgrep -x munged >/dev/null; then
    $SUDO mkdir -p /run/munge /var/log/munge /var/lib/munge
    $SUDO test -f /etc/munge/munge.key || $SUDO mungekey --create >/dev/null 2>&1 || $SUDO /usr/sbin/create-munge-key -f
    $SUDO chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge 2>/dev/null || true
    $SUDO -u munge /usr/sbin/munged 2>/dev/null || $SUDO /usr/sbin/munged --force
  fi
  pgrep -x slurmctld >/dev/null || $SUDO env SLURM_CONF="$CONF" slurmctld
  pgrep -x slurmd >/dev/null || $SUDO env SLURM_CONF="$CONF" slurmd
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      echo "export SLURM_CONF=$CONF"
      return 0
    fi
    # A node that was down (a restart) comes back when told to.
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  echo "slurm-local: the node did not come up; logs: $STATE/slurmctld.log $STATE/slurmd.log" >&2
  sinfo >&2 || true
  exit 1
}

stop() {
  $SUDO pkill -x slurmd || true
  $SUDO pkill -x slurmctld || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo; squeue ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
