"""Built-in compression methods. Each module registers itself on import."""

from vtcompress.methods import baselines, globalcom2, pitome, tokencorr, tokencorr_batch, tome  # noqa: F401
