"""Model sizes for torchtitan, passed to a training process in a JSON file; and its import hook.

A job TOML names its model as `model.flavor`, a key of torchtitan's `llama3_args`. familyc's
members are not among torchtitan's flavors, so every process must register them before the
Trainer looks the flavor up. The sizes travel in a JSON file whose path is in the environment
variable FAMILYC_FLAVORS:

    {"torchtitan_version": "0.2.2",
     "flavors": {"familyc-xs": {"dim": 64, "n_layers": 2, ...every TransformerModelArgs field}}}

Importing this module is the hook: it applies the CPU compatibility layer (when no accelerator
is present) and registers every flavor of $FAMILYC_FLAVORS. The job TOML names it as
`experimental.custom_import`, which torchtitan 0.2.2 imports at the start of
`Trainer.__init__`, before it touches the device or the flavor. So a familyc TOML also runs
under stock torchtitan on a CPU box:

    FAMILYC_FLAVORS=flavors.json torchrun --nproc-per-node 2 -m torchtitan.train --job.config_file JOB.toml

(`familyc.backend.stage` is the usual entry point; it adds the metrics JSONL and the NaN stop.)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path

from torchtitan.models.llama3 import TransformerModelArgs
from torchtitan.models.llama3.model.args import RoPEScalingArgs

from familyc.backend import compat
from familyc.backend.environment import FLAVORS_ENV
from familyc.backend.keys import TORCHTITAN_VERSION
from familyc.backend.model import register_flavor
from familyc.errors import FamilycError
from familyc.files import atomic_write


def write_flavors(path: Path | str, flavors: Mapping[str, TransformerModelArgs]) -> Path:
    """Write flavors (name -> arguments) as the JSON file FAMILYC_FLAVORS points at."""
    body = {"torchtitan_version": TORCHTITAN_VERSION,
            "flavors": {name: dataclasses.asdict(args) for name, args in sorted(flavors.items())}}
    out = Path(path)
    atomic_write(out, json.dumps(body, indent=2, sort_keys=True) + "\n")
    return out


def read_flavors(path: Path | str) -> dict[str, TransformerModelArgs]:
    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FamilycError(f"cannot read the flavors file {path}: {exc}") from None
    if body.get("torchtitan_version") != TORCHTITAN_VERSION:
        raise FamilycError(f"{path} was written for torchtitan {body.get('torchtitan_version')!r}, "
                           f"not {TORCHTITAN_VERSION}")
    known = {f.name for f in dataclasses.fields(TransformerModelArgs)}
    out = {}
    for name, fields in body.get("flavors", {}).items():
        unknown = sorted(set(fields) - known)
        if unknown:
            raise FamilycError(f"{path}: flavor {name!r} has fields torchtitan {TORCHTITAN_VERSION} "
                               f"does not know: {', '.join(unknown)}")
        fields = dict(fields)
        if isinstance(fields.get("rope_scaling_args"), dict):
            fields["rope_scaling_args"] = RoPEScalingArgs(**fields["rope_scaling_args"])
        out[name] = TransformerModelArgs(**fields)
    return out


def register_from_env() -> list[str]:
    """Register every flavor of $FAMILYC_FLAVORS (none when it is unset); their names."""
    path = os.environ.get(FLAVORS_ENV)
    if not path:
        return []
    flavors = read_flavors(path)
    for name, args in flavors.items():
        register_flavor(name, args)
    return sorted(flavors)


compat.enable_cpu()
REGISTERED: list[str] = register_from_env()
"""The flavors registered when this module was imported."""
