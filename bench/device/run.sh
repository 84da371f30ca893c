#!/bin/sh
# The scaling figures of bench/README.md ("On a bigger machine") in one command, for a
# many-core machine that may have no package index:
#
#     bench/device/run.sh [DOCS] [WORKERS...]      # default: 1000000 docs, W = 4 8 16
#
# Runs from the repository's root with PYTHON (default python3). Where that Python lacks
# Apache Beam, the wheels of .device-wheels (bench/device/wheels.sh, made on a machine
# with the index) are installed into a temporary folder first. Then: a and c1 (one
# process each), c and d at each W, the sink alone (SQLite, 1-8 writers) and the table of
# bench/device/summary.py. Everything it prints, and run_bench's results per W, go to
# OUT (default bench/out/device).
set -eu
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
OUT=${OUT:-bench/out/device}
DOCS=${1:-1000000}
[ $# -gt 0 ] && shift
WORKERS=${*:-4 8 16}
mkdir -p "$OUT"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the product, installed or not
export PYTHONPATH
if ! "$PY" -c "import apache_beam" 2>/dev/null; then
    SITE=$(mktemp -d)
    "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" .device-wheels/*.whl
    PYTHONPATH="$SITE:$PYTHONPATH"
fi
{
    echo "cores: $(nproc); $("$PY" -c 'import apache_beam as b, sklearn, numpy, pandas, pyarrow; print("beam", b.__version__, "sklearn", sklearn.__version__, "numpy", numpy.__version__, "pandas", pandas.__version__, "pyarrow", pyarrow.__version__)')"
    "$PY" bench/run_bench.py --docs "$DOCS" --contenders a,c1 --workers 1
    cp bench/out/results.json "$OUT/results-w1.json"
    for W in $WORKERS; do
        "$PY" bench/run_bench.py --docs "$DOCS" --contenders c,d --workers "$W"
        cp bench/out/results.json "$OUT/results-w$W.json"
    done
    "$PY" bench/sink_bench.py --backends sqlite
    "$PY" bench/device/summary.py "$OUT"
} 2>&1 | tee "$OUT/run.log"
