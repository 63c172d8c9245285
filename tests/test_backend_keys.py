"""The torch-free half of the backend: key names and shapes, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from familyc.backend.keys import TORCHTITAN_VERSION, model_keys
from familyc.cost.params import count_params
from familyc.shape import ModelShape

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [
    ModelShape(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=192, vocab_size=2048),
    ModelShape(dim=96, n_layers=1, n_heads=6, n_kv_heads=1, ffn_dim=250, vocab_size=1000),
    ModelShape(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336, vocab_size=128256),
]


def test_backend_package_and_keys_import_neither_torch_nor_torchtitan() -> None:
    code = ("import sys, familyc.backend, familyc.backend.keys, familyc.backend.job, familyc.data; "
            "print([n for n in sys.modules if n.split('.')[0] in ('torch', 'torchtitan')])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.describe())
def test_model_keys_count_the_planned_parameters(shape: ModelShape) -> None:
    total = 0
    for dims in model_keys(shape).values():
        n = 1
        for d in dims:
            n *= d
        total += n
    assert total == count_params(shape).total
    assert TORCHTITAN_VERSION == "0.2.2"


