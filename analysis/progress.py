"""A progress bar for bootstrap loops that disappears when progress is off."""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def track(items: Iterable[T], total: int, description: str, enabled: bool) -> Iterator[T]:
    """Iterate over items, with a transient rich progress bar when enabled."""
    if not enabled:
        yield from items
        return
    from rich.progress import track as rich_track  # only needed when someone is watching

    yield from rich_track(items, total=total, description=description, transient=True)
