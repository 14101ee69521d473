"""Stop sequences found in streamed text: the text before the first one met is let through, the sequence and
all after it are not, and the answer can say which sequence it was (`stop_sequence`).

Text that may be the start of a stop sequence is held back until the next piece shows whether it is.
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: list[str] | None) -> None:
        self.stops = [s for s in stops or [] if s]
        self.matched: str | None = None
        self._held = ""

    @property
    def done(self) -> bool:
        return self.matched is not None

    def feed(self, text: str) -> str:
        """The part of `text` (after what was held back) that is surely before any stop sequence."""
        if self.matched is not None:
            return ""
        if not self.stops:
            return text
        buffer = self._held + text
        found = [(at, -len(s), s) for s in self.stops if (at := buffer.find(s)) >= 0]
        if found:
            at, _, stop = min(found)  # the earliest; of two at one place, the longer
            self.matched, self._held = stop, ""
            return buffer[:at]
        keep = max((n for s in self.stops for n in range(1, len(s)) if buffer.endswith(s[:n])), default=0)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """What was held back, once the text has ended without the stop sequence it might have begun."""
        held, self._held = self._held, ""
        return held
