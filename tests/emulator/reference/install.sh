#!/usr/bin/env bash
# Installs the reference worker (PyPI `blobhub-worker` 0.11.0) into a venv under DIR, idempotently,
# and prints the path of its `blobhub-worker` executable (the value for BLOBHUB_REFERENCE_WORKER).
#
#   tests/emulator/reference/install.sh DIR
#
# The wheel declares Python >= 3.12; it runs on 3.11, so it is fetched for 3.12 and installed with
# --ignore-requires-python. PYTHON (default: python3) picks the interpreter for the venv.
# Everything but the final path goes to stderr.
set -euo pipefail

VERSION=0.11.0
dir=${1:?usage: install.sh DIR}
python=${PYTHON:-python3}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
venv="$dir/venv"
exe="$venv/bin/blobhub-worker"

installed() {
    [ -x "$exe" ] && "$venv/bin/python" -c \
        "import importlib.metadata as m, sys; sys.exit(m.version('blobhub-worker') != '$VERSION')" 2>/dev/null
}

if ! installed; then
    {
        wheels="$dir/wheels"
        mkdir -p "$wheels"
        "$python" -m pip download --quiet --no-deps --python-version 3.12 --only-binary=:all: \
            "blobhub-worker==$VERSION" -d "$wheels"
        [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --ignore-requires-python \
            "$wheels/blobhub_worker-$VERSION-py3-none-any.whl"
        installed || { echo "install.sh: blobhub-worker $VERSION did not install" >&2; exit 1; }
    } >&2
fi
echo "$exe"
