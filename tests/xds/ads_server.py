"""A scripted ADS and SDS server for zerohop's tests and benchmarks (grpcio + xds-protos).

It serves both StreamAggregatedResources (state of the world) and DeltaAggregatedResources,
and SecretDiscoveryService's StreamSecrets and DeltaSecrets (type "sds" only, as an SDS
server named by an api_config_source, pilot-agent's sds-grpc, serves them),
like a snapshot-cache control plane (go-control-plane's model): the driver sets, per type,
a version and its resources; the server pushes to each subscribed client whatever that
client does not yet hold, and waits for the ACK or NACK of a response before sending that
type again.

Driven over stdin/stdout, one JSON object per line.

stdin (commands):
  {"op": "set", "type": "cds", "version": "2", "resources": [{...proto3 JSON with @type...}]}
  {"op": "restart"}          stop the server (streams cut) and serve again on the same port
  {"op": "close"}            end every open stream with UNAVAILABLE; the server stays up
  {"op": "quit"}

stdout (events):
  {"event": "listening", "port": N, "unix": "path or null"}    (--unix PATH: a Unix socket)
  {"event": "stream", "api": "sotw"|"delta"|"sds-sotw"|"sds-delta", "peer": "...",
   "node": "node id or empty"}
  {"event": "request", "api": ..., "type": "cds", "version_info": ..., "nonce": ...,
   "names": [...], "subscribe": [...], "unsubscribe": [...], "initial_versions": {...},
   "error": "error_detail message or null", "t": monotonic seconds}
  {"event": "response", "api": ..., "type": ..., "version": ..., "nonce": ..., "names": [...],
   "removed": [...], "t": monotonic seconds}
  {"event": "set", "type": ..., "version": ..., "t": monotonic seconds}
Every event also carries "mono_ns", CLOCK_MONOTONIC in nanoseconds, which other processes
on the host read on the same clock (the benchmark compares it with the shards' ack times).
"""

import argparse
import hashlib
import itertools
import json
import queue
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import any_pb2, json_format

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

# Every message type a test resource may carry, registered in the default pool.
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.network.dns_resolver.cares.v3 import (  # noqa: F401
    cares_dns_resolver_pb2,
)
from udpa.type.v1 import typed_struct_pb2  # noqa: F401
from xds.type.v3 import typed_struct_pb2 as xds_typed_struct_pb2  # noqa: F401

TYPES = {
    "cds": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "eds": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "lds": "type.googleapis.com/envoy.config.listener.v3.Listener",
    "rds": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "sds": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
}
SHORT = {v: k for k, v in TYPES.items()}
WILDCARD = {"cds", "lds"}

OUT = threading.Lock()
START = time.monotonic()


def emit(**event):
    now = time.monotonic_ns()  # CLOCK_MONOTONIC, comparable with other processes
    event.setdefault("t", now / 1e9 - START)
    event["mono_ns"] = now
    with OUT:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def resource_name(short, d):
    return d.get("cluster_name" if short == "eds" else "name", "")


class State:
    """What the driver set: per type, a version and {name: (Any, resource version)}."""

    def __init__(self):
        self.lock = threading.Condition()
        self.types = {t: ("", {}) for t in TYPES}
        self.generation = 0

    def set(self, short, version, resources):
        table = {}
        for d in resources:
            a = any_pb2.Any()
            json_format.ParseDict(d, a)
            digest = hashlib.sha256(a.SerializeToString()).hexdigest()[:16]
            table[resource_name(short, d)] = (a, digest)
        with self.lock:
            self.types[short] = (version, table)
            self.generation += 1
            self.lock.notify_all()


NONCES = itertools.count(1)


class Stream:
    """One client stream: what it asked for and what it was sent."""

    def __init__(self, state, api, context):
        self.state = state
        self.api = api
        self.delta = api.endswith("delta")
        self.context = context
        self.requests = queue.Queue()
        self.subscribed = {t: set() for t in TYPES}  # names; empty + wildcard = all
        self.requested = set()  # types the client asked for
        self.in_flight = {}  # type -> nonce awaiting ACK/NACK
        self.sent_version = {}  # SotW: type -> (version, names) last sent
        self.client_has = {t: {} for t in TYPES}  # delta: type -> {name: version}
        self.answered = set()  # delta: types this stream has sent a response of
        self.done = False

    def wanted(self, short, table):
        if short in WILDCARD and (not self.subscribed[short] or "*" in self.subscribed[short]):
            return dict(table)
        return {n: v for n, v in table.items() if n in self.subscribed[short]}

    def on_request(self, r):
        short = SHORT.get(r.type_url)
        event = {
            "event": "request",
            "api": self.api,
            "type": short or r.type_url,
            "nonce": r.response_nonce,
            "error": r.error_detail.message if r.HasField("error_detail") else None,
        }
        if not self.delta:
            event["version_info"] = r.version_info
            event["names"] = sorted(r.resource_names)
        else:
            event["subscribe"] = sorted(r.resource_names_subscribe)
            event["unsubscribe"] = sorted(r.resource_names_unsubscribe)
            event["initial_versions"] = dict(r.initial_resource_versions)
        emit(**event)
        if short is None:
            return
        self.requested.add(short)
        if self.in_flight.get(short) == r.response_nonce:
            del self.in_flight[short]
        elif r.response_nonce and short in self.in_flight:
            return  # stale nonce: an answer to an older response
        if not self.delta:
            self.subscribed[short] = set(r.resource_names)
            if not r.response_nonce and r.version_info:
                # Reconnect: the client already holds this version.
                version, table = self.state.types[short]
                if r.version_info == version:
                    self.sent_version[short] = (version, frozenset(self.subscribed[short]))
        else:
            self.subscribed[short] |= set(r.resource_names_subscribe)
            self.subscribed[short] -= set(r.resource_names_unsubscribe)
            for n in r.resource_names_unsubscribe:
                self.client_has[short].pop(n, None)
            for n, v in r.initial_resource_versions.items():
                self.client_has[short][n] = v

    def responses(self):
        """Yields what the client should be sent now, type by type."""
        out = []
        for short in ("cds", "eds", "lds", "rds", "sds"):
            if short not in self.requested or short in self.in_flight:
                continue
            version, table = self.state.types[short]
            wanted = self.wanted(short, table)
            nonce = str(next(NONCES))
            if not self.delta:
                key = (version, frozenset(self.subscribed[short]))
                if self.sent_version.get(short) == key:
                    continue
                if short not in WILDCARD and not self.subscribed[short]:
                    continue
                resp = discovery_pb2.DiscoveryResponse(
                    version_info=version, type_url=TYPES[short], nonce=nonce
                )
                resp.resources.extend(a for a, _ in wanted.values())
                self.sent_version[short] = key
                names, removed = sorted(wanted), []
            else:
                has = self.client_has[short]
                changed = {n: v for n, v in wanted.items() if has.get(n) != v[1]}
                removed = sorted(n for n in has if n not in wanted)
                # The first answer to a wildcard subscription goes out even when empty (as
                # go-control-plane does): the client's initialisation waits for it.
                first = short in WILDCARD and short not in self.answered and version
                if not changed and not removed and not first:
                    continue
                self.answered.add(short)
                resp = discovery_pb2.DeltaDiscoveryResponse(
                    system_version_info=version, type_url=TYPES[short], nonce=nonce,
                    removed_resources=removed,
                )
                for n, (a, digest) in sorted(changed.items()):
                    resp.resources.add(name=n, version=digest, resource=a)
                    has[n] = digest
                for n in removed:
                    del has[n]
                names = sorted(changed)
            self.in_flight[short] = nonce
            emit(event="response", api=self.api, type=short, version=version, nonce=nonce,
                 names=names, removed=removed)
            out.append(resp)
        return out


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer, sds_pb2_grpc.SecretDiscoveryServiceServicer):
    """Both services share one servicer: SDS streams are told apart by their "api"."""

    def __init__(self, state):
        self.state = state
        self.streams = []
        self.lock = threading.Lock()

    def serve(self, api, request_iterator, context):
        stream = Stream(self.state, api, context)
        with self.lock:
            self.streams.append(stream)

        def reader():
            try:
                for r in request_iterator:
                    stream.requests.put(r)
            except Exception:  # noqa: BLE001 - the stream ended
                pass
            stream.requests.put(None)

        threading.Thread(target=reader, daemon=True).start()
        first = True
        try:
            while context.is_active() and not stream.done:
                try:
                    r = stream.requests.get(timeout=0.01)
                except queue.Empty:
                    r = False
                if r is None:
                    return
                if r:
                    if first:
                        first = False
                        emit(event="stream", api=api, peer=context.peer(), node=r.node.id)
                    with self.state.lock:
                        stream.on_request(r)
                with self.state.lock:
                    out = stream.responses()
                for resp in out:
                    yield resp
        finally:
            with self.lock:
                self.streams.remove(stream)
            emit(event="closed", api=api)

    def StreamAggregatedResources(self, request_iterator, context):
        yield from self.serve("sotw", request_iterator, context)

    def DeltaAggregatedResources(self, request_iterator, context):
        yield from self.serve("delta", request_iterator, context)

    def StreamSecrets(self, request_iterator, context):
        yield from self.serve("sds-sotw", request_iterator, context)

    def DeltaSecrets(self, request_iterator, context):
        yield from self.serve("sds-delta", request_iterator, context)

    def close_all(self):
        with self.lock:
            for s in self.streams:
                s.done = True


def start(state, port, unix=None):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    servicer = Ads(state)
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(servicer, server)
    sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"unix:{unix}" if unix else f"127.0.0.1:{port}")
    server.start()
    return server, servicer, bound


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--unix", help="listen on this Unix socket path instead of TCP")
    args = p.parse_args()
    state = State()
    server, servicer, port = start(state, args.port, args.unix)
    emit(event="listening", port=port, unix=args.unix)
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "set":
            state.set(cmd["type"], cmd["version"], cmd.get("resources", []))
            emit(event="set", type=cmd["type"], version=cmd["version"])
        elif op == "restart":
            server.stop(grace=None).wait()
            time.sleep(cmd.get("down_seconds", 0))
            server, servicer, _ = start(state, port, args.unix)
            emit(event="restarted", port=port)
        elif op == "close":
            servicer.close_all()
        elif op == "quit":
            break
    server.stop(grace=None)


if __name__ == "__main__":
    main()
