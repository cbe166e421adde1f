"""A fanout.v1.Backend on grpcio (gRPC's C core), for the loadgen's conformance tests.

Fetch and Stats take and give raw bytes (a generic handler, no generated code): every Fetch is
answered, after a short sleep so streams pile up, with an empty FetchReply (b"", a valid empty
protobuf message), and Stats with an empty ServerStats.

    grpcio_backend.py [--max-streams N] [--sleep-ms MS] [--goaway-after S] [--grace S]
                      [--max-age-ms MS] [--keepalive-ms MS]

Listens on 127.0.0.1 on a free port and prints the port on a line of its own. With
--goaway-after, stops the server that many seconds after it started (`server.stop(grace)`:
GOAWAY to its clients, the calls in flight get `grace` seconds to finish), prints "stopped" and
exits. Otherwise it serves until stdin closes (or it is killed).

--max-age-ms: the server ends each connection (GOAWAY) after about that long, as production
servers with a maximum connection age do; its calls get 10 s to finish.
--keepalive-ms: the server pings each client that often (and gives up on a connection whose
pings go unanswered for 500 ms), and enforces a strict policy on the client's own pings (at
most one every 5 minutes, one strike): gRPC C core's keepalive, both ways.
"""

import argparse
import sys
import threading
import time
from concurrent import futures

import grpc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-streams", type=int, default=4)
    parser.add_argument("--sleep-ms", type=float, default=2.0)
    parser.add_argument("--goaway-after", type=float, default=None)
    parser.add_argument("--grace", type=float, default=0.2)
    parser.add_argument("--max-age-ms", type=int, default=None)
    parser.add_argument("--keepalive-ms", type=int, default=None)
    args = parser.parse_args()
    pause = args.sleep_ms / 1000.0

    def fetch(request, context):
        if pause > 0:
            time.sleep(pause)
        return b""

    def stats(request, context):
        return b""

    identity = lambda b: b
    handler = grpc.method_handlers_generic_handler(
        "fanout.v1.Backend",
        {
            "Fetch": grpc.unary_unary_rpc_method_handler(
                fetch, request_deserializer=identity, response_serializer=identity
            ),
            "Stats": grpc.unary_unary_rpc_method_handler(
                stats, request_deserializer=identity, response_serializer=identity
            ),
        },
    )
    options = [("grpc.max_concurrent_streams", args.max_streams)]
    if args.max_age_ms is not None:
        options += [
            ("grpc.max_connection_age_ms", args.max_age_ms),
            ("grpc.max_connection_age_grace_ms", 10_000),
        ]
    if args.keepalive_ms is not None:
        options += [
            ("grpc.keepalive_time_ms", args.keepalive_ms),
            ("grpc.keepalive_timeout_ms", 500),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", 300_000),
            ("grpc.http2.max_ping_strikes", 1),
        ]
    server = grpc.server(
        # More threads than streams allowed, so the limit is the server's HTTP/2 one.
        futures.ThreadPoolExecutor(max_workers=max(8, 2 * args.max_streams)),
        handlers=[handler],
        options=options,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)

    if args.goaway_after is not None:
        time.sleep(args.goaway_after)
        server.stop(args.grace).wait()
        print("stopped", flush=True)
        return

    # Serve until the test closes our stdin (or kills us).
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop(0)), daemon=True).start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
