"""Torch-free pieces the runner stands on: the one sidecar type, atomic writes, and the stage's environment.

- A sidecar round-trips as its dataclass, is refused when it is another version or another kind, and the
  files it lists are verified whatever its version (run directories written before sidecars were versioned
  keep resuming).
- `atomic_write` replaces a file whole; `atomic_folder` either refuses a destination that appeared meanwhile
  or, for caches, keeps it and discards the copy.
- The environment contract: what a stage is always told, what only by default, and the same as shell lines.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from familyc.backend.environment import (
    DATA_END_ENV,
    DATA_SEED_ENV,
    DATA_START_ENV,
    FLAVORS_ENV,
    METRICS_ENV,
    RunEnvironment,
    StageEnvironment,
)
from familyc.checkpoint.sidecar import (
    EXPANSION_SIDECAR,
    MEMBER_SIDECAR,
    GrowthRecord,
    Sidecar,
    read_sidecar,
    verify_sidecar,
    write_sidecar,
)
from familyc.errors import CheckpointError
from familyc.files import atomic_folder, atomic_write, sha256_file
from familyc.shape import ModelShape

SHAPE = ModelShape(dim=64, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=192, vocab_size=2048)


def weights(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True)
    (folder / "__0_0.distcp").write_bytes(b"weights")
    (folder / ".metadata").write_bytes(b"metadata")
    return {p.name: sha256_file(p) for p in folder.iterdir()}


def test_a_sidecar_round_trips_and_verifies(tmp_path: Path) -> None:
    files = weights(tmp_path / "s")
    growth = GrowthRecord(width="none", depth="zero_insert", gqa="unchanged", seed=0, noise=0.0, exactness="exact")
    sidecar = Sidecar(kind="expansion", member="s", shape=SHAPE, plan_id="abc", step="expand-xs-s", growth=growth)
    written = write_sidecar(tmp_path / "s", sidecar, files)
    assert read_sidecar(tmp_path / "s", "expansion") == written and written.files == dict(sorted(files.items()))
    body = json.loads((tmp_path / "s" / EXPANSION_SIDECAR).read_text())
    assert (body["schema_version"], body["kind"], body["growth"]["exactness"], body["shape"]["dim"]) == (
        1, "expansion", "exact", 64)
    assert verify_sidecar(tmp_path / "s") == [] and verify_sidecar(tmp_path / "s", kind="expansion") == []


def test_a_sidecar_of_another_kind_or_version_is_refused_by_name(tmp_path: Path) -> None:
    files = weights(tmp_path / "m")
    write_sidecar(tmp_path / "m", Sidecar(kind="member", member="m", shape=SHAPE), files)
    (tmp_path / "m" / MEMBER_SIDECAR).rename(tmp_path / "m" / EXPANSION_SIDECAR)
    with pytest.raises(CheckpointError, match="a sidecar of kind 'member', not 'expansion'"):
        read_sidecar(tmp_path / "m", "expansion")
    body = json.loads((tmp_path / "m" / EXPANSION_SIDECAR).read_text())
    (tmp_path / "m" / EXPANSION_SIDECAR).write_text(json.dumps({**body, "schema_version": 7}))
    with pytest.raises(CheckpointError, match="sidecar schema_version 7 is not 1"):
        read_sidecar(tmp_path / "m", "expansion")
    (tmp_path / "m" / EXPANSION_SIDECAR).write_text(json.dumps({**body, "shape": {"dim": "wide"}}))
    with pytest.raises(CheckpointError, match=r"familyc-expansion.json.shape.dim: expected a whole number"):
        read_sidecar(tmp_path / "m", "expansion")


def test_a_sidecar_written_before_versions_still_verifies(tmp_path: Path) -> None:
    """familyc 0.1's member sidecars had no schema_version or kind; resuming such a run checks their files."""
    files = weights(tmp_path / "xs")
    legacy = {"plan_id": "abc", "step": "train-xs", "member": "xs", "init_from": None, "files": files}
    (tmp_path / "xs" / MEMBER_SIDECAR).write_text(json.dumps(legacy))
    assert verify_sidecar(tmp_path / "xs", kind="member") == []
    assert verify_sidecar(tmp_path / "xs") == []  # the folder's one sidecar, whichever kind
    (tmp_path / "xs" / "__0_0.distcp").write_bytes(b"changed")
    assert "differs from the sidecar's" in verify_sidecar(tmp_path / "xs", kind="member")[0]


def test_atomic_write_replaces_a_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.json"
    digest = atomic_write(path, "one\n")
    assert path.read_text() == "one\n" and digest == sha256_file(path)
    atomic_write(path, b"two\n")
    assert path.read_text() == "two\n" and sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_atomic_folder_refuses_or_keeps_a_destination_that_appeared(tmp_path: Path) -> None:
    dst = tmp_path / "out"
    with pytest.raises(RuntimeError, match="appeared"), atomic_folder(dst, appeared=lambda: RuntimeError("appeared")) \
            as tmp:
        (tmp / "ours").write_text("ours")
        dst.mkdir()
        (dst / "theirs").write_text("theirs")
    assert sorted(p.name for p in dst.iterdir()) == ["theirs"]
    cache = tmp_path / "cache"
    with atomic_folder(cache) as tmp:  # a cache: a concurrent writer's copy (the same content) is kept
        (tmp / "mine").write_text("mine")
        cache.mkdir()
        (cache / "first").write_text("first")
    assert sorted(p.name for p in cache.iterdir()) == ["first"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_stage_is_told_the_contract(tmp_path: Path) -> None:
    run = RunEnvironment(flavors=tmp_path / "flavors.json", datasets_cache=tmp_path / "cache", threads=1, data_seed=3)
    stage = StageEnvironment(run=run, metrics=tmp_path / "m.jsonl", data_end=tmp_path / "end.json",
                             data_start=tmp_path / "start.json")
    env = stage.apply_to({"PATH": "/bin", "OMP_NUM_THREADS": "4", FLAVORS_ENV: "stale", "HF_HUB_OFFLINE": "0"})
    assert env["PATH"] == "/bin" and env[FLAVORS_ENV] == str(tmp_path / "flavors.json")  # always ours
    assert env["OMP_NUM_THREADS"] == "4"  # the user's setting wins
    # apply decided (from the user's HF_HUB_OFFLINE, --offline and the sources) and the stage gets that
    assert env["HF_HUB_OFFLINE"] == env["HF_DATASETS_OFFLINE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1" and env[DATA_SEED_ENV] == "3"
    assert (env[METRICS_ENV], env[DATA_START_ENV], env[DATA_END_ENV]) == tuple(
        str(tmp_path / n) for n in ("m.jsonl", "start.json", "end.json"))
    online = StageEnvironment(run=RunEnvironment(flavors=run.flavors, datasets_cache=run.datasets_cache,
                                                 offline=False), metrics=stage.metrics)
    env = online.apply_to({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert env["HF_HUB_OFFLINE"] == env["HF_DATASETS_OFFLINE"] == "0"  # a stage would default to 1 otherwise
    assert DATA_START_ENV not in env
    assert DATA_SEED_ENV not in env  # no seed: the dataset's own order


def test_the_contract_as_shell_lines_is_the_same(tmp_path: Path) -> None:
    run = RunEnvironment(flavors=tmp_path / "f.json", datasets_cache=tmp_path / "c", threads=1, data_seed=5)
    stage = StageEnvironment(run=run, metrics=tmp_path / "m.jsonl")
    script = "\n".join(run.shell_exports()) + f"\nexport {stage.shell_prefix()}\nenv\n"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                         env={"PATH": os.environ["PATH"]}).stdout
    shell = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    expected = stage.apply_to({"PATH": os.environ["PATH"]})
    assert {k: shell[k] for k in expected if k != "PATH"} == {k: v for k, v in expected.items() if k != "PATH"}
