#!/usr/bin/env bash
# One benchmark run for the feedback service (issue: foundation). Not part of CI.
# Builds release binaries, then measures, each server in its own process:
#   (a) a bare tonic server (health Check only, no auth, no storage), 64 concurrent streams;
#       (a') the same server echoing RecordResponse's request message back
#   (b) RecordResponse with auth, 64 concurrent streams, durable (SQLite WAL, synchronous=FULL)
#   (c) bulk import rows/s vs raw multi-row inserts into the same kind of database
#   (d) QueryMetrics p99 over 365 daily buckets at 100k and at 10M stored responses
#   (e) server RSS idle and under load
# (a), (a') and (b) run in alternating rounds (ROUNDS, default 3), with each round's ratios.
# Usage: bench/run.sh [seconds-per-load-test] [large-size]; results go to stdout as JSON lines,
# with a "host" line after each part: the CPU share the hypervisor stole meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
LARGE=${2:-10000000}
cargo build --release --bin cxloop --bin cxloop-load >&2
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

start_cxloop() { # $1 = db file; prints pid and addr
  local log="$WORK/serve-$RANDOM.log"
  CXLOOP_AUTH__DEV_SECRET_FILE="$WORK/dev.secret" RUST_LOG=warn,cxloop=info \
    $BIN/cxloop serve --listen 127.0.0.1:0 --log-format json --database-url "sqlite://$1?mode=rwc" 2>"$log" &
  local pid=$!
  for _ in $(seq 1 200); do
    addr=$(grep -o '"addr":"[^"]*"' "$log" | head -n1 | cut -d'"' -f4 || true)
    [ -n "$addr" ] && break
    sleep 0.05
  done
  echo "$pid http://$addr"
}
token() { CXLOOP_AUTH__DEV_SECRET_FILE="$WORK/dev.secret" $BIN/cxloop token --tenant bench --role admin 2>/dev/null | tail -n1; }

echo "# machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr), $(date -u +%F)"

# What the host took from this machine since the last mark: the share of CPU time stolen by
# the hypervisor and the share busy, of all cores, from /proc/stat. A run on a host whose
# speed drifts shows it here, beside the figures it moved.
STAT_LAST=$(head -n1 /proc/stat)
host_mark() { # $1 = label of the part just measured
  local now; now=$(head -n1 /proc/stat)
  python3 - "$1" "$STAT_LAST" "$now" <<'PY'
import json, sys
a = [int(x) for x in sys.argv[2].split()[1:]]
b = [int(x) for x in sys.argv[3].split()[1:]]
d = [y - x for x, y in zip(a, b)]
total = sum(d[:8]) or 1
idle = d[3] + d[4]
print(json.dumps({"bench": "host", "part": sys.argv[1],
                  "steal_pct": round(100 * d[7] / total, 1),
                  "busy_pct": round(100 * (total - idle) / total, 1)}))
PY
  STAT_LAST=$now
}

# (a), (a') and (b) in ROUNDS alternating rounds (default 3, env ROUNDS): this machine's speed
# drifts by ±15 % within minutes, so each (b) is read against the baselines measured just
# before it, and the ratios' median is the figure to quote.
ROUNDS=${ROUNDS:-3}
$BIN/cxloop-load bare-server > "$WORK/bare.addr" &
BARE=$!
for _ in $(seq 1 100); do [ -s "$WORK/bare.addr" ] && break; sleep 0.05; done
read -r PID ADDR < <(start_cxloop "$WORK/record.db")
TOKEN=$(token)
read -r SURVEY TPS < <($BIN/cxloop-load setup --addr "$ADDR" --token "$TOKEN")
TP=${TPS%%,*}
$BIN/cxloop-load rss --pid "$PID" | sed 's/"rss"/"rss_idle"/'
for ROUND in $(seq 1 "$ROUNDS"); do
  # (a) baseline: gRPC health Check
  $BIN/cxloop-load baseline --addr "http://$(cat "$WORK/bare.addr")" --concurrency 64 --seconds "$SECS" | sed "s/^{/{\"round\":$ROUND,/"
  # (a') the same bare server echoing the message RecordResponse sends: transport and
  # protobuf of that call with nothing of cxloop's (no auth, no span, no storage)
  $BIN/cxloop-load echo --addr "http://$(cat "$WORK/bare.addr")" --concurrency 64 --seconds "$SECS" | sed "s/^{/{\"round\":$ROUND,/"
  # (b) + (e) RecordResponse under load (the bare server sits idle meanwhile)
  $BIN/cxloop-load record --addr "$ADDR" --token "$TOKEN" --survey "$SURVEY" --touchpoint "$TP" --concurrency 64 --seconds "$SECS" --server-pid "$PID" | sed "s/^{/{\"round\":$ROUND,/"
  host_mark "round $ROUND"
done | tee "$WORK/ab.jsonl"
STAT_LAST=$(head -n1 /proc/stat)
kill $BARE
kill "$PID"; wait "$PID" 2>/dev/null || true
python3 - "$WORK/ab.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    if "rps" in r:
        by.setdefault(r["round"], {})[r["bench"]] = r["rps"]
b_a = [v["record"] / v["baseline"] for v in by.values()]
b_e = [v["record"] / v["echo"] for v in by.values()]
print(json.dumps({"bench": "ratio", "rounds": len(by),
                  "b_over_a": [round(x, 3) for x in b_a], "b_over_a_median": round(statistics.median(b_a), 3),
                  "b_over_echo": [round(x, 3) for x in b_e], "b_over_echo_median": round(statistics.median(b_e), 3)}))
PY

# (c) bulk import vs raw inserts, and (d) metrics at 100k then LARGE
read -r PID ADDR < <(start_cxloop "$WORK/metrics.db")
TOKEN=$(token)
read -r SURVEY TPS < <($BIN/cxloop-load setup --addr "$ADDR" --token "$TOKEN")
TP=${TPS%%,*}
$BIN/cxloop-load import --addr "$ADDR" --token "$TOKEN" --survey "$SURVEY" --touchpoints "$TPS" --rows 100000 --prefix small
$BIN/cxloop-load import --addr "$ADDR" --token "$TOKEN" --survey "$SURVEY" --touchpoints "$TPS" --rows 100000 --prefix spread --order spread | sed 's/"import"/"import_spread"/'
$BIN/cxloop-load raw-insert --database-url "sqlite://$WORK/raw.db?mode=rwc" --rows 100000
$BIN/cxloop-load metrics --addr "$ADDR" --token "$TOKEN" --survey "$SURVEY" --touchpoint "$TP" | sed 's/"metrics"/"metrics_100k"/'
host_mark "imports and metrics at 100k"
$BIN/cxloop-load import --addr "$ADDR" --token "$TOKEN" --survey "$SURVEY" --touchpoints "$TPS" --rows $((LARGE - 200000)) --prefix large --streams 2 --batch 10000
$BIN/cxloop-load rss --pid "$PID" | sed 's/"rss"/"rss_after_import"/'
$BIN/cxloop-load metrics --addr "$ADDR" --token "$TOKEN" --survey "$SURVEY" --touchpoint "$TP" | sed 's/"metrics"/"metrics_large"/'
host_mark "large import and its metrics"
ls -l "$WORK"/metrics.db* | awk '{print "# " $5 " bytes " $9}'
kill "$PID"; wait "$PID" 2>/dev/null || true

# (f) journeys: the scorecard of one owner of 50 touchpoints (one NPS KPI each), 365 daily
# buckets, over LARGE stored responses spread across those touchpoints.
read -r PID ADDR < <(start_cxloop "$WORK/scorecard.db")
TOKEN=$(token)
read -r SURVEY TPS < <($BIN/cxloop-load setup --addr "$ADDR" --token "$TOKEN" --touchpoints 50)
$BIN/cxloop-load import --addr "$ADDR" --token "$TOKEN" --survey "$SURVEY" --touchpoints "$TPS" --rows "$LARGE" --prefix sc --streams 2 --batch 10000 | sed 's/"import"/"import_scorecard_data"/'
$BIN/cxloop-load scorecard --addr "$ADDR" --token "$TOKEN" --survey "$SURVEY" --touchpoints "$TPS"
host_mark "scorecard import and scorecards"
$BIN/cxloop-load rss --pid "$PID" | sed 's/"rss"/"rss_after_scorecards"/'
kill "$PID"; wait "$PID" 2>/dev/null || true
