"""Hugging Face repositories, resolved through the Hugging Face cache. Torch-free (huggingface_hub, imported late).

familyc reads a hub tokenizer or dataset where huggingface_hub keeps it (HF_HOME, HF_HUB_CACHE) and asks the
network only when it is allowed: never when HF_HUB_OFFLINE is set or `familyc apply --offline` is given. Offline,
a repository must be in the cache already, e.g. after

    hf download meta-llama/Meta-Llama-3-8B tokenizer.json tokenizer_config.json config.json
    hf download --repo-type dataset allenai/c4 --include 'en/*'

A revision (branch, tag or commit) is resolved to its commit before any stage starts, and every stage reads that
commit: a branch that moves during a run does not change what the run trains on. A dataset's shards are named
`hf://datasets/REPO@COMMIT/FILE` in the run's data manifest and fetched (or found in the cache) the first time a
stage reads them (`local_shard`), so a corpus of hundreds of GB is never downloaded before the run starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from familyc.data.sources import shard_format, split_words
from familyc.errors import FamilycError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json",
                   "generation_config.json")
"""What familyc fetches of a model repository: torchtitan's tokenizer reads tokenizer.json and
tokenizer_config.json (its BOS and EOS); the others travel with the exported members."""
HUB_PREFIX = "hf://datasets/"
_TRUE = {"1", "true", "yes", "on"}


def offline_forced(option: bool = False) -> bool:
    """Whether the network is off for familyc: `--offline`, or HF_HUB_OFFLINE set as huggingface_hub reads it."""
    return option or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _hub_error(what: str, repo: str, exc: Exception, *, offline: bool, download: str) -> FamilycError:
    """A clear error for what huggingface_hub raised while resolving `repo`."""
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        return FamilycError(f"{what} {repo} is gated: this machine's Hugging Face token may not read it",
                            hint=f"accept its licence on huggingface.co, run `hf auth login`, then `{download}`")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return FamilycError(f"{what} {repo} does not exist on the Hugging Face hub (or is private)",
                            hint="check the name (owner/name), or `hf auth login` for a private repository")
    if isinstance(exc, errors.RevisionNotFoundError):
        return FamilycError(f"{what} {repo}: no such revision ({exc})", hint="a branch, tag or commit of it")
    if offline or isinstance(exc, errors.LocalEntryNotFoundError | errors.OfflineModeIsEnabled):
        why = "the network is off (HF_HUB_OFFLINE or --offline)" if offline else "the hub cannot be reached"
        return FamilycError(f"{what} {repo} is not in the Hugging Face cache ({cache_dir()}) and {why}",
                            hint=f"on a machine with the network: `{download}` (into the same HF_HOME), or "
                                 "allow the network (unset HF_HUB_OFFLINE, drop --offline)")
    return FamilycError(f"{what} {repo}: the Hugging Face hub refused ({type(exc).__name__}: {exc})",
                        hint=f"try again later, or `{download}` and apply with --offline")


def resolve_tokenizer(repo: str, revision: str | None, *, offline: bool) -> tuple[Path, str]:
    """(folder, commit) of a model repository's tokenizer files in the cache, fetched first where allowed."""
    from huggingface_hub import snapshot_download

    download = f"hf download {repo} {' '.join(TOKENIZER_FILES[:3])}" + (f" --revision {revision}" if revision else "")
    try:
        folder = Path(snapshot_download(repo, revision=revision, allow_patterns=list(TOKENIZER_FILES),
                                        local_files_only=offline))
    except Exception as exc:  # huggingface_hub's errors, and OSError / HTTP errors under them
        raise _hub_error("tokenizer", repo, exc, offline=offline, download=download) from None
    if not (folder / "tokenizer.json").is_file():
        raise FamilycError(f"tokenizer {repo}: {folder} holds no tokenizer.json",
                           hint=f"`{download}`; a repository with only a sentencepiece tokenizer.model needs "
                                "converting to tokenizer.json first (transformers' AutoTokenizer.save_pretrained)")
    return folder, folder.name


def tokenizer_on_hub(repo: str, revision: str | None) -> str:
    """The commit `revision` of a model repository resolves to on the hub, asking for its metadata only (nothing is
    downloaded: `familyc doctor`); a gated repository is checked against this machine's token too."""
    from huggingface_hub import HfApi

    download = f"hf download {repo} {' '.join(TOKENIZER_FILES[:3])}" + (f" --revision {revision}" if revision else "")
    api = HfApi()
    try:
        info: Any = api.repo_info(repo, revision=revision)
        if getattr(info, "gated", False):
            api.auth_check(repo)
    except Exception as exc:  # huggingface_hub's errors, and OSError / HTTP errors under them
        raise _hub_error("tokenizer", repo, exc, offline=False, download=download) from None
    return str(info.sha)


@dataclass(frozen=True, kw_only=True, slots=True)
class HubDataset:
    repo: str
    commit: str
    train: tuple[str, ...]
    """Shards as `hf://datasets/REPO@COMMIT/FILE`, sorted."""
    heldout: tuple[str, ...]
    """The named held-out split's shards (empty: held out by hash)."""


def resolve_dataset(repo: str, *, config: str | None, split: str, heldout_split: str | None,
                    revision: str | None, offline: bool) -> HubDataset:
    """The dataset's files of `config` and the split(s), at the commit `revision` resolves to: listed from the
    cached snapshot offline, from the hub otherwise."""
    include = f"{config}/*" if config else "*"
    download = f"hf download --repo-type dataset {repo} --include '{include}'" + (
        f" --revision {revision}" if revision else "")
    try:
        if offline:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(repo, repo_type="dataset", revision=revision, local_files_only=True))
            commit = folder.name
            files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        else:
            from huggingface_hub import HfApi

            info: Any = HfApi().dataset_info(repo, revision=revision)
            commit = str(info.sha)
            files = [s.rfilename for s in info.siblings or ()]
    except Exception as exc:
        raise _hub_error("dataset", repo, exc, offline=offline, download=download) from None
    train = select_files(files, repo=repo, config=config, split=split, download=download)
    heldout = select_files(files, repo=repo, config=config, split=heldout_split, download=download) \
        if heldout_split else []
    ref = f"{HUB_PREFIX}{repo}@{commit}/"
    return HubDataset(repo=repo, commit=commit, train=tuple(ref + f for f in train),
                      heldout=tuple(ref + f for f in heldout))


def select_files(files: list[str], *, repo: str, config: str | None, split: str, download: str) -> list[str]:
    """The data files of `config` (its folder) whose names mention `split`; every data file is `train` in a
    dataset whose file names name no split."""
    data = sorted(f for f in files if shard_format(f) and not any(p.startswith(".") for p in f.split("/")))
    where = f"{repo}" + (f" config {config}" if config else "")
    if config:
        under = [f for f in data if f.split("/")[0] == config]
        if not under:
            folders = sorted({f.split("/")[0] for f in data if "/" in f})
            raise FamilycError(f"dataset {where}: no data files under {config}/ "
                               f"(folders with data: {', '.join(folders) or 'none'})",
                               hint=f"check data's config, or fetch it: `{download}`")
        data = under
    mentioned = [f for f in data if split in split_words(f)]
    if mentioned:
        return mentioned
    if split == "train" and data and not any(split_words(f) for f in data):
        return data
    splits = sorted({w for f in data for w in split_words(f)})
    raise FamilycError(f"dataset {where}: no data file of split {split!r} "
                       f"({len(data)} data files; splits named: {', '.join(splits) or 'none'})",
                       hint=f"name one of those splits, or fetch its files: `{download}`")


def local_shard(shard: str) -> Path:
    """The file a shard name stands for: a local path as it is; a hub shard from the cache, fetched first where
    the network is allowed (HF_HUB_OFFLINE unset)."""
    if not shard.startswith(HUB_PREFIX):
        return Path(shard)
    from huggingface_hub import hf_hub_download

    repo, _, at = shard[len(HUB_PREFIX):].partition("@")  # a repository name has no @, a commit no /
    commit, _, filename = at.partition("/")
    offline = offline_forced()
    try:
        return Path(hf_hub_download(repo, filename, repo_type="dataset", revision=commit, local_files_only=offline))
    except Exception as exc:
        raise _hub_error("dataset", repo, exc, offline=offline,
                         download=f"hf download --repo-type dataset {repo} {filename} --revision {commit}") from None
