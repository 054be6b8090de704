#!/usr/bin/env bash
# Runs the official MCP conformance suite's server scenarios directly against
# vmcp-fixture (no gateway in between), once per requirement set.
#
# Usage: conformance-direct.sh [REQUIREMENTS...]   (default: 2025-11-25 2026-07-28)
#
# Environment:
#   FIXTURE_BIN      vmcp-fixture binary (default: $CARGO_TARGET_DIR or ./target, release then debug)
#   NODE             node >= 22 (default: node on PATH)
#   CONFORMANCE_JS   @modelcontextprotocol/conformance dist/index.js
#                    (default: /work/fixture-tools/node_modules/@modelcontextprotocol/conformance/dist/index.js)
#   OUTPUT_DIR       where per-scenario results go (default: a temp dir)
#   FIXTURE_ARGS     extra arguments for `vmcp-fixture http` (e.g. --json-response)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
target="${CARGO_TARGET_DIR:-$here/../../target}"
if [[ -z "${FIXTURE_BIN:-}" ]]; then
    for candidate in "$target/release/vmcp-fixture" "$target/debug/vmcp-fixture"; do
        if [[ -x "$candidate" ]]; then FIXTURE_BIN="$candidate"; break; fi
    done
fi
: "${FIXTURE_BIN:?build vmcp-fixture or set FIXTURE_BIN}"
NODE="${NODE:-node}"
CONFORMANCE_JS="${CONFORMANCE_JS:-/work/fixture-tools/node_modules/@modelcontextprotocol/conformance/dist/index.js}"
OUTPUT_DIR="${OUTPUT_DIR:-$(mktemp -d -t fixture-conformance.XXXXXX)}"
requirements=("$@")
[[ ${#requirements[@]} -gt 0 ]] || requirements=(2025-11-25 2026-07-28)

mkdir -p "$OUTPUT_DIR"
log="$OUTPUT_DIR/fixture.log"
out="$OUTPUT_DIR/fixture.stdout"
# shellcheck disable=SC2086 # FIXTURE_ARGS is deliberately word-split.
"$FIXTURE_BIN" http --port 0 ${FIXTURE_ARGS:-} >"$out" 2>"$log" &
fixture_pid=$!
trap 'kill "$fixture_pid" 2>/dev/null || true' EXIT

url=""
for _ in $(seq 1 100); do
    url="$(sed -n 's/^listening on //p' "$out" | head -n1)"
    [[ -n "$url" ]] && break
    kill -0 "$fixture_pid" 2>/dev/null || { cat "$log" >&2; echo "fixture exited" >&2; exit 1; }
    sleep 0.1
done
[[ -n "$url" ]] || { echo "fixture did not report its address" >&2; exit 1; }
echo "fixture at $url (results in $OUTPUT_DIR)"

status=0
for req in "${requirements[@]}"; do
    echo "=== requirements $req ==="
    "$NODE" "$CONFORMANCE_JS" server --url "$url" --requirements "$req" \
        --output-dir "$OUTPUT_DIR/$req" | tee "$OUTPUT_DIR/summary-$req.txt" || status=1
done
exit "$status"
