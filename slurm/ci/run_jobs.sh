#!/usr/bin/env bash
# Submit the batch scripts in slurm/ to the CI cluster (cluster_up.sh) with
# sbatch, as a user would, and check how each job ended and what it wrote.
#
#   slurm/ci/cluster_up.sh && slurm/ci/run_jobs.sh; slurm/ci/cluster_down.sh
#
# The scripts run unchanged: only the partition (the CI cluster's is "ci"),
# the size of the job (a couple of CPUs and stand-in GPUs per node) and the
# MPIPIPE_* settings (a tiny model, 6 steps) are given on the sbatch command
# line or in the environment, which sbatch passes on to the job.
#
# Jobs, all submitted at once and run side by side where the cluster has room:
#   ci-cpu-1node    cpu_single_node  1 node x 4 ranks, pp 4 x dp 1    COMPLETED
#   ci-cpu-2nodes   cpu_multi_node   2 nodes x 2 ranks, pp 2 x dp 2   COMPLETED, replica k on node k+1
#   ci-gpu-1node    gpu_single_node  1 node x 2 ranks x 2 GPUs        COMPLETED, each rank sees both GPUs
#   ci-gpu-2nodes   gpu_multi_node   2 nodes x 2 ranks x 2 GPUs       COMPLETED, pp 2 x dp 2, ditto
#   ci-tp-2nodes    cpu_multi_node   2 nodes x 2 ranks, a GPT at      COMPLETED, each tensor group
#                                    tp 2 x pp 1 x dp 2               (= replica) on one node
#   ci-tp-spans     cpu_multi_node   2 nodes x 2 ranks, tp 4 x dp 1   FAILED before srun: a tensor
#                                                                     group would span the nodes
#   ci-bad-arg      cpu_single_node  with an option mpipipe lacks     FAILED: the expected failure
#   ci-timelimit    cpu_single_node  1-minute limit, rank 1 hangs at  TIMEOUT, checkpoint of step 3 left
#                                    step 4 (mpipipe's fault injection)
# and, once those have ended:
#   ci-timelimit    the same script and name again: resumes           COMPLETED, steps 3..6
#   ci-cpu-1node    the same script and name again: already finished  COMPLETED, nothing run
#
# Every summary JSON is checked (check_job.py): pp, dp, one finite loss per
# step, and the same losses as ci-cpu-1node's, since every layout, and a run
# resumed from a checkpoint, computes the same training to round-off.
# The time-limit job takes 60-90 s (Slurm's limits are in whole minutes and
# are enforced every 30 s or so); everything else runs meanwhile.
#
# Settings (environment):
#   MPIPIPE_SLURM_STATE         the cluster's state folder (default /tmp/mpipipe-slurm);
#                               the jobs run in its jobs/ folder, emptied first
#   MPIPIPE_VENV                the venv with mpipipe (default: the repository's .venv)
#   MPIPIPE_SLURM_JOBS_TIMEOUT  seconds all jobs together may take (default 300)
#   MPIPIPE_SLURM_SKIP_TIMELIMIT=1  leave out the time-limit job and its resubmission
# Exit status 0 when every job ended as expected, 1 otherwise.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SLURM_DIR=$(dirname "$HERE")
REPO=$(dirname "$SLURM_DIR")
STATE=${MPIPIPE_SLURM_STATE:-/tmp/mpipipe-slurm}
LIMIT=${MPIPIPE_SLURM_JOBS_TIMEOUT:-300}
DEADLINE=$((SECONDS + LIMIT))
export PATH="$PATH:/usr/sbin:/sbin"

log() { echo "[run_jobs] $*"; }
die() { echo "[run_jobs] error: $*" >&2; exit 1; }

[ -s "$STATE/env.sh" ] || die "no cluster in $STATE: run slurm/ci/cluster_up.sh first"
source "$STATE/env.sh"                      # SLURM_CONF
sinfo -h >/dev/null || die "the cluster in $STATE does not answer (sinfo failed)"

MPIPIPE_VENV=$(cd "${MPIPIPE_VENV:-$REPO/.venv}" && pwd) || die "no venv at ${MPIPIPE_VENV:-$REPO/.venv}"
PYTHON="$MPIPIPE_VENV/bin/python"
[ -x "$MPIPIPE_VENV/bin/mpipipe" ] || die "no mpipipe in $MPIPIPE_VENV"

# What every job trains: small enough for 2 cores, the same model in every job
# so that their losses can be compared. sbatch passes these on to the jobs.
STEPS=6
export MPIPIPE_VENV MPIPIPE_STEPS=$STEPS MPIPIPE_TRAIN_ARGS="--hidden 16" MPIPIPE_MICROBATCHES=4
# The mpich wheel's MPI speaks PMI-2 (srun --mpi=pmix does not start it); the
# GPU scripts default to pmix, as GPU sites' MPIs mostly do.
export MPIPIPE_SRUN_MPI=pmi2
# The mpich wheel's UCX network module fails MPI_Init here under srun
# --mpi=pmi2 whenever the environment is a little different (one more variable
# is enough; pytest adds some): Slurm's PMI-2 server gets requests holding
# stray bytes of the ranks' memory ("mpi/pmi2: value not properly terminated",
# "full request is: ..."), and the two-node GPU and tensor-parallel jobs die
# every time. Its libfabric module (OFI) starts under the same conditions every
# time. See slurm/README.md.
export MPIR_CVAR_CH4_NETMOD=${MPIR_CVAR_CH4_NETMOD:-ofi}
unset MPIPIPE_PP MPIPIPE_DP MPIPIPE_CHECKPOINT_DIR MPIPIPE_CHECKPOINT_EVERY MPIPIPE_FAULT MPIPIPE_DEVICE_ARGS

# A fresh jobs folder: the outputs and checkpoints of an earlier run must not
# make a job "already finished".
JOBS="$STATE/jobs"
rm -rf "$JOBS"
mkdir -p "$JOBS"
cd "$JOBS"                                  # sbatch writes %x-%j.out here

declare -A ID                               # job name -> job id
NAMES=()
# submit NAME SCRIPT [sbatch options...]. Settings for one job only go before
# it (VAR=value submit ...): bash exports them to sbatch for this call alone.
submit() {
    local name=$1 script=$2; shift 2
    local out
    out=$(sbatch --parsable --partition=ci --job-name="$name" "$@" "$SLURM_DIR/$script") \
        || die "sbatch refused $name ($script $*)"
    ID[$name]=${out%%;*}
    NAMES+=("$name")
    log "submitted $name: job ${ID[$name]} ($script $*)"
}

# Poll the controller until every given job has ended (sbatch --wait polls
# only every 30 s or so). Prints each job's state changes.
FINAL="COMPLETED FAILED TIMEOUT CANCELLED NODE_FAIL OUT_OF_MEMORY PREEMPTED BOOT_FAIL DEADLINE"
job_field() {  # job_field ID FIELD: JobState, ExitCode, ... of a job
    scontrol show job -o "$1" 2>/dev/null | grep -o "\b$2=[^ ]*" | head -n 1 | cut -d= -f2-
}
wait_jobs() {
    local name state pending
    declare -A seen=()
    while :; do
        pending=
        for name in "$@"; do
            state=$(job_field "${ID[$name]}" JobState)
            if [ "${seen[$name]:-}" != "$state" ]; then
                log "$(printf '%-14s job %-4s %s' "$name" "${ID[$name]}" "${state:-?}")"
                seen[$name]=$state
            fi
            [[ " $FINAL " == *" $state "* ]] || pending+=" $name"
        done
        [ -z "$pending" ] && return 0
        if [ $SECONDS -ge $DEADLINE ]; then
            log "time is up (${LIMIT}s): still not ended:$pending"
            squeue || true
            for name in $pending; do scancel "${ID[$name]}" || true; done
            return 1
        fi
        sleep 1
    done
}

FAILURES=0
fail() { log "FAIL: $*"; FAILURES=$((FAILURES + 1)); }

# expect NAME STATE EXIT: the job ended in STATE with exit status EXIT (* = any).
expect() {
    local name=$1 want_state=$2 want_exit=$3 state code
    state=$(job_field "${ID[$name]}" JobState)
    code=$(job_field "${ID[$name]}" ExitCode)
    if [ "$state" = "$want_state" ] && [[ "${code%%:*}" == $want_exit ]]; then
        log "$(printf '%-14s job %-4s %-9s exit %-5s as expected' "$name" "${ID[$name]}" "$state" "$code")"
        return 0
    fi
    fail "$name (job ${ID[$name]}): $state, exit $code; expected $want_state, exit $want_exit"
    for f in "$name-${ID[$name]}.out" "$name-${ID[$name]}.err"; do
        [ -s "$f" ] && { echo "--- $f"; tail -n 30 "$f"; }
    done
    return 1
}

# summary NAME [check_job.py options]: check the job's summary JSON and layout.
summary() {
    local name=$1; shift
    local base="$name-${ID[$name]}" verdict
    if verdict=$("$PYTHON" "$HERE/check_job.py" "$base.out" --summary "$base.json" \
            --steps "$STEPS" "$@"); then
        log "$(printf '%-14s job %-4s %s' "$name" "${ID[$name]}" "$verdict")"
    else
        fail "$name (job ${ID[$name]}): $verdict"
    fi
}

HAVE_GPUS=
sinfo -h -o '%G' | grep -q 'gpu:' && HAVE_GPUS=1
TIMELIMIT=1
[ "${MPIPIPE_SLURM_SKIP_TIMELIMIT:-}" != 1 ] || TIMELIMIT=

# --- phase 1: everything at once ---------------------------------------------
# The time-limit job first: it takes longest. Checkpoints every step, so the
# one of step 3 is complete when rank 1 stops answering at the start of step 4;
# Slurm ends the job at its 1-minute limit.
if [ -n "$TIMELIMIT" ]; then
    MPIPIPE_FAULT=hang:1:4 MPIPIPE_CHECKPOINT_EVERY=1 \
        submit ci-timelimit cpu_single_node.sbatch --time=1 --ntasks-per-node=2
fi
submit ci-cpu-1node cpu_single_node.sbatch
submit ci-cpu-2nodes cpu_multi_node.sbatch
MPIPIPE_TP=2 MPIPIPE_TRAIN_ARGS="--model gpt --hidden 16 --heads 2 --layers 2 --global-batch 16" \
    submit ci-tp-2nodes cpu_multi_node.sbatch
MPIPIPE_TP=4 MPIPIPE_DP=1 submit ci-tp-spans cpu_multi_node.sbatch
MPIPIPE_TRAIN_ARGS="--hidden 16 --no-such-option" \
    submit ci-bad-arg cpu_single_node.sbatch
if [ -n "$HAVE_GPUS" ]; then
    GPU_JOB=(--gpus-per-node=2 --ntasks-per-node=2 --cpus-per-task=1)
    # The CI's GPUs are stand-ins (no CUDA): the scripts' Slurm side is tested,
    # the training itself runs on the CPU (MPIPIPE_DEVICE_ARGS empty, not --device gpu).
    MPIPIPE_DEVICE_ARGS="" submit ci-gpu-1node gpu_single_node.sbatch "${GPU_JOB[@]}"
    MPIPIPE_DEVICE_ARGS="" submit ci-gpu-2nodes gpu_multi_node.sbatch "${GPU_JOB[@]}"
else
    log "SKIP the GPU scripts: the cluster has no stand-in GPUs (see cluster_up.sh)"
fi
wait_jobs "${NAMES[@]}" || fail "jobs did not end within ${LIMIT}s"

REF="ci-cpu-1node-${ID[ci-cpu-1node]}.json"
expect ci-cpu-1node COMPLETED 0 && summary ci-cpu-1node --pp 4 --dp 1 --nodes 1
expect ci-cpu-2nodes COMPLETED 0 && summary ci-cpu-2nodes --pp 2 --dp 2 --nodes 2 --reference "$REF"
expect ci-tp-2nodes COMPLETED 0 && summary ci-tp-2nodes --tp 2 --pp 1 --dp 2 --nodes 2
if expect ci-tp-spans FAILED '[1-9]*'; then
    if grep -q "tp=4 does not divide the 2 tasks per node: a tensor group would span two nodes" \
            "ci-tp-spans-${ID[ci-tp-spans]}.err"; then
        log "ci-tp-spans    job ${ID[ci-tp-spans]}  expected failure seen: a tensor group may not span nodes"
    else
        fail "ci-tp-spans: its .err file does not say that a tensor group would span nodes"
    fi
fi
if [ -n "$HAVE_GPUS" ]; then
    expect ci-gpu-1node COMPLETED 0 && summary ci-gpu-1node --pp 2 --dp 1 --nodes 1 --gpus 0,1 --reference "$REF"
    expect ci-gpu-2nodes COMPLETED 0 && summary ci-gpu-2nodes --pp 2 --dp 2 --nodes 2 --gpus 0,1 --reference "$REF"
fi
# The expected failure: mpipipe rejects the option (exit status 2) and the job
# is FAILED, with a non-zero exit status (srun reports the largest of its
# tasks': 2, or 143 for the ranks it then ended with SIGTERM), the option named
# in its .err file and no summary written.
if expect ci-bad-arg FAILED '[1-9]*'; then
    if ! grep -q "no-such-option" "ci-bad-arg-${ID[ci-bad-arg]}.err"; then
        fail "ci-bad-arg: its .err file does not name the bad option"
    elif [ -e "ci-bad-arg-${ID[ci-bad-arg]}.json" ]; then
        fail "ci-bad-arg: wrote a summary although it failed"
    else
        log "ci-bad-arg     job ${ID[ci-bad-arg]}  expected failure seen: the .err names the bad option, no summary"
    fi
fi
# (Its exit status is the batch shell's on SIGTERM, 143, or 0:9 had Slurm's
# SIGKILL come first: not checked.)
if [ -n "$TIMELIMIT" ] && expect ci-timelimit TIMEOUT '*'; then
    [ -e "checkpoints/ci-timelimit/step-00000003/manifest.json" ] \
        || fail "ci-timelimit: no complete checkpoint of step 3 in $JOBS/checkpoints/ci-timelimit"
fi

# --- phase 2: resubmissions --------------------------------------------------
# The timed-out job, resubmitted as is (same script, same name, no fault),
# resumes from its checkpoint; the finished one finds nothing left to do.
FIRST_ID=${ID[ci-cpu-1node]}
NAMES=()
if [ -n "$TIMELIMIT" ]; then
    submit ci-timelimit cpu_single_node.sbatch --ntasks-per-node=2
fi
submit ci-cpu-1node cpu_single_node.sbatch
wait_jobs "${NAMES[@]}" || fail "resubmitted jobs did not end in time"
if [ -n "$TIMELIMIT" ] && expect ci-timelimit COMPLETED 0; then
    summary ci-timelimit --pp 2 --dp 1 --first-step 3 --reference "$REF"
fi
if expect ci-cpu-1node COMPLETED 0; then
    if grep -q "already finished" "ci-cpu-1node-${ID[ci-cpu-1node]}.out" \
            && [ ! -e "ci-cpu-1node-${ID[ci-cpu-1node]}.json" ]; then
        log "ci-cpu-1node   job ${ID[ci-cpu-1node]}  resubmitted after job $FIRST_ID finished: already finished, nothing run"
    else
        fail "ci-cpu-1node resubmitted: expected 'already finished' and no new summary"
    fi
fi

if [ "$FAILURES" -gt 0 ]; then
    log "$FAILURES check(s) failed; job files in $JOBS, cluster logs in $STATE/log"
    exit 1
fi
log "all jobs ended as expected (${SECONDS}s); job files in $JOBS"
