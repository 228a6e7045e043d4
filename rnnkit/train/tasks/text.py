"""The tasks over text: the language model, classification, tagging and translation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rnnkit import data as D
from rnnkit.models import LanguageModel, Seq2Seq, SequenceClassifier, SequenceTagger
from rnnkit.train import baselines as B
from rnnkit.train import examples as E

from rnnkit.train.tasks.base import SPLITS, Task, TaskOptions, _both, check_split


class LanguageModelling(Task):
    """Character- (or word-) level language model on a text; built-in: the pydoc topic
    texts. Trained with truncated BPTT over contiguous streams; the last two
    twentieths of the text are the validation and the test split. Metric: loss in
    nats per token (bits per token shown too). Baseline: the unigram distribution of
    the training text."""

    name = "lm"
    reads_text = True
    entries = ("vocab",)
    recipe = {"init": "default"}

    def __init__(self, options: TaskOptions, saved: dict | None = None):
        super().__init__(options, saved)
        text = D.read_text(options.data) if options.data else D.default_corpus()
        self.vocab = self._vocab("vocab", lambda: D.Vocabulary.build(
            [text], level=options.level, max_size=options.max_vocab))
        encoded = self.vocab.encode(text)
        self._check_known("vocab", self.vocab, [encoded])
        ids = torch.tensor(encoded, dtype=torch.long)
        self.k = options.seq_len or 100
        n_held = max(len(ids) // 20, 2 * self.k + 2)  # each of validation and test
        if len(ids) < 3 * n_held:
            raise ValueError(f"{_source(options.data)} has {len(ids)} {options.level}-level "
                             f"tokens: too few for training, validation and test parts of "
                             f"{n_held} tokens each at seq_len={self.k}; give a longer text "
                             "or a smaller --seq-len")
        self.parts = {"train": ids[:-2 * n_held], "validation": ids[-2 * n_held:-n_held],
                      "test": ids[-n_held:]}
        self.train_stream = D.batchify(self.parts["train"], options.batch_size)  # (T, B)
        held_batch = min(options.batch_size, 8)
        self.streams = {split: D.batchify(self.parts[split], held_batch) for split in SPLITS}
        self.n_chunks = (self.train_stream.shape[0] - 1) // self.k
        unit = "character" if options.level == "char" else "word"
        self.metric_names = {"loss": f"nats per {unit}", "bits_per_token": f"bits per {unit}"}

    def build_model(self):
        o = self.options
        return LanguageModel(vocab_size=len(self.vocab), embedding_size=64,
                             embedding_dropout=0.1, **o.rnn_kwargs(256, t_max=self.k))

    def shard(self, rank: int, world: int):
        # every rank keeps whole streams (columns), so TBPTT's carried state stays valid
        self.train_stream = self.train_stream[:, rank::world]

    def train_batch(self, step):
        i = step % self.n_chunks  # contiguous chunks; the stream wraps around
        s = self.train_stream[i * self.k:(i + 1) * self.k + 1].t()  # (B, k + 1)
        return i, s[:, :-1], s[:, 1:]

    def loss(self, model, batch, state):
        i, x, y = batch
        logits, state = model(x, None if i == 0 else state)  # a fresh start at the wrap
        return F.cross_entropy(logits.flatten(0, 1), y.flatten()), state

    def units(self, batch):
        return batch[1].numel()

    def evaluate(self, model, split: str = "validation"):
        check_split(split)
        total, count, state = 0.0, 0, None
        stream = self.streams[split]
        for x, y in D.tbptt_chunks(stream, self.k):  # (k, B) tokens and their next ones
            logits, state = model(x.t(), state)
            total += F.cross_entropy(logits.flatten(0, 1), y.t().flatten(),
                                     reduction="sum").item()
            count += y.numel()
        loss = total / count
        return {"loss": loss, "bits_per_token": loss / math.log(2)}

    def baselines(self):
        def unigram(split):
            # the tokens the model is scored on: every stream position after the first
            targets = self.streams[split][1:].flatten()
            loss = B.unigram_cross_entropy(self.parts["train"], targets, len(self.vocab))
            return {"loss": loss, "bits_per_token": loss / math.log(2)}
        return {"unigram": _both(unigram)}

    def extra(self):
        return {"vocab": self.vocab.to_dict()}

    def example(self, text=None, index=None) -> E.Example:
        if text is not None:
            return E.text_example(self.vocab, text, "text")
        ids = self.parts["validation"]
        n = max(1, math.ceil(len(ids) / E.DEFAULT_CHARACTERS))
        i = E.item_index(index or 0, n,
                         f"a part of {E.DEFAULT_CHARACTERS} tokens of the validation text")
        # the ids themselves: decoding them to text and tokenizing again would split a
        # special token such as <unk> into characters
        chunk = ids[i * E.DEFAULT_CHARACTERS:(i + 1) * E.DEFAULT_CHARACTERS].tolist()
        tokens = [self.vocab.tokens[j] for j in chunk]
        char = self.vocab.level == "char"
        return E.Example(torch.tensor([chunk]), tokens,
                         E.char_features(tokens) if char else E.word_features(tokens),
                         [t for t, j in enumerate(chunk) if j == self.vocab.unk_id],
                         source=f"the validation text, part {i}",
                         layout={} if char else {"separator": " "})


#: the most tokens (padding included) predict runs in one batch, and in one text
PREDICT_BATCH_TOKENS = MAX_TEXT_TOKENS = 65_536


def _length_batches(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices of sequences of ``lengths`` in batches of similar lengths, each at most
    ``budget`` tokens once padded to its longest (one sequence at least)."""
    batches, batch = [], []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if batch and (len(batch) + 1) * max(lengths[i], 1) > budget:
            batches.append(batch)
            batch = []
        batch.append(i)
    return batches + [batch] * bool(batch)


def _label_texts(model, name: str, texts, ids: list[list[int]], unk_id: int, read) -> list:
    """Run ``model`` over the token ids of ``texts`` in length-sorted batches of at most
    PREDICT_BATCH_TOKENS tokens; ``read(i, row_output)`` makes the answer for text i,
    returned in the input's order."""
    if not texts:
        raise ValueError(f"predict with a {name!r} checkpoint needs texts to label")
    for i, seq in enumerate(ids):
        if len(seq) > MAX_TEXT_TOKENS:
            raise ValueError(f"texts[{i}] has {len(seq):,} tokens, more than the "
                             f"{MAX_TEXT_TOKENS:,} predict reads in one text: split it")
    out = [None] * len(texts)
    for batch in _length_batches([len(seq) for seq in ids], PREDICT_BATCH_TOKENS):
        x, lengths = D.pad_batch([ids[i] or [unk_id] for i in batch])
        with torch.no_grad():
            result = model(x, lengths)
        for row, i in enumerate(batch):
            out[i] = read(i, result[row])
    return out


def _source(data: str | None) -> str:
    """The data named in a message: the user's file, or the built-in data."""
    return f"--data {data}" if data else "the built-in data"


class _Split:
    """Indices of a shuffled train/validation/test split of n items."""

    def __init__(self, n: int, seed: int, val_fraction: float = 0.15,
                 test_fraction: float | None = None, source: str | None = None):
        test_fraction = val_fraction if test_fraction is None else test_fraction
        n_val, n_test = max(1, int(n * val_fraction)), max(1, int(n * test_fraction))
        if n < n_val + n_test + 1:
            raise ValueError(f"{_source(source)} has {n} examples: too few for a training, a "
                             f"validation and a test part (at least 3)")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        self.validation, self.test = order[:n_val], order[n_val:n_val + n_test]
        self.train = order[n_val + n_test:]

    def __getitem__(self, split: str) -> list[int]:
        check_split(split)
        return getattr(self, split)


class _SplitTask(Task):
    """A task over a list of examples split by :class:`_Split`; ``_batch(indices)``
    turns examples into a batch."""

    def train_batch(self, step):
        return self._batch([self.split.train[i] for i in self._pick(len(self.split.train), step)])

    def units(self, batch):
        return int(batch[1].sum())  # the real tokens, not the padding


class Classification(_SplitTask):
    """Text classification from a TSV file (label<TAB>text per line); built-in:
    generated reviews labelled with the sentiment and the subject of their last verdict
    ("positive music": 18 classes), which depends on negation, on "but" and on keeping
    it across the asides that follow. Metric: accuracy. Baselines: the majority class,
    and a logistic regression on word uni- and bigrams."""

    name, metric, higher_is_better = "classify", "accuracy", True
    reads_text = True
    entries = ("vocab", "labels")
    recipe = {"lr": 1e-2}

    def __init__(self, options: TaskOptions, saved: dict | None = None):
        super().__init__(options, saved)
        if options.data:
            pairs = [(text, label) for label, text in D.read_pairs(options.data)]
        else:
            pairs = [(t, str(label)) for t, label in D.sentiment_sentences(
                4000, seed=options.seed, max_asides=3, aspects=True)]
        self.labels = self.saved.get("labels") or sorted({label for _, label in pairs})
        unknown = {label for _, label in pairs} - set(self.labels)
        if unknown:
            raise ValueError(f"data has labels the model does not know: {sorted(unknown)}")
        self.vocab = self._vocab("vocab", lambda: D.Vocabulary.build(
            [t for t, _ in pairs], level="word", max_size=options.max_vocab))
        self.texts = [t for t, _ in pairs]
        self.x = [self.vocab.encode(t) for t in self.texts]
        self._check_known("vocab", self.vocab, self.x)
        self.y = torch.tensor([self.labels.index(label) for _, label in pairs])
        self.split = _Split(len(pairs), options.seed, source=options.data)

    def build_model(self):
        return SequenceClassifier(num_classes=max(2, len(self.labels)),
                                  vocab_size=len(self.vocab), embedding_size=64,
                                  pooling=self.options.pooling,
                                  **self.options.rnn_kwargs(
                                      64, t_max=max(len(x) for x in self.x)))

    def _batch(self, idx):
        x, lengths = D.pad_batch([self.x[i] for i in idx])
        return x, lengths, self.y[idx]

    def loss(self, model, batch, state):
        x, lengths, y = batch
        return F.cross_entropy(model(x, lengths), y,
                               label_smoothing=self.options.label_smoothing), None

    def evaluate(self, model, split: str = "validation"):
        x, lengths, y = self._batch(self.split[split])
        logits = model(x, lengths)
        return {"loss": F.cross_entropy(logits, y).item(),
                "accuracy": (logits.argmax(-1) == y).float().mean().item()}

    def baselines(self):
        train = self.split.train
        majority = _both(lambda s: {"accuracy": B.majority_class(
            self.y[train].tolist(), self.y[self.split[s]].tolist())})
        ngram = B.ngram_logistic_regression(
            [self.texts[i] for i in train], self.y[train].tolist(),
            {s: ([self.texts[i] for i in self.split[s]], self.y[self.split[s]].tolist())
             for s in SPLITS})
        return {"majority_class": majority,
                "ngram_logistic_regression": {s: {"accuracy": a} for s, a in ngram.items()}}

    def extra(self):
        return {"vocab": self.vocab.to_dict(), "labels": self.labels}

    @classmethod
    def predict(cls, model, entry, texts, data):
        vocab, labels = D.Vocabulary.from_dict(entry["vocab"]), entry["labels"]

        def read(i, logits):
            p = logits.softmax(-1)
            return {"text": texts[i], "label": labels[int(p.argmax())],
                    "probability": float(p.max())}
        return _label_texts(model, cls.name, texts, [vocab.encode(t) for t in texts or []],
                            vocab.unk_id, read)

    def example(self, text=None, index=None) -> E.Example:
        if text is not None:
            return E.text_example(self.vocab, text, "text")
        i, source = E.validation_item(self, index)
        ex = E.text_example(self.vocab, self.texts[i], source)
        ex.truth = self.labels[int(self.y[i])]
        return ex


class Tagging(_SplitTask):
    """Token tagging from a CoNLL-style file; built-in: a generated grammar where a
    word's tag depends on its context: most nouns and verbs are ambiguous words, a
    noun's tag names its role (subject, object, in a prepositional phrase), and each
    verb's tag the number of its subject, across up to two prepositional phrases and up
    to three centre-embedded relative clauses ("the dog that the cats that the child
    sees chase runs"). Metric: token accuracy. Baseline: each word's most frequent
    training tag."""

    name, metric, higher_is_better = "tag", "accuracy", True
    reads_text = True
    entries = ("vocab", "tags")
    # chosen on validation: the bidirectional tagger is still improving at 1500 steps
    recipe = {"max_steps": 1500}

    def __init__(self, options: TaskOptions, saved: dict | None = None):
        super().__init__(options, saved)
        sentences = D.read_conll(options.data) if options.data else \
            D.synthetic_tagging(3000, seed=options.seed, max_modifiers=2, ambiguity=0.8,
                                roles=True, agreement=True, max_embedding=3)
        self.vocab = self._vocab("vocab", lambda: D.Vocabulary.from_token_lists(
            (t for t, _ in sentences), max_size=options.max_vocab))
        self.tags = self.saved.get("tags") or sorted({tag for _, tags in sentences for tag in tags})
        unknown = {tag for _, tags in sentences for tag in tags} - set(self.tags)
        if unknown:
            raise ValueError(f"data has tags the model does not know: {sorted(unknown)}")
        self.x = [self.vocab.lookup(tokens) for tokens, _ in sentences]
        self._check_known("vocab", self.vocab, self.x)
        self.y = [[self.tags.index(t) for t in tags] for _, tags in sentences]
        self.split = _Split(len(sentences), options.seed, source=options.data)

    def build_model(self):
        return SequenceTagger(num_tags=len(self.tags), vocab_size=len(self.vocab),
                              embedding_size=64, **self.options.rnn_kwargs(
                                  64, bidirectional=True, t_max=max(len(x) for x in self.x)))

    def _batch(self, idx):
        x, lengths = D.pad_batch([self.x[i] for i in idx])
        y = torch.full_like(x, -100)  # ignored by the loss past each length
        for row, i in enumerate(idx):
            y[row, :len(self.y[i])] = torch.tensor(self.y[i])
        return x, lengths, y

    def loss(self, model, batch, state):
        x, lengths, y = batch
        return F.cross_entropy(model(x, lengths).flatten(0, 1), y.flatten(), ignore_index=-100,
                               label_smoothing=self.options.label_smoothing), None

    def evaluate(self, model, split: str = "validation"):
        x, lengths, y = self._batch(self.split[split])
        logits = model(x, lengths)
        real = y != -100
        return {"loss": F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100).item(),
                "accuracy": (logits.argmax(-1)[real] == y[real]).float().mean().item()}

    def baselines(self):
        def examples(idx):
            return [(self.x[i], self.y[i]) for i in idx]
        train = examples(self.split.train)
        return {"most_frequent_tag": _both(lambda s: {"accuracy": B.most_frequent_tag(
            train, examples(self.split[s]))})}

    def extra(self):
        return {"vocab": self.vocab.to_dict(), "tags": self.tags}

    @classmethod
    def predict(cls, model, entry, texts, data):
        vocab, tags = D.Vocabulary.from_dict(entry["vocab"]), entry["tags"]
        ids = [vocab.lookup(t.split()) for t in texts or []]
        for i, seq in enumerate(ids):
            if not seq:
                raise ValueError(f"texts[{i}] holds no tokens to tag, got {texts[i]!r}")

        def read(i, logits):
            return {"tokens": texts[i].split(),
                    "tags": [tags[int(t)] for t in logits[:len(ids[i])].argmax(-1)]}
        return _label_texts(model, cls.name, texts, ids, vocab.unk_id, read)

    def example(self, text=None, index=None) -> E.Example:
        if text is not None:  # words split at spaces, as predict does
            return E.text_example(self.vocab, text, "text", split=True)
        i, source = E.validation_item(self, index)
        tokens = [self.vocab.tokens[j] for j in self.x[i]]
        return E.Example(torch.tensor([self.x[i]]), tokens, E.word_features(tokens),
                         source=source, layout={"separator": " "},
                         truth=[self.tags[j] for j in self.y[i]])


class Translation(_SplitTask):
    """Sequence to sequence from a TSV file of pairs (source<TAB>target), character
    level; built-in: dates in words and several numeric forms to ISO dates, half of
    them ranges ("from March 5, 2019 to 04/06/2019" to "2019-03-05/2019-06-04"). Metric:
    exact match of greedy decoding (on at most 300 pairs of a split). Baseline: the
    source copied as it is."""

    name, metric, higher_is_better = "translate", "exact_match", True
    reads_text = True
    entries = ("src_vocab", "tgt_vocab")
    metric_names = {"loss": "loss", "exact_match": "exact match"}
    #: pairs of a split that an evaluation decodes (greedy decoding is the slow part)
    max_eval_pairs = 300

    def __init__(self, options: TaskOptions, saved: dict | None = None):
        super().__init__(options, saved)
        pairs = D.read_pairs(options.data) if options.data else \
            D.date_pairs(6000, seed=options.seed, range_fraction=0.5)
        self.pairs = pairs
        self.src_vocab = self._vocab("src_vocab", lambda: D.Vocabulary.build(
            [s for s, _ in pairs], level="char", max_size=options.max_vocab))
        self.tgt_vocab = self._vocab("tgt_vocab", lambda: D.Vocabulary.build(
            [t for _, t in pairs], level="char", max_size=options.max_vocab))
        self.src = [self.src_vocab.encode(s) for s, _ in pairs]
        self.tgt = [self.tgt_vocab.encode(t, add_bos=True, add_eos=True) for _, t in pairs]
        self._check_known("src_vocab", self.src_vocab, self.src)
        self._check_known("tgt_vocab", self.tgt_vocab, self.tgt)
        self.split = _Split(len(pairs), options.seed, val_fraction=0.05,
                            source=options.data)
        self.max_length = max(len(t) for t in self.tgt) + 5

    def build_model(self):
        return Seq2Seq(src_vocab_size=len(self.src_vocab), tgt_vocab_size=len(self.tgt_vocab),
                       embedding_size=32, attention="bahdanau",
                       pad_id=self.tgt_vocab.pad_id, bos_id=self.tgt_vocab.bos_id,
                       eos_id=self.tgt_vocab.eos_id,
                       **self.options.rnn_kwargs(128, bidirectional=True,
                                                 t_max=max(len(s) for s in self.src)))

    def _batch(self, idx):
        src, lengths = D.pad_batch([self.src[i] for i in idx])
        tgt, _ = D.pad_batch([self.tgt[i] for i in idx])
        return src, lengths, tgt

    def loss(self, model, batch, state):
        src, lengths, tgt = batch
        logits, _ = model(src, tgt[:, :-1], lengths)
        return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(),
                               ignore_index=self.tgt_vocab.pad_id), None

    def evaluate(self, model, split: str = "validation"):
        idx = self.split[split][:self.max_eval_pairs]
        src, lengths, tgt = self._batch(idx)
        loss, _ = self.loss(model, (src, lengths, tgt), None)
        decoded, _ = model.greedy(src, lengths, max_length=self.max_length)
        exact = sum(d == self.tgt[i][1:-1] for d, i in zip(decoded, idx)) / len(idx)
        return {"loss": loss.item(), "exact_match": exact}

    def baselines(self):
        return {"copy_source": _both(lambda s: {"exact_match": B.copy_source(
            [self.pairs[i] for i in self.split[s][:self.max_eval_pairs]])})}

    def extra(self):
        return {"src_vocab": self.src_vocab.to_dict(), "tgt_vocab": self.tgt_vocab.to_dict()}

    def example(self, text=None, index=None) -> E.Example:
        if text is not None:
            return E.text_example(self.src_vocab, text, "text")
        i, source = E.validation_item(self, index)
        source_text, target = self.pairs[i]
        ex = E.text_example(self.src_vocab, source_text, source)
        ex.truth = target
        return ex
