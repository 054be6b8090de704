#!/usr/bin/env bash
# Python SDK stage: the official Python SDK client (tests/python, mcp==2.3.0) through vmcp
# aggregating @modelcontextprotocol/server-everything three times: over stdio, over legacy
# SSE and over streamable HTTP (backends "stdio", "sse", "http"; default prefix names give
# stdio_echo, sse_echo, http_echo). pytest runs once per tool, in both client modes
# (VMCP_MODES, default legacy,2026-07-28). pytest's "no tests" (exit 5) counts as failure.
set -euo pipefail
STAGE=python-sdk
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tools_env
vmcp_bins
WORK="$(mktemp -d -t vmcp-python.XXXXXX)"

# server-everything takes its port from PORT (all interfaces) and only echoes PORT back,
# so pick free ports here and wait for its ready line on stderr.
SSE_PORT="$(free_port)"
spawn everything-sse env PORT="$SSE_PORT" "$VMCP_NODE" "$VMCP_EVERYTHING" sse
wait_for "$WORK/everything-sse.err" "running on port $SSE_PORT" "$SPAWNED_PID" 30 >/dev/null
HTTP_PORT="$(free_port)"
spawn everything-http env PORT="$HTTP_PORT" "$VMCP_NODE" "$VMCP_EVERYTHING" streamableHttp
wait_for "$WORK/everything-http.err" "listening on port $HTTP_PORT" "$SPAWNED_PID" 30 >/dev/null
log "server-everything: sse on :$SSE_PORT, streamable HTTP on :$HTTP_PORT"

cat >"$WORK/vmcp.yaml" <<YAML
name: python-sdk
backends:
  - name: stdio
    transport: stdio
    command: $VMCP_NODE
    args: [$VMCP_EVERYTHING, stdio]
  - name: sse
    transport: sse
    url: http://127.0.0.1:$SSE_PORT/sse
  - name: http
    transport: streamable-http
    url: http://127.0.0.1:$HTTP_PORT/mcp
YAML
start_vmcp "$WORK/vmcp.yaml"

status=0
for tool in stdio_echo sse_echo http_echo; do
  log "pytest: $tool (modes ${VMCP_MODES:-legacy,2026-07-28})"
  set +e
  # The anonymous gateway runs the client tests only; test_auth.py needs the OIDC run below.
  VMCP_URL="$VMCP_URL" VMCP_TOOL="$tool" VMCP_EXPECT="Echo: hi" \
    "$VMCP_PYTHON" -m pytest -q -p no:cacheprovider -c "$ROOT/tests/python/pytest.ini" "$ROOT/tests/python/test_client.py" 2>&1 | sed 's/^/    /'
  rc=${PIPESTATUS[0]}
  set -e
  if ((rc == 0)); then log "$tool: pass"; else note=""; ((rc == 5)) && note=", no tests ran"
    log "$tool: FAIL (pytest exit $rc$note)"; status=1; fi
done
if ((status != 0)); then
  log "vmcp stderr (tail):"; tail -n 40 "$WORK/vmcp.err" | sed 's/^/    /'
fi

# Bearer authentication: a real OIDC provider (oauth2-mock-server), a vmcp that requires its
# tokens, the SDK with a good token in both modes, and bad tokens refused with a challenge.
spawn oidc env OIDC_MOCK_KEEP_RUNNING=1 "$VMCP_NODE" "$ROOT/tests/support/oidc-mock.mjs" 0
line="$(wait_for "$WORK/oidc.out" 'oidc-mock listening on http://' "$SPAWNED_PID" 30)"
IDP="${line#oidc-mock listening on }"
log "oidc-mock at $IDP"
mint() { curl -sf -X POST "$IDP/test/token" -H 'content-type: application/json' -d "$1" \
  | "$VMCP_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'; }
NOW="$(date +%s)"
GOOD="$(mint '{"claims":{"sub":"python-sdk"}}')"
BAD_TOKENS="$("$VMCP_PYTHON" -c 'import json,sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
  expired "$(mint "{\"claims\":{\"exp\":$((NOW - 3600)),\"iat\":$((NOW - 7200))}}")" \
  wrong-signature "$(mint '{"forge":true}')" \
  wrong-audience "$(mint '{"claims":{"aud":"someone-else"}}')" \
  alg-none "$(mint '{"alg":"none"}')")"
cat >"$WORK/vmcp-auth.yaml" <<YAML
name: python-sdk-auth
incomingAuth:
  type: oidc
  oidc:
    issuer: $IDP
    audience: vmcp-test
backends:
  - name: http
    transport: streamable-http
    url: http://127.0.0.1:$HTTP_PORT/mcp
YAML
start_vmcp "$WORK/vmcp-auth.yaml" vmcp-auth
log "pytest: bearer authentication (modes ${VMCP_MODES:-legacy,2026-07-28})"
set +e
VMCP_URL="$VMCP_URL" VMCP_TOOL=http_echo VMCP_EXPECT="Echo: hi" VMCP_BEARER="$GOOD" \
  VMCP_BAD_TOKENS="$BAD_TOKENS" \
  "$VMCP_PYTHON" -m pytest -q -p no:cacheprovider -c "$ROOT/tests/python/pytest.ini" "$ROOT/tests/python" 2>&1 | sed 's/^/    /'
rc=${PIPESTATUS[0]}
set -e
if ((rc == 0)); then log "auth: pass"; else log "auth: FAIL (pytest exit $rc)"; status=1
  log "vmcp stderr (tail):"; tail -n 40 "$WORK/vmcp-auth.err" | sed 's/^/    /'; fi
if ((status == 0)); then log "PASS"; else log "FAIL"; fi
exit $status
