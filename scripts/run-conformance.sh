#!/usr/bin/env bash
# Run the MCP server conformance suite (@modelcontextprotocol/conformance, installed
# by scripts/install-test-tools.sh) against URL, once per spec revision:
#
#   node $VMCP_CONFORMANCE server --url URL --requirements 2025-11-25 [--expected-failures B] -o OUTDIR/2025-11-25
#   node $VMCP_CONFORMANCE server --url URL --requirements 2026-07-28 [--expected-failures B] -o OUTDIR/2026-07-28
#
# Usage: scripts/run-conformance.sh URL OUTDIR [BASELINE_FILE]
#
# Output: OUTDIR/<rev>.log (the console report) and OUTDIR/<rev>/server-<scenario>-<time>/checks.json.
# Exit: 0 when both runs exit 0, else 1 (each run's code is printed). REVISIONS in the
# environment (space separated) overrides which revisions run.
#
# Baseline (expected failures) file format, as read by the conformance CLI:
#
#   server:
#     - tools-call-with-progress                 # the whole scenario may fail
#     - server-stateless:sep-2575-server-implements-discover   # only this check may fail
#   client: []                                   # (client leg; unused here)
#
#   * Entries are "<scenario>" or "<scenario>:<check-id>" (NO space after the colon:
#     "- a: b" is a YAML mapping and is rejected). The check id is the left-hand
#     column the runner prints. A scenario may not be listed both whole and per check.
#   * A check counts as failing when its status is FAILURE or WARNING.
#   * Exit 1 on any failure not in the baseline AND on any "stale" entry, i.e. a listed
#     scenario/check that now passes; exit 0 only when every failure is listed.
#   * With --requirements, only the revision's scored scenarios are judged against the
#     baseline (not_scored ones are reported only).
#   * A scenario can pass on one revision's wire and fail on the other's; one shared
#     baseline would then be stale for one run. So BASELINE_FILE may contain the text
#     "{rev}", replaced by the revision: e.g. tests/conformance/baseline.{rev}.yaml.
#     Without "{rev}" the same file is used for both runs.
#   * Without a baseline the exit code is 1 when any scored scenario has a FAILURE check.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 URL OUTDIR [BASELINE_FILE]" >&2
  exit 2
fi
URL="$1"
OUTDIR="$2"
BASELINE="${3:-}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${VMCP_CONFORMANCE:-}" || -z "${VMCP_NODE:-}" ]]; then
  [[ -f "$ROOT/.tools/env.sh" ]] || { echo "run scripts/install-test-tools.sh first" >&2; exit 2; }
  # shellcheck disable=SC1091
  source "$ROOT/.tools/env.sh"
fi

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
REVISIONS="${REVISIONS:-2025-11-25 2026-07-28}"

status=0
summary=()
for rev in $REVISIONS; do
  args=(server --url "$URL" --requirements "$rev" -o "$OUTDIR/$rev")
  if [[ -n "$BASELINE" ]]; then
    b="${BASELINE//\{rev\}/$rev}"
    [[ -f "$b" ]] || { echo "[conformance] baseline not found: $b" >&2; exit 2; }
    args+=(--expected-failures "$(cd "$(dirname "$b")" && pwd)/$(basename "$b")")
  fi
  echo "[conformance] $rev: node conformance ${args[*]}"
  set +e
  NO_COLOR=1 "$VMCP_NODE" "$VMCP_CONFORMANCE" "${args[@]}" > "$OUTDIR/$rev.log" 2>&1
  rc=$?
  set -e
  total="$(grep -E '^Total: [0-9]+ passed, [0-9]+ failed' "$OUTDIR/$rev.log" | tail -1 || true)"
  echo "[conformance] $rev: exit $rc; ${total:-no Total line}; log $OUTDIR/$rev.log"
  summary+=("$rev=$rc")
  [[ $rc -eq 0 ]] || status=1
done
echo "[conformance] ${summary[*]}"
exit $status
