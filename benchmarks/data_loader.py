"""Is the data path ever what a GPU waits for? familyc's loader alone on local parquet shards, a 128K BPE.

    .venv/bin/python benchmarks/data_loader.py [--work DIR] [--tokens N] [--update BENCHMARKS.md]

1. Shards: the builtin `stdlib-source` corpus (31.5 MB of Python source, one document per file) as 8 local
   parquet shards, read in place.
2. Tokenizer: a byte-level BPE with Llama 3's vocabulary size (128,256), trained here on those documents
   (familyc.data.bpe; a corpus that runs out of pairs to merge gives fewer tokens: the size reached is reported).
3. The loader alone, per rank: familyc.backend.dataset.MixtureDataset — read the shards (rows rank, rank + world,
   ...), drop held-out documents, shuffle blocks, tokenize with torchtitan's own HuggingFaceTokenizer (BOS and
   EOS), pack into windows of seq_len + 1 = 8,193 tokens as tensors — for rank 0 of 1 and rank 0 of 8, until
   `--tokens` tokens, in this process: one data worker (torchtitan's default, num_workers 0). Tokens/s = tokens
   given out / wall seconds, the first window (start-up: the parquet reader, the tokenizer) included.
4. Side by side in the same run: one training stage on this CPU through the same loader (`familyc apply` of a
   one-member spec, dim 64, 2 layers, vocab 128,256, seq_len 256, on the same shards and tokenizer): its
   tokens/s and the share of its step time torchtitan counts as data loading.
5. The need: what one H100 consumes training the 8B member of `specs/llama_1b_8b.yaml` at the planned MFU, from
   the checked-in plan: the 8B stage's tokens / (its predicted seconds x its devices). Target (issue 12): the
   loader per worker >= 5 x that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HEADING = "## Data loader"
SHARDS = 8
LLAMA3_VOCAB = 128_256
"""Llama 3's tokenizer: 128,000 BPE tokens and 256 special ones."""
SEQ_LEN = 8192
"""specs/llama_1b_8b.yaml's sequence length."""
TARGET = 5.0


def build_inputs(work: Path) -> tuple[Path, Path, dict[str, Any]]:
    """(shard folder, tokenizer folder, facts), built once under `work`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from familyc.data import ensure_builtin_assets
    from familyc.data.bpe import build_bpe_tokenizer

    assets = ensure_builtin_assets(work / "assets", corpus="stdlib-source")
    texts = [json.loads(line)["text"] for line in (assets.train_dir / "docs.jsonl").read_text().splitlines()]
    texts += [json.loads(line)["text"] for line in (assets.heldout_dir / "docs.jsonl").read_text().splitlines()]
    shards = work / "shards"
    if not shards.is_dir():
        tmp = work / "shards.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        for i in range(SHARDS):
            pq.write_table(pa.table({"text": texts[i::SHARDS]}), tmp / f"train-{i:05d}-of-{SHARDS:05d}.parquet")
        tmp.rename(shards)
    tokenizer = work / "bpe-128k"
    seconds = None
    if not (tokenizer / "tokenizer.json").is_file():
        started = time.perf_counter()
        build_bpe_tokenizer(tokenizer, LLAMA3_VOCAB, train_dir=assets.train_dir)
        seconds = time.perf_counter() - started
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tokenizer / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    return shards, tokenizer, {"documents": len(texts), "chars": sum(map(len, texts)), "vocab": vocab,
                               "tokenizer_train_seconds": seconds}


def loader_rate(shards: Path, tokenizer_dir: Path, *, world: int, tokens: int) -> dict[str, float]:
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    from familyc.backend.dataset import MixtureDataset
    from familyc.data.mixture import DataManifest
    from familyc.data.sources import SourceFiles

    manifest_path = shards.parent / f"manifest-{world}.json"
    source = SourceFiles(name="path:shards", shards=tuple(str(p) for p in sorted(shards.glob("*.parquet"))),
                         text_field="text", weight=1.0, heldout_fraction=0.05)
    DataManifest(sources=(source,), seed=0, shuffle=True).write(manifest_path)
    tokenizer = HuggingFaceTokenizer(str(tokenizer_dir))
    started = time.perf_counter()
    dataset = MixtureDataset(manifest_path, tokenizer, seq_len=SEQ_LEN, dp_rank=0, dp_world_size=world)
    given = 0
    for inputs, _labels in dataset:
        given += inputs["input"].numel()
        if given >= tokens:
            break
    seconds = time.perf_counter() - started
    return {"world": world, "tokens": given, "seconds": seconds, "tokens_per_s": given / seconds}


STAGE_SPEC = """\
# benchmarks/data_loader.py: one member on the benchmark's shards and 128K tokenizer, a few steps.
version: 1
family: {{name: loader-bench}}
architecture: {{vocab_size: {vocab}, seq_len: 256, rope_theta: 10000}}
members:
  - {{name: m, dim: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, ffn_dim: 192}}
budget: {{rule: explicit, tokens: {{m: 40960}}}}
lr: {{rule: constant, value: 1.0e-3, schedule: {{warmup_steps: 2, decay: cosine}}}}
training: {{batch_tokens: 2048, precision: fp32, compile: false, checkpoint_interval: 1000, log_interval: 1,
           eval: {{interval: none}}}}
data: {{dataset: {{path: {shards}}}}}
tokenizer: {{path: {tokenizer}}}
cluster: {{accelerator: cpu, gpus_per_node: 2, mfu: 0.3, price_per_gpu_hour: 0, memory_gib: 8}}
"""


def stage_rate(work: Path, shards: Path, tokenizer: Path, vocab: int) -> dict[str, float]:
    """A real stage through the same loader: its steady tokens/s (after 4 steps) and data-loading share."""
    spec = work / "stage.yaml"
    rounded = -(-vocab // 256) * 256
    spec.write_text(STAGE_SPEC.format(vocab=rounded, shards=shards, tokenizer=tokenizer))
    run = work / "stage-run"
    subprocess.run(["rm", "-rf", str(run)], check=True)
    subprocess.run([sys.executable, "-m", "familyc", "apply", str(spec), "--yes", "--run-dir", str(run)], cwd=REPO,
                   check=True, capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"})
    records = [json.loads(line) for line in (run / "steps" / "train-m" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r and r.get("tps") and r["step"] > 4]  # logged steps (not evals)
    step_seconds = sum(r["end_to_end_s"] for r in steps if r.get("end_to_end_s"))
    loading = sum(r["data_loading_s"] for r in steps if r.get("data_loading_s") is not None)
    tps = sum(r["tps"] for r in steps) / len(steps)
    return {"tokens_per_s_per_rank": tps, "ranks": 2, "data_loading_share": loading / step_seconds if step_seconds
            else float("nan"), "steps": len(steps)}


def h100_need() -> dict[str, float]:
    plan = json.loads((REPO / "plans" / "llama_1b_8b.plan.json").read_text())
    step = next(s for s in plan["steps"] if s["kind"] == "train" and s["member"] == "8B")
    devices = plan["cluster"]["gpus_per_node"] * plan["cluster"]["nodes"]
    return {"tokens": step["tokens"], "seconds": step["predicted_seconds"], "devices": devices,
            "tokens_per_s_per_gpu": step["tokens"] / (step["predicted_seconds"] * devices),
            "mfu": plan["cluster"]["mfu"]}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def markdown(result: dict[str, Any]) -> str:
    need = result["need"]["tokens_per_s_per_gpu"]
    rows = "\n".join(f"| loader alone, rank 0 of {r['world']} | {r['tokens']:,} | {r['seconds']:.1f} | "
                     f"{r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / need:.1f}x |" for r in result["loader"])
    s = result["stage"]
    facts = result["inputs"]
    worst = min(r["tokens_per_s"] for r in result["loader"]) / need
    verdict = "met" if worst >= TARGET else "**missed**"
    return f"""{HEADING}

`{result['command']}` ({result['date']}, {result['machine']}).

Local parquet shards ({SHARDS} of them, {facts['documents']:,} documents, {facts['chars'] / 1e6:.1f} M characters
of Python source: the builtin `stdlib-source` corpus), a byte-level BPE trained here with Llama 3's vocabulary
size ({LLAMA3_VOCAB:,} asked, {facts['vocab']:,} reached), windows of {SEQ_LEN:,} + 1 tokens. The need: one H100
training the 8B member of `plans/llama_1b_8b.plan.json` at its planned MFU {result['need']['mfu']:.0%}
({result['need']['tokens']:,} tokens in {result['need']['seconds']:,.0f} s on {result['need']['devices']} GPUs):
**{need:,.0f} tokens/s per GPU**.

| what | tokens | seconds | tokens/s | / H100 need |
|---|---|---|---|---|
{rows}
| a training stage on this CPU (2 ranks, dim 64) | | | {s['tokens_per_s_per_rank']:,.0f} per rank | |

Target (issue 12): one data worker at least {TARGET:.0f}x the need: {verdict} (worst case {worst:.1f}x). The CPU
stage spent {s['data_loading_share']:.1%} of its step time loading data (torchtitan's data_loading time over the
steps after the 4th, {s['steps']} steps). Rank 0 of 8 decompresses and reads every row group of a shard
but turns only its own rows into text and tokenizes only those, so its rate is its share of the tokenizing
plus the reading of the whole shard.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-loader")
    parser.add_argument("--tokens", type=int, default=2_000_000)
    parser.add_argument("--update", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    shards, tokenizer, facts = build_inputs(args.work)
    print(f"inputs: {facts}", flush=True)
    loader = [loader_rate(shards, tokenizer, world=w, tokens=args.tokens) for w in (1, 8)]
    print(f"loader: {loader}", flush=True)
    stage = stage_rate(args.work, shards, tokenizer, facts["vocab"])
    print(f"stage: {stage}", flush=True)
    result = {"command": f".venv/bin/python benchmarks/data_loader.py --tokens {args.tokens}"
                         + (f" --update {args.update}" if args.update else ""),
              "date": time.strftime("%Y-%m-%d"), "machine": machine(), "inputs": facts, "loader": loader,
              "stage": stage, "need": h100_need()}
    out = REPO / "benchmarks" / "results" / "data_loader.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    if args.update:
        from family_cpu import update

        update(args.update, markdown(result), HEADING)


if __name__ == "__main__":
    main()
