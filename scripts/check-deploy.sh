#!/usr/bin/env bash
# Checks deploy/ offline: the Kubernetes manifests, the config they carry, and the Dockerfile.
#
#   scripts/check-deploy.sh        (after scripts/install-test-tools.sh and a release build)
#
# 1. hadolint on deploy/Dockerfile.
# 2. Every manifest in deploy/kubernetes/ against the Kubernetes OpenAPI schemas of each version
#    in K8S_VERSIONS, strictly: an unknown field is an error, and so is a kind without a schema.
#    The schemas ship inside the kubernetes-validate wheel (no cluster, no download).
#    Also the kustomization as kubectl renders it, where kubectl is on PATH.
# 3. deploy/check-manifests.py: what the schemas cannot see (the kustomization lists every file;
#    selectors, named ports, Secret and ConfigMap references resolve; vmcp serves the mounted
#    config on 0.0.0.0 with probes on /health; termination grace above vmcp's shutdown; hardening;
#    each `...Env` key of the config is set in the pod's env; several replicas only with
#    sessionStorage on Redis, its address a Service here, its password from a Secret key that
#    exists and that Redis requires too).
# 4. `vmcp validate` on the config files the Deployment mounts, taken out of the ConfigMap, and on
#    the pair that turns the embedded authorization server on (docs/kubernetes.md).
# 5. That steps 2 to 4 can fail: a manifest with an unknown field, a config with an unknown key
#    and manifests with broken cross-references (replicas without Redis, a Redis address or
#    password that does not resolve among them) must each be refused.
#
# Tools: VMCP_KUBE_VALIDATE and VMCP_HADOLINT (from .tools/env.sh, sourced when unset). vmcp:
# $VMCP_BIN_DIR/vmcp (set by scripts/test.sh), else $CARGO_TARGET_DIR/release, else target/release.
# Exits 1 when any step fails, after running them all.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MANIFESTS="$ROOT/deploy/kubernetes"
# The oldest version these manifests need (lifecycle.preStop.sleep is on by default from 1.30)
# and the newest whose schemas kubernetes-validate 1.37.0 ships.
K8S_VERSIONS=(1.30.0 1.37.0)

say() { printf '[check-deploy] %s\n' "$*"; }
die() { say "error: $*" >&2; exit 1; }

if [[ -z "${VMCP_KUBE_VALIDATE:-}" || -z "${VMCP_HADOLINT:-}" ]] && [[ -f "$ROOT/.tools/env.sh" ]]; then
  # shellcheck disable=SC1091
  source "$ROOT/.tools/env.sh"
fi
[[ -x "${VMCP_KUBE_VALIDATE:-}" && -x "${VMCP_HADOLINT:-}" ]] ||
  die "kubernetes-validate or hadolint missing (VMCP_KUBE_VALIDATE='${VMCP_KUBE_VALIDATE:-}'," \
    "VMCP_HADOLINT='${VMCP_HADOLINT:-}'): run scripts/install-test-tools.sh"
# The validator's own venv has PyYAML, which check-manifests.py needs.
PY="$(dirname "$VMCP_KUBE_VALIDATE")/python"
[[ -x "$PY" ]] || die "no python beside $VMCP_KUBE_VALIDATE"
BIN="${VMCP_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
[[ -x "$BIN/vmcp" ]] ||
  die "missing $BIN/vmcp: build it (cargo build --release -p vmcp) or set VMCP_BIN_DIR"
command -v openssl >/dev/null || die "openssl missing (it makes the stand-in signing key)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

failed=()
step() {
  local name="$1"; shift
  say "-- $name"
  if "$@"; then say "ok: $name"; else say "FAILED: $name"; failed+=("$name"); fi
}

manifest_files() { find "$1" -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort; }

# kubernetes-validate exits 0 on a kind it has no schema for (a WARN line): that fails here.
kube_validate() {
  local dir="$1" v out rc=0
  local files
  mapfile -t files < <(manifest_files "$dir")
  ((${#files[@]})) || { say "no manifests in $dir"; return 1; }
  for v in "${K8S_VERSIONS[@]}"; do
    if ! out="$("$VMCP_KUBE_VALIDATE" --strict --kubernetes-version "$v" "${files[@]}" 2>&1)"; then
      rc=1
    fi
    if grep -qE '^(WARN|ERROR)' <<<"$out"; then rc=1; fi
    grep -E '^(WARN|ERROR)' <<<"$out" || true
    say "kubernetes $v: $(grep -c '^INFO.* passed' <<<"$out" || true) objects passed"
  done
  return "$rc"
}

# The kustomization as `kubectl apply -k` renders it (image renamed, namespace set), validated
# the same way. kubectl is not installed by install-test-tools.sh (it is not on PyPI or npm):
# where it is missing this step says so and passes; steps 2 and 3 cover the files themselves.
kustomize_render() {
  if ! command -v kubectl >/dev/null; then
    say "skipped: kubectl not on PATH (kubectl kustomize renders the kustomization)"
    return 0
  fi
  mkdir -p "$WORK/rendered"
  kubectl kustomize "$MANIFESTS" >"$WORK/rendered/all.yaml" || return 1
  if grep -qE '^ *image: vmcp(:|$)' "$WORK/rendered/all.yaml"; then
    say "the rendered Deployment still uses image vmcp: the kustomization's images did not apply"
    return 1
  fi
  kube_validate "$WORK/rendered"
}

hadolint_dockerfile() { "$VMCP_HADOLINT" "$ROOT/deploy/Dockerfile"; }

CONFIG_DIRS=()
cross_check() {
  local out
  out="$("$PY" "$ROOT/deploy/check-manifests.py" "$MANIFESTS" "$WORK/configs")" || return 1
  printf '%s\n' "$out" | grep -v '^config '
  mapfile -t CONFIG_DIRS < <(sed -n 's/^config //p' <<<"$out")
  ((${#CONFIG_DIRS[@]})) || { say "no config extracted"; return 1; }
}

vmcp_validate() {
  local dir rc=0
  ((${#CONFIG_DIRS[@]})) || { say "no config to validate (the previous step failed)"; return 1; }
  for dir in "${CONFIG_DIRS[@]}"; do
    "$BIN/vmcp" validate --config "$dir/config.yaml" || rc=1
  done
  return "$rc"
}

# ---- step 5: each check refuses what it should ----------------------------------------------
expect_refused() {
  local what="$1"; shift
  if "$@" >"$WORK/refused.out" 2>&1; then
    say "not refused: $what"; sed 's/^/    /' "$WORK/refused.out"; return 1
  fi
  say "refused as expected: $what"
}

mutant() {  # copies the manifests to $WORK/$1 and applies the sed expression $2 to file $3
  rm -rf "${WORK:?}/$1"; cp -r "$MANIFESTS" "$WORK/$1"
  sed -i -e "$2" "$WORK/$1/$3"
  cmp -s "$MANIFESTS/$3" "$WORK/$1/$3" && { say "mutation $1 changed nothing"; return 1; }
  return 0
}

self_test() {
  local rc=0
  mutant unknown-field 's/^\( *\)timeoutSeconds: 3$/&\n\1timeoutSecond: 3/' deployment.yaml || rc=1
  expect_refused "unknown field timeoutSecond in a probe" kube_validate "$WORK/unknown-field" || rc=1
  grep -q "'timeoutSecond' was unexpected" "$WORK/refused.out" || { say "wrong reason"; rc=1; }

  mkdir -p "$WORK/bad-config"
  { cat "${CONFIG_DIRS[0]:-/dev/null}/config.yaml"; echo 'sessionStorag: {}'; } >"$WORK/bad-config/config.yaml"
  expect_refused "unknown config key sessionStorag" \
    "$BIN/vmcp" validate --config "$WORK/bad-config/config.yaml" || rc=1
  grep -q 'sessionStorag' "$WORK/refused.out" || { say "wrong reason"; rc=1; }

  mutant short-grace 's/terminationGracePeriodSeconds: 45/terminationGracePeriodSeconds: 20/' deployment.yaml || rc=1
  expect_refused "terminationGracePeriodSeconds under vmcp's shutdown" \
    "$PY" "$ROOT/deploy/check-manifests.py" "$WORK/short-grace" "$WORK/x1" || rc=1
  grep -q 'terminationGracePeriodSeconds 20 is not above' "$WORK/refused.out" || { say "wrong reason"; rc=1; }

  mutant bad-port 's/targetPort: http/targetPort: htp/' service.yaml || rc=1
  expect_refused "a Service targetPort no container has" \
    "$PY" "$ROOT/deploy/check-manifests.py" "$WORK/bad-port" "$WORK/x2" || rc=1
  grep -q 'targetPort htp is not a port' "$WORK/refused.out" || { say "wrong reason"; rc=1; }

  mutant missing-env 's/headerValueEnv: GITHUB_MCP_TOKEN/headerValueEnv: OTHER_TOKEN/' configmap.yaml || rc=1
  expect_refused "a config ...Env variable the pod does not set" \
    "$PY" "$ROOT/deploy/check-manifests.py" "$WORK/missing-env" "$WORK/x3" || rc=1
  grep -qF 'OTHER_TOKEN, which' "$WORK/refused.out" || { say "wrong reason"; rc=1; }

  mutant memory-replicas 's/^\( *provider:\) redis$/\1 memory/' configmap.yaml || rc=1
  expect_refused "three replicas without sessionStorage on Redis" \
    "$PY" "$ROOT/deploy/check-manifests.py" "$WORK/memory-replicas" "$WORK/x4" || rc=1
  grep -qF 'replicas 3 needs config.yaml sessionStorage' "$WORK/refused.out" || { say "wrong reason"; rc=1; }

  mutant bad-address 's/address: redis\.vmcp\.svc:6379/address: cache.vmcp.svc:6379/' configmap.yaml || rc=1
  expect_refused "a Redis address that is no Service of the manifests" \
    "$PY" "$ROOT/deploy/check-manifests.py" "$WORK/bad-address" "$WORK/x5" || rc=1
  grep -qF 'no Service/cache' "$WORK/refused.out" || { say "wrong reason"; rc=1; }

  mutant bad-password '/THV_SESSION_REDIS_PASSWORD$/,/key:/s/key: password/key: pasword/' deployment.yaml || rc=1
  expect_refused "a Redis password from a Secret key that does not exist" \
    "$PY" "$ROOT/deploy/check-manifests.py" "$WORK/bad-password" "$WORK/x6" || rc=1
  grep -qF 'Secret/redis has no key pasword' "$WORK/refused.out" || { say "wrong reason"; rc=1; }
  return "$rc"
}

step "hadolint deploy/Dockerfile" hadolint_dockerfile
step "schemas (strict, kubernetes ${K8S_VERSIONS[*]})" kube_validate "$MANIFESTS"
step "kubectl kustomize render" kustomize_render
step "cross-references and vmcp specifics" cross_check
step "vmcp validate on the ConfigMap's config" vmcp_validate
step "the checks refuse broken input" self_test

if ((${#failed[@]})); then
  say "FAILED: ${failed[*]}"
  exit 1
fi
say "all deploy checks passed"
