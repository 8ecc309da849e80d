#!/usr/bin/env bash
# The whole test suite: serial tests under pytest, then the MPI tests under
# mpiexec with 2 and 4 ranks. Every mpiexec has its own time limit, so a hung
# MPI test ends here, not at the CI's limit.
#
# Uses .venv (created and filled with the project, its MPI wheel and the test
# tools if needed) unless PYTHON names another interpreter to use as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[mpich,test,plot]'
    PYTHON=.venv/bin/python
fi
BIN=$(cd "$(dirname "$PYTHON")" && pwd)
export PATH="$BIN:$PATH"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

echo "== serial tests"
timeout -k 10 900 "$PYTHON" -m pytest -q tests

for ranks in 2 4; do
    echo "== MPI tests on $ranks ranks"
    timeout -k 10 600 mpiexec -n "$ranks" "$PYTHON" -m pytest -q -p no:cacheprovider \
        --with-mpi -m mpi tests </dev/null
done
echo "== all test runs passed"
