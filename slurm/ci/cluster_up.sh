#!/usr/bin/env bash
# Bring up a real Slurm cluster on this one machine, for CI: one controller
# (slurmctld), two compute nodes node1 and node2 (two slurmd processes on
# different ports, both on localhost) and the munge daemon that authenticates
# them. Jobs submitted to it go through the real sbatch -> slurmctld -> slurmd
# -> slurmstepd -> srun path, PMI wire-up included, which a fake cannot test.
#
#   sudo slurm/ci/cluster_up.sh        # idempotent: a cluster that is up stays up
#   source "$STATE/env.sh"             # sets SLURM_CONF for sinfo/sbatch/squeue
#   slurm/ci/cluster_down.sh           # kills exactly the processes started here
#
# Everything lives under one state folder, $MPIPIPE_SLURM_STATE (default
# /tmp/mpipipe-slurm): config, keys, sockets, spool, logs and the PIDs we
# started. Nothing is written to the repository, nothing under /etc is changed
# (the packages' own files excepted), no system service is started (while the
# packages install, a /usr/sbin/policy-rc.d keeps them from starting theirs).
#
# Needs root (slurmd must start jobs as the submitting user, munged and
# slurmctld here run as root to keep one user) and, if Slurm is not installed,
# apt-get. Exit status 77 means "this machine cannot host the cluster" (not
# root, no apt-get, packages unavailable): the test suite reports it as a skip.
# Any other failure is a real error.
#
# Settings (environment):
#   MPIPIPE_SLURM_STATE  state folder (default /tmp/mpipipe-slurm)
#   MPIPIPE_SLURM_PORT   slurmctld port; node K's slurmd listens on PORT+K
#                        (default 16817: away from Slurm's usual 6817-6818, so a
#                        site Slurm on the same machine is not disturbed)
#   MPIPIPE_SLURM_CPUS   CPUs declared per node (default 4, more than a small CI
#                        machine has: SlurmdParameters=config_overrides lets
#                        slurmd register with what slurm.conf says)
#   MPIPIPE_SLURM_GPUS   stand-in GPUs declared per node (default 2; see gres.conf below)
#   MPIPIPE_SLURM_WAIT   seconds to wait for the nodes to become idle (60)
set -euo pipefail

STATE=${MPIPIPE_SLURM_STATE:-/tmp/mpipipe-slurm}
PORT=${MPIPIPE_SLURM_PORT:-16817}
CPUS=${MPIPIPE_SLURM_CPUS:-4}
GPUS=${MPIPIPE_SLURM_GPUS:-2}
WAIT=${MPIPIPE_SLURM_WAIT:-60}
NODES=(node1 node2)
HERE=$(cd "$(dirname "$0")" && pwd)

log() { echo "[cluster_up] $*"; }
die() { echo "[cluster_up] error: $*" >&2; exit 1; }
cannot() { echo "[cluster_up] cannot host a Slurm cluster here: $*" >&2; exit 77; }

# --- 1. preconditions --------------------------------------------------------
[ "$(id -u)" = 0 ] || cannot "not root (slurmd has to start jobs as any user)"
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)            # absolute: it goes into slurm.conf
# munged, slurmctld and slurmd live in /usr/sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

# --- 2. already up? ------------------------------------------------------------
# Idempotent: if every daemon we recorded is alive and both nodes are up (idle,
# or running jobs), there is nothing to do. A half-up cluster (a daemon died) is taken down and
# started again from scratch.
all_alive() {
    local name pid
    for name in munged slurmctld "${NODES[@]/#/slurmd-}"; do
        [ -s "$STATE/pids/$name" ] || return 1
        pid=$(cat "$STATE/pids/$name")
        grep -qa -- "$STATE" "/proc/$pid/cmdline" 2>/dev/null || return 1
    done
}
if [ -d "$STATE/pids" ]; then
    if all_alive && [ "$(SLURM_CONF="$STATE/slurm.conf" sinfo -h -N -t idle,alloc,mix,comp -o %N \
            2>/dev/null | sort -u | wc -l)" -eq "${#NODES[@]}" ]; then
        log "already up (state in $STATE)"
        exit 0
    fi
    log "a previous cluster in $STATE is only partly up: taking it down first"
    MPIPIPE_SLURM_STATE="$STATE" bash "$HERE/cluster_down.sh"
fi

# --- 3. packages -------------------------------------------------------------
# slurm-wlm pulls slurmctld, slurmd, slurm-client and the plugins (pmi2 among
# them); munge is the authentication daemon Slurm's default auth/munge needs.
need_install=
for cmd in slurmctld slurmd sbatch srun sinfo squeue scontrol munged; do
    command -v "$cmd" >/dev/null || need_install=1
done
if [ -n "$need_install" ]; then
    command -v apt-get >/dev/null || cannot "Slurm is not installed and there is no apt-get to install it"
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # The packages' install scripts try to start their system services. Here the
    # daemons are started by hand, under the state folder, so a policy-rc.d that
    # refuses (exit 101) keeps the services from starting. Only added if the
    # machine has none, and removed again afterwards.
    added_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    ok=1
    { apt-get update -q && apt-get install -y -q --no-install-recommends slurm-wlm munge; } \
        </dev/null > "$STATE/apt.log" 2>&1 || ok=
    [ -z "$added_policy" ] || rm -f /usr/sbin/policy-rc.d
    if [ -z "$ok" ]; then
        tail -n 20 "$STATE/apt.log" >&2
        cannot "apt-get could not install slurm-wlm and munge (log: $STATE/apt.log)"
    fi
fi
# --- 4. a fresh state folder -------------------------------------------------
rm -rf "$STATE/pids" "$STATE/munge" "$STATE/ctld" "$STATE/spool" "$STATE/log" "$STATE/gpu"
mkdir -p "$STATE/pids" "$STATE/munge" "$STATE/ctld" "$STATE/log" "$STATE/jobs" "$STATE/gpu"
for node in "${NODES[@]}"; do mkdir -p "$STATE/spool/$node"; done
# munged refuses key files and socket folders that others can write to, and
# every user (whose jobs authenticate through the socket) must reach the socket.
chmod 755 "$STATE" "$STATE/munge"

# Start one daemon in the foreground (-D / -F), in the background of this
# script, and record its PID: cluster_down.sh kills exactly these PIDs. Every
# daemon's command line names the state folder, which is how cluster_down.sh
# makes sure a recorded PID has not been reused by an unrelated process.
start() {
    local name=$1; shift
    "$@" </dev/null >>"$STATE/log/$name.out" 2>&1 &
    echo $! > "$STATE/pids/$name"
    log "started $name (pid $!): $*"
}

# --- 5. munge ------------------------------------------------------------------
# Our own key, socket, PID and seed files: a munged already running on this
# machine (on /run/munge) is neither used nor disturbed.
if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$STATE/munge/munge.key"
else
    dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
fi
chmod 600 "$STATE/munge/munge.key"
SOCKET="$STATE/munge/munge.socket"
# --force: munged otherwise refuses to run when, for example, /tmp's
# permissions are not what it expects of a socket's parent folders.
start munged munged --foreground --force \
    --key-file="$STATE/munge/munge.key" --socket="$SOCKET" \
    --pid-file="$STATE/munge/munged.pid" --seed-file="$STATE/munge/munged.seed"
for _ in $(seq 50); do [ -S "$SOCKET" ] && break; sleep 0.1; done
[ -S "$SOCKET" ] || { tail "$STATE/log/munged"* >&2; die "munged did not create $SOCKET"; }
munge -n --socket="$SOCKET" | unmunge --socket="$SOCKET" >/dev/null \
    || die "munge cannot encode and decode a credential on $SOCKET"

# --- 6. gres.conf and slurm.conf --------------------------------------------
# Stand-in GPUs: Slurm needs a character device for each GPU it hands out,
# and never opens it here (no cgroup device fencing). Each is a copy of
# /dev/null (major 1, minor 3) under the state folder. With them the GPU
# scripts run here for real: Slurm counts and allocates GPUs and shows them to
# the ranks (CUDA_VISIBLE_DEVICES) as on a GPU node; only CUDA is missing.
# Where device files cannot be made (a container without mknod) the cluster
# has no GPUs and run_jobs.sh says it skips the GPU scripts.
# slurmd reads gres.conf from the folder slurm.conf is in.
GPU_FILES=
for g in $(seq 0 $((GPUS - 1))); do
    mknod "$STATE/gpu/nvidia$g" c 1 3 2>/dev/null || {
        log "cannot create device files (mknod): no stand-in GPUs"; GPUS=0; break; }
done
if [ "$GPUS" -gt 0 ]; then
    GPU_FILES="NodeName=$(IFS=,; echo "${NODES[*]}") Name=gpu File=$STATE/gpu/nvidia[0-$((GPUS - 1))]"
fi
cat > "$STATE/gres.conf" <<EOF
# Written by slurm/ci/cluster_up.sh. No GPU discovery: the GPUs are the files below.
AutoDetect=off
$GPU_FILES
EOF

# Job ids that never repeat on this machine, and an epilog that removes what
# MPICH leaves in /dev/shm. MPICH names a job's shared-memory segment after
# its PMI job id, which under srun --mpi=pmi2 is "JOBID.STEPID", and a rank
# that is killed (a time limit, a failed job) leaves the segment behind. A
# cluster started afresh would count job ids from 1 again, and its job 1 would
# open the segment that an earlier job 1 left: MPI_Init then fails with
# "Message truncated". So job ids start from the clock (seconds since 1970,
# modulo 60 million to stay below Slurm's largest job id; ids grow by one per
# job, far slower than the clock), and the epilog deletes the segments of the
# job that just ended, found by the same name.
FIRST_JOB_ID=$(( $(date +%s) % 60000000 + 1 ))
cat > "$STATE/epilog.sh" <<'EOF'
#!/bin/bash
# Slurm epilog of the CI cluster (written by cluster_up.sh): runs as root on
# each node when a job has ended, and deletes the MPICH shared-memory segments
# of its steps: /dev/shm/mpich_{shm,vci}_HASH_NODE with HASH the 32-bit FNV-1a
# hash of "JOBID.STEPID" in hex.
fnv1a() {
    local s=$1 h=2166136261 i c
    for ((i = 0; i < ${#s}; i++)); do
        printf -v c '%d' "'${s:i:1}"
        h=$(( ((h ^ c) * 16777619) & 0xffffffff ))
    done
    printf '%x' "$h"
}
for ((step = 0; step < 32; step++)); do
    hash=$(fnv1a "$SLURM_JOB_ID.$step")
    rm -f /dev/shm/mpich_shm_"$hash"_* /dev/shm/mpich_vci_"$hash"_*
done
exit 0
EOF
chmod 755 "$STATE/epilog.sh"

CONF="$STATE/slurm.conf"
HOST=$(hostname -s)
GRES=
[ "$GPUS" -eq 0 ] || GRES=" Gres=gpu:$GPUS"
NODE_LINES=
k=0
for node in "${NODES[@]}"; do
    k=$((k + 1))
    NODE_LINES+="NodeName=$node NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((PORT + k)) CPUs=$CPUS$GRES RealMemory=1000 State=UNKNOWN"$'\n'
done
cat > "$CONF" <<EOF
# Written by slurm/ci/cluster_up.sh: a CI cluster on one machine.
ClusterName=mpipipe-ci
# The controller runs here. slurmctld checks that its host name matches; the
# address in brackets saves a name lookup.
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmUser=root
SlurmdUser=root

# Authentication through our own munged, not the system's socket.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET

StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/log/slurmctld.pid
SlurmdPidFile=$STATE/log/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# A record of every finished job (id, state, exit code), handy when CI fails.
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true

# No cgroups: a CI machine (often a container) may not let us manage them.
# linuxproc tracks a job's processes through their parent PIDs; task/none
# binds nothing, so ranks may share the machine's few cores.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# cons_tres allocates cores (and, on GPU clusters, GPUs) as separate resources,
# the same selection plugin a GPU site uses.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Let slurmd register the CPUs declared below even though the machine has
# fewer: without it a node with "too few" CPUs is drained.
SlurmdParameters=config_overrides
# FIFO scheduling straight at submission: no 30 s backfill cycle to wait for.
SchedulerType=sched/builtin
MpiDefault=none
# GPUs as a generic resource, described in gres.conf (stand-ins, see there).
GresTypes=gpu
ReturnToService=2
# Unique job ids and the /dev/shm clean-up, see cluster_up.sh.
FirstJobId=$FIRST_JOB_ID
Epilog=$STATE/epilog.sh
# Short waits so a failed or timed-out job ends within seconds.
KillWait=5
InactiveLimit=0
MinJobAge=600
SlurmdTimeout=60
MessageTimeout=20

# Two nodes, each its own slurmd on its own port, both on this machine.
$NODE_LINES
PartitionName=ci Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP
EOF
log "wrote $CONF and $STATE/gres.conf"
echo "export SLURM_CONF=$CONF" > "$STATE/env.sh"
export SLURM_CONF="$CONF"

# --- 7. slurmctld and the slurmds ------------------------------------------
# -D: stay in the foreground, so the PID we record is the daemon's own.
# -i: ignore errors reading the (empty) saved state.
start slurmctld slurmctld -D -i -f "$CONF"
for node in "${NODES[@]}"; do
    # -N: which NodeName line this slurmd is (its port, its CPUs).
    start "slurmd-$node" slurmd -D -N "$node" -f "$CONF"
done

# --- 8. wait until both nodes are idle ---------------------------------------
log "waiting up to ${WAIT}s for ${NODES[*]} to be idle"
deadline=$((SECONDS + WAIT))
while :; do
    states=$(sinfo -h -N -o '%N=%t' 2>/dev/null | sort -u | tr '\n' ' ' || true)
    idle=$(sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l || true)
    [ "${idle:-0}" -ge "${#NODES[@]}" ] && break
    if [ $SECONDS -ge $deadline ]; then
        echo "[cluster_up] node states: ${states:-none (slurmctld not answering)}" >&2
        for f in "$STATE"/log/*.log "$STATE"/log/*.out; do
            [ -s "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }
        done
        die "the nodes did not become idle within ${WAIT}s (logs above and in $STATE/log)"
    fi
    for name in munged slurmctld "${NODES[@]/#/slurmd-}"; do
        kill -0 "$(cat "$STATE/pids/$name")" 2>/dev/null || {
            tail -n 20 "$STATE/log/$name.out" "$STATE/log/$name"*.log 2>/dev/null >&2 || true
            die "$name exited (logs in $STATE/log)"
        }
    done
    sleep 0.5
done
sinfo
log "up: source $STATE/env.sh (SLURM_CONF=$CONF), then sbatch/squeue/sinfo"
