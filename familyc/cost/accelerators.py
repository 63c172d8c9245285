"""The accelerator table: dense peak FLOP/s per precision and memory per device.

Peaks are vendor datasheet numbers for *dense* math (the "with sparsity" figures halved), the
same convention torchtitan's MFU uses. An accelerator or precision missing here is an error,
never a guessed peak (torchtitan silently falls back to the A100's; we do not).
"""

from __future__ import annotations

from dataclasses import dataclass

from familyc.errors import FamilycError

MIB = 2**20
GIB = 2**30


@dataclass(frozen=True, kw_only=True, slots=True)
class Accelerator:
    key: str
    name: str
    peak_flops: dict[str, float]
    """Dense peak FLOP/s per compute precision (`bf16`, `fp32`)."""
    memory_bytes: int | None
    """Memory per device; None where it depends on the machine (cpu: give cluster.memory_gib)."""
    torchtitan_peak_name: str | None
    """A device name torchtitan 0.2.2's get_peak_flops recognises (its MFU), None if it does not."""

    def peak(self, precision: str) -> float:
        if precision not in self.peak_flops:
            known = ", ".join(sorted(self.peak_flops))
            raise FamilycError(f"no {precision} peak is known for {self.name}",
                               hint=f"use training.precision: {known}")
        return self.peak_flops[precision]


ACCELERATORS: dict[str, Accelerator] = {
    a.key: a
    for a in (
        # NVIDIA A100 SXM 80GB datasheet: BF16 tensor 312 TFLOPS dense (624 with sparsity),
        # FP32 (non-tensor) 19.5 TFLOPS. nvidia-smi reports 81920 MiB.
        Accelerator(key="a100", name="NVIDIA A100 80GB SXM", peak_flops={"bf16": 312e12, "fp32": 19.5e12},
                    memory_bytes=81920 * MIB, torchtitan_peak_name="A100"),
        # NVIDIA H100 SXM5 datasheet: BF16 tensor 1,979 TFLOPS with sparsity -> 989.5 dense
        # (torchtitan uses 989e12); FP32 67 TFLOPS. nvidia-smi on our lent H100 80GB HBM3:
        # 81559 MiB (device tool KINDS.md, 2026-11-13).
        Accelerator(key="h100", name="NVIDIA H100 80GB SXM", peak_flops={"bf16": 989e12, "fp32": 67e12},
                    memory_bytes=81559 * MIB, torchtitan_peak_name="H100"),
        # NVIDIA H200 SXM datasheet: same compute as H100 SXM (1,979 sparse BF16 -> 989 dense,
        # FP32 67 TFLOPS), 141 GB HBM3e; nvidia-smi on our lent H200: 143771 MiB (KINDS.md).
        Accelerator(key="h200", name="NVIDIA H200 141GB SXM", peak_flops={"bf16": 989e12, "fp32": 67e12},
                    memory_bytes=143771 * MIB, torchtitan_peak_name="H200"),
        # NVIDIA B200 (HGX B200 datasheet): BF16 4.5 PFLOPS with sparsity -> 2.25 PFLOPS dense
        # (torchtitan: 2.25e15). Memory: DGX B200 has 1,440 GB over 8 GPUs -> 180 GB each.
        # No FP32 figure we trust, so fp32 on B200 is refused rather than guessed.
        Accelerator(key="b200", name="NVIDIA B200", peak_flops={"bf16": 2.25e15},
                    memory_bytes=180 * 10**9, torchtitan_peak_name="B200"),
        # AMD Instinct MI300X datasheet: BF16 2,614.9 TFLOPS with sparsity -> 1,307.4 dense;
        # FP32 (matrix) 163.4 TFLOPS; 192 GB HBM3. torchtitan 0.2.2 knows no AMD peak.
        Accelerator(key="mi300x", name="AMD Instinct MI300X", peak_flops={"bf16": 1307.4e12, "fp32": 163.4e12},
                    memory_bytes=192 * 10**9, torchtitan_peak_name=None),
        # cpu: one training process pinned to one core of an x86-64 server with two 256-bit FMA
        # pipes (AMD Zen 4 executes AVX-512 on them; Intel client cores likewise): per cycle
        # 2 pipes x 8 fp32 lanes x 2 FLOPs (fused multiply-add) = 32 FLOPs, at a 2.6 GHz base
        # clock (the CI machine's EPYC: /proc/cpuinfo) -> 83.2 GFLOP/s per core. bf16 is not
        # offered: CPU training here runs in fp32. Memory is the machine's: give memory_gib.
        # This is a reference core, not a measurement: `familyc calibrate` replaces it.
        Accelerator(key="cpu", name="CPU core (x86-64, 2x256-bit FMA @ 2.6 GHz)", peak_flops={"fp32": 83.2e9},
                    memory_bytes=None, torchtitan_peak_name=None),
    )
}


def accelerator(key: str) -> Accelerator:
    try:
        return ACCELERATORS[key]
    except KeyError:
        raise FamilycError(f"unknown accelerator {key!r}",
                           hint="known: " + ", ".join(sorted(ACCELERATORS))) from None
