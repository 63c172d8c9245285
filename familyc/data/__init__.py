"""Offline training data: the built-in demo corpus and tokenizer. Torch-free.

`ensure_builtin_assets(cache_dir)` gives what the tiny family trains on without a network:
the docstrings of the running Python's standard library, split into train and held-out
documents, and a byte-level BPE tokenizer trained on the train split only. Everything is
built once per content and found again by a hash of its inputs.
"""

from __future__ import annotations

from familyc.data.bpe import build_bpe_tokenizer
from familyc.data.builtin import Assets, build_stdlib_docstrings, ensure_builtin_assets

__all__ = ["Assets", "build_bpe_tokenizer", "build_stdlib_docstrings", "ensure_builtin_assets"]
