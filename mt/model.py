"""The encoder-decoder: a bidirectional recurrent encoder and a recurrent decoder with Luong attention.

    Seq2Seq.encode(src)                -> DecoderState (named tuples of tensors, batch first)
    Seq2Seq.step_function()            -> step(ids, state) -> (logits, state, attention or None)
    Seq2Seq.call((src, tgt_in))        -> logits [batch, time, vocab]   teacher forcing, used by training

`Encoder` and `Decoder` are the two layers of `Seq2Seq`. Training and decoding share `Decoder._step`, so
what is trained is exactly what is searched. Without input feeding (model.input_feeding: false) a step's
attention does not feed the next step, and teacher forcing computes the same outputs faster: the
recurrence over all steps first, then the attention over all steps at once. With model.tie_embeddings the
output layer multiplies by the target embedding (after a projection of the decoder's output to emb_dim).

Precision: under a mixed policy (mixed_bfloat16 / mixed_float16) the matrix products run in the compute
dtype, while gates, cell states, attention softmax and logits stay in float32.

Speed: each recurrent layer multiplies the inputs of all time steps in one large matrix product before the
recurrence, which then only does the small recurrent product per step; the decoder's output projection
(the largest matrix) runs once over all time steps after the loop. Padding (id 0) is masked everywhere:
encoder states stop changing on padding, attention gives padding zero weight, the loss ignores it.
"""

import contextlib
import os
import re
import tempfile
from typing import NamedTuple

import keras
import tensorflow as tf

from mt.config import ModelConfig
from mt.tokenizer import PAD

NEG_INF = -1e9


_INITIALIZE = [True]


@contextlib.contextmanager
def weights_to_be_loaded():
    """Build models inside this block with zero initial weights: their weights are loaded right after, so
    drawing random (and orthogonal, a QR decomposition each) initial values would only cost time."""
    _INITIALIZE.append(False)
    try:
        yield
    finally:
        _INITIALIZE.pop()


def init(name):
    """The initializer `name`, or zeros inside `weights_to_be_loaded`."""
    return name if _INITIALIZE[-1] else "zeros"


WIDEN_MULTIPLE = 256  # kernels with a multiple of this many columns get WIDEN_EXTRA zero columns
WIDEN_EXTRA = 16


def widen(kernel):
    """kernel [d, n] for `matmul`: with WIDEN_EXTRA zero columns appended when n is a multiple of 256.

    On AVX2 CPUs oneDNN multiplies a few rows by a kernel whose rows are a multiple of 512 values long at
    about half its usual rate (benchmarks/matmul_widths.py, docs/design.md), and the gate kernels of 256-
    or 512-unit cells are [d, 1024] or [d, 2048]. A product with a few extra columns, cut off afterwards, runs at the full rate. This pays for the
    products of a time loop (tens of rows); a product over all time steps at once (thousands of rows) runs
    at full rate anyway, and cutting its output would only copy it. Widen a kernel once, outside a loop."""
    n = kernel.shape[-1]
    if n % WIDEN_MULTIPLE:
        return kernel
    return tf.pad(kernel, [[0, 0], [0, WIDEN_EXTRA]])


def matmul(x, kernel, n):
    """x [m, d] @ a kernel from `widen` -> [m, n] (its real n columns)."""
    y = tf.matmul(x, kernel)
    return y if kernel.shape[-1] == n else y[:, :n]


def project(x, kernel, n=None):
    """x [..., d] @ kernel [d, n] (or a kernel from `widen` and its real n) -> [..., n], as one 2-D matrix
    product."""
    n = kernel.shape[-1] if n is None else n
    shape = tf.shape(x)
    flat = matmul(tf.reshape(x, [-1, shape[-1]]), kernel, n)
    return tf.reshape(flat, tf.concat([shape[:-1], [n]], 0))


class RecurrentCell(keras.layers.Layer):
    """One LSTM, GRU or vanilla RNN cell with its input projection kept separate from the recurrence.

    `project(x)` maps inputs of any number of time steps to gate pre-activations in one product;
    `step(xw_t, state)` advances one step given the projected input. State is a tuple (h,) or (h, c).
    """

    GATES = {"lstm": 4, "gru": 3, "rnn": 1}

    def __init__(self, kind, units, input_dim, **kwargs):
        super().__init__(**kwargs)
        self.kind, self.units, self.gates = kind, units, self.GATES[kind]
        self.build((None, input_dim))

    def build(self, input_shape):
        n = self.gates * self.units
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], n),
                                      initializer=init("glorot_uniform"), autocast=False)
        self.recurrent = self.add_weight(name="recurrent", shape=(self.units, n), initializer=init("orthogonal"),
                                         autocast=False)
        bias_init = "zeros"
        if self.kind == "lstm":  # forget gate bias 1: remember by default at the start of training
            bias_init = keras.initializers.Constant([0.0] * self.units + [1.0] * self.units + [0.0] * 2 * self.units)
        self.bias = self.add_weight(name="bias", shape=(n,), initializer=bias_init, autocast=False)
        if self.kind == "gru":  # reset-after GRU: the recurrent candidate part has its own bias
            self.recurrent_bias = self.add_weight(name="recurrent_bias", shape=(n,), initializer="zeros",
                                                  autocast=False)

    @property
    def state_size(self):
        return 2 if self.kind == "lstm" else 1

    def _cast(self, weight):
        """A weight in the compute dtype (bfloat16 or float16 under mixed precision)."""
        return tf.cast(weight, self.compute_dtype)

    def widened(self, weight):
        """A weight in the compute dtype, widened for `matmul`."""
        return widen(self._cast(weight))

    def project(self, x, kernel=None):
        """Inputs of any number of steps -> float32 gate pre-activations (the product in compute dtype).
        `kernel` is the input kernel from `widened` when the caller prepared it outside a time loop."""
        kernel = self._cast(self.kernel) if kernel is None else kernel
        xw = project(tf.cast(x, kernel.dtype), kernel, self.gates * self.units)
        return tf.cast(xw, tf.float32) + self.bias

    def zero_state(self, batch):
        return tuple(tf.zeros([batch, self.units], tf.float32) for _ in range(self.state_size))

    def step(self, xw, state, recurrent=None, hu=None):
        """Advance one step. `recurrent` is the recurrent kernel from `widened` (so a loop casts and
        widens it once, not every step); `hu` the recurrent product h @ kernel when the caller computed it,
        e.g. fused with another product."""
        h = state[0]
        if hu is None:
            recurrent = self.widened(self.recurrent) if recurrent is None else recurrent
            hu = tf.cast(matmul(tf.cast(h, recurrent.dtype), recurrent, self.gates * self.units), tf.float32)
        if self.kind == "lstm":
            i, f, g, o = tf.split(xw + hu, 4, axis=-1)
            c = tf.sigmoid(f) * state[1] + tf.sigmoid(i) * tf.tanh(g)
            return (tf.sigmoid(o) * tf.tanh(c), c)
        if self.kind == "gru":
            hu = hu + self.recurrent_bias
            x_z, x_r, x_n = tf.split(xw, 3, axis=-1)
            h_z, h_r, h_n = tf.split(hu, 3, axis=-1)
            z = tf.sigmoid(x_z + h_z)
            r = tf.sigmoid(x_r + h_r)
            n = tf.tanh(x_n + r * h_n)
            return (z * h + (1.0 - z) * n,)
        return (tf.tanh(xw + hu),)


def run_recurrence(cell, xw, mask, initial_state, longest_first=False, recurrent=None):
    """Run `cell` over projected inputs xw [B, T, G*H] with mask [B, T]; state freezes on padding.
    `mask` None: every step is real (a language model's stream), and no step pays for a mask.

    Returns (outputs [B, T, H], final state). With padding at the end, the final state is the state at
    each sentence's last real position. `longest_first`: the rows are sorted by length, longest first, so
    the rows with a real token at step t are the first few, and only those are computed: in a batch of
    sentences of different lengths, most of the padding costs nothing. `recurrent`: the recurrent kernel
    as the caller prepared it for `cell.step` (default: cell.widened).
    """
    xw_t = tf.transpose(xw, [1, 0, 2])
    recurrent = cell.widened(cell.recurrent) if recurrent is None else recurrent

    def body(state, elems):
        x, m = elems
        new = cell.step(x, state, recurrent)
        return tuple(tf.where(m, n, o) for n, o in zip(new, state))

    def packed_body(state, elems):
        x, rows = elems  # rows: how many sentences are longer than t
        new = cell.step(x[:rows], tuple(s[:rows] for s in state), recurrent)
        merged = tuple(tf.concat([n, s[rows:]], 0) for n, s in zip(new, state))
        for m, s in zip(merged, state):
            m.set_shape(s.shape)  # as many rows as before (a known batch size stays known in the loop)
        return merged

    if mask is None:
        states = tf.scan(lambda state, x: cell.step(x, state, recurrent), xw_t, initializer=initial_state)
    elif longest_first:
        rows = tf.reduce_sum(tf.cast(mask, tf.int32), axis=0)
        states = tf.scan(packed_body, (xw_t, rows), initializer=initial_state)
    else:
        states = tf.scan(body, (xw_t, tf.transpose(mask)[:, :, None]), initializer=initial_state)
    outputs = tf.transpose(states[0], [1, 0, 2])
    return outputs, tuple(s[-1] for s in states)


class Encoder(keras.layers.Layer):
    """Embeddings and a stack of bidirectional recurrent layers; dropout on each layer's input."""

    def __init__(self, config: ModelConfig, vocab_size, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(vocab_size, config.emb_dim, name="embedding",
                                                embeddings_initializer=init("uniform"))
        self.dropout = keras.layers.Dropout(config.dropout)
        dims = [config.emb_dim] + [2 * config.enc_units] * (config.enc_layers - 1)
        self.layers_fw = [RecurrentCell(config.cell, config.enc_units, d, name=f"fw_{i}")
                          for i, d in enumerate(dims)]
        self.layers_bw = [RecurrentCell(config.cell, config.enc_units, d, name=f"bw_{i}")
                          for i, d in enumerate(dims)]

    def call(self, src, training=False, longest_first=False, return_layers=False):
        """src [B, S] -> (outputs [B, S, 2H], final states of the top layer (fw + bw), mask [B, S]).
        `longest_first`: the rows are sorted by length, longest first (see run_recurrence).
        `return_layers`: the outputs are every layer's, a list of [B, S, 2H], the top layer's last."""
        mask = tf.not_equal(src, PAD)
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        batch = tf.shape(src)[0]
        x = self.embedding(src)
        layers = []
        for fw, bw in zip(self.layers_fw, self.layers_bw):
            x = self.dropout(x, training=training)
            out_fw, fin_fw = run_recurrence(fw, fw.project(x), mask, fw.zero_state(batch), longest_first)
            x_rev = tf.reverse_sequence(x, lengths, seq_axis=1, batch_axis=0)
            out_bw, fin_bw = run_recurrence(bw, bw.project(x_rev), mask, bw.zero_state(batch), longest_first)
            out_bw = tf.reverse_sequence(out_bw, lengths, seq_axis=1, batch_axis=0)
            x = tf.concat([out_fw, out_bw], axis=-1)
            layers.append(x)
        return layers if return_layers else x, fin_fw + fin_bw, mask


class AttentionMemory(NamedTuple):
    """What the attention reads at every step, fixed for a sentence: computed once from the encoder."""

    memory: tf.Tensor  # [B, S, 2 * enc_units] the encoder's outputs, in the compute dtype
    keys: tf.Tensor  # [B, S, dec_units] what the query is compared with (the memory itself for dot attention)
    bias: tf.Tensor  # [B, S] float32, 0 on real source positions and NEG_INF on padding


class DecoderState(NamedTuple):
    """The decoder's state between two steps, batch first (a nest for tf.nest and tf.while_loop)."""

    cells: tuple  # per decoder layer, its cell's state: (h,) or (h, c), each [B, dec_units] float32
    feed: tf.Tensor  # [B, dec_units] float32, the last step's output (input feeding; zeros at the start)
    source: tuple  # an AttentionMemory, or () for a model without attention (an empty nest, unlike None)


class TiedOutput(keras.layers.Layer):
    """The output layer of a decoder whose target embedding is also its output matrix (model.tie_embeddings):
    a projection [H, E] of the decoder's output to the embedding size, then the target embedding
    transposed [E, V], and a bias [V]. The projection lets dec_units differ from emb_dim, which tying alone
    (Press and Wolf, 2017) would require equal; the decoder multiplies by these weights itself (see
    Decoder._logits)."""

    def __init__(self, units, emb_dim, vocab_size, **kwargs):
        super().__init__(**kwargs)
        self.projection = self.add_weight(name="projection", shape=(units, emb_dim),
                                          initializer=init("glorot_uniform"), autocast=False)
        self.bias = self.add_weight(name="bias", shape=(vocab_size,), initializer="zeros", autocast=False)
        self.built = True


class Decoder(keras.layers.Layer):
    """Target embeddings, recurrent cells started from the encoder's final states through a bridge, Luong
    attention with input feeding, and the output layer; dropout on the embeddings, between layers and on
    the output.

        initial_state(encoded, final, mask)  -> DecoderState
        step_function(weights)               -> step(ids, state) -> (logits, state, attention or None)
        teacher_forcing(state, tgt_in, ...)  -> outputs [B, T, H] before the output layer

    Training and decoding share `_step`, so what is trained is exactly what is searched; without input
    feeding, training computes the same outputs layer by layer instead (`_parallel_teacher_forcing`).
    """

    def __init__(self, config: ModelConfig, vocab_size, **kwargs):
        super().__init__(**kwargs)
        self.config, self.vocab_size = config, vocab_size
        c = config
        self.embedding = keras.layers.Embedding(vocab_size, c.emb_dim, name="tgt_embedding",
                                                embeddings_initializer=init("uniform"))
        self.dropout = keras.layers.Dropout(c.dropout)
        dims = [c.emb_dim] + [c.dec_units] * (c.dec_layers - 1)
        self.cells = [RecurrentCell(c.cell, c.dec_units, d, name=f"dec_{i}") for i, d in enumerate(dims)]
        n_states = self.cells[0].state_size * c.dec_layers
        self.bridge = keras.layers.Dense(n_states * c.dec_units, activation="tanh", name="bridge",
                                         kernel_initializer=init("glorot_uniform"))
        self.attention = c.attention != "none"
        self.feeding = self.attention and c.input_feeding
        if self.attention:
            self.attn_key = keras.layers.Dense(c.dec_units, use_bias=False, name="attn_key",
                                               kernel_initializer=init("glorot_uniform"))
            self.attn_key.build((None, 2 * c.enc_units))  # used through its kernel
            self.attn_out = keras.layers.Dense(c.dec_units, use_bias=False, activation="tanh", name="attn_out",
                                               kernel_initializer=init("glorot_uniform"))
            self.attn_out.build((None, 2 * c.enc_units + c.dec_units))  # used through its kernel
        if self.feeding:
            self.feed_kernel = self.add_weight(name="feed_kernel", initializer=init("glorot_uniform"),
                                               shape=(c.dec_units, self.cells[0].gates * c.dec_units),
                                               autocast=False)
        self.tied = c.tie_embeddings
        if self.tied:
            self.output_layer = TiedOutput(c.dec_units, c.emb_dim, vocab_size, name="output")
        else:
            self.output_layer = keras.layers.Dense(vocab_size, name="output",
                                                   kernel_initializer=init("glorot_uniform"))
            self.output_layer.build((None, c.dec_units))  # used through its kernel and bias (see _logits)
        self.seed_gen = keras.random.SeedGenerator(1234, name="dropout_seed")

    def create_weights(self):
        """Create the weights of the embeddings and the bridge (the others exist from __init__)."""
        self.embedding.build((None, None))
        self.bridge.build((None, 2 * self.cells[0].state_size * self.config.enc_units))
        self.built = True

    def initial_state(self, encoded, final, mask):
        """The encoder's outputs [B, S, 2H], final states and mask [B, S] -> the state before the first
        target token."""
        c = self.config
        n = self.cells[0].state_size
        start = tf.cast(self.bridge(tf.concat(final, axis=-1)), tf.float32)
        start = tf.split(start, n * c.dec_layers, -1)
        cells = tuple(tuple(start[i * n + j] for j in range(n)) for i in range(c.dec_layers))
        feed = tf.zeros([tf.shape(mask)[0], c.dec_units], tf.float32)
        source = ()
        if self.attention:
            memory = tf.cast(encoded, self.compute_dtype)  # attention products in the compute dtype
            keys = memory
            if c.attention != "dot":
                keys = project(memory, self.cells[0]._cast(self.attn_key.kernel))
            source = AttentionMemory(memory, keys, tf.where(mask, 0.0, NEG_INF))
        return DecoderState(cells, feed, source)

    # -- one step, shared by training and search ------------------------------------------------------

    def _loop_weights(self):
        """The weights the time loop multiplies by, cast to the compute dtype and widened (see `widen`)
        once, outside the loop.

        With input feeding, an LSTM or vanilla RNN stacks the feed and recurrent kernels of the first layer
        as "fused", so one product [feed; h] @ [W_feed; U] replaces two; a GRU keeps them apart because its
        reset gate applies to the recurrent part only."""
        first = self.cells[0]
        weights = {"recurrent": [cell.widened(cell.recurrent) for cell in self.cells],
                   "kernel": [None] + [cell.widened(cell.kernel) for cell in self.cells[1:]]}
        if self.feeding and self.config.cell == "gru":
            weights["feed"] = first.widened(self.feed_kernel)
        elif self.feeding:
            weights["fused"] = widen(tf.concat([first._cast(self.feed_kernel), first._cast(first.recurrent)],
                                               axis=0))
        if self.attention:
            weights["attn_out"] = first.widened(self.attn_out.kernel)
        return weights

    def _step(self, xw, state, drop_masks, weights, taps=None):
        """Advance one step from the projected target embedding xw [B, G*H] and a DecoderState.

        Returns (output [B, H] before the vocabulary projection, new state, attention weights [B, S] or
        None). `drop_masks` is a list of dropout masks (or None entries) for inter-layer inputs and the
        output; `weights` comes from `_loop_weights`; `taps` this step's slices of `attention_taps`.
        """
        cells = []
        x = None
        for i, cell in enumerate(self.cells):
            cell_state = state.cells[i]
            hu = None
            if i > 0:
                x = x if drop_masks[i] is None else x * drop_masks[i]
                xw = cell.project(x, weights["kernel"][i])
            elif "fused" in weights:
                both = tf.cast(tf.concat([state.feed, cell_state[0]], axis=-1), weights["fused"].dtype)
                hu = tf.cast(matmul(both, weights["fused"], cell.gates * cell.units), tf.float32)
            elif self.feeding:
                feed = tf.cast(state.feed, weights["feed"].dtype)
                xw = xw + tf.cast(matmul(feed, weights["feed"], cell.gates * cell.units), tf.float32)
            new = cell.step(xw, cell_state, weights["recurrent"][i], hu)
            cells.append(tuple(new))
            x = new[0]
        alignment = None
        if self.attention:
            keys, memory = state.source.keys, state.source.memory
            if taps is not None:  # their gradients come through the taps (see attention_taps)
                keys, memory = tf.stop_gradient(keys), tf.stop_gradient(memory)
            low = tf.cast(x, keys.dtype)
            scores = tf.cast(tf.einsum("bsh,bh->bs", keys, low), tf.float32) + state.source.bias
            if taps is not None:
                scores += taps[0]
            alignment = tf.nn.softmax(scores, axis=-1)
            context = tf.einsum("bs,bsd->bd", tf.cast(alignment, low.dtype), memory)
            if taps is not None:
                context += taps[1]
            both = tf.concat([context, low], axis=-1)
            x = tf.tanh(tf.cast(matmul(both, weights["attn_out"], self.config.dec_units), tf.float32))
        if drop_masks[0] is not None:
            x = x * drop_masks[0]
        return x, state._replace(cells=tuple(cells), feed=x), alignment

    def decode_weights(self):
        """Every weight one step needs, in the compute dtype. A search computes these once, outside its
        loop, so the loop does not cast the weights again at every token (see `step_function`)."""
        weights = self._loop_weights()
        weights["input"] = self.cells[0].widened(self.cells[0].kernel)
        weights["output"] = self._output_kernels(self.cells[0].widened)
        return weights

    def _output_kernels(self, cast):
        """The kernels of the output layer, each through `cast` (to the compute dtype, maybe widened): the
        kernel [H, V], or with tied embeddings the projection [H, E] and the target embedding transposed
        [E, V]."""
        if self.tied:
            return (cast(self.output_layer.projection), cast(tf.transpose(self.embedding.embeddings)))
        return (cast(self.output_layer.kernel),)

    def step_function(self, weights=None):
        """One search step `step(ids, state) -> (logits, state, attention or None)` (the protocol of
        mt/search.py), with the weights of `decode_weights` (computed now if not given) bound in."""
        weights = self.decode_weights() if weights is None else weights
        first = self.cells[0]
        no_dropout = [None] * len(self.cells)

        def step(ids, state):
            xw = first.project(self.embedding(ids), weights["input"])
            out, state, alignment = self._step(xw, state, no_dropout, weights)
            return self._logits(out, weights["output"]), state, alignment

        return step

    def _logits(self, x, kernels):
        """Outputs [..., H] -> float32 logits [..., V], the products in the kernels' dtype. (Inside `call`
        under a mixed policy Keras reads the bias in the compute dtype; elsewhere it is float32.) `kernels`
        come from `_output_kernels`, maybe widened."""
        widths = (self.config.emb_dim, self.vocab_size) if self.tied else (self.vocab_size,)
        product = tf.cast(x, kernels[0].dtype)
        for kernel, n in zip(kernels, widths):
            product = matmul(product, kernel, n) if x.shape.rank == 2 else project(product, kernel, n)
        # bias_add right on a float32 product: the graph optimizer fuses the two into one kernel, which
        # adds the bias as it writes the product instead of passing over [rows, vocabulary] again
        return tf.nn.bias_add(tf.cast(product, tf.float32), tf.cast(self.output_layer.bias, tf.float32))

    def output_logits(self, x):
        """Outputs [..., H] -> float32 logits [..., V]."""
        return self._logits(x, self._output_kernels(self.cells[0]._cast))

    # -- teacher forcing ------------------------------------------------------------------------------

    def _dropout_masks(self, time, batch, training):
        rate = self.config.dropout
        if not training or rate == 0.0:
            return [None] * len(self.cells)
        shape = [time, batch, self.config.dec_units]
        keep = [keras.random.uniform(shape, seed=self.seed_gen) >= rate for _ in self.cells]
        return [tf.cast(k, tf.float32) / (1.0 - rate) for k in keep]

    def teacher_forcing(self, state, tgt_in, training=False, taps=True, parallel=True):
        """From the initial DecoderState, the outputs [B, T, H] before the output layer for the target
        inputs tgt_in [B, T]. `taps`: hand the attention's gradients out of the loop through
        `attention_taps`. `parallel`: without input feeding, run the attention after the recurrence, over
        all steps at once (see `_parallel_teacher_forcing`)."""
        tapped = self.attention and taps
        emb = self.dropout(self.embedding(tgt_in), training=training)
        xw = tf.transpose(self.cells[0].project(emb), [1, 0, 2])
        steps = tf.shape(tgt_in)[1]
        masks = self._dropout_masks(steps, tf.shape(tgt_in)[0], training)
        if parallel and not self.feeding:
            return self._parallel_teacher_forcing(state, xw, masks)
        used = [i for i, m in enumerate(masks) if m is not None]
        weights = self._loop_weights()
        tap_tensors, outputs = ((), {})
        if tapped:
            tap_tensors, outputs = attention_taps(state.source.keys, state.source.memory, steps)
        # the loop carries the cells and the feed; with taps also every step's alignment for their gradient
        carried = (state.cells, state.feed)
        if tapped:
            carried += (tf.zeros(tf.shape(state.source.bias), tf.float32),)

        def body(carry, elems):
            step_masks = [None] * len(masks)
            for i, m in zip(used, elems[1 + len(tap_tensors):]):
                step_masks[i] = m
            step_taps = elems[1:1 + len(tap_tensors)] or None
            _, new, alignment = self._step(elems[0], state._replace(cells=carry[0], feed=carry[1]), step_masks,
                                           weights, step_taps)
            return (new.cells, new.feed, alignment) if tapped else (new.cells, new.feed)

        states = tf.scan(body, (xw, *tap_tensors, *[masks[i] for i in used]), initializer=carried)
        # what the taps' gradient needs: every step's attention query and alignment, [T, B, ...]
        if tapped:
            outputs.update(query=states[0][-1][0], alignment=states[2])
        return tf.transpose(states[1], [1, 0, 2])

    def _parallel_teacher_forcing(self, state, xw, masks):
        """Teacher forcing without input feeding: the same outputs as the loop of `_step`, computed layer
        by layer. A step's attention then depends on nothing later in the loop, so only the recurrence runs
        step by step (each layer over all steps in turn), and the attention and its output layer run once
        over all steps, as batched matrix products whose gradients need no taps.

        xw [T, B, G*H] is the first layer's projected input, `masks` the dropout masks of `_dropout_masks`.
        The products over all steps use the plain kernels (see `widen`); the recurrence the widened ones."""
        weights = self._loop_weights()
        x = None
        for i, cell in enumerate(self.cells):
            if i > 0:
                xw = cell.project(x if masks[i] is None else x * masks[i])
            recurrent = weights["recurrent"][i]
            states = tf.scan(lambda s, x_t, cell=cell, recurrent=recurrent: tuple(cell.step(x_t, s, recurrent)),
                             xw, initializer=tuple(state.cells[i]))
            x = states[0]  # [T, B, H], the layer's output at every step
        x = tf.transpose(x, [1, 0, 2])
        if self.attention:
            keys, memory = state.source.keys, state.source.memory
            low = tf.cast(x, keys.dtype)
            scores = tf.cast(tf.matmul(low, keys, transpose_b=True), tf.float32) + state.source.bias[:, None, :]
            alignment = tf.nn.softmax(scores, axis=-1)  # [B, T, S]
            context = tf.matmul(tf.cast(alignment, low.dtype), memory)
            both = tf.concat([context, low], axis=-1)
            x = tf.tanh(tf.cast(project(both, self.cells[0]._cast(self.attn_out.kernel)), tf.float32))
        if masks[0] is not None:
            x = x * tf.transpose(masks[0], [1, 0, 2])
        return x


class Seq2Seq(keras.Model):
    """Bidirectional recurrent encoder, recurrent decoder with Luong attention and input feeding.

        encode(src)                    -> DecoderState (batch first)
        step_function()                -> step(ids, state) -> (logits, state, attention or None), for a search
        decode_step(ids, state)        -> the same step, its weights cast at every call
        call((src, tgt_in), training)  -> logits [batch, time, vocab]   teacher forcing, used by training
    """

    attention_taps = True  # teacher forcing hands the attention's gradients out through taps (see there)
    parallel_teacher_forcing = True  # without input feeding, the attention runs over all steps at once

    def __init__(self, config: ModelConfig, src_vocab, tgt_vocab, **kwargs):
        super().__init__(**kwargs)
        self.config, self.src_vocab, self.tgt_vocab = config, src_vocab, tgt_vocab
        self.encoder = Encoder(config, src_vocab, name="encoder")
        self.decoder = Decoder(config, tgt_vocab, name="decoder")
        # every weight is created now, so weights can be loaded right away; in the order of earlier
        # versions, so that a seed gives the same initial weights
        self.encoder.embedding.build((None, None))
        self.encoder.built = True
        self.decoder.create_weights()
        self.built = True

    def build(self, input_shape=None):
        """Every weight is created in __init__."""
        self.built = True

    @property
    def attention(self):
        """The decoder attends to the source (model.attention is not "none")."""
        return self.decoder.attention

    @property
    def tgt_embedding(self):
        return self.decoder.embedding

    @property
    def output_layer(self):
        return self.decoder.output_layer

    def load_weights(self, filepath, *args, **kwargs):
        """Load a weights file of `save_weights`, also one written before the decoder was a layer of its
        own (see `_upgraded_weights`)."""
        with _upgraded_weights(self, filepath) as path:
            return super().load_weights(path, *args, **kwargs)

    def encode(self, src, training=False, longest_first=False):
        """src [B, S] int32 -> the decoder's initial DecoderState. `longest_first` promises rows sorted by
        length, longest first, and saves the encoder the work of their padding."""
        encoded, final, mask = self.encoder(src, training=training, longest_first=longest_first)
        return self.decoder.initial_state(encoded, final, mask)

    def step_function(self, weights=None):
        """The decoder's search step with its weights cast once, now (see Decoder.step_function)."""
        return self.decoder.step_function(weights)

    def decode_step(self, ids, state):
        """ids [B] int32 (the previous target token) -> (logits [B, V] float32, new state, attention [B, S]
        or None)."""
        return self.decoder.step_function()(ids, state)

    def call(self, inputs, training=False):
        """inputs = (src [B, S], tgt_in [B, T]) -> logits [B, T, V] (float32)."""
        src, tgt_in = inputs
        return self.output_logits(self.decoder_outputs(src, tgt_in, training=training))

    def output_logits(self, x):
        """Decoder outputs [..., H] -> float32 logits [..., V]."""
        return self.decoder.output_logits(x)

    def decoder_outputs(self, src, tgt_in, training=False):
        """Teacher forcing: src [B, S], tgt_in [B, T] -> the decoder's outputs [B, T, H] before the output
        layer (training computes the logits of the real target positions only, see Trainer._loss_sums)."""
        return self.decoder.teacher_forcing(self.encode(src, training=training), tgt_in, training,
                                            taps=self.attention_taps, parallel=self.parallel_teacher_forcing)


def attention_taps(keys, memory, steps):
    """Zeros added to the attention scores and contexts of teacher forcing, through which their gradients
    leave the time loop, and the dict the loop must fill with its "query" and "alignment" [T, B, ...].

    The keys and memory [B, S, D] are the same at every step of the decoder's loop. Differentiated inside
    the loop, every step of the backward loop would form their gradients as outer products [B, S, D] and add
    them to running sums: memory traffic of several full-size tensors a step (docs/design.md, "The
    attention's gradients leave the loop through taps").
    Instead the loop uses them without gradient, adds these zeros (taps [T, B, S] to the scores, [T, B, D]
    to the contexts), and the backward loop hands out the gradients of scores and contexts at every step
    as the taps' gradients. Here they become the gradients of keys and memory, each one batched product
    over all steps:
        d keys = sum over t of d scores_t (x) query_t,   d memory = sum over t of alignment_t (x) d context_t.
    """
    loop = {}

    @tf.custom_gradient
    def taps(keys, memory):
        shape = tf.shape(memory)
        zeros = (tf.zeros([steps, shape[0], shape[1]], tf.float32), tf.zeros([steps, shape[0], shape[2]],
                                                                              memory.dtype))

        def grad(d_scores, d_contexts):
            query = tf.cast(tf.cast(tf.stop_gradient(loop["query"]), keys.dtype), tf.float32)
            alignment = tf.cast(tf.cast(tf.stop_gradient(loop["alignment"]), memory.dtype), tf.float32)
            d_keys = tf.einsum("tbs,tbh->bsh", tf.cast(d_scores, tf.float32), query)
            d_memory = tf.einsum("tbs,tbd->bsd", alignment, tf.cast(d_contexts, tf.float32))
            return tf.cast(d_keys, keys.dtype), tf.cast(d_memory, memory.dtype)

        return zeros, grad

    return taps(keys, memory), loop


@contextlib.contextmanager
def _upgraded_weights(model, path):
    """`path`, or for a weights file of the earlier layout, a temporary copy in the current one.

    Keras names the groups of an .h5 weights file after the attributes that lead to each layer. Before
    the Decoder layer, the decoder's layers were attributes of the model itself: its own variable was the
    input-feeding kernel ("vars"), its cells, bridge and attention layers had groups of their own, and its
    embedding and output layer were listed under "layers" (as "embedding" and the last "dense_N"). The
    copy starts from the model's own weights in the current layout, so every group it expects is there,
    and takes each earlier value at its new place; a file that fits neither layout is an error."""
    import h5py

    from mt.folders import RunFolder

    if not str(path).endswith(".h5") or not os.path.isfile(path):
        yield path
        return
    with h5py.File(path, "r") as old:
        if "decoder" in old or "cells" not in old:
            yield path
            return
        values = {}
        old.visititems(lambda name, item: values.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset)
                       else None)
    denses = sorted(int(n.split("/")[1][len("dense_"):] or 0) for n in values
                    if re.fullmatch(r"layers/dense(_\d+)?/vars/\d+", n))
    output = f"layers/dense_{denses[-1]}/" if denses and denses[-1] else "layers/dense/"
    moves = {"vars/": "decoder/vars/", "layers/embedding/": "decoder/embedding/", output: "decoder/output_layer/",
             "encoder/": "encoder/"}
    moves.update({f"{name}/": f"decoder/{name}/" for name in ("attn_key", "attn_out", "bridge", "cells")})
    with tempfile.TemporaryDirectory(prefix=".mt-weights-") as folder:
        upgraded = os.path.join(folder, "upgraded" + RunFolder.WEIGHTS_SUFFIX)
        model.save_weights(upgraded)
        with h5py.File(upgraded, "r+") as new:
            expected = set()
            new.visititems(lambda name, item: expected.add(name) if isinstance(item, h5py.Dataset) else None)
            placed = set()
            for name, value in values.items():
                prefix = next((p for p in moves if name.startswith(p)), None)
                target = None if prefix is None else moves[prefix] + name[len(prefix):]
                if target not in expected or new[target].shape != value.shape or target in placed:
                    raise ValueError(f"{path}: weights of an unknown layout ({name} {value.shape})")
                new[target][...] = value
                placed.add(target)
            if placed != expected:
                raise ValueError(f"{path}: weights of an unknown layout (no value for "
                                 f"{', '.join(sorted(expected - placed))})")
        yield upgraded


def build_model(config: ModelConfig, src_vocab, tgt_vocab):
    return Seq2Seq(config, src_vocab, tgt_vocab, name="seq2seq")
