"""What every host with videos does with one clip: compress it (timed) and record its stats."""

from __future__ import annotations

import time

from vtcompress.integrations.host import Host, sync
from vtcompress.pipeline import image_stats
from vtcompress.tokens import ImageTokens, ViewOutput
from vtcompress.video import compress_clip


def compress_clip_recorded(
    host: Host, clip: ImageTokens, image_size: tuple[int, int], newlines: int, note: str
) -> list[ViewOutput]:
    """The clip's kept tokens per frame (:func:`vtcompress.video.compress_clip` with the host's
    method); adds the time to ``host.stats.compress_seconds`` and one ``media="video"`` entry to
    ``host.stats.images`` (``newlines``: separators the run keeps whole; ``note`` ends with the
    kept count of every frame)."""
    device = clip.features.device
    sync(device)
    start = time.perf_counter()
    outs = compress_clip(host.method, host.config, clip)
    sync(device)
    seconds = time.perf_counter() - start
    host.stats.compress_seconds += seconds
    stats = image_stats(
        clip.layout,
        outs,
        host.config,
        index=clip.index,
        image_size=image_size,
        seconds=seconds,
        newlines_before=newlines,
        newlines_after=newlines,
        note=f"{note}; kept per frame: {[o.num_kept for o in outs]}",
    )
    stats.media = "video"
    host.stats.images.append(stats)
    return outs
