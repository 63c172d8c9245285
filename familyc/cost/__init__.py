"""The cost model: parameters, FLOPs, memory and time. Torch-free; every constant derived in a comment."""

COST_MODEL_VERSION = "4"
"""Bump when any formula here changes: plans record it, so stale estimates are visible.
2: the memory model calibrated against `familyc rehearse` (familyc/cost/memory.py).
3: a training stage's start-up (familyc/cost/startup.py) in its predicted time.
4: and the fixed cost of every step and held-out evaluation (familyc/cost/startup.py)."""
