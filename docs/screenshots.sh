#!/usr/bin/env bash
# Regenerate the README pictures docs/asset_graph.png, docs/asset_plots.png and docs/asset_checks.png:
# materialize the sample into a throw-away Dagster instance, start dagster-webserver on a free
# port, and photograph the UI with headless Chromium (driven by playwright-core).
#
# Needs: `make install`; Debian's chromium (`apt-get install -y chromium`); node and npm
# (playwright-core is installed once into $PLAYWRIGHT_DIR, default ~/.cache/hipages-screenshots).
# Usage: docs/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}   # BIN=/path/to/venv/bin for a worktree without its own .venv
PLAYWRIGHT_DIR=${PLAYWRIGHT_DIR:-$HOME/.cache/hipages-screenshots}
work=$(mktemp -d)
pid=
cleanup() {  # stop the webserver and its code server (one process group), then remove the files
  if [ -n "$pid" ]; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 40); do
      ps -o stat= -g "$pid" 2>/dev/null | grep -qv Z || break   # only zombies (or nothing) left
      sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

export DAGSTER_HOME=$work/dagster_home HIPAGES_OUTPUT_DIR=$work/out HIPAGES_SOURCE=data/source_event_data.json
mkdir -p "$DAGSTER_HOME"
cp dagster_home/dagster.yaml "$DAGSTER_HOME/"

echo "materializing the sample into $DAGSTER_HOME ..."
"$BIN/hipages-pipeline" run --source "$HIPAGES_SOURCE" --output-dir "$HIPAGES_OUTPUT_DIR" > "$work/run.log" 2>&1 \
  || { cat "$work/run.log"; exit 1; }

port=$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# (Should SIGTERM be ignored - a background job inherits SIGINT ignored and dagster maps SIGTERM
# to SIGINT's handler - cleanup falls back to SIGKILL.)
setsid "$BIN/dagster-webserver" -w workspace.yaml -h 127.0.0.1 -p "$port" > "$work/webserver.log" 2>&1 &
pid=$!
url=http://127.0.0.1:$port
echo "waiting for $url ..."
for _ in $(seq 240); do
  if curl -s -X POST -H 'Content-Type: application/json' "$url/graphql" \
      -d '{"query":"{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"}' \
      | grep -q '"LOADED"'; then
    break
  fi
  sleep 0.5
done

if [ ! -d "$PLAYWRIGHT_DIR/node_modules/playwright-core" ]; then
  npm install --silent --no-audit --no-fund --prefix "$PLAYWRIGHT_DIR" playwright-core@1.65.1
fi
PLAYWRIGHT_DIR=$PLAYWRIGHT_DIR node docs/screenshots.cjs "$url" docs
echo "wrote docs/asset_graph.png docs/asset_plots.png docs/asset_checks.png"
