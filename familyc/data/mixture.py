"""A weighted mix of sources as one stream of tokenized documents, and the run's data manifest. Torch-free.

`familyc apply` resolves the plan's sources (familyc.execute.data) and writes RUN_DIR/data.json, the manifest:
every source's shards, text field, weight and held-out rule, the shuffle seed. A stage's data loader
(familyc.backend.dataset) reads it and draws its documents from a `Mixture`.

The mix is by tokens and deterministic, with no random draw: the next document comes from the source whose
tokens so far, divided by its weight, are the fewest (ties: the first source). Each source's share of the tokens
read is then within one document of its weight at every point of the stream, and a position is the sources'
token counts and stream positions: a handful of integers per source and rank, restored exactly on resume and at
the start of the next progressive stage.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from familyc.data.sources import SourceFiles, SourceStream
from familyc.errors import FamilycError
from familyc.files import atomic_write

MANIFEST_VERSION = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class DataManifest:
    sources: tuple[SourceFiles, ...]
    seed: int
    shuffle: bool

    def to_json(self) -> dict[str, Any]:
        return {"version": MANIFEST_VERSION, "seed": self.seed, "shuffle": self.shuffle,
                "sources": [s.to_json() for s in self.sources]}

    def write(self, path: Path) -> None:
        atomic_write(path, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> DataManifest:
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            if body.get("version") != MANIFEST_VERSION:
                raise ValueError(f"version {body.get('version')!r}, not {MANIFEST_VERSION}")
            return cls(sources=tuple(SourceFiles.from_json(s) for s in body["sources"]), seed=int(body["seed"]),
                       shuffle=bool(body["shuffle"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FamilycError(f"{path}: not a familyc data manifest ({exc})",
                               hint="familyc apply writes it; apply again to rewrite it") from None


class Mixture:
    """The documents of one rank, drawn from the manifest's sources by weight, each tokenized by `encode`."""

    def __init__(self, manifest: DataManifest, encode: Callable[[str], list[int]], *, rank: int, world: int,
                 trace: Callable[[int, str], None] | None = None) -> None:
        self.sources = manifest.sources
        total = sum(s.weight for s in self.sources)
        self.shares = [s.weight / total for s in self.sources]
        self.streams = [SourceStream(s, rank=rank, world=world, seed=manifest.seed, shuffle=manifest.shuffle)
                        for s in self.sources]
        self.tokens = [0] * len(self.sources)
        self.encode, self.trace = encode, trace

    def next_document(self) -> tuple[int, list[int]]:
        """(source index, token ids) of the next document."""
        i = min(range(len(self.streams)), key=lambda k: (self.tokens[k] / self.shares[k], k))
        text = self.streams[i].next_document()
        ids = self.encode(text)
        self.tokens[i] += len(ids)
        if self.trace is not None:
            self.trace(i, text)
        return i, ids

    def state_dict(self) -> dict[str, Any]:
        return {"tokens": list(self.tokens), "streams": [s.state_dict() for s in self.streams],
                "sources": [s.name for s in self.sources]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = list(state.get("sources", []))
        if names != [s.name for s in self.sources]:
            raise FamilycError(f"the data position was written for the sources {names}, not "
                               f"{[s.name for s in self.sources]}",
                               hint="a run's sources cannot change under it: apply the plan it was started with")
        self.tokens = [int(t) for t in state["tokens"]]
        for stream, position in zip(self.streams, state["streams"], strict=True):
            stream.load_state_dict(position)


def measured_shares(tokens: Sequence[int]) -> list[float]:
    total = sum(tokens)
    return [t / total if total else 0.0 for t in tokens]
