#!/usr/bin/env bash
# Store benchmark: `rendezvous serve` with registrations in memory (--ephemeral), in SQLite with
# --sync full, in SQLite with --sync normal, and in memory with the metrics endpoint on
# (--metrics: what recording metrics costs over the wire), each loaded by the same
# `rendezvous load` in one run (the order rotates by round), then the restart time with RESTART registrations on
# disk (examples/fill_store.rs fills a data directory; the time is from starting `serve` to its
# first printed address).
#
# Settings (environment): MODES ("memory full normal metrics"; memory is the baseline), ROUNDS (3), CLIENTS (1000), NAMESPACES (50: CLIENTS*NAMESPACES
# registrations), DISCOVERERS (1), LIMIT (100), CONCURRENCY (256), RESTART (1000000; 0 skips
# it), OUT (directory for raw reports; a temporary one by default).
# Only 127.0.0.1; every server is stopped at the end. Needs Linux, python3, a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

MODES=${MODES:-memory full normal metrics}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-1000}
NAMESPACES=${NAMESPACES:-50}
DISCOVERERS=${DISCOVERERS:-1}
LIMIT=${LIMIT:-100}
CONCURRENCY=${CONCURRENCY:-256}
RESTART=${RESTART:-1000000}
OUT=${OUT:-$(mktemp -d -t rendezvous-store.XXXXXX)}
mkdir -p "$OUT"
FLAGS="--requests-per-second 0 --max-registrations 2000000 --max-store-bytes 4294967296"

echo "building (release)..." >&2
cargo build --release --quiet --bin rendezvous --example fill_store
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/rendezvous
FILL=$TARGET/release/examples/fill_store

# shellcheck source=benches/lib.sh
source benches/lib.sh

# serve NAME ARGS...: `rendezvous serve` on 127.0.0.1 with FLAGS and ARGS (see start_server).
serve() {
    local name=$1
    shift
    # shellcheck disable=SC2086
    RUST_LOG=warn start_server "$name" "$BIN" serve --listen /ip4/127.0.0.1/tcp/0 $FLAGS "$@"
}

run_one() { # run_one MODE ROUND
    local mode=$1 round=$2
    local dir="$OUT/data-$mode-$round"
    case $mode in
        memory) serve "$mode-$round" --ephemeral ;;
        full) serve "$mode-$round" --data-dir "$dir" --sync full ;;
        normal) serve "$mode-$round" --data-dir "$dir" --sync normal ;;
        metrics) serve "$mode-$round" --ephemeral --metrics 127.0.0.1:0 ;;
        *) echo "unknown mode $mode (expected memory, full, normal or metrics)" >&2; exit 2 ;;
    esac
    echo "round $round, $mode ($SERVER_ADDR)" >&2
    RUST_LOG=warn "$BIN" load --server "$SERVER_ADDR" --server-pid "$SERVER_PID" \
        --clients "$CLIENTS" --namespaces "$NAMESPACES" --discoverers "$DISCOVERERS" \
        --limit "$LIMIT" --ttl 7200 --concurrency "$CONCURRENCY" --json \
        >"$OUT/$mode-$round.json" || echo "  load exited with $?" >&2
    stop_server
    rm -rf "$dir"
}

read -r -a modes <<<"$MODES"
for round in $(seq 1 "$ROUNDS"); do
    # Rotate the order by round so no mode always runs first (or last).
    for i in $(seq 0 $((${#modes[@]} - 1))); do
        run_one "${modes[$(((i + round - 1) % ${#modes[@]}))]}" "$round"
    done
done

RESTART_S=
if ((RESTART > 0)); then
    echo "filling a data directory with $RESTART registrations..." >&2
    "$FILL" "$OUT/data-restart" "$RESTART" >"$OUT/fill.txt"
    cat "$OUT/fill.txt" >&2
    serve restart --data-dir "$OUT/data-restart"
    RESTART_S=$STARTED_S
    stop_server
    rm -rf "$OUT/data-restart"
fi

echo "raw reports: $OUT" >&2
python3 - "$OUT" "$ROUNDS" "$RESTART" "$RESTART_S" $MODES <<'EOF'
import json, os, statistics, sys

out, rounds, restart, restart_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
modes = sys.argv[5:]
names = {"memory": "memory", "full": "sqlite full", "normal": "sqlite normal", "metrics": "memory + metrics"}

def reports(mode):
    found = []
    for r in range(1, rounds + 1):
        try:
            found.append(json.load(open(os.path.join(out, f"{mode}-{r}.json"))))
        except (OSError, ValueError):
            pass
    return found

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

rows = {}
for mode in modes:
    rs = reports(mode)
    reg = [r["phases"]["register"] for r in rs]
    dis = [r["phases"]["discover"] for r in rs]
    rows[mode] = {
        "runs": f'{sum(1 for r in rs if r["exactly_once"])}/{len(rs)}',
        "register_per_s": median(p["per_second"] for p in reg),
        "register_p50_ms": median(p["p50_ms"] for p in reg),
        "register_p99_ms": median(p["p99_ms"] for p in reg),
        "register_cpu_us": median(p.get("server_cpu_us_per_op") for p in reg),
        "page_p50_ms": median(p["p50_ms"] for p in dis),
        "page_cpu_us": median(p.get("server_cpu_us_per_op") for p in dis),
    }

def fmt(v):
    return "n/a" if v is None else f"{v:,.2f}"

def ratio(a, b):
    return None if a is None or not b else a / b

labels = [
    ("runs exactly-once / total", "runs"),
    ("REGISTER throughput (/s)", "register_per_s"),
    ("REGISTER latency p50 (ms)", "register_p50_ms"),
    ("REGISTER latency p99 (ms)", "register_p99_ms"),
    ("server CPU per REGISTER (us)", "register_cpu_us"),
    ("DISCOVER page latency p50 (ms)", "page_p50_ms"),
    ("server CPU per DISCOVER page (us)", "page_cpu_us"),
]
base = modes[0]
others = modes[1:]
def line(cells):
    print("| " + " | ".join(cells) + " |")

line(["metric"] + [names[m] for m in modes] + [f"{m} / {base}" for m in others])
line(["---"] * (1 + len(modes) + len(others)))
for label, key in labels:
    values = [rows[m][key] for m in modes]
    if key == "runs":
        line([label] + values + [""] * len(others))
    else:
        line([label] + [fmt(v) for v in values]
             + [fmt(ratio(rows[m][key], values[0])) for m in others])
if restart:
    print()
    print(f"restart with {restart:,} registrations on disk: {float(restart_s):.2f} s to the first address")
EOF
