#!/usr/bin/env python3
"""What a schema cannot see in deploy/kubernetes/; run by scripts/check-deploy.sh.

    check-manifests.py MANIFEST_DIR WORK_DIR

The OpenAPI schemas check each object alone (kubernetes-validate, in check-deploy.sh). This
checks the objects against each other and against vmcp: that the kustomization lists every
file, that selectors, named ports and Secret/ConfigMap references resolve, that the vmcp
container runs `serve` on the mounted config with probes on /health, a termination grace above
vmcp's own shutdown deadlines and the hardening the docs promise, that each `...Env` key of
the config is set from the pod's env, and what several replicas need (check_storage.py: more
than one replica only with sessionStorage on Redis; the Redis address is a Service here; the
password comes from a Secret key that exists, the same one Redis requires).

It writes the config files for `vmcp validate` under WORK_DIR:
  deployed/        exactly the ConfigMap keys the Deployment mounts (config.yaml alone by default;
                   a mounted authserver-config.yaml gets stand-ins as below, in deployed-secret/)
  authserver/      config.yaml + authserver-config.yaml as docs/kubernetes.md turns the embedded
                   authorization server on: incomingAuth switched to oidc with the file's issuer
                   and first audience, and the files it reads from the Secret mount replaced by
                   generated stand-ins under authserver-secret/ (paths rewritten)
and prints one `config DIR` line per directory written. Exit 1 when anything is wrong, with
every problem listed.
"""

import os
import re
import secrets
import subprocess
import sys

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in deploy/ (the image's build context)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_storage  # noqa: E402

SHUTDOWN_FLUSH_S = 1  # vmcp's ABORT_FLUSH (crates/vmcp/src/http/server.rs)
DEFAULT_GRACE_S = 15.0  # server.connections.shutdownGracePeriod default
DEFAULT_BACKEND_S = 5.0  # server.connections.backendShutdownTimeout default

errors = []


def err(msg):
    errors.append(msg)


def go_duration(text):
    """Seconds in a Go duration string ("20s", "1m30s", "500ms")."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def load(mdir):
    kust = yaml.safe_load(open(os.path.join(mdir, "kustomization.yaml")))
    listed = kust.get("resources") or []
    present = sorted(
        f for f in os.listdir(mdir) if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml"
    )
    for f in sorted(set(present) - set(listed)):
        err(f"kustomization.yaml: {f} is not listed in resources (kubectl apply -k would skip it)")
    for f in sorted(set(listed) - set(present)):
        err(f"kustomization.yaml: resource {f} does not exist")
    ns = kust.get("namespace")
    objs = {}
    for f in listed:
        path = os.path.join(mdir, f)
        if not os.path.isfile(path):
            continue
        for doc in yaml.safe_load_all(open(path)):
            if not doc:
                continue
            kind, meta = doc.get("kind"), doc.get("metadata") or {}
            key = (kind, meta.get("name"))
            if key in objs:
                err(f"{f}: {kind}/{meta.get('name')} is defined twice")
            objs[key] = doc
            if kind != "Namespace" and meta.get("namespace") != ns:
                err(f"{f}: {kind}/{meta.get('name')} has namespace {meta.get('namespace')!r}, "
                    f"the kustomization {ns!r}")
    return kust, objs


def has_data(obj, key):
    return key in (obj.get("data") or {}) or key in (obj.get("stringData") or {})


def check_refs(objs, name, pod):
    """Every ConfigMap/Secret/ServiceAccount a pod names exists (unless optional), keys too."""
    where = f"Deployment/{name}"
    sa = pod.get("serviceAccountName")
    if sa and ("ServiceAccount", sa) not in objs:
        err(f"{where}: serviceAccountName {sa} is not defined")
    for v in pod.get("volumes") or []:
        for kind, field, ref in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
            src = v.get(field)
            if src is None:
                continue
            obj = objs.get((kind, src.get(ref)))
            if obj is None:
                if not src.get("optional"):
                    err(f"{where}: volume {v['name']} needs {kind}/{src.get(ref)}, not defined")
                continue
            for item in src.get("items") or []:
                if not has_data(obj, item["key"]):
                    err(f"{where}: volume {v['name']}: {kind}/{src.get(ref)} has no key {item['key']}")
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                ref = vf.get(field)
                if ref is None:
                    continue
                obj = objs.get((kind, ref.get("name")))
                if obj is None:
                    if not ref.get("optional"):
                        err(f"{where}: env {e['name']} needs {kind}/{ref.get('name')}, not defined")
                elif not has_data(obj, ref.get("key")):
                    err(f"{where}: env {e['name']}: {kind}/{ref.get('name')} has no key {ref.get('key')}")


def check_hardening(name, pod):
    where = f"Deployment/{name}"
    psc = pod.get("securityContext") or {}
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        err(f"{where}: pod securityContext.seccompProfile.type is not RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        err(f"{where}: automountServiceAccountToken is not false")
    for c in pod.get("containers", []):
        csc = c.get("securityContext") or {}
        w = f"{where}: container {c['name']}"
        if not (csc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            err(f"{w}: runAsNonRoot is not set")
        if csc.get("allowPrivilegeEscalation") is not False:
            err(f"{w}: allowPrivilegeEscalation is not false")
        if csc.get("readOnlyRootFilesystem") is not True:
            err(f"{w}: readOnlyRootFilesystem is not true")
        if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
            err(f"{w}: capabilities.drop does not contain ALL")
        req = (c.get("resources") or {}).get("requests") or {}
        if not ("cpu" in req and "memory" in req):
            err(f"{w}: resources.requests needs cpu and memory")
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in c:
                err(f"{w}: no {probe}")


def port_number(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p["containerPort"]
    return None


def check_selectors(objs, deployments):
    templates = {n: (d["spec"]["template"]["metadata"].get("labels") or {}) for n, d in deployments.items()}
    for n, d in deployments.items():
        if not matches(d["spec"]["selector"].get("matchLabels"), templates[n]):
            err(f"Deployment/{n}: selector does not match its pod template's labels")
    for (kind, name), o in objs.items():
        if kind == "Service":
            if o["spec"].get("type") == "ExternalName":
                continue  # a name for something outside the cluster: no pods to select
            hits = [n for n, l in templates.items() if matches(o["spec"].get("selector"), l)]
            if len(hits) != 1:
                err(f"Service/{name}: selector matches {len(hits)} Deployments, not 1")
                continue
            pod = deployments[hits[0]]["spec"]["template"]["spec"]
            for p in o["spec"]["ports"]:
                tp = p.get("targetPort", p["port"])
                if not any(port_number(c, tp) is not None for c in pod["containers"]):
                    err(f"Service/{name}: targetPort {tp} is not a port of Deployment/{hits[0]}")
        elif kind == "PodDisruptionBudget":
            if not any(matches(o["spec"]["selector"].get("matchLabels"), l) for l in templates.values()):
                err(f"PodDisruptionBudget/{name}: selector matches no Deployment")
        elif kind == "NetworkPolicy":
            sel = o["spec"]["podSelector"].get("matchLabels")
            if not any(matches(sel, l) for l in templates.values()):
                err(f"NetworkPolicy/{name}: podSelector matches no Deployment")
            for rule in o["spec"].get("ingress") or []:
                for peer in rule.get("from") or []:
                    ps = (peer.get("podSelector") or {}).get("matchLabels")
                    if ps is not None and not any(matches(ps, l) for l in templates.values()):
                        err(f"NetworkPolicy/{name}: an ingress podSelector matches no Deployment")


def arg_after(args, flag):
    return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else None


def env_names(node, wanted):
    """Values of the string fields whose key `wanted(key)` accepts, anywhere in node."""
    out = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, str) and wanted(k):
                out.add(v)
            else:
                out |= env_names(v, wanted)
    elif isinstance(node, list):
        for v in node:
            out |= env_names(v, wanted)
    return out


def check_vmcp(objs, kust, deployments, work):
    d = deployments.get("vmcp")
    if d is None:
        err("no Deployment/vmcp")
        return
    pod = d["spec"]["template"]["spec"]
    c = next((c for c in pod["containers"] if c["name"] == "vmcp"), None)
    if c is None:
        err("Deployment/vmcp: no container named vmcp")
        return
    w = "Deployment/vmcp: container vmcp"
    args = (c.get("command") or []) + (c.get("args") or [])
    if "serve" not in args:
        err(f"{w}: does not run `vmcp serve`")
    if arg_after(args, "--host") != "0.0.0.0":
        err(f"{w}: --host is not 0.0.0.0")
    port = arg_after(args, "--port")
    http = port_number(c, "http")
    if port is None or http is None or int(port) != http:
        err(f"{w}: --port {port} is not the containerPort of the port named http ({http})")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = (c.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != "/health" or port_number(c, get.get("port")) != http:
            err(f"{w}: {probe} is not GET /health on port {http}")
    images = {i["name"] for i in kust.get("images") or []}
    if c["image"].split(":")[0] not in images:
        err(f"{w}: image {c['image']} is not renamed by the kustomization's images")

    # The config the container reads: which ConfigMap keys are mounted where --config points.
    cfg_path = arg_after(args, "--config") or ""
    cfg_dir, cfg_file = os.path.split(cfg_path)
    mounts = {m["name"]: m for m in c.get("volumeMounts") or []}
    cm_vol = next((v for v in pod.get("volumes") or [] if "configMap" in v
                   and mounts.get(v["name"], {}).get("mountPath") == cfg_dir), None)
    if cm_vol is None:
        err(f"{w}: no ConfigMap is mounted at {cfg_dir!r} (the --config directory)")
        return
    cm = objs.get(("ConfigMap", cm_vol["configMap"]["name"]))
    if cm is None:
        return  # reported by check_refs
    data = cm.get("data") or {}
    items = cm_vol["configMap"].get("items")
    mounted = {i["path"]: i["key"] for i in items} if items else {k: k for k in data}
    if cfg_file not in mounted:
        err(f"{w}: --config {cfg_path} is not among the mounted keys {sorted(mounted)}")
        return
    files = {path: data[key] for path, key in mounted.items() if key in data}
    cfg = yaml.safe_load(files[cfg_file]) or {}
    env = {e["name"] for e in c.get("env") or []}
    if "authserver-config.yaml" in files:
        # Mounted: validated as it is, with stand-ins for the files of its Secret mount.
        asc = stand_in_secrets(files["authserver-config.yaml"], c, env, os.path.join(work, "deployed-secret"))
        files["authserver-config.yaml"] = yaml.safe_dump(asc, sort_keys=False)
    write(os.path.join(work, "deployed"), files)

    # Shutdown: preStop pause + vmcp's grace + abort flush + backend shutdown < the pod's grace.
    conns = (cfg.get("server") or {}).get("connections") or {}
    try:
        grace = go_duration(conns["shutdownGracePeriod"]) if "shutdownGracePeriod" in conns else DEFAULT_GRACE_S
        backend = go_duration(conns["backendShutdownTimeout"]) if "backendShutdownTimeout" in conns else DEFAULT_BACKEND_S
    except ValueError as e:
        err(f"config.yaml: {e}")
        grace, backend = DEFAULT_GRACE_S, DEFAULT_BACKEND_S
    pre = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
    need = pre + grace + SHUTDOWN_FLUSH_S + backend
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    if not tgps > need:
        err(f"Deployment/vmcp: terminationGracePeriodSeconds {tgps} is not above the {need:g}s "
            f"vmcp may take to stop (preStop {pre}s + shutdownGracePeriod {grace:g}s + "
            f"{SHUTDOWN_FLUSH_S}s + backendShutdownTimeout {backend:g}s)")

    templates = {n: (o["spec"]["template"]["metadata"].get("labels") or {}) for n, o in deployments.items()}
    check_storage.check(err, objs, kust.get("namespace"), d, c, cfg, templates)

    for name in sorted(env_names(cfg, lambda k: k.endswith("Env")) - env):
        err(f"{w}: config.yaml reads ${name}, which the container's env does not set")

    if "authserver-config.yaml" in data and "authserver-config.yaml" not in mounted:
        # Not mounted: validated as docs/kubernetes.md turns it on, incomingAuth switched to oidc
        # with the file's issuer and first audience.
        asc = stand_in_secrets(data["authserver-config.yaml"], c, env, os.path.join(work, "authserver-secret"))
        auds = asc.get("allowed_audiences") or [None]
        cfg = dict(cfg)
        cfg["incomingAuth"] = {"type": "oidc", "oidc": {"issuer": asc.get("issuer"), "audience": auds[0]}}
        write(os.path.join(work, "authserver"), {
            "config.yaml": yaml.safe_dump(cfg, sort_keys=False),
            "authserver-config.yaml": yaml.safe_dump(asc, sort_keys=False),
        })


def stand_in_secrets(text, container, env, stand_ins):
    """authserver-config.yaml with each file it reads from a volume mount of the container
    replaced by a generated stand-in under stand_ins (paths rewritten)."""
    asc = yaml.safe_load(text) or {}
    mounts = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts") or []]

    def relocate(path):
        """The stand-in path for a file the pod reads from a volume mount."""
        if not path.startswith("/"):
            err(f"authserver-config.yaml: {path} is relative (vmcp resolves it against its cwd)")
            return None
        mount = next((m for m in mounts if (path.rstrip("/") + "/").startswith(m)), None)
        if mount is None:
            err(f"authserver-config.yaml: {path} is not under a volume mount of the vmcp container")
            return None
        return os.path.normpath(os.path.join(stand_ins, path[len(mount):]))

    def stand_in(path, kind):
        # Only ever under WORK_DIR: a path that could not be relocated was reported instead.
        if path is None or not path.startswith(stand_ins):
            return path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if kind == "key":
            subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-out", path], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            with open(path, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
        return path

    skc = asc.get("signing_key_config") or {}
    key_dir = skc.get("key_dir")
    if key_dir:
        skc["key_dir"] = relocate(key_dir)
    for field in ("signing_key_file", "fallback_key_files"):
        value = skc.get(field)
        for f in (value if isinstance(value, list) else [value] if value else []):
            if f.startswith("/") or not key_dir:
                new = relocate(f)
                skc[field] = [new if x == f else x for x in value] if isinstance(value, list) else new
                stand_in(new, "key")
            else:
                stand_in(os.path.join(skc["key_dir"] or "", f), "key")
    asc["hmac_secret_files"] = [stand_in(relocate(f), "secret") for f in asc.get("hmac_secret_files") or []]
    for up in asc.get("upstreams") or []:
        for block in ("oidc_config", "oauth2_config"):
            b = up.get(block) or {}
            if b.get("client_secret_file"):
                b["client_secret_file"] = stand_in(relocate(b["client_secret_file"]), "secret")
    for name in sorted(env_names(asc, lambda k: k == "client_secret_env_var") - env):
        err(f"authserver-config.yaml reads ${name}, which the container's env does not set")
    return asc


def write(directory, files):
    os.makedirs(directory, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)
    print(f"config {directory}")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    mdir, work = sys.argv[1], sys.argv[2]
    kust, objs = load(mdir)
    deployments = {n: o for (k, n), o in objs.items() if k == "Deployment"}
    for n, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        check_refs(objs, n, pod)
        check_hardening(n, pod)
    check_selectors(objs, deployments)
    check_vmcp(objs, kust, deployments, work)
    for e in dict.fromkeys(errors):  # once each: two checks may see one broken reference
        print(f"error: {e}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"manifests consistent: {len(objs)} objects, {len(deployments)} Deployments")


if __name__ == "__main__":
    main()
