"""Counting XLA compilations in tests (through JAX's monitoring events, no private APIs)."""

import contextlib
from typing import Callable, Iterator

import jax

_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def recording_compiles() -> Iterator[list[str]]:
    """Yields a list that collects one entry per backend compilation inside the block; the
    list stays readable after the block, also when the block raised."""
    events: list[str] = []

    def listener(name, _duration, **_):
        if name == _EVENT:
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def count_compiles(fn: Callable[[], object]) -> int:
    """Runs `fn` and returns how many backend compilations happened meanwhile."""
    with recording_compiles() as events:
        fn()
    return len(events)
