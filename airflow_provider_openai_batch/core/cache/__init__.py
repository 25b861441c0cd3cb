"""The answer cache: content keys, the store of Parquet parts, the build's lookup (docs/cache.md).

Shared by build (which looks answers up) and collect (which adds fresh ones); imports no other
core sub-room.
"""
