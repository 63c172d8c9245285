"""Predicted time and money: seconds = FLOPs / (devices x peak x MFU)."""

from __future__ import annotations

SECONDS_PER_HOUR = 3600.0


def train_seconds(flops: int, *, devices: int, peak_flops: float, mfu: float) -> float:
    """The MFU is the user's assumption (or a calibrated measurement) of achieved / peak."""
    return flops / (devices * peak_flops * mfu)


def io_seconds(num_bytes: int, *, gb_per_s: float) -> float:
    """A streamed checkpoint expansion is bound by reading and writing its bytes."""
    return num_bytes / (gb_per_s * 1e9)


def gpu_hours(seconds: float, devices: int) -> float:
    """Every device of the allocation is held, busy or not."""
    return seconds * devices / SECONDS_PER_HOUR
