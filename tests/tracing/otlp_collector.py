"""A trace collector for the tracing tests: OTLP over gRPC (TraceService/Export) and over
HTTP (POST /v1/traces, protobuf), and Zipkin's JSON v2 (POST /api/v2/spans), on 127.0.0.1.

Prints "GRPC_PORT HTTP_PORT" on its first line, then one JSON line per span received:
transport, service (the resource's service.name), hex ids, name, kind, times, trace_state
and the attributes as a string map. With --stall N, every export is answered only after
N seconds (a collector that holds its callers). Exits at EOF on stdin.
"""
import json
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

STALL = 0.0
LOCK = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    return str(getattr(v, kind)) if kind else ""


def emit(transport, request):
    with LOCK:
        for rs in request.resource_spans:
            service = ""
            for a in rs.resource.attributes:
                if a.key == "service.name":
                    service = value(a.value)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    print(json.dumps({
                        "transport": transport,
                        "service": service,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex(),
                        "name": s.name,
                        "kind": s.kind,
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "trace_state": s.trace_state,
                        "status": s.status.code,
                        "attrs": {a.key: value(a.value) for a in s.attributes},
                    }), flush=True)


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        time.sleep(STALL)
        emit("grpc", request)
        return trace_service_pb2.ExportTraceServiceResponse()


class Http(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def body(self):
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length", "0")))

    def do_POST(self):
        body = self.body()
        time.sleep(STALL)
        if self.path.startswith("/api/v2/spans"):
            self.zipkin(json.loads(body))
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        emit("http", request)
        out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def zipkin(self, spans):
        with LOCK:
            for s in spans:
                start = s.get("timestamp", 0)
                endpoint = s.get("localEndpoint", {})
                print(json.dumps({
                    "transport": "zipkin " + self.headers.get("content-type", ""),
                    "service": endpoint.get("serviceName", ""),
                    "trace_id": s.get("traceId", ""),
                    "span_id": s.get("id", ""),
                    "parent": s.get("parentId", ""),
                    "name": s.get("name", ""),
                    "kind": s.get("kind", ""),
                    "start": start * 1000,
                    "end": (start + s.get("duration", 0)) * 1000,
                    "trace_state": "",
                    "status": 0,
                    "attrs": s.get("tags", {}),
                    "zipkin": {
                        "shared": s.get("shared", False),
                        "annotations": [a.get("value") for a in s.get("annotations", [])],
                        "endpoint": sorted(endpoint.keys()),
                        "port": endpoint.get("port"),
                        "keys": sorted(s.keys()),
                    },
                }), flush=True)

    def log_message(self, *args):
        pass


def main():
    global STALL
    if len(sys.argv) > 2 and sys.argv[1] == "--stall":
        STALL = float(sys.argv[2])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), Http)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    print(grpc_port, http.server_address[1], flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
