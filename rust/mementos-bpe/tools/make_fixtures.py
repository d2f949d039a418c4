"""Build small byte-level BPE tokenizers with Hugging Face `tokenizers` (deterministic corpus).

`build(kind)` returns a `tokenizers.Tokenizer`; `tests/test_bpe.py` builds them in-process and
the Rust differential tests read the JSON written by running this file:

    python rust/mementos-bpe/tools/make_fixtures.py   # writes rust/mementos-bpe/tests/data/*.json

Kinds:
- `gpt2_style`: GPT-2's layout: ByteLevel(add_prefix_space=False) with its built-in regex, no
  normalizer, `<|endoftext|>` special, plus a normalized non-special added token.
- `gpt2_style_prefix`: the same with add_prefix_space=True (RoBERTa-like).
- `llama3_style`: Sequence[Split(Llama-3 pattern, Isolated), ByteLevel(use_regex=False)],
  ignore_merges=True, an NFC normalizer and added tokens that go through normalization.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
KINDS = ("gpt2_style", "gpt2_style_prefix", "llama3_style")


def corpus() -> list[str]:
    from mementos_fast import synthetic

    rows = synthetic.generate_rows(150, seed=11)
    extra = [
        "Don't worry, it's fine. I'LL see. We'Re done. ÉCOLE école naïve Straße 日本語 中文 한국어",
        "x = 12345 + 3.14159; print(f'{x}')\r\n\tdef f(a, b):\r\n\t\treturn a ** b",
        "😀 👍🏽 ≤ π ∑ € — «quote» \u00a0\u3000 ١٢٣ １２３ ²³ Ⅻ ½",
    ] * 20
    return [r["response"] for r in rows] + [r["problem"] for r in rows] + extra


def build(kind: str) -> Tokenizer:
    if kind not in KINDS:
        raise ValueError(kind)
    tok = Tokenizer(models.BPE(ignore_merges=kind == "llama3_style"))
    if kind == "llama3_style":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        special = ["<|begin_of_text|>", "<|end_of_text|>"]
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=kind == "gpt2_style_prefix")
        special = ["<|endoftext|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=3000,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=special,
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    # Added tokens that are matched after normalization (one written decomposed).
    tok.add_tokens(
        [
            AddedToken("<|block_start|>", normalized=True, special=False),
            AddedToken("cafe\u0301!", normalized=True, special=False),
            AddedToken("<think>", normalized=False, special=False),
        ]
    )
    return tok


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "tests" / "data"
    out.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        data = json.loads(build(kind).to_str())
        (out / f"{kind}.json").write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")
        sys.stdout.write(f"wrote {out / kind}.json\n")


if __name__ == "__main__":
    main()
