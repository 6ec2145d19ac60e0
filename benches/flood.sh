#!/usr/bin/env bash
# Flood benchmark: each hostile load against `rendezvous serve` (default flags, 127.0.0.1),
# with a legitimate client registering and discovering alongside (`rendezvous flood`).
# Every flood is bounded by COUNT and SECONDS and stops by itself; a fresh server per flood.
# The flood plays another machine: its own process, every connection from 127.0.0.2; the
# legitimate client connects from 127.0.0.1.
#
#   benches/flood.sh                          # every kind, 30 s each
#   KINDS="idle stall" SECONDS_EACH=10 benches/flood.sh
#   TRANSPORT=ws benches/flood.sh             # over WebSocket: serve listens on /ws only
#
# Knobs (defaults in brackets): KINDS ["idle handshake stall churn register discover"],
# SECONDS_EACH [30], COUNT_idle [3000], COUNT_handshake [3000], COUNT_stall [500], COUNT_churn [50], COUNT_register [300],
# COUNT_discover [50], MAX_DIALING (hostile dials in flight at once; all at once by default),
# TRANSPORT [tcp] (tcp, or ws: the server listens on WebSocket only and
# the flood and the legitimate client dial /ws), SERVE_FLAGS (extra flags for serve; none by default), PROFILE [release]
# (debug to skip the release build), OUT (directory for the JSON reports; temporary by default).
#
# Prints one markdown row per flood: the server's RSS before and at its peak, its peak VmData,
# its peak of open file descriptors (about one per connection), its CPU seconds, and the legitimate client's requests, failures, worst latency and the
# registrations it made before the flood that were still there after. Exit status 1 when the
# legitimate client failed or lost a registration in any flood. Needs Linux (/proc).
set -euo pipefail

cd "$(dirname "$0")/.."

KINDS=${KINDS:-"idle handshake stall churn register discover"}
SECONDS_EACH=${SECONDS_EACH:-30}
PROFILE=${PROFILE:-release}
SERVE_FLAGS=${SERVE_FLAGS:-}
MAX_DIALING=${MAX_DIALING:-}
TRANSPORT=${TRANSPORT:-tcp}
case "$TRANSPORT" in
    tcp) LISTEN=/ip4/127.0.0.1/tcp/0 ;;
    ws) LISTEN=/ip4/127.0.0.1/tcp/0/ws ;;
    *) echo "TRANSPORT=$TRANSPORT: expected tcp or ws" >&2; exit 2 ;;
esac
OUT=${OUT:-$(mktemp -d -t rendezvous-flood.XXXXXX)}
mkdir -p "$OUT"
declare -A COUNT=([idle]=${COUNT_idle:-3000} [handshake]=${COUNT_handshake:-3000} [stall]=${COUNT_stall:-500} [churn]=${COUNT_churn:-50}
    [register]=${COUNT_register:-300} [discover]=${COUNT_discover:-50})

TARGET=${CARGO_TARGET_DIR:-target}
if [[ "$PROFILE" == release ]]; then
    echo "building (release)..." >&2
    cargo build --release --quiet --bin rendezvous
fi
BIN=$TARGET/$PROFILE/rendezvous

# Each flood opens thousands of sockets: the flood's process and the server each need one file
# descriptor per connection, so a count over the hard limit is lowered to fit (said on stderr).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
limit=$(ulimit -n)
for kind in "${!COUNT[@]}"; do
    if [[ "$limit" != unlimited ]] && ((COUNT[$kind] > limit - 400)); then
        echo "COUNT_$kind=${COUNT[$kind]} does not fit the open-file limit ($limit); using $((limit - 400))" >&2
        COUNT[$kind]=$((limit - 400))
    fi
done

# shellcheck source=benches/lib.sh
source benches/lib.sh

echo "| flood | count | s | flood connected (all in, s) | server RSS MiB before / peak | VmData MiB peak | server fds peak | server CPU s | legit requests / failures | legit worst ms | newcomer rounds / failures | newcomer worst ms | kept |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
status=0
for kind in $KINDS; do
    # shellcheck disable=SC2086
    RUST_LOG=warn start_server "serve-$kind" \
        "$BIN" serve --ephemeral --listen "$LISTEN" $SERVE_FLAGS
    if RUST_LOG=off "$BIN" flood --server "$SERVER_ADDR" --server-pid "$SERVER_PID" --kind "$kind" \
        --count "${COUNT[$kind]}" --seconds "$SECONDS_EACH" ${MAX_DIALING:+--max-dialing "$MAX_DIALING"} \
        >"$OUT/$kind.json" \
        2>"$OUT/$kind.stderr"; then :; else status=1; fi
    stop_server
    python3 - "$OUT/$kind.json" "$kind" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except ValueError:
    print(f"| {sys.argv[2]} | no report: the flood command failed (see {sys.argv[1][:-5]}.stderr) |")
    sys.exit(0)
held = r.get("flood_connected")
all_in = r.get("flood_all_connected_s")
held = "-" if r["kind"] == "handshake" else f"{held} ({all_in:.1f})" if all_in is not None else f"{held}"
print(f"| {r['kind']} | {r['count']} | {r['seconds']} | {held} | {r['server_rss_mib_before']} / "
      f"{r['server_rss_mib_peak']} | {r['server_vmdata_mib_peak']} | {r['server_fds_peak']} | {r['server_cpu_seconds']:.1f} | "
      f"{r['legit_requests']} / {r['legit_failures']} | {r['legit_worst_ms']} | "
      + (f"{r['legit_newcomer_rounds']} / {r['legit_newcomer_failures']} | {r['legit_newcomer_worst_ms']} | "
         if r.get('legit_newcomer_rounds') else "- | - | ")
      + f"{r['legit_registrations_kept']} |")
if r.get("legit_first_failure"):
    print(f"<!-- {r['kind']}: first legit failure: {r['legit_first_failure']} -->")
PY
done
echo "reports in $OUT" >&2
exit $status
