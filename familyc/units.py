"""How familyc writes numbers for people, the same way everywhere (plans, diffs, reports)."""

from __future__ import annotations

GIB = 2**30


def _scientific(value: float, digits: int) -> str:
    """1.23e21, 6e-4: scientific notation without padded exponents or trailing zeros."""
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def flops(value: float) -> str:
    """1.23e21 FLOPs: three significant digits."""
    return "0" if value == 0 else f"{value:.3g}" if abs(value) < 1e4 else _scientific(value, 3)


def flop_rate(value: float) -> str:
    """989 TFLOP/s, 83.2 GFLOP/s."""
    for scale, unit in ((1e15, "PFLOP/s"), (1e12, "TFLOP/s"), (1e9, "GFLOP/s")):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} FLOP/s"


def count(value: float) -> str:
    """20B, 1.53B, 385K: tokens and parameters (what familyc.spec.quantity parses, written back)."""
    return format_count(value)


def format_count(value: float) -> str:
    """The inverse, for display: 20_000_000_000 -> `20B`, 1_503_238_144 -> `1.50B`, 4096 -> `4,096`."""
    if abs(value) < 10_000:
        return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"
    for suffix, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(value) >= scale:
            scaled = value / scale
            if scaled == int(scaled):
                return f"{int(scaled)}{suffix}"
            return f"{scaled:.2f}{suffix}" if scaled < 100 else f"{scaled:.1f}{suffix}"
    return f"{value:g}"


def seconds(value: float) -> str:
    """2d 3h, 4h 12m, 12m 5s, 42.0s."""
    value = float(value)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 60:
        return f"{sign}{value:.1f}s"
    minutes, secs = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    return f"{sign}{minutes}m {secs:02d}s"


def hours(value: float) -> str:
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.3f}"


def money(value: float) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}"


def gib(num_bytes: float) -> str:
    return f"{num_bytes / GIB:.1f} GiB" if num_bytes >= GIB else f"{num_bytes / 2**20:.1f} MiB"


def percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def signed_percent(fraction: float) -> str:
    return f"{100 * fraction:+.1f}%"


def lr(value: float) -> str:
    """6e-4, 4.5e-4, 0.01."""
    return f"{value:.3g}" if value >= 0.01 else _scientific(value, 3)
