#!/usr/bin/env bash
# make image-test: check the image deploy/image/build.sh built, inside a buildah working
# container (no Docker daemon): its entrypoint and Flex Template settings, the two entry
# points, and a real `beamscore score` of the bundled sample tranches on Beam's local
# engine, whose summary must be exit 0, 9048 read, 9000 written, 48 dead letters, succeeded;
# and the Flex Template entry run as Dataflow's launcher runs it, with flags only.
#
# Environment: IMAGE (default localhost/beamscore:<setup.py version>).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILDAH=(buildah --storage-driver vfs)
VERSION=$(sed -n -E 's/^ *version *= *"([^"]+)".*/\1/p' "$REPO/setup.py" | head -n1)
BEAM_VERSION=$(sed -n -E 's/^BEAM_VERSION *= *"([^"]+)".*/\1/p' "$REPO/setup.py" | head -n1)
IMAGE=${IMAGE:-localhost/beamscore:$VERSION}
OUT=$(mktemp -d /tmp/beamscore-image-test.XXXXXX)
started=$(date +%s)

log() { printf '[test.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { echo "test.sh: FAIL: $*" >&2; exit 1; }

"${BUILDAH[@]}" inspect --type image "$IMAGE" >/dev/null 2>&1 \
  || fail "no image $IMAGE (run make image first)"
ctr=$("${BUILDAH[@]}" from --pull-never --name "beamscore-test-$$" "$IMAGE")
trap '"${BUILDAH[@]}" rm "$ctr" >/dev/null; rm -rf "$OUT"' EXIT
run() { "${BUILDAH[@]}" run --isolation chroot "$@"; }

log "1. image configuration"
"${BUILDAH[@]}" inspect --type image "$IMAGE" > "$OUT/inspect.json"
python3 - "$OUT/inspect.json" <<'EOF' || fail "image configuration"
import json, sys
cfg = json.load(open(sys.argv[1]))["OCIv1"]["config"]
env = dict(e.split("=", 1) for e in cfg.get("Env", []))
checks = {
    "ENTRYPOINT is Beam's boot": cfg.get("Entrypoint") == ["/opt/apache/beam/boot"],
    "FLEX_TEMPLATE_PYTHON_PY_FILE": env.get("FLEX_TEMPLATE_PYTHON_PY_FILE")
                                    == "/template/pipelines/template.py",
    "RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT": env.get("RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT") == "1",
    "venv first on PATH": env.get("PATH", "").startswith("/opt/venv/bin:"),
    "no password in the environment": not any("PASSWORD" in k for k in env),
}
for what, ok in checks.items():
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
sys.exit(0 if all(checks.values()) else 1)
EOF

log "2. files, versions, pip check"
run "$ctr" -- sh -c '
  set -e
  test -x /opt/apache/beam/boot
  test -x /opt/google/dataflow/python_template_launcher
  test -f "$FLEX_TEMPLATE_PYTHON_PY_FILE"
  echo "  python: $(command -v python) $(python -V 2>&1)"
  python -m pip check | sed "s/^/  /"
  python -c "import apache_beam; print(apache_beam.__version__)" > /tmp/beam-version
' || fail "files in the image"
run "$ctr" -- cat /tmp/beam-version > "$OUT/beam-version"
[ "$(cat "$OUT/beam-version")" = "$BEAM_VERSION" ] \
  || fail "apache-beam $(cat "$OUT/beam-version") in the image, setup.py pins $BEAM_VERSION"
echo "  apache-beam $BEAM_VERSION (= setup.py's BEAM_VERSION)"
set +e
run "$ctr" -- /opt/apache/beam/boot > /dev/null 2> "$OUT/boot.err"
set -e
if grep -q "stand-in" "$OUT/boot.err"; then
  echo "  /opt/apache/beam/boot and python_template_launcher are the offline stand-ins"
fi

log "3. the Flex Template entry: python -m pipelines.template --help, and the file the launcher runs"
run "$ctr" -- python -m pipelines.template --help > "$OUT/help.txt" || fail "pipelines.template --help"
run --workingdir /tmp "$ctr" -- sh -c 'python "$FLEX_TEMPLATE_PYTHON_PY_FILE" --help' \
  > "$OUT/help-file.txt" || fail "python \$FLEX_TEMPLATE_PYTHON_PY_FILE --help"
grep -q -- "--input-root" "$OUT/help.txt" || fail "--help does not list --input-root"
echo "  both exit 0 ($(wc -l < "$OUT/help.txt") lines of help)"

log "4. beamscore score of the bundled sample tranches, inside the image"
score_started=$(date +%s)
set +e
run --workingdir /tmp "$ctr" -- sh -c '
  set -e
  rm -rf /tmp/var
  python -m landing.samples --root /tmp/var > /dev/null
  beamscore train --docs "/tmp/var/train/*.jsonl" --name demo --registry /tmp/var/registry
  beamscore score --model demo --from 2026-01-01 --to 2026-01-03 --input-root /tmp/var/landing \
    --registry /tmp/var/registry --db sqlite:////tmp/var/s.db --output-dir /tmp/var/out
' > "$OUT/score.out" 2> "$OUT/score.err"
rc=$?
set -e
sed 's/^/  /' "$OUT/score.out"
[ "$rc" = 0 ] || { tail -n 30 "$OUT/score.err" >&2; fail "beamscore score exited $rc"; }
run "$ctr" -- sh -c 'cat /tmp/var/out/_runs/*.json' > "$OUT/summary.json" \
  || fail "no run summary in /tmp/var/out/_runs"
python3 - "$OUT/score.out" "$OUT/summary.json" <<'EOF' || fail "the run summary"
import json, re, sys
text, summary = open(sys.argv[1]).read(), json.load(open(sys.argv[2]))
total = re.search(r"^total\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", text, re.M)
status = re.search(r"^run \S+\s+model \S+\s+status (\w+)", text, re.M)
read, valid, scored, dead, written = map(int, total.groups()) if total else (None,) * 5
checks = {
    "printed status succeeded": bool(status) and status.group(1) == "succeeded",
    "printed total: 9048 read": read == 9048,
    "printed total: 9000 written": written == 9000,
    "printed total: 48 dead letters": dead == 48,
    "summary file: status succeeded": summary.get("status") == "succeeded",
    "summary file: 9048 = 9000 written + 48 dead letters":
        {k: summary.get("total", {}).get(k) for k in ("read", "written", "dead_lettered")}
        == {"read": 9048, "written": 9000, "dead_lettered": 48},
}
for what, ok in checks.items():
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
sys.exit(0 if all(checks.values()) else 1)
EOF
log "score in the image took $(( $(date +%s) - score_started )) s"

log "5. the Flex Template entry as the launcher runs it: flags only, on Beam's local engine"
run --workingdir /tmp "$ctr" -- sh -c 'python "$FLEX_TEMPLATE_PYTHON_PY_FILE" --config=local \
  --date=2026-01-02 --input_root=/tmp/var/landing --registry=/tmp/var/registry \
  --db=sqlite:////tmp/var/template.db --output_dir=/tmp/var/out-template --force=false' \
  > "$OUT/template.out" 2> "$OUT/template.err" \
  || { tail -n 30 "$OUT/template.err" >&2; fail "the template entry exited non-zero"; }
grep -Eq "^2026-01-02 +3016 +3000 +3000 +16 +3000  ok$" "$OUT/template.out" \
  || { cat "$OUT/template.out" >&2; fail "the template entry's summary"; }
echo "  ok   2026-01-02: 3016 read, 3000 written, 16 dead letters, exit 0"

"${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}}  {{.Size}}' | grep -E "beamscore" | sed 's/^/  /'
log "PASS in $(( $(date +%s) - started )) s"
