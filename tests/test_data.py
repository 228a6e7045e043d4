"""rnnkit.data: datasets and batching (all offline, seeded)."""

import datetime
import ast
import json
import pathlib
import re

import pytest
import torch

from rnnkit.data import (BUNDLED, DATE_FORMS, TAGS, DigitSequences, Scaler, Vocabulary,
                         adding_problem, batchify, copy_memory, date_pairs, default_corpus,
                         digit_sequences, length_buckets, lm_batches, load_bundled,
                         pad_batch, read_conll, read_csv_series, read_pairs, read_text,
                         reversal, synthetic_tagging, time_split, windows)
from rnnkit.data.digits import PERMUTATION_SEED, pixel_permutation, shift_images


# ---------------------------------------------------------------- synthetic tasks

def test_adding_problem_structure():
    x, y = adding_problem(64, 30, seed=3)
    assert x.shape == (64, 30, 2) and x.dtype == torch.float32 and y.shape == (64,)
    values, markers = x[..., 0], x[..., 1]
    assert bool(((values >= 0) & (values < 1)).all())
    assert set(markers.unique().tolist()) == {0.0, 1.0}
    assert bool((markers[:, :15].sum(1) == 1).all())   # one marker in the first half
    assert bool((markers[:, 15:].sum(1) == 1).all())   # one in the second half
    torch.testing.assert_close(y, (values * markers).sum(1))


def test_adding_problem_seeded_and_global_rng_untouched():
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a = adding_problem(8, 10, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = adding_problem(8, 10, seed=1)
    c = adding_problem(8, 10, seed=2)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_copy_memory_structure():
    n, delay, n_symbols, length = 16, 20, 5, 4
    x, y = copy_memory(n, delay, n_symbols=n_symbols, length=length, seed=0)
    T = 2 * length + delay
    assert x.shape == y.shape == (n, T) and x.dtype == y.dtype == torch.long
    symbols = x[:, :length]
    assert bool(((symbols >= 1) & (symbols <= n_symbols)).all())
    assert bool((x[:, length:length + delay - 1] == 0).all())          # the delay
    assert bool((x[:, length + delay - 1] == n_symbols + 1).all())     # the delimiter
    assert bool((x[:, length + delay:] == 0).all())
    assert bool((y[:, :-length] == 0).all())
    assert torch.equal(y[:, -length:], symbols)                        # the copy
    assert int(x.max()) < n_symbols + 2                                # vocabulary size


def test_copy_memory_delay_one_puts_delimiter_right_after_symbols():
    x, y = copy_memory(2, 1, n_symbols=3, length=2, seed=0)
    assert x.shape == (2, 5) and bool((x[:, 2] == 4).all())


def test_reversal_pairs():
    pairs = reversal(50, min_length=2, max_length=5, n_symbols=4, seed=0)
    assert len(pairs) == 50
    assert {len(s) for s, _ in pairs} == {2, 3, 4, 5}
    for seq, rev in pairs:
        assert rev == seq[::-1] and all(1 <= s <= 4 for s in seq)
    assert pairs == reversal(50, min_length=2, max_length=5, n_symbols=4, seed=0)


@pytest.mark.parametrize("call, match", [
    (lambda: adding_problem(0, 10), "n must be a positive int, got 0"),
    (lambda: adding_problem(4, 1), "length must be an int >= 2, got 1"),
    (lambda: adding_problem(4, 10, seed=1.5), "seed must be an int"),
    (lambda: copy_memory(4, 0), "delay must be a positive int, got 0"),
    (lambda: copy_memory(4, 5, n_symbols=True), "n_symbols must be a positive int"),
    (lambda: reversal(4, min_length=5, max_length=3), "max_length must be >= min_length"),
])
def test_synthetic_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=re.escape(match)):
        call()


# ---------------------------------------------------------------- vocabulary

def test_vocabulary_char_round_trip(tmp_path):
    text = "hello, world! ünïcode"
    vocab = Vocabulary.build([text], level="char")
    assert vocab.tokens[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 3)
    assert len(vocab) == 4 + len(set(text))
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert vocab.encode(vocab.decode(ids)) == ids
    assert vocab.decode(torch.tensor(ids)) == text
    assert vocab.encode("hi", add_bos=True, add_eos=True)[0::3] == [2, 3]
    assert Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab and loaded.encode(text) == ids


def test_vocabulary_word_level_and_unknowns():
    vocab = Vocabulary.build(["The cat sat.", "The dog, the cat!"], level="word")
    assert vocab.encode("The cat sat.") == [vocab.tokens.index(t)
                                            for t in ["The", "cat", "sat", "."]]
    assert vocab.decode(vocab.encode("The   cat,sat.")) == "The cat , sat ."
    assert vocab.encode("The bird sat") == [vocab.tokens.index("The"), 1,
                                            vocab.tokens.index("sat")]
    assert Vocabulary.build("abc", level="char").encode("abz") == [4, 5, 1]
    assert vocab.decode([2, 4, 0, 3], skip_special=True) == vocab.tokens[4]
    assert vocab != Vocabulary.build(["The cat sat."], level="word")


def test_vocabulary_frequency_order_min_count_and_max_size():
    vocab = Vocabulary.build("aaabbc", level="char")
    assert vocab.tokens[4:] == ["a", "b", "c"]          # by frequency
    assert Vocabulary.build("aaabbc", level="char", min_count=2).tokens[4:] == ["a", "b"]
    assert Vocabulary.build("aaabbc", level="char", max_size=5).tokens[4:] == ["a"]
    # A literal "<pad>" in the text is ordinary punctuation and a word, never id 0.
    words = Vocabulary.build("<pad> x", level="word")
    assert words.decode(words.encode("<pad>")) == "< pad >" and 0 not in words.encode("<pad>")


@pytest.mark.parametrize("call, exc, match", [
    (lambda: Vocabulary.build("a", level="byte"), ValueError, "level must be one of"),
    (lambda: Vocabulary.build("a", min_count=0), ValueError, "min_count must be a positive"),
    (lambda: Vocabulary.build("a", max_size=2), ValueError, "max_size must be an int >= 4"),
    (lambda: Vocabulary.build(["a", 3]), TypeError, "got int at position 1"),
    (lambda: Vocabulary("char", ["a", "b"]), ValueError, "must start with the special"),
    (lambda: Vocabulary("char", ["<pad>", "<unk>", "<bos>", "<eos>", "a", "a"]),
     ValueError, "duplicates ['a']"),
    (lambda: Vocabulary.from_dict({"tokens": []}), ValueError, "keys 'level' and 'tokens'"),
    (lambda: Vocabulary.build("ab").decode([0, 9]), ValueError, "ids must be ints in [0, 6)"),
])
def test_vocabulary_bad_input(call, exc, match):
    with pytest.raises(exc, match=re.escape(match)):
        call()


def test_vocabulary_load_rejects_other_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"mean": [1.0]}')
    with pytest.raises(ValueError, match="is not a vocabulary JSON file"):
        Vocabulary.load(path)


# ---------------------------------------------------------------- text files and corpus

def test_read_text_file_and_folder(tmp_path):
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first ü", encoding="utf-8")
    (tmp_path / "skip.md").write_text("not text")
    assert read_text(tmp_path / "a.txt") == "first ü"
    assert read_text(tmp_path) == "first ü\nsecond"


def test_read_text_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc\xffdef")
    with pytest.raises(ValueError,
                       match=r"bad\.txt is not valid UTF-8: byte 0xff at byte offset 3"):
        read_text(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.txt is empty"):
        read_text(empty)
    folder = tmp_path / "nothing"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"nothing holds no \*\.txt files"):
        read_text(folder)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        read_text(3)


def test_default_corpus_is_english_prose():
    text = default_corpus()
    assert 300_000 < len(text) < 2_000_000
    assert " the " in text and text == default_corpus()


# ---------------------------------------------------------------- LM batches, padding, buckets

def test_lm_batches_contiguous_streams_and_shifted_targets():
    ids = torch.arange(103)
    chunks = list(lm_batches(ids, batch_size=4, k=7))
    data = batchify(ids, 4)                                    # (25, 4)
    assert [x.shape for x, _ in chunks] == [(7, 4)] * 3 + [(3, 4)]
    for x, y in chunks:
        assert x.dtype == torch.long
        assert torch.equal(y[:-1], x[1:])                       # targets: one step ahead
        assert torch.equal(y, x + 1)                            # ids are consecutive
    for (x, y), (x_next, _) in zip(chunks, chunks[1:]):
        assert torch.equal(x_next[0], y[-1])                    # column b continues
    assert torch.equal(torch.cat([x for x, _ in chunks]), data[:-1])
    assert torch.equal(torch.cat([y for _, y in chunks]), data[1:])
    assert [x.tolist() for x, _ in lm_batches(list(range(103)), 4, 7)] == \
        [x.tolist() for x, _ in chunks]


def test_lm_batches_bad_input_fails_at_call():
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        lm_batches(torch.arange(10), 2, 0)                     # no next() needed
    with pytest.raises(TypeError, match="ids must hold integers, got dtype torch.float32"):
        lm_batches(torch.rand(10), 2, 3)
    with pytest.raises(ValueError, match=re.escape("ids must be 1-D (one long token stream), "
                                                   "got shape (3, 3)")):
        lm_batches(torch.zeros(3, 3, dtype=torch.long), 2, 3)


def test_pad_batch():
    padded, lengths = pad_batch([[1, 2, 3], [4], torch.tensor([5, 6])], pad_id=9)
    assert padded.tolist() == [[1, 2, 3], [4, 9, 9], [5, 6, 9]]
    assert lengths.tolist() == [3, 1, 2] and lengths.dtype == torch.long
    with pytest.raises(ValueError, match=r"sequences\[1\] is empty"):
        pad_batch([[1], []])
    with pytest.raises(ValueError, match="got an empty list"):
        pad_batch([])
    with pytest.raises(TypeError, match=r"sequences\[0\] must be a list of ints"):
        pad_batch([[1.5]])


def test_pad_batch_lengths_work_with_layers():
    import rnnkit
    padded, lengths = pad_batch([[1, 2, 3], [4]])
    x = torch.nn.functional.one_hot(padded, 5).float()        # (B, T, 5)
    out, _ = rnnkit.GRU(5, 3, batch_first=True)(x, lengths=lengths)
    assert out.shape == (2, 3, 3)


def test_length_buckets():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 40, (101,), generator=gen).tolist()
    batches = list(length_buckets(lengths, 10))
    assert sorted(i for b in batches for i in b) == list(range(101))
    assert [len(b) for b in batches] == [10] * 10 + [1]
    spans = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert max(spans) <= 8                                      # sorted, so tight batches
    shuffled = list(length_buckets(lengths, 10, shuffle=True, seed=1))
    assert sorted(i for b in shuffled for i in b) == list(range(101))
    assert shuffled == list(length_buckets(lengths, 10, shuffle=True, seed=1))
    assert shuffled != list(length_buckets(lengths, 10, shuffle=True, seed=2))
    assert {max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in shuffled} \
        <= set(range(9))
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        length_buckets(lengths, 0)
    with pytest.raises(TypeError, match="lengths must be a list of ints"):
        length_buckets([1.0, 2.0], 2)


# ---------------------------------------------------------------- digits

@pytest.mark.parametrize("mode, steps, features", [("rows", 8, 8), ("pixels", 64, 1),
                                                    ("permuted", 64, 1)])
def test_digit_sequences_shapes_and_range(mode, steps, features):
    data = digit_sequences(mode)
    assert isinstance(data, DigitSequences)
    sizes = [len(data.y_train), len(data.y_val), len(data.y_test)]
    assert sum(sizes) == 1797 and sizes[2] == pytest.approx(0.2 * 1797, abs=2)
    assert sizes[1] == pytest.approx(0.1 * 1797, abs=2)
    for x, y in [(data.x_train, data.y_train), (data.x_val, data.y_val),
                 (data.x_test, data.y_test)]:
        assert x.shape[1:] == (steps, features) and x.dtype == torch.float32
        assert y.dtype == torch.long and set(y.unique().tolist()) == set(range(10))
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert (data.n_steps, data.n_features) == (steps, features)


def test_digit_permutation_is_fixed_and_splits_are_seeded():
    rows = digit_sequences("rows", split_seed=5)
    perm_a = digit_sequences("permuted", split_seed=5)
    perm_b = digit_sequences("permuted", split_seed=6)
    assert torch.equal(perm_a.permutation, perm_b.permutation)
    assert torch.equal(perm_a.permutation, pixel_permutation())
    assert PERMUTATION_SEED == 1234 and sorted(perm_a.permutation.tolist()) == list(range(64))
    flat = rows.x_train.reshape(-1, 64)                          # same split seed, same images
    assert torch.equal(perm_a.x_train.squeeze(-1), flat[:, perm_a.permutation])
    assert torch.equal(digit_sequences("pixels", split_seed=5).x_train.squeeze(-1), flat)
    assert not torch.equal(perm_a.y_train, perm_b.y_train)


def test_shift_images_moves_each_image_by_its_own_shift():
    images = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4) + 1
    moved = shift_images(images, torch.tensor([[1, 0], [-1, 2]]))
    # image 0 one row down: a blank top row, rows 0 and 1 below it
    assert torch.equal(moved[0, 0], torch.zeros(4)) and torch.equal(moved[0, 1:], images[0, :2])
    # image 1 one row up and two columns right
    expected = torch.zeros(3, 4)
    expected[:2, 2:] = images[1, 1:, :2]
    assert torch.equal(moved[1], expected)
    assert torch.equal(shift_images(images, torch.zeros(2, 2, dtype=torch.long)), images)


@pytest.mark.parametrize("mode", ["rows", "pixels", "permuted"])
def test_digit_shift_moves_the_images_whatever_the_mode(mode):
    data, rows = digit_sequences(mode), digit_sequences("rows")
    x = data.x_train[:50]
    moved = data.shifted(x, 1, torch.Generator().manual_seed(3))
    assert moved.shape == x.shape and not torch.equal(moved, x)
    # the same draws on the row-major images, then the mode's own layout
    shift = torch.randint(-1, 2, (50, 2), generator=torch.Generator().manual_seed(3))
    expected = shift_images(rows.x_train[:50], shift).reshape(50, 64)
    if data.permutation is not None:
        expected = expected[:, data.permutation]
    assert torch.equal(moved, expected.view(x.shape))
    # a moved digit loses at most the ink of its border rows and columns
    assert moved.sum() <= x.sum() + 1e-3


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "columns"}, "mode must be one of ('rows', 'pixels', 'permuted'), got 'columns'"),
    ({"test_fraction": 1.2}, "test_fraction must be a number in [0, 1), got 1.2"),
    ({"test_fraction": 0.5, "val_fraction": 0.45}, "must leave at least 10% for training"),
    ({"split_seed": -1}, "split_seed must be a non-negative int, got -1"),
])
def test_digit_sequences_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        digit_sequences(**kwargs)


# ---------------------------------------------------------------- CSV time series

def test_read_csv_series(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("date,temp,label,rain\n2020-01,1.5,a,0\n2020-02,2.5,b,1e-1\n\n"
                    "2020-03,-3,c,2\n")
    values, index, names = read_csv_series(path, index_column="date")
    assert names == ["temp", "rain"] and index == ["2020-01", "2020-02", "2020-03"]
    assert values.dtype == torch.float32 and values.shape == (3, 2)
    torch.testing.assert_close(values, torch.tensor([[1.5, 0.0], [2.5, 0.1], [-3.0, 2.0]]))
    values, index, names = read_csv_series(path, columns=["rain"])
    assert names == ["rain"] and index == [0, 1, 2] and values.shape == (3, 1)


@pytest.mark.parametrize("text, kwargs, match", [
    ("", {}, "is empty"),
    ("a,b\n", {}, "has a header but no data rows"),
    ("a,b\n1,2\n3,\n", {}, "line 3, column 'b': a missing value"),
    ("a,b\n1,2\n3,4\nx,5\n", {"columns": ["a", "b"]},
     "line 4, column 'a': 'x', not a finite number"),
    ("a,b\n1,2\n\n3,x\n", {}, "line 4, column 'b': 'x', not a finite number"),  # blank counts
    ("a,b\n1,2\n3,NaN\n", {}, "line 3, column 'b': a missing value"),
    ("a,b\n1,\n3,4\n", {}, "line 2, column 'b': a missing value"),   # not dropped as text
    ("a,b\n1,2\n3\n", {}, "line 3: expected 2 cells as in the header, got 1"),
    ("a,b\n1,2\n", {"columns": ["c"]}, "columns ['c'] are not columns of"),
    ("a,b\n1,2\n", {"index_column": "t"}, "index_column 't' is not a column of"),
    ("name,kind\nx,y\n", {}, "has no numeric column"),
])
def test_read_csv_series_errors(tmp_path, text, kwargs, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(match)):
        read_csv_series(path, **kwargs)


@pytest.mark.parametrize("name, length", [("sunspots", 309), ("co2", 2284), ("nile", 100),
                                          ("elnino", 732)])
def test_load_bundled(name, length):
    values, index, names = load_bundled(name)
    assert values.shape == (length, 1) and values.dtype == torch.float32
    assert len(index) == length and len(names) == 1
    assert bool(values.isfinite().all())                       # co2's gaps are filled


def test_load_bundled_values_and_unknown_name():
    values, index, names = load_bundled("sunspots")
    assert names == ["SUNACTIVITY"] and index[:2] == [1700, 1701]
    assert values[:2, 0].tolist() == [5.0, 11.0]
    assert BUNDLED == ("co2", "elnino", "nile", "sunspots")
    with pytest.raises(ValueError, match=r"one of the bundled series \('co2', 'elnino', "
                                         r"'nile', 'sunspots'\), got 'mnist'"):
        load_bundled("mnist")


def test_trends_tells_a_random_walk_from_a_stationary_series():
    from rnnkit.data import trends

    g = torch.Generator().manual_seed(0)
    noise = torch.randn(400, generator=g)
    assert trends(noise.cumsum(0)) and not trends(noise)
    assert trends(torch.stack([noise, noise.cumsum(0)], 1))  # any feature counts
    values, _, _ = load_bundled("co2")
    assert trends(time_split(values).train)


def test_co2_gaps_are_interpolated_linearly():
    import statsmodels.datasets.co2 as co2
    raw = torch.tensor(co2.load_pandas().data["co2"].to_numpy(copy=True))
    values, _, _ = load_bundled("co2")
    gap = int(torch.nonzero(raw.isnan())[0])                   # first missing week
    assert not raw[gap - 1].isnan() and not raw[gap + 1].isnan()
    assert float(values[gap, 0]) == pytest.approx(float(raw[gap - 1] + raw[gap + 1]) / 2,
                                                  abs=1e-4)


# ---------------------------------------------------------------- splits, scaler, windows

def test_time_split_keeps_time_order_without_overlap():
    t = torch.arange(100.0).unsqueeze(-1)                       # value == time step
    train, val, test = time_split(t, val_fraction=0.15, test_fraction=0.2)
    assert (len(train), len(val), len(test)) == (65, 15, 20)
    assert float(train.max()) < float(val.min()) and float(val.max()) < float(test.min())
    assert torch.equal(torch.cat([train, val, test]), t)
    index = list(range(100))
    parts = time_split(index, 0.15, 0.2)
    assert parts.train[-1] == 64 and parts.val == list(range(65, 80))
    assert len(time_split(t, 0.0, 0.1).val) == 0


def test_time_split_bad_input():
    with pytest.raises(ValueError,
                       match=re.escape("val_fraction must be a number in [0, 1), got 1")):
        time_split(torch.zeros(10), val_fraction=1)
    with pytest.raises(ValueError, match="values has 2 steps: too few"):
        time_split(torch.zeros(2), 0.3, 0.3)


def test_windows_per_split_never_cross_the_boundary():
    t = torch.arange(50.0)
    train, val, test = time_split(t, 0.2, 0.2)
    boundary = len(train)
    x, y = windows(train, 5, 2)
    assert x.shape == (boundary - 6, 5, 1) and y.shape == (boundary - 6, 2, 1)
    assert float(torch.cat([x.flatten(), y.flatten()]).max()) < boundary
    assert torch.equal(y[:, 0, 0], x[:, -1, 0] + 1)              # targets follow inputs
    xv, yv = windows(val, 3, 1)
    assert float(xv.min()) >= boundary
    assert float(torch.cat([xv.flatten(), yv.flatten()]).max()) < boundary + len(val)
    xs, ys = windows(torch.arange(20.0).view(10, 2), 3, 2, stride=2)
    assert xs.shape == (3, 3, 2) and ys.shape == (3, 2, 2)
    assert xs[1, 0].tolist() == [4.0, 5.0]                     # window 1 starts at step 2


@pytest.mark.parametrize("call, exc, match", [
    (lambda: windows(torch.zeros(5, 1), 4, 2), ValueError, "values has 5 steps, fewer than"),
    (lambda: windows(torch.zeros(5, 1), 0, 1), ValueError, "input_length must be a positive"),
    (lambda: windows(torch.zeros(5, 1), 2, 1, stride=0), ValueError, "stride must be a positive"),
    (lambda: windows(torch.zeros(5, 1, 1), 2, 1), ValueError, "values must be a (T, F) or (T,)"),
    (lambda: windows([1.0, 2.0], 1, 1), TypeError, "values must be a tensor, got list"),
])
def test_windows_bad_input(call, exc, match):
    with pytest.raises(exc, match=re.escape(match)):
        call()


def test_scaler_fits_train_only_and_round_trips():
    g = torch.Generator().manual_seed(0)
    series = torch.cat([torch.randn(80, 2, generator=g),
                        torch.randn(20, 2, generator=g) * 10 + 100])  # a shifted future
    train, val, test = time_split(series, 0.1, 0.1)
    scaler = Scaler.fit(train)
    torch.testing.assert_close(scaler.mean, train.mean(0))
    torch.testing.assert_close(scaler.std, train.std(0, correction=0))
    scaled = scaler.transform(train)
    torch.testing.assert_close(scaled.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    assert float(scaler.transform(test).mean()) > 10             # the future is not seen
    torch.testing.assert_close(scaler.inverse_transform(scaler.transform(val)), val)
    restored = Scaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert restored == scaler
    constant = Scaler.fit(torch.ones(5, 1))
    assert constant.std.tolist() == [1.0] and constant.transform(torch.ones(2, 1)).abs().max() == 0


def test_scaler_bad_input():
    scaler = Scaler.fit(torch.randn(10, 3))
    with pytest.raises(ValueError, match=re.escape(
            "must have 3 features in its last dimension, got shape (4, 2)")):
        scaler.transform(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="train must hold finite values only"):
        Scaler.fit(torch.tensor([[1.0], [float("nan")]]))
    with pytest.raises(ValueError, match="std must be positive"):
        Scaler(mean=torch.zeros(2), std=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="keys 'mean' and 'std'"):
        Scaler.from_dict({"mean": [0.0]})


# ---------------------------------------------------------------- sentence pairs

def test_read_pairs(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("hello\tbonjour\n\nthank you\tmerci\tCC-BY attribution\n", encoding="utf-8")
    assert read_pairs(path) == [("hello", "bonjour"), ("thank you", "merci")]
    path.write_text("hello\tbonjour\nno tab here\n")
    with pytest.raises(ValueError, match=r"pairs\.tsv, line 2: expected source<TAB>target"):
        read_pairs(path)
    path.write_text("hello\t\n")
    with pytest.raises(ValueError, match="line 1: source and target must both be non-empty"):
        read_pairs(path)
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="holds no pairs"):
        read_pairs(path)


def test_date_pairs_targets_and_surface_forms():
    pairs = date_pairs(300, seed=0, min_year=1990, max_year=2020)
    assert pairs == date_pairs(300, seed=0, min_year=1990, max_year=2020)
    months = {datetime.date(2000, m, 1).strftime("%B"): m for m in range(1, 13)}
    ordinals = {"first": 1, "fifth": 5, "twenty-first": 21, "thirty-first": 31}
    seen = set()
    for source, target in pairs:
        d = datetime.date.fromisoformat(target)                 # valid ISO date
        assert 1990 <= d.year <= 2020 and target == d.isoformat()
        if m := re.fullmatch(r"the ([a-z-]+) of (\w+) (\d{4})", source):
            seen.add("words")
            assert months[m[2]] == d.month and int(m[3]) == d.year
            if m[1] in ordinals:
                assert ordinals[m[1]] == d.day
        elif m := re.fullmatch(r"(\w+) (\d+), (\d{4})", source):
            seen.add("us")
            assert datetime.date(int(m[3]), months[m[1]], int(m[2])) == d
        elif m := re.fullmatch(r"(\d+) (\w+) (\d{4})", source):
            seen.add("day_first")
            assert datetime.date(int(m[3]), months[m[2]], int(m[1])) == d
        elif m := re.fullmatch(r"(\d\d)/(\d\d)/(\d{4})", source):
            seen.add("numeric")
            assert datetime.datetime.strptime(source, "%d/%m/%Y").date() == d
        elif re.fullmatch(r"\w{3} \d+ \d{4}", source):
            seen.add("abbreviated")
            assert datetime.datetime.strptime(source, "%b %d %Y").date() == d
        else:
            seen.add("weekday")
            assert datetime.datetime.strptime(source, "%A, %d %B %Y").date() == d
    assert seen == set(DATE_FORMS)


def test_date_pairs_ranges():
    import datetime

    assert date_pairs(50, seed=4) == date_pairs(50, seed=4, range_fraction=0.0)
    pairs = date_pairs(200, seed=4, range_fraction=0.5)
    ranges = [(s, t) for s, t in pairs if s.startswith("from ")]
    assert 60 < len(ranges) < 140
    singles = {s: t for s, t in date_pairs(200, seed=4)}
    for (source, target), (plain, iso) in zip(pairs, singles.items()):
        assert target.split("/")[0] == iso  # the first date is the single one
    for source, target in ranges:
        a, b = (datetime.date.fromisoformat(x) for x in target.split("/"))
        assert a < b <= a + datetime.timedelta(days=365) and " to " in source
    with pytest.raises(ValueError, match="range_fraction must be a number in"):
        date_pairs(3, range_fraction=-0.1)


def test_date_pairs_examples_and_bad_input():
    d = datetime.date(2019, 3, 5)
    assert [DATE_FORMS[f](d) for f in ("words", "us", "day_first", "numeric")] == \
        ["the fifth of March 2019", "March 5, 2019", "5 March 2019", "05/03/2019"]
    assert {s.split(" of ")[0] for s, _ in date_pairs(20, forms=["words"])} <= \
        {f"the {w}" for w in ["first", "second", "third", "fourth", "fifth", "sixth",
                               "seventh", "eighth", "ninth", "tenth", "eleventh",
                               "twelfth", "thirteenth", "fourteenth", "fifteenth",
                               "sixteenth", "seventeenth", "eighteenth", "nineteenth",
                               "twentieth", "twenty-first", "twenty-second",
                               "twenty-third", "twenty-fourth", "twenty-fifth",
                               "twenty-sixth", "twenty-seventh", "twenty-eighth",
                               "twenty-ninth", "thirtieth", "thirty-first"]}
    with pytest.raises(ValueError, match="forms must be a non-empty list of names"):
        date_pairs(3, forms=["roman"])
    with pytest.raises(ValueError, match=re.escape(
            "max_year must lie in [min_year, 9999] = [2000, 9999], got 1999")):
        date_pairs(3, min_year=2000, max_year=1999)


# ---------------------------------------------------------------- tagging

def test_read_conll(tmp_path):
    path = tmp_path / "tags.conll"
    path.write_text("-DOCSTART- O\n\nThe\tDET\ncat\tNOUN\n\n\nsat   VERB\n.\tPUNCT\n")
    assert read_conll(path) == [(["The", "cat"], ["DET", "NOUN"]),
                                (["sat", "."], ["VERB", "PUNCT"])]
    path.write_text("The\tDET\ncat\n")
    with pytest.raises(ValueError, match=r"tags\.conll, line 2: expected two columns"):
        read_conll(path)
    path.write_text("The DET extra\n")
    with pytest.raises(ValueError, match="line 1: expected two columns"):
        read_conll(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match="holds no sentences"):
        read_conll(path)


def test_synthetic_tagging_is_deterministic_and_needs_context():
    data = synthetic_tagging(300, seed=0)
    assert data == synthetic_tagging(300, seed=0) and data != synthetic_tagging(300, seed=1)
    tag_of: dict[str, set] = {}
    for tokens, tags in data:
        assert len(tokens) == len(tags) and set(tags) <= set(TAGS)
        assert tags[0] == "DET" and tags[-1] == "PUNCT" and tags.count("VERB") == 1
        # the verb comes right after the first noun phrase ends
        assert tags[tags.index("NOUN") + 1] == "VERB"
        for token, tag in zip(tokens, tags):
            tag_of.setdefault(token, set()).add(tag)
    ambiguous = {t for t, tags in tag_of.items() if len(tags) > 1}
    assert ambiguous and all(tag_of[t] == {"NOUN", "VERB"} for t in ambiguous)


def test_synthetic_tagging_modifiers_and_ambiguity():
    plain = synthetic_tagging(300, seed=0)
    hard = synthetic_tagging(300, seed=0, max_modifiers=2, ambiguity=0.8)
    ambiguous = {"run", "watch", "fly", "park", "book"}

    def share(data):
        words = [w for tokens, tags in data for w, t in zip(tokens, tags) if t in ("NOUN", "VERB")]
        return sum(w in ambiguous for w in words) / len(words)
    assert share(plain) < 0.6 < 0.8 < share(hard)
    for tokens, tags in hard:
        verb = tags.index("VERB")
        # between the subject and the verb: only prepositional phrases, each ending in a noun
        assert tags[verb - 1] == "NOUN" and "VERB" not in tags[:verb]
        assert tags[:verb].count("PREP") == tags[:verb].count("DET") - 1 <= 2
    with pytest.raises(ValueError, match="ambiguity must be a number in"):
        synthetic_tagging(3, ambiguity=1.5)
    with_roles = synthetic_tagging(300, seed=0, max_modifiers=2, ambiguity=0.8, roles=True)
    for (tokens, tags), (same_tokens, plain_tags) in zip(with_roles, hard):
        assert tokens == same_tokens
        verb = tags.index("VERB")
        for i, (tag, plain) in enumerate(zip(tags, plain_tags)):
            if plain != "NOUN":
                assert tag == plain
            elif i < verb:  # the first noun is the subject's, the others follow a PREP
                assert tag == ("NOUN-SUBJ" if "NOUN" not in plain_tags[:i] else "NOUN-PREP")
            else:
                assert tag == ("NOUN-PREP" if "PREP" in plain_tags[verb:i] else "NOUN-OBJ")


def test_synthetic_tagging_agreement_across_attractors_and_embedded_clauses():
    data = synthetic_tagging(400, seed=0, max_modifiers=2, ambiguity=0.8, roles=True,
                             agreement=True, max_embedding=3)
    assert data == synthetic_tagging(400, seed=0, max_modifiers=2, ambiguity=0.8, roles=True,
                                     agreement=True, max_embedding=3)
    plural_det = {"some", "these", "many"}
    depths, attractors = set(), 0
    for tokens, tags in data:
        # read the sentence with a stack: each subject's number waits for its verb
        stack, subject_next = [], True
        for i, (token, tag) in enumerate(zip(tokens, tags)):
            if tag == "NOUN-SUBJ":
                assert subject_next
                det = max(j for j in range(i) if tags[j] == "DET")
                plural = token.endswith("s")
                assert plural == (tokens[det] in plural_det) or tokens[det] == "the"
                stack.append(plural)
                subject_next = False
            elif tag == "COMP":
                assert token == "that"
                subject_next = True
            elif tag.startswith("VERB"):
                assert tag == ("VERB-PL" if stack.pop() else "VERB-SG")
            elif tag == "NOUN-PREP" and stack:
                attractors += token.endswith("s") != stack[-1]
        assert not stack  # every subject got its verb
        depths.add(tags.count("COMP"))
    assert depths == {0, 1, 2, 3} and attractors > 50
    # without agreement the verbs are VERB, and the same seed draws the same sentences
    plain = synthetic_tagging(50, seed=0, max_modifiers=2, ambiguity=0.8)
    assert all("VERB" in tags for _, tags in plain)
    assert plain == synthetic_tagging(50, seed=0, max_modifiers=2, ambiguity=0.8,
                                      agreement=False, max_embedding=0)


def test_synthetic_tagging_bad_input():
    with pytest.raises(ValueError, match="max_adjectives must be an int >= 0, got -1"):
        synthetic_tagging(3, max_adjectives=-1)
    with pytest.raises(ValueError, match="max_embedding must be an int in"):
        synthetic_tagging(3, max_embedding=9)
    with pytest.raises(TypeError, match="agreement must be a bool, got 1"):
        synthetic_tagging(3, agreement=1)


def test_data_imports_only_itself_from_rnnkit():
    import rnnkit.data
    # The layout's arrows point down: data may not use models, train or the CLI (only the
    # leaf utilities rnnkit._files and rnnkit._checks, which import nothing of rnnkit).
    def imported(file):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom):
                yield node.module or ""
            elif isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)

    leaves = {"rnnkit._files", "rnnkit._checks"}
    root = pathlib.Path(rnnkit.__file__).parent
    for leaf in leaves:
        assert not [n for n in imported(root / f"{leaf.split('.')[1]}.py")
                    if n.split(".")[0] == "rnnkit"], f"{leaf} must import nothing of rnnkit"
    for file in pathlib.Path(rnnkit.data.__file__).parent.glob("*.py"):
        for name in imported(file):
            assert name.split(".")[0] != "rnnkit" or name.startswith("rnnkit.data") \
                or name in leaves, f"{file.name} imports {name}"


def test_sentiment_sentences_labels_follow_the_last_clause():
    from rnnkit.data import sentiment_sentences

    pairs = sentiment_sentences(300, seed=1)
    assert pairs == sentiment_sentences(300, seed=1)
    positive = {"good", "great", "wonderful", "fine", "excellent", "lovely", "pleasant", "superb"}
    for text, label in pairs:
        last = text.split(" , but ")[-1].split(" , and ")[0].split()  # the last verdict
        polarity = last[-1] in positive
        assert label == int(polarity != ("not" in last))
    assert any(" , but " in t for t, _ in pairs) and 0.3 < sum(l for _, l in pairs) / 300 < 0.7
    assert max(t.count(" , but ") for t, _ in pairs) == 2  # three judging clauses at most
    assert any(t.split(" , but ")[-1].count(" , and ") == 2 for t, _ in pairs)
    plain = sentiment_sentences(50, seed=1, max_clauses=1, max_asides=0)
    assert not any(" , " in t for t, _ in plain)
    with_aspects = sentiment_sentences(300, seed=1, aspects=True)
    for (text, label), (_, polarity) in zip(with_aspects, pairs):
        last = text.split(" , but ")[-1].split(" , and ")[0]
        noun = last.removeprefix("the ").split(" was ")[0]
        assert label == f"{('negative', 'positive')[polarity]} {noun}"
    assert len({label for _, label in with_aspects}) == 18


def test_vocabulary_from_token_lists_keeps_tokens_whole():
    from rnnkit.data import Vocabulary

    v = Vocabulary.from_token_lists([["don't", "stop"], ["stop", "U.S."]])
    assert v.tokens[4] == "stop" and v.lookup(["don't", "U.S.", "new"]) == [
        v.tokens.index("don't"), v.tokens.index("U.S."), 1]
