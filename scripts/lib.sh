# Shared helpers for the end-to-end stage scripts (source it; bash only).
#
#   vmcp_bins             sets BIN (VMCP_BIN_DIR or $CARGO_TARGET_DIR/release or ./target/release)
#   free_port             prints a free loopback TCP port
#   spawn NAME CMD...     starts CMD in the background in its own process group, stdout to
#                         $WORK/NAME.out, stderr to $WORK/NAME.err; sets SPAWNED_PID; the group
#                         is stopped on exit (see cleanup)
#   wait_for FILE ERE PID [SECS]   polls FILE until a line matches ERE; fails if PID dies or
#                         SECS (default 30) pass; prints the first matching line
#   stop_pid PID [SECS]   SIGTERM the process group of PID, then SIGKILL after SECS (default 5)
#
# Callers set WORK (a temp dir) before spawn; lib.sh installs an EXIT trap that stops every
# spawned group and removes WORK unless KEEP_WORK=1.

ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
SPAWNED=()

log() { printf '[%s] %s\n' "${STAGE:-e2e}" "$*"; }

vmcp_bins() {
  BIN="${VMCP_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
  [[ -x "$BIN/vmcp" && -x "$BIN/vmcp-fixture" ]] || {
    log "missing $BIN/vmcp or $BIN/vmcp-fixture (run cargo build --release)"
    return 1
  }
}

tools_env() {
  if [[ -z "${VMCP_NODE:-}" || -z "${VMCP_PYTHON:-}" ]]; then
    [[ -f "$ROOT/.tools/env.sh" ]] || { log "run scripts/install-test-tools.sh first"; return 1; }
    # shellcheck disable=SC1091
    source "$ROOT/.tools/env.sh"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

spawn() {
  local name="$1"; shift
  # setsid: own process group, so stop_pid reaches the children too.
  setsid "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null &
  SPAWNED_PID=$!
  SPAWNED+=("$SPAWNED_PID")
}

wait_for() {
  local file="$1" re="$2" pid="$3" secs="${4:-30}" line deadline
  deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)); do
    line="$(grep -m1 -E "$re" "$file" 2>/dev/null || true)"
    if [[ -n "$line" ]]; then printf '%s\n' "$line"; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "process $pid exited before printing /$re/ in $file"
      tail -n 20 "${file%.*}.out" "${file%.*}.err" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.1
  done
  log "timed out after ${secs}s waiting for /$re/ in $file"
  tail -n 20 "${file%.*}.out" "${file%.*}.err" >&2 2>/dev/null || true
  return 1
}

stop_pid() {
  local pid="$1" secs="${2:-5}" deadline
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + secs))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local pid
  for pid in "${SPAWNED[@]}"; do stop_pid "$pid" 3; done
  if [[ -n "${WORK:-}" && "${KEEP_WORK:-0}" != 1 ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts vmcp serve on a free port with config $1; sets VMCP_URL and VMCP_PID.
start_vmcp() {
  local config="$1" name="${2:-vmcp}" line
  spawn "$name" "$BIN/vmcp" serve --config "$config" --host 127.0.0.1 --port 0
  VMCP_PID=$SPAWNED_PID
  line="$(wait_for "$WORK/$name.out" 'listening on http://' "$VMCP_PID" 60)" || return 1
  VMCP_URL="$(sed -E 's/.*listening on (http:[^ ]+).*/\1/' <<<"$line")"
  wait_for "$WORK/$name.out" '^ *catalog:' "$VMCP_PID" 30 >/dev/null || return 1
  log "vmcp at $VMCP_URL"
  sed 's/^/    /' "$WORK/$name.out"
}

# Starts vmcp-fixture http on a free port; sets FIXTURE_URL and FIXTURE_PID.
start_fixture_http() {
  local name="${1:-fixture}" line
  shift || true
  spawn "$name" "$BIN/vmcp-fixture" http --port 0 "$@"
  FIXTURE_PID=$SPAWNED_PID
  line="$(wait_for "$WORK/$name.out" '^listening on http://' "$FIXTURE_PID" 30)" || return 1
  FIXTURE_URL="${line#listening on }"
  log "fixture at $FIXTURE_URL"
}
