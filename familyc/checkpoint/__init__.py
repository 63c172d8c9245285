"""Checkpoint I/O: torchtitan's DCP folders read and written one tensor at a time, and their sidecars.

    reader.py    SourceCheckpoint: a DCP folder (what torchtitan writes), validated, read tensor by tensor
    writer.py    write_checkpoint: exactly what `dcp.save` writes, each tensor computed when it is written
    sidecar.py   the one versioned sidecar every checkpoint familyc writes carries (torch-free)

Peak memory is about the largest tensor, never the model: growing a bf16 4B into an 8B (8 GB in,
16 GB out) peaks at 2.3 GiB RSS (BENCHMARKS.md, "Expansion I/O"). This package knows nothing of
growth (familyc.expand, above it) or of torchtitan's model (familyc.backend): both use it.
Importing the package or `sidecar` imports no torch.
"""

DATA_FILE = "__0_0.distcp"
"""The one data file of a single-process DCP save: `torch.save` records back to back."""
METADATA_FILE = ".metadata"
"""DCP's pickled metadata: every key's shape, dtype and chunks, each a record at (file, offset, length)."""
OPTIMIZER_FOLDER = "optimizer"
"""The DCP folder of AdamW's moments inside a member's or an expansion's folder, when a growth step carries them
(familyc.backend.moments)."""
