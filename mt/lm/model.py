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
from mt.tokenizer import BOS


class LMState(NamedTuple):
    """The state of a search over a language model (a nest for tf.nest and tf.while_loop)."""

    cells: tuple  # per layer, its cell's state: (h,) or (h, c), each [B, units] float32
    pending: tf.Tensor  # [B] int32: the id the first step reads (the search gives it BOS there)


class LanguageModel(keras.Model):
    """Embedding, `layers` recurrent cells of `units`, and an output layer over the vocabulary."""

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
            outputs, at_keep = [], None
            for start, end in zip(bounds[:-1], bounds[1:]):
                if start == keep:
                    at_keep = cell_state
                part = xw if len(bounds) == 2 else xw[:, start:end]
                out, cell_state = run_recurrence(cell, part, None, tuple(cell_state))
                outputs.append(out)
                if detach:
                    cell_state = tuple(tf.stop_gradient(s) for s in cell_state)
            x = outputs[0] if len(outputs) == 1 else tf.concat(outputs, 1)
            layers.append(x)
            kept.append(cell_state if at_keep is None else at_keep)
        if return_layers:
            return layers, tuple(kept)
        return self.dropout(x, training=training), tuple(kept)

    def logits(self, outputs):
        """Hidden states [..., H] -> float32 logits [..., V], no probability on the ids no text holds."""
        kernel, bias = self.output_layer.kernel, self.output_layer.bias
        shape = tf.shape(outputs)
        flat = tf.reshape(outputs, [-1, shape[-1]])
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
        recurrent = [cell.widened(cell.recurrent) for cell in self.cells]

        def step(ids, state):
            x = self.embedding(tf.where(tf.equal(ids, BOS), state.pending, ids))
            new = []
            for cell, kernel, cell_state in zip(self.cells, recurrent, state.cells):
                cell_state = cell.step(cell.project(x), cell_state, kernel)
                new.append(cell_state)
                x = cell_state[0]
            return self.logits(x), LMState(tuple(new), state.pending), None

        return step


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
    with weights_to_be_loaded():
        model = build_model(config.model, vocab)
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError) as e:
        raise UserError(f"{path} does not hold this model's weights ({str(e).splitlines()[0][:160]}): train "
                        "the run again with `mt lm train --restart`") from None
    return model, vocab, folder
