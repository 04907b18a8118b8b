"""What one peer of the router's gRPC server may hold: streams, message size, liveness.

Envoy is meant to be the only peer, but whoever reaches the port gets the same
bounds: the router's memory and slots do not depend on a client behaving.
"""

from __future__ import annotations

from router import wire

# A vanished peer (no FIN, no RST) would hold its streams, and their slots, until TCP
# gives up; a ping every 20 s answered within 10 s ends them within 30 s instead.
KEEPALIVE_MS, KEEPALIVE_TIMEOUT_MS = 20_000, 10_000
# Largest message a peer may send: an ext_proc request-headers message is at most Envoy's
# 64 KB of headers plus framing; ADS requests are smaller. gRPC's default is 4 MiB.
MAX_MESSAGE_BYTES = 1024 * 1024


def grpc_options(max_streams: int) -> list[tuple[str, int]]:
    """The gRPC server's limits: streams per connection, message size, keepalive."""
    streams = max_streams + wire.STREAM_HEADROOM
    return [("grpc.so_reuseport", 1),
            ("grpc.max_concurrent_streams", streams),
            # Streams that arrived but that the loop has not picked up yet: gRPC's default
            # of 1,000 reset a burst of 2,000 new streams (a fail-open in Envoy) while the
            # router was still under --max-streams, where it must answer them itself.
            ("grpc.server.max_pending_requests", streams),
            ("grpc.server.max_pending_requests_hard_limit", 2 * streams),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0)]
