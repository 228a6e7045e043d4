"""Text: vocabularies, corpora, language-model batches, padding and length buckets."""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rnnkit._files import write_text
from rnnkit.data._checks import check_int, check_path, check_seed, read_utf8
from rnnkit.data.streams import batchify, tbptt_chunks

__all__ = ["Vocabulary", "read_text", "default_corpus", "lm_batches", "pad_batch",
           "length_buckets", "tokenize", "PAD", "UNK", "BOS", "EOS", "SPECIAL_TOKENS"]

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
#: Every vocabulary starts with these, so their ids are fixed: pad 0, unk 1, bos 2, eos 3.
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
LEVELS = ("char", "word")
_FORMAT = "rnnkit.Vocabulary"

# A word is a run of letters, digits or underscores; every other non-space character is
# a token of its own, so "Hello, world!" -> ["Hello", ",", "world", "!"].
_WORD_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str, level: str) -> list[str]:
    """Split ``text`` into characters (``level="char"``) or words and punctuation marks
    (``level="word"``; whitespace only separates)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if level == "char":
        return list(text)
    if level == "word":
        return _WORD_RE.findall(text)
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


@dataclass
class Vocabulary:
    """A mapping between tokens and ids, at character or word level.

    The first four ids are the special tokens ``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2
    and ``<eos>`` = 3; the rest follow by decreasing frequency in the texts it was built
    from (ties in token order, so a build is deterministic). Character level decodes by
    joining tokens with "", word level with single spaces, so ``decode(encode(text))``
    gives back a character-level text exactly and a word-level text with normalised
    spacing; ``encode(decode(ids)) == ids`` holds for any ids of ordinary tokens (the
    special tokens decode to their names, which encode as ordinary text).

    Args:
        level: ``"char"`` or ``"word"``.
        tokens: the token of each id, starting with the four special tokens.

    Example:
        >>> vocab = Vocabulary.build(["hello world"], level="char")
        >>> vocab.decode(vocab.encode("hello"))
        'hello'
    """

    level: str
    tokens: list[str]
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")
        if not isinstance(self.tokens, (list, tuple)) or not all(
                isinstance(t, str) for t in self.tokens):
            raise TypeError(f"tokens must be a list of str, got {self.tokens!r:.80}")
        self.tokens = list(self.tokens)
        if tuple(self.tokens[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"tokens must start with the special tokens {SPECIAL_TOKENS}, "
                             f"got {self.tokens[:len(SPECIAL_TOKENS)]}")
        self._ids = {token: i for i, token in enumerate(self.tokens)}
        if len(self._ids) != len(self.tokens):
            duplicates = sorted(t for t, c in Counter(self.tokens).items() if c > 1)
            raise ValueError(f"tokens must be unique, got duplicates {duplicates[:10]}")

    # -- building

    @classmethod
    def build(cls, texts: str | Iterable[str], *, level: str = "char", min_count: int = 1,
              max_size: int | None = None) -> "Vocabulary":
        """Count the tokens of ``texts`` and keep the frequent ones.

        Args:
            texts: one text or an iterable of texts.
            level: ``"char"`` or ``"word"``.
            min_count: drop tokens seen fewer times than this.
            max_size: at most this many entries in all, the four special tokens
                included (None: no limit); the most frequent tokens are kept.
        """
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        check_int("min_count", min_count)
        if max_size is not None:
            check_int("max_size", max_size, minimum=len(SPECIAL_TOKENS))
        if isinstance(texts, str):
            texts = [texts]
        counts: Counter[str] = Counter()
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts must be a str or an iterable of str, got "
                                f"{type(text).__name__} at position {i}")
            counts.update(tokenize(text, level))
        for special in SPECIAL_TOKENS:  # only reachable through the special ids
            counts.pop(special, None)
        kept = sorted((t for t, c in counts.items() if c >= min_count),
                      key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max_size - len(SPECIAL_TOKENS)]
        return cls(level=level, tokens=[*SPECIAL_TOKENS, *kept])

    @classmethod
    def from_token_lists(cls, sequences, *, level: str = "word",
                         max_size: int | None = None) -> "Vocabulary":
        """A vocabulary of tokens that are already split (e.g. the tokens of a CoNLL
        file), by decreasing frequency; no tokenizer runs over them. ``max_size``: as in
        :meth:`build`."""
        if max_size is not None:
            check_int("max_size", max_size, minimum=len(SPECIAL_TOKENS))
        counts: Counter[str] = Counter(t for seq in sequences for t in seq)
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        kept = sorted(counts, key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max_size - len(SPECIAL_TOKENS)]
        return cls(level=level, tokens=[*SPECIAL_TOKENS, *kept])

    def lookup(self, tokens: Sequence[str]) -> list[int]:
        """The ids of already-split tokens; unknown ones become ``<unk>`` (1)."""
        return [self._ids.get(token, 1) for token in tokens]

    # -- ids

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def bos_id(self) -> int:
        return 2

    @property
    def eos_id(self) -> int:
        return 3

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        # The dataclass repr would print every token: unreadable for a 30k-word vocabulary.
        return f"Vocabulary(level={self.level!r}, size={len(self.tokens)})"

    def __contains__(self, token) -> bool:
        return token in self._ids

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """The ids of the tokens of ``text``; unknown tokens become ``<unk>`` (1)."""
        ids = [self._ids.get(token, 1) for token in tokenize(text, self.level)]
        return [2] * add_bos + ids + [3] * add_eos

    def decode(self, ids: Sequence[int] | Tensor, *, skip_special: bool = False) -> str:
        """The text of ``ids`` (a list of ints or a 1-D integer tensor).

        With ``skip_special``, pad, bos and eos are left out (unk stays visible)."""
        if isinstance(ids, Tensor):
            if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
                raise ValueError(f"ids must be a 1-D integer tensor, got shape "
                                 f"{tuple(ids.shape)} and dtype {ids.dtype}")
            ids = ids.tolist()
        tokens = []
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self.tokens):
                raise ValueError(f"ids must be ints in [0, {len(self.tokens)}), got {i!r}")
            if skip_special and i in (0, 2, 3):
                continue
            tokens.append(self.tokens[i])
        return ("" if self.level == "char" else " ").join(tokens)

    # -- saving

    def to_dict(self) -> dict:
        """A plain, JSON-able dict (for checkpoints); :meth:`from_dict` inverts it."""
        return {"format": _FORMAT, "level": self.level, "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocabulary":
        if not isinstance(d, dict):
            raise TypeError(f"d must be a dict from Vocabulary.to_dict, got {type(d).__name__}")
        missing = [key for key in ("level", "tokens") if key not in d]
        if missing or d.get("format", _FORMAT) != _FORMAT:
            raise ValueError(f"d must be a dict from Vocabulary.to_dict (format {_FORMAT!r} "
                             f"with keys 'level' and 'tokens'), got keys {sorted(d)}")
        return cls(level=d["level"], tokens=d["tokens"])

    def save(self, path) -> None:
        """Write the vocabulary to ``path`` as JSON (atomically)."""
        write_text(check_path("path", path),
                   json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path) -> "Vocabulary":
        """Read a vocabulary written by :meth:`save`."""
        path = check_path("path", path)
        try:
            d = json.loads(read_utf8(path))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not a vocabulary JSON file: {err}") from None
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path} is not a vocabulary JSON file: {err}") from None


def read_text(path) -> str:
    """Read a UTF-8 text file, or every ``*.txt`` file of a folder (sorted by name,
    joined with newlines; subfolders are not searched).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a file is not UTF-8 (naming it and the byte offset of the first bad
            byte), or the file or folder holds no text.
    """
    path = check_path("path", path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.txt") if p.is_file())
        if not files:
            raise ValueError(f"folder {path} holds no *.txt files")
        text = "\n".join(read_utf8(p) for p in files)
        if not text.strip():
            raise ValueError(f"the *.txt files of folder {path} are empty")
        return text
    text = read_utf8(path)
    if not text.strip():
        raise ValueError(f"text file {path} is empty")
    return text


@functools.lru_cache(maxsize=1)
def default_corpus() -> str:
    """About 460 KB of English prose that every Python install has: the pydoc topic
    texts (``pydoc_data.topics``), joined with newlines in sorted key order. The
    built-in corpus, so a language model trains with no download."""
    from pydoc_data.topics import topics
    return "\n".join(topics[key] for key in sorted(topics))


def lm_batches(ids: Tensor | Sequence[int], batch_size: int,
               k: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Chunks for language modelling with truncated BPTT.

    The 1-D id stream is laid out as ``batch_size`` contiguous streams (see
    :func:`batchify`), then cut along time into chunks of at most ``k`` steps; column b
    of chunk i + 1 continues column b of chunk i, so the state carried across chunks
    belongs to the same text.

    Args:
        ids: the token ids, a 1-D integer tensor or a list of ints.
        batch_size: parallel streams B.
        k: steps per chunk (the truncation length); the last chunk may be shorter.

    Yields:
        ``(inputs, targets)``, both (n <= k, B) int64, time-major, where targets are the
        inputs one step ahead.
    """
    if not isinstance(ids, Tensor):
        if not isinstance(ids, Sequence) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise TypeError(f"ids must be a 1-D integer tensor or a list of ints, got "
                            f"{type(ids).__name__}")
        ids = torch.tensor(list(ids), dtype=torch.long)
    elif ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
        raise TypeError(f"ids must hold integers, got dtype {ids.dtype}")
    elif ids.dim() != 1:
        raise ValueError(f"ids must be 1-D (one long token stream), got shape "
                         f"{tuple(ids.shape)}")
    check_int("k", k)
    data = batchify(ids.long(), batch_size)  # (T, B); checks batch_size and the length
    return tbptt_chunks(data, k)  # inputs and their next tokens, (n, B) each


def pad_batch(sequences: Sequence[Sequence[int] | Tensor],
              pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Pad variable-length id sequences to one batch-first tensor.

    Args:
        sequences: B non-empty lists of ints or 1-D integer tensors.
        pad_id: the id written after each sequence's end.

    Returns:
        padded: (B, T) int64, T the longest length.
        lengths: (B,) int64, ready for the layers' ``lengths=``.
    """
    if isinstance(sequences, (str, Tensor)) or not isinstance(sequences, Sequence):
        raise TypeError(f"sequences must be a list of id lists or 1-D tensors, got "
                        f"{type(sequences).__name__}")
    if len(sequences) == 0:
        raise ValueError("sequences must hold at least one sequence, got an empty list")
    if isinstance(pad_id, bool) or not isinstance(pad_id, int):
        raise TypeError(f"pad_id must be an int, got {pad_id!r}")
    rows = []
    for b, seq in enumerate(sequences):
        if isinstance(seq, Tensor):
            if seq.dim() != 1 or seq.dtype.is_floating_point or seq.dtype == torch.bool:
                raise ValueError(f"sequences[{b}] must be a 1-D integer tensor, got shape "
                                 f"{tuple(seq.shape)} and dtype {seq.dtype}")
            row = seq.long().cpu()
        elif isinstance(seq, Sequence) and not isinstance(seq, str) and all(
                isinstance(i, int) and not isinstance(i, bool) for i in seq):
            row = torch.tensor(list(seq), dtype=torch.long)
        else:
            raise TypeError(f"sequences[{b}] must be a list of ints or a 1-D integer "
                            f"tensor, got {seq!r:.80}")
        # The layers take lengths in [1, T]: an empty sample has nothing to run over.
        if row.numel() == 0:
            raise ValueError(f"sequences[{b}] is empty; every sequence needs at least one id")
        rows.append(row)
    lengths = torch.tensor([row.numel() for row in rows], dtype=torch.long)  # (B,)
    padded = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)  # (B, T)
    for b, row in enumerate(rows):
        padded[b, :row.numel()] = row
    return padded, lengths


def length_buckets(lengths: Sequence[int] | Tensor, batch_size: int, *,
                   shuffle: bool = False, seed: int = 0) -> Iterator[list[int]]:
    """Batches of sample indices that group similar lengths, so little padding is wasted.

    The indices are sorted by length and cut into batches of ``batch_size`` (the last
    may be smaller). With ``shuffle``, samples of equal length are ordered at random and
    the batches come in random order, both from ``seed`` (change it every epoch); without,
    the batches come from shortest to longest. Every index appears exactly once.

    Args:
        lengths: (N,) the length of each sample, ints or an integer tensor.
        batch_size: indices per batch.
        shuffle: randomise tie order and batch order.
        seed: seed of the shuffling generator.

    Yields:
        lists of indices into ``lengths``.
    """
    if isinstance(lengths, Tensor):
        if lengths.dim() != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise ValueError(f"lengths must be a 1-D integer tensor, got shape "
                             f"{tuple(lengths.shape)} and dtype {lengths.dtype}")
        lengths = lengths.tolist()
    elif not isinstance(lengths, Sequence) or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in lengths):
        raise TypeError(f"lengths must be a list of ints or a 1-D integer tensor, got "
                        f"{lengths!r:.80}")
    check_int("batch_size", batch_size)
    if not isinstance(shuffle, bool):
        raise TypeError(f"shuffle must be a bool, got {shuffle!r}")
    check_seed("seed", seed)
    n = len(lengths)
    if shuffle:
        g = torch.Generator().manual_seed(seed)
        tie_break = torch.randperm(n, generator=g).tolist()
        order = sorted(range(n), key=lambda i: (lengths[i], tie_break[i]))
    else:
        order = sorted(range(n), key=lambda i: lengths[i])  # stable: ties in index order
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    return iter(batches)
