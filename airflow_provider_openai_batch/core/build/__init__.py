"""Building: records or files in, request lines out, cut into shards under the Batch API's limits.

Build streams; it validates each line through :mod:`..validate` as it writes it, so nothing
invalid reaches a shard and nothing is uploaded that the API would refuse.
"""
