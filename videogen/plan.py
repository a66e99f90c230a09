"""Clip to tasks: keyframe tasks first, then overlapping temporal windows. Pure: no Ray, no torch.

Everything here counts latent frames (one latent frame is ``vae_scale_temporal`` pixel frames,
except the first, which is one). Keyframes are latent positions ``0, K, 2K, ...`` and the last
frame; they are generated together as one short sparse clip (split into chunks of at most one
window, each chunk continuing from the last keyframe of the one before), so they follow one motion.
Windows step by ``window - overlap``; the last one is shifted back to end on the last frame, so no
tail frame is dropped and none is left uncovered. Each window depends only on the keyframe tasks
holding the keyframes inside it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KeyframeTask:
    """Generate the keyframes at ``positions`` (absolute latent frames) as one sparse clip.

    ``known`` positions (a subset of ``positions``) come from the earlier tasks ``depends_on``.
    """

    index: int
    positions: tuple[int, ...]
    known: tuple[int, ...] = ()
    depends_on: tuple[int, ...] = ()


@dataclass(frozen=True)
class WindowTask:
    """Denoise latent frames ``[start, stop)`` with the keyframes inside it held fixed."""

    index: int
    start: int
    stop: int
    keyframes: tuple[int, ...] = ()
    depends_on: tuple[int, ...] = ()  # KeyframeTask indices

    @property
    def length(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Plan:
    latent_frames: int
    keyframe_tasks: tuple[KeyframeTask, ...]
    windows: tuple[WindowTask, ...]

    @property
    def keyframes(self) -> tuple[int, ...]:
        return tuple(sorted({p for t in self.keyframe_tasks for p in t.positions}))

    @property
    def num_tasks(self) -> int:
        return len(self.keyframe_tasks) + len(self.windows)

    @property
    def decode_chunks(self) -> tuple[tuple[int, int], ...]:
        """``[start, stop)`` latent spans decoded in order, one per window.

        Chunk ``c`` ends where window ``c + 1`` starts: its frames are final as soon as windows
        ``0..c`` are done, so decoding follows the windows instead of waiting for the last one.
        """
        stops = [w.start for w in self.windows[1:]] + [self.latent_frames]
        return tuple(zip([0] + stops[:-1], stops))

    def windows_touching(self, start: int, stop: int) -> tuple[int, ...]:
        """Indices of the windows that cover any latent frame in ``[start, stop)``."""
        return tuple(w.index for w in self.windows if w.start < stop and w.stop > start)


def window_spans(latent_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """``[start, stop)`` spans covering ``range(latent_frames)``; the last one ends on the last frame."""
    if latent_frames <= window:
        return [(0, latent_frames)]
    stride = window - overlap
    starts = list(range(0, latent_frames - window, stride))
    starts.append(latent_frames - window)
    return [(s, s + window) for s in starts]


def keyframe_positions(latent_frames: int, every: int) -> list[int]:
    """``0, every, 2*every, ...`` and the last frame; none when ``every`` is 0."""
    if every <= 0:
        return []
    positions = list(range(0, latent_frames, every))
    if positions[-1] != latent_frames - 1:
        positions.append(latent_frames - 1)
    return positions


def make_plan(latent_frames: int, window: int, overlap: int, keyframe_every: int, always_keyframes: bool = False) -> Plan:
    """Split a clip of ``latent_frames`` into keyframe tasks and window tasks.

    Args:
        latent_frames: the clip's length in latent frames (>= 1).
        window: latent frames per window (>= 1).
        overlap: latent frames shared by neighbouring windows (< window).
        keyframe_every: latent frames between keyframes; 0 for none. A clip that fits in one
            window has no keyframes: it is one plain text-to-video task.
        always_keyframes: plan keyframes even for a one-window clip (first and last frame when
            ``keyframe_every`` is 0), for runs that want the keyframes alone (boards, previews).
    """
    if latent_frames < 1 or window < 1 or not 0 <= overlap < window or keyframe_every < 0:
        raise ValueError(
            f"bad plan geometry: latent_frames={latent_frames}, window={window}, "
            f"overlap={overlap}, keyframe_every={keyframe_every}"
        )
    spans = window_spans(latent_frames, window, overlap)
    positions = keyframe_positions(latent_frames, keyframe_every) if len(spans) > 1 else []
    if always_keyframes and not positions:
        positions = keyframe_positions(latent_frames, keyframe_every or max(latent_frames - 1, 1))

    # Chunks of at most `window` keyframes; each chunk after the first re-uses the previous
    # chunk's last keyframe as a known frame, so the chunks continue one motion.
    keyframe_tasks: list[KeyframeTask] = []
    size = max(window, 2)  # a continuing chunk needs room for its known frame and one new one
    i = 0
    while i < len(positions):
        if not keyframe_tasks:
            chunk = positions[:size]
            keyframe_tasks.append(KeyframeTask(0, tuple(chunk)))
            i = len(chunk)
        else:
            chunk = positions[i - 1 : i - 1 + size]
            k = len(keyframe_tasks)
            keyframe_tasks.append(KeyframeTask(k, tuple(chunk), known=(chunk[0],), depends_on=(k - 1,)))
            i += len(chunk) - 1
    owner = {p: t.index for t in keyframe_tasks for p in t.positions if p not in t.known}

    windows = []
    for w, (start, stop) in enumerate(spans):
        inside = tuple(p for p in positions if start <= p < stop)
        windows.append(WindowTask(w, start, stop, inside, tuple(sorted({owner[p] for p in inside}))))
    return Plan(latent_frames, tuple(keyframe_tasks), tuple(windows))
