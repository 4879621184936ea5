#!/usr/bin/env bash
# Make .venv: a link into a virtualenv cached outside the checkout, keyed by a hash of the pins, so a
# fresh clone on the same machine (CI's included) reuses an earlier set-up and the built Horovod wheel.
# Idempotent: a complete cached venv is only re-linked, and pctr's editable install re-pointed here.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
python=${PYTHON:-python3}
cache=${PCTR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pctr}

if ! command -v java >/dev/null 2>&1; then
  echo "setup: Java (17 or newer) is required by Spark but 'java' is not on PATH." >&2
  echo "       On Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless" >&2
  exit 1
fi
"$python" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || {
  echo "setup: Python 3.11 is required (found $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
}

# only what decides the installed packages: the pins (requirement sections of setup.cfg) and the scripts
pins=$(sed -n '/^install_requires =/,/^$/p; /^\[options.extras_require\]/,/^$/p' setup.cfg)
key=$( (echo "$pins"; cat .ci/constraints.txt .ci/setup-venv.sh .ci/build-horovod.sh) | sha256sum | cut -c1-16)
venv="$cache/venv-$key"
wheels="$cache/wheels"

if [ ! -f "$venv/.complete" ]; then
  echo "setup: creating $venv (first time on this machine: a few minutes)"
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet -c .ci/constraints.txt -e ".[dev]"
  tf_version=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("tensorflow-cpu"))')
  hvd_wheels="$wheels/tf-$tf_version"
  if ! ls "$hvd_wheels"/horovod-*.whl >/dev/null 2>&1; then
    echo "setup: building Horovod against TensorFlow $tf_version (once per machine: 2-8 minutes)"
    .ci/build-horovod.sh "$venv/bin/python" "$hvd_wheels"
  fi
  "$venv/bin/pip" install --quiet -c .ci/constraints.txt "$hvd_wheels"/horovod-*.whl
  touch "$venv/.complete"
fi

ln -sfn "$venv" .venv
# the cached venv is shared by every checkout on this machine: point pctr's editable install here
if ! grep -rqs --include='__editable__*pctr*' -F "$repo/" "$venv"/lib/python3.11/site-packages; then
  "$venv/bin/pip" install --quiet --no-deps --no-build-isolation -e .
fi
echo "setup: .venv -> $venv"
