# Shell functions shared by the benchmark scripts (`source benches/lib.sh` after setting OUT):
# one server process at a time on 127.0.0.1, started, waited for, and stopped on exit.

SERVER_PID=

# stop_server: stops the running server, if any (also on exit, by the trap below).
stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
trap stop_server EXIT

# start_server NAME COMMAND...: starts a server (its output in $OUT/NAME.stdout and .stderr),
# waits up to 60 s for its /p2p/ address; sets SERVER_PID, SERVER_ADDR and STARTED_S (seconds
# from the start to the printed address).
start_server() {
    local name=$1
    shift
    local t0
    t0=$(date +%s.%N)
    "$@" >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" &
    SERVER_PID=$!
    SERVER_ADDR=
    for _ in $(seq 1 6000); do
        SERVER_ADDR=$(grep -ohE '/ip4/127\.0\.0\.1/tcp/[0-9]+(/ws)?/p2p/[1-9A-HJ-NP-Za-km-z]+' \
            "$OUT/$name.stdout" "$OUT/$name.stderr" 2>/dev/null | head -n1 || true)
        if [[ -n "$SERVER_ADDR" ]]; then
            STARTED_S=$(echo "$(date +%s.%N) - $t0" | bc)
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "$name exited before listening:" >&2
            cat "$OUT/$name.stderr" >&2
            exit 1
        fi
        sleep 0.01
    done
    echo "$name printed no listen address in 60 s" >&2
    exit 1
}
