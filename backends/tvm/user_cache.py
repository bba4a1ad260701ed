"""Where nasir keeps what it learns about this machine for every later run: the latency
cache, the per-layer table, the tuning databases and the machine's speed reference.

>>> import os
>>> saved = os.environ.pop("NASIR_CACHE_DIR", None)
>>> cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "nasir")
True
>>> os.environ["NASIR_CACHE_DIR"] = "/tmp/nasir-cache-example"
>>> cache_dir()
'/tmp/nasir-cache-example'
>>> _ = os.environ.pop("NASIR_CACHE_DIR")
>>> if saved is not None:
...     os.environ["NASIR_CACHE_DIR"] = saved
"""

from __future__ import annotations

import os

__all__ = ["cache_dir"]


def cache_dir() -> str:
    """``$NASIR_CACHE_DIR``, else ``~/.cache/nasir``."""
    return os.environ.get("NASIR_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "nasir")
