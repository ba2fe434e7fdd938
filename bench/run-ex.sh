#!/usr/bin/env bash
# The employee-experience benchmark (issue 5). Not part of CI. Builds release binaries, starts
# a server on a temporary SQLite database and runs `cxloop-load ex`: an organisation of
# EMPLOYEES people in UNITS units with three demographic attributes, two cycles answered by
# ~85 % of the people with their own tokens (answer submission rate), then GetResultsTree
# p50/p99 with every anonymity rule applied (tree, one attribute breakdown, change against the
# previous cycle). Results go to stdout as JSON lines.
# Usage: bench/run-ex.sh [employees] [units] [concurrency]
set -euo pipefail
cd "$(dirname "$0")/.."
EMPLOYEES=${1:-20000}
UNITS=${2:-500}
CONCURRENCY=${3:-64}
cargo build --release --bin cxloop --bin cxloop-load >&2
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
log="$WORK/serve.log"
CXLOOP_AUTH__DEV_SECRET_FILE="$WORK/dev.secret" RUST_LOG=warn,cxloop=info \
  $BIN/cxloop serve --listen 127.0.0.1:0 --log-format json --database-url "sqlite://$WORK/ex.db?mode=rwc" 2>"$log" &
PID=$!
for _ in $(seq 1 200); do
  addr=$(grep -o '"addr":"[^"]*"' "$log" | head -n1 | cut -d'"' -f4 || true)
  [ -n "$addr" ] && break
  sleep 0.05
done
TOKEN=$(CXLOOP_AUTH__DEV_SECRET_FILE="$WORK/dev.secret" $BIN/cxloop token --tenant bench --role admin 2>/dev/null | tail -n1)
echo "# machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr), $(date -u +%F)"
$BIN/cxloop-load ex --addr "http://$addr" --token "$TOKEN" --secret-file "$WORK/dev.secret" \
  --employees "$EMPLOYEES" --units "$UNITS" --concurrency "$CONCURRENCY"
$BIN/cxloop-load rss --pid "$PID" | sed 's/"rss"/"rss_after_ex"/'
ls -l "$WORK"/ex.db* | awk '{print "# " $5 " bytes " $9}'
kill "$PID"; wait "$PID" 2>/dev/null || true
