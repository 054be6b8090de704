#!/usr/bin/env python3
"""Round-trip time of `resources/read` with a long URI through a running vmcp (issue 6: a 1 MB
URI must be refused in well under 10 ms). Needs a Legacy session-capable gateway whose catalog
has the fixture's `test://template/{id}/data` template, e.g. examples/quickstart.yaml.

    scripts/measure-long-uri.py [http://127.0.0.1:4483/mcp]
"""
import http.client
import json
import sys
import time
import urllib.parse

url = urllib.parse.urlparse(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:4483/mcp")
conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def post(body, sid=None):
    h = dict(HEADERS, **({"Mcp-Session-Id": sid} if sid else {}))
    conn.request("POST", url.path, body=json.dumps(body).encode(), headers=h)
    r = conn.getresponse()
    return r.getheader("Mcp-Session-Id"), r.read()


sid, _ = post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "m", "version": "0"}}})
post({"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
for n in (1024, 64 * 1024, 1024 * 1024):
    uri = "test://template/" + "a" * n + "/data"
    times = []
    for i in range(20):
        t = time.perf_counter()
        _, reply = post({"jsonrpc": "2.0", "id": 2 + i, "method": "resources/read", "params": {"uri": uri}}, sid)
        times.append(time.perf_counter() - t)
    times.sort()
    outcome = json.loads(reply)
    what = outcome["error"]["message"][:60] if "error" in outcome else "read"
    print(f"{n:>8} bytes: p50 {times[10] * 1000:.2f} ms, max {times[-1] * 1000:.2f} ms  ({what})")
