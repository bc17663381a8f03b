"""A resource released by `close()`, usable in a `with` block: one definition of the context
manager every such class of the box and the back office would otherwise write out again.

Invariant: leaving the `with` block calls `close()` once, whatever the block raised (the
exception goes on); `close()` itself stays each class's own, and idempotent where documented.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class Closing(abc.ABC):
    """Mixin: `with resource:` closes it. A subclass implements `close`."""

    __slots__ = ()

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the resource holds (a file, a lock, a database)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
