"""The text and tokenizer a run trains on, resolved and checked before any stage starts.

Sources (data.dataset, or the weighted mix data.sources):
- a builtin corpus: built offline and deterministically (familyc.data), with its held-out split;
- local shards (`path`: a folder, read recursively, or one file of .parquet / .jsonl / .jsonl.gz / .json.gz /
  .txt): read in place, nothing copied; every shard's header is checked before the run starts;
- a Hugging Face dataset (`hf`, with config, split, revision, text_field): its files of that config and split,
  from the Hugging Face cache, fetched shard by shard as the stages read them where the network is allowed
  (familyc.data.hub).
Every source has held-out text: the documents the content hash of the builtin corpora (`split_of`, seed 0)
keeps out, skipped by the training stream and read by the evaluations; or, for a hub dataset with
`heldout: {split: ...}`, that split. familyc's evaluations read RUN_DIR/assets/heldout-<key>/docs.jsonl, a
sample of every source's held-out documents in proportion to the weights (never the corpus).

A run on the single builtin corpus trains through torchtitan's own text loader on the corpus's train folder,
exactly as before mixes existed; any other run through familyc's mixture (familyc.backend.dataset), which reads
RUN_DIR/data.json, the manifest written here.

The tokenizer: the builtin BPE (trained on the builtin train split), a local folder holding tokenizer.json, or a
Hugging Face model repository (`hf`, `revision`) from the cache, fetched where the network is allowed. Before
anything is written its vocabulary must fit architecture.vocab_size and its BOS and EOS must be known.

RUN_DIR/inputs.json records what the run trains with: the folders, each source's resolved revision and shard
count, the tokenizer's repository, revision and the sha256 of its tokenizer.json.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from familyc.data.builtin import Assets
from familyc.data.hub import offline_forced, resolve_dataset, resolve_tokenizer
from familyc.data.mixture import DataManifest
from familyc.data.sources import FORMATS, SourceFiles, check_shard, shard_format, write_heldout_sample
from familyc.enums import BUILTIN_TOKENIZER_VOCAB
from familyc.errors import FamilycError
from familyc.execute.rundir import RunDir
from familyc.files import atomic_folder, atomic_write, sha256_file
from familyc.plan.ir import Plan, SourcePlan

INPUTS_FILE = "inputs.json"
MANIFEST_FILE = "data.json"
TORCHTITAN_DATASET = "c4_test"
"""torchtitan's loader of a local folder of jsonl, which the single builtin corpus trains through."""
FAMILYC_DATASET = "familyc"
"""familyc.backend.dataset's mixture (familyc.backend.dataset.DATASET_NAME; that module imports torch)."""
SAMPLE_POOL_TOKENS = 2 * 2**20
"""Held-out tokens a sample aims at, at least: familyc.backend.evaluate reads a pool of max(POOL_TOKENS = 2^20,
POOL_FACTOR = 16 x the tokens evaluated) tokens of one half (validation or test) of the held-out documents, so
a sample of 2 halves x max(2^20, 16 x the largest evaluation) holds a full pool for either half."""
CHARS_PER_TOKEN = 4
"""Characters of text per token of an English BPE (Llama 3's: about 4.2 on C4); a smaller vocabulary has
fewer, which only makes the pool smaller than aimed at (the evaluations need a fraction of it)."""
SCAN_FACTOR = 3
"""A source is read for its held-out sample until it has shown SCAN_FACTOR x share / heldout_fraction
characters: past that its held-out documents are too rare to be worth the reading (the sample holds fewer)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DataInputs:
    """What the run's stages train on, resolved: the dataset torchtitan is told, the tokenizer folder, whether
    the stages may use the network, and the held-out sample the evaluations read."""

    dataset_path: Path
    tokenizer_path: Path
    offline: bool
    heldout_path: Path | None = None
    dataset_name: str = TORCHTITAN_DATASET
    """`training.dataset` of the jobs: c4_test (dataset_path a folder) or familyc (dataset_path the manifest)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ResolvedInputs:
    """The plan's tokenizer and non-builtin sources, found and checked (`check_inputs`); nothing written yet."""

    offline: bool
    tokenizer_dir: Path | None
    """None: the builtin tokenizer, built with the run's assets."""
    tokenizer_record: dict[str, Any]
    sources: tuple[SourceFiles | None, ...]
    """Per plan source; None for a builtin corpus (built with the run's assets)."""
    records: tuple[dict[str, Any], ...] = field(default=())


def spec_directory(plan: Plan, plan_file: Path | None) -> Path:
    """Where relative data paths in the spec are anchored: the spec's folder."""
    for base in (Path.cwd(), plan_file.resolve().parent.parent if plan_file else None):
        if base is not None and (base / plan.spec.path).is_file():
            return (base / plan.spec.path).resolve().parent
    return Path.cwd()


def source_label(source: SourcePlan) -> str:
    config = f"/{source.config}" if source.config else ""
    split = f":{source.split}" if source.kind == "hf" and source.split != "train" else ""
    return f"{source.kind}:{source.name}{config}{split}"


# --- tokenizer ------------------------------------------------------------------------------------

def check_tokenizer(folder: Path, *, vocab_size: int, what: str) -> dict[str, Any]:
    """The tokenizer in `folder` fits vocab_size and has a known BOS and EOS; returns its facts."""
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises its own Exception type
        raise FamilycError(f"{path}: not a tokenizer ({exc})",
                           hint=f"{what} must hold a Hugging Face tokenizer.json") from None
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > vocab_size:
        raise FamilycError(f"{what} has {size:,} tokens, more than architecture.vocab_size {vocab_size:,}: its "
                           "ids would index past the embedding",
                           hint=f"set architecture.vocab_size to at least {size} (a multiple of 64 or 128 is "
                                "faster on GPUs), or use a smaller tokenizer")
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FamilycError(f"{folder / 'tokenizer_config.json'} cannot be read ({exc})",
                           hint="torchtitan reads BOS and EOS from it: fetch it with tokenizer.json") from None
    ids = {}
    for key in ("bos_token", "eos_token"):
        token = config.get(key)
        token = token.get("content") if isinstance(token, dict) else token
        ids[key] = tokenizer.token_to_id(token) if isinstance(token, str) else None
        if ids[key] is None:
            raise FamilycError(f"{what}: its {key} ({token!r}) is not a token of tokenizer.json",
                               hint=f"tokenizer_config.json must name the {key}: every document is framed by "
                                    "BOS and EOS, as torchtitan trains")
    return {"vocab": size, "bos_id": ids["bos_token"], "eos_id": ids["eos_token"], "sha256": sha256_file(path)}


def _resolve_tokenizer(plan: Plan, plan_file: Path | None, offline: bool) -> tuple[Path | None, dict[str, Any]]:
    tokenizer, vocab = plan.tokenizer, plan.architecture.vocab_size
    if tokenizer.kind == "builtin":
        return None, {"kind": "builtin", "name": tokenizer.name}
    if tokenizer.kind == "hf":
        folder, commit = resolve_tokenizer(tokenizer.name, tokenizer.revision, offline=offline)
        facts = check_tokenizer(folder, vocab_size=vocab, what=f"tokenizer {tokenizer.name}")
        return folder, {"kind": "hf", "repo": tokenizer.name, "revision": commit, **facts}
    folder = (spec_directory(plan, plan_file) / tokenizer.name).resolve()
    if not (folder / "tokenizer.json").is_file():
        raise FamilycError(f"{folder} holds no tokenizer.json (tokenizer: {{path: {tokenizer.name}}} in "
                           f"{plan.spec.path})", hint="the tokenizer folder of a Hugging Face model "
                                                      "(tokenizer.json and tokenizer_config.json)")
    facts = check_tokenizer(folder, vocab_size=vocab, what=f"the tokenizer in {folder}")
    return folder, {"kind": "path", "path": str(folder), **facts}


# --- sources --------------------------------------------------------------------------------------

def _local_shards(plan: Plan, plan_file: Path | None, source: SourcePlan) -> list[str]:
    where = (spec_directory(plan, plan_file) / source.name).resolve()
    if where.is_file():
        if shard_format(where.name) is None:
            raise FamilycError(f"{where} is not a data file familyc reads (data path {source.name} in "
                               f"{plan.spec.path})", hint=f"shards end in {', '.join(sorted(FORMATS))}")
        return [str(where)]
    if not where.is_dir():
        raise FamilycError(f"the dataset folder {where} does not exist (data path {source.name} in "
                           f"{plan.spec.path})", hint="relative paths are read from the spec's folder")
    shards = sorted((p for p in where.rglob("*") if p.is_file() and shard_format(p.name)
                     and not any(part.startswith(".") for part in p.relative_to(where).parts)),
                    key=lambda p: p.relative_to(where).as_posix())
    if not shards:
        raise FamilycError(f"the dataset folder {where} holds no data files",
                           hint=f"data path: a folder of {', '.join(sorted(FORMATS))} files (read recursively)")
    return [str(p) for p in shards]


def _check_shards(shards: list[str], source: SourcePlan, *, all_of_them: bool) -> None:
    """Every local shard's header (a missing or corrupt one is named); of a hub source only the first, which
    a stage fetches first anyway (fetching hundreds of GB to check them would be the download itself)."""
    from familyc.data.sources import open_shard

    for name in shards if all_of_them else shards[:1]:
        fmt = shard_format(name)
        assert fmt is not None
        check_shard(open_shard(name), fmt, source.text_field)


def _resolve_source(plan: Plan, plan_file: Path | None, source: SourcePlan,
                    offline: bool) -> tuple[SourceFiles | None, dict[str, Any]]:
    label = source_label(source)
    if source.kind == "builtin":
        return None, {"name": label, "kind": "builtin", "weight": source.weight}
    if source.kind == "path":
        shards = _local_shards(plan, plan_file, source)
        _check_shards(shards, source, all_of_them=True)
        files = SourceFiles(name=label, shards=tuple(shards), text_field=source.text_field, weight=source.weight,
                            heldout_fraction=plan.data.heldout_fraction)
        return files, {"name": label, "kind": "path", "shards": len(shards), "weight": source.weight}
    hub = resolve_dataset(source.name, config=source.config, split=source.split, heldout_split=source.heldout_split,
                          revision=source.revision, offline=offline)
    _check_shards(list(hub.train), source, all_of_them=offline)
    if hub.heldout:
        _check_shards(list(hub.heldout), source, all_of_them=offline)
    files = SourceFiles(name=label, shards=hub.train, text_field=source.text_field, weight=source.weight,
                        heldout_fraction=0.0 if hub.heldout else plan.data.heldout_fraction,
                        heldout_shards=hub.heldout)
    return files, {"name": label, "kind": "hf", "repo": source.name, "revision": hub.commit,
                   "shards": len(hub.train), "heldout_shards": len(hub.heldout), "weight": source.weight}


def check_inputs(plan: Plan, *, plan_file: Path | None, offline: bool = False) -> ResolvedInputs:
    """The tokenizer and every non-builtin source found and checked, before a run directory is made: a run
    that cannot start writes nothing. `offline` (or HF_HUB_OFFLINE) keeps familyc off the network."""
    offline = offline_forced(offline)
    tokenizer_dir, tokenizer_record = _resolve_tokenizer(plan, plan_file, offline)
    resolved = [_resolve_source(plan, plan_file, s, offline) for s in plan.data.sources]
    return ResolvedInputs(offline=offline, tokenizer_dir=tokenizer_dir, tokenizer_record=tokenizer_record,
                          sources=tuple(files for files, _ in resolved), records=tuple(r for _, r in resolved))


# --- the run's inputs -----------------------------------------------------------------------------

def _single_builtin(plan: Plan) -> bool:
    return len(plan.data.sources) == 1 and plan.data.sources[0].kind == "builtin"


def prepare_data(plan: Plan, run: RunDir, *, plan_file: Path | None, resolved: ResolvedInputs | None = None,
                 offline: bool = False) -> DataInputs:
    """Build the builtin assets the plan needs, write the data manifest and the held-out sample (once per
    content), and RUN_DIR/inputs.json."""
    resolved = resolved or check_inputs(plan, plan_file=plan_file, offline=offline)
    data, tokenizer = plan.data, plan.tokenizer
    builtins = {s.name for s in data.sources if s.kind == "builtin"}
    assets: dict[str, Assets] = {}
    if builtins or tokenizer.kind == "builtin":
        from familyc.data import ensure_builtin_assets

        vocab = BUILTIN_TOKENIZER_VOCAB.get(tokenizer.name, 2048) if tokenizer.kind == "builtin" else 2048
        # the builtin tokenizer is trained on the first builtin corpus of the plan, or on the docstrings
        first = next((s.name for s in data.sources if s.kind == "builtin"), "stdlib-docstrings")
        for corpus in dict.fromkeys([first, *sorted(builtins)]):
            assets[corpus] = ensure_builtin_assets(run.assets, corpus=corpus, heldout_fraction=data.heldout_fraction,
                                                   vocab_size=vocab)
        if tokenizer.kind == "builtin":
            facts = check_tokenizer(assets[first].tokenizer_dir, vocab_size=plan.architecture.vocab_size,
                                    what=f"tokenizer {tokenizer.name}")
            resolved = _with_tokenizer(resolved, assets[first].tokenizer_dir, facts)
    assert resolved.tokenizer_dir is not None
    if _single_builtin(plan):
        built = assets[data.sources[0].name]
        inputs = DataInputs(dataset_path=built.train_dir, tokenizer_path=resolved.tokenizer_dir,
                            offline=True, heldout_path=built.heldout_dir)
    else:
        sources = tuple(files if files is not None else _builtin_files(assets[s.name], s)
                        for s, files in zip(data.sources, resolved.sources, strict=True))
        manifest = DataManifest(sources=sources, seed=plan.training.seed, shuffle=data.shuffle)
        manifest.write(run.root / MANIFEST_FILE)
        inputs = DataInputs(dataset_path=run.root / MANIFEST_FILE, tokenizer_path=resolved.tokenizer_dir,
                            offline=resolved.offline or all(s.kind != "hf" for s in data.sources),
                            heldout_path=_heldout_sample(plan, run, manifest),
                            dataset_name=FAMILYC_DATASET)
    _write_inputs(run, inputs, resolved)
    return inputs


def _with_tokenizer(resolved: ResolvedInputs, folder: Path, facts: dict[str, Any]) -> ResolvedInputs:
    return ResolvedInputs(offline=resolved.offline, tokenizer_dir=folder,
                          tokenizer_record={**resolved.tokenizer_record, **facts}, sources=resolved.sources,
                          records=resolved.records)


def _builtin_files(assets: Assets, source: SourcePlan) -> SourceFiles:
    """A builtin corpus as a source of a mix: its train split is all training, its held-out split the held-out
    text (made by the same content hash)."""
    train, heldout = (tuple(str(p) for p in sorted(d.glob("*.jsonl"))) for d in (assets.train_dir, assets.heldout_dir))
    return SourceFiles(name=source_label(source), shards=train, text_field="text", weight=source.weight,
                       heldout_fraction=0.0, heldout_shards=heldout)


def _heldout_sample(plan: Plan, run: RunDir, manifest: DataManifest) -> Path:
    """RUN_DIR/assets/heldout-<key>/: the held-out sample of the mix, built once per manifest and size."""
    largest = max((s.eval.tokens for s in [*plan.train_steps(), *(b.train for b in plan.baseline.members)]
                   if s.eval is not None), default=0)
    tokens = max(SAMPLE_POOL_TOKENS, 2 * 16 * largest)  # see SAMPLE_POOL_TOKENS
    chars = tokens * CHARS_PER_TOKEN
    key = hashlib.sha256(json.dumps({"sources": manifest.to_json()["sources"], "chars": chars},
                                    sort_keys=True).encode()).hexdigest()[:16]
    root = run.assets / f"heldout-{key}"
    if not (root / "docs.jsonl").is_file():
        with atomic_folder(root) as tmp:
            fraction = min((s.heldout_fraction for s in manifest.sources if s.heldout_fraction), default=1.0)
            kept = write_heldout_sample(manifest.sources, tmp, max_chars=chars,
                                        max_scan_chars=int(SCAN_FACTOR * chars / fraction))
            atomic_write(tmp / "sample.json", json.dumps({"chars": kept, "aimed_at": chars}, indent=2) + "\n")
            if not any(kept.values()):
                raise FamilycError("no source has a held-out document: the evaluations would have nothing to read",
                                   hint="raise data.heldout_fraction, or add documents to the sources")
    return root


def _write_inputs(run: RunDir, inputs: DataInputs, resolved: ResolvedInputs) -> None:
    """RUN_DIR/inputs.json: the data and tokenizer the run trains with (report and export read it);
    paths inside the run directory are relative to it, so the directory can move."""
    def shown(path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            return path.resolve().relative_to(run.root.resolve()).as_posix()
        except ValueError:
            return str(path)

    body = {"dataset": shown(inputs.dataset_path), "tokenizer": shown(inputs.tokenizer_path),
            "heldout": shown(inputs.heldout_path), "loader": inputs.dataset_name,
            "tokenizer_source": resolved.tokenizer_record, "sources": list(resolved.records)}
    atomic_write(run.root / INPUTS_FILE, json.dumps(body, indent=2) + "\n")


PATH_KEYS = ("dataset", "tokenizer", "heldout")


def run_inputs(run: RunDir) -> dict[str, Path | None]:
    """The folders _write_inputs recorded, as paths; empty when the run predates it."""
    try:
        body = json.loads((run.root / INPUTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    values = {k: body.get(k) for k in PATH_KEYS}
    return {k: (run.root / v if v and not Path(v).is_absolute() else Path(v) if v else None)
            for k, v in values.items()}


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
        first = plan.data.sources[0]
        corpus = first.name if first.kind == "builtin" else "stdlib-docstrings"
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
        raise FamilycError(f"{run.root / INPUTS_FILE} does not name the tokenizer {tokenizer.name} the run "
                           "trained with", hint="familyc apply records it; apply the plan in this run directory")
    if not (folder / "tokenizer.json").is_file():
        raise FamilycError(f"{folder} holds no tokenizer.json (the tokenizer: entry of {plan.spec.path})",
                           hint="run familyc from the folder you ran familyc apply in: relative paths are "
                                "read from the spec's folder")
    return folder


def heldout_dir(plan: Plan, run: RunDir) -> Path | None:
    """The held-out text of the run (report and calibration read it): the builtin corpus's held-out split, or
    the sample of every source's held-out documents."""
    recorded = run_inputs(run).get("heldout")
    if recorded is not None and recorded.is_dir():
        return recorded
    if _single_builtin(plan):
        for root in sorted(run.assets.glob(f"{plan.data.sources[0].name}-*")):
            if (root / "heldout").is_dir():
                return root / "heldout"
    for root in sorted(run.assets.glob("heldout-*")):
        if (root / "docs.jsonl").is_file():
            return root
    return None
