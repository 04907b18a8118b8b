"""The generated feed protobuf modules, compiled on first use when a checkout lacks them."""

from __future__ import annotations

import importlib
import threading
from types import ModuleType

_lock = threading.Lock()


def modules() -> tuple[ModuleType, ModuleType]:
    """(feed_pb2, feed_pb2_grpc), running `router.protos_build` once if they are missing."""
    with _lock:
        try:
            pb2 = importlib.import_module("router._gen.feed_pb2")
        except ModuleNotFoundError:
            from router.protos_build import build

            if build() != 0:
                raise RuntimeError("protoc failed to compile protos/feed.proto") from None
            importlib.invalidate_caches()
            pb2 = importlib.import_module("router._gen.feed_pb2")
        return pb2, importlib.import_module("router._gen.feed_pb2_grpc")
