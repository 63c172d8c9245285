"""The cost model: parameters, FLOPs, memory and time. Torch-free; every constant derived in a comment."""

COST_MODEL_VERSION = "2"
"""Bump when any formula here changes: plans record it, so stale estimates are visible.
2: the memory model calibrated against `familyc rehearse` (familyc/cost/memory.py)."""
