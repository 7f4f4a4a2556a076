"""The search strategies against a fake decoder step with known logits, and against a tiny real model."""

import itertools
from typing import NamedTuple

import numpy as np
import pytest
import tensorflow as tf

from mt.config import ModelConfig
from mt.model import build_model
from mt.search import BeamSearch, GreedySearch, SamplingSearch, top_k_rows, uniform_noise
from mt.tokenizer import BOS, EOS, PAD


class FakeStep:
    """A decoder whose logits depend only on (position, previous token): a table [T, V, V].

    The state holds the position of every row; the step's attention is a known function of position and
    previous token, so that every search can be checked against sums over the table.
    """

    def __init__(self, table, sources=3, seed=0):
        self.table = np.asarray(table, np.float32)
        rng = np.random.default_rng(seed)
        attn = rng.normal(size=self.table.shape[:2] + (sources,)).astype(np.float32)
        self.attn = np.exp(attn) / np.exp(attn).sum(-1, keepdims=True)
        self.calls = 0

    @property
    def log_probs(self):
        return self.table - np.log(np.exp(self.table).sum(-1, keepdims=True))

    def initial_state(self, batch):
        return {"t": tf.zeros([batch], tf.int32)}

    def source_mask(self, batch):
        return tf.ones([batch, self.attn.shape[-1]], tf.bool)

    def __call__(self, ids, state):
        self.calls += 1
        t = tf.minimum(state["t"], self.table.shape[0] - 1)
        where = tf.stack([t, ids], 1)
        return tf.gather_nd(self.table, where), {"t": state["t"] + 1}, tf.gather_nd(self.attn, where)

    def score(self, seq):
        """Model log-probability of a token sequence, and the attention each source position received."""
        prev, total, received = BOS, 0.0, np.zeros(self.attn.shape[-1])
        for t, token in enumerate(seq):
            total += self.log_probs[t, prev, token]
            received += self.attn[t, prev]
            prev = token
        return total, received

    def all_outputs(self, limit):
        """Every output the searches may produce: ending in EOS, or cut at the length limit."""
        tokens = [v for v in range(self.table.shape[-1]) if v != EOS]
        for length in range(1, limit + 1):
            for prefix in itertools.product(tokens, repeat=length - 1):
                yield list(prefix) + [EOS]
                if length == limit:
                    yield from (list(prefix) + [v] for v in tokens)


def gnmt_rank(fake, seq, alpha, beta):
    score, received = fake.score(seq)
    cp = beta * np.log(np.clip(received, 1e-9, 1.0)).sum()
    return score / ((5.0 + len(seq)) / 6.0) ** alpha + cp


def random_fake(vocab=5, steps=10, scale=2.0, seed=0, eos_bias=0.0):
    table = np.random.default_rng(seed).normal(size=(steps, vocab, vocab)) * scale
    table[..., EOS] += eos_bias
    return FakeStep(table, seed=seed)


def run(search, fake, max_lengths):
    batch = len(max_lengths)
    result = search(fake, fake.initial_state(batch), tf.constant(max_lengths, tf.int32),
                    source_mask=fake.source_mask(batch))
    return {key: (None if value is None else value.numpy()) for key, value in result._asdict().items()}


def greedy_by_hand(fake, limit):
    prev, seq = BOS, []
    for t in range(limit):
        prev = int(np.argmax(fake.log_probs[t, prev]))
        seq.append(prev)
        if prev == EOS:
            break
    return seq


# -- greedy -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_greedy_follows_the_argmax_and_stops_at_each_sentences_limit(seed):
    fake = random_fake(seed=seed)
    limits = [8, 2, 5]
    out = run(GreedySearch(), fake, limits)
    for b, limit in enumerate(limits):
        expected = greedy_by_hand(fake, limit)
        length = out["lengths"][b, 0]
        assert out["ids"][b, 0, :length].tolist() == expected
        assert (out["ids"][b, 0, length:] == PAD).all()
        assert out["scores"][b, 0] == pytest.approx(fake.score(expected)[0], abs=1e-5)


def test_a_sentence_cut_at_its_limit_emits_padding_while_others_go_on():
    fake = random_fake(seed=1, eos_bias=-30.0)  # no EOS: both sentences run to their limits
    out = run(GreedySearch(), fake, [2, 6])
    assert out["ids"].shape == (2, 1, 6) and out["lengths"][:, 0].tolist() == [2, 6]
    assert (out["ids"][0, 0, 2:] == PAD).all() and EOS not in out["ids"]
    np.testing.assert_allclose(out["scores"][:, 0], [fake.score(greedy_by_hand(fake, n))[0] for n in (2, 6)],
                               atol=1e-5)


def test_the_loop_ends_when_every_sentence_has_ended():
    fake = random_fake(seed=1, eos_bias=-30.0)
    fake.table[0, BOS, EOS] = 30.0
    out = run(GreedySearch(), fake, [6, 6])
    assert out["ids"].shape == (2, 1, 1) and (out["ids"][:, 0, 0] == EOS).all()
    assert out["scores"][0, 0] == pytest.approx(fake.log_probs[0, BOS, EOS], abs=1e-6)


# -- beam ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_beam_of_one_is_greedy(seed):
    fake = random_fake(seed=seed, eos_bias=1.0)
    limits = [7, 3, 9, 1]
    greedy = run(GreedySearch(), fake, limits)
    beam = run(BeamSearch(beam_size=1, length_penalty=0.0, stop="exact"), fake, limits)
    np.testing.assert_array_equal(beam["ids"], greedy["ids"])
    np.testing.assert_array_equal(beam["scores"], greedy["scores"])


@pytest.mark.parametrize("alpha, beta", [(0.0, 0.0), (0.6, 0.0), (1.0, 0.0), (0.0, 0.3), (0.6, 0.2)])
@pytest.mark.parametrize("seed", range(3))
def test_a_beam_wider_than_the_search_space_is_exact(alpha, beta, seed):
    """Nothing is pruned, so the n-best list is the brute-force n-best: the early stop lost nothing."""
    fake = random_fake(vocab=4, seed=seed, eos_bias=0.5)
    limit = 4
    outputs = sorted(fake.all_outputs(limit), key=lambda s: -gnmt_rank(fake, s, alpha, beta))
    search = BeamSearch(beam_size=len(outputs), length_penalty=alpha, coverage_penalty=beta, n_best=5,
                        stop="exact")
    out = run(search, fake, [limit])
    found = [out["ids"][0, n, :out["lengths"][0, n]].tolist() for n in range(5)]
    expected_ranks = [gnmt_rank(fake, s, alpha, beta) for s in outputs[:5]]
    np.testing.assert_allclose(out["ranks"][0], expected_ranks, atol=1e-4)
    assert found[0] == outputs[0]
    for seq, score, rank in zip(found, out["scores"][0], out["ranks"][0]):
        assert score == pytest.approx(fake.score(seq)[0], abs=1e-4)
        assert rank == pytest.approx(gnmt_rank(fake, seq, alpha, beta), abs=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
@pytest.mark.parametrize("seed", range(5))
def test_n_best_lists_are_sorted_distinct_and_well_formed(alpha, seed):
    fake = random_fake(vocab=6, seed=seed, eos_bias=0.5)
    limits = [6, 3, 8]
    out = run(BeamSearch(beam_size=4, length_penalty=alpha, n_best=4, stop="exact"), fake, limits)
    best = run(BeamSearch(beam_size=4, length_penalty=alpha, stop="exact"), fake, limits)
    for b, limit in enumerate(limits):
        lengths, ranks = out["lengths"][b], out["ranks"][b]
        seqs = [tuple(out["ids"][b, n, :lengths[n]]) for n in range(4)]
        assert len(set(seqs)) == 4
        assert (np.diff(ranks) <= 0).all()
        np.testing.assert_array_equal(best["ids"][b, 0], out["ids"][b, 0, :best["ids"].shape[2]])
        for n, seq in enumerate(seqs):
            # finished hypotheses are never extended: EOS only at the end, nothing after it, and the
            # score is the model's log-probability of exactly these tokens
            assert EOS not in seq[:-1] and (out["ids"][b, n, lengths[n]:] == PAD).all()
            assert seq[-1] == EOS or len(seq) == limit
            assert out["scores"][b, n] == pytest.approx(fake.score(seq)[0], abs=1e-4)


def test_beam_stops_a_sentence_when_no_live_hypothesis_can_win():
    fake = random_fake(vocab=5, steps=50, seed=3)
    fake.table[0, BOS, EOS] = 20.0  # an almost certain one-token answer
    search = BeamSearch(beam_size=3, length_penalty=0.0, stop="exact")
    out = run(search, fake, [40])
    assert out["ids"].shape[2] == 1  # after one step, every live hypothesis is far below the finished one
    assert out["ids"][0, 0, 0] == EOS and fake.calls == 1


@pytest.mark.parametrize("seed", range(3))
def test_early_stop_is_exact_without_length_penalty_and_never_later_with_it(seed):
    calls = {}
    results = {}
    for alpha in (0.0, 1.0):
        for stop in ("early", "exact"):
            fake = random_fake(vocab=5, steps=12, seed=seed, eos_bias=0.5)
            results[alpha, stop] = run(BeamSearch(3, alpha, n_best=2, stop=stop), fake, [12, 7, 10])
            calls[alpha, stop] = fake.calls
    for name in ("ids", "scores", "ranks"):
        np.testing.assert_array_equal(results[0.0, "early"][name], results[0.0, "exact"][name])
    assert calls[0.0, "early"] == calls[0.0, "exact"]
    # the beams evolve alike until early stops a sentence; exact may still find better-ranked endings
    assert calls[1.0, "early"] <= calls[1.0, "exact"]
    assert (results[1.0, "early"]["ranks"][:, 0] <= results[1.0, "exact"]["ranks"][:, 0] + 1e-6).all()


def test_early_stop_ends_sentences_sooner_under_a_length_penalty():
    fake = random_fake(vocab=5, steps=30, seed=2)
    fake.table[0, BOS, EOS] = 2.0  # a likely one-token answer; long ones could still outrank it at lp(30)
    steps = {}
    for stop in ("early", "exact"):
        fake.calls = 0
        run(BeamSearch(3, 1.0, stop=stop), fake, [30])
        steps[stop] = fake.calls
    assert steps["early"] < steps["exact"]


def test_beam_finds_the_better_sequence_greedy_misses():
    table = np.full((4, 5, 5), -5.0, np.float32)
    table[0, BOS, 1], table[0, BOS, 2] = 1.0, 0.9  # greedy takes 1 ...
    table[1, 1, :] = 0.0  # ... after which everything is equally unlikely
    table[1, 2, EOS] = 5.0  # while 2 is followed by EOS almost surely
    fake = FakeStep(table)
    greedy = run(GreedySearch(), fake, [4])
    beam = run(BeamSearch(beam_size=2, length_penalty=0.0, stop="exact"), fake, [4])
    assert beam["ids"][0, 0, :2].tolist() == [2, EOS]
    assert beam["scores"][0, 0] > greedy["scores"][0, 0] + 1.0


def test_attention_of_the_chosen_hypotheses():
    fake = random_fake(vocab=5, seed=2, eos_bias=0.5)
    for search in (GreedySearch(with_attention=True), BeamSearch(3, 0.6, n_best=2, with_attention=True,
                                                                 stop="exact")):
        out = run(search, fake, [6, 4])
        n = out["ids"].shape[1]
        assert out["attention"].shape == out["ids"].shape + (3,)
        for b, k in itertools.product(range(2), range(n)):
            seq = out["ids"][b, k, :out["lengths"][b, k]].tolist()
            prev = [BOS] + seq[:-1]
            expected = np.stack([fake.attn[t, p] for t, p in enumerate(prev)])
            np.testing.assert_allclose(out["attention"][b, k, :len(seq)], expected, atol=1e-6)
            assert not out["attention"][b, k, len(seq):].any()


@pytest.mark.parametrize("make", [lambda **kw: GreedySearch(**kw), lambda **kw: SamplingSearch(top_k=3, seed=4, **kw),
                                  lambda **kw: BeamSearch(3, 0.6, n_best=3, stop="exact", **kw)],
                         ids=["greedy", "sample", "beam"])
def test_the_most_attended_source_positions_of_the_chosen_hypotheses(make):
    """with_alignment records, for every output token, the real source position its step attended to
    most: the argmax of the attention with_attention records, padding left out, the same hypotheses found."""
    fake = random_fake(vocab=6, seed=3, eos_bias=0.5)
    fake.attn[..., 2] += 1.0  # the last source position, padding in the second sentence, gets the most weight
    limits, batch = [7, 5], 2
    mask = tf.constant([[True, True, True], [True, True, False]])
    both = make(with_attention=True, with_alignment=True)(fake, fake.initial_state(batch), limits, source_mask=mask)
    plain = make()(fake, fake.initial_state(batch), limits, source_mask=mask)
    alone = make(with_alignment=True)(fake, fake.initial_state(batch), limits, source_mask=mask)
    assert plain.sources is None and alone.attention is None and alone.sources.dtype == tf.int32
    np.testing.assert_array_equal(alone.ids.numpy(), plain.ids.numpy())
    np.testing.assert_array_equal(alone.sources.numpy(), both.sources.numpy())
    attention, sources, lengths = both.attention.numpy(), both.sources.numpy(), both.lengths.numpy()
    for b, k in itertools.product(range(batch), range(sources.shape[1])):
        n = lengths[b, k]
        real = attention[b, k, :n, :mask.numpy()[b].sum()]
        assert sources[b, k, :n].tolist() == np.argmax(real, -1).tolist()
    assert (sources[0] == 2).any() and not (sources[1] == 2).any()


def test_attention_is_zero_without_attention_in_the_state():
    def step(ids, state):
        return tf.one_hot(tf.fill(tf.shape(ids), EOS), 6) * 5.0, state, None

    out = GreedySearch(with_attention=True)(step, {"h": tf.zeros([2, 4])}, [5, 5], tf.ones([2, 7], tf.bool))
    assert out.attention.shape == (2, 1, 1, 7) and not out.attention.numpy().any()


def test_beam_runs_inside_a_compiled_function_and_matches_eager():
    fake = random_fake(vocab=6, seed=4, eos_bias=0.5)
    search = BeamSearch(beam_size=3, length_penalty=0.6, n_best=3, stop="exact")
    eager = run(search, fake, [6, 2, 5])
    compiled = tf.function(lambda state, limits: search(fake, state, limits, fake.source_mask(3)))
    graph = compiled(fake.initial_state(3), tf.constant([6, 2, 5]))
    np.testing.assert_array_equal(graph.ids.numpy(), eager["ids"])
    np.testing.assert_allclose(graph.ranks.numpy(), eager["ranks"], rtol=1e-6)


@pytest.mark.parametrize("kind", ["greedy", "sampling", "beam"])
def test_a_search_compiled_for_a_fixed_batch_shape_matches_eager_as_sentences_leave(kind):
    """Traced for a batch of known size, the loop still loses the rows of finished sentences: the graph
    optimizer must not take the number of sentences left (or the rows of their source mask) for the
    batch size it started with."""
    fake = random_fake(vocab=6, seed=4, eos_bias=-30.0)
    fake.table[4, :, EOS] = 30.0  # every hypothesis that gets to the fifth token ends there
    search = {"greedy": lambda: GreedySearch(with_attention=True),
              "sampling": lambda: SamplingSearch(top_k=3, seed=5, with_attention=True),
              "beam": lambda: BeamSearch(3, 0.6, n_best=2, with_attention=True, stop="exact")}[kind]()
    limits = tf.constant([7, 2, 5, 4])
    mask = tf.constant([[True, True, True], [True, True, False], [True, False, False], [True, True, True]])
    eager = search(fake, fake.initial_state(4), limits, source_mask=mask)
    compiled = tf.function(lambda state, limits, mask: search(fake, state, limits, source_mask=mask))
    graph = compiled(fake.initial_state(4), limits, mask)
    assert eager.lengths.numpy()[:, 0].tolist() == [5, 2, 5, 4]  # ended by EOS or by their limit
    for name in ("ids", "lengths", "scores", "ranks", "attention"):
        got, expected = getattr(graph, name).numpy(), getattr(eager, name).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("kind", ["greedy", "sampling", "beam"])
def test_finished_sentences_waiting_in_the_batch_keep_their_results(kind, monkeypatch):
    """A finished sentence stays in the batch until DROP_FRACTION of it has finished, and its rows go on
    being computed: that must not change its hypotheses, whenever it leaves (fraction 0: at once; 1: not
    before the loop ends), in eager mode or compiled."""
    import mt.search

    limits = tf.constant([9, 2, 6, 1, 8, 4, 7])
    results = {}
    for fraction in (0.0, 0.5, 1.0):
        monkeypatch.setattr(mt.search, "DROP_FRACTION", fraction)
        fake = random_fake(vocab=6, steps=10, seed=5, eos_bias=-2.0)
        search = {"greedy": lambda: GreedySearch(with_attention=True),
                  "sampling": lambda: SamplingSearch(top_k=3, seed=5, with_attention=True),
                  "beam": lambda: BeamSearch(3, 0.6, n_best=2, with_attention=True, stop="exact")}[kind]()
        mask = fake.source_mask(7)
        results[fraction] = search(fake, fake.initial_state(7), limits, mask)
        compiled = tf.function(lambda state, limits: search(fake, state, limits, mask))(fake.initial_state(7),
                                                                                        limits)
        results[fraction, "compiled"] = compiled
    lengths = results[0.0].lengths.numpy()[:, 0]
    assert len(set(lengths.tolist())) > 3  # sentences finish at different steps
    for key, result in results.items():
        for name in ("ids", "lengths", "scores", "ranks", "attention"):
            np.testing.assert_allclose(getattr(result, name).numpy(), getattr(results[0.0], name).numpy(),
                                       atol=1e-6, err_msg=f"{key} {name}")


def test_greedy_without_scores_finds_the_same_tokens():
    fake = random_fake(seed=3, eos_bias=0.5)
    limits = [8, 3, 6]
    scored, unscored = run(GreedySearch(), fake, limits), run(GreedySearch(scores=False), fake, limits)
    np.testing.assert_array_equal(unscored["ids"], scored["ids"])
    np.testing.assert_array_equal(unscored["lengths"], scored["lengths"])
    assert (scored["scores"] < 0).all() and (unscored["scores"] == 0).all() and (unscored["ranks"] == 0).all()


@pytest.mark.parametrize("width", [1000, 1003, 8000])
def test_top_k_rows_is_top_k_ties_included(width):
    rng = np.random.default_rng(width)
    for x in (rng.normal(size=(2, 3, width)) * 3, np.round(rng.normal(size=(2, 3, width)))):  # round: ties
        x = tf.constant(x, tf.float32)
        for k in (1, 10):
            expected, got = tf.math.top_k(x, k), top_k_rows(x, k)
            np.testing.assert_array_equal(got[0].numpy(), expected.values.numpy())
            np.testing.assert_array_equal(got[1].numpy(), expected.indices.numpy())


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        BeamSearch(stop="sometime")
    for bad in ({"beam_size": 0}, {"beam_size": 2, "n_best": 3}, {"length_penalty": -1.0}):
        with pytest.raises(ValueError):
            BeamSearch(**{"beam_size": 2, **bad})
    for bad in ({"temperature": 0.0}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            SamplingSearch(**bad)


# -- sampling -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_sampling_with_top_k_1_is_greedy(seed):
    fake = random_fake(seed=seed)
    limits = [8, 3, 6]
    greedy = run(GreedySearch(), fake, limits)
    sampled = run(SamplingSearch(temperature=1.7, top_k=1, top_p=0.5, seed=seed), fake, limits)
    np.testing.assert_array_equal(sampled["ids"], greedy["ids"])
    np.testing.assert_array_equal(sampled["scores"], greedy["scores"])


def test_same_seed_same_samples_other_seed_other_samples():
    fake = random_fake(vocab=8, seed=0, scale=0.5)
    limits = [8] * 16

    def sample(seed):
        return run(SamplingSearch(temperature=1.0, seed=seed), fake, limits)["ids"]

    first = sample(7)
    np.testing.assert_array_equal(first, sample(7))
    assert not np.array_equal(first, sample(8))
    assert len({tuple(row) for row in first[:, 0]}) > 8  # rows draw different numbers


def test_a_sentences_sample_depends_on_its_row_id_not_its_batch():
    fake = random_fake(vocab=8, seed=0, scale=0.5)
    search = SamplingSearch(top_p=0.95, seed=3)
    alone = search(fake, fake.initial_state(1), [8], row_ids=[11]).ids.numpy()
    batch = search(fake, fake.initial_state(3), [8, 8, 8], row_ids=[4, 11, 5]).ids.numpy()
    steps = alone.shape[2]  # the batch ran at least as long: its sentence 11 is this one
    np.testing.assert_array_equal(batch[1, :, :steps], alone[0])
    assert (batch[1, :, steps:] == PAD).all()


def first_token_frequencies(search, fake, rows, vocab):
    out = search(fake, fake.initial_state(rows), tf.fill([rows], 1))
    return np.bincount(out.ids.numpy()[:, 0, 0], minlength=vocab) / rows


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.5, 0, 1.0), (2.0, 3, 1.0),
                                                       (1.0, 0, 0.7), (1.3, 4, 0.8)])
def test_sampling_follows_the_filtered_distribution(temperature, top_k, top_p):
    vocab, rows = 6, 6000
    logits = np.array([2.0, 1.5, 1.0, 0.3, -0.5, 0.8], np.float32)
    fake = FakeStep(np.tile(logits, (2, vocab, 1)))
    logp = fake.log_probs[0, BOS] / temperature
    order = np.argsort(-logp, kind="stable")
    keep = order[:top_k] if top_k else order
    probs = np.exp(logp[keep]) / np.exp(logp[keep]).sum()
    keep = keep[(np.cumsum(probs) - probs) < top_p]
    expected = np.zeros(vocab)
    expected[keep] = np.exp(logp[keep]) / np.exp(logp[keep]).sum()
    freq = first_token_frequencies(SamplingSearch(temperature, top_k, top_p, seed=5), fake, rows, vocab)
    assert (freq[expected == 0] == 0).all()
    np.testing.assert_allclose(freq, expected, atol=4 * np.sqrt(0.25 / rows))


def test_uniform_noise_is_uniform_and_a_pure_function():
    noise = uniform_noise(9, tf.range(200), 3, 500).numpy()
    assert 0.0 < noise.min() and noise.max() < 1.0
    assert abs(noise.mean() - 0.5) < 0.01 and abs(noise.var() - 1 / 12) < 0.005
    np.testing.assert_array_equal(noise[17:18], uniform_noise(9, tf.constant([17]), 3, 500).numpy())
    assert not np.array_equal(noise, uniform_noise(9, tf.range(200), 4, 500).numpy())


# -- a real model ---------------------------------------------------------------------------------------------


def test_greedy_on_a_model_matches_a_step_by_step_argmax_loop():
    model = build_model(ModelConfig(emb_dim=8, enc_units=6, dec_units=12), 20, 24)
    src = np.array([[5, 6, 7, 3], [9, 4, 0, 0], [11, 0, 0, 0]], np.int32)
    out = GreedySearch()(model.step_function(), model.encode(src), [12, 12, 12])
    ids = out.ids.numpy()[:, 0]
    state, prev = model.encode(src), np.full([3], BOS, np.int32)
    finished = np.zeros(3, bool)
    expected, total = [], np.zeros(3)
    for _ in range(ids.shape[1]):
        logits, state, _ = model.decode_step(prev, state)
        logp = tf.nn.log_softmax(logits).numpy()
        prev = np.where(finished, PAD, logp.argmax(-1)).astype(np.int32)
        total += np.where(finished, 0.0, logp.max(-1))
        finished |= prev == EOS
        expected.append(prev)
    np.testing.assert_array_equal(ids, np.stack(expected, 1))
    np.testing.assert_allclose(out.scores.numpy()[:, 0], total, rtol=1e-5)


def test_beam_over_a_large_vocabulary_matches_beam_with_plain_top_k(monkeypatch):
    """Beam search picks its candidates with top_k_rows once the vocabulary is large; the hypotheses are
    those of the same search ranking with tf.math.top_k."""
    import mt.search

    vocab = 1000
    table = np.random.default_rng(5).normal(size=(6, vocab, vocab)).astype(np.float32) * 2.0
    table[..., EOS] += 3.0
    fake = FakeStep(table)
    search = BeamSearch(beam_size=4, length_penalty=0.6, n_best=3, stop="exact")
    fast = run(search, fake, [6, 3, 5])
    monkeypatch.setattr(mt.search, "TOP_K_BLOCK", vocab)  # too wide for blocks: plain top-k
    plain = run(search, fake, [6, 3, 5])
    for name in ("ids", "lengths", "scores", "ranks"):
        np.testing.assert_allclose(fast[name], plain[name], atol=1e-6, err_msg=name)
    assert len({tuple(row) for row in fast["ids"][0]}) == 3


# -- the step protocol ----------------------------------------------------------------------------------------


class Memory(NamedTuple):
    fixed: tf.Tensor  # the same for every step: returned as it came, so beam search does not gather it
    t: tf.Tensor


class TypedStep(FakeStep):
    """The fake step with its state as a named tuple nested in a tuple, as the model's DecoderState is."""

    def initial_state(self, batch):
        return ((tf.zeros([batch], tf.int32),), Memory(tf.ones([batch, 2]), tf.zeros([batch], tf.int32)))

    def __call__(self, ids, state):
        (t,), memory = state
        logits, new, attention = super().__call__(ids, {"t": t})
        return logits, ((new["t"],), memory._replace(t=memory.t + 1)), attention


@pytest.mark.parametrize("kind", ["greedy", "sampling", "beam"])
@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_a_typed_state_goes_through_reordering_and_row_dropping(kind, fraction, monkeypatch):
    import mt.search

    monkeypatch.setattr(mt.search, "DROP_FRACTION", fraction)  # 0: rows leave at once, 1: at the end
    limits = tf.constant([9, 2, 6, 1, 8])
    search = {"greedy": lambda: GreedySearch(with_attention=True),
              "sampling": lambda: SamplingSearch(top_k=3, seed=5, with_attention=True),
              "beam": lambda: BeamSearch(3, 0.6, n_best=2, with_attention=True)}[kind]()
    plain = random_fake(vocab=6, seed=5, eos_bias=-1.0)
    typed = TypedStep(plain.table, seed=5)
    expected = search(plain, plain.initial_state(5), limits, plain.source_mask(5))
    compiled = tf.function(lambda state: search(typed, state, limits, typed.source_mask(5)))
    for got in (search(typed, typed.initial_state(5), limits, typed.source_mask(5)),
                compiled(typed.initial_state(5))):
        for name in ("ids", "lengths"):
            np.testing.assert_array_equal(getattr(got, name).numpy(), getattr(expected, name).numpy(), name)
        for name in ("scores", "ranks", "attention"):  # compiled: rounding of fused operations may differ
            np.testing.assert_allclose(getattr(got, name).numpy(), getattr(expected, name).numpy(), atol=1e-6,
                                       err_msg=name)


def test_beam_gathers_only_the_state_the_step_changed():
    fake = TypedStep(random_fake(vocab=5, seed=1).table)
    state = fake.initial_state(2)
    _, new, _ = fake(tf.constant([BOS, BOS]), state)
    out = BeamSearch(3, 0.6).reorder(state, new, tf.constant([1, 0]))
    assert out[1].fixed is state[1].fixed  # returned unchanged by the step: the same for every beam
    assert out[1].t is not new[1].t and out[0][0] is not new[0][0]  # changed: gathered


@pytest.mark.parametrize("kind", ["greedy", "sampling", "beam"])
def test_one_search_called_with_two_step_functions(kind):
    """A search keeps no step function: each call decodes with the one it is given, also when compiled."""
    make = {"greedy": lambda: GreedySearch(),
            "sampling": lambda: SamplingSearch(top_k=3, seed=5),
            "beam": lambda: BeamSearch(3, 0.6, n_best=2)}[kind]
    first, second = random_fake(vocab=6, seed=1, eos_bias=0.5), random_fake(vocab=6, seed=2, eos_bias=0.5)
    shared = make()
    compiled = tf.function(lambda step, state, limits: shared(step, state, limits))
    for fake in (first, second, first):
        alone = make()(fake, fake.initial_state(3), tf.constant([6, 4, 5]))
        for got in (shared(fake, fake.initial_state(3), tf.constant([6, 4, 5])),
                    compiled(fake, fake.initial_state(3), tf.constant([6, 4, 5]))):
            for name in ("ids", "lengths", "scores", "ranks"):
                np.testing.assert_array_equal(getattr(got, name).numpy(), getattr(alone, name).numpy(), name)
    a = shared(first, first.initial_state(3), tf.constant([6, 4, 5])).ids.numpy()
    b = shared(second, second.initial_state(3), tf.constant([6, 4, 5])).ids.numpy()
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_a_search_that_reads_the_attention_needs_the_source_mask():
    fake = random_fake(seed=0)
    for search in (GreedySearch(with_attention=True), BeamSearch(3, coverage_penalty=0.2)):
        with pytest.raises(ValueError, match="source_mask"):
            search(fake, fake.initial_state(2), [4, 4])
    # a search that does not read it ignores the step's attention without a source mask
    assert GreedySearch()(fake, fake.initial_state(2), [4, 4]).attention is None


def test_the_registry_builds_every_search_with_the_options_defaults():
    import inspect

    from mt.search import SEARCHES, build_search
    from mt.search_options import DEFAULTS, SEARCH_NAMES, SearchOptions

    assert sorted(SEARCHES) == sorted(SEARCH_NAMES)
    fields = {"stop": "beam_stop"}
    for cls in SEARCHES.values():
        for name, parameter in inspect.signature(cls).parameters.items():
            if name in ("with_attention", "with_alignment", "scores"):
                continue
            assert parameter.default == getattr(DEFAULTS, fields.get(name, name)), (cls.__name__, name)
    for name, cls in SEARCHES.items():
        assert type(build_search(SearchOptions(search=name))) is cls
    beam = build_search(SearchOptions(beam_size=4, length_penalty=0.2, coverage_penalty=0.1, beam_stop="exact",
                                      n_best=3), with_attention=True)
    assert (beam.beam_size, beam.length_penalty, beam.coverage_penalty, beam.stop, beam.n_best,
            beam.with_attention) == (4, 0.2, 0.1, "exact", 3, True)
    sample = build_search(SearchOptions(search="sample", temperature=0.5, top_k=7, top_p=0.9, seed=3))
    assert (sample.temperature, sample.top_k, sample.top_p, sample.seed) == (0.5, 7, 0.9, 3)
    assert build_search(SearchOptions(search="greedy"), scores=False).needs_log_norm is False
    for name in SEARCHES:
        recording = build_search(SearchOptions(search=name), with_alignment=True)
        assert recording.with_alignment and not recording.with_attention and recording.needs_attention
