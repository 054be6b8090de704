"""An OTLP/HTTP receiver for tests: decodes what an exporter sends with the official OTLP
protobuf definitions (PyPI `opentelemetry-proto`) and appends it to a file as JSON lines.

Usage: otlp_receiver.py DUMP_FILE
Listens on 127.0.0.1 on a free port and prints `listening on PORT` once ready.

Lines in DUMP_FILE:
  {"signal": "span", "trace_id", "span_id", "parent_span_id" (hex), "name", "kind" (OTLP enum:
   2 server, 3 client), "attributes" {key: value}, "resource" {key: value}, "status_code"}
  {"signal": "metric", "name", "resource" {...}, "points": [{"attributes": {...}}]}
Request headers go to DUMP_FILE.requests, one JSON line per export ({"path", "headers"}), so a
test can check the configured export headers arrived without them in the dump itself.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

LOCK = threading.Lock()
DUMP = sys.argv[1]


def value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attrs(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def append(path, lines):
    with LOCK, open(path, "a", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, sort_keys=True) + "\n")


def spans(body):
    req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    for rs in req.resource_spans:
        resource = attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield {
                    "signal": "span",
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "name": s.name,
                    "kind": s.kind,
                    "attributes": attrs(s.attributes),
                    "status_code": s.status.code,
                    "resource": resource,
                }


def metrics(body):
    req = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
    for rm in req.resource_metrics:
        resource = attrs(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                data = getattr(m, m.WhichOneof("data")) if m.WhichOneof("data") else None
                points = [{"attributes": attrs(p.attributes)} for p in getattr(data, "data_points", [])]
                yield {"signal": "metric", "name": m.name, "resource": resource, "points": points}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        append(DUMP + ".requests", [{"path": self.path, "headers": dict(self.headers.items())}])
        try:
            if self.path == "/v1/traces":
                append(DUMP, list(spans(body)))
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            elif self.path == "/v1/metrics":
                append(DUMP, list(metrics(body)))
                answer = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
            else:
                self.send_error(404)
                return
        except Exception as e:  # a body the definitions cannot decode fails the export
            self.send_error(400, str(e))
            return
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def main():
    open(DUMP, "a").close()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
