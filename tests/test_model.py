import numpy as np
import pytest
import tensorflow as tf

from mt.config import ModelConfig
from mt import model as model_module
from mt.model import AttentionMemory, DecoderState, build_model, matmul, widen
from mt.tokenizer import BOS

SRC = np.array([[5, 6, 7, 8, 3], [9, 4, 3, 0, 0]], np.int32)
TGT_IN = np.array([[BOS, 5, 6, 7], [BOS, 8, 0, 0]], np.int32)


def tiny(**overrides):
    settings = dict(emb_dim=8, enc_units=6, dec_units=12, enc_layers=2, dec_layers=2, dropout=0.3)
    settings.update(overrides)
    return build_model(ModelConfig(**settings), 20, 24)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("attention", ["general", "dot", "none"])
def test_teacher_forcing_matches_step_by_step_decoding(cell, attention):
    model = tiny(cell=cell, attention=attention)
    logits = np.asarray(model((SRC, TGT_IN)))
    state = model.encode(SRC)
    steps = []
    for t in range(TGT_IN.shape[1]):
        step_logits, state, _ = model.decode_step(TGT_IN[:, t], state)
        steps.append(np.asarray(step_logits))
    np.testing.assert_allclose(np.stack(steps, 1), logits, atol=1e-5)


@pytest.mark.parametrize("cell, attention, feeding, layers", [("lstm", "general", True, 1), ("gru", "dot", True, 2),
                                                            ("rnn", "general", False, 2), ("lstm", "dot", False, 1)])
@pytest.mark.parametrize("compiled", [False, True])
def test_attention_taps_give_the_gradients_of_plain_differentiation(cell, attention, feeding, layers, compiled):
    """Teacher forcing hands the attention's gradients out of its time loop through taps (model.attention_taps);
    every weight's gradient must be the one of differentiating through the loop, in eager mode and compiled."""
    model = tiny(cell=cell, attention=attention, input_feeding=feeding, dec_layers=layers, dropout=0.0,
                 enc_units=6, dec_units=12)
    for layer in (model.encoder.embedding, model.tgt_embedding):  # large activations: a peaked attention
        layer.set_weights([w * 30.0 for w in layer.get_weights()])
    weights = tf.random.stateless_normal([2, TGT_IN.shape[1], 24], seed=[1, 2])

    def gradients():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model((SRC, TGT_IN), training=True) * weights)
        return loss, tape.gradient(loss, model.trainable_variables)

    def run():  # a new tf.function each time: the taps are chosen when the function is traced
        return (tf.function(gradients) if compiled else gradients)()

    loss, tapped = run()
    model.attention_taps = False
    plain_loss, plain = run()
    assert float(loss) == pytest.approx(float(plain_loss), rel=1e-6)
    names = [v.path for v in model.trainable_variables]
    # every weight but attn_key, which dot attention leaves unused, gets a gradient
    assert [n for n, g in zip(names, tapped) if g is None] == (["attn_key/kernel"] if attention == "dot" else [])
    for name, a, b in zip(names, tapped, plain):
        if a is None:
            assert b is None, name
            continue
        a, b = tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy()
        # relative to each gradient's scale: some are tiny (attn_key's, with nearly uniform attention)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max(), err_msg=name)
        assert np.abs(b).max() > 0, name


def test_widened_kernels_give_the_plain_product():
    x = tf.random.normal([5, 32])
    for n, width in ((512, 528), (1024, 1040), (300, 300), (8000, 8000)):
        kernel = tf.random.normal([32, n])
        wide = widen(kernel)
        assert wide.shape == (32, width)
        np.testing.assert_array_equal(np.asarray(wide)[:, n:], 0.0)
        np.testing.assert_allclose(np.asarray(matmul(x, wide, n)), np.asarray(tf.matmul(x, kernel)), atol=1e-4)


@pytest.mark.parametrize("cell,units", [("lstm", 64), ("gru", 256), ("rnn", 256)])
def test_a_model_with_widened_loop_kernels_computes_what_a_plain_one_does(cell, units, monkeypatch):
    # gate kernels 256 (LSTM of 64 units, RNN of 256) or 768 (GRU of 256) columns wide, which the time
    # loops (encoder, decoder, search step) widen
    model = tiny(cell=cell, emb_dim=16, enc_units=units, dec_units=units)
    widened_logits = np.asarray(model((SRC, TGT_IN)))
    state = model.encode(SRC)
    step_logits, _, _ = model.decode_step(TGT_IN[:, 0], state)
    monkeypatch.setattr(model_module, "WIDEN_EXTRA", 0)
    plain_logits = np.asarray(model((SRC, TGT_IN)))
    plain_step, _, _ = model.decode_step(TGT_IN[:, 0], model.encode(SRC))
    np.testing.assert_allclose(widened_logits, plain_logits, atol=1e-5)
    np.testing.assert_allclose(np.asarray(step_logits), np.asarray(plain_step), atol=1e-5)
    np.testing.assert_allclose(np.asarray(step_logits), widened_logits[:, 0], atol=1e-5)


def test_source_padding_does_not_change_the_output():
    model = tiny()
    alone = np.asarray(model((SRC[1:, :3], TGT_IN[1:, :2])))
    padded = np.asarray(model((SRC, TGT_IN)))[1:, :2]
    np.testing.assert_allclose(alone, padded, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_an_encoder_told_its_rows_are_longest_first_skips_padding_and_gives_the_same_state(cell):
    model = tiny(cell=cell)
    src = np.array([[5, 6, 7, 8, 9, 3], [9, 4, 3, 0, 0, 0], [11, 12, 3, 0, 0, 0], [7, 0, 0, 0, 0, 0]], np.int32)
    plain, packed = model.encode(src), model.encode(src, longest_first=True)
    compiled = tf.function(lambda s: model.encode(s, longest_first=True))(tf.constant(src))
    tf.nest.assert_same_structure(plain, packed)
    tf.nest.assert_same_structure(plain, compiled)
    flat = [tf.nest.flatten(state) for state in (plain, packed, compiled)]
    for name, (a, b, c) in enumerate(zip(*flat)):
        np.testing.assert_allclose(b, a, atol=1e-6, err_msg=f"state tensor {name}")
        np.testing.assert_allclose(c, a, atol=1e-6, err_msg=f"state tensor {name}")
    # the encoder output of each sentence is that of the sentence encoded alone
    for row, length in enumerate([6, 3, 3, 1]):
        alone = model.encode(src[row:row + 1, :length], longest_first=True).source.memory
        np.testing.assert_allclose(packed.source.memory[row, :length], alone[0], atol=1e-6)


def test_attention_is_a_distribution_over_real_source_tokens():
    model = tiny()
    _, _, weights = model.decode_step(TGT_IN[:, 0], model.encode(SRC))
    weights = np.asarray(weights)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    assert np.all(weights[SRC == 0] == 0.0)
    assert np.all(weights[SRC != 0] > 0.0)


def test_dropout_only_in_training():
    model = tiny()
    a, b = np.asarray(model((SRC, TGT_IN))), np.asarray(model((SRC, TGT_IN)))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(np.asarray(model((SRC, TGT_IN), training=True)), a)


@pytest.mark.slow
@pytest.mark.parametrize("feeding, tied", [(True, False), (False, True)])
def test_a_few_steps_fit_a_tiny_batch(feeding, tied):
    import keras

    keras.utils.set_random_seed(0)
    model = tiny(dropout=0.0, emb_dim=16, input_feeding=feeding, tie_embeddings=tied)
    tgt_out = np.array([[5, 6, 7, 3], [8, 3, 0, 0]], np.int32)
    opt = keras.optimizers.Adam(0.02)

    def loss_fn():
        logits = model((SRC, TGT_IN), training=True)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tgt_out, logits=logits)
        mask = tf.cast(tgt_out != 0, tf.float32)
        return tf.reduce_sum(nll * mask) / tf.reduce_sum(mask)

    first = float(loss_fn())
    for _ in range(100):
        with tf.GradientTape() as tape:
            loss = loss_fn()
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    assert float(loss_fn()) < 0.1 * first


@pytest.mark.parametrize("cell, attention", [("lstm", "general"), ("gru", "dot"), ("rnn", "none")])
def test_the_decoder_state_is_typed(cell, attention):
    model = tiny(cell=cell, attention=attention, dec_layers=2)
    state = model.encode(SRC)
    assert isinstance(state, DecoderState) and len(state.cells) == 2
    assert all(len(layer) == (2 if cell == "lstm" else 1) for layer in state.cells)
    assert state.feed.shape == (2, 12)
    if attention == "none":
        assert state.source == () and model.decode_step(TGT_IN[:, 0], state)[2] is None
    else:
        assert isinstance(state.source, AttentionMemory)
        assert state.source.memory.shape == (2, 5, 12) and state.source.bias.shape == (2, 5)
        _, new, _ = model.decode_step(TGT_IN[:, 0], state)
        assert new.source is state.source  # the step passes the attention memory through unchanged


def test_the_decoder_is_a_layer_of_the_model():
    model = tiny()
    assert model.tgt_embedding is model.decoder.embedding and model.output_layer is model.decoder.output_layer
    assert model.output_layer.bias.shape == (24,)
    own = {id(v) for v in model.decoder.weights}
    assert own and own | {id(v) for v in model.encoder.weights} == {id(v) for v in model.weights}


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("attention, layers", [("general", 2), ("dot", 1), ("none", 2)])
def test_teacher_forcing_without_input_feeding_runs_in_parallel_and_gives_the_loops_outputs_and_gradients(
        cell, attention, layers):
    model = tiny(cell=cell, attention=attention, input_feeding=False, dec_layers=layers, dropout=0.0)
    weights = tf.random.stateless_normal([2, TGT_IN.shape[1], 24], seed=[3, 4])

    def run(parallel):
        model.parallel_teacher_forcing = parallel
        with tf.GradientTape() as tape:
            logits = model((SRC, TGT_IN), training=True)
            loss = tf.reduce_sum(logits * weights)
        return logits.numpy(), tape.gradient(loss, model.trainable_variables)

    fast, fast_grads = run(True)
    loop, loop_grads = run(False)
    np.testing.assert_allclose(fast, loop, atol=1e-5)
    for variable, a, b in zip(model.trainable_variables, fast_grads, loop_grads):
        assert (a is None) == (b is None), variable.path
        if a is not None:
            a, b = tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy()
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(b).max()), err_msg=variable.path)
    # the search's step gives the outputs of teacher forcing
    model.parallel_teacher_forcing = True
    state, steps = model.encode(SRC), []
    for t in range(TGT_IN.shape[1]):
        step_logits, state, _ = model.decode_step(TGT_IN[:, t], state)
        steps.append(np.asarray(step_logits))
    np.testing.assert_allclose(np.stack(steps, 1), np.asarray(model((SRC, TGT_IN))), atol=1e-5)


def test_the_parallel_path_keeps_dropout_where_the_loop_has_it():
    model = tiny(input_feeding=False, dropout=0.3)
    seeds = [v.numpy() for v in model.non_trainable_variables]  # the dropout layers' random states
    results = []
    for parallel in (True, False):
        model.parallel_teacher_forcing = parallel
        for variable, value in zip(model.non_trainable_variables, seeds):  # the same masks for both
            variable.assign(value)
        results.append(np.asarray(model((SRC, TGT_IN), training=True)))
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)
    assert not np.allclose(results[0], np.asarray(model((SRC, TGT_IN))))


def test_tied_embeddings_share_the_target_embedding_with_the_output_layer(tmp_path):
    import keras

    keras.utils.set_random_seed(0)  # initial weights that do not depend on the tests run before
    untied = tiny(dropout=0.0, emb_dim=16, tie_embeddings=False)
    tied = tiny(dropout=0.0, emb_dim=16, tie_embeddings=True)
    assert tied.count_params() == untied.count_params() - 12 * 24 + 12 * 16  # [H, V] -> [H, E]
    assert tied.output_layer.bias.shape == (24,) and tied.output_layer.projection.shape == (12, 16)
    # logits are the projected output times the target embedding transposed, plus the bias
    hidden = tied.decoder_outputs(SRC, TGT_IN)
    expected = (tf.matmul(tf.matmul(hidden, tied.output_layer.projection), tied.tgt_embedding.embeddings,
                          transpose_b=True) + tied.output_layer.bias)
    np.testing.assert_allclose(np.asarray(tied((SRC, TGT_IN))), expected.numpy(), atol=1e-5)
    state, steps = tied.encode(SRC), []
    for t in range(TGT_IN.shape[1]):
        step_logits, state, _ = tied.decode_step(TGT_IN[:, t], state)
        steps.append(np.asarray(step_logits))
    np.testing.assert_allclose(np.stack(steps, 1), expected.numpy(), atol=1e-5)
    # it trains: the embedding gets the gradients of both its uses
    tgt_out = np.array([[5, 6, 7, 3], [8, 3, 0, 0]], np.int32)
    opt = keras.optimizers.Adam(0.02)

    @tf.function
    def loss_fn():
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tgt_out, logits=tied((SRC, TGT_IN), training=True))
        mask = tf.cast(tgt_out != 0, tf.float32)
        return tf.reduce_sum(nll * mask) / tf.reduce_sum(mask)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = loss_fn()
        opt.apply(tape.gradient(loss, tied.trainable_variables), tied.trainable_variables)

    first = float(loss_fn())
    for _ in range(200):
        train_step()
    assert float(loss_fn()) < 0.1 * first
    # it saves and loads; untied weights files keep their layout
    path = str(tmp_path / "tied.weights.h5")
    tied.save_weights(path)
    again = tiny(dropout=0.0, emb_dim=16, tie_embeddings=True)
    again.load_weights(path)
    np.testing.assert_allclose(np.asarray(again((SRC, TGT_IN))), np.asarray(tied((SRC, TGT_IN))), atol=1e-6)
    plain = str(tmp_path / "untied.weights.h5")
    untied.save_weights(plain)
    with h5py_file(plain) as f:
        assert "decoder/output_layer/vars/0" in f and "decoder/output_layer/vars/1" in f
    copy = tiny(dropout=0.0, emb_dim=16, tie_embeddings=False)
    copy.load_weights(plain)
    np.testing.assert_allclose(np.asarray(copy((SRC, TGT_IN))), np.asarray(untied((SRC, TGT_IN))), atol=1e-6)


def h5py_file(path):
    import h5py

    return h5py.File(path, "r")
