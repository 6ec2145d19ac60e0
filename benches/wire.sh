#!/usr/bin/env bash
# Wire benchmark: our `rendezvous serve` against rust-libp2p's rendezvous 0.18 server
# (examples/reference_server.rs, limits raised), the same `rendezvous load` against each,
# alternating, several rounds, at 10k and 100k registrations.
#
#   benches/wire.sh                 # 3 rounds at 10k and 100k
#   ROUNDS=1 SIZES=10000 benches/wire.sh
#
# Environment knobs (defaults in brackets): ROUNDS [3], SIZES ["10000 100000"], CLIENTS [1000]
# (registrations / CLIENTS namespaces per client), DISCOVERERS [2], LIMIT [100] (page size),
# CONCURRENCY [256] (requests in flight), SCOPE [namespaces], VERIFY [20000] (records timed
# for the verification floor), OURS_FLAGS (extra flags for `rendezvous serve`), OUT (directory
# for the raw JSON reports; a temporary one by default), IMPLS ["ours theirs"] (run only one
# side, e.g. to check the script).
#
# Reads each server's CPU time (utime+stime) and memory (VmRSS, VmHWM) from /proc before and
# after each phase (`load --server-pid`). Needs Linux, python3 and a release build.
set -euo pipefail

cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-"10000 100000"}
CLIENTS=${CLIENTS:-1000}
DISCOVERERS=${DISCOVERERS:-2}
LIMIT=${LIMIT:-100}
CONCURRENCY=${CONCURRENCY:-256}
SCOPE=${SCOPE:-namespaces}
VERIFY=${VERIFY:-20000}
TTL=${TTL:-7200}
# Our server's limits for the comparison: no per-peer request rate (rust-libp2p's server has
# none; the default 50/s would refuse the discoverers' paging), totals well above the load
# (its defaults, 1000 per peer and 1,000,000 in all, already are). Everything else default.
OURS_FLAGS=${OURS_FLAGS:-"--ephemeral --requests-per-second 0 --max-registrations 1000000 --max-registrations-per-peer 1000"}
IMPLS=${IMPLS:-"ours theirs"}
OUT=${OUT:-$(mktemp -d -t rendezvous-wire.XXXXXX)}
mkdir -p "$OUT"

echo "building (release)..." >&2
cargo build --release --quiet --bin rendezvous --example reference_server
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/rendezvous
REF=$TARGET/release/examples/reference_server

# shellcheck source=benches/lib.sh
source benches/lib.sh

run_one() { # run_one IMPL SIZE ROUND
    local impl=$1 size=$2 round=$3
    local namespaces=$((size / CLIENTS))
    case $impl in
        ours) RUST_LOG=warn start_server "ours-$size-$round" "$BIN" serve --listen /ip4/127.0.0.1/tcp/0 $OURS_FLAGS ;;
        theirs) RUST_LOG=warn start_server "theirs-$size-$round" "$REF" --listen /ip4/127.0.0.1/tcp/0 ;;
    esac
    local report="$OUT/$impl-$size-$round.json"
    echo "round $round, $size registrations, $impl ($SERVER_ADDR)" >&2
    RUST_LOG=warn "$BIN" load --server "$SERVER_ADDR" --server-pid "$SERVER_PID" \
        --clients "$CLIENTS" --namespaces "$namespaces" --discoverers "$DISCOVERERS" \
        --limit "$LIMIT" --ttl "$TTL" --concurrency "$CONCURRENCY" --scope "$SCOPE" \
        --json >"$report" || echo "  load exited with $? (see $report)" >&2
    stop_server
}

"$BIN" load --verify-bench "$VERIFY" --record-format legacy --json >"$OUT/verify.json"

for size in $SIZES; do
    for round in $(seq 1 "$ROUNDS"); do
        # Alternate who goes first so neither always runs on a warmer (or busier) machine.
        if ((round % 2 == 1)); then order="ours theirs"; else order="theirs ours"; fi
        for impl in $order; do
            if [[ " $IMPLS " == *" $impl "* ]]; then run_one "$impl" "$size" "$round"; fi
        done
    done
done

"$BIN" load --verify-bench "$VERIFY" --record-format legacy --json >"$OUT/verify-after.json"

echo "raw reports: $OUT" >&2
python3 - "$OUT" "$SIZES" "$ROUNDS" <<'EOF'
import json, statistics, sys, os

out, sizes, rounds = sys.argv[1], [int(s) for s in sys.argv[2].split()], int(sys.argv[3])
verify = statistics.mean(
    json.load(open(os.path.join(out, f)))["verify_us_per_record"]
    for f in ("verify.json", "verify-after.json")
)

def load(impl, size):
    reports = []
    for r in range(1, rounds + 1):
        try:
            reports.append(json.load(open(os.path.join(out, f"{impl}-{size}-{r}.json"))))
        except (OSError, ValueError):
            pass
    return reports

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def metrics(reports):
    reg = [r["phases"]["register"] for r in reports]
    dis = [r["phases"]["discover"] for r in reports]
    return {
        "runs": len(reports),
        "exactly_once": sum(1 for r in reports if r["exactly_once"]),
        "register_per_s": median(p["per_second"] for p in reg),
        "register_p50_ms": median(p["p50_ms"] for p in reg),
        "register_p99_ms": median(p["p99_ms"] for p in reg),
        "register_cpu_us": median(p.get("server_cpu_us_per_op") for p in reg),
        "page_p50_ms": median(p["p50_ms"] for p in dis),
        "page_p99_ms": median(p["p99_ms"] for p in dis),
        "discover_cpu_us_per_page": median(p.get("server_cpu_us_per_op") for p in dis),
        "bytes_per_registration": median(r.get("server_bytes_per_registration") for r in reports),
        "peak_rss_mib": median(
            p.get("server_hwm_kib_after", 0) / 1024 for p in dis
        ),
    }

def fmt(v, digits=2):
    return "n/a" if v is None else f"{v:,.{digits}f}"

def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b

print(f"verify one legacy signed peer record: {verify:.2f} us (mean of two runs of the floor)")
print()
rows = [
    ("runs exactly-once / total", None),
    ("register throughput (/s)", "register_per_s"),
    ("register latency p50 (ms)", "register_p50_ms"),
    ("register latency p99 (ms)", "register_p99_ms"),
    ("server CPU per REGISTER (us)", "register_cpu_us"),
    ("  as multiple of one verification", "cpu_x_verify"),
    ("discover page latency p50 (ms)", "page_p50_ms"),
    ("discover page latency p99 (ms)", "page_p99_ms"),
    ("server CPU per DISCOVER page (us)", "discover_cpu_us_per_page"),
    ("server memory per registration (bytes)", "bytes_per_registration"),
    ("server peak RSS (MiB)", "peak_rss_mib"),
]
results = {}
for size in sizes:
    for impl in ("ours", "theirs"):
        m = metrics(load(impl, size))
        m["cpu_x_verify"] = ratio(m["register_cpu_us"], verify)
        results[(impl, size)] = m
header = "| metric | " + " | ".join(
    f"{impl} {size // 1000}k" for size in sizes for impl in ("ours", "theirs")
) + " | " + " | ".join(f"ours/theirs {size // 1000}k" for size in sizes) + " |"
print(header)
print("|" + "---|" * (1 + 3 * len(sizes)))
for label, key in rows:
    cells = []
    for size in sizes:
        for impl in ("ours", "theirs"):
            m = results[(impl, size)]
            cells.append(f"{m['exactly_once']}/{m['runs']}" if key is None else fmt(m[key]))
    for size in sizes:
        if key is None:
            cells.append("")
        else:
            cells.append(fmt(ratio(results[("ours", size)][key], results[("theirs", size)][key])))
    print(f"| {label} | " + " | ".join(cells) + " |")
print()
if len(sizes) >= 2:
    lo, hi = sizes[0], sizes[-1]
    for impl in ("ours", "theirs"):
        growth = ratio(results[(impl, hi)]["page_p50_ms"], results[(impl, lo)]["page_p50_ms"])
        print(f"{impl}: discover page p50 at {hi // 1000}k / at {lo // 1000}k = {fmt(growth)}")
    print()
    hi_ours, hi_theirs = results[("ours", hi)], results[("theirs", hi)]
    def target(name, value, ok):
        verdict = "n/a" if value is None else ("met" if ok(value) else "NOT met")
        print(f"target {name}: {fmt(value)} -> {verdict}")
    target(f"register throughput ours/theirs at {hi // 1000}k >= 3",
           ratio(hi_ours["register_per_s"], hi_theirs["register_per_s"]), lambda v: v >= 3)
    target(f"our page latency {hi // 1000}k/{lo // 1000}k <= 1.5",
           ratio(hi_ours["page_p50_ms"], results[("ours", lo)]["page_p50_ms"]), lambda v: v <= 1.5)
    target(f"memory per registration ours/theirs at {hi // 1000}k <= 1",
           ratio(hi_ours["bytes_per_registration"], hi_theirs["bytes_per_registration"]),
           lambda v: v <= 1)
EOF
