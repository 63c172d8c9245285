"""familyc doctor's input checks: offline mode, the tokenizer and every data source, found without downloading.

A Hugging Face repository is looked up in the cache first, as apply finds it (familyc.data.hub with
`offline=True`: the cache only). Offline (HF_HUB_OFFLINE or --offline) that is all there is: a repository not
in the cache is a FAIL, as apply would stop at it. With the network allowed, one not in the cache must be
reachable: the hub is asked for its metadata (its commit, its file list; a gated model against this machine's
token), never for its files. A local tokenizer folder or data path must exist; the builtin ones are built by
apply and need nothing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

from familyc.data.hub import offline_forced, resolve_dataset, resolve_tokenizer, tokenizer_on_hub
from familyc.data.sources import shard_format
from familyc.errors import FamilycError
from familyc.execute.data import check_tokenizer, source_label, spec_directory
from familyc.execute.doctor_report import Check
from familyc.plan.ir import Plan, SourcePlan

NO_HUB = "huggingface_hub is not installed (the train extra's tokenizers brings it)"


def _hub_installed() -> bool:
    return importlib.util.find_spec("huggingface_hub") is not None


def _cache() -> str:
    from familyc.data.hub import cache_dir

    return cache_dir() if _hub_installed() else "(huggingface_hub is not installed)"


def offline_check(option: bool) -> Check:
    """Offline mode, as apply reads it: --offline, or HF_HUB_OFFLINE set (familyc.data.hub.offline_forced)."""
    if offline_forced(option):
        why = "--offline" if option else f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '').strip()}"
        return Check(name="offline", status="ok", found=f"offline mode is on ({why}): hub tokenizers and datasets "
                                                         f"must be in the cache ({_cache()})")
    return Check(name="offline", status="ok",
                 found=f"off: what is not in the Hugging Face cache ({_cache()}) is fetched as a run needs it")


# --- the tokenizer --------------------------------------------------------------------------------

def tokenizer_check(plan: Plan, plan_file: Path | None, offline: bool) -> Check:
    tokenizer = plan.tokenizer
    if tokenizer.kind == "builtin":
        return Check(name="tokenizer", status="ok", found=f"builtin {tokenizer.name} (apply builds it, offline)")
    if tokenizer.kind == "path":
        folder = (spec_directory(plan, plan_file) / tokenizer.name).resolve()
        if not (folder / "tokenizer.json").is_file():
            return Check(name="tokenizer", status="FAIL", found=f"{folder} holds no tokenizer.json",
                         hint="the tokenizer folder of a Hugging Face model (tokenizer.json, tokenizer_config.json)")
        return _with_vocabulary(Check(name="tokenizer", status="ok", found=f"{folder}"), folder, plan)
    name = f"hf {tokenizer.name}" + (f"@{tokenizer.revision}" if tokenizer.revision else "")
    if not _hub_installed():
        return Check(name="tokenizer", status="FAIL", found=f"{name}: not checked: {NO_HUB}",
                     hint="pip install -e '.[train]' torch==2.13.0")
    try:
        folder, commit = resolve_tokenizer(tokenizer.name, tokenizer.revision, offline=True)  # the cache only
    except FamilycError as cached:
        if offline:
            return Check(name="tokenizer", status="FAIL", found=f"{name}: not in the cache, and offline mode is on",
                         hint=cached.hint)
        try:
            commit = tokenizer_on_hub(tokenizer.name, tokenizer.revision)
        except FamilycError as exc:
            return Check(name="tokenizer", status="FAIL", found=f"{name}: not in the cache; {exc.message}",
                         hint=exc.hint)
        return Check(name="tokenizer", status="ok",
                     found=f"{name}: not in the cache; reachable on the hub (commit {commit[:12]}): apply fetches it")
    return _with_vocabulary(Check(name="tokenizer", status="ok", found=f"{name} in the cache (commit {commit[:12]})"),
                            folder, plan)


def _with_vocabulary(check: Check, folder: Path, plan: Plan) -> Check:
    """The check with the tokenizer's vocabulary where the tokenizers library (the train extra) can read it; a FAIL
    when the tokenizer does not fit the plan (apply's own check, familyc.execute.data.check_tokenizer)."""
    if importlib.util.find_spec("tokenizers") is None:
        return check
    try:
        facts = check_tokenizer(folder, vocab_size=plan.architecture.vocab_size,
                                what=f"tokenizer {plan.tokenizer.name}")
    except FamilycError as exc:
        return Check(name=check.name, status="FAIL", found=exc.message, hint=exc.hint)
    return dataclasses.replace(check, found=f"{check.found}, {facts['vocab']:,} tokens")


# --- the data -------------------------------------------------------------------------------------

def _local_source(plan: Plan, plan_file: Path | None, source: SourcePlan, label: str) -> Check:
    where = (spec_directory(plan, plan_file) / source.name).resolve()
    if where.is_file() and shard_format(where.name):
        return Check(name="data", status="ok", found=f"{label}: {where}")
    if where.is_dir():
        shards = sum(1 for p in where.rglob("*") if p.is_file() and shard_format(p.name))
        if shards:
            return Check(name="data", status="ok", found=f"{label}: {shards} data files in {where}")
        return Check(name="data", status="FAIL", found=f"{label}: {where} holds no data files",
                     hint="a folder of .parquet, .jsonl, .jsonl.gz, .json.gz or .txt files (read recursively)")
    return Check(name="data", status="FAIL", found=f"{label}: {where} does not exist",
                 hint="relative paths are read from the spec's folder")


def _hub_source(source: SourcePlan, label: str, offline: bool) -> Check:
    if not _hub_installed():
        return Check(name="data", status="FAIL", found=f"{label}: not checked: {NO_HUB}",
                     hint="pip install -e '.[train]' torch==2.13.0")

    def resolve(local: bool) -> tuple[int, str]:
        hub = resolve_dataset(source.name, config=source.config, split=source.split,
                              heldout_split=source.heldout_split, revision=source.revision, offline=local)
        return len(hub.train) + len(hub.heldout), hub.commit

    miss: FamilycError | None = None
    try:
        cached, commit = resolve(local=True)  # what the cached snapshot holds
    except FamilycError as exc:
        cached, commit, miss = 0, "", exc
    if offline:
        if miss is not None:
            return Check(name="data", status="FAIL", found=f"{label}: not in the cache, and offline mode is on",
                         hint=miss.hint)
        return Check(name="data", status="ok", found=f"{label}: {cached} data files in the cache (commit "
                                                      f"{commit[:12]}); offline, apply trains on these")
    try:
        listed, commit = resolve(local=False)  # the file list only: apply asks the same before it starts
    except FamilycError as exc:
        hint = "apply --offline (or HF_HUB_OFFLINE=1) trains on the cached files" if cached else exc.hint
        return Check(name="data", status="FAIL", found=f"{label}: {exc.message}", hint=hint)
    return Check(name="data", status="ok", found=f"{label}: {listed} data files on the hub (commit {commit[:12]}), "
                                                  f"{cached} in the cache; apply fetches the rest as stages read them")


def source_check(plan: Plan, plan_file: Path | None, source: SourcePlan, offline: bool) -> Check:
    label = source_label(source)
    if source.kind == "builtin":
        return Check(name="data", status="ok", found=f"{label} (apply builds it, offline)")
    if source.kind == "path":
        return _local_source(plan, plan_file, source, label)
    return _hub_source(source, label, offline)


def input_checks(plan: Plan | None, *, plan_file: Path | None, offline: bool) -> list[Check]:
    """Offline mode; with a plan, its tokenizer and each of its sources (one line each)."""
    checks = [offline_check(offline)]
    offline = offline_forced(offline)
    if plan is not None:
        checks.append(tokenizer_check(plan, plan_file, offline))
        checks += [source_check(plan, plan_file, source, offline) for source in plan.data.sources]
    return checks
