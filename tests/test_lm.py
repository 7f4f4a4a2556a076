"""The character language model (`mt lm`): truncated BPTT against full BPTT, where gradients stop,
resuming mid-stream, sampling, bits per character, one-line errors, and its cells."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from mt.cli import cli
from mt.errors import UserError
from mt.folders import LMRunFolder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = """
model: {emb_dim: 8, units: 16, layers: 2, dropout: 0.0}
train: {batch_size: 4, bptt: 16, learning_rate: 0.01, eval_every: 20, log_every: 5, checkpoint_every: 10,
        eval_chunk: 32, precision: float32}
"""
C_LINES = ["static int add(int a, int b) {", "\treturn a + b; /* sum */", "}", "",
           'const char *s = "x(y";  // a string', "int t[3] = {1, (2), 3};"]


def c_text(lines=300):
    return "".join(C_LINES[i % len(C_LINES)] + "\n" for i in range(lines))


@pytest.fixture(scope="module")
def tf():
    from mt.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow

    return tensorflow


def tiny_config(tmp_path, text=TINY, name="tiny.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def trainer_for(tmp_path, text, config=TINY, dev=None, out="run"):
    from mt.lm.streams import Text
    from mt.lm.train import LMTrainer, configured

    texts = Text(text, [{"path": "t", "sha256": "0", "bytes": len(text), "lines": text.count("\n")}])
    dev_text = None if dev is None else Text(dev, [{"path": "d", "sha256": "1", "bytes": len(dev), "lines": 1}])
    return LMTrainer(configured(tiny_config(tmp_path, config), {}), texts, dev_text, LMRunFolder(tmp_path / out))


def tiny_model(tf, cell="lstm", vocab_size=12, layers=2, dropout=0.0):
    import keras

    from mt.lm.config import LMModelConfig
    from mt.lm.model import LanguageModel

    keras.utils.set_random_seed(3)
    return LanguageModel(LMModelConfig(cell=cell, emb_dim=6, units=10, layers=layers, dropout=dropout), vocab_size,
                         never=(0, 2, 3))


# -- truncated BPTT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_chunks_read_with_the_state_carried_give_the_outputs_of_one_pass_over_the_stream(tf, cell):
    model = tiny_model(tf, cell)
    ids = tf.constant(np.random.RandomState(0).randint(4, 12, size=(3, 48)), tf.int32)
    whole, final = model.run(ids, model.zero_state(3))
    state, parts = model.zero_state(3), []
    for start in range(0, 48, 16):
        out, state = model.run(ids[:, start:start + 16], state)
        parts.append(out)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole.numpy(), atol=1e-6)
    for a, b in zip(tf.nest.flatten(state), tf.nest.flatten(final)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_the_training_steps_losses_are_full_bptt_losses_over_the_streams(tf, tmp_path):
    """At learning rate 0 the weights stay, and the loss of each update (truncated BPTT, the state carried
    by the trainer) is the mean loss of full BPTT over the same stretch of every stream."""
    trainer = trainer_for(tmp_path, c_text(60))
    trainer._restore()
    streams, model = trainer.streams, trainer.model
    losses = []
    for _ in range(3):
        inputs, targets = streams.window_at(trainer.count("chunk"))
        loss_sum, count, _, _ = trainer.train_step(inputs, targets, tf.constant(0.0))
        losses.append(float(loss_sum) / float(count))
    span = 3 * streams.forward
    outputs, _ = model.run(tf.constant(streams.rows[:, :span]), model.zero_state(streams.batch))
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=streams.rows[:, 1:span + 1],
                                                         logits=model.logits(outputs)).numpy()
    full = [nll[:, i * streams.forward:(i + 1) * streams.forward].mean() for i in range(3)]
    np.testing.assert_allclose(losses, full, rtol=1e-5)
    assert trainer.count("chunk") == 3 and trainer.count("step") == 3


def embedding_gradient(tf, trainer, chunk, symbols):
    """The largest |gradient| of the embedding rows of `symbols` in update `chunk`, after the updates
    before it (which leave it their carried state)."""
    trainer._restore()
    for before in range(chunk):
        trainer.train_step(*trainer.streams.window_at(before), tf.constant(0.01))
    assert trainer.count("chunk") == chunk
    inputs, targets = trainer.streams.window_at(chunk)
    _, grads, _ = trainer.gradients(inputs, targets)
    index = [v.path for v in trainer.model.trainable_variables].index(trainer.model.embedding.embeddings.path)
    ids = [trainer.vocab.id_of(s) for s in symbols]
    return float(np.abs(grads[index].numpy()[ids]).max())


def test_no_gradient_flows_back_past_a_chunk_boundary(tf, tmp_path):
    """One stream, 'ab' for 64 characters, then 'cd': update 2 reads only 'cd' from a state that 'ab' made;
    the embeddings of a and b get no gradient from it. With a backward length reaching back into the 'ab'
    characters they do."""
    one = TINY.replace("batch_size: 4", "batch_size: 1").replace("bptt: 16", "bptt: 32")
    text = "ab" * 32 + "cd" * 60 + "\n"
    assert embedding_gradient(tf, trainer_for(tmp_path, text, one, dev="abcd\n"), 2, "ab") == 0.0
    assert embedding_gradient(tf, trainer_for(tmp_path, text, one, dev="abcd\n"), 2, "cd") > 0.0
    # backward 48: update 2 reads characters 64-111 and counts the loss of 80-111, so text 'ab' up to 80
    longer = one.replace("bptt: 32", "bptt: 32, bptt_backward: 48")
    text = "ab" * 40 + "cd" * 60 + "\n"
    trainer = trainer_for(tmp_path, text, longer, dev="abcd\n", out="longer")
    assert trainer.streams.window == 48
    assert embedding_gradient(tf, trainer, 2, "ab") > 0.0


def test_a_shorter_backward_length_cuts_the_gradient_inside_the_chunk(tf):
    """bptt_backward below bptt: the recurrence is cut, and the outputs after a cut get no gradient from
    the inputs before it, but their values are those of one pass."""
    model = tiny_model(tf)
    ids = tf.constant([[4] * 8 + [5] * 8], tf.int32)
    plain, _ = model.run(ids, model.zero_state(1))
    with tf.GradientTape() as tape:
        out, _ = model.run(ids, model.zero_state(1), cuts=(8,), detach=True)
        after_cut = tf.reduce_sum(out[:, 8:])
    grad = tf.convert_to_tensor(tape.gradient(after_cut, model.embedding.embeddings)).numpy()
    assert np.abs(grad[4]).max() == 0.0 and np.abs(grad[5]).max() > 0.0
    np.testing.assert_allclose(out.numpy(), plain.numpy(), atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "rnn", "gru"])
def test_the_recurrent_kernels_gradient_taken_after_the_loop_is_the_gradient_of_autodiff(tf, cell, monkeypatch):
    from mt.lm.model import LanguageModel

    model = tiny_model(tf, cell)
    ids = tf.constant(np.random.RandomState(2).randint(4, 12, size=(3, 20)), tf.int32)
    state = tuple(tuple(tf.random.normal(tf.shape(s), seed=1) for s in layer) for layer in model.zero_state(3))

    def gradients():
        with tf.GradientTape() as tape:
            outputs, _ = model.run(ids, state, cuts=(8,))
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids, logits=model.logits(outputs)))
        return [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]

    tapped = gradients()
    monkeypatch.setattr(LanguageModel, "recurrent_taps", False)
    for a, b, v in zip(tapped, gradients(), model.trainable_variables):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=v.path)


# -- resuming ---------------------------------------------------------------------------------------------


def weights_of(run):
    import h5py

    values = {}
    with h5py.File(LMRunFolder(run).weights_path("last"), "r") as f:
        f.visititems(lambda name, item: values.__setitem__(name, item[()]) if hasattr(item, "shape") else None)
    return values


def test_a_run_interrupted_mid_stream_resumes_at_the_same_place_and_ends_with_the_uninterrupted_weights(
        tf, tmp_path, monkeypatch):
    """Stopped after update 17 (as Ctrl-C stops it), the run resumes at the same column of every stream with
    the same carried state, crosses an epoch boundary (where the state starts again at zeros) and ends with
    the weights of a run that was never stopped; dropout draws included."""
    from mt.lm import train as lm_train
    from mt.lm.streams import read_texts

    text = tmp_path / "t.txt"
    text.write_text(c_text(120))
    config = tiny_config(tmp_path, TINY.replace("dropout: 0.0", "dropout: 0.2"), "dropout.yaml")
    lm_train.run([str(text)], str(tmp_path / "straight"), config, max_steps=45)

    after, stopped = lm_train.LMTrainer._after_step, {}

    def stop_at_17(trainer):
        reason = after(trainer)
        if trainer.count("step") == 17:
            trainer.stop_requested = True
            stopped.update(position=(trainer.count("epoch"), trainer.count("chunk")), chunks=trainer.streams.chunks,
                           carried=[v.numpy().copy() for layer in trainer.carried for v in layer])
        return reason

    monkeypatch.setattr(lm_train.LMTrainer, "_after_step", stop_at_17)
    with pytest.raises(KeyboardInterrupt):
        lm_train.run([str(text)], str(tmp_path / "cut"), config, max_steps=45)
    monkeypatch.undo()
    assert 17 < stopped["chunks"] < 45 and stopped["position"] == (0, 17)  # an epoch ends after the stop
    assert np.abs(stopped["carried"][0]).max() > 0

    folder = LMRunFolder(tmp_path / "cut")
    resumed = lm_train.LMTrainer(folder.load_config(), read_texts([str(text)]), None, folder)
    resumed._restore()
    assert (resumed.count("step"), resumed.count("epoch"), resumed.count("chunk")) == (17, *stopped["position"])
    for saved, restored in zip(stopped["carried"], [v.numpy() for layer in resumed.carried for v in layer]):
        np.testing.assert_array_equal(saved, restored)

    lm_train.run([str(text)], str(tmp_path / "cut"), config, max_steps=45)
    assert json.loads((tmp_path / "cut" / "done.json").read_text())["epoch"] >= 1
    straight, cut = weights_of(tmp_path / "straight"), weights_of(tmp_path / "cut")
    assert straight.keys() == cut.keys()
    for name in straight:
        np.testing.assert_array_equal(straight[name], cut[name], err_msg=name)


def test_a_resume_on_other_text_or_with_other_settings_is_refused(tf, tmp_path):
    from mt.lm import train as lm_train

    text, other = tmp_path / "t.txt", tmp_path / "o.txt"
    text.write_text(c_text(80))
    other.write_text(c_text(81))
    config = tiny_config(tmp_path)
    lm_train.run([str(text)], str(tmp_path / "run"), config, max_steps=3)
    with pytest.raises(UserError, match="other text"):
        lm_train.run([str(other)], str(tmp_path / "run"), config, max_steps=6)
    bigger = tiny_config(tmp_path, TINY.replace("units: 16", "units: 24"), "bigger.yaml")
    with pytest.raises(UserError, match="model.units 16 -> 24"):
        lm_train.run([str(text)], str(tmp_path / "run"), bigger, max_steps=3)
    lm_train.run([str(other)], str(tmp_path / "run"), bigger, max_steps=3, restart=True)
    assert LMRunFolder(tmp_path / "run").load_config().model.units == 24


@pytest.mark.slow
def test_a_killed_lm_run_resumes_and_ends_like_an_uninterrupted_one(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(c_text(400))
    config = tiny_config(tmp_path, TINY.replace("dropout: 0.0", "dropout: 0.1"))
    env = {**os.environ, "PYTHONPATH": ROOT}

    def command(out):
        return [sys.executable, "-m", "mt.cli", "lm", "train", "--text", str(text), "--out", str(out), "--config",
                config, "--max-steps", "300", "--checkpoint-every", "10"]

    run = tmp_path / "killed"
    process = subprocess.Popen(command(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 240
        while not any(n.endswith(".index") for n in os.listdir(run / "checkpoints")) if (run / "checkpoints").exists() \
                else True:
            assert process.poll() is None and time.time() < deadline, process.stderr.read()[-2000:]
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert not (run / "done.json").exists()
    resumed = subprocess.run(command(run), capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0 and "Resuming from step" in resumed.stderr, resumed.stderr[-2000:]
    subprocess.run(command(tmp_path / "straight"), capture_output=True, text=True, env=env, timeout=600, check=True)
    straight, killed = weights_of(tmp_path / "straight"), weights_of(run)
    for name in straight:
        np.testing.assert_allclose(straight[name], killed[name], atol=1e-6, err_msg=name)


# -- sampling ---------------------------------------------------------------------------------------------


def test_sampling_with_a_seed_is_reproducible_and_argmax_follows_the_most_probable_character(tf):
    from mt.lm.sample import sample_text
    from mt.lm.vocab import Vocabulary
    from mt.search_options import SearchOptions

    vocab = Vocabulary.build("char", "abcdefgh ()\n")
    model = tiny_model(tf, vocab_size=vocab.size)
    sample = SearchOptions(search="sample", temperature=1.5, seed=7)
    first = sample_text(model, vocab, "ab(", 60, sample)
    assert len(first) == 60 and "\ufffd" not in first
    assert sample_text(model, vocab, "ab(", 60, sample) == first
    assert sample_text(model, vocab, "ab(", 60, sample.replace(seed=8)) != first
    greedy = sample_text(model, vocab, "ab(", 30, SearchOptions(search="greedy"))
    assert sample_text(model, vocab, "ab(", 30, SearchOptions(search="greedy")) == greedy
    # the search's greedy path is the argmax of the model read character by character (UNK never drawn)
    ids, state, expected = list(vocab.encode("ab(")), model.zero_state(1), []
    out, state = model.run(tf.constant([ids]), state)
    for _ in range(30):
        logits = model.logits(out[:, -1]).numpy()[0]
        logits[1] = -np.inf
        best = int(np.argmax(logits))
        expected.append(best)
        out, state = model.run(tf.constant([[best]]), state)
    assert greedy == vocab.decode(expected)


def test_a_byte_vocabulary_reads_and_writes_any_utf8(tf):
    from mt.lm.vocab import Vocabulary

    vocab = Vocabulary.build("byte", "")
    text = "naïve “quote” ✓\n"
    assert vocab.decode(vocab.encode(text)) == text and len(vocab.encode(text)) == len(text.encode())
    chars = Vocabulary.build("char", "abc\n", min_count=1)
    assert chars.decode(chars.encode("abz")) == "ab\ufffd" and chars.unknown(chars.encode("abz")) == 1


# -- evaluation -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from mt.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    from mt.lm import train as lm_train

    folder = tmp_path_factory.mktemp("lm")
    (folder / "t.txt").write_text(c_text(200))
    (folder / "held.txt").write_text(c_text(40))
    lm_train.run([str(folder / "t.txt")], str(folder / "run"), tiny_config(folder), max_steps=25)
    return folder


def test_a_uniform_model_has_log2_of_its_vocabulary_bits_per_character(trained):
    from mt.lm.evaluate import run as evaluate
    from mt.lm.model import load_model

    model, vocab, folder = load_model(trained / "run", "last")
    model.output_layer.kernel.assign(np.zeros(model.output_layer.kernel.shape, np.float32))
    model.output_layer.bias.assign(np.zeros(model.output_layer.bias.shape, np.float32))
    uniform = str(trained / "uniform.weights.h5")
    folder.save_weights_file(model, uniform)
    result = evaluate(str(trained / "run"), [str(trained / "held.txt")], weights=uniform, as_json=True)
    possible = vocab.size - len(vocab.never)  # every character of the vocabulary and UNK
    assert result["bits_per_char"] == pytest.approx(math.log2(possible), rel=1e-6)
    assert result["predictions"] == len(c_text(40)) - 1


def test_bits_per_character_are_the_models_log_probabilities_of_the_text(tf, trained):
    """Evaluated as one stream, the figure is minus the mean log2-probability of every character after the
    first, computed here directly from one pass over the text."""
    from mt.lm.evaluate import run as evaluate
    from mt.lm.model import load_model

    model, vocab, _ = load_model(trained / "run", "last")
    ids = vocab.encode(c_text(40))
    outputs, _ = model.run(tf.constant(ids[None, :-1]), model.zero_state(1))
    log_probs = tf.nn.log_softmax(model.logits(outputs)).numpy()[0]
    direct = -np.mean(log_probs[np.arange(len(ids) - 1), ids[1:]]) / math.log(2)
    result = evaluate(str(trained / "run"), [str(trained / "held.txt")], weights="last", streams=1)
    assert result["bits_per_char"] == pytest.approx(direct, rel=1e-5)
    assert result["bits_per_char"] < math.log2(vocab.size - len(vocab.never))  # it has learned something


def test_the_evaluation_rows_count_every_prediction_once():
    from mt.lm.streams import eval_rows

    ids = np.arange(4, 4 + 9001) % 50 + 4
    inputs, targets, predictions = eval_rows(ids, 64, 100)
    assert predictions == 9000 and inputs.shape[0] == 2 and inputs.shape[1] % 100 == 0
    real = targets != 0
    assert real.sum() == 9000
    assert sorted(zip(inputs[real].tolist(), targets[real].tolist())) == sorted(zip(ids[:-1].tolist(),
                                                                                     ids[1:].tolist()))


# -- one-line errors --------------------------------------------------------------------------------------


def one_line_error(args):
    result = CliRunner().invoke(cli, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize("args, words", [
    (["lm", "train", "--text", "missing.txt", "--out", "new"], ["missing.txt", "No such file"]),
    (["lm", "train", "--text", "empty.txt", "--out", "new"], ["empty.txt", "empty"]),
    (["lm", "train", "--text", "short.txt", "--out", "new"], ["too few", "train.batch_size"]),
    (["lm", "train", "--text", "short.txt", "--out", "new", "--config", "no-such"], ["no-such", "small"]),
    (["lm", "evaluate", "--model", "nowhere", "--text", "short.txt"], ["nowhere", "mt lm train"]),
    (["lm", "evaluate", "--model", "run", "--text", "empty.txt"], ["empty"]),
    (["lm", "sample", "--model", "nowhere"], ["nowhere", "mt lm train"]),
    (["lm", "sample", "--model", "run", "--temperature", "0"], ["--temperature"]),
    (["lm", "sample", "--model", "translation"], ["translation model"]),
    (["lm", "sample", "--model", "unweighted"], ["no weights"]),
])
def test_bad_input_is_one_error_line(tf, trained, tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "short.txt").write_text("int x;\n")
    os.symlink(trained / "run", tmp_path / "run")
    (tmp_path / "translation").mkdir()
    (tmp_path / "translation" / "data.json").write_text(json.dumps({"src_vocab": 10, "tgt_vocab": 10}))
    unweighted = LMRunFolder(tmp_path / "unweighted")
    os.makedirs(unweighted.path)
    for name in ("config.yaml", "data.json", "vocab.json"):
        os.symlink(trained / "run" / name, tmp_path / "unweighted" / name)
    line = one_line_error(args)
    assert all(w in line for w in words), line


def test_a_translation_command_on_a_language_model_says_what_it_is(trained):
    from mt.folders import RunFolder

    with pytest.raises(UserError, match="language model"):
        RunFolder(trained / "run").vocab_sizes()


# -- cells ------------------------------------------------------------------------------------------------


def test_the_detectors_follow_c_and_prose():
    from mt.inspection.lm_cells import FEATURES, text_features

    text = 'f(a, "x(\\"y", \'(\');  /* (c) */ // d(\n“He said (no)” ok\n'
    features = dict(zip(FEATURES, text_features(text).T))
    at = {i: ch for i, ch in enumerate(text)}

    def spans(name):
        return "".join(at[i] if v else "_" for i, v in enumerate(features[name]))

    assert spans("in quotes") == '_____"x(\\"y___\'(_____________________“He said (no)_____'
    assert spans("in comment") == "______________________* (c) *___/ d(___________________"
    depth = features["bracket depth"]
    assert depth[0] == 0 and depth[1] == 1 and depth[text.index(")") - 1] == 1 and depth[text.index(")")] == 0
    assert depth[text.index("(no)")] == 1 and depth[text.index("no)")] == 1 and depth[text.index(" ok")] == 0
    newline = text.index("\n")
    assert features["line length so far"][[0, 1, newline - 1, newline, newline + 1]].tolist() == [1, 2, newline, 0, 1]
    assert features["position in line"][newline - 1] == 1.0 and features["position in line"][newline] == 0.0


def counting_model(tf, vocab):
    """An LSTM with two units built by hand: unit 0 counts the characters of the line (its cell grows by
    0.05 a character, and forgets at a newline), unit 1 the open brackets (+0.2 at '(', -0.2 at ')')."""
    import keras

    from mt.lm.config import LMModelConfig
    from mt.lm.model import LanguageModel

    keras.utils.set_random_seed(0)
    model = LanguageModel(LMModelConfig(emb_dim=vocab.size, units=3, layers=1), vocab.size, vocab.never)
    model.embedding.embeddings.assign(np.eye(vocab.size, dtype=np.float32))
    cell, units = model.cells[0], 3
    kernel = np.zeros(cell.kernel.shape, np.float32)
    bias = np.zeros(cell.bias.shape, np.float32)
    i, f, g, o = (slice(k * units, (k + 1) * units) for k in range(4))
    bias[i], bias[f], bias[o] = 20.0, 20.0, 20.0  # write, keep and show everything
    newline, opening, closing = vocab.id_of("\n"), vocab.id_of("("), vocab.id_of(")")
    kernel[newline, f.start] = -40.0  # unit 0 forgets at a newline
    bias[g.start] = math.atanh(0.05)
    kernel[opening, g.start + 1], kernel[closing, g.start + 1] = math.atanh(0.2), -math.atanh(0.2)
    cell.kernel.assign(kernel)
    cell.bias.assign(bias)
    cell.recurrent.assign(np.zeros(cell.recurrent.shape, np.float32))
    return model


def test_cell_inspection_finds_the_units_that_count_columns_and_brackets(tf):
    from mt.inspection.lm_cells import report
    from mt.lm.vocab import Vocabulary

    rng = np.random.RandomState(1)
    lines, depth = [], 0
    for _ in range(60):
        line = ""
        for _ in range(rng.randint(0, 14)):
            ch = "abc "[rng.randint(4)] if rng.rand() < 0.6 else "(" if depth < 3 and rng.rand() < 0.6 else ")"
            if ch == ")" and depth == 0:
                ch = "a"
            depth += {"(": 1, ")": -1}.get(ch, 0)
            line += ch
        lines.append(line)
    text = "".join(line + "\n" for line in lines)
    vocab = Vocabulary.build("char", text)
    names, r, best, _ = report(counting_model(tf, vocab), vocab, text, top=2)
    assert best["line length so far"][0][0] == "lstm_0:0" and best["line length so far"][0][1] > 0.9
    assert best["bracket depth"][0][0] == "lstm_0:1" and best["bracket depth"][0][1] > 0.9
    assert best["in comment"] == []  # no comment in the text: the detector is constant


def test_inspect_cells_on_a_language_model_prints_the_table_and_writes_the_page(trained, tmp_path):
    result = CliRunner().invoke(cli, ["inspect", "cells", "--model", str(trained / "run"), "--input",
                                      str(trained / "held.txt"), "--max-sentences", "30"])
    assert result.exit_code == 0, result.output
    assert "bracket depth" in result.output and "in comment" in result.output and "lstm_1:" in result.output
    page = tmp_path / "cells.html"
    result = CliRunner().invoke(cli, ["inspect", "cells", "--model", str(trained / "run"), "--input",
                                      str(trained / "held.txt"), "--out", str(page), "--units", "lstm_0:3"])
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert "Hidden units of the language model" in html and "unit <code>lstm_0:3</code>" in html
    assert html.count("title=\"newline") == 40  # one span per character, the newlines included


# -- the pipeline -----------------------------------------------------------------------------------------


def test_a_pipeline_trains_evaluates_and_samples_and_skips_the_trained_stage_the_second_time(
        tf, tmp_path, monkeypatch, capsys):
    from mt.pipeline import run

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text(c_text(150))
    (tmp_path / "d.txt").write_text(c_text(30))
    tiny_config(tmp_path)
    (tmp_path / "lm.yaml").write_text("""
stages:
  - lm train: {text: t.txt, dev_text: [d.txt], out: run, config: tiny.yaml, max_steps: 6}
  - lm evaluate: {model: run, text: d.txt}
  - lm sample: {model: run, prime: "int ", length: 20, seed: 3}
""")
    run("lm.yaml", cli.commands)
    first = capsys.readouterr().out
    assert "bits per character" in first and "int " in first
    assert json.loads((tmp_path / "run" / "done.json").read_text())["step"] == 6
    run("lm.yaml", cli.commands)
    second = capsys.readouterr().out
    assert "[1/3] lm train: up to date, skipped" in second and "bits per character" in second
