"""Greedy, beam and sampling search over one decoder step `step_fn(ids, state) -> (logits, state, attention)`.

A search holds its strategy and settings; every call takes the step function and its initial state:

    search = BeamSearch(beam_size=5, length_penalty=0.6)      # or build_search(SearchOptions(...))
    result = search(model.step_function(), model.encode(src), max_lengths, source_mask=src != PAD)

`step_fn` takes the previous token of every row, ids [R] int32 (BOS at the first step), and a state: any
nest of batch-first tensors with R rows (tf.nest: tuples, named tuples, dicts); it returns logits [R, V],
the new state, and the step's attention over the source [R, S] or None. With beams, R is the number of
sentences times the beam size, beams of one sentence in adjacent rows. The attention feeds the coverage
penalty, `with_attention` (the whole attention of the chosen hypotheses) and `with_alignment` (for each of
their tokens, only the source position attended most: S times less to carry through a beam's reordering,
for alignments of long inputs); all need `source_mask`, which sizes it.

The result is a `Hypotheses` tuple of tensors, sorted best first for every sentence:
    ids [B, N, T] int32      tokens, ending in EOS unless cut at the length limit, padded with PAD (0)
    scores [B, N] float32    the model's log-probability of those tokens (EOS included)
    ranks [B, N] float32     what the search ranked by: scores after the length and coverage penalties
    lengths [B, N] int32     tokens including the EOS
    attention [B, N, T, S]   the step's attention for every output token (zeros without attention), or None
    sources [B, N, T] int32  the source position the step's attention weighted most for every output token
                             (the first of equal weights; 0 without attention), or None
N is 1 for greedy and sampling and `n_best` for beam search. Invalid n-best entries (a beam that found
fewer distinct hypotheses than asked) have rank -inf.

How it runs: the loop over target positions is one `tf.while_loop`, batched over sentences and beams, so
inside a `tf.function` no Python runs per token. The base class `Search` owns the loop; a strategy only
says how to start (`start`), how to extend its hypotheses by one token (`advance`) and what to return
(`result`). A sentence stops at its own length limit `max_lengths[b]` or when its strategy says it is done;
its results are then kept as they are, it leaves the batch once a tenth of the batch has finished (its
state rows are dropped, so later steps cost less), and the loop stops when every sentence is done.

Batch independence: a sentence's output never depends on its neighbours in the batch. Length limits are
per sentence, a finished sentence keeps its results while others go on, and sampling draws its random
numbers from a counter-based hash of (seed, row id, step, position), not from a stream shared by the batch.
Only floating-point rounding can differ across batch sizes (matrix products are blocked differently for
different shapes, and sums over padded source positions add zeros in a different order): a result changes
only when two candidates tie to within rounding.
"""

from typing import NamedTuple

import tensorflow as tf

from mt.search_options import BEAM_STOPS, DEFAULTS
from mt.tokenizer import BOS, EOS, PAD

NEG_INF = float("-inf")
COVERAGE_FLOOR = 1e-9  # attention mass below this counts as this much in the coverage penalty
DROP_FRACTION = 0.1  # finished sentences leave the batch once this fraction of it has finished


class Hypotheses(NamedTuple):
    ids: tf.Tensor
    scores: tf.Tensor
    ranks: tf.Tensor
    lengths: tf.Tensor
    attention: tf.Tensor = None
    sources: tf.Tensor = None


class Step(NamedTuple):
    """What a strategy sees at one step, for the L sentences still searched (K beams each, V target
    pieces, S source positions)."""

    t: tf.Tensor  # the position being produced (0 for the first token)
    logits: tf.Tensor  # [L, K, V] float32, the step's logits
    log_norm: tf.Tensor  # [L, K] their log-sum-exp: log-probabilities are logits - log_norm (None for a
    # search whose needs_log_norm is False)
    attention: tf.Tensor  # [L, K, S] the step's attention (zeros if the step gives none)
    last: tf.Tensor  # [L] bool: position t is the sentence's last allowed one
    max_lengths: tf.Tensor  # [L] int32
    source_mask: tf.Tensor  # [L, S] bool
    row_ids: tf.Tensor  # [L] int32, a stable id per sentence (for random draws)


class Search:
    """The decoding loop shared by every strategy; subclasses define start, advance and result."""

    beam_size = 1
    needs_log_norm = True  # Step.log_norm is computed (False: it is None)

    def __init__(self, with_attention=False, with_alignment=False):
        self.with_attention, self.with_alignment = with_attention, with_alignment

    @property
    def needs_attention(self):
        """The search reads the step's attention, so it needs the source mask."""
        return self.with_attention or self.with_alignment

    def __call__(self, step_fn, state, max_lengths, source_mask=None, row_ids=None) -> Hypotheses:
        """Search with `step_fn` from its initial `state` (B rows); `max_lengths` [B] caps each sentence's
        output length.

        `source_mask` [B, S] marks real source positions; a search that reads the attention needs it (the
        coverage penalty, `with_attention`), others may leave it out. `row_ids` [B] int32 identifies
        sentences for random draws (default: their row in the batch).
        """
        max_lengths = tf.maximum(tf.convert_to_tensor(max_lengths, tf.int32), 1)
        batch = tf.shape(max_lengths)[0]
        row_ids = tf.range(batch) if row_ids is None else tf.convert_to_tensor(row_ids, tf.int32)
        if source_mask is None and self.needs_attention:
            raise ValueError("this search reads the attention: pass source_mask")
        sized = source_mask is not None  # without a source mask the step's attention is not read
        source_mask = tf.cast(source_mask, tf.bool) if sized else tf.ones([batch, 0], tf.bool)
        k = self.beam_size
        if k > 1:
            state = tf.nest.map_structure(lambda x: tf.repeat(x, k, axis=0), state)
        limit = tf.reduce_max(max_lengths)
        hyps = self.start(batch, limit, tf.shape(source_mask)[1])

        def body(t, ids, state, live, hyps):
            # live [L]: the sentences in the batch (still searched, or done and not yet dropped); ids and
            # state hold their L * K rows
            logits, new_state, attention = step_fn(ids, state)
            # the log-softmax itself is never formed: a search needs the log-probabilities of a few tokens
            vocab = logits.shape[-1] if logits.shape[-1] is not None else -1  # static where known
            logits = tf.reshape(tf.cast(logits, tf.float32), [tf.size(live), k, vocab])
            lengths, mask, rows = (tf.gather(x, live) for x in (max_lengths, source_mask, row_ids))
            log_norm = tf.reduce_logsumexp(logits, axis=-1) if self.needs_log_norm else None
            attention = _attention(attention if sized else None, mask, k)
            step = Step(t, logits, log_norm, attention, t + 1 >= lengths, lengths, mask, rows)
            old = tf.nest.map_structure(lambda x: tf.gather(x, live), hyps)
            ids, parents, mine = self.advance(step, old)
            mine = _keep_done(old["done"], old, mine)
            hyps = tf.nest.map_structure(lambda x, y: tf.tensor_scatter_nd_update(x, live[:, None], y),
                                         hyps, mine)
            ids, state, live = _drop_done(mine["done"], ids, self.reorder(state, new_state, parents), live, k)
            return t + 1, ids, state, live, hyps

        def cond(t, ids, state, live, hyps):
            return tf.logical_and(t < limit, tf.logical_not(tf.reduce_all(tf.gather(hyps["done"], live))))

        ids, state, live = _forget_rows((tf.fill([batch * k], BOS), state, tf.range(batch)))
        start = (tf.constant(0), ids, state, live, hyps)
        invariants = tf.nest.map_structure(lambda x: x.shape, start)
        steps, _, _, _, hyps = tf.while_loop(cond, body, start, shape_invariants=invariants)
        return self.result(hyps, steps)

    def reorder(self, old_state, new_state, parents):
        """The state for the next step, given the rows `advance` chose to continue (one per row here)."""
        return new_state

    def start(self, batch, limit, source_length):
        """The hypotheses of B sentences: a dict of [B, ...] tensors, holding at least "done" [B] bool."""
        raise NotImplementedError

    def advance(self, step: Step, hyps):
        """Extend the hypotheses of the L sentences still searched by one token.

        A sentence done at an earlier step can still be passed here (it stays in the batch until enough
        others are done); what this returns for it is thrown away. Returns (next ids [L*K] int32, parent
        rows [L*K] int32 or None, hyps with "done" updated).
        """
        raise NotImplementedError

    def result(self, hyps, steps) -> Hypotheses:
        """The output, from the hypotheses of all B sentences after `steps` steps."""
        raise NotImplementedError


def _forget_rows(tensors):
    """The same tensors (a nest), their number of rows hidden from the graph optimizer too.

    The loop drops the rows of finished sentences from the ids, the state and `live`, so inside the loop
    their row count is unknown. Shape invariants say so to the tracing, but not to Grappler, TF's graph
    optimizer: it rewrites the loop into frames and infers the shapes in it again, starting from the
    shapes the loop variables enter with, and when the batch size is fixed at tracing time (a tf.function
    called on a batch of fixed shape) it can conclude that a loop variable keeps its entry row count.
    Constant folding then replaces tf.size(live), or the rows of tf.shape(tf.gather(source_mask, live)),
    with the full batch size, and once a sentence has left, the step's tensors are reshaped to too many
    rows. A PlaceholderWithDefault passes its input through at no cost; its shape is the one it declares
    (any number of rows), and Grappler never folds it, since a caller could feed it.
    """
    return tf.nest.map_structure(lambda x: tf.raw_ops.PlaceholderWithDefault(input=x, shape=_any_rows(x)),
                                 tensors)


def _any_rows(x):
    """x's static shape with any number of rows: the loop drops the rows of finished sentences."""
    return tf.TensorShape([None]).concatenate(x.shape[1:])


def _keep_done(was_done, old, new):
    """The hypotheses `new` [L, ...], except for the sentences that were done before this step
    (was_done [L] bool), which keep `old`: a finished sentence stays in the batch until enough others have
    finished (see `_drop_done`), and what its rows compute meanwhile is thrown away."""

    def keep(old, new):
        return tf.where(tf.reshape(was_done, [-1] + [1] * (new.shape.rank - 1)), old, new)

    return tf.cond(tf.reduce_any(was_done), lambda: tf.nest.map_structure(keep, old, new), lambda: new)


def _drop_done(done, ids, state, live, beams):
    """Keep the ids, state rows and `live` entries of the sentences not done (done [L] bool), once at least
    DROP_FRACTION of them are done.

    Finished sentences leave the batch, so the step's matrix products shrink with it. Dropping copies every
    remaining row of the state, the encoder memory and keys included, which costs about as much as a few
    steps of the rows it removes: with sentences finishing one at a time, dropping each at once spent more
    on copies than it saved. Nothing is copied at steps where too few have finished.
    """

    def drop():
        keep = tf.logical_not(done)
        rows = tf.reshape(tf.boolean_mask(tf.reshape(tf.range(tf.size(ids)), [-1, beams]), keep), [-1])
        return (tf.gather(ids, rows), tf.nest.map_structure(lambda x: tf.gather(x, rows), state),
                tf.boolean_mask(live, keep))

    finished = tf.reduce_sum(tf.cast(done, tf.int32))
    enough = tf.cast(tf.math.ceil(DROP_FRACTION * tf.cast(tf.size(done), tf.float32)), tf.int32)
    return tf.cond(finished >= tf.maximum(enough, 1), drop, lambda: (ids, state, live))


def _attention(attention, source_mask, beams):
    """The step's attention [B * K, S] as [B, K, S]; zeros for a step without attention (None)."""
    shape = tf.concat([tf.shape(source_mask)[:1], [beams], tf.shape(source_mask)[1:]], 0)
    if attention is None:
        return tf.zeros(shape)
    return tf.reshape(tf.cast(attention, tf.float32), shape)


def _write(buffer, t, values):
    """buffer [B, K, T, ...] with position t replaced by values [B, K, ...]."""
    at_t = tf.equal(tf.range(tf.shape(buffer)[2]), t)
    at_t = tf.reshape(at_t, [1, 1, -1] + [1] * (buffer.shape.rank - 3))
    return tf.where(at_t, tf.expand_dims(values, 2), buffer)


def _buffers(search, batch, beams, limit, source_length):
    """Empty token (and attention, and most attended source position) buffers for `beams` hypotheses per
    sentence."""
    out = {"ids": tf.fill([batch, beams, limit], PAD)}
    if search.with_attention:
        out["attention"] = tf.zeros([batch, beams, limit, source_length])
    if search.with_alignment:
        out["sources"] = tf.zeros([batch, beams, limit], tf.int32)
    return out


def _most_attended(step):
    """[L, K] int32: the real source position that the step's attention [L, K, S] weights most."""
    real = tf.where(step.source_mask[:, None, :], step.attention, -1.0)
    return tf.argmax(real, axis=-1, output_type=tf.int32)


def _recorded(hyps, steps):
    """The attention and the most attended positions of the result, over its `steps` positions (None
    where the search did not record them)."""
    return tuple(hyps[key][:, :, :steps] if key in hyps else None for key in ("attention", "sources"))


# ---------------------------------------------------------------------------------------------------------
# One hypothesis per sentence: greedy and sampling


class _SingleSearch(Search):
    """One hypothesis per sentence, extended by the token `pick` chooses; it ends at EOS or the limit."""

    def pick(self, step: Step):
        """The step's logits -> chosen ids [B] int32."""
        raise NotImplementedError

    def start(self, batch, limit, source_length):
        hyps = _buffers(self, batch, 1, limit, source_length)
        hyps.update(done=tf.zeros([batch], tf.bool), score=tf.zeros([batch, 1]),
                    length=tf.zeros([batch, 1], tf.int32))
        return hyps

    def advance(self, step, hyps):
        ids = self.pick(step)
        score = hyps["score"]
        if step.log_norm is not None:
            score += tf.gather(step.logits[:, 0], ids[:, None], batch_dims=1) - step.log_norm
        new = {"ids": _write(hyps["ids"], step.t, ids[:, None]), "length": hyps["length"] + 1,
               "score": score, "done": tf.equal(ids, EOS) | step.last}
        if self.with_attention:
            new["attention"] = _write(hyps["attention"], step.t, step.attention)
        if self.with_alignment:
            new["sources"] = _write(hyps["sources"], step.t, _most_attended(step))
        return ids, None, new

    def result(self, hyps, steps):
        return Hypotheses(hyps["ids"][:, :, :steps], hyps["score"], hyps["score"], hyps["length"],
                          *_recorded(hyps, steps))


class GreedySearch(_SingleSearch):
    """The most probable next token at every step.

    With `scores=False` the log-probabilities of the output are not computed (scores and ranks are 0):
    the choice needs only the largest logit, while the normalizer passes over the whole vocabulary several
    times. `mt translate` writes no greedy scores, so it asks for none.
    """

    def __init__(self, with_attention=False, scores=True, with_alignment=False):
        super().__init__(with_attention, with_alignment)
        self.needs_log_norm = scores

    def pick(self, step):
        # top_k rather than argmax: the same tie-breaking (lowest id) as beam search and top-k sampling
        return tf.math.top_k(step.logits[:, 0], 1).indices[:, 0]


class SamplingSearch(_SingleSearch):
    """Draw every next token from the model's distribution, reshaped by temperature, top-k and top-p.

    The filters combine: the distribution is divided by `temperature`, cut to the `top_k` most probable
    tokens (0 = no cut), then to the smallest set of those whose probability reaches `top_p` (1.0 = no
    cut), and renormalized. The draw uses the Gumbel-max trick with noise from `uniform_noise`, a pure
    function of (seed, row id, step, position): the same seed gives the same samples on every run and in
    any batch. Scores stay the unfiltered model's log-probabilities.
    """

    def __init__(self, temperature=DEFAULTS.temperature, top_k=DEFAULTS.top_k, top_p=DEFAULTS.top_p,
                 seed=DEFAULTS.seed, with_attention=False, with_alignment=False):
        super().__init__(with_attention, with_alignment)
        if temperature <= 0 or top_k < 0 or not 0.0 < top_p <= 1.0:
            raise ValueError(f"need temperature > 0, top_k >= 0 and 0 < top_p <= 1, got {temperature}, "
                             f"{top_k}, {top_p}")
        self.temperature, self.top_k, self.top_p, self.seed = temperature, top_k, top_p, seed

    def pick(self, step):
        log_probs = step.logits[:, 0] - step.log_norm
        order = None
        if self.top_k or self.top_p < 1.0:
            vocab = tf.shape(log_probs)[1]
            k = tf.minimum(self.top_k, vocab) if self.top_k else vocab
            order = tf.math.top_k(step.logits[:, 0], k).indices  # candidates, most probable first
            log_probs = tf.gather(log_probs, order, batch_dims=1)
        logits = log_probs / self.temperature
        if self.top_p < 1.0:
            logits = _nucleus(logits, self.top_p)
        noise = uniform_noise(self.seed, step.row_ids, step.t, tf.shape(logits)[1])
        choice = tf.argmax(logits - tf.math.log(-tf.math.log(noise)), axis=-1, output_type=tf.int32)
        return choice if order is None else tf.gather(order, choice[:, None], batch_dims=1)[:, 0]


def _nucleus(sorted_logits, top_p):
    """Keep the most probable candidates (sorted best first) until their probability reaches top_p."""
    probs = tf.nn.softmax(sorted_logits, axis=-1)
    before = tf.cumsum(probs, axis=-1, exclusive=True)
    return tf.where(before < top_p, sorted_logits, NEG_INF)


def _mix(x):
    """MurmurHash3's 32-bit finalizer: every input bit flips about half of the output bits."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x *= tf.constant(0x85EBCA6B, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13))
    x *= tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def uniform_noise(seed, row_ids, t, width):
    """Uniform numbers in (0, 1), [B, width]: a hash of (seed, row id, step t, column), no random state."""
    golden = tf.constant(0x9E3779B9, tf.uint32)
    key = _mix(tf.constant(seed & 0xFFFFFFFF, tf.uint32) + golden)
    key = _mix(tf.bitwise.bitwise_xor(key, tf.cast(row_ids, tf.uint32)))
    key = _mix(tf.bitwise.bitwise_xor(key, tf.cast(t, tf.uint32) * golden))
    column = tf.cast(tf.range(1, width + 1), tf.uint32) * golden
    bits = _mix(_mix(tf.bitwise.bitwise_xor(key[:, None], column[None, :])))
    return (tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) + 0.5) / 16777216.0


# ---------------------------------------------------------------------------------------------------------
# Beam search


class BeamSearch(Search):
    """Keep the `beam_size` best hypotheses per sentence; rank finished ones with GNMT's penalties.

    At every step the 2K best one-token extensions of the K live hypotheses are taken (ranked by
    log-probability: at equal length the length penalty would not change the order). Those among the best
    K that end in EOS become finished (at the length limit, all of the best K do); the best K that do not
    end in EOS stay live. A finished hypothesis is never extended; it is kept among the sentence's K best
    finished ones, ranked by
        log P(y | x) / lp(|y|) + cp,   lp(n) = ((5 + n) / 6) ** length_penalty,
        cp = coverage_penalty * sum over source positions of log(min(attention received, 1))
    (Wu et al. 2016; |y| counts the EOS). A sentence is done when its `n_best`-th finished hypothesis
    ranks at least as high as any live one could still reach: log-probabilities only fall as tokens are
    added, lp grows with length up to the sentence's limit, and cp <= 0, so a live hypothesis can reach at
    most its log-probability / lp(limit). That is `stop="exact"`. With `stop="early"` (the rule of most
    toolkits) a sentence is done as soon as no live hypothesis outranks its `n_best`-th finished one at the
    current length; with no length penalty both rules are the same. With beam_size 1 and no length
    penalty this is greedy search.
    """

    STOPS = BEAM_STOPS

    def __init__(self, beam_size=DEFAULTS.beam_size, length_penalty=DEFAULTS.length_penalty,
                 coverage_penalty=DEFAULTS.coverage_penalty, n_best=DEFAULTS.n_best, with_attention=False,
                 stop=DEFAULTS.beam_stop, with_alignment=False):
        super().__init__(with_attention, with_alignment)
        if beam_size < 1 or not 1 <= n_best <= beam_size or length_penalty < 0 or coverage_penalty < 0:
            raise ValueError(f"need beam_size >= 1, 1 <= n_best <= beam_size and penalties >= 0, got "
                             f"{beam_size}, {n_best}, {length_penalty}, {coverage_penalty}")
        if stop not in self.STOPS:
            raise ValueError(f"stop must be one of {self.STOPS}, got {stop!r}")
        self.beam_size, self.n_best, self.stop = beam_size, n_best, stop
        self.length_penalty, self.coverage_penalty = length_penalty, coverage_penalty

    @property
    def needs_attention(self):
        return super().needs_attention or bool(self.coverage_penalty)

    def start(self, batch, limit, source_length):
        k = self.beam_size
        alive = _buffers(self, batch, k, limit, source_length)
        # only the first beam is live at the start: the others would repeat it
        alive["score"] = tf.tile(tf.constant([[0.0] + [NEG_INF] * (k - 1)]), [batch, 1])
        if self.coverage_penalty:
            alive["coverage"] = tf.zeros([batch, k, source_length])
        finished = _buffers(self, batch, k, limit, source_length)
        finished.update(score=tf.fill([batch, k], NEG_INF), rank=tf.fill([batch, k], NEG_INF),
                        length=tf.zeros([batch, k], tf.int32))
        return {"done": tf.zeros([batch], tf.bool), "alive": alive, "finished": finished}

    def advance(self, step, hyps):
        k = self.beam_size
        batch = tf.shape(step.logits)[0]
        # the 2K best extensions of the K hypotheses are among the 2K best of each (fewer with a smaller
        # vocabulary): rank K x 2K candidates rather than K x V
        per_beam = 2 * k if step.logits.shape[-1] is None else min(2 * k, step.logits.shape[-1])
        values, tokens = top_k_rows(step.logits, per_beam)
        totals = hyps["alive"]["score"][:, :, None] + (values - step.log_norm[:, :, None])
        score, index = tf.math.top_k(tf.reshape(totals, [batch, k * per_beam]), 2 * k)
        parent = index // per_beam
        token = tf.gather(tf.reshape(tokens, [batch, k * per_beam]), index, batch_dims=1)
        cands = self._extend(hyps["alive"], parent, token, score, step)
        is_eos = tf.equal(token, EOS)
        ends = (is_eos | step.last[:, None]) & (tf.range(2 * k) < k)
        cands["rank"] = tf.where(ends, self._rank(cands, step), NEG_INF)
        cands["length"] = tf.fill([batch, 2 * k], step.t + 1)
        both = {key: tf.concat([value, cands[key]], 1) for key, value in hyps["finished"].items()}
        finished = _best(both, both["rank"], k)
        live = {key: cands[key] for key in (*hyps["alive"], "parent", "token")}
        live["score"] = tf.where(is_eos, NEG_INF, score)  # EOS ends a hypothesis: it never stays live
        alive = _best(live, live["score"], k)
        if self.stop == "exact":
            reachable = alive["score"][:, 0] / self._lp(step.max_lengths)
        else:
            reachable = tf.reduce_max(self._rank(alive, step), axis=1)
        done = step.last | (finished["rank"][:, self.n_best - 1] >= reachable)
        rows = tf.range(batch)[:, None] * k + alive.pop("parent")
        ids = tf.reshape(alive.pop("token"), [-1])
        return ids, tf.reshape(rows, [-1]), {"done": done, "alive": alive, "finished": finished}

    def _extend(self, alive, parent, token, score, step):
        """The candidates [B, 2K]: live hypotheses `parent` followed by `token`, with their new score."""
        cands = {key: tf.gather(value, parent, batch_dims=1) for key, value in alive.items()}
        attention = tf.gather(step.attention, parent, batch_dims=1)
        cands["ids"] = _write(cands["ids"], step.t, token)
        cands["score"] = score
        if "coverage" in cands:
            cands["coverage"] += attention
        if "attention" in cands:
            cands["attention"] = _write(cands["attention"], step.t, attention)
        if "sources" in cands:
            cands["sources"] = _write(cands["sources"], step.t,
                                      tf.gather(_most_attended(step), parent, batch_dims=1))
        cands["parent"], cands["token"] = parent, token
        return cands

    def _lp(self, length):
        if not self.length_penalty:
            return tf.ones(tf.shape(length))
        return ((5.0 + tf.cast(length, tf.float32)) / 6.0) ** self.length_penalty

    def _rank(self, cands, step):
        rank = cands["score"] / self._lp(step.t + 1)
        if self.coverage_penalty:
            received = tf.clip_by_value(cands["coverage"], COVERAGE_FLOOR, 1.0)
            real = tf.cast(step.source_mask, tf.float32)[:, None, :]
            rank += self.coverage_penalty * tf.reduce_sum(tf.math.log(received) * real, axis=-1)
        return rank

    def reorder(self, old_state, new_state, parents):
        """Gather the rows of the chosen parents, for every tensor the step changed.

        A tensor the step returns unchanged (the same object, e.g. the encoder memory) has been unchanged
        since the start, where it was repeated per beam: it is the same for every beam of a sentence, and
        gathering it would only copy it.
        """
        return tf.nest.map_structure(lambda old, new: new if new is old else tf.gather(new, parents),
                                     old_state, new_state)

    def result(self, hyps, steps):
        best = {key: value[:, :self.n_best] for key, value in hyps["finished"].items()}
        return Hypotheses(best["ids"][:, :, :steps], best["score"], best["rank"], best["length"],
                          *_recorded(best, steps))


TOP_K_BLOCK = 16  # top_k_rows: values per block


def top_k_rows(x, k):
    """tf.math.top_k(x, k) over the last axis (values, indices), for large last axes much faster.

    TensorFlow's CPU top-k sorts candidates through a heap per row, slow for the 10 best of each of
    hundreds of rows of thousands of values (a beam-5 step). Here the row is cut into blocks of
    TOP_K_BLOCK values: the k best values lie in the k blocks with the highest maxima (any value outside
    them has k larger block maxima above it), so one pass of maxima and a top-k over k blocks suffice.
    The result is the same, ties included: blocks are taken in index order, and top-k prefers the lower
    index among equal values.
    """
    width = x.shape[-1]
    if width is None or width < 4 * k * TOP_K_BLOCK:
        return tf.math.top_k(x, k)
    lead = tf.shape(x)[:-1]
    rows = tf.reshape(x, [-1, width])
    if width % TOP_K_BLOCK:
        rows = tf.pad(rows, [[0, 0], [0, TOP_K_BLOCK - width % TOP_K_BLOCK]], constant_values=NEG_INF)
    blocks = tf.reshape(rows, [tf.shape(rows)[0], -1, TOP_K_BLOCK])
    chosen = tf.sort(tf.math.top_k(tf.reduce_max(blocks, axis=-1), k).indices, axis=-1)  # [R, k] in order
    candidates = tf.reshape(tf.gather(blocks, chosen, batch_dims=1), [-1, k * TOP_K_BLOCK])
    values, where = tf.math.top_k(candidates, k)
    indices = tf.gather(chosen, where // TOP_K_BLOCK, batch_dims=1) * TOP_K_BLOCK + where % TOP_K_BLOCK
    shape = tf.concat([lead, [k]], 0)
    return tf.reshape(values, shape), tf.reshape(indices, shape)


def _best(hyps, rank, k):
    """The k hypotheses of highest rank, best first: every tensor of `hyps` [B, M, ...] -> [B, k, ...]."""
    index = tf.math.top_k(rank, k).indices
    return {key: tf.gather(value, index, batch_dims=1) for key, value in hyps.items()}



SEARCHES = {"greedy": GreedySearch, "beam": BeamSearch, "sample": SamplingSearch}


def build_search(options=DEFAULTS, scores=True, with_attention=False, with_alignment=False) -> Search:
    """The search `options` (a SearchOptions) name, with its settings. `scores=False` lets greedy search
    skip the output's log-probability (see GreedySearch); `with_attention` records the attention of the
    hypotheses, `with_alignment` the source position it weights most for each of their tokens."""
    kind = SEARCHES[options.search]
    recording = {"with_attention": with_attention, "with_alignment": with_alignment}
    if kind is GreedySearch:
        return GreedySearch(scores=scores, **recording)
    if kind is SamplingSearch:
        return SamplingSearch(options.temperature, options.top_k, options.top_p, options.seed, **recording)
    return BeamSearch(options.beam_size, options.length_penalty, options.coverage_penalty, options.n_best,
                      stop=options.beam_stop, **recording)
