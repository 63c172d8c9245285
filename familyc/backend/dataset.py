"""familyc's data loader for torchtitan 0.2.2: a weighted mix of sources read in place (familyc.data.mixture).

A job whose `training.dataset` is `familyc` reads the data manifest named by `training.dataset_path`
(RUN_DIR/data.json). `register()` puts, under torchtitan's `llama3` name, a copy of its train spec whose data
loader builds this one for such a job and torchtitan's own (`c4_test`, the builtin corpus) otherwise; the stage
calls it in every process before the Trainer is built.

Like torchtitan's HuggingFaceTextDataset, each document is tokenized with BOS and EOS and the tokens are packed
into windows of seq_len + 1 (inputs and labels shifted by one), with no padding. The state a checkpoint keeps is
the mixture's position and the tokens packed but not yet given out, so a stage resumed from its own checkpoint
continues token for token. Between progressive stages only the mixture's position travels
(`familyc_position` / `familyc_start`): the next member may have another sequence length.

FAMILYC_DATA_TRACE=PATH makes every rank append one JSON line per document it reads to PATH.rank<r>.jsonl
(`{"source": name, "sha256": digest of the text}`): what the tests read to prove no held-out document was
trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.stateful import Stateful
from torch.utils.data import IterableDataset

from familyc.data.mixture import DataManifest, Mixture
from familyc.errors import FamilycError

DATASET_NAME = "familyc"
TRACE_ENV = "FAMILYC_DATA_TRACE"


class MixtureDataset(IterableDataset[tuple[dict[str, torch.Tensor], torch.Tensor]], Stateful):
    def __init__(self, manifest: Path, tokenizer: Any, *, seq_len: int, dp_rank: int, dp_world_size: int) -> None:
        self.manifest = DataManifest.read(manifest)
        self.seq_len = seq_len
        trace = os.environ.get(TRACE_ENV)
        self._trace_path = Path(f"{trace}.rank{dp_rank}.jsonl") if trace else None

        def encode(text: str) -> list[int]:
            ids: list[int] = tokenizer.encode(text, add_bos=True, add_eos=True)
            return ids

        self.mixture = Mixture(self.manifest, encode, rank=dp_rank, world=dp_world_size,
                               trace=self._trace if self._trace_path else None)
        self._token_buffer: list[int] = []

    def _trace(self, source: int, text: str) -> None:
        assert self._trace_path is not None
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        with self._trace_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"source": self.manifest.sources[source].name, "sha256": digest}) + "\n")

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        window = self.seq_len + 1
        while True:
            while len(self._token_buffer) < window:
                self._token_buffer.extend(self.mixture.next_document()[1])
            x = torch.tensor(self._token_buffer[:window], dtype=torch.long)
            self._token_buffer = self._token_buffer[window:]
            yield {"input": x[:-1]}, x[1:]

    def state_dict(self) -> dict[str, Any]:
        return {"token_buffer": list(self._token_buffer), "mixture": self.mixture.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "mixture" not in state_dict:
            raise FamilycError("this stage's checkpoint holds the data position of torchtitan's own loader, not "
                               "of familyc's mix (a run started before familyc read local and hub data in place)",
                               hint="finish that run with the familyc version that started it, or start the stage "
                                    "again: remove its steps/<step>/dump folder")
        self._token_buffer = list(state_dict["token_buffer"])
        self.mixture.load_state_dict(state_dict["mixture"])

    def familyc_position(self) -> dict[str, Any]:
        """Where this rank is in the sources (what the next progressive stage starts from)."""
        return self.mixture.state_dict()

    def familyc_start(self, position: dict[str, Any]) -> None:
        self.mixture.load_state_dict(position)
        self._token_buffer = []


def build_dataloader(dp_world_size: int, dp_rank: int, tokenizer: Any, job_config: Any,
                     infinite: bool = True) -> Any:
    """torchtitan's DataLoaderBuilder: familyc's mixture for a `familyc` job, torchtitan's text loader else."""
    from torchtitan.components.dataloader import ParallelAwareDataloader
    from torchtitan.hf_datasets.text_datasets import build_text_dataloader

    training = job_config.training
    if training.dataset != DATASET_NAME:
        return build_text_dataloader(dp_world_size=dp_world_size, dp_rank=dp_rank, tokenizer=tokenizer,
                                     job_config=job_config, infinite=infinite)
    dataset = MixtureDataset(Path(training.dataset_path), tokenizer, seq_len=training.seq_len, dp_rank=dp_rank,
                             dp_world_size=dp_world_size)
    kwargs = {**asdict(training.dataloader), "batch_size": training.local_batch_size}
    return ParallelAwareDataloader(dataset, dp_rank=dp_rank, dp_world_size=dp_world_size, **kwargs)


def register() -> None:
    """torchtitan's llama3 train spec with familyc's data loader (idempotent)."""
    from torchtitan.models import llama3
    from torchtitan.protocols import train_spec

    specs = train_spec._extra_train_specs
    current = specs.get("llama3")
    if current is not None and current.build_dataloader_fn is build_dataloader:
        return
    specs["llama3"] = dataclasses.replace(llama3.get_train_spec(), build_dataloader_fn=build_dataloader)
