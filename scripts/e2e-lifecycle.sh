#!/usr/bin/env bash
# Lifecycle stage:
#  1. no orphans: vmcp with stdio backends (vmcp-fixture) gets SIGTERM; it must exit within
#     15 s and no process from its children's pids or process groups may survive;
#  2. `vmcp validate` exits 0 on examples/quickstart.yaml and 1 on a config with a typo'd key,
#     naming the key and its line.
set -euo pipefail
STAGE=lifecycle
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
vmcp_bins
WORK="$(mktemp -d -t vmcp-lifecycle.XXXXXX)"
status=0
fail() { log "FAIL: $*"; status=1; }

# ---- 1. no orphans -------------------------------------------------------------------
cat >"$WORK/stdio.yaml" <<YAML
name: orphans
backends:
  - name: one
    transport: stdio
    command: $BIN/vmcp-fixture
    args: [stdio, --name, one]
  - name: two
    transport: stdio
    command: $BIN/vmcp-fixture
    args: [stdio, --name, two]
YAML
# Not through spawn/setsid: vmcp runs in our process group like under a shell, so the check
# sees what vmcp itself cleans up (the EXIT trap still kills leftovers by pid).
"$BIN/vmcp" serve --config "$WORK/stdio.yaml" --host 127.0.0.1 --port 0 >"$WORK/vmcp.out" 2>"$WORK/vmcp.err" </dev/null &
VMCP_PID=$!
SPAWNED+=("$VMCP_PID")
wait_for "$WORK/vmcp.out" '^ *catalog:' "$VMCP_PID" 60 >/dev/null
sed 's/^/    /' "$WORK/vmcp.out"
mapfile -t kids < <(pgrep -P "$VMCP_PID" || true)
declare -A groups=()
for k in "${kids[@]}"; do groups[$(ps -o pgid= -p "$k" | tr -d ' ')]=1; done
log "vmcp pid $VMCP_PID, children: ${kids[*]:-none} (process groups: ${!groups[*]})"
((${#kids[@]} >= 2)) || fail "expected 2 stdio children, found ${#kids[@]}"
kill -TERM "$VMCP_PID"
deadline=$((SECONDS + 15))
while kill -0 "$VMCP_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
if kill -0 "$VMCP_PID" 2>/dev/null; then
  fail "vmcp did not exit within 15 s of SIGTERM"
else
  wait "$VMCP_PID" && rc=0 || rc=$?
  log "vmcp exited with status $rc after SIGTERM"
fi
# Children get a moment to be reaped by vmcp before exit; poll briefly, then judge.
survivors() {
  local k g
  for k in "${kids[@]}"; do kill -0 "$k" 2>/dev/null && [[ "$(ps -o stat= -p "$k")" != Z* ]] && echo "pid $k ($(ps -o args= -p "$k"))"; done
  for g in "${!groups[@]}"; do
    [[ "$g" == "$(ps -o pgid= -p $$ | tr -d ' ')" ]] && continue   # our own group: not vmcp's
    pgrep -g "$g" >/dev/null 2>&1 && echo "group $g: $(pgrep -g "$g" | tr '\n' ' ')"
  done
  return 0
}
deadline=$((SECONDS + 5))
left="$(survivors)"
while [[ -n "$left" ]] && ((SECONDS < deadline)); do sleep 0.1; left="$(survivors)"; done
if [[ -n "$left" ]]; then
  fail "processes survived vmcp's exit: $left"
  for k in "${kids[@]}"; do kill -KILL "$k" 2>/dev/null || true; done
else
  log "no orphans: ${#kids[@]} children gone"
fi

# ---- 2. validate -----------------------------------------------------------------------
if out="$(cd "$ROOT" && "$BIN/vmcp" validate --config examples/quickstart.yaml 2>&1)"; then
  log "validate quickstart.yaml: exit 0 ($out)"
else
  fail "validate examples/quickstart.yaml exited non-zero: $out"
fi
cat >"$WORK/broken.yaml" <<'YAML'
name: broken
backends:
  - name: one
    transport: stdio
    comand: vmcp-fixture
YAML
set +e
out="$("$BIN/vmcp" validate --config "$WORK/broken.yaml" 2>&1)"
rc=$?
set -e
log "validate broken.yaml (typo 'comand' on line 5): exit $rc: $out"
((rc == 1)) || fail "expected exit 1, got $rc"
grep -q 'comand' <<<"$out" || fail "message does not name the key 'comand'"
grep -Eq '(line[ :]*5|:5(:|$| ))' <<<"$out" || fail "message does not give line 5"

if ((status == 0)); then log "PASS"; else log "FAIL"; fi
exit $status
