"""The Redis command packer of the worker's client: redis-py's hiredis packer without its
per-argument Python loop.

redis-py (``HiredisRespSerializer.pack``) walks every argument in Python to turn bytearrays and
memoryviews into bytes before ``hiredis.pack_command`` packs them in C; a batch's script calls carry
~1,000 arguments (the detection scripts, the session store's compare-and-set), and that walk was
the largest part of the worker's Redis cost after the round trips themselves. Our arguments are
str, bytes, int or float, which hiredis packs directly; anything else falls back to redis-py's
packer, so behaviour is unchanged.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.connection import HiredisRespSerializer

_FALLBACK = HiredisRespSerializer()


class FastPacker:
    """``pack(*args)`` as redis-py's connections call it: the command's bytes in a one-item list."""

    def pack(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):
            if " " in first:  # multi-word commands ("SCRIPT LOAD", "CLIENT SETNAME")
                args = (*first.split(), *args[1:])
        elif isinstance(first, bytes) and b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a bytearray or another type hiredis does not take: redis-py's own way
            return _FALLBACK.pack(*args)  # type: ignore[no-any-return]
