#!/usr/bin/env bash
# Take down the CI cluster that cluster_up.sh started: first end any job still
# in it (through Slurm, so its processes go too), then stop exactly the daemons
# whose PIDs cluster_up.sh recorded under $MPIPIPE_SLURM_STATE/pids. No process
# is looked up by name, so a site's own Slurm or munge on this machine is safe.
#
# A recorded PID is only signalled while its command line still names the
# state folder (every daemon was started with a path inside it), so a PID that
# the kernel has since given to another process is left alone.
#
# Safe to run twice, or when nothing is up. The state folder itself (logs,
# the job outputs of run_jobs.sh) is kept for inspection; cluster_up.sh clears
# what it needs when it starts again.
set -uo pipefail

STATE=${MPIPIPE_SLURM_STATE:-/tmp/mpipipe-slurm}
PIDS="$STATE/pids"
log() { echo "[cluster_down] $*"; }
export PATH="$PATH:/usr/sbin:/sbin"

if [ ! -d "$PIDS" ]; then
    log "nothing to do: no $PIDS"
    exit 0
fi

ours() {  # ours PID: is PID alive and still one of the daemons we started?
    grep -qa -- "$STATE" "/proc/$1/cmdline" 2>/dev/null
}

# 1. Cancel what is left in the queue while the controller still runs, and
#    give the jobs' processes a few seconds to end (KillWait is 5 s).
if [ -s "$PIDS/slurmctld" ] && ours "$(cat "$PIDS/slurmctld")"; then
    export SLURM_CONF="$STATE/slurm.conf"
    if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
        log "cancelling the jobs still queued or running"
        scancel --full $(squeue -h -o %i) 2>/dev/null || true
        for _ in $(seq 30); do
            [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi

# 2. Stop the daemons: compute nodes first, then the controller, then munge
#    (which the others need until they are gone). SIGTERM, then SIGKILL after
#    10 s for any that has not exited.
stop() {
    local name=$1 pid
    [ -s "$PIDS/$name" ] || return 0
    pid=$(cat "$PIDS/$name")
    if ours "$pid"; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do ours "$pid" || break; sleep 0.1; done
        if ours "$pid"; then
            log "$name (pid $pid) ignored SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
            for _ in $(seq 20); do ours "$pid" || break; sleep 0.1; done
        fi
        log "stopped $name (pid $pid)"
    else
        log "$name (pid $pid) was not running"
    fi
    rm -f "$PIDS/$name"
}
for f in "$PIDS"/slurmd-*; do
    [ -e "$f" ] && stop "$(basename "$f")"
done
stop slurmctld
stop munged
rmdir "$PIDS" 2>/dev/null

# 3. Report (not kill) anything of this cluster that outlived it: a Slurm or
#    munge process whose command line names the state folder or whose
#    environment holds this cluster's SLURM_CONF (cluster_up.sh exported it to
#    the Slurm daemons, which pass it on), or a job's process (SLURM_JOB_ID)
#    with that SLURM_CONF. Should be none; if any, the cluster leaked.
conf="SLURM_CONF=$STATE/slurm.conf"
left=
for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    [ "$pid" = "$$" ] && continue
    comm=$(cat 2>/dev/null < "$proc/comm") || continue
    cmdline=$(tr '\0' ' ' 2>/dev/null < "$proc/cmdline") || continue
    environ=$(tr '\0' '\n' 2>/dev/null < "$proc/environ") || environ=
    ours_env=; grep -qxF "$conf" <<< "$environ" && ours_env=1
    if [[ "$comm" == slurm* || "$comm" == munge* ]] && [[ -n "$ours_env" || "$cmdline" == *"$STATE/"* ]]; then
        left+="  $pid $cmdline"$'\n'
    elif [ -n "$ours_env" ] && grep -q '^SLURM_JOB_ID=' <<< "$environ"; then
        left+="  $pid $cmdline"$'\n'
    fi
done
if [ -n "$left" ]; then
    echo "[cluster_down] error: processes of this cluster are still running:" >&2
    printf '%s' "$left" >&2
    exit 1
fi
log "down, no process of it left (logs kept in $STATE/log)"
