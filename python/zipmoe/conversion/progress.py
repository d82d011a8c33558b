"""The progress bar of convert, export, verify --against and dequantize."""

from __future__ import annotations


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar counting ``total`` bytes, or None when not ``enabled``."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, dynamic_ncols=True,
                smoothing=0.1)
