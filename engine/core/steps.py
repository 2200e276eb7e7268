"""Long work as a generator that yields small progress records and returns its result: the one
loop that drives such a generator, for callers that want the steps (a progress bar, a worker's
signals) and the result."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Generic, TypeVar

Step = TypeVar("Step")
Result = TypeVar("Result")


class Steps(Generic[Step, Result]):
    """A generator's steps for a for-loop, and after the loop its return value as `result`
    (which a plain for-loop throws away)."""

    def __init__(self, steps: Generator[Step, None, Result]) -> None:
        self._steps = steps
        self.result: Result | None = None

    def __iter__(self) -> Iterator[Step]:
        self.result = yield from self._steps


def run_steps(
    steps: Generator[Step, None, Result], on_step: Callable[[Step], object] = lambda _: None
) -> Result:
    """Drive the generator to its end, handing each step to on_step; its return value."""
    run = Steps(steps)
    for step in run:
        on_step(step)
    return run.result
