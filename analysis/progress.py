"""A progress bar for bootstrap loops that disappears when progress is off."""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def track(items: Iterable[T], total: int, description: str, enabled: bool) -> Iterator[T]:
    """Iterate over items, with a transient rich progress bar when enabled."""
    if enabled:
        from rich.console import Console  # only needed when someone is watching

        # stderr keeps stdout clean for the JSON summary; no terminal, nobody to watch.
        console = Console(stderr=True)
        if console.is_terminal:
            from rich.progress import track as rich_track

            yield from rich_track(items, total=total, description=description,
                                  transient=True, console=console)
            return
    yield from items
