"""Token counting: exact equality with Hugging Face ``tokenizers`` for three tokenizer families
(the real Qwen3 tokenizer, a GPT-2-style byte-level BPE and a BERT-style WordPiece, both trained
here deterministically), on real rows, the built-in sample, generated traces and hypothesis text;
plus the delimiter registration rules."""

from __future__ import annotations

import json
import os
import re

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mementos_fast as mf
from mementos_fast import _core, synthetic
from mementos_fast.chat import MEMENTO_PROMPT_TEMPLATE
from mementos_fast.loading import sample_path
from mementos_fast.reference import parse_trace
from mementos_fast.tokenizer import DELIMITERS
from mementos_fast.tokens import render_prompts

tk = pytest.importorskip("tokenizers")

DELIM_TEXT = dict(
    zip(["think_start", "think_end", "block_start", "block_end", "summary_start", "summary_end"], DELIMITERS)
)
BLOCK_RAW = re.compile(r"<\|block_start\|>(.*?)<\|block_end\|>", re.DOTALL)
SUMMARY_RAW = re.compile(r"<\|summary_start\|>(.*?)<\|summary_end\|>", re.DOTALL)


def _corpus() -> list[str]:
    rows = synthetic.generate_rows(60, seed=7)
    return [r["response"] for r in rows] + [r["problem"] for r in rows]


def build_gpt2_bpe() -> tk.Tokenizer:
    """A GPT-2-style byte-level BPE (GPT-2's split regex, no normalizer), trained here."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tk.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    return tok


def build_wordpiece() -> tk.Tokenizer:
    """A BERT-style WordPiece (lowercasing normalizer, BERT pre-tokenizer, [CLS]/[SEP] template)."""
    from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

    tok = tk.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=700, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"], show_progress=False
    )
    tok.train_from_iterator(_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return tok


@pytest.fixture(scope="session")
def qwen3() -> mf.LoadedTokenizer:
    try:
        path = mf.qwen3_tokenizer_path()
    except mf.MementoValueError as e:
        pytest.skip(str(e))
    return mf.load_tokenizer(path)


@pytest.fixture(scope="session")
def gpt2_bpe() -> mf.LoadedTokenizer:
    return mf.load_tokenizer(build_gpt2_bpe())


@pytest.fixture(scope="session")
def wordpiece() -> mf.LoadedTokenizer:
    return mf.load_tokenizer(build_wordpiece())


FAMILIES = ["qwen3", "gpt2_bpe", "wordpiece"]


@pytest.fixture(params=FAMILIES)
def loaded(request) -> mf.LoadedTokenizer:
    return request.getfixturevalue(request.param)


def expected(lt: mf.LoadedTokenizer, text: str) -> dict:
    """Every figure of one row computed with Python ``tokenizers`` on Python strings."""
    n = lt.count
    ref = parse_trace(text)
    blocks = [n(b) for b in BLOCK_RAW.findall(text)]
    summaries = [n(s) for s in SUMMARY_RAW.findall(text)]
    spans = mf.parse(text).spans
    raw = text.encode()
    # A delimiter span may hold several adjacent delimiters of one kind: count its text too.
    span_tokens = [n(raw[s:e].decode()) for _, s, e in spans]
    assert all(t == (e - s) // len(DELIM_TEXT[k]) for (k, s, e), t in zip(spans, span_tokens) if k in DELIM_TEXT)
    kinds = [k for k, _, _ in spans]

    def by(*names):
        return sum(t for k, t in zip(kinds, span_tokens) if k in names)

    return {
        "total_tokens": n(text),
        "block_tokens": blocks,
        "summary_tokens": summaries,
        "block_tokens_stripped": [n(b) for b in ref["blocks"]],
        "summary_tokens_stripped": [n(s) for s in ref["summaries"]],
        "block_tokens_total": sum(blocks),
        "summary_tokens_total": sum(summaries),
        "think_preamble_tokens": by("preamble", "think_start"),
        "between_tokens": by("between"),
        "answer_tokens": by("answer"),
        "span_tokens": span_tokens,
    }


def fast_supported(lt: mf.LoadedTokenizer) -> bool:
    """The fast backend reproduces byte-level BPE tokenizers only."""
    return json.loads(lt.to_json())["model"]["type"] == "BPE"


def check_rows(lt: mf.LoadedTokenizer, texts: list[str], threads: int | None = 1) -> None:
    """Every backend's counts of ``texts`` equal the Python ``tokenizers`` figures (the fast
    backend refuses, with a clear error, tokenizers it cannot reproduce)."""
    wants = [expected(lt, text) for text in texts]  # the HF figures, once for every backend
    for backend in _core.TOKEN_BACKENDS:
        if backend == "fast" and not fast_supported(lt):
            with pytest.raises(mf.MementoValueError, match="cannot reproduce"):
                mf.count_tokens(texts[:1], lt, backend="fast")
            continue
        check_backend(lt, texts, threads, backend, wants)


def check_backend(
    lt: mf.LoadedTokenizer, texts: list[str], threads: int | None, backend: str, wants: list[dict] | None = None
) -> None:
    batch = mf.count_tokens(texts, lt, threads=threads, backend=backend)
    assert batch.schema.metadata[b"backend"] == backend.encode()
    got = batch.to_pylist()
    for i, text in enumerate(texts):
        want = wants[i] if wants is not None else expected(lt, text)
        row = {k: got[i][k] for k in want}
        assert row == want, f"row {i}: {text[:200]!r}"
        # The in-context decomposition: segments plus one per delimiter is the whole.
        assert sum(row["span_tokens"]) == row["total_tokens"]
        ratio = got[i]["compression_ratio"]
        if row["summary_tokens_total"]:
            assert ratio == pytest.approx(row["block_tokens_total"] / row["summary_tokens_total"])
        else:
            assert ratio is None


def test_real_rows_exact(loaded, real):
    check_rows(loaded, [r["response"] for r in real])


def test_builtin_sample_exact(loaded):
    with open(sample_path(), encoding="utf-8") as f:
        texts = [json.loads(line)["response"] for line in f if line.strip()]
    assert len(texts) >= 30
    check_rows(loaded, texts, threads=2)


def test_generated_and_adversarial_exact(loaded):
    texts = [r["response"] for r in synthetic.generate_rows(40, seed=11, malformed_rate=0.3)]
    texts += [synthetic.adversarial(kind, 3000) for kind in synthetic.ADVERSARIAL_KINDS]
    check_rows(loaded, texts, threads=2)


def test_well_formed_decomposition(qwen3):
    # For ok rows every token is in exactly one of the categories.
    texts = [r["response"] for r in synthetic.generate_rows(20, seed=3)]
    b = mf.count_tokens(texts, qwen3).to_pylist()
    for text, row in zip(texts, b):
        if mf.parse(text).status != "ok":
            continue
        n_units = len(row["block_tokens"])
        delims_inside = 4 * n_units + 1  # unit delimiters and </think>
        assert row["total_tokens"] == (
            row["think_preamble_tokens"]
            + row["block_tokens_total"]
            + row["summary_tokens_total"]
            + row["between_tokens"]
            + row["answer_tokens"]
            + delims_inside
        )


PIECES = st.one_of(
    st.sampled_from(DELIMITERS),
    st.sampled_from(["\r\n", "\n\n", "  ", "\t", " ", "```python\nprint('<think>')\n```", "\u00a0", "<|", "<", "|>"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30),
    st.text(alphabet=st.sampled_from("0123456789"), min_size=1, max_size=40),
    st.text(alphabet=st.sampled_from("abcXYZéß日本語😀🤔👍🏽∑≤π"), min_size=1, max_size=200),
    st.text(
        alphabet=st.characters(categories=("Lu", "Ll", "Lo", "Nd", "No", "Po", "Sm", "So", "Zs", "Mn")), max_size=40
    ),
)


# 20 examples in the laptop-sized run (each one encodes with three tokenizers); 200 in the long run.
@settings(
    max_examples=200 if os.environ.get("MEMENTOS_SLOW_TESTS") == "1" else 20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(texts=st.lists(st.lists(PIECES, max_size=25).map("".join), min_size=1, max_size=4))
def test_hypothesis_exact(gpt2_bpe, wordpiece, qwen3, texts):
    for lt in (qwen3, gpt2_bpe, wordpiece):
        check_rows(lt, texts)


def test_long_runs_without_whitespace(loaded):
    texts = [
        "<think><|block_start|>"
        + "a" * 20000
        + "<|block_end|><|summary_start|>"
        + "7" * 5000
        + "<|summary_end|></think>"
        + "😀" * 3000,
        "x" * 50000,
    ]
    check_rows(loaded, texts)


def test_layouts_threads_and_nulls(qwen3):
    texts = [r["response"] for r in synthetic.generate_rows(30, seed=5)]
    with_nulls = [*texts[:10], None, *texts[10:]]
    base = mf.count_tokens(pa.array(with_nulls, type=pa.string()), qwen3, threads=1)
    assert base.column("total_tokens").null_count == 1
    assert base.column("block_tokens")[10].as_py() is None
    for column in (
        pa.array(with_nulls, type=pa.large_string()),
        pa.array(with_nulls, type=pa.string_view()),
        pa.chunked_array([pa.array(with_nulls[:7]), pa.array(with_nulls[7:15]), pa.array(with_nulls[15:])]),
        pa.array(["skip", *with_nulls]).slice(1),
    ):
        for threads in (1, 2):
            assert mf.count_tokens(column, qwen3, threads=threads).equals(base)


def test_without_stripped_columns(qwen3, real):
    texts = [r["response"] for r in real]
    full = mf.count_tokens(texts, qwen3)
    lean = mf.count_tokens(texts, qwen3, stripped=False)
    assert set(full.schema.names) - set(lean.schema.names) == {"block_tokens_stripped", "summary_tokens_stripped"}
    for name in lean.schema.names:
        assert lean.column(name).equals(full.column(name)), name


def test_backend_reported_and_checked(qwen3):
    b = mf.count_tokens(["<think>a</think>b"], qwen3)
    assert b.schema.metadata[b"backend"] == b"fast"  # auto: supported and self-checked
    assert mf.count_tokens(["x"], qwen3, backend="hf").schema.metadata[b"backend"] == b"hf"
    with pytest.raises(mf.MementoValueError, match="backend"):
        mf.count_tokens(["x"], qwen3, backend="nope")
    with pytest.raises(mf.MementoValueError):
        mf.count_tokens(["x"], qwen3, threads=0)
    with pytest.raises(mf.MementoTypeError):
        mf.count_tokens([1, 2], qwen3)
    with pytest.raises(mf.MementoValueError, match="backend"):
        _core.TokenCounter(qwen3.to_json(), "nope")


def test_rust_refuses_json_without_delimiters():
    raw = build_gpt2_bpe()
    with pytest.raises(mf.MementoValueError, match=r"<think>.* single added token"):
        _core.TokenCounter(raw.to_str(), "hf")
    with pytest.raises(mf.MementoValueError, match="tokenizer"):
        _core.TokenCounter("{not json", "hf")


# ---- registration rules -------------------------------------------------------------------


def test_qwen3_registration(qwen3):
    assert qwen3.added == ("<|block_start|>", "<|block_end|>", "<|summary_start|>", "<|summary_end|>")
    assert qwen3.ids["<think>"] == 151667 and qwen3.ids["</think>"] == 151668
    original = tk.Tokenizer.from_file(str(mf.qwen3_tokenizer_path()))
    before = original.get_vocab(with_added_tokens=True)
    after = qwen3.tokenizer.get_vocab(with_added_tokens=True)
    assert all(after[t] == i for t, i in before.items())
    assert sorted(qwen3.ids[d] for d in qwen3.added) == list(range(len(before), len(before) + 4))


@pytest.mark.parametrize("family", ["gpt2_bpe", "wordpiece"])
def test_built_registration(family, request):
    builder = build_gpt2_bpe if family == "gpt2_bpe" else build_wordpiece
    original = builder()
    before = original.get_vocab(with_added_tokens=True)
    lt = mf.load_tokenizer(original)
    assert lt.added == DELIMITERS
    assert original.get_vocab(with_added_tokens=True) == before, "the caller's tokenizer must not change"
    after = lt.tokenizer.get_vocab(with_added_tokens=True)
    assert all(after[t] == i for t, i in before.items())
    for d in DELIMITERS:
        assert lt.tokenizer.encode(d, add_special_tokens=False).ids == [lt.ids[d]]
    # Loading an already registered tokenizer adds nothing and keeps every id.
    again = mf.load_tokenizer(lt.tokenizer)
    assert again.added == () and again.ids == lt.ids


def test_delimiter_in_model_vocab_keeps_its_id():
    from tokenizers import models, pre_tokenizers

    vocab = {"[UNK]": 0, "<think>": 1, "a": 2, "b": 3, "<": 4, ">": 5, "think": 6}
    tok = tk.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    lt = mf.load_tokenizer(tok)
    assert lt.ids["<think>"] == 1
    assert "<think>" in lt.added  # registered as an added token so that it splits
    assert lt.tokenizer.encode("a<think>b", add_special_tokens=False).ids[1] == 1
    assert all(lt.tokenizer.token_to_id(t) == i for t, i in vocab.items())


def test_rejects_absorbing_or_non_additive_tokenizers():
    tok = build_gpt2_bpe()
    tok.add_special_tokens([tk.AddedToken("<think>", lstrip=True, rstrip=True)])
    with pytest.raises(mf.MementoValueError, match="lstrip"):
        mf.load_tokenizer(tok)

    from tokenizers import models, pre_tokenizers

    # Metaspace "first" prepends "▁" only at the start of the whole text: "a" alone is 2 tokens,
    # after a delimiter 1, so pieces would not add up to the whole.
    vocab = {"<unk>": 0, "▁": 1, **{c: i + 2 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}}
    meta = tk.Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    meta.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    with pytest.raises(mf.MementoValueError, match="pieces"):
        mf.load_tokenizer(meta)

    overlap = build_gpt2_bpe()
    overlap.add_special_tokens(["<think>\n"])
    with pytest.raises(mf.MementoValueError, match="overlaps"):
        mf.load_tokenizer(overlap)


def test_tokenizer_sources(tmp_path, qwen3):
    tok = build_wordpiece()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    for spec in (path, str(path), tmp_path):
        assert mf.load_tokenizer(spec).ids == mf.load_tokenizer(tok).ids

    class FakeTransformersTokenizer:  # what transformers' fast tokenizers expose
        name_or_path = "fake/bert"

        def __init__(self, backend):
            self.backend_tokenizer = backend

    lt = mf.load_tokenizer(FakeTransformersTokenizer(tok))
    assert lt.name == "fake/bert" and lt.added == DELIMITERS
    assert mf.load_tokenizer(qwen3).ids == qwen3.ids
    with pytest.raises(mf.MementoValueError, match=r"no tokenizer\.json"):
        mf.load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(mf.MementoTypeError):
        mf.load_tokenizer(42)


def test_hub_id_error_is_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(mf.MementoValueError, match="hub"):
        mf.load_tokenizer("mementos-fast-tests/no-such-tokenizer")


# ---- prompts ------------------------------------------------------------------------------


def test_prompt_tokens(qwen3, real):
    responses = [r["response"] for r in real]
    problems = [r["problem"] for r in real]
    b = mf.count_tokens(responses, qwen3, problem=problems)
    want = [qwen3.count(MEMENTO_PROMPT_TEMPLATE.format(problem=p)) for p in problems]
    assert b.column("prompt_tokens").to_pylist() == want
    # The same format written as a Jinja chat template renders (and counts) identically.
    jinja = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    pytest.importorskip("jinja2")
    assert render_prompts(problems, jinja).to_pylist() == render_prompts(problems).to_pylist()
    b2 = mf.count_tokens(responses, qwen3, problem=pa.array(problems), chat_template=jinja)
    assert b2.column("prompt_tokens").to_pylist() == want
    plain = mf.count_tokens(responses, qwen3, problem=[None, *problems[1:]], chat_template="Q: {problem}\nA:")
    assert plain.column("prompt_tokens").to_pylist() == [None] + [qwen3.count(f"Q: {p}\nA:") for p in problems[1:]]
    with pytest.raises(mf.MementoValueError):
        mf.count_tokens(responses, qwen3, problem=problems[:1])
    with pytest.raises(mf.MementoValueError):
        mf.count_tokens(responses, qwen3, problem=problems, chat_template="no placeholder")


def test_auto_falls_back_to_hf_with_a_message(wordpiece, gpt2_bpe):
    from mementos_fast.tokens import token_counter

    fresh = mf.load_tokenizer(wordpiece.tokenizer)
    with pytest.warns(RuntimeWarning, match="falls back to the hf backend"):
        counter = token_counter(fresh, "auto")
    assert counter.backend == "hf"
    assert mf.count_tokens(["some words"], fresh).schema.metadata[b"backend"] == b"hf"
    assert token_counter(mf.load_tokenizer(gpt2_bpe.tokenizer), "auto").backend == "fast"


def test_fast_equals_hf_on_a_generated_corpus(qwen3, gpt2_bpe):
    rows = synthetic.generate_bytes(2 << 20, seed=21, malformed_rate=0.1)
    for lt in (qwen3, gpt2_bpe):
        fast = mf.count_tokens(rows, lt, backend="fast", threads=2)
        hf = mf.count_tokens(rows, lt, backend="hf", threads=2)
        for name in hf.schema.names:
            assert fast.column(name).equals(hf.column(name)), name


def test_one_memento_chat_template():
    """One Jinja chat template (mementos_fast.chat, re-exported by the export); its rendering of one
    user message is the plain prompt template; the old tokens.MEMENTO_CHAT_TEMPLATE (the plain one)
    is a deprecated alias for one release."""
    from mementos_fast import chat, export, tokens

    assert export.MEMENTO_CHAT_TEMPLATE is chat.MEMENTO_CHAT_TEMPLATE
    problems = ["What is 1+1?", "", "braces {x} and <|im_end|>"]
    pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    t = ImmutableSandboxedEnvironment().from_string(chat.MEMENTO_CHAT_TEMPLATE)
    jinja = [t.render(messages=[{"role": "user", "content": p}], add_generation_prompt=True) for p in problems]
    assert jinja == [chat.render_prompt(p) for p in problems] == render_prompts(problems).to_pylist()
    # Passing the Jinja template takes the Arrow path and gives the same prompts.
    assert render_prompts(problems, chat.MEMENTO_CHAT_TEMPLATE).to_pylist() == jinja
    with pytest.warns(DeprecationWarning, match="MEMENTO_PROMPT_TEMPLATE"):
        old = tokens.MEMENTO_CHAT_TEMPLATE
    assert old == chat.MEMENTO_PROMPT_TEMPLATE
    with pytest.raises(AttributeError):
        _ = tokens.NO_SUCH_NAME
