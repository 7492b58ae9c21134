#!/usr/bin/env bash
# Tandem vs automerge-repo's Node server, samod and Hocuspocus: one workload, one run.
#
#   bash bench/run.sh            # 1k and 10k nodes × 20 parms; 1, 10, 50 clients at 60 Hz; 3 runs
#   bash bench/run.sh --quick    # 1k nodes; 1 and 10 clients; 1 run
#   bash bench/run.sh --smoke    # a few seconds per peer, tiny scene (keeps the harness working)
#   options: --nodes 1000,10000 --clients 1,10,50 --seconds 5 --runs 3 --joins 3 --hz 60
#            --only tandem,amrepo,samod,hocuspocus --limit SECONDS (per peer run; default 900)
#
# Everything is bound to 127.0.0.1 on ports chosen at runtime; each peer run is bounded by
# `timeout`, which ends the driver and the server it started (same process group); data
# lives in a temp dir removed at exit. Results: bench/results/<stamp>/ (results.jsonl,
# samples.csv, summary.csv, latency.png) and the table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

NODES=1000,10000; CLIENTS=1,10,50; SECONDS_=5; RUNS=3; JOINS=3; HZ=60; PLOT=1
ONLY=tandem,amrepo,samod,hocuspocus; LIMIT=900
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) NODES=1000; CLIENTS=1,10; SECONDS_=3; RUNS=1; JOINS=3; LIMIT=300 ;;
    --smoke) NODES=200; CLIENTS=1,2; SECONDS_=1; RUNS=1; JOINS=1; PLOT=0; LIMIT=60 ;;
    --nodes) NODES=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --seconds) SECONDS_=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --joins) JOINS=$2; shift ;;
    --hz) HZ=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --no-plot) PLOT=0 ;;
    --limit) LIMIT=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

echo "== build (release): tandem, peer-bench, samod-server" >&2
cargo build --release --locked -q -p tandem-server --bin tandem >&2
(cd bench && CARGO_TARGET_DIR=$TARGET cargo build --release --locked -q) >&2
if [ ! -d bench/node_modules/@hocuspocus/server ]; then
  echo "== npm ci (bench)" >&2
  mkdir -p .cache/npm
  # npm 11 can reject its own lock file in `npm ci` (cbor-extract's optional platform
  # packages are missing from the lock); `install --no-save` resolves from the same lock
  # (same versions) and leaves it untouched (as tests/run does).
  npm ci --prefix bench --no-audit --no-fund --cache "$ROOT/.cache/npm" >&2 \
    || npm install --prefix bench --no-save --no-audit --no-fund --cache "$ROOT/.cache/npm" >&2
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/bench/results/$STAMP
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/tandem-peer-bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
{
  echo "date: $STAMP"; echo "host: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "nodes=$NODES clients=$CLIENTS hz=$HZ seconds=$SECONDS_ runs=$RUNS joins=$JOINS"
  echo "node $(node --version); tandem $(git rev-parse --short HEAD)"
} > "$OUT/meta.txt"
cat "$OUT/meta.txt" >&2

COMMON=(--nodes "$NODES" --clients "$CLIENTS" --hz "$HZ" --seconds "$SECONDS_" --joins "$JOINS" --samples "$OUT/samples.csv")
run_peer() { # name run
  local name=$1 run=$2 d="$TMP/$1-$2"
  mkdir -p "$d"
  local rc=0
  case "$name" in
    tandem) timeout -k 5 "$LIMIT" "$TARGET/release/peer-bench" --name tandem --tandem "${COMMON[@]}" \
              -- "$TARGET/release/tandem" serve --listen 127.0.0.1:0 --data "$d" ;;
    amrepo) timeout -k 5 "$LIMIT" "$TARGET/release/peer-bench" --name amrepo "${COMMON[@]}" \
              -- node "$ROOT/bench/amrepo_server.mjs" "$d" ;;
    samod)  timeout -k 5 "$LIMIT" "$TARGET/release/peer-bench" --name samod "${COMMON[@]}" \
              -- "$TARGET/release/samod-server" 0 "$d" ;;
    # 50 editors each hold a Y.Doc replica of the scene (~80 MB each at 10k nodes): more
    # than node's default ~4 GB heap.
    hocuspocus) timeout -k 5 "$LIMIT" node --max-old-space-size=8192 "$ROOT/bench/yjs_bench.mjs" --name hocuspocus "${COMMON[@]}" --data "$d" ;;
  esac > "$TMP/out.jsonl" || rc=$?
  # Tag each result line with the run number.
  sed "s/^{/{\"run\":$run,/" "$TMP/out.jsonl" >> "$OUT/results.jsonl"
  [ $rc -eq 0 ] || echo "!! $name run $run failed (exit $rc); its figures are missing" >&2
  rm -rf "$d"
}
for run in $(seq 1 "$RUNS"); do
  for name in ${ONLY//,/ }; do
    echo "== run $run: $name" >&2
    run_peer "$name" "$run"
  done
done

# The plot uses matplotlib in .cache/venv (the venv tests/run also uses), installed once.
VENV=$ROOT/.cache/venv
if [ "$PLOT" = 1 ] && ! "$VENV/bin/python" -c "import matplotlib" 2>/dev/null; then
  echo "== pip install matplotlib into .cache/venv" >&2
  [ -x "$VENV/bin/python" ] || "$(command -v python3.11 || command -v python3)" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "matplotlib>=3.8,<4" >&2 || PLOT=0
fi
PY=python3
[ -x "$VENV/bin/python" ] && PY=$VENV/bin/python
ARGS=("$OUT")
[ "$PLOT" = 1 ] || ARGS+=(--no-plot)
"$PY" "$ROOT/bench/report.py" "${ARGS[@]}"
echo "results in $OUT" >&2
