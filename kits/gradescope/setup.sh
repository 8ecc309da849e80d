#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder: a virtual
# environment with the course's copy of mpipipe (in source/mpipipe) and MPICH.
set -euo pipefail
AUTOGRADER=${AUTOGRADER:-/autograder}
if ! python3 -c "import ensurepip" 2>/dev/null; then   # Ubuntu's python3 lacks venv
    apt-get update -q && apt-get install -y -q python3-venv
fi
python3 -m venv "$AUTOGRADER/venv"
"$AUTOGRADER/venv/bin/pip" install --quiet --disable-pip-version-check \
    "$AUTOGRADER/source/mpipipe[mpich]"
