"""Opening a video with decord, choosing the frames to caption, and decoding them.

Framework-independent: nothing here knows about HTTP, marshmallow or deepaas_like. A file
decord cannot read raises :class:`VideoError`; ``api.py`` turns it into a 422 on ``video``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import decord
import numpy as np

#: Frame start times from decord are float32-rounded (0.1 s comes back as 0.10000000149);
#: a sampling instant this close to a frame's start counts as inside that frame.
_TIME_TOLERANCE = 1e-4


class VideoError(ValueError):
    """The file is not a video decord can read: not a video, corrupt, truncated, or no frames."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the container says about the whole video: frame count, frames per second, seconds."""

    frames: int
    fps: float
    duration: float


class Video:
    """A video opened with ``decord.VideoReader`` on the CPU.

    ``info`` describes the whole video, ``frame_starts`` is a float array of shape ``(frames,)``
    with each frame's presentation time in seconds, and :meth:`read` decodes frames by index.
    Raises :class:`VideoError` if the file cannot be opened or has no frames.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self._reader = decord.VideoReader(os.fspath(path), ctx=decord.cpu(0))
            count = len(self._reader)
            if count < 1:
                raise VideoError("The file holds no video frames.")
            # (frames, 2): start and end time of every frame, from the container's index.
            times = np.asarray(self._reader.get_frame_timestamp(list(range(count))), dtype=np.float64)
            fps = float(self._reader.get_avg_fps())
        except (RuntimeError, decord.DECORDError) as exc:
            raise VideoError(_first_line(exc)) from exc
        times = times.reshape(count, 2)
        self.frame_starts: np.ndarray = times[:, 0]
        duration = float(times[-1, 1])
        if not math.isfinite(fps) or fps <= 0:
            fps = count / duration if duration > 0 else 0.0
        if not math.isfinite(duration) or duration <= 0:
            duration = count / fps if fps > 0 else 0.0
        self.info = VideoInfo(frames=count, fps=fps, duration=duration)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the frames at ``indices`` into a uint8 RGB array of shape ``(len, H, W, 3)``.

        Raises :class:`VideoError` when a frame cannot be decoded (a corrupt stream often
        opens fine and only fails here).
        """
        try:
            return self._reader.get_batch(list(indices)).asnumpy()
        except (RuntimeError, decord.DECORDError) as exc:
            raise VideoError(_first_line(exc)) from exc


def select_frames(
    frame_starts: Sequence[float] | np.ndarray,
    duration: float,
    *,
    fps: float | None = None,
    every_n_frames: int | None = None,
    max_frames: int = 16,
) -> list[int]:
    """Return the sorted indices of the frames to caption, at most ``max_frames`` of them.

    ``frame_starts``: each frame's start time in seconds; ``duration``: seconds. With ``fps``,
    the frame showing at each instant ``start + k / fps`` (``k = 0, 1, ...``, before
    ``duration``); with ``every_n_frames``, frames ``0, n, 2n, ...``; with neither, every frame.
    When that gives more than ``max_frames`` frames, ``max_frames`` of them are picked evenly
    across the whole video (first and last kept), so the captions cover all of it.
    Raises ``ValueError`` if both ``fps`` and ``every_n_frames`` are given or one is not positive.
    """
    starts = np.asarray(frame_starts, dtype=np.float64)
    count = len(starts)
    if fps is not None and every_n_frames is not None:
        raise ValueError("give fps or every_n_frames, not both")
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    if count == 0:
        return []
    if every_n_frames is not None:
        if every_n_frames < 1:
            raise ValueError(f"every_n_frames must be at least 1, got {every_n_frames}")
        candidates = np.arange(0, count, every_n_frames)
    elif fps is not None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        first = starts[0]
        instants = max(1, math.ceil((duration - first) * fps - _TIME_TOLERANCE))
        targets = first + np.arange(instants) / fps
        shown = np.searchsorted(starts, targets + _TIME_TOLERANCE, side="right") - 1
        candidates = np.unique(np.clip(shown, 0, count - 1))
    else:
        candidates = np.arange(count)
    if len(candidates) > max_frames:
        # Spacing > 1 between picks, so rounding never picks the same candidate twice.
        picks = np.round(np.linspace(0, len(candidates) - 1, max_frames)).astype(int)
        candidates = candidates[picks]
    return [int(i) for i in candidates]


def _first_line(exc: BaseException) -> str:
    # decord's messages start with "[hh:mm:ss] /path/to/source.cc:123: "; keep what follows.
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    _, sep, rest = line.partition(".cc:")
    if sep:
        line = rest.partition(": ")[2] or line
    return line
