"""The cost model: parameters, FLOPs, memory and time. Torch-free; every constant derived in a comment."""

COST_MODEL_VERSION = "1"
"""Bump when any formula here changes: plans record it, so stale estimates are visible."""
