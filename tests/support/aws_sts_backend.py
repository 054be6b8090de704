"""An AWS stand-in for vmcp's `aws_sts` tests: moto's STS and a SigV4-checking reverse proxy.

    python aws_sts_backend.py --upstream http://127.0.0.1:PORT/mcp

starts, in this one process, on free loopback ports:

- moto's server (moto[server] 5.2.5), which answers AssumeRoleWithWebIdentity. moto's STS
  model is wrapped to record, per issued access key, the role, session name, requested
  duration and web identity token of the assumption (moto keeps no token), and to shorten
  the credentials' lifetime on request (`POST /ctl/lifetime {"seconds": N}`), as a real STS
  would issue credentials that expire soon;
- a reverse proxy in front of `--upstream` (an MCP server) that checks the SigV4 signature
  of every request carrying one with botocore's signer and the credentials moto issued for
  its access key: unknown key, wrong session token, expired credentials, a date more than
  5 minutes off, a signature that does not match (method, path, query, signed headers or
  the SHA-256 of the body as received) -> 403. A request without a signature is forwarded
  (vmcp's probes and its own session run without user credentials), except `tools/call`,
  which gets 403. Accepted requests are forwarded with their body; answers stream back
  (SSE included).

It prints one JSON line when both listen: {"sts": URL, "backend": URL, "control": URL}.
Control endpoints (on the proxy's port):
  GET  /ctl/log        -> every request seen: method, rpc method, verdict, key, role, session
  GET  /ctl/issued     -> every assumption: key, secret, session token, role, session,
                          requested duration, web identity token, expiration
  GET  /ctl/last/M     -> the last accepted signed request of HTTP method M (method, path,
                          headers, body b64)
  POST /ctl/lifetime   -> {"seconds": N}: later credentials expire N seconds after issue
  POST /ctl/refuse     -> {"role": ARN, "code": CODE}: assumptions of that role get STS's
                          error CODE
  POST /ctl/replay     -> {"method", "path", "headers", "body_b64"}: checked like a request,
                          answers {"status": 200 | 403, "why": ...} without forwarding
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import http.client
import json
import re
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto.server import ThreadedMotoServer
from moto.sts import responses as sts_responses
from moto.sts.exceptions import STSClientError
from moto.sts.models import STSBackend

LOCK = threading.Lock()
ISSUED = {}  # access key id -> record
LOG = []
LAST = {}  # HTTP method -> last accepted signed request
LIFETIME = [None]
REFUSE = {}  # role ARN -> STS error code
PENDING = threading.local()

_orig_response = sts_responses.TokenResponse.assume_role_with_web_identity
_orig_backend = STSBackend.assume_role_with_web_identity


class Refused(STSClientError):
    """An STS error answer: moto serialises it as STS would (an `ErrorResponse`)."""


def _response(self):
    PENDING.token = self._get_param("WebIdentityToken")
    PENDING.asked = self._get_int_param("DurationSeconds", 3600)
    with LOCK:
        code = REFUSE.get(self._get_param("RoleArn"))
    if code:
        raise Refused(code, "refused by the test")
    return _orig_response(self)


def _backend(self, **kwargs):
    with LOCK:
        if LIFETIME[0] is not None:
            kwargs["duration"] = LIFETIME[0]
    role = _orig_backend(self, **kwargs)
    with LOCK:
        ISSUED[role.access_key_id] = {
            "key": role.access_key_id,
            "secret": role.secret_access_key,
            "session_token": role.session_token,
            "role": role.role_arn,
            "session": role.session_name,
            "asked_duration": getattr(PENDING, "asked", None),
            "token": getattr(PENDING, "token", None),
            "expiration": role.expiration.replace(tzinfo=datetime.timezone.utc).timestamp(),
        }
    return role


sts_responses.TokenResponse.assume_role_with_web_identity = _response
STSBackend.assume_role_with_web_identity = _backend

AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, ?"
    r"SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$"
)
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-connection", "host", "content-length"}


def verify(method, path, headers, body):
    """(ok, why, record) for one request; headers is a dict of lower-case names."""
    m = AUTH_RE.match(headers.get("authorization", ""))
    if not m:
        return False, "no SigV4 authorization header", None
    akid, date, region, service, signed, sig = m.groups()
    with LOCK:
        rec = ISSUED.get(akid)
    if rec is None:
        return False, "unknown access key", None
    if headers.get("x-amz-security-token") != rec["session_token"]:
        return False, "wrong session token", rec
    now = datetime.datetime.now(datetime.timezone.utc)
    if rec["expiration"] <= now.timestamp():
        return False, "expired credentials", rec
    amz_date = headers.get("x-amz-date", "")
    try:
        t = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc)
    except ValueError:
        return False, "bad x-amz-date", rec
    if abs((now - t).total_seconds()) > 300 or amz_date[:8] != date:
        return False, "request time out of range", rec
    names = signed.split(";")
    for required in ("host", "x-amz-date", "x-amz-security-token"):
        if required not in names:
            return False, f"{required} is not signed", rec
    if any(n not in headers for n in names):
        return False, "a signed header is missing", rec
    digest = hashlib.sha256(body).hexdigest()
    if "x-amz-content-sha256" in headers and headers["x-amz-content-sha256"] != digest:
        return False, "x-amz-content-sha256 does not match the body", rec
    req = AWSRequest(method=method, url="http://" + headers["host"] + path, data=body,
                     headers={n: headers[n] for n in names})
    req.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(akid, rec["secret"], rec["session_token"]), service, region)
    expected = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
    if not hmac.compare_digest(expected, sig):
        return False, "signature mismatch", rec
    return True, "ok", rec


def rpc_method(body):
    try:
        return json.loads(body or b"null").get("method")
    except (ValueError, AttributeError):
        return None


class Proxy(BaseHTTPRequestHandler):
    upstream = None  # urllib.parse.SplitResult

    def log_message(self, *args):
        pass

    def _json(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def _control(self, body):
        if self.path == "/ctl/log":
            with LOCK:
                return self._json(200, list(LOG))
        if self.path == "/ctl/issued":
            with LOCK:
                # Secrets included: the tests check they never reach vmcp's log.
                return self._json(200, list(ISSUED.values()))
        if self.path.startswith("/ctl/last/"):
            with LOCK:
                return self._json(200, LAST.get(self.path[len("/ctl/last/"):], {}))
        if self.path == "/ctl/lifetime":
            with LOCK:
                LIFETIME[0] = json.loads(body)["seconds"]
            return self._json(200, {"ok": True})
        if self.path == "/ctl/refuse":
            r = json.loads(body)
            with LOCK:
                REFUSE[r["role"]] = r["code"]
            return self._json(200, {"ok": True})
        if self.path == "/ctl/replay":
            r = json.loads(body)
            ok, why, _ = verify(r["method"], r["path"], r["headers"],
                                base64.b64decode(r["body_b64"]))
            return self._json(200, {"status": 200 if ok else 403, "why": why})
        return self._json(404, {"error": "unknown control endpoint"})

    def _handle(self):
        body = self._body()
        if self.path.startswith("/ctl/"):
            return self._control(body)
        headers = {k.lower(): v for k, v in self.headers.items()}
        method = rpc_method(body)
        signed = "authorization" in headers
        entry = {"http": self.command, "rpc": method, "signed": signed}
        if signed:
            ok, why, rec = verify(self.command, self.path, headers, body)
            entry.update(verdict=why, key=rec and rec["key"], role=rec and rec["role"],
                         session=rec and rec["session"])
            with LOCK:
                LOG.append(entry)
                if ok:
                    LAST[self.command] = dict(method=self.command, path=self.path,
                                              headers=headers,
                                              body_b64=base64.b64encode(body).decode())
            if not ok:
                return self._json(403, {"error": "SigV4 check failed: " + why})
        else:
            entry["verdict"] = "unsigned"
            with LOCK:
                LOG.append(entry)
            if method == "tools/call":
                return self._json(403, {"error": "tools/call needs a SigV4 signature"})
        self._forward(headers, body)

    def _forward(self, headers, body):
        up = self.upstream
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
        out = {k: v for k, v in headers.items()
               if k not in HOP and k != "authorization" and not k.startswith("x-amz-")}
        out["content-length"] = str(len(body))
        conn.request(self.command, up.path, body=body if body else None, headers=out)
        resp = conn.getresponse()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        # HTTP/1.0 style: the answer (an SSE stream too) ends when the connection closes.
        self.send_header("connection", "close")
        self.end_headers()
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            self.wfile.write(chunk)
            self.wfile.flush()
        conn.close()

    do_GET = do_POST = do_DELETE = _handle


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    args = ap.parse_args()
    Proxy.upstream = urllib.parse.urlsplit(args.upstream)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    _, sts_port = moto.get_host_and_port()
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    proxy.daemon_threads = True
    port = proxy.server_address[1]
    print(json.dumps({
        "sts": f"http://127.0.0.1:{sts_port}",
        "backend": f"http://127.0.0.1:{port}{Proxy.upstream.path}",
        "control": f"http://127.0.0.1:{port}",
    }), flush=True)
    try:
        proxy.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
