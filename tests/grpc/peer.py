"""gRPC peers for the HTTP/2 and gRPC tests, on grpcio's generic handlers (raw bytes, no
generated stubs).

`peer.py server` serves service `zh.Test` on 127.0.0.1 (port printed on the first line) until
stdin closes:
  Unary         echoes the request; a request `status:N:msg` answers status N with `msg`
                and trailing metadata x-trailer: t; `sleep:S` sleeps S seconds first;
                `big:N` answers N bytes.
  ServerStream  sends N (the request, in decimal) messages `m<i>`.
  ClientStream  answers the total of the request lengths, in decimal.
  Bidi          answers each message with `echo:<message>`.
`peer.py client HOST:PORT` runs the suite against HOST:PORT and prints one JSON object per
case: its code, details, a digest of what came back, the trailing metadata it carried.

`peer.py server NAME` also serves grpc.health.v1.Health (overall status SERVING; a line
`SERVING` or `NOT_SERVING` on stdin sets it, answered `ok`), and answers a Unary `who`
with NAME. `peer.py who HOST:PORT N` makes N `who` calls and prints the names, counted, as
JSON.
"""
import hashlib
import json
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "zh.Test"


NAME = None


def unary(request, context):
    text = request.decode("latin-1")
    if text == "who":
        return (NAME or "?").encode()
    if text.startswith("sleep:"):
        deadline = time.time() + float(text.split(":")[1])
        while time.time() < deadline and context.is_active():
            time.sleep(0.02)
        return b"slept"
    if text.startswith("status:"):
        _, code, msg = text.split(":", 2)
        context.set_trailing_metadata((("x-trailer", "t"),))
        context.abort(grpc.StatusCode[code], msg)
    if text.startswith("big:"):
        n = int(text.split(":")[1])
        return bytes(i % 251 for i in range(n))
    context.set_trailing_metadata((("x-trailer", "t"),))
    return request


def server_stream(request, context):
    for i in range(int(request.decode())):
        if not context.is_active():
            return
        yield b"m%d" % i


def client_stream(requests, context):
    return str(sum(len(r) for r in requests)).encode()


def bidi(requests, context):
    for r in requests:
        yield b"echo:" + r


def serve():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                         options=[("grpc.max_receive_message_length", 64 << 20),
                                  ("grpc.max_send_message_length", 64 << 20)])
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    health = None
    if NAME is not None:
        from grpc_health.v1 import health as h, health_pb2, health_pb2_grpc
        health = h.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        health.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    for line in sys.stdin:
        if health is not None and line.strip() in ("SERVING", "NOT_SERVING"):
            from grpc_health.v1 import health_pb2
            health.set("", health_pb2.HealthCheckResponse.ServingStatus.Value(line.strip()))
            print("ok", flush=True)
    server.stop(0)


def who(target, n):
    ch = grpc.insecure_channel(target)
    u = ch.unary_unary("/%s/Unary" % SERVICE)
    counts = {}
    for _ in range(n):
        try:
            name = u(b"who", timeout=5).decode()
        except grpc.RpcError as e:
            name = e.code().name
        counts[name] = counts.get(name, 0) + 1
    print(json.dumps(counts, sort_keys=True), flush=True)


def digest(data):
    return "%d:%s" % (len(data), hashlib.sha256(data).hexdigest()[:16])


def outcome(name, call_or_err, payload):
    code, details, trailers = "OK", "", []
    if isinstance(call_or_err, grpc.RpcError):
        code = call_or_err.code().name
        details = call_or_err.details() or ""
        trailers = call_or_err.trailing_metadata() or []
    elif call_or_err is not None:
        trailers = call_or_err.trailing_metadata() or []
    # A timing differs run to run: its name is kept, not its value.
    keep = sorted("%s=%s" % (k, "N" if k == "x-envoy-upstream-service-time" else v)
                  for k, v in trailers if k.startswith("x-"))
    return {"case": name, "code": code, "details": details, "got": payload, "trailers": keep}


def client(target):
    opts = [("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20)]
    ch = grpc.insecure_channel(target, options=opts)
    u = ch.unary_unary("/%s/Unary" % SERVICE)
    ss = ch.unary_stream("/%s/ServerStream" % SERVICE)
    cs = ch.stream_unary("/%s/ClientStream" % SERVICE)
    bd = ch.stream_stream("/%s/Bidi" % SERVICE)
    out = []

    def run(name, f):
        try:
            payload, call = f()
            out.append(outcome(name, call, payload))
        except grpc.RpcError as e:
            out.append(outcome(name, e, ""))

    run("unary", lambda: (lambda r: (digest(r[0]), r[1]))(u.with_call(b"hello", timeout=10)))
    big = bytes(i % 253 for i in range(3 << 20))
    run("unary 3 MiB each way", lambda: (lambda r: (digest(r[0]), r[1]))(u.with_call(big, timeout=20)))
    run("unary big answer", lambda: (lambda r: (digest(r[0]), r[1]))(u.with_call(b"big:5000000", timeout=20)))
    run("status", lambda: u.with_call(b"status:NOT_FOUND:no such thing", timeout=10))
    # Client and server time out at once: which one's answer wins is a race, so only the
    # code is compared.
    try:
        u.with_call(b"sleep:3", timeout=0.5)
        out.append({"case": "deadline", "code": "OK", "details": "", "got": "", "trailers": []})
    except grpc.RpcError as e:
        out.append({"case": "deadline", "code": e.code().name, "details": e.details() or "", "got": "", "trailers": []})
    # Local replies, gRPC-shaped: the routes choose by `x-target` (see the tests' config).
    run("no healthy upstream", lambda: u.with_call(b"x", timeout=10, metadata=(("x-target", "dead"),)))
    run("route timeout", lambda: u.with_call(b"sleep:2", timeout=10, metadata=(("x-target", "slow"),)))
    run("no route", lambda: u.with_call(b"x", timeout=10, metadata=(("x-target", "nowhere"),)))

    def server_streaming():
        call = ss(b"200", timeout=10)
        got = b"".join(call)
        return digest(got), call
    run("server streaming", server_streaming)

    def client_streaming():
        r, call = cs.with_call(iter([b"x" * i for i in range(100)]), timeout=10)
        return r.decode(), call
    run("client streaming", client_streaming)

    def bidi_streaming():
        call = bd(iter([b"%d" % i for i in range(50)]), timeout=10)
        got = [m for m in call]
        return digest(b"|".join(got)), call
    run("bidi streaming", bidi_streaming)

    def cancelled():
        call = ss(b"100000", timeout=10)
        n = 0
        for _ in call:
            n += 1
            if n == 10:
                call.cancel()
                break
        try:
            call.code()
        except Exception:
            pass
        return "cancelled after %d" % n, None
    run("cancel", cancelled)

    # Many unary calls at once, over the one channel (streams multiplexed).
    def concurrent():
        results = [None] * 200
        def one(i):
            try:
                results[i] = u(b"c%d" % i, timeout=10)
            except grpc.RpcError as e:
                results[i] = e.code().name
        threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ok = sum(1 for i, r in enumerate(results) if r == b"c%d" % i)
        return "%d/200" % ok, None
    run("200 concurrent", concurrent)
    for o in out:
        print(json.dumps(o, sort_keys=True), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        if len(sys.argv) > 2:
            NAME = sys.argv[2]
        serve()
    elif sys.argv[1] == "who":
        who(sys.argv[2], int(sys.argv[3]))
    else:
        client(sys.argv[2])
