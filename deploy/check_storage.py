"""sessionStorage checks of deploy/check-manifests.py: what several vmcp replicas need.

Imported by check-manifests.py (not run alone). The rules:

- more than one vmcp replica needs `sessionStorage.provider: redis` (otherwise each replica has
  its own sessions, rate limits and authorization state);
- with `redis`, the address is a Service of these manifests (`name`, `name.ns`, `name.ns.svc` or
  `name.ns.svc.<cluster domain>`, in the kustomization's namespace) and the port one of its
  ports. A Redis outside the cluster is named by an ExternalName Service, so this still holds;
- the password vmcp uses comes from a key that exists in a Secret of these manifests: the
  `passwordFile` under a Secret volume mount, else env THV_SESSION_REDIS_PASSWORD from a
  `secretKeyRef` (a literal value or an optional reference is refused);
- the Redis behind that Service, when it runs `redis-server --requirepass $(VAR)`, takes VAR
  from the same Secret key, so the two cannot drift apart.
"""

import os
import re

PASSWORD_ENV = "THV_SESSION_REDIS_PASSWORD"  # crates/vmcp/src/config/session_storage.rs


def check(err, objs, ns, d, c, cfg, templates):
    """d: Deployment/vmcp, c: its vmcp container, cfg: the mounted config.yaml, templates: pod
    template labels by Deployment name. Reports through err(message)."""
    storage = cfg.get("sessionStorage") or {}
    redis = storage.get("provider") == "redis"
    replicas = d["spec"].get("replicas", 1)
    if replicas != 1 and not redis:
        err(f"Deployment/vmcp: replicas {replicas} needs config.yaml sessionStorage with provider "
            "redis (without it each replica keeps its own sessions, rate limits and logins)")
    if not redis:
        return
    svc = redis_service(err, objs, ns, str(storage.get("address") or ""))
    source = password_source(err, objs, d["spec"]["template"]["spec"], c, storage)
    if svc is None or source is None or svc["spec"].get("type") == "ExternalName":
        return
    hits = [n for n, l in templates.items() if matches(svc["spec"].get("selector"), l)]
    if len(hits) == 1:
        check_requirepass(err, objs, hits[0], svc, source)


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def redis_service(err, objs, ns, address):
    """The Service sessionStorage.address names, or None (reported)."""
    where = f"config.yaml: sessionStorage.address {address!r}"
    host, _, port = address.rpartition(":")
    labels = host.split(".")
    name = labels[0]
    # name | name.ns | name.ns.svc | name.ns.svc.<cluster domain>
    if not host or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or (
        len(labels) > 2 and labels[2] != "svc"
    ):
        err(f"{where} is not a Service name (name, name.{ns} or name.{ns}.svc...); for a Redis "
            "outside the cluster define an ExternalName Service and use its name")
        return None
    if len(labels) > 1 and labels[1] != ns:
        err(f"{where} is in namespace {labels[1]}, these manifests in {ns}")
        return None
    svc = objs.get(("Service", name))
    if svc is None:
        err(f"{where}: no Service/{name} in these manifests")
        return None
    ports = [p.get("port") for p in svc["spec"].get("ports") or []]
    if svc["spec"].get("type") != "ExternalName" and (not port.isdigit() or int(port) not in ports):
        err(f"{where}: port {port} is not a port of Service/{name} ({ports})")
        return None
    return svc


def secret_key(err, objs, what, name, key, optional):
    """(name, key) when Secret `name` is defined and has `key`, else None (reported)."""
    if optional:
        err(f"{what}: the reference to Secret/{name} is optional: vmcp would start without "
            "a password")
        return None
    obj = objs.get(("Secret", name))
    if obj is None:
        err(f"{what}: Secret/{name} is not defined in these manifests")
        return None
    if key not in (obj.get("data") or {}) and key not in (obj.get("stringData") or {}):
        err(f"{what}: Secret/{name} has no key {key}")
        return None
    return (name, key)


def password_source(err, objs, pod, c, storage):
    """The (Secret, key) vmcp's Redis password comes from, or None (reported)."""
    pw_file = storage.get("passwordFile")
    if pw_file:
        what = f"config.yaml: sessionStorage.passwordFile {pw_file}"
        vols = {v["name"]: v for v in pod.get("volumes") or []}
        for m in c.get("volumeMounts") or []:
            mount = m["mountPath"].rstrip("/") + "/"
            src = (vols.get(m["name"]) or {}).get("secret")
            if src is None or not str(pw_file).startswith(mount):
                continue
            rel = os.path.normpath(str(pw_file)[len(mount):])
            items = src.get("items")
            key = next((i["key"] for i in items if i["path"] == rel), None) if items else rel
            if key is None:
                err(f"{what}: no item of Secret/{src.get('secretName')} is mounted as {rel}")
                return None
            return secret_key(err, objs, what, src.get("secretName"), key, src.get("optional"))
        err(f"{what} is not under a Secret volume mount of the vmcp container")
        return None
    what = f"Deployment/vmcp: env {PASSWORD_ENV}"
    e = next((e for e in c.get("env") or [] if e["name"] == PASSWORD_ENV), None)
    if e is None:
        err(f"Deployment/vmcp: sessionStorage is redis but the vmcp container sets no "
            f"{PASSWORD_ENV} (from the Redis Secret) and config.yaml no passwordFile")
        return None
    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
    if ref is None:
        err(f"{what} is not set from a secretKeyRef (a password belongs in a Secret)")
        return None
    return secret_key(err, objs, what, ref.get("name"), ref.get("key"), ref.get("optional"))


def check_requirepass(err, objs, name, svc, source):
    """The redis-server behind svc requires the password vmcp sends."""
    pod = objs[("Deployment", name)]["spec"]["template"]["spec"]
    for c in pod.get("containers", []):
        args = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
        if not any(os.path.basename(a) == "redis-server" for a in args):
            continue
        where = f"Deployment/{name}: container {c['name']}"
        i = args.index("--requirepass") if "--requirepass" in args else -1
        m = re.fullmatch(r"\$\((\w+)\)", args[i + 1]) if 0 <= i < len(args) - 1 else None
        if m is None:
            err(f"{where}: redis-server has no --requirepass $(VAR), so it requires no password "
                f"(or not the one vmcp sends, Secret/{source[0]} key {source[1]})")
            return
        env = next((e for e in c.get("env") or [] if e["name"] == m.group(1)), {})
        ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
        if (ref.get("name"), ref.get("key")) != source:
            err(f"{where}: --requirepass $({m.group(1)}) comes from Secret/{ref.get('name')} key "
                f"{ref.get('key')}, but vmcp sends Secret/{source[0]} key {source[1]} to "
                f"Service/{svc['metadata']['name']}")
        return
