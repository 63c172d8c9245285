"""The text and tokenizer a run trains on, resolved before any stage starts.

- builtin corpus: built offline and deterministically (familyc.data), with its held-out split;
- a local folder of .jsonl (a "text" field per line), .txt (one document per file) or .parquet
  (a "text" column) files: split once into RUN_DIR/assets/local-<hash>/{train,heldout} by the
  same content hash as the builtin corpus, so no held-out document is ever trained on;
- a Hugging Face dataset name: passed to torchtitan's loader (needs the network or a populated
  Hugging Face cache; familyc does not split it, so the report has no held-out split of its own).
The tokenizer: the builtin BPE (trained on the builtin train split), a local folder holding
tokenizer.json, or a Hugging Face repository already downloaded (familyc downloads nothing).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from familyc.enums import BUILTIN_TOKENIZER_VOCAB
from familyc.errors import FamilycError
from familyc.execute.rundir import RunDir
from familyc.files import atomic_folder, atomic_write, sha256_file
from familyc.plan.ir import Plan

LOCAL_SUFFIXES = (".jsonl", ".json", ".txt", ".parquet")
INPUTS_FILE = "inputs.json"


@dataclass(frozen=True, kw_only=True, slots=True)
class DataInputs:
    """What the run's stages train on, resolved: the training documents, the tokenizer folder, and whether the
    data may need the network."""

    dataset_path: Path
    tokenizer_path: Path
    offline: bool
    heldout_path: Path | None = None
    """The held-out split familyc made (None for a Hugging Face dataset): the stages evaluate on it."""


def _local_documents(folder: Path) -> Iterator[str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES)
    if not files:
        raise FamilycError(f"the dataset folder {folder} holds no {', '.join(LOCAL_SUFFIXES)} files",
                           hint="data.dataset.path must be a folder of jsonl (a text field), txt or parquet files")
    for path in files:
        if path.suffix == ".txt":
            yield path.read_text(encoding="utf-8", errors="replace")
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq  # comes with the train extra (datasets)

            for batch in pq.ParquetFile(path).iter_batches(columns=["text"]):
                yield from (t for t in batch.column(0).to_pylist() if t)
        else:
            with path.open(encoding="utf-8", errors="replace") as f:
                for number, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line)["text"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise FamilycError(f"{path}:{number}: not a JSON object with a \"text\" field",
                                           hint="each line of a .jsonl file is one document: {\"text\": ...}") from None
                    if text:
                        yield text


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def split_local_dataset(folder: Path, cache: Path, *, heldout_fraction: float, seed: int = 0) -> tuple[Path, Path]:
    """(train_dir, heldout_dir) of `folder`'s documents, split by content hash; built once per content."""
    from familyc.data.builtin import split_of

    root = cache / f"local-{_folder_digest(folder)[:16]}-{heldout_fraction:g}"
    if not root.exists():
        with atomic_folder(root) as tmp:
            files = {s: (tmp / s / "docs.jsonl") for s in ("train", "heldout")}
            for path in files.values():
                path.parent.mkdir(parents=True)
            handles = {s: p.open("w", encoding="ascii") for s, p in files.items()}
            try:
                for text in _local_documents(folder):
                    split = split_of(text, heldout_fraction=heldout_fraction, seed=seed)
                    handles[split].write(json.dumps({"text": text}, ensure_ascii=True) + "\n")
            finally:
                for handle in handles.values():
                    handle.close()
    return root / "train", root / "heldout"


def spec_directory(plan: Plan, plan_file: Path | None) -> Path:
    """Where relative data paths in the spec are anchored: the spec's folder."""
    for base in (Path.cwd(), plan_file.resolve().parent.parent if plan_file else None):
        if base is not None and (base / plan.spec.path).is_file():
            return (base / plan.spec.path).resolve().parent
    return Path.cwd()


def check_inputs(plan: Plan, *, plan_file: Path | None) -> None:
    """The spec's local dataset folder and tokenizer are there: checked before a run directory is made."""
    data, tokenizer = plan.data, plan.tokenizer
    if data.kind == "path":
        folder = (spec_directory(plan, plan_file) / data.name).resolve()
        if not folder.is_dir():
            raise FamilycError(f"the dataset folder {folder} does not exist (data.dataset.path: {data.name} in "
                               f"{plan.spec.path})", hint="relative paths are read from the spec's folder")
    if tokenizer.kind == "hf":
        raise FamilycError(f"tokenizer {{hf: {tokenizer.name}}} is not on this machine: familyc downloads nothing",
                           hint=f"huggingface-cli download {tokenizer.name} --include 'tokenizer*' --local-dir "
                                "tokenizers/NAME, then use tokenizer: {path: tokenizers/NAME}")
    if tokenizer.kind == "path":
        tokenizer_dir = (spec_directory(plan, plan_file) / tokenizer.name).resolve()
        if not (tokenizer_dir / "tokenizer.json").is_file():
            raise FamilycError(f"{tokenizer_dir} holds no tokenizer.json", hint="the tokenizer folder of a Hugging "
                               "Face model (tokenizer.json and tokenizer_config.json)")


def prepare_data(plan: Plan, run: RunDir, *, plan_file: Path | None) -> DataInputs:
    check_inputs(plan, plan_file=plan_file)
    data, tokenizer = plan.data, plan.tokenizer
    builtin = None
    if data.kind == "builtin" or tokenizer.kind == "builtin":
        from familyc.data import ensure_builtin_assets

        vocab = BUILTIN_TOKENIZER_VOCAB.get(tokenizer.name, 2048) if tokenizer.kind == "builtin" else 2048
        corpus = data.name if data.kind == "builtin" else "stdlib-docstrings"  # the builtin tokenizer's text
        builtin = ensure_builtin_assets(run.assets, corpus=corpus, heldout_fraction=data.heldout_fraction,
                                        vocab_size=vocab)
    offline = True
    if data.kind == "builtin":
        assert builtin is not None
        dataset = builtin.train_dir
    elif data.kind == "path":
        folder = (spec_directory(plan, plan_file) / data.name).resolve()
        dataset, _ = split_local_dataset(folder, run.assets, heldout_fraction=data.heldout_fraction)
    else:
        dataset, offline = Path(data.name), False
    if tokenizer.kind == "builtin":
        assert builtin is not None
        tokenizer_dir = builtin.tokenizer_dir
    else:
        tokenizer_dir = (spec_directory(plan, plan_file) / tokenizer.name).resolve()
    heldout = builtin.heldout_dir if data.kind == "builtin" and builtin else None
    if data.kind == "path":
        heldout = dataset.parent / "heldout"
    _write_inputs(run, dataset=dataset, tokenizer=tokenizer_dir, heldout=heldout)
    return DataInputs(dataset_path=dataset, tokenizer_path=tokenizer_dir, offline=offline, heldout_path=heldout)


def _write_inputs(run: RunDir, *, dataset: Path, tokenizer: Path, heldout: Path | None) -> None:
    """RUN_DIR/inputs.json: the data and tokenizer the run trains with (report and export read it);
    paths inside the run directory are relative to it, so the directory can move."""
    def shown(path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            return path.resolve().relative_to(run.root.resolve()).as_posix()
        except ValueError:
            return str(path)

    body = {"dataset": shown(dataset), "tokenizer": shown(tokenizer), "heldout": shown(heldout)}
    atomic_write(run.root / INPUTS_FILE, json.dumps(body, indent=2) + "\n")


def run_inputs(run: RunDir) -> dict[str, Path | None]:
    """What _write_inputs recorded, as paths; empty when the run predates it."""
    try:
        body = json.loads((run.root / INPUTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: (run.root / v if v and not Path(v).is_absolute() else Path(v) if v else None) for k, v in body.items()}


def run_tokenizer_dir(plan: Plan, run: RunDir) -> Path:
    """The tokenizer folder the run trained with, found without building or downloading anything (export).

    What apply recorded in RUN_DIR/inputs.json; for older runs, builtin: the run's
    assets/<corpus>-*/tokenizer/ whose manifest names the plan's vocabulary
    and held-out fraction, its tokenizer files checked against the manifest; path: resolved from the
    spec's folder as prepare_data resolves it (relative to the working directory apply ran in)."""
    tokenizer = plan.tokenizer
    recorded = run_inputs(run).get("tokenizer")
    if recorded is not None and (recorded / "tokenizer.json").is_file():
        return recorded
    if tokenizer.kind == "builtin":
        vocab = BUILTIN_TOKENIZER_VOCAB.get(tokenizer.name, 2048)
        corpus = plan.data.name if plan.data.kind == "builtin" else "stdlib-docstrings"
        found = []
        for root in sorted(run.assets.glob(f"{corpus}-*")):
            try:
                manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
                inputs = manifest["inputs"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # an unfinished build
            if inputs.get("vocab_size") == vocab and inputs.get("heldout_fraction") == plan.data.heldout_fraction:
                found.append((root, manifest))
        if not found:
            raise FamilycError(f"{run.assets} holds no builtin tokenizer {tokenizer.name}",
                               hint="the run's assets are made by familyc apply; was this run directory copied "
                                    "without its assets/ folder?")
        if len(found) > 1:
            raise FamilycError(f"{run.assets} holds {len(found)} builtin {tokenizer.name} tokenizers "
                               f"({', '.join(root.name for root, _ in found)}): built by different Pythons, "
                               "so which one trained the members is not known")
        root, manifest = found[0]
        for name, digest in manifest.get("files", {}).items():
            if name.startswith("tokenizer/") and (not (root / name).is_file()
                                                  or sha256_file(root / name) != digest):
                raise FamilycError(f"{root / name} is missing or does not match {root / 'manifest.json'}")
        folder = root / "tokenizer"
    elif tokenizer.kind == "path":
        folder = (spec_directory(plan, None) / tokenizer.name).resolve()
    else:
        raise FamilycError(f"tokenizer {{hf: {tokenizer.name}}} is not on this machine: familyc downloads nothing")
    if not (folder / "tokenizer.json").is_file():
        raise FamilycError(f"{folder} holds no tokenizer.json (the tokenizer: entry of {plan.spec.path})",
                           hint="run familyc from the folder you ran familyc apply in: relative paths are "
                                "read from the spec's folder")
    return folder


def heldout_dir(plan: Plan, run: RunDir) -> Path | None:
    """The held-out split of the run's data, when familyc made one (report and calibration read it)."""
    recorded = run_inputs(run).get("heldout")
    if recorded is not None and recorded.is_dir():
        return recorded
    if plan.data.kind == "builtin":
        for root in sorted(run.assets.glob(f"{plan.data.name}-*")):
            if (root / "heldout").is_dir():
                return root / "heldout"
    if plan.data.kind == "path":
        for root in sorted(run.assets.glob("local-*")):
            if (root / "heldout").is_dir():
                return root / "heldout"
    return None
