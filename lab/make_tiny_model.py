#!/usr/bin/env python3
"""Make the lab's tiny model: a random-weight Llama with its own tokenizer.

    make_tiny_model.py OUTPUT_DIR

No model hub is reachable here, so the lab serves a ~3 MB checkpoint made in
seconds: a byte-level BPE tokenizer trained on generated text, wrapped with a
chat template, and a 2-layer LlamaForCausalLM whose vocabulary is exactly the
tokenizer's (otherwise it emits ids the tokenizer cannot decode). Seeded:
the same files every time. Writes a sha256 manifest of every file.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
WORDS = (
    "the", "prefill", "decode", "cache", "token", "expert", "router", "tray", "grace", "blackwell",
    "nvlink", "transfer", "latency", "throughput", "quicksort", "average", "case", "complexity", "explain", "briefly",
    "what", "is", "time", "of", "in", "a", "an", "and",
)


def corpus(seed: int = 7, lines: int = 4000) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16))) + "." for _ in range(lines)]


def main(out: Path) -> int:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(7)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=4096,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id, torch_dtype="bfloat16", tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)

    manifest = {
        path.name: {"size": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        for path in sorted(out.iterdir())
        if path.is_file() and path.name != "SHA256SUMS.json"
    }
    (out / "SHA256SUMS.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"tiny model in {out}: {sum(v['size'] for v in manifest.values()) / 1e6:.1f} MB, "
          f"vocab {len(fast)}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
