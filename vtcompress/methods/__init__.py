"""Built-in compression methods. Each module registers itself on import."""

from vtcompress.methods import (  # noqa: F401
    baselines,
    dart,
    divprune,
    downsample,
    fastv,
    globalcom2,
    pitome,
    pyramiddrop,
    tokencorr,
    tokencorr_batch,
    tome,
    visionzip,
)
