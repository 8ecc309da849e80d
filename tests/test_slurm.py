"""The Slurm batch scripts in slurm/, submitted to a real Slurm cluster.

slurm/ci/cluster_up.sh brings up a two-node Slurm cluster on this machine
(installing Slurm and munge with apt-get if needed), slurm/ci/run_jobs.sh
submits the batch scripts with sbatch and checks every job's final state and
summary, and slurm/ci/cluster_down.sh stops exactly what cluster_up started.
Takes about 1.5 minutes (one job runs into its 1-minute time limit on purpose),
plus the package installation the first time.

The cluster needs root and either Slurm or apt-get. Where that is missing the
test is skipped and says why (pytest -rs shows it); MPIPIPE_REQUIRE_SLURM=1
turns such a skip into a failure, for CI machines that must run it, and
MPIPIPE_SKIP_SLURM=1 skips it on purpose. The cheap checks of the scripts
themselves always run.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SLURM = REPO / "slurm"
SCRIPTS = ["cpu_single_node", "cpu_multi_node", "gpu_single_node", "gpu_multi_node"]
COMMON = "# ==== common part:"

# The test's own cluster: not the default state folder and port, so that a
# cluster someone started by hand with cluster_up.sh is left alone.
STATE = os.environ.get("MPIPIPE_SLURM_STATE", "/tmp/mpipipe-slurm-pytest")
PORT = os.environ.get("MPIPIPE_SLURM_PORT", "16917")


def script(name):
    return (SLURM / f"{name}.sbatch").read_text()


def sbatch_options(text):
    return [line.split()[1] for line in text.splitlines() if line.startswith("#SBATCH ")]


# ---- the scripts, read (no Slurm needed) -----------------------------------

def test_the_four_scripts_share_one_common_part():
    parts = {name: script(name).partition(COMMON) for name in SCRIPTS}
    for name, (_, found, _) in parts.items():
        assert found, f"{name}.sbatch has no '{COMMON}' line"
    first = parts[SCRIPTS[0]][2]
    for name in SCRIPTS[1:]:
        assert parts[name][2] == first, (
            f"the common part of {name}.sbatch differs from {SCRIPTS[0]}.sbatch's: "
            f"edit it in all four")


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_every_script_parses():
    paths = [SLURM / f"{n}.sbatch" for n in SCRIPTS] + sorted((SLURM / "ci").glob("*.sh"))
    for path in paths:
        result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{path}: {result.stderr}"


def test_scripts_ask_slurm_for_what_the_readme_promises():
    for name in SCRIPTS:
        text, options = script(name), sbatch_options(script(name))
        assert "--output=%x-%j.out" in options and "--error=%x-%j.err" in options, name
        assert any(o.startswith("--partition=") for o in options), name
        assert "##SBATCH --account=" in text, name        # disabled until edited
        assert "--kill-on-bad-exit=1" in text and "--resume" in text, name
        if name.startswith("gpu"):
            # per node, not per task: per-task binding hides the peer GPUs (CUDA IPC)
            assert any(o.startswith("--gpus-per-node=") for o in options), name
            assert not any(o.startswith("--gpus-per-task") for o in options), name
            assert "MPIPIPE_CUDA_AWARE" in text and "--device gpu" in text, name


# ---- the scripts, run on a real cluster ---------------------------------------

def _why_no_cluster():
    """Why this machine cannot host the cluster, or None if it should."""
    if os.environ.get("MPIPIPE_SKIP_SLURM") == "1":
        return "MPIPIPE_SKIP_SLURM=1"
    if sys.platform != "linux":
        return f"needs Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "needs root (slurmd runs jobs as their users; cluster_up.sh starts the daemons as root)"
    if shutil.which("bash") is None:
        return "no bash"
    if not (shutil.which("sbatch") or os.path.exists("/usr/sbin/slurmctld")) \
            and shutil.which("apt-get") is None:
        return "Slurm is not installed and there is no apt-get to install it"
    return None


def _skip(reason):
    if os.environ.get("MPIPIPE_REQUIRE_SLURM") == "1":
        pytest.fail(f"MPIPIPE_REQUIRE_SLURM=1 but no Slurm cluster here: {reason}")
    print(f"skipping the Slurm cluster test: {reason}")
    pytest.skip(f"no Slurm cluster here: {reason}")


def _venv():
    """The venv (or prefix) whose bin/ holds this interpreter and mpipipe."""
    for bin_dir in (Path(sys.executable).parent,
                    Path(shutil.which("mpipipe") or "/nonexistent").parent):
        if (bin_dir / "mpipipe").exists() and (bin_dir / "python").exists():
            return str(bin_dir.parent)
    pytest.fail("no bin/mpipipe beside this Python: install the project (pip install -e .)")


def _run(name, env, timeout):
    """Run slurm/ci/NAME with a time limit; its output goes to the test's log."""
    command = ["bash", str(SLURM / "ci" / name)]
    try:
        result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        print(out)
        pytest.fail(f"{name} did not finish within {timeout}s")
    print(f"$ {name}\n{result.stdout}{result.stderr}", end="")
    return result


def _leftovers():
    """Processes of our cluster still alive: anything with its SLURM_CONF in the
    environment (the daemons, slurmstepd, the jobs' ranks) or its state folder
    on the command line."""
    conf = f"SLURM_CONF={STATE}/slurm.conf".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if conf in environ or STATE.encode() + b"/" in cmdline:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{proc.name}: {command}")
    return found


def test_batch_scripts_run_on_a_real_slurm_cluster(capsys):
    reason = _why_no_cluster()
    if reason:
        _skip(reason)
    env = dict(os.environ, MPIPIPE_SLURM_STATE=STATE, MPIPIPE_SLURM_PORT=PORT,
               MPIPIPE_VENV=_venv(), CI=os.environ.get("CI", "true"))
    for name in list(env):
        if name.startswith("SLURM_") or name.startswith("PMI") or name == "MPIPIPE_FAULT":
            del env[name]            # nothing of an enclosing job or MPI run leaks in
    try:
        up = _run("cluster_up.sh", env, timeout=300)
        if up.returncode == 77:      # cluster_up.sh: this machine cannot host it
            _skip((up.stderr.strip().splitlines() or ["cluster_up.sh exit status 77"])[-1])
        assert up.returncode == 0, f"cluster_up.sh failed ({up.returncode}): {up.stderr[-2000:]}"
        jobs = _run("run_jobs.sh", env, timeout=360)
        with capsys.disabled():     # the job report belongs in the log, passed or not
            report = [line for line in jobs.stdout.splitlines() if line.startswith("[run_jobs]")]
            print("\n" + "\n".join(report), flush=True)
        assert jobs.returncode == 0, (
            f"run_jobs.sh failed ({jobs.returncode}):\n{jobs.stdout[-4000:]}{jobs.stderr[-2000:]}")
        assert "all jobs ended as expected" in jobs.stdout
    finally:
        down = _run("cluster_down.sh", env, timeout=90)
        assert down.returncode == 0, f"cluster_down.sh failed: {down.stderr}"
    assert _leftovers() == [], "processes of the test cluster outlived cluster_down.sh"
