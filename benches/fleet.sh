#!/usr/bin/env bash
# Fleet benchmark: `rendezvous load` against one server in memory, one on SQLite (`--sync full`),
# one server on Redis, and two servers on one Redis (two loads at once, half the clients each, each against its own server).
# Reports REGISTER throughput, the servers' CPU per REGISTER and per DISCOVER page (from
# `load --server-pid`), and redis-server's CPU per REGISTER and per DISCOVER page (utime+stime
# from /proc/PID/stat).
#
#   benches/fleet.sh                       # 100k registrations
#   SIZE=10000 benches/fleet.sh
#
# Redis CPU is measured over whole runs, so it is split between REGISTER and DISCOVER by running
# each setup twice, with 1 and with 3 discoverers: the difference is what the extra pages cost
# (per page = dR / dPages), the rest of the 1-discoverer run is the REGISTERs'.
#
# Knobs [defaults]: SETUPS [memory sqlite redis redis2], SIZE [100000], CLIENTS [1000], LIMIT [100],
# CONCURRENCY [256], OUT (raw JSON reports; a temporary directory by default). Needs Linux,
# python3 and redis-server. Starts its own redis-server on a free loopback port in a temporary
# directory, and stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

SETUPS=${SETUPS:-memory sqlite redis redis2}
SIZE=${SIZE:-100000}
CLIENTS=${CLIENTS:-1000}
LIMIT=${LIMIT:-100}
CONCURRENCY=${CONCURRENCY:-256}
OUT=${OUT:-$(mktemp -d -t rendezvous-fleet.XXXXXX)}
mkdir -p "$OUT"
NAMESPACES=$((SIZE / CLIENTS))
FLAGS="--requests-per-second 0 --max-registrations 2000000 --max-registrations-per-peer 1000 --max-store-bytes 4294967296 --keep-on-disconnect"

echo "building (release, feature redis)..." >&2
cargo build --release --quiet --features redis --bin rendezvous
BIN=${CARGO_TARGET_DIR:-target}/release/rendezvous
TICKS=$(getconf CLK_TCK)

PIDS=()
REDIS_PID=
cleanup() {
    for pid in "${PIDS[@]}" $REDIS_PID; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --dir "$OUT" >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done
URL="redis://127.0.0.1:$REDIS_PORT/0"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# start_server NAME ARGS...: starts `rendezvous serve` and sets ADDR and PID.
start_server() {
    local name=$1
    shift
    # shellcheck disable=SC2086
    "$BIN" serve --listen /ip4/127.0.0.1/tcp/0 $FLAGS "$@" >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" &
    PID=$!
    PIDS+=("$PID")
    ADDR=
    for _ in $(seq 1 300); do
        ADDR=$(head -n1 "$OUT/$name.stdout" 2>/dev/null || true)
        [[ -n "$ADDR" ]] && return 0
        sleep 0.1
    done
    echo "$name printed no address" >&2
    exit 1
}

stop_servers() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}

# run SETUP DISCOVERERS: one run of a setup (memory, sqlite, redis, redis2); writes
# $OUT/SETUP-dDISCOVERERS-{a,b}.json and $OUT/SETUP-dDISCOVERERS.redis (Redis CPU ticks).
run() {
    local setup=$1 d=$2 clients=$CLIENTS
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    case $setup in
        memory) start_server "$setup-d$d-a" --ephemeral; local a=$ADDR pa=$PID ;;
        sqlite) start_server "$setup-d$d-a" --data-dir "$OUT/$setup-d$d.data" --sync full
            local a=$ADDR pa=$PID ;;
        redis) start_server "$setup-d$d-a" --store "$URL"; local a=$ADDR pa=$PID ;;
        redis2)
            start_server "$setup-d$d-a" --store "$URL"; local a=$ADDR pa=$PID
            start_server "$setup-d$d-b" --store "$URL"; local b=$ADDR pb=$PID
            clients=$((CLIENTS / 2)) ;;
    esac
    local load=(--clients "$clients" --namespaces "$NAMESPACES" --discoverers "$d" --limit "$LIMIT"
        --concurrency "$CONCURRENCY" --ttl 7200 --json)
    local r0 r1
    r0=$(cpu_ticks "$REDIS_PID")
    "$BIN" load --server "$a" --server-pid "$pa" "${load[@]}" >"$OUT/$setup-d$d-a.json" &
    local la=$!
    if [[ $setup == redis2 ]]; then
        "$BIN" load --server "$b" --server-pid "$pb" "${load[@]}" >"$OUT/$setup-d$d-b.json" &
        wait $!
    fi
    wait $la
    r1=$(cpu_ticks "$REDIS_PID")
    echo $((r1 - r0)) >"$OUT/$setup-d$d.redis"
    stop_servers
}

for setup in $SETUPS; do
    for d in 1 3; do
        echo "run: $setup with $d discoverer(s), $SIZE registrations" >&2
        run "$setup" "$d"
    done
done

python3 - "$OUT" "$TICKS" "$SIZE" $SETUPS <<'EOF'
import json, sys, glob, os
out, ticks, size, setups = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]

def loads(setup, d):
    return [json.load(open(p)) for p in sorted(glob.glob(f"{out}/{setup}-d{d}-*.json"))]

def redis_s(setup, d):
    return int(open(f"{out}/{setup}-d{d}.redis").read()) / ticks

rows = {}
for setup in setups:
    one, three = loads(setup, 1), loads(setup, 3)
    reg = [r["phases"]["register"] for r in one]
    registered = sum(p["ops"] for p in reg)
    throughput = registered / max(p["seconds"] for p in reg)
    srv_reg = sum(p["server_cpu_seconds"] for p in reg) * 1e6 / registered
    disc = [r["phases"]["discover"] for r in one]
    pages1 = sum(p["ops"] for p in disc)
    srv_page = sum(p["server_cpu_seconds"] for p in disc) * 1e6 / pages1
    pages3 = sum(r["phases"]["discover"]["ops"] for r in three)
    exact = all(r["exactly_once"] for r in one + three)
    row = dict(registered=registered, throughput=throughput, srv_reg=srv_reg, srv_page=srv_page,
               exact=exact, pages1=pages1, pages3=pages3)
    if setup.startswith("redis"):
        r1, r3 = redis_s(setup, 1), redis_s(setup, 3)
        per_page = (r3 - r1) * 1e6 / max(pages3 - pages1, 1)
        row["redis_page"] = per_page
        row["redis_reg"] = (r1 * 1e6 - per_page * pages1) / registered
        row["redis_s"] = (r1, r3)
    rows[setup] = row

base = rows.get("memory") or next(iter(rows.values()))
print(f"{size} registrations; per-op CPU in microseconds; ratios against {'memory' if 'memory' in rows else setups[0]}")
print("| setup | REGISTER/s | vs memory | server CPU / REGISTER | server CPU / page | vs memory | Redis CPU / REGISTER | Redis CPU / page | exactly once |")
print("|---|---|---|---|---|---|---|---|---|")
for setup, row in rows.items():
    rr = f"{row['redis_reg']:.1f}" if "redis_reg" in row else "-"
    rp = f"{row['redis_page']:.0f}" if "redis_page" in row else "-"
    print(f"| {setup} | {row['throughput']:.0f} | {row['throughput']/base['throughput']:.2f}x | "
          f"{row['srv_reg']:.1f} | {row['srv_page']:.0f} | {row['srv_page']/base['srv_page']:.2f}x | "
          f"{rr} | {rp} | {row['exact']} |")
print(json.dumps(rows), file=open(os.path.join(out, "summary.json"), "w"))
EOF
echo "raw reports: $OUT" >&2
