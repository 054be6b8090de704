#!/usr/bin/env bash
# Conformance stage: the official MCP server conformance suite through the gateway.
#
# Starts vmcp-fixture (streamable HTTP) as the ONLY backend of a vmcp with priority conflict
# resolution (names stay bare), runs scripts/run-conformance.sh against vmcp for both spec
# revisions, judged against baselines of known failures (a stale entry fails too), twice:
#   - legacy-backend: the fixture with --era legacy, so vmcp bridges Modern clients to a
#     Legacy backend; judged against conformance/baseline-legacy-backend.{rev}.yaml;
#   - gateway: the fixture serving both eras; judged against conformance/baseline.{rev}.yaml.
# Then runs the same suite directly against the both-eras fixture as an ungated reference.
#
# Usage: scripts/e2e-conformance.sh [OUTDIR]   (results kept in OUTDIR when given)
#        UPDATE_BASELINE=1 scripts/e2e-conformance.sh   rewrites conformance/baseline*.yaml
#        from this run (every scored failing check, with the check's message as the reason)
set -euo pipefail
STAGE=conformance
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tools_env
vmcp_bins
WORK="$(mktemp -d -t vmcp-conformance.XXXXXX)"
OUT="${1:-$WORK/results}"
mkdir -p "$OUT"

# gated_run NAME BASELINE_PREFIX [FIXTURE ARGS...]: a fixture (with those args) behind its own
# vmcp, the suite for both revisions judged against conformance/BASELINE_PREFIX.{rev}.yaml
# (or, with UPDATE_BASELINE=1, those files rewritten from the run). Results in $OUT/NAME.
# Sets FIXTURE_URL to this run's fixture.
gated_run() {
  local name="$1" prefix="$2" rc=0 rev f entries baseline what
  shift 2
  what="vmcp-fixture${*:+ $*}"
  start_fixture_http "fixture-$name" "$@"
  cat >"$WORK/vmcp-$name.yaml" <<YAML
name: conformance
backends:
  - name: fixture
    transport: streamable-http
    url: $FIXTURE_URL
aggregation:
  conflictResolution: priority
  conflictResolutionConfig:
    priorityOrder: [fixture]
YAML
  start_vmcp "$WORK/vmcp-$name.yaml" "vmcp-$name"
  baseline="$ROOT/conformance/$prefix.{rev}.yaml"
  if [[ "${UPDATE_BASELINE:-0}" == 1 ]]; then
    printf 'server: []\nclient: []\n' >"$WORK/empty.yaml"
    baseline="$WORK/empty.yaml"
  fi
  log "gated run '$name': vmcp in front of $what"
  "$ROOT/scripts/run-conformance.sh" "$VMCP_URL" "$OUT/$name" "$baseline" || rc=1
  if [[ "${UPDATE_BASELINE:-0}" == 1 ]]; then
    for rev in ${REVISIONS:-2025-11-25 2026-07-28}; do
      f="$ROOT/conformance/$prefix.$rev.yaml"
      {
        echo "# Known conformance failures of vmcp (gateway in front of $what, priority"
        echo "# names), requirements $rev. Debt: each entry is a gateway bug or gap to fix; the comment"
        echo "# is the check's own message. A listed check that passes again fails the run (stale"
        echo "# entry): delete it. Regenerate: UPDATE_BASELINE=1 scripts/e2e-conformance.sh"
        entries="$(python3 "$ROOT/scripts/conformance-failures.py" "$OUT/$name/$rev" "$OUT/$name/$rev.log")"
        if [[ -n "$entries" ]]; then echo "server:"; echo "$entries"; else echo "server: []"; fi
        echo "client: []"
      } >"$f"
      log "wrote $f"
    done
    return 0
  fi
  for rev in ${REVISIONS:-2025-11-25 2026-07-28}; do
    # The CLI's per-check lines for failures, so the CI log says what failed.
    sed 's/\x1b\[[0-9;]*m//g' "$OUT/$name/$rev.log" | sed -n '/^Total:/,$p' | sed "s/^/    [$name $rev] /" | head -60 || true
  done
  return $rc
}

status=0
# The fixture serving a Legacy backend, so vmcp bridges for Modern clients: per-principal
# backend sessions, server-to-client requests parked as input_required rounds (dispatch/park.rs).
# First, so FIXTURE_URL below is the both-eras fixture's.
SECONDS_BEFORE=$SECONDS
gated_run legacy-backend baseline-legacy-backend --era legacy || status=1
log "gated run 'legacy-backend' took $((SECONDS - SECONDS_BEFORE))s"
# The fixture serving both eras: each client talks to a backend of its own era.
gated_run gateway baseline || status=1
if [[ "${UPDATE_BASELINE:-0}" == 1 ]]; then exit 0; fi

log "reference (not gated): the same suite directly against the fixture"
REVISIONS="${REVISIONS:-2025-11-25 2026-07-28}" "$ROOT/scripts/run-conformance.sh" "$FIXTURE_URL" "$OUT/direct" \
  | grep -E '^\[conformance\] [0-9-]+: exit' | sed 's/^\[conformance\]/    [reference: fixture direct]/' || true

if ((status == 0)); then log "PASS (every failure is in the baseline)"; else log "FAIL (see above; logs in $OUT)"; fi
exit $status
