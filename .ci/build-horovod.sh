#!/usr/bin/env bash
# Build a Horovod wheel (TensorFlow + Gloo, CPU) that works against TensorFlow >= 2.16.
# Usage: build-horovod.sh PYTHON WHEEL_DIR
# Why not `pip install horovod`: its XLA op includes headers that moved out of tensorflow/compiler/
# in TF 2.16, and TF's wheel hides some headers under include/external/*. We drop the XLA op (not
# needed on CPU) and add those include directories.
set -euo pipefail
python=$1
wheel_dir=$2
version=${HOROVOD_VERSION:-0.28.1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m pip download --no-deps --no-binary :all: -d "$work" "horovod==$version"
tar -xzf "$work"/horovod-"$version".tar.gz -C "$work"
src="$work/horovod-$version"
sed -i '/xla_mpi_ops.cc/d' "$src/horovod/tensorflow/CMakeLists.txt"

tf_include=$("$python" -c 'import tensorflow as tf; print(tf.sysconfig.get_include())')
extra=""
for d in "$tf_include"/external/*; do
  for sub in "$d" "$d/src" "$d/include"; do
    [ -d "$sub" ] && extra="$extra -I$sub"
  done
done

export CXXFLAGS="${CXXFLAGS:-}$extra"
export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 \
  HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=gloo MAKEFLAGS=${MAKEFLAGS:--j2}
mkdir -p "$wheel_dir"
"$python" -m pip wheel --no-deps --no-build-isolation -w "$wheel_dir" "$src"
