#!/usr/bin/env bash
# A real single-node Slurm on this machine, for tests and for trying the Slurm profile:
#
#   bash scripts/slurm-local.sh up     # install if missing, configure, start munged, slurmctld, slurmd
#   bash scripts/slurm-local.sh down   # stop the daemons this script started, each by its own pid file
#
# Needs root (it installs Debian packages and runs the daemons). Everything it writes lives in
# $PODYN_SLURM_DIR (default /tmp/podyn-slurm): slurm.conf, spool directories, logs, pid files, and
# jobcomp.log (one record per finished job). /etc/slurm/slurm.conf becomes a link to that slurm.conf:
# srun inside a job finds its configuration only there (Snakemake's job step drops SLURM_CONF), so `up`
# refuses to replace a slurm.conf it did not write, and `down` removes the link. A munged that is
# already running is reused and left running. Both commands are idempotent.
#
# slurm.conf choices, and why:
#   ProctrackType=linuxproc, TaskPlugin=task/none  no usable cgroups in containers and CI machines
#   SelectType=cons_tres + CR_Core_Memory + DefMemPerCPU  jobs share the node by cores and memory;
#                                 without DefMemPerCPU a job that asks for no memory takes the whole node
#   MinJobAge=300                 finished jobs stay visible to `squeue` for 5 minutes: the Slurm
#                                 profile's status command (squeue) needs this, as there is no accounting
#   JobCompType=jobcomp/filetxt   one record per finished job in $PODYN_SLURM_DIR/jobcomp.log (the tests
#                                 count sbatch jobs there)
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons live there; a non-login shell may not have them

STATE="${PODYN_SLURM_DIR:-/tmp/podyn-slurm}"
CONF="$STATE/slurm.conf"
SYSTEM_CONF=/etc/slurm/slurm.conf
MARKER="# written by scripts/slurm-local.sh"
# munged runs as the munge user, which may not enter $STATE (a 0700 test directory, say): its pid file
# lives in its own run directory, under a name of ours (written only when this script starts munged)
MUNGED_PID=/run/munge/podyn-munged.pid
NODE="$(hostname -s)"
PACKAGES=(slurmctld slurmd slurm-client munge)

die() { echo "slurm-local: $*" >&2; exit 1; }
say() { echo "slurm-local: $*"; }

# pid of a daemon from its pid file, if that process is alive
live_pid() {
  local file="$1" pid
  [ -s "$file" ] || return 1
  pid="$(tr -dc '0-9' < "$file")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
     && command -v munged >/dev/null; then
    return
  fi
  [ "$(id -u)" = 0 ] || die "Slurm is not installed and installing it needs root"
  command -v apt-get >/dev/null || die "Slurm is not installed and apt-get is missing: install ${PACKAGES[*]}"
  say "installing ${PACKAGES[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

write_config() {
  local cpus mem_mb
  cpus="$(nproc)"
  mem_mb="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.85}' /proc/meminfo)"
  mkdir -p "$STATE/ctld" "$STATE/d"
  cat > "$CONF.tmp" <<EOF
$MARKER: a single-node Slurm for tests
ClusterName=podyn
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.log
MailProg=/bin/true
MinJobAge=300
KillWait=10
ReturnToService=2
SchedulerType=sched/backfill
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
  if [ -e "$SYSTEM_CONF" ] && ! head -1 "$SYSTEM_CONF" | grep -qF "$MARKER"; then
    die "$SYSTEM_CONF exists and was not written by this script: a Slurm is configured here already"
  fi
  mkdir -p "$(dirname "$SYSTEM_CONF")"
  ln -sfn "$CONF" "$SYSTEM_CONF"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return  # a munged answers already (ours from an earlier `up`, or the system's): use it
  fi
  [ -s /etc/munge/munge.key ] || {
    say "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  }
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  chmod 755 /run/munge
  runuser -u munge -- munged --pid-file="$MUNGED_PID"
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
    sleep 0.1
  done
  die "munged did not answer"
}

# Wait until slurmd has registered (its start time is at least $1, epoch seconds) and the node takes jobs.
# The controller restores a node as idle from its saved state before slurmd has registered.
wait_idle() {
  local since="$1" state="" started
  for _ in $(seq 120); do
    state="$(SLURM_CONF="$CONF" sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -1 || true)"
    started="$(SLURM_CONF="$CONF" scontrol show node "$NODE" 2>/dev/null \
      | sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p' | head -1)"
    started="$(date -d "$started" +%s 2>/dev/null || echo 0)"
    case "$state" in
      idle|mix|alloc) [ "$started" -ge "$since" ] && return ;;
      down*|drain*|drng*) SLURM_CONF="$CONF" scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
  done
  die "node $NODE is not idle after 60 s (state '$state'); see $STATE/slurmctld.log and $STATE/slurmd.log"
}

up() {
  install_packages
  mkdir -p "$STATE"
  write_config
  start_munge
  if ! live_pid "$STATE/slurmctld.pid" >/dev/null; then
    SLURM_CONF="$CONF" slurmctld -i -f "$CONF"
  fi
  local since=0
  if ! live_pid "$STATE/slurmd.pid" >/dev/null; then
    since="$(( $(date +%s) - 1 ))"
    SLURM_CONF="$CONF" slurmd -f "$CONF"
  fi
  wait_idle "$since"
  say "node $NODE is up ($(nproc) CPUs), configuration $SYSTEM_CONF -> $CONF"
}

stop_pidfile() {
  local name="$1" file="$2" pid
  pid="$(live_pid "$file")" || { rm -f "$file"; return 0; }
  kill "$pid"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { say "stopped $name (pid $pid)"; rm -f "$file"; return 0; }
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  say "killed $name (pid $pid) after 10 s"
  rm -f "$file"
}

down() {
  local jobs
  if live_pid "$STATE/slurmctld.pid" >/dev/null; then  # every job on this controller is ours: end them first
    jobs="$(SLURM_CONF="$CONF" squeue -h -o %i 2>/dev/null || true)"
    [ -z "$jobs" ] || { SLURM_CONF="$CONF" scancel $jobs 2>/dev/null || true; sleep 1; }
  fi
  # slurmd first, so that it does not outlive its controller and retry forever
  stop_pidfile slurmd "$STATE/slurmd.pid"
  stop_pidfile slurmctld "$STATE/slurmctld.pid"
  stop_pidfile munged "$MUNGED_PID"
  if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then
    rm -f "$SYSTEM_CONF"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down   (state in \$PODYN_SLURM_DIR, default /tmp/podyn-slurm)" >&2; exit 2 ;;
esac
