#!/usr/bin/env bash
# Run the gateway on examples/quickstart.yaml: builds the release binaries if needed, starts the
# HTTP fixture backend on 127.0.0.1:4490, then runs vmcp in the foreground on
# http://127.0.0.1:4483/mcp until Ctrl-C / SIGTERM (the fixture is stopped with it).
# Extra arguments go to `vmcp serve` (e.g. --port 5000).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
BIN="$TARGET/release"

cargo build --release --workspace   # quick no-op when up to date

CONFIG=examples/quickstart.yaml
TMP="$(mktemp -d -t vmcp-quickstart.XXXXXX)"
if [[ "$BIN" != "$ROOT/target/release" ]]; then
  # quickstart.yaml names target/release/vmcp-fixture; point it at the real target dir.
  sed "s#target/release/vmcp-fixture#$BIN/vmcp-fixture#" "$CONFIG" >"$TMP/quickstart.yaml"
  CONFIG="$TMP/quickstart.yaml"
fi

fixture_pid=""
vmcp_pid=""
cleanup() {
  [[ -n "$vmcp_pid" ]] && kill -TERM "$vmcp_pid" 2>/dev/null && wait "$vmcp_pid" 2>/dev/null
  [[ -n "$fixture_pid" ]] && kill -TERM "$fixture_pid" 2>/dev/null && wait "$fixture_pid" 2>/dev/null
  rm -rf "$TMP"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$BIN/vmcp-fixture" http --port 4490 --name remote >"$TMP/fixture.out" 2>"$TMP/fixture.err" &
fixture_pid=$!
deadline=$((SECONDS + 30))
until grep -q '^listening on ' "$TMP/fixture.out"; do
  if ! kill -0 "$fixture_pid" 2>/dev/null || ((SECONDS >= deadline)); then
    echo "quickstart: the HTTP fixture did not start on 127.0.0.1:4490:" >&2
    cat "$TMP/fixture.err" >&2
    exit 1
  fi
  sleep 0.1
done
echo "quickstart: fixture backend $(head -n1 "$TMP/fixture.out")"

"$BIN/vmcp" serve --config "$CONFIG" "$@" &
vmcp_pid=$!
set +e
wait "$vmcp_pid"
rc=$?
set -e
vmcp_pid=""
exit "$rc"
