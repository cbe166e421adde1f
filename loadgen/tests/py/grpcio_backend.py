"""A fanout.v1.Backend on grpcio (gRPC's C core), for the loadgen's conformance tests.

Fetch and Stats take and give raw bytes (a generic handler, no generated code): every Fetch is
answered, after a short sleep so streams pile up, with an empty FetchReply (b"", a valid empty
protobuf message), and Stats with an empty ServerStats.

    grpcio_backend.py [--max-streams N] [--sleep-ms MS] [--goaway-after S] [--grace S]

Listens on 127.0.0.1 on a free port and prints the port on a line of its own. With
--goaway-after, stops the server that many seconds after it started (`server.stop(grace)`:
GOAWAY to its clients, the calls in flight get `grace` seconds to finish), prints "stopped" and
exits. Otherwise it serves until stdin closes (or it is killed).
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
    server = grpc.server(
        # More threads than streams allowed, so the limit is the server's HTTP/2 one.
        futures.ThreadPoolExecutor(max_workers=max(8, 2 * args.max_streams)),
        handlers=[handler],
        options=[("grpc.max_concurrent_streams", args.max_streams)],
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
