#!/usr/bin/env bash
# THE test command: everything the CI runs, from a fresh clone.
#
#   scripts/test.sh            all stages
#   STAGES="build conformance" scripts/test.sh   only those (names as printed in the summary)
#
# Stages: tools fmt clippy build deploy test conformance python-sdk lifecycle. Each runs even when an
# earlier one failed (stages that need the binaries fail when the build did). Ends with a plain
# "N passed, M failed" line; exits non-zero when any stage failed.
# Honours CARGO_TARGET_DIR; exports VMCP_BIN_DIR (the release binaries) to the stages.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
STAGES="${STAGES:-tools fmt clippy build deploy test conformance python-sdk lifecycle}"

passed=0
failed=0
results=()
start_all=$SECONDS

want() { [[ " $STAGES " == *" $1 "* ]]; }

stage() {
  local name="$1"; shift
  want "$name" || return 0
  local t0=$SECONDS rc
  echo
  echo "===== stage $name: $* ====="
  set +e
  ( set -e; "$@" )
  rc=$?
  set -e
  local dt=$((SECONDS - t0))
  if ((rc == 0)); then
    passed=$((passed + 1)); results+=("PASS  $name (${dt}s)")
  else
    failed=$((failed + 1)); results+=("FAIL  $name (exit $rc, ${dt}s)")
  fi
  echo "===== stage $name: $( ((rc == 0)) && echo PASS || echo "FAIL (exit $rc)" ) in ${dt}s ====="
}

tools() {
  scripts/install-test-tools.sh
}
# The tools' env is needed by test and the e2e stages; source it whenever present.
load_tools() { [[ -f .tools/env.sh ]] && source .tools/env.sh; return 0; }

stage tools tools
load_tools

stage fmt cargo fmt --all --check
stage clippy cargo clippy --workspace --all-targets -- -D warnings
stage build cargo build --release --workspace

export VMCP_BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release"
case "$VMCP_BIN_DIR" in /*) ;; *) VMCP_BIN_DIR="$ROOT/$VMCP_BIN_DIR" ;; esac

# The Kubernetes manifests and Dockerfile, validated offline (scripts/check-deploy.sh).
stage deploy scripts/check-deploy.sh

# The tests that need Node (server-everything, oauth2-mock-server) fail without it; they never
# skip. Say so once, up front, instead of after every such test.
run_tests() {
  local missing=()
  [[ -x "${VMCP_NODE:-}" ]] || missing+=("VMCP_NODE=${VMCP_NODE:-}")
  [[ -f "${VMCP_EVERYTHING:-}" ]] || missing+=("VMCP_EVERYTHING=${VMCP_EVERYTHING:-}")
  [[ -x "${VMCP_REDIS_SERVER:-}" ]] || missing+=("VMCP_REDIS_SERVER=${VMCP_REDIS_SERVER:-}")
  if ((${#missing[@]})); then
    echo "error: test tools missing (${missing[*]}): run scripts/install-test-tools.sh" \
      "(the tools stage) or source .tools/env.sh" >&2
    return 1
  fi
  cargo test --workspace --no-fail-fast
}
stage test run_tests
stage conformance scripts/e2e-conformance.sh
stage python-sdk scripts/e2e-python.sh
stage lifecycle scripts/e2e-lifecycle.sh

echo
echo "===== summary ($((SECONDS - start_all))s) ====="
for r in "${results[@]}"; do echo "$r"; done
echo "$passed passed, $failed failed"
((failed == 0))
