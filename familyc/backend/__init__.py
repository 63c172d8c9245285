"""familyc's torchtitan backend: the only package that imports torchtitan (pinned to 0.2.2).

    keys.py     state-dict key names and shapes of a model shape (torch-free)
    compat.py   the CPU compatibility layer (a no-op on an accelerator)
    model.py    MemberPlan -> TransformerModelArgs; build a model; logits
    flavors.py  model sizes for a training process (FAMILYC_FLAVORS), and the import hook
    job.py      TrainStep -> torchtitan job TOML
    stage.py    the per-stage entry point: `torchrun ... -m familyc.backend.stage --job.config_file JOB.toml`

Importing this package, or `familyc.backend.keys`, imports neither torch nor torchtitan.
"""
