"""The Arrow memory pool that reconciliation and delivery allocate from.

pyarrow's Linux wheels default to mimalloc, which keeps freed pages for reuse. Our batches are
made on one thread and freed on another (the Parquet writer's), and with mimalloc the peak RSS of
reconciling 1.2M results was 30 to 45 MB higher and crept up with the number of shards (``make bench``).
jemalloc hands freed pages back after a short decay, so the peak levels off within the first
shard; the system allocator is the fallback where a wheel has no jemalloc.

The switch is scoped, but process-wide while it lasts (other threads allocate from it too). Every
buffer remembers the pool it came from, so buffers made before or after are freed where they
belong. A user who set ``ARROW_DEFAULT_MEMORY_POOL`` has chosen; that choice is left alone. (The
variable also moves Arrow's C++ internals, which the scope cannot reach, so setting it to
``jemalloc`` in the worker's environment saves another ~15 MB.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

CHOICE_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def returning_pool() -> pa.MemoryPool:
    """jemalloc where this pyarrow has it, else the system allocator."""
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.system_memory_pool()


@contextmanager
def pool_that_returns_memory() -> Iterator[pa.MemoryPool]:
    """Make :func:`returning_pool` pyarrow's default pool for the scope (unless the user chose one)."""
    if os.environ.get(CHOICE_VARIABLE):
        yield pa.default_memory_pool()
        return
    previous = pa.default_memory_pool()
    pool = returning_pool()
    pa.set_memory_pool(pool)
    try:
        yield pool
    finally:
        pa.set_memory_pool(previous)
