"""Expansion I/O: streamed expansion against a plain read + write of the same bytes, and its peak memory.

    .venv/bin/python benchmarks/expand_io.py [--spec specs/llama_1b_8b.yaml] [--cases 1B:2B,4B:8B]
                                             [--workdir DIR] [--repeat N] [--update BENCHMARKS.md] [--json FILE]

For each growth step FROM:TO of the spec (shapes and operators from the compiled plan):
1. A random bf16 checkpoint of FROM's shape is written tensor by tensor with familyc's own writer
   (`write_checkpoint`, so creating 8 GB needs no 8 GB of memory).
2. expand: `expand_checkpoint(FROM, TO)` with the plan's width/depth operators.
3. plain: read every file of the source once and write as many bytes as expand wrote into one file.
Each measurement runs in a fresh child process (its peak RSS is the child's VmHWM; its seconds
exclude the interpreter and torch import). Before each, the source is evicted from the page cache
(sync, then posix_fadvise DONTNEED), so both read it cold; both fsync what they write before the
clock stops. The ratio is plain seconds / expand seconds: expand's throughput relative to the disk's.
Everything the run writes is deleted at the end (also after a failure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from familyc.plan.ir import Plan
    from familyc.shape import ModelShape

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "specs" / "llama_1b_8b.yaml"
SPEC = Path(os.environ.get("FAMILYC_BENCH_SPEC", SPEC))  # the parent passes --spec to its children this way
HEADING = "## Expansion I/O"


# --- children: each prints one JSON line ----------------------------------------------------------

def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _steps(spec: Path) -> tuple[object, dict[tuple[str, str], object]]:
    from familyc.compiler import compile_spec
    from familyc.plan.steps import ExpandStep

    plan = compile_spec(spec)
    return plan, {(s.source, s.member): s for s in plan.steps if isinstance(s, ExpandStep)}


def _shape(plan: Plan, name: str) -> ModelShape:
    return plan.shape(name)


def child_source(dst: str, member: str) -> dict[str, object]:
    import torch

    from familyc.backend.keys import model_keys
    from familyc.checkpoint.sidecar import Sidecar
    from familyc.checkpoint.writer import TensorRecipe, write_checkpoint

    plan, _ = _steps(SPEC)
    rss_before = _peak_rss()

    def random(key: str, shape: tuple[int, ...]) -> TensorRecipe:
        def compute(get: object) -> torch.Tensor:
            generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
            return torch.empty(shape, dtype=torch.bfloat16).normal_(0.0, 0.02, generator=generator)
        return TensorRecipe(key=key, shape=shape, sources=(), compute=compute)

    start = time.perf_counter()
    items = (random(k, s) for k, s in model_keys(_shape(plan, member)).items())
    written = write_checkpoint(Path(dst), items, lambda key: torch.empty(0),
                               sidecar=Sidecar(kind="member", member=member, shape=_shape(plan, member),
                                               dtype="bfloat16"))
    return {"seconds": time.perf_counter() - start, "bytes_written": written.bytes_written,
            "peak_rss": _peak_rss(), "rss_after_imports": rss_before}


def _timed(owner: object, name: str, totals: dict[str, float], label: str) -> None:
    """Add the seconds spent in owner.name to totals[label] (a breakdown; the calls are not changed)."""
    inner = getattr(owner, name)

    def timed(*args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start

    setattr(owner, name, timed)


def child_expand(src: str, dst: str, source: str, target: str) -> dict[str, object]:
    import familyc.checkpoint.writer as writer
    from familyc.checkpoint.reader import SourceCheckpoint
    from familyc.checkpoint.sidecar import Sidecar
    from familyc.expand.operators import Expansion
    from familyc.expand.stream import expand_checkpoint

    totals = {"read": 0.0, "compute_and_read": 0.0, "write_and_hash": 0.0}
    _timed(SourceCheckpoint, "read", totals, "read")
    _timed(writer, "_compute", totals, "compute_and_read")
    _timed(writer, "_save", totals, "write_and_hash")

    plan, steps = _steps(SPEC)
    step = steps[(source, target)]
    expansion = Expansion(_shape(plan, source), _shape(plan, target), width=step.width, depth=step.depth,
                          seed=step.seed, noise=step.noise)
    rss_before = _peak_rss()
    start = time.perf_counter()
    sidecar = Sidecar(kind="expansion", member=target, shape=_shape(plan, target), step=step.id)
    written = expand_checkpoint(Path(src), Path(dst), expansion, sidecar=sidecar)
    return {"seconds": time.perf_counter() - start, "bytes_written": written.bytes_written,
            "bytes_read": written.bytes_read, "peak_rss": _peak_rss(), "rss_after_imports": rss_before,
            "width": step.width, "depth": step.depth, "plan_bytes_read": step.bytes_read,
            "plan_bytes_written": step.bytes_written, "read_seconds": totals["read"],
            "operator_seconds": totals["compute_and_read"] - totals["read"],
            "write_seconds": totals["write_and_hash"]}


def child_plain(src: str, dst: str, nbytes: str) -> dict[str, object]:
    """Read every file of `src` once; write `nbytes` into `dst` (the bytes read, then the last buffer again)."""
    target, buffer = int(nbytes), bytearray(16 * 2**20)
    start = time.perf_counter()
    read = written = 0
    with open(dst, "wb", buffering=0) as out:
        for file in sorted(Path(src).iterdir()):
            with open(file, "rb", buffering=0) as f:
                while n := f.readinto(buffer):
                    read += n
                    if written < target:
                        written += out.write(memoryview(buffer)[:min(n, target - written)])
        while written < target:
            written += out.write(memoryview(buffer)[:min(len(buffer), target - written)])
        os.fsync(out.fileno())
    return {"seconds": time.perf_counter() - start, "bytes_written": written, "bytes_read": read,
            "peak_rss": _peak_rss()}


CHILDREN = {"child-source": child_source, "child-expand": child_expand, "child-plain": child_plain}


# --- the parent ---------------------------------------------------------------------------------

def run_child(*args: str) -> dict[str, object]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - start
    return result


def evict(folder: Path) -> None:
    """Finish all pending writeback (so no run pays for an earlier one), then drop the folder's files
    from the page cache."""
    os.sync()
    for file in folder.iterdir():
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    import torch

    return {"cpu": f"{cpu}, {os.cpu_count()} cores", "memory": f"{mem / 2**20:.1f} GiB",
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": str(torch.get_num_threads()), "os": platform.platform()}


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def run_case(workdir: Path, source: str, target: str, repeat: int) -> dict[str, object]:
    src, dst, plain = workdir / f"src-{source}", workdir / f"dst-{target}", workdir / "plain.bin"
    try:
        made = run_child("child-source", str(src), source)
        print(f"  source {source}: {gb(made['bytes_written'])} in {made['seconds']:.1f} s, "
              f"peak RSS {gib(made['peak_rss'])}", flush=True)
        runs = []
        for _ in range(repeat):
            evict(src)
            expanded = run_child("child-expand", str(src), str(dst), source, target)
            shutil.rmtree(dst)
            evict(src)
            baseline = run_child("child-plain", str(src), str(plain), str(expanded["bytes_written"]))
            plain.unlink()
            runs.append({"expand": expanded, "plain": baseline,
                         "ratio": baseline["seconds"] / expanded["seconds"]})
            print(f"  expand {source}->{target}: {expanded['seconds']:.1f} s, peak RSS {gib(expanded['peak_rss'])}; "
                  f"plain {baseline['seconds']:.1f} s; ratio {runs[-1]['ratio']:.2f}", flush=True)
        return {"source": source, "target": target, "made": made, "runs": runs}
    finally:
        for path in (src, dst):
            shutil.rmtree(path, ignore_errors=True)
        plain.unlink(missing_ok=True)


def markdown(command: str, spec: str, info: dict[str, str], disk: str, cases: list[dict[str, object]]) -> str:
    lines = [HEADING, "", f"Run on {time.strftime('%Y-%m-%d')} with", "", "```bash", command, "```", "",
             f"Machine: {info['cpu']}, {info['memory']} RAM, no GPU; {disk}. Python {info['python']}, "
             f"torch {info['torch']} ({info['torch_threads']} intra-op threads).", "",
             f"Shapes and operators come from the compiled `{spec}`; sources are random bf16 "
             "checkpoints written tensor by tensor with `write_checkpoint`. Both expand and plain start with the "
             "source evicted from the page cache and fsync their output before the clock stops; each runs in "
             "its own child process (seconds exclude interpreter start-up and imports). plain reads every "
             "source byte once and writes as many bytes as expand wrote. ratio = plain seconds / expand seconds.",
             "",
             "| step | operators | source | target | expand | plain | ratio | expand peak RSS "
             "| source-writer peak RSS |", "|---|---|---|---|---|---|---|---|---|"]
    for case in cases:
        for run in case["runs"]:  # type: ignore[attr-defined]
            e, p, m = run["expand"], run["plain"], case["made"]  # type: ignore[index]
            rate, plain_rate = e["bytes_written"] / e["seconds"] / 1e6, p["bytes_written"] / p["seconds"] / 1e6
            lines.append(
                f"| {case['source']} -> {case['target']} | {e['width']} + {e['depth']} | {gb(m['bytes_written'])} "
                f"| {gb(e['bytes_written'])} | {e['seconds']:.1f} s ({rate:.0f} MB/s written) "
                f"| {p['seconds']:.1f} s ({plain_rate:.0f} MB/s) | {run['ratio']:.2f} | {gib(e['peak_rss'])} "
                f"| {gib(m['peak_rss'])} |")
    lines += ["", "Where expand's time goes (main thread: reading sources, then the operators' recipes; a second "
              "thread meanwhile writes and hashes the previous tensor, so the parts overlap):", ""]
    for case in cases:
        for run in case["runs"]:  # type: ignore[attr-defined]
            e = run["expand"]  # type: ignore[index]
            lines.append(f"- {case['source']} -> {case['target']}: {e['seconds']:.1f} s in all; main thread: read "
                         f"{e['read_seconds']:.1f} s, operators {e['operator_seconds']:.1f} s; writer thread: "
                         f"torch.save + SHA-256 {e['write_seconds']:.1f} s.")
    lines += ["", "Bytes: expand reads every source byte once. The plan's estimates assume fp32 checkpoints "
              "(4 bytes per parameter, torchtitan's default export), these are bf16:", ""]
    for case in cases:
        e = case["runs"][0]["expand"]  # type: ignore[index]
        lines.append(f"- {case['source']} -> {case['target']}: read {gb(e['bytes_read'])} (plan: "
                     f"{gb(e['plan_bytes_read'])}), wrote {gb(e['bytes_written'])} (plan: "
                     f"{gb(e['plan_bytes_written'])}); RSS after imports {gib(e['rss_after_imports'])}.")
    return "\n".join(lines) + "\n"


def update(path: Path, section: str) -> None:
    """Replace (or append) the section under HEADING, keeping every other section."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.M | re.S)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else \
        text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in CHILDREN:
        print(json.dumps(CHILDREN[sys.argv[1]](*sys.argv[2:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--cases", default="1B:2B,4B:8B", help="FROM:TO growth steps of the spec, comma-separated")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the checkpoints go (expand and plain use the same disk)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--update", type=Path, help="write the results into this Markdown file's section")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()
    os.environ["FAMILYC_BENCH_SPEC"] = str(args.spec.resolve())
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="expand_io-", dir=args.workdir))
    info = machine()
    device = subprocess.run(["df", "-hT", str(workdir)], capture_output=True, text=True).stdout.splitlines()[-1].split()
    disk = f"disk {device[0]} ({device[1]}, {device[3]} used of {device[2]})"
    cases = []
    try:
        for case in args.cases.split(","):
            source, target = case.split(":")
            print(f"{source} -> {target}", flush=True)
            cases.append(run_case(workdir, source, target, args.repeat))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    command = ".venv/bin/python benchmarks/expand_io.py " + " ".join(sys.argv[1:])
    spec = args.spec.resolve()
    section = markdown(command.strip(), str(spec.relative_to(REPO) if spec.is_relative_to(REPO) else spec), info,
                       disk, cases)
    print(section)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "cases": cases}, indent=1) + "\n")
    if args.update:
        update(args.update, section)


if __name__ == "__main__":
    main()
