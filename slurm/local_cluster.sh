#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the tests and for trying `vjepa submit` out.
#
#   slurm/local_cluster.sh start    # install slurm-wlm + munge if missing (Debian/Ubuntu, root), start the daemons
#   slurm/local_cluster.sh status   # exit 0 when the node answers and is usable
#   slurm/local_cluster.sh stop     # stop the daemons this script started
#   slurm/local_cluster.sh env      # the line to eval so that sbatch, squeue, ... use this cluster
#
# Everything (slurm.conf, munge key and socket, daemon state, logs, pid files) lives in one state
# folder, $VJEPA_SLURM_DIR (default /tmp/vjepa-slurm), so the machine's own /etc is left alone; the
# client commands find the cluster through SLURM_CONF. No systemd and no cgroups: the daemons are
# started by hand and processes are tracked by their parent pids (proctrack/linuxproc).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${VJEPA_SLURM_DIR:-/tmp/vjepa-slurm}"
CPUS="${VJEPA_SLURM_CPUS:-2}"
MEMORY_MB="${VJEPA_SLURM_MEMORY_MB:-4000}"
export SLURM_CONF="$STATE/slurm.conf"

log() { echo "local_cluster: $*" >&2; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
    if ! command -v apt-get >/dev/null; then
        log "slurm-wlm and munge are not installed and cannot be without apt-get (Debian/Ubuntu); install them by hand"
        exit 3
    fi
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_config() {
    mkdir -p "$STATE"/{munge,slurmctld,slurmd}
    chmod 700 "$STATE/munge"
    if [ ! -s "$STATE/munge/munge.key" ]; then
        # a fresh random key for this cluster only; munged refuses keys others can read
        dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$STATE/munge/munge.key"
    fi
    sed -e "s|@HOST@|$(hostname -s)|g" -e "s|@STATE@|$STATE|g" -e "s|@CPUS@|$CPUS|g" \
        -e "s|@MEMORY_MB@|$MEMORY_MB|g" "$HERE/slurm.conf.in" > "$SLURM_CONF"
}

running() {  # is the daemon whose pid file is $1 alive?
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

node_ready() {
    local state
    state="$(sinfo --noheader --nodes="$(hostname -s)" --format=%t 2>/dev/null || true)"
    [[ "$state" == idle* || "$state" == mix* || "$state" == alloc* ]]
}

start() {
    if [ "$(id -u)" != 0 ]; then
        log "run me as root: the daemons of this cluster run as root (SlurmUser=root)"
        exit 3
    fi
    install_packages
    if running "$STATE/slurmctld.pid" && node_ready; then
        log "already running (state in $STATE)"
        return
    fi
    write_config
    running "$STATE/munge/munged.pid" || munged --force --key-file="$STATE/munge/munge.key" \
        --socket="$STATE/munge/munge.socket" --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
    running "$STATE/slurmctld.pid" || slurmctld -f "$SLURM_CONF"
    running "$STATE/slurmd.pid" || slurmd -f "$SLURM_CONF"
    for _ in $(seq 60); do
        if node_ready; then
            log "running: node $(hostname -s), $CPUS CPUs, state in $STATE"
            return
        fi
        sleep 0.5
    done
    log "the node did not become idle within 30 s; see $STATE/slurmctld.log and $STATE/slurmd.log"
    sinfo -N -l >&2 || true
    exit 1
}

stop() {
    # only the daemons whose pid files are in $STATE: the ones this script started
    local pidfile pids=()
    for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" "$STATE/munge/munged.pid"; do
        if running "$pidfile"; then
            pids+=("$(cat "$pidfile")")
            kill "${pids[-1]}"
        fi
        rm -f "$pidfile"
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
    done
    log "stopped"
}

status() {
    if running "$STATE/slurmctld.pid" && node_ready; then
        sinfo
        return 0
    fi
    log "not running (state folder $STATE)"
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$SLURM_CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
