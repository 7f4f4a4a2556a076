import numpy as np

from mt.data import Batcher, pad_batch, pad_sources, unigram_log_probs
from mt.tokenizer import BOS, EOS, PAD


def corpus(n=500, seed=0):
    rng = np.random.default_rng(seed)
    src = [rng.integers(4, 50, rng.integers(1, 30)).astype(np.int32) for _ in range(n)]
    tgt = [rng.integers(4, 50, rng.integers(1, 30)).astype(np.int32) for _ in range(n)]
    return src, tgt


def test_pad_batch_adds_bos_and_eos():
    src, tgt_in, tgt_out = pad_batch([np.array([5, 6]), np.array([7])], [np.array([8]), np.array([9, 10])])
    assert src.tolist() == [[5, 6], [7, 0]]
    assert tgt_in.tolist() == [[BOS, 8, 0], [BOS, 9, 10]]
    assert tgt_out.tolist() == [[8, EOS, 0], [9, 10, EOS]]
    assert pad_sources([[], [4, 5, 6]], multiple=4).shape == (2, 4)


def test_every_pair_once_per_epoch_within_the_budget():
    src, tgt = corpus()
    batcher = Batcher(src, tgt, batch_tokens=200, seed=3)
    batches = batcher.epoch_batches(0)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(src)))
    for b in batches:
        arrays = batcher.make_batch(b)
        assert len(b) == 1 or arrays[1].size <= 200
        assert len(b) == 1 or arrays[0].size <= 400


def test_batches_are_length_sorted_so_padding_is_small():
    src, tgt = corpus(2000)
    batcher = Batcher(src, tgt, batch_tokens=300, seed=1)
    real = padded = 0
    for b in batcher.epoch_batches(0):
        _, tgt_in, _ = batcher.make_batch(b)
        real += int((tgt_in != 0).sum())
        padded += tgt_in.size
    assert real / padded > 0.9


def test_epochs_are_deterministic_and_differ():
    src, tgt = corpus()
    a, b = Batcher(src, tgt, 200, seed=5), Batcher(src, tgt, 200, seed=5)
    assert [x.tolist() for x in a.epoch_batches(2)] == [x.tolist() for x in b.epoch_batches(2)]
    assert [x.tolist() for x in a.epoch_batches(0)] != [x.tolist() for x in a.epoch_batches(1)]


def test_resume_position_continues_the_same_stream():
    src, tgt = corpus(200)
    batcher = Batcher(src, tgt, 150, seed=2)
    full = [(e, n, batcher.make_batch(i)[0].tolist()) for e, n, i in batcher.positions(max_epochs=2)]
    epoch, number = full[len(full) // 2][:2]
    tail = [(e, n, batcher.make_batch(i)[0].tolist()) for e, n, i in batcher.positions(epoch, number, 2)]
    assert tail == full[len(full) // 2:]


def test_max_len_filters_long_pairs():
    src, tgt = corpus()
    batcher = Batcher(src, tgt, 200, max_len=10)
    kept = np.concatenate(batcher.epoch_batches(0))
    assert all(len(src[i]) <= 10 and len(tgt[i]) <= 10 for i in kept)
    assert len(kept) == sum(len(s) <= 10 and len(t) <= 10 for s, t in zip(src, tgt))


def test_unigram_log_probs_follow_target_frequencies():
    tgt = [np.array([5, 5, 6]), np.array([5, 7])]
    logp = unigram_log_probs(tgt, 10)
    assert logp.shape == (10,)
    assert np.isclose(np.exp(logp).sum(), 1.0)
    # counts + 1: id 5 seen 3 times, EOS twice (one per sequence), 6 and 7 once, the rest never
    assert logp[5] > logp[EOS] > logp[6] == logp[7] > logp[8]
    assert np.isclose(logp[5] - logp[8], np.log(4.0))
    assert logp[PAD] == logp[BOS] == logp.min()


def test_lengths_rounded_to_a_multiple_within_the_budget():
    src, tgt = corpus()
    batcher = Batcher(src, tgt, batch_tokens=200, seed=4, multiple=8)
    shapes = set()
    for indices in batcher.epoch_batches(0):
        s, t_in, t_out = batcher.make_batch(indices)
        assert s.shape[1] % 8 == 0 and t_in.shape[1] % 8 == 0 and t_in.shape == t_out.shape
        assert s.shape[1] - 8 < max(len(src[i]) for i in indices) <= s.shape[1]
        assert t_in.shape[1] - 8 < max(len(tgt[i]) for i in indices) + 1 <= t_in.shape[1]
        assert len(indices) == 1 or t_in.size <= 200
        shapes.add(t_in.shape[1])
    assert len(shapes) <= 4  # target lengths 2..30 fall in 4 multiples of 8
    # the padding holds no tokens: the same pairs as without rounding
    plain = Batcher(src, tgt, batch_tokens=200, seed=4)
    s, t_in, t_out = batcher.make_batch([0, 1])
    s1, t_in1, t_out1 = plain.make_batch([0, 1])
    assert (s[:, :s1.shape[1]] == s1).all() and not s[:, s1.shape[1]:].any()
    assert (t_out[:, :t_out1.shape[1]] == t_out1).all() and not t_out[:, t_out1.shape[1]:].any()


def test_batches_of_one_rounded_target_length_hold_sources_of_similar_lengths():
    # source and target lengths independent of each other: sorted by exact target length first, a batch
    # would hold sources of every length (about half of its source positions padding)
    rng = np.random.default_rng(0)
    src = [list(range(4, 4 + n)) for n in rng.integers(1, 61, 4000)]
    tgt = [list(range(4, 4 + n)) for n in rng.integers(1, 61, 4000)]
    batcher = Batcher(src, tgt, 800, multiple=8)
    real = padded = 0
    for indices in batcher.epoch_batches(0):
        batch_src, tgt_in, _ = batcher.make_batch(indices)
        assert tgt_in.shape[0] * tgt_in.shape[1] <= 800 or len(indices) == 1
        real += batcher.src_len[indices].sum()
        padded += batch_src.size
    assert real / padded > 0.7
