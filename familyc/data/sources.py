"""The documents of a data source, read in place, in a deterministic order that can be resumed. Torch-free.

A source is a list of shards (files): a local folder's, or a Hugging Face dataset repository's files of one
config and split (resolved by familyc.data.hub). Shards are never copied: a stream opens them where they lie
(a hub shard is fetched into the Hugging Face cache the first time it is read, where the network is allowed).

Formats, by file name: `.parquet` (a text column), `.jsonl` / `.json` / `.jsonl.gz` / `.json.gz` (one JSON
object per line, C4's layout), `.txt` (the whole file is one document).

The training stream of one rank (`SourceStream`) reads rows `rank, rank + world, ...` of each shard, keeps the
documents the held-out rule gives to training (`split_of`, the builtin corpora's content hash, so a text can
never be in both; or every document, when the held-out text is a split of its own) and, when shuffling, reads
the shards in an order drawn from (seed, epoch) and permutes each block of BLOCK documents by (seed, epoch,
where the block starts). Its position is (epoch, shard, row where the block starts, documents of the block
already given): a few integers, so a resumed stage re-reads one block and continues exactly where it stopped.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from familyc.data.builtin import split_of
from familyc.errors import FamilycError

FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".jsonl.gz": "jsonl.gz",
           ".json.gz": "jsonl.gz", ".txt": "txt"}
"""File name endings familyc reads, and how."""
BLOCK = 256
"""Documents permuted together when shuffling: a block is re-read on resume, so it stays small; its order is
mixed further by the shard order and, in a mixture, by the other sources' documents between its own."""
SPLIT_NAMES = ("train", "validation", "valid", "test", "dev")
"""Words that name a split in a dataset's file names (C4: `en/c4-validation.00000-of-00008.json.gz`)."""


def shard_format(name: str) -> str | None:
    """How a file is read, from its name; None for a file that is not data."""
    lower = name.lower()
    for ending in sorted(FORMATS, key=len, reverse=True):
        if lower.endswith(ending):
            return FORMATS[ending]
    return None


def split_words(name: str) -> set[str]:
    """The split names a relative file name mentions (`en/c4-train.00001-of-01024.json.gz`: {train})."""
    return {w for w in re.split(r"[/\\\-._]", name.lower()) if w in SPLIT_NAMES}


class ShardError(FamilycError):
    """A shard that cannot be read: named, with what to do."""


def _corrupt(path: Path, what: str, exc: BaseException | None = None) -> ShardError:
    detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return ShardError(f"{path}: {what}{detail}",
                      hint="download the shard again, or remove it from the dataset (familyc reads every "
                           f"{', '.join(sorted(set(FORMATS)))} file of a source)")


def read_rows(path: Path, fmt: str, text_field: str, *, start: int = 0, every: int = 1,
              offset: int = 0) -> Iterator[tuple[int, str]]:
    """(row, text) of the rows `row >= start` with `row % every == offset` of one shard; empty texts skipped."""
    if not path.is_file():
        raise _corrupt(path, "the shard is missing")
    if fmt == "txt":
        if start == 0 and offset == 0:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise _corrupt(path, "cannot be read", exc) from None
            if text:
                yield 0, text
        return
    if fmt == "parquet":
        yield from _parquet_rows(path, text_field, start=start, every=every, offset=offset)
        return
    opener: Callable[..., Any] = gzip.open if fmt == "jsonl.gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            row = -1
            for line in f:
                if not line.strip():
                    continue
                row += 1
                if row < start or row % every != offset:
                    continue  # not parsed: another rank's row, or one read before the position
                try:
                    text = json.loads(line)[text_field]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise _corrupt(path, f"row {row + 1} is not a JSON object with a {text_field!r} field") from None
                if isinstance(text, str) and text:
                    yield row, text
    except (OSError, EOFError, zlib.error, UnicodeError) as exc:
        raise _corrupt(path, f"not a readable {fmt} file", exc) from None


def _parquet_rows(path: Path, text_field: str, *, start: int, every: int, offset: int) -> Iterator[tuple[int, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise _corrupt(path, "not a readable parquet file", exc) from None
    if text_field not in file.schema_arrow.names:
        raise _corrupt(path, f"has no column {text_field!r} (columns: {', '.join(file.schema_arrow.names)})")
    first = 0
    try:
        for group in range(file.metadata.num_row_groups):
            rows = file.metadata.row_group(group).num_rows
            if first + rows <= start:  # a whole row group before the position: not read at all
                first += rows
                continue
            mine = [i for i in range((start - first) if start > first else 0, rows) if (first + i) % every == offset]
            column = file.read_row_group(group, columns=[text_field]).column(0)
            texts = column.take(pa.array(mine, type=pa.int64())).to_pylist()  # only this rank's rows become str
            for i, text in zip(mine, texts, strict=True):
                if isinstance(text, str) and text:
                    yield first + i, text
            first += rows
    except (OSError, pa.ArrowException) as exc:
        raise _corrupt(path, "not a readable parquet file", exc) from None


def open_shard(name: str) -> Path:
    """The local file of a shard name (a hub shard is found in, or fetched into, the Hugging Face cache)."""
    from familyc.data.hub import local_shard  # it imports this module

    return local_shard(name)


def check_shard(path: Path, fmt: str, text_field: str) -> None:
    """Raise ShardError unless the shard opens and its first document is readable (its header only: a
    corpus of hundreds of GB is not read before a run starts)."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException) as exc:
            raise _corrupt(path, "not a readable parquet file", exc) from None
        if text_field not in schema.names:
            raise _corrupt(path, f"has no column {text_field!r} (columns: {', '.join(schema.names)})")
        return
    next(read_rows(path, fmt, text_field), None)


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceFiles:
    """One source, resolved: what a stream reads (the run's data manifest holds it as JSON)."""

    name: str
    """For messages and the run's records: `builtin:stdlib-source`, `path:/data/c4`, `hf:allenai/c4/en`."""
    shards: tuple[str, ...]
    """Absolute paths, or hub shards (`hf://datasets/REPO@COMMIT/FILE`), in a fixed order (sorted by name)."""
    text_field: str
    weight: float
    heldout_fraction: float
    """The content-hash rule: a document goes to held-out when split_of says so; 0 when the held-out text
    is `heldout_shards` (a split of its own)."""
    heldout_shards: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shards": list(self.shards), "text_field": self.text_field,
                "weight": self.weight, "heldout_fraction": self.heldout_fraction,
                "heldout_shards": list(self.heldout_shards)}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> SourceFiles:
        return cls(name=body["name"], shards=tuple(body["shards"]), text_field=body["text_field"],
                   weight=float(body["weight"]), heldout_fraction=float(body["heldout_fraction"]),
                   heldout_shards=tuple(body.get("heldout_shards", ())))

    def is_training(self, text: str) -> bool:
        return self.heldout_fraction == 0 or split_of(text, heldout_fraction=self.heldout_fraction, seed=0) == "train"


class SourceStream:
    """The training documents of one source for one rank, endless (it starts a new epoch at its end)."""

    def __init__(self, source: SourceFiles, *, rank: int, world: int, seed: int, shuffle: bool,
                 block: int = BLOCK) -> None:
        if not source.shards:
            raise FamilycError(f"data source {source.name} has no shards")
        self.source, self.rank, self.world, self.seed, self.shuffle, self.block = (
            source, rank, world, seed, shuffle, block)
        self.epoch, self.shard, self.row, self.offset = 0, 0, 0, 0
        self._docs: list[str] | None = None
        self._end: tuple[int, int, int] = (0, 0, 0)
        """(epoch, shard, row) where the next block starts."""
        self._open: tuple[int, int, int, Iterator[tuple[int, str]]] | None = None
        """(epoch, shard, next row, rows) of the shard being read, so consecutive blocks do not reopen it."""

    # --- position ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "shard": self.shard, "row": self.row, "offset": self.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.shard, self.row, self.offset = (int(state[k]) for k in ("epoch", "shard", "row", "offset"))
        self._docs, self._open = None, None

    # --- reading ----------------------------------------------------------------------------------
    def shard_order(self, epoch: int) -> list[str]:
        shards = list(self.source.shards)
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}:shards").shuffle(shards)
        return shards

    def _rows(self, epoch: int, shard: int, row: int) -> Iterator[tuple[int, str]]:
        if self._open is not None and self._open[:3] == (epoch, shard, row):
            return self._open[3]
        name = self.shard_order(epoch)[shard]
        fmt = shard_format(name)
        if fmt is None:
            raise _corrupt(Path(name), "is not a data file familyc reads")
        return read_rows(open_shard(name), fmt, self.source.text_field, start=row, every=self.world,
                         offset=self.rank)

    def _read_block(self) -> None:
        """The block starting at (epoch, shard, row): up to `block` training documents, permuted; a block never
        spans two epochs."""
        epoch, shard, row = self.epoch, self.shard, self.row
        docs: list[str] = []
        while len(docs) < self.block and shard < len(self.source.shards):
            rows = self._rows(epoch, shard, row)
            for got, text in rows:
                row = got + 1
                if self.source.is_training(text):
                    docs.append(text)
                    if len(docs) == self.block:
                        break
            if len(docs) == self.block:
                self._open = (epoch, shard, row, rows)
            else:
                shard, row, self._open = shard + 1, 0, None
        if not docs:
            if (self.shard, self.row) == (0, 0):
                raise FamilycError(f"data source {self.source.name} has no training document for rank "
                                   f"{self.rank} of {self.world}",
                                   hint="a source needs more documents than there are ranks, most of them not "
                                        "held out")
            self.epoch, self.shard, self.row = epoch + 1, 0, 0  # the epoch ended where the last block did
            self._read_block()
            return
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}:{self.shard}:{self.row}").shuffle(docs)
        self._docs = docs
        self._end = (epoch, shard, row)

    def next_document(self) -> str:
        while True:
            if self._docs is None:
                self._read_block()
            assert self._docs is not None
            if self.offset < len(self._docs):
                text = self._docs[self.offset]
                self.offset += 1
                return text
            self.epoch, self.shard, self.row = self._end
            self.offset, self._docs = 0, None
            if self.shard == len(self.source.shards):
                self.epoch, self.shard, self.row = self.epoch + 1, 0, 0


def _all_documents(source: SourceFiles) -> Iterator[tuple[bool, str]]:
    """(held out, text) of every document the held-out rule reads, in shard order, all ranks' rows: the named
    split's (all held out), or the training shards' (held out where the content hash says so)."""
    for name in source.heldout_shards or source.shards:
        fmt = shard_format(name)
        if fmt is None:
            continue
        for _, text in read_rows(open_shard(name), fmt, source.text_field):
            yield bool(source.heldout_shards) or not source.is_training(text), text


def write_heldout_sample(sources: Sequence[SourceFiles], out: Path, *, max_chars: int,
                         max_scan_chars: int) -> dict[str, int]:
    """`out/docs.jsonl`: held-out documents of every source, each source's share of `max_chars` in proportion
    to its weight, interleaved; what familyc's evaluations read (a sample, never the corpus). Each source is
    read until its share is full or `max_scan_chars` of its text were seen. Returns the characters kept per
    source."""
    total = sum(s.weight for s in sources)
    kept: dict[str, list[str]] = {}
    for source in sources:
        share, texts, size, seen = max_chars * source.weight / total, [], 0, 0
        for heldout, text in _all_documents(source):
            seen += len(text)
            if heldout:
                texts.append(text)
                size += len(text)
            if size >= share or seen >= max_scan_chars:
                break
        kept[source.name] = texts
    out.mkdir(parents=True, exist_ok=True)
    with (out / "docs.jsonl").open("w", encoding="ascii") as f:
        for i in range(max((len(t) for t in kept.values()), default=0)):
            for name, texts in kept.items():
                if i < len(texts):
                    f.write(json.dumps({"source": name, "text": texts[i]}, ensure_ascii=True) + "\n")
    return {name: sum(len(t) for t in texts) for name, texts in kept.items()}
