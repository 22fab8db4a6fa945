#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, to try the SLURM launcher without a real cluster.
#
#   scripts/slurm-local.sh install   Debian's slurm-wlm and munge (apt-get; as root)
#   scripts/slurm-local.sh up        install if needed, start munged, slurmctld and slurmd;
#                                    prints the line that points SLURM's commands at this cluster
#   scripts/slurm-local.sh status    the node and the queue
#   scripts/slurm-local.sh down      stop the daemons (the state folder stays for its logs)
#
# Everything lives in SLURM_LOCAL_DIR (default /tmp/tetris-train-slurm): slurm.conf, state, logs.
# Nothing is written to /etc/slurm; SLURM's commands find the cluster through SLURM_CONF:
#   eval "$(scripts/slurm-local.sh up)"
#   python -m tetris_train -m hydra/launcher=slurm hydra.launcher.setup='["source .venv/bin/activate"]' seed=0,1
# Runs as root (daemons and jobs as root); the node has this machine's cores and memory.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/tetris-train-slurm}
CONF=$DIR/slurm.conf
NODE=$(hostname -s)

say() { echo "slurm-local: $*" >&2; }
fail() { say "$*"; exit 1; }

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    [ "$(id -u)" = 0 ] || fail "installing slurm-wlm and munge needs root (apt-get)"
    say "installing slurm-wlm and munge"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >&2
}

write_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    mkdir -p "$DIR/state" "$DIR/spool"
    cat >"$CONF" <<CONF
ClusterName=tetris-local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it starts again (SLURM's default: 120)
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=$NODE CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return
    fi
    [ -s /etc/munge/munge.key ] || { mungekey --create >&2 2>/dev/null || /usr/sbin/create-munge-key -f >&2; }
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge 2>/dev/null || true
    if id munge >/dev/null 2>&1; then
        runuser -u munge -- /usr/sbin/munged >&2
    else
        /usr/sbin/munged --force >&2
    fi
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.1
    done
    fail "munged did not start (see /var/log/munge/munged.log)"
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
    [ "$(id -u)" = 0 ] || fail "the local cluster runs its daemons as root: run this as root"
    install
    if running "$DIR/slurmctld.pid" && running "$DIR/slurmd.pid"; then
        say "already up ($CONF)"
    else
        down_quietly
        if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
            fail "another SLURM daemon runs on this machine (pids $(pgrep -d' ' '^slurm(ctld|d)$')): stop it first"
        fi
        write_conf
        start_munge
        slurmctld -f "$CONF" -i
        slurmd -f "$CONF"
    fi
    export SLURM_CONF=$CONF
    for _ in $(seq 150); do
        if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            say "up: node $NODE, partition local ($(nproc) CPUs); logs in $DIR"
            echo "export SLURM_CONF=$CONF"
            return
        fi
        scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
        sleep 0.2
    done
    fail "the node did not become idle: $(sinfo -h -N -o '%T %E' 2>&1); see $DIR/slurmctld.log and $DIR/slurmd.log"
}

down_quietly() {
    local pidfile pid
    for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid"; do
        if running "$pidfile"; then
            pid=$(cat "$pidfile")
            kill "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$pidfile"
    done
}

down() {
    [ -f "$CONF" ] && SLURM_CONF=$CONF scancel --user="$(id -un)" >/dev/null 2>&1 || true
    down_quietly
    say "down (logs kept in $DIR)"
}

status() {
    export SLURM_CONF=$CONF
    sinfo -N -l
    squeue
}

case "${1:-}" in
    install) install ;;
    up) up ;;
    down) down ;;
    status) status ;;
    *) fail "usage: $0 install|up|status|down" ;;
esac
