"""An engine's gallery encode, run at once or in a background thread (the app on a CPU serves searches over the part
encoded so far), with what a progress bar shows: clips done, clips per second and the time left."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from tvr_demo.retrieval.gallery import GalleryEncoder

Report = Callable[[str, float], None]  # (message, fraction done), e.g. a gr.Progress


@dataclass(frozen=True)
class EncodeProgress:
    done: int  # clips encoded by this run
    total: int  # clips this run encodes
    elapsed_s: float

    @property
    def rate(self) -> float:
        """Clips per second so far."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def message(self) -> str:
        if not self.done:
            return f"encoding {self.total:,} clips"
        left = (self.total - self.done) / self.rate
        return (f"encoded {self.done:,} of {self.total:,} clips, {self.rate:.1f} clips/s, "
                f"about {_duration(left)} left")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


class Encoding:
    """Runs a GalleryEncoder: to the end before returning, or in a daemon thread that `wait` joins."""

    def __init__(self, encoder: GalleryEncoder, in_background: bool = False, progress: bool = True) -> None:
        self.progress = EncodeProgress(0, encoder.missing, 0.0)
        self.error: BaseException | None = None
        self._done = threading.Event()
        if not in_background or not encoder.missing:
            encoder.run(progress, self._update)
            self._done.set()
            return
        self._thread = threading.Thread(target=self._run, args=(encoder,), name="gallery-encode", daemon=True)
        self._thread.start()

    def _update(self, done: int, total: int, elapsed_s: float) -> None:
        self.progress = EncodeProgress(done, total, elapsed_s)

    def _run(self, encoder: GalleryEncoder) -> None:
        try:
            encoder.run(False, self._update)
        except BaseException as err:  # kept for `wait`, which the request that asked for the engine calls
            self.error = err
        finally:
            self._done.set()

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def wait(self, report: Report | None = None, every_s: float = 1.0) -> None:
        """Block until the encode is done, calling `report(message, fraction)` about every `every_s` seconds."""
        while not self._done.wait(every_s if report is not None else None):
            progress = self.progress
            report(progress.message(), progress.done / max(1, progress.total))
        if self.error is not None:
            raise self.error
