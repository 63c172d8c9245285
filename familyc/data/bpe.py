"""A byte-level BPE tokenizer in the layout torchtitan 0.2.2's HF tokenizer loader reads.

torchtitan (components/tokenizer.py, HuggingFaceTokenizer) loads `tokenizer.json` with the
`tokenizers` library and takes the BOS/EOS strings from `tokenizer_config.json`; its text
dataloader then adds BOS and EOS to every document itself (the tokenizer has no post-processor,
so nothing is added twice). Training is deterministic: the same documents give the same bytes.
Only `tokenizers` is needed (no torch).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from familyc.errors import FamilycError
from familyc.files import sha256_file

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
SPECIAL_TOKENS = (BOS, EOS)
BYTE_ALPHABET = 256
"""A byte-level BPE starts from every byte value; merges fill the rest of the vocabulary."""

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenizerStats:
    vocab_size: int
    """Including the two special tokens; at most what was asked (a small corpus may run out of merges)."""
    tokenizer_sha256: str
    """Of tokenizer.json."""


def read_texts(split_dir: Path) -> list[str]:
    """The `text` field of every line of every *.jsonl file in a split folder, files in name order."""
    files = sorted(Path(split_dir).glob("*.jsonl"))
    if not files:
        raise FamilycError(f"no *.jsonl files in {split_dir}")
    texts = []
    for path in files:
        with path.open(encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f if line.strip()]
    return texts


def build_bpe_tokenizer(out_dir: Path | str, vocab_size: int = 2048, *, train_dir: Path | str) -> TokenizerStats:
    """Train a byte-level BPE on the documents of `train_dir`; write tokenizer.json and
    tokenizer_config.json into `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    smallest = BYTE_ALPHABET + len(SPECIAL_TOKENS)
    if vocab_size < smallest:
        raise FamilycError(f"vocab_size {vocab_size} is below the {smallest} a byte-level BPE needs "
                           f"({BYTE_ALPHABET} bytes and {len(SPECIAL_TOKENS)} special tokens)")
    texts = read_texts(Path(train_dir))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = tokenizer.to_str(pretty=True)
    (out / TOKENIZER_FILE).write_text(text + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "add_bos_token": True,
        "add_eos_token": True,
        "clean_up_tokenization_spaces": False,
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return TokenizerStats(vocab_size=tokenizer.get_vocab_size(),
                          tokenizer_sha256=sha256_file(out / TOKENIZER_FILE))


def count_tokens(tokenizer_dir: Path | str, texts: Iterable[str]) -> int:
    """Tokens as torchtitan's text dataloader produces them: each document's BPE tokens plus BOS and EOS."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(tokenizer_dir) / TOKENIZER_FILE))
    texts = list(texts)
    return sum(len(e.ids) for e in tokenizer.encode_batch(texts)) + len(SPECIAL_TOKENS) * len(texts)
