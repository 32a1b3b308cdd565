"""A least-recently-used cache bounded by the bytes its values hold (per process): the backgrounds of
:class:`augment.composite.BackgroundStore` and the decoded cutouts of :mod:`augment.cutouts`."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

V = TypeVar("V")


class ByteLRU(Generic[V]):
    """Values by key, the least recently used dropped once their bytes (``size(value)``) pass ``limit``;
    the last one put is always kept, however large."""

    def __init__(self, limit: int | Callable[[], int], size: Callable[[V], int]) -> None:
        # A limit given as a function is the process's own (its memory and CPUs): one that unpickles
        # the cache (a Ray worker, on another machine) asks it again rather than taking the maker's.
        self._limit_of = limit if callable(limit) else None
        self.limit = limit() if callable(limit) else limit
        self._size = size
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable) -> V | None:
        """The value of ``key`` (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: Hashable, value: V) -> bool:
        """Keep ``value``, dropping the least recently used past the limit; whether anything was dropped."""
        if key in self._entries:
            self.bytes -= self._entries.pop(key)[1]
        size = self._size(value)
        self._entries[key] = (value, size)
        self.bytes += size
        dropped = False
        while self.bytes > self.limit and len(self._entries) > 1:
            self.bytes -= self._entries.popitem(last=False)[1][1]
            dropped = True
        return dropped

    def __getstate__(self) -> dict:  # a pickled cache (a Ray job's) travels empty: its values are made again
        return {"limit": self._limit_of or self.limit, "_size": self._size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["limit"], state["_size"])  # type: ignore[misc]

    def full(self) -> bool:
        return self.bytes >= self.limit
