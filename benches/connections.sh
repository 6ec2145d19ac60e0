#!/usr/bin/env bash
# Connections benchmark: what a connection costs, and whether a burst of dials gets in.
#
# 1. N clients, each with its own identity, connection and one registration, against our server
#    (`serve --ephemeral`, default flags) and rust-libp2p's (examples/reference_server.rs) in the
#    same run: server RSS per connection, server CPU per connection (handshake and set-up), and
#    the time to connect all N (`rendezvous load --max-dialing MAX_DIALING`: 20,000 handshakes
#    take about 40 s of CPU on two cores, client and server together, so dialing them all at
#    once would only measure the clients' 10 s dial timeout; the burst is part 2).
# 2. A dial burst: BURST clients dial at once and register, against `serve` with default flags and
#    with the handshake queue raised (`--max-pending-incoming 10000`): how many connected, and the
#    time until the last one registered.
#
#   benches/connections.sh                     # N=20000 (capped by the open-file limit), BURST=2000
#   N=5000 BURST=500 benches/connections.sh
#
# Knobs: N [20000], MAX_DIALING [500], BURST [2000; 0 skips part 2], IMPLS ["ours theirs"; an
# entry NAME=PATH is another build of `rendezvous` serving as NAME, compared with ours, such as
# one with another allocator], WARMUP [1: first connect N clients to a throwaway `serve`, not
# reported; 0 skips it], OUT (reports; temporary by default).
# The warm-up is there because the first server of a run paid 80-120 us more per connection
# than the same server later in the run (whichever it was, ours or rust-libp2p's): the kernel's
# socket and TCP caches and the load client's first run on a quiet machine.
# Traffic stays on 127.0.0.1; every run is bounded by its client count and ends by itself.
# Loopback source ports run out near 28,000 per destination, and the load process and the
# server each need a file descriptor per connection: N is lowered to fit the hard open-file
# limit (said on stderr).
set -euo pipefail

cd "$(dirname "$0")/.."

N=${N:-20000}
BURST=${BURST:-2000}
MAX_DIALING=${MAX_DIALING:-500}
IMPLS=${IMPLS:-"ours theirs"}
OUT=${OUT:-$(mktemp -d -t rendezvous-connections.XXXXXX)}
mkdir -p "$OUT"

hard=$(ulimit -Hn)
ulimit -n "$hard"
if [[ "$hard" != unlimited ]] && ((N > hard - 400)); then
    echo "N=$N does not fit the open-file hard limit ($hard); using N=$((hard - 400))" >&2
    N=$((hard - 400))
fi

echo "building (release)..." >&2
cargo build --release --quiet --bin rendezvous --example reference_server
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/rendezvous
REF=$TARGET/release/examples/reference_server

# shellcheck source=benches/lib.sh
source benches/lib.sh

if [[ ${WARMUP:-1} == 1 ]]; then
    RUST_LOG=warn start_server "warmup" "$BIN" serve --ephemeral --listen /ip4/127.0.0.1/tcp/0
    echo "warm-up: $N connections, not reported ($SERVER_ADDR)" >&2
    RUST_LOG=off "$BIN" load --server "$SERVER_ADDR" --server-pid "$SERVER_PID" \
        --clients "$N" --namespaces 1 --discoverers 1 --ttl 7200 --max-dialing "$MAX_DIALING" --json \
        >"$OUT/warmup.json" || echo "  load exited with $? (see $OUT/warmup.json)" >&2
    stop_server
fi

names=
for impl in $IMPLS; do
    case $impl in
        ours) RUST_LOG=warn start_server "conn-ours" "$BIN" serve --ephemeral --listen /ip4/127.0.0.1/tcp/0 ;;
        theirs) RUST_LOG=warn start_server "conn-theirs" "$REF" --listen /ip4/127.0.0.1/tcp/0 ;;
        *=*) RUST_LOG=warn start_server "conn-${impl%%=*}" "${impl#*=}" serve --ephemeral --listen /ip4/127.0.0.1/tcp/0 ;;
        *) echo "IMPLS: $impl is not ours, theirs or NAME=PATH" >&2; exit 2 ;;
    esac
    impl=${impl%%=*}
    names="$names $impl"
    echo "$N connections, $impl ($SERVER_ADDR)" >&2
    RUST_LOG=off "$BIN" load --server "$SERVER_ADDR" --server-pid "$SERVER_PID" \
        --clients "$N" --namespaces 1 --discoverers 1 --ttl 7200 --max-dialing "$MAX_DIALING" --json \
        >"$OUT/conn-$impl.json" || echo "  load exited with $? (see $OUT/conn-$impl.json)" >&2
    stop_server
done

variants="default raised"
((BURST > 0)) || variants=
for variant in $variants; do
    flags=()
    [[ $variant == raised ]] && flags=(--max-pending-incoming 10000)
    RUST_LOG=warn start_server "burst-$variant" "$BIN" serve --ephemeral --listen /ip4/127.0.0.1/tcp/0 "${flags[@]}"
    echo "burst of $BURST dials, $variant ($SERVER_ADDR)" >&2
    RUST_LOG=off "$BIN" load --server "$SERVER_ADDR" --server-pid "$SERVER_PID" \
        --clients "$BURST" --namespaces 1 --discoverers 1 --ttl 7200 --json \
        >"$OUT/burst-$variant.json" || echo "  load exited with $? (see $OUT/burst-$variant.json)" >&2
    stop_server
done

echo "raw reports: $OUT" >&2
python3 - "$OUT" "$N" "$BURST" "$names" "$MAX_DIALING" <<'PY'
import json, os, sys

out, n, burst, impls, dialing = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(), sys.argv[5]

def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except (OSError, ValueError):
        return None

def connect_figures(r):
    c = r["phases"]["connect"]
    base = r.get("server_rss_kib_baseline") or 0
    return {
        "connected": c["ops"],
        "errors": c["errors"],
        "seconds": c["seconds"],
        "rss_kib": (c.get("server_rss_kib_after", 0) - base) / max(c["ops"], 1),
        "cpu_us": c.get("server_cpu_us_per_op"),
        "registered": r["registered"],
        "to_last_registered": c["seconds"] + r["phases"]["register"]["seconds"],
    }

rows = {impl: load(f"conn-{impl}.json") for impl in impls}
print(f"{n} connections, one registration each ({dialing} dialing at a time):")
print()
print("| server | connected / errors | time to connect all (s) | server RSS per connection (KiB) | server CPU per connection (us) |")
print("|---|---|---|---|---|")
figures = {}
for impl, r in rows.items():
    if r is None:
        print(f"| {impl} | no report |")
        continue
    f = figures[impl] = connect_figures(r)
    print(f"| {impl} | {f['connected']} / {f['errors']} | {f['seconds']:.1f} | {f['rss_kib']:.1f} | {f['cpu_us'] or 0:.0f} |")
def ratio(a, b):
    x, y = figures[a], figures[b]
    print(f"| {a} / {b} | | {x['seconds'] / y['seconds']:.2f}x | {x['rss_kib'] / y['rss_kib']:.2f}x | {(x['cpu_us'] or 0) / (y['cpu_us'] or 1):.2f}x |")
if "ours" in figures and "theirs" in figures:
    ratio("ours", "theirs")
for other in figures:
    if other not in ("ours", "theirs") and "ours" in figures:
        ratio(other, "ours")
if burst == 0:
    sys.exit(0)
print()
print(f"A burst of {burst} dials at once:")
print()
print("| serve | connected / errors | registered | time until the last registered (s) |")
print("|---|---|---|---|")
for variant, label in (("default", "default flags"), ("raised", "--max-pending-incoming 10000")):
    r = load(f"burst-{variant}.json")
    if r is None:
        print(f"| {label} | no report |")
        continue
    f = connect_figures(r)
    print(f"| {label} | {f['connected']} / {f['errors']} | {f['registered']} | {f['to_last_registered']:.2f} |")
PY
