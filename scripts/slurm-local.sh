#!/usr/bin/env bash
# A real single-node SLURM cluster on loopback, for the tests and for trying the SLURM path on a
# laptop: Debian's slurm-wlm + munge, started by hand (no systemd), with fake GPUs (GRES on dummy
# character devices).
#
#   scripts/slurm-local.sh start [--gpus N] [--cpus N] [--mem MB]   start (or report if running)
#   scripts/slurm-local.sh stop                                     cancel jobs, stop the daemons
#   scripts/slurm-local.sh status        exit 0 only when the node is idle/mixed/allocated(/completing)
#   scripts/slurm-local.sh env           print the line to eval: export SLURM_CONF=...
#
#   eval "$(scripts/slurm-local.sh env)"; sbatch --gres=gpu:1 --wrap 'env | grep CUDA'
#
# Everything lives in one state directory: $PRIORFLOW_SLURM_DIR, default <repo>/.state/slurm
# (git-ignored): etc/ (slurm.conf, gres.conf), munge/ (key; socket, see socket_dir), dev/ (nvidia0..), state/,
# spool/, log/ (slurmctld.log, slurmd.log, munged.log, jobcomp.log), run/ (pid files).
# Ports: slurmctld on $PRIORFLOW_SLURM_PORT (default 6817), slurmd on the next one.
# Node: `hostname -s` at 127.0.0.1; CPUs = max(nproc, 4) (SlurmdParameters=config_overrides lets
# a 2-core laptop run two 2-core worker jobs at once), RealMemory = the machine's memory, 2 GPUs.
# Partitions: debug (default) and gpu, same node.
# Needs root (slurmd starts jobs as their user) and the packages: apt-get install -y slurm-wlm munge
# Exit status: 0 ok, 1 failure, 2 usage, 3 packages missing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$(realpath -m "${PRIORFLOW_SLURM_DIR:-$REPO/.state/slurm}")"
PORT="${PRIORFLOW_SLURM_PORT:-6817}"
CONF="$DIR/etc/slurm.conf"

# munged wants every folder above its socket searchable by all (and a short path): the socket is
# in $DIR/munge, or in /tmp/priorflow-munge-<hash of $DIR> when $DIR is under a private folder.
socket_dir() {
    local dir="$DIR/munge" parent="$DIR"
    while [ "$parent" != / ]; do
        if [ -e "$parent" ] && [[ "$(stat -c %A "$parent")" != *[xt] ]]; then
            dir="/tmp/priorflow-munge-$(printf '%s' "$DIR" | cksum | cut -d' ' -f1)"
            break
        fi
        parent="$(dirname "$parent")"
    done
    [ ${#dir} -le 90 ] || dir="/tmp/priorflow-munge-$(printf '%s' "$DIR" | cksum | cut -d' ' -f1)"
    echo "$dir"
}
SOCKET="" # set by start, after the packages check
export SLURM_CONF="$CONF"
export PATH="$PATH:/usr/sbin:/sbin"

die() { echo "slurm-local: error: $*" >&2; exit 1; }
say() { echo "slurm-local: $*"; }

usage() {
    sed -n '6,9p' "${BASH_SOURCE[0]}" | sed 's/^#   //' >&2
    exit 2
}

short_host() {
    local name
    name="$(hostname -s 2>/dev/null || true)"
    [ -n "$name" ] || name="$(hostname)"
    echo "${name%%.*}"
}

# The daemons and clients this script and its users need, with the Debian package of each.
require_packages() {
    local missing=() packages=() program
    for program in munged slurmctld slurmd scontrol sinfo squeue sbatch scancel srun; do
        command -v "$program" >/dev/null 2>&1 || missing+=("$program")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    for program in "${missing[@]}"; do
        case "$program" in
            munged) packages+=(munge) ;;
            *) [[ " ${packages[*]-} " == *" slurm-wlm "* ]] || packages+=(slurm-wlm) ;;
        esac
    done
    echo "slurm-local: error: missing ${missing[*]} (Debian packages ${packages[*]}):" \
        "apt-get install -y slurm-wlm munge" >&2
    exit 3
}

# pid_alive PID NAME: PID is a live (not zombie) process called NAME.
pid_alive() {
    local state
    [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
    # Field 3 of /proc/PID/stat (after the "(comm)" field) is the state: Z zombie, X dead.
    state="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# pid_of NAME: the pid in run/NAME.pid (empty when there is none; daemons remove it on exit).
pid_of() { { tr -dc '0-9' <"$DIR/run/$1.pid"; } 2>/dev/null || true; }

# alive NAME: the daemon NAME of this cluster runs (a zombie does not count).
alive() { pid_alive "$(pid_of "$1")" "$1"; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_state() { sinfo -h -N -n "$(short_host)" -o %T 2>/dev/null | head -n1; }

node_healthy() {
    case "$(node_state)" in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

log_tail() { [ -f "$1" ] && tail -n 5 "$1" | sed 's/^/    /' >&2 || true; }

# wait_for SECONDS COMMAND...: poll every 0.1 s.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# setting NAME: a value recorded by the running cluster's start (etc/cluster.env).
setting() { sed -n "s/^$1=//p" "$DIR/etc/cluster.env" 2>/dev/null; }

write_config() {
    local host=$1 cpus=$2 mem=$3 gpus=$4 gres="" last
    mkdir -p "$DIR/etc"
    if [ "$gpus" -gt 0 ]; then
        gres=" Gres=gpu:$gpus"
        last=$((gpus - 1))
        printf 'AutoDetect=off\nNodeName=%s Name=gpu File=%s/dev/nvidia[0-%s]\n' \
            "$host" "$DIR" "$last" >"$DIR/etc/gres.conf"
    else
        printf 'AutoDetect=off\n' >"$DIR/etc/gres.conf"
    fi
    cat >"$CONF" <<EOF
# Generated by scripts/slurm-local.sh: a single-node cluster on loopback (no cgroups).
ClusterName=priorflow
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
AuthInfo=socket=$SOCKET
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
InactiveLimit=0
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem$gres State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
EOF
    printf 'HOST=%s\nCPUS=%s\nMEM=%s\nGPUS=%s\nPORT=%s\n' "$host" "$cpus" "$mem" "$gpus" "$PORT" \
        >"$DIR/etc/cluster.env"
}

make_devices() {
    local gpus=$1 i dev
    mkdir -p "$DIR/dev"
    for ((i = 0; i < gpus; i++)); do
        dev="$DIR/dev/nvidia$i"
        [ -c "$dev" ] && continue
        rm -f "$dev"
        mknod "$dev" c 195 "$i" 2>/dev/null ||
            die "cannot create the dummy GPU device $dev (mknod needs root and CAP_MKNOD)"
    done
}

start_munge() {
    alive munged && return 0
    mkdir -p "$DIR/munge" "$DIR/log" "$DIR/run"
    chmod 755 "$DIR/munge"  # munged: the socket dir must be searchable by all, not writable
    if [ ! -s "$DIR/munge/munge.key" ]; then
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$DIR/munge/munge.key" >/dev/null
        else
            dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        fi
    fi
    chmod 400 "$DIR/munge/munge.key"
    mkdir -p "$(dirname "$SOCKET")"
    chmod 755 "$(dirname "$SOCKET")"
    rm -f "$SOCKET" "$SOCKET.lock"
    munged --socket="$SOCKET" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed" 9>&- ||
        { log_tail "$DIR/log/munged.log"; die "munged did not start (log: $DIR/log/munged.log)"; }
    wait_for 10 test -S "$SOCKET" || die "munged made no socket at $SOCKET"
}

do_start() {
    local gpus="" cpus="" mem=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --gpus) gpus="${2-}"; shift 2 || usage ;;
            --gpus=*) gpus="${1#*=}"; shift ;;
            --cpus) cpus="${2-}"; shift 2 || usage ;;
            --cpus=*) cpus="${1#*=}"; shift ;;
            --mem) mem="${2-}"; shift 2 || usage ;;
            --mem=*) mem="${1#*=}"; shift ;;
            *) usage ;;
        esac
    done
    [[ -z "$gpus" || "$gpus" =~ ^[0-9]+$ ]] || die "--gpus $gpus: give a whole number, e.g. --gpus 2"
    [[ -z "$cpus" || "$cpus" =~ ^[1-9][0-9]*$ ]] || die "--cpus $cpus: give a whole number >= 1"
    [[ -z "$mem" || "$mem" =~ ^[1-9][0-9]*$ ]] || die "--mem $mem: give megabytes, e.g. --mem 8000"
    require_packages
    SOCKET="$(socket_dir)/munge.socket.2"
    [ "$(id -u)" -eq 0 ] || die "start needs root (slurmd runs jobs as their user): sudo $0 start"
    mkdir -p "$DIR/run"
    exec 9>"$DIR/run/lock"
    flock -w 120 9 || die "another start/stop holds $DIR/run/lock"

    if alive munged && alive slurmctld && alive slurmd && ctld_up; then
        local key want have
        for key in gpus cpus mem; do
            want="${!key}"
            have="$(setting "${key^^}")"
            if [ -n "$want" ] && [ "$want" != "$have" ]; then
                die "running with --$key $have; run '$0 stop' first to change it to $want"
            fi
        done
        wait_node_ready 20
        say "already running ($DIR)"
        show_status
        return 0
    fi
    stop_daemons quiet # whatever half of it is left

    local host
    host="$(short_host)"
    gpus="${gpus:-2}"
    if [ -z "$cpus" ]; then
        cpus="$(nproc)"
        [ "$cpus" -ge 4 ] || cpus=4
    fi
    if [ -z "$mem" ]; then
        mem=$(($(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo) / 1024))
    fi
    local p
    for p in "$PORT" $((PORT + 1)); do
        ! port_in_use "$p" ||
            die "port $p is in use (another SLURM cluster?); stop it or set PRIORFLOW_SLURM_PORT"
    done
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"
    make_devices "$gpus"
    write_config "$host" "$cpus" "$mem" "$gpus"
    start_munge

    # 9>&-: the daemons must not inherit (and so hold) the start/stop lock.
    slurmctld -c -f "$CONF" 9>&- ||
        { log_tail "$DIR/log/slurmctld.log"; die "slurmctld did not start (log: $DIR/log/slurmctld.log)"; }
    wait_for 20 ctld_up ||
        { log_tail "$DIR/log/slurmctld.log"; die "slurmctld does not answer scontrol ping (log: $DIR/log/slurmctld.log)"; }
    slurmd -N "$host" -f "$CONF" 9>&- ||
        { log_tail "$DIR/log/slurmd.log"; die "slurmd did not start (log: $DIR/log/slurmd.log)"; }
    wait_node_ready 30
    say "started ($DIR)"
    show_status
}

# wait_node_ready SECONDS: wait for the node to be idle/mixed/allocated; resume it when it comes
# up drained or down (after an unclean stop, or when slurmd registered before its GRES were seen).
wait_node_ready() {
    local host state resumed=0 deadline=$((SECONDS + $1))
    host="$(short_host)"
    while :; do
        state="$(node_state)"
        case "$state" in
            idle | mixed | allocated | completing) return 0 ;;
            drain* | down*)
                if [ "$resumed" -lt 3 ]; then
                    scontrol update nodename="$host" state=resume 2>/dev/null || true
                    resumed=$((resumed + 1))
                fi
                ;;
        esac
        if [ "$SECONDS" -ge "$deadline" ]; then
            log_tail "$DIR/log/slurmd.log"
            die "node $host is '${state:-unknown}', not idle (reason:" \
                "$(sinfo -h -N -n "$host" -o %E 2>/dev/null); log: $DIR/log/slurmd.log)"
        fi
        sleep 0.2
    done
}

# stop_daemons [quiet]: SIGTERM, wait, SIGKILL; zombies count as stopped.
stop_daemons() {
    local name pid stopped=()
    for name in slurmd slurmctld munged; do
        pid="$(pid_of "$name")"
        if pid_alive "$pid" "$name"; then
            kill -TERM "$pid" 2>/dev/null || true
            if ! wait_for 10 not_alive "$pid" "$name"; then
                kill -KILL "$pid" 2>/dev/null || true
                wait_for 5 not_alive "$pid" "$name" || die "$name (pid $pid) does not stop"
            fi
            stopped+=("$name")
        fi
        rm -f "$DIR/run/$name.pid"
    done
    [ "${1-}" = quiet ] || [ ${#stopped[@]} -eq 0 ] || say "stopped ${stopped[*]}"
    return 0
}

not_alive() { ! pid_alive "$1" "$2"; }

cancel_jobs() {
    local jobs
    jobs="$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')"
    [ -n "${jobs// /}" ] || return 0
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    wait_for 15 bash -c '[ -z "$(squeue -h -o %A 2>/dev/null)" ]' ||
        say "jobs still listed after scancel: $(squeue -h -o %A | tr '\n' ' ')"
}

do_stop() {
    mkdir -p "$DIR/run"
    exec 9>"$DIR/run/lock"
    flock -w 120 9 || die "another start/stop holds $DIR/run/lock"
    if ! alive munged && ! alive slurmctld && ! alive slurmd; then
        say "not running ($DIR)"
        return 0
    fi
    if alive slurmctld && ctld_up; then cancel_jobs; fi
    stop_daemons
    local sockets
    sockets="$(socket_dir)"
    [ "$sockets" = "$DIR/munge" ] || rmdir "$sockets" 2>/dev/null || true
}

show_status() {
    local name ok=0
    for name in munged slurmctld slurmd; do
        if alive "$name"; then
            say "$name running (pid $(pid_of "$name"))"
        else
            say "$name not running"
            ok=1
        fi
    done
    if [ "$ok" -eq 0 ] && ctld_up; then
        say "node $(short_host): $(node_state) ($(setting CPUS) cpus, $(setting MEM) MB," \
            "gpu:$(setting GPUS)); partitions: $(sinfo -h -o %P | tr '\n' ' ')"
        node_healthy || ok=1
    else
        ok=1
    fi
    echo "export SLURM_CONF=$CONF"
    return "$ok"
}

do_status() {
    require_packages
    if ! alive munged && ! alive slurmctld && ! alive slurmd; then
        say "not running ($DIR)"
        return 1
    fi
    show_status
}

case "${1-}" in
    start) shift; do_start "$@" ;;
    stop) [ $# -eq 1 ] || usage; do_stop ;;
    status) [ $# -eq 1 ] || usage; do_status ;;
    env) [ $# -eq 1 ] || usage; echo "export SLURM_CONF=$CONF" ;;
    *) usage ;;
esac
