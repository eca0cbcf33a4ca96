"""Built-in compression methods. Each module registers itself on import."""

from vtcompress.methods import (  # noqa: F401
    baselines,
    divprune,
    downsample,
    evs,
    globalcom2,
    pitome,
    tokencorr,
    tokencorr_batch,
    tome,
    vidcom2,
    video_baselines,
    visionzip,
)
