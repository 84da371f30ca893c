#!/bin/sh
# The wheels a machine without a package index needs to run beamscore's benchmarks, beside
# what its Python already has (numpy, pandas, pyarrow, scikit-learn, scipy, joblib,
# grpcio, protobuf, PyYAML, requests, python-dateutil, matplotlib): Apache Beam and the
# packages of its own that such a Python lacks, for CPython 3.12 (or PYTHON_VERSION) on
# x86-64 Linux, into .device-wheels (git-ignored; about 36 MB). bench/device/run.sh
# installs them there.
set -eu
cd "$(dirname "$0")/../.."
BEAM=$(sed -n 's/^BEAM_VERSION = "\(.*\)"/\1/p' setup.py)
mkdir -p .device-wheels
python -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version "${PYTHON_VERSION:-3.12}" --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any \
    --dest .device-wheels \
    "apache-beam==$BEAM" fastavro fasteners httplib2 jsonpickle objsize proto-plus pytz \
    zstandard beartype datasketches cryptography cffi pycparser
ls -1 .device-wheels
du -sh .device-wheels
