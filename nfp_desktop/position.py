"""The live position between updates: lock to the engine's last answer, then follow the clock."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PositionClock:
    """Where in the track the music is now, from the last lock and the wall clock (seconds)."""

    offset_s: float = 0.0
    locked_at_s: float | None = None
    duration_s: float = 0.0

    @property
    def running(self) -> bool:
        return self.locked_at_s is not None

    def lock(self, offset_s: float, duration_s: float, now_s: float) -> None:
        """Take the engine's position as the truth from now on (after a jump, too)."""
        self.offset_s, self.duration_s, self.locked_at_s = offset_s, duration_s, now_s

    def position(self, now_s: float) -> float:
        if self.locked_at_s is None:
            return self.offset_s
        return min(self.offset_s + max(0.0, now_s - self.locked_at_s), self.duration_s)

    def hold(self, offset_s: float, duration_s: float) -> None:
        """Show a fixed position (a file's match: nothing to follow)."""
        self.offset_s, self.duration_s, self.locked_at_s = offset_s, duration_s, None

    def freeze(self, now_s: float) -> None:
        """Stop ticking where the music was last known to be (the match is no longer followed)."""
        self.offset_s = self.position(now_s)
        self.locked_at_s = None

    def clear(self) -> None:
        self.offset_s, self.locked_at_s, self.duration_s = 0.0, None, 0.0
