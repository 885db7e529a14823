#!/usr/bin/env bash
# A one-node Slurm cluster (Debian's slurm-wlm 22.05 with munge) inside one directory, for tests:
# every file (configuration, keys, sockets, state, logs) lives under DIR and nothing is installed
# or changed elsewhere. Needs root (slurmd starts jobs as their users) and the packages slurmctld,
# slurmd, slurm-client and munge.
#
#   scripts/slurm/local-cluster.sh start DIR   # prints the line to source: export SLURM_CONF=...
#   scripts/slurm/local-cluster.sh stop DIR    # stops the daemons it started (by their pid files)
#
# The node, named after this host, has this machine's CPUs and one partition, `debug`.
set -euo pipefail

cmd=${1:?usage: local-cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: local-cluster.sh start|stop DIR}")
log() { printf 'local-cluster: %s\n' "$*" >&2; }

# A free TCP port on the loopback (asked of the kernel, released at once).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to $2 seconds for the command `$1` to succeed (each try at most 5 s).
wait_for() {
    local deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        if timeout 5 bash -c "$1" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    return 1
}

stop() {
    local name pid
    for name in slurmd slurmctld munged; do
        pid=$(cat "$dir/$name.pid" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait_for "! kill -0 $pid" 10 || kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/$name.pid"
    done
}

write_config() {
    local cpus memory
    cpus=$(nproc)
    memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
    cat > "$dir/slurm.conf" <<CONF
ClusterName=dis2test
SlurmctldHost=$(hostname -s)(127.0.0.1)
MailProg=/bin/true
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=600
NodeName=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$(hostname -s) Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
    for tool in munged mungekey slurmctld slurmd sbatch; do
        command -v "$tool" >/dev/null || { log "$tool not found (apt-get install slurmctld slurmd slurm-client munge)"; exit 1; }
    done
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool"
    chmod 755 "$dir/munge"
    [ -f "$dir/munge/munge.key" ] || mungekey -c -k "$dir/munge/munge.key"
    munged -f --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/seed"
    write_config
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -f "$SLURM_CONF" -i
    slurmd -f "$SLURM_CONF"
    if ! wait_for "sinfo -h -o %t | grep -Eq '^(idle|mix|alloc)'" 60; then
        log "the node did not come up; logs in $dir"
        tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
        stop
        exit 1
    fi
    log "up: node $(hostname -s) ($(nproc) CPUs), partition debug; logs in $dir"
    echo "export SLURM_CONF=$SLURM_CONF"
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) log "unknown command $cmd (start or stop)"; exit 1 ;;
esac
