"""The suite's tiny model: a random Llama with a word-level tokenizer, and calibration text.

Built here with transformers (nothing is downloaded): 2 layers, hidden 128 (a multiple of the
group sizes 32/64), grouped-query attention (4 heads, 2 KV heads), untied embeddings so lm_head
is its own tensor. The quantizer tests quantize it on the CPU; the e2e suite puts it on a volume
for the quantization Job the kubelet stand-in really runs.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

TINY: dict[str, Any] = {
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}


def build_tiny_llama(directory: Path, **overrides: Any) -> Path:
    """Save a randomly initialised bf16 Llama (TINY, with ``overrides``) and its tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**TINY, **overrides})).to(torch.bfloat16)
    model.save_pretrained(directory)
    vocab = {f"w{i}": i for i in range(TINY["vocab_size"] - 1)}
    vocab["[UNK]"] = TINY["vocab_size"] - 1
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[UNK]", eos_token="[UNK]"
    )
    tokenizer.save_pretrained(directory)
    return directory


def write_calibration(path: Path, lines: int = 24, words: int = 48, seed: int = 1) -> Path:
    """A JSONL calibration file as a cluster without internet would mount it: text and chat."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(lines):
        text = " ".join(f"w{rng.randrange(500)}" for _ in range(words))
        records.append(
            {"text": text} if i % 2 else {"messages": [{"role": "user", "content": text}]}
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
