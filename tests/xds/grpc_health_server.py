"""A gRPC server with only grpc.health.v1.Health, for the health-check tests.

Prints its port on the first line, then reads commands on stdin: `SERVICE STATUS` sets the
status of SERVICE ("" is written as `-`) to SERVING or NOT_SERVING. Exits at EOF.
"""
import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    for line in sys.stdin:
        parts = line.split()
        if len(parts) != 2:
            continue
        service = "" if parts[0] == "-" else parts[0]
        status = health_pb2.HealthCheckResponse.ServingStatus.Value(parts[1])
        servicer.set(service, status)
        print("ok", flush=True)
    server.stop(0)


if __name__ == "__main__":
    main()
