"""The character language model: an embedding, a stack of recurrent layers and a softmax over the
vocabulary.

    LanguageModel.run(ids, state)        -> (outputs [B, T, H], state): a chunk of a stream from a state
    LanguageModel.logits(outputs)        -> logits [..., V]
    LanguageModel.step_function()        -> step(ids, state) -> (logits, state, None), for mt/search.py

The layers are the translation model's `RecurrentCell`s (mt/model.py: LSTM, GRU or vanilla RNN), each
layer's input projection computed for all steps of a chunk in one product before its recurrence, as the
encoder does. Dropout (model.dropout) falls on the embeddings, between layers and before the softmax,
never on the recurrent connections, so the state carried from chunk to chunk is the one inference sees.
The ids a text never holds (PAD, BOS, EOS; UNK for bytes) get no probability: their logits are -1e9.
"""

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from mt.lm.config import LMModelConfig
from mt.model import NEG_INF, RecurrentCell, init, run_recurrence
from mt.runtime import avx512
from mt.tokenizer import BOS

WIDE_PRODUCTS_RUN_FULL = avx512()  # no need to widen the recurrent kernels (see recurrent_kernel)


class LMState(NamedTuple):
    """The state of a search over a language model (a nest for tf.nest and tf.while_loop)."""

    cells: tuple  # per layer, its cell's state: (h,) or (h, c), each [B, units] float32
    pending: tf.Tensor  # [B] int32: the id the first step reads (the search gives it BOS there)


class LanguageModel(keras.Model):
    """Embedding, `layers` recurrent cells of `units`, and an output layer over the vocabulary."""

    recurrent_taps = True  # the recurrent kernels' gradients leave the time loop (see recurrent_tap)

    def __init__(self, config: LMModelConfig, vocab_size, never=(), **kwargs):
        super().__init__(**kwargs)
        self.config, self.vocab_size = config, vocab_size
        self.embedding = keras.layers.Embedding(vocab_size, config.emb_dim, name="embedding",
                                                embeddings_initializer=init("uniform"))
        self.dropout = keras.layers.Dropout(config.dropout)
        dims = [config.emb_dim] + [config.units] * (config.layers - 1)
        self.cells = [RecurrentCell(config.cell, config.units, d, name=f"{config.cell}_{i}")
                      for i, d in enumerate(dims)]
        self.output_layer = keras.layers.Dense(vocab_size, name="output", kernel_initializer=init("glorot_uniform"))
        mask = np.zeros([vocab_size], np.float32)
        mask[list(never)] = NEG_INF
        self.never_mask = tf.constant(mask)
        # every weight now, so that a weights file loads at once
        self.embedding.build((None, None))
        self.output_layer.build((None, config.units))
        self.built = True

    def build(self, input_shape=None):
        """Every weight is created in __init__."""
        self.built = True

    def zero_state(self, batch):
        """The state at the start of a stream: zeros, a tuple per layer."""
        return tuple(cell.zero_state(batch) for cell in self.cells)

    def run(self, ids, state, training=False, cuts=(), detach=False, keep=None, return_layers=False):
        """Read the chunk ids [B, T] (T known) from `state`; returns (outputs, state).

        The outputs are the top layer's hidden states [B, T, H] (with dropout when training), or with
        `return_layers` a list of every layer's. `cuts`: positions inside the chunk where the recurrence
        is split; `detach` stops the gradient there, so none flows back across a cut. The state returned
        is the state after the whole chunk, or after its first `keep` characters (`keep` must be a cut)."""
        x = self.dropout(self.embedding(ids), training=training)
        length = ids.shape[1]
        bounds = [0, *cuts, length]
        if keep not in (None, length) and keep not in cuts:
            raise ValueError(f"keep={keep} must be one of the cuts {cuts}")
        layers, kept = [], []
        for i, (cell, cell_state) in enumerate(zip(self.cells, state)):
            if i:
                x = self.dropout(x, training=training)
            xw = cell.project(x)
            kernel = self.recurrent_kernel(cell)
            outputs, at_keep = [], None
            for start, end in zip(bounds[:-1], bounds[1:]):
                if start == keep:
                    at_keep = cell_state
                part = xw if len(bounds) == 2 else xw[:, start:end]
                out, cell_state = self.recurrence(cell, part, tuple(cell_state), kernel)
                outputs.append(out)
                if detach:
                    cell_state = tuple(tf.stop_gradient(s) for s in cell_state)
            x = outputs[0] if len(outputs) == 1 else tf.concat(outputs, 1)
            layers.append(x)
            kept.append(cell_state if at_keep is None else at_keep)
        if return_layers:
            return layers, tuple(kept)
        return self.dropout(x, training=training), tuple(kept)

    def recurrent_kernel(self, cell):
        """The cell's recurrent kernel in the compute dtype, prepared once for the loops of a call: widened
        (mt/model.py: widen) where the CPU lacks AVX-512, as measured on an AVX2 CPU; with AVX-512 the
        widening gains nothing in the forward products and made a training step dearer (docs/lm.md)."""
        return cell._cast(cell.recurrent) if WIDE_PRODUCTS_RUN_FULL else cell.widened(cell.recurrent)

    def recurrence(self, cell, xw, state, kernel):
        """run_recurrence over the projected inputs xw [B, T, G] from `state` with the prepared `kernel`;
        for LSTM and vanilla RNN cells (recurrent_taps) the kernel's gradient leaves the loop (see
        recurrent_tap)."""
        if not self.recurrent_taps or cell.kind == "gru":
            return run_recurrence(cell, xw, None, state, recurrent=kernel)
        loop = {}
        outputs, final = run_recurrence(cell, recurrent_tap(xw, kernel, loop), None, state,
                                        recurrent=tf.stop_gradient(kernel))
        loop["previous"] = tf.concat([state[0][:, None], outputs[:, :-1]], 1)
        return outputs, final

    def logits(self, outputs):
        """Hidden states [..., H] -> float32 logits [..., V], no probability on the ids no text holds."""
        kernel, bias = self.output_layer.kernel, self.output_layer.bias
        shape = tf.shape(outputs)
        flat = tf.reshape(tf.cast(outputs, kernel.dtype), [-1, shape[-1]])  # float32 (dropout may give bfloat16)
        logits = tf.nn.bias_add(tf.matmul(flat, kernel), bias + self.never_mask)
        return tf.reshape(logits, tf.concat([shape[:-1], [self.vocab_size]], 0))

    def call(self, ids, training=False):
        """ids [B, T] from the zero state -> logits [B, T, V]."""
        outputs, _ = self.run(ids, self.zero_state(tf.shape(ids)[0]), training=training)
        return self.logits(outputs)

    def search_state(self, cells, pending):
        """The initial state of a search: the cells' state and the id each row reads first."""
        return LMState(tuple(tuple(s) for s in cells), tf.convert_to_tensor(pending, tf.int32))

    def step_function(self):
        """step(ids [R], LMState) -> (logits [R, V], LMState, None): one character, as mt/search.py wants.

        At the first step the search passes BOS, which no text holds: the row reads its pending id (the
        last character of the prime) instead. The recurrent kernels are prepared once, outside the loop."""
        recurrent = [self.recurrent_kernel(cell) for cell in self.cells]

        def step(ids, state):
            x = self.embedding(tf.where(tf.equal(ids, BOS), state.pending, ids))
            new = []
            for cell, kernel, cell_state in zip(self.cells, recurrent, state.cells):
                cell_state = cell.step(cell.project(x), cell_state, kernel)
                new.append(cell_state)
                x = cell_state[0]
            return self.logits(x), LMState(tuple(new), state.pending), None

        return step


def recurrent_tap(xw, kernel, loop):
    """xw itself, through which the gradient of the recurrent `kernel` leaves the time loop.

    In an LSTM or vanilla RNN step the recurrent product h_{t-1} @ U is added to the projected input xw_t
    before any nonlinearity, so the gradient reaching xw_t is the gradient of that product's output, and
    the gradient of U is the sum over t of h_{t-1} (x) d xw_t. Differentiated inside the loop, every step of
    the backward loop would form that outer product and add it to a running [H, G] sum: a product of a few
    dozen rows and a pass over the whole kernel a step. Instead the loop multiplies by U without gradient,
    and here, once the backward loop has handed out d xw for every step, the kernel's gradient is one
    product over all steps. `loop["previous"]` must hold h_{t-1} [B, T, H] for every step (the caller sets
    it after the loop). A widened kernel gets zero gradient in its extra columns."""

    @tf.custom_gradient
    def tap(xw, kernel):
        def grad(d_xw):
            previous = tf.stop_gradient(loop["previous"])
            flat = tf.reshape(tf.cast(previous, kernel.dtype), [-1, previous.shape[-1]])
            d_flat = tf.reshape(tf.cast(d_xw, kernel.dtype), [-1, d_xw.shape[-1]])
            d_kernel = tf.matmul(flat, d_flat, transpose_a=True)
            extra = kernel.shape[-1] - d_kernel.shape[-1]
            return d_xw, tf.pad(d_kernel, [[0, 0], [0, extra]]) if extra else d_kernel

        return tf.identity(xw), grad

    return tap(xw, kernel)


def build_model(config: LMModelConfig, vocab):
    """The LanguageModel of `config` over `vocab` (a mt.lm.vocab.Vocabulary)."""
    return LanguageModel(config, vocab.size, vocab.never, name="language_model")


def load_model(run_dir, weights="best"):
    """(model, vocabulary, LMRunFolder) of the run folder of `mt lm train`, its `weights` (best, last or a
    weights file) loaded; a folder that is not a language model's is a UserError."""
    from mt.errors import UserError
    from mt.folders import LMRunFolder
    from mt.lm.vocab import Vocabulary
    from mt.model import weights_to_be_loaded

    folder = LMRunFolder(run_dir)
    folder.data_info()
    vocab = Vocabulary.from_record(folder.read_vocab(), folder.vocab_path)
    config = folder.load_config()
    path = folder.existing_weights(weights)
    keras.mixed_precision.set_global_policy(config.train.precision)  # the products of training
    with weights_to_be_loaded():
        model = build_model(config.model, vocab)
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError) as e:
        raise UserError(f"{path} does not hold this model's weights ({str(e).splitlines()[0][:160]}): train "
                        "the run again with `mt lm train --restart`") from None
    return model, vocab, folder
