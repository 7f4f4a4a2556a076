"""mt inspect: attention maps from the search, encoder hidden units, training curves; images and pages.

Everything runs on tiny untrained models in a run folder laid out as `mt train` writes it. The HTML pages
are also opened in headless Chromium (installed from Debian where missing, skipped where it can't be).
"""

import importlib.util
import json
import os
import shutil
import signal
import struct
import subprocess
import sys

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from mt.cli import cli
from mt.config import Config, ModelConfig
from mt.model import build_model
from mt.tokenizer import EOS, PAD, Tokenizer, train_tokenizer

def pieces(tokenizer, text):
    """The SentencePiece pieces of one string."""
    return [tokenizer.id_to_piece(i) for i in tokenizer.encode([text])[0]]


WORDS = ["el", "gato", "come", "pescado", "la", "casa", "es", "grande", "perro", "corre", "rápido", "niño",
         "juega", "con", "una", "pelota", "roja", "sol", "brilla", "hoy", "dice", "que"]
SENTENCES = ["el gato come pescado .", "el perro dice \"hola , gato\" y corre .", "la casa es grande ."]


def corpus(count=300, seed=0):
    rng = np.random.default_rng(seed)
    lines = []
    for n in range(count):
        words = [str(rng.choice(WORDS)) for _ in range(int(rng.integers(2, 9)))]
        if n % 4 == 0:
            words = words[:2] + ['"' + words[2] if len(words) > 2 else '"hola', 'dice"'] + words[3:]
        if n % 3 == 0:
            words.insert(1, ",")
        lines.append(" ".join(words) + " .")
    return lines


def make_run(root, model_type="unigram", **model_settings):
    """A run folder as `mt train` lays it out (config, data.json, tokenizers, weights, metrics)."""
    root.mkdir(parents=True, exist_ok=True)
    text = corpus()
    src = train_tokenizer(text, root / "src.spm", 300, model_type, seed=1)
    tgt = train_tokenizer([line.upper() for line in text], root / "tgt.spm", 300, model_type, seed=1)
    settings = dict(emb_dim=8, enc_units=8, dec_units=16, dropout=0.0)
    settings.update(model_settings)
    config = Config(model=ModelConfig(**settings)).check()
    config.train.precision = "float32"  # as `mt train` records it on a CPU without bfloat16 products
    src_vocab, tgt_vocab = Tokenizer(src).vocab_size, Tokenizer(tgt).vocab_size
    # the same weights whichever tests ran before: the pictures' checks need a sharp attention maximum
    keras.utils.set_random_seed(0)
    model = build_model(config.model, src_vocab, tgt_vocab)
    # Stronger than random weights: sharp attention and large activations, so the pictures show clear colours.
    if model.attention:
        model.decoder.attn_key.set_weights([w * 200.0 for w in model.decoder.attn_key.get_weights()])
    embedding = model.encoder.embedding
    embedding.set_weights([w * 40.0 for w in embedding.get_weights()])
    config.save(root / "config.yaml")
    (root / "data.json").write_text(json.dumps({"src_vocab": src_vocab, "tgt_vocab": tgt_vocab}))
    (root / "weights").mkdir(exist_ok=True)
    model.save_weights(str(root / "weights" / "best.weights.h5"))
    write_metrics(root, finished=True)
    return root


def write_metrics(root, finished, partial_last_line=False):
    records = [{"kind": "train", "step": s, "loss": 6.0 / (1 + s / 50), "tokens_per_s": 900.0}
               for s in range(10, 210, 10)]
    records += [{"kind": "dev", "step": s, "loss": 5.0 / (1 + s / 60), "bleu": 40 * s / 200, "best": True}
                for s in (50, 100, 150, 200)]
    records.sort(key=lambda r: (r["step"], r["kind"] == "dev"))
    text = "".join(json.dumps(r) + "\n" for r in records)
    if partial_last_line:
        text += '{"kind": "train", "step": 210, "lo'  # being written by the training process
    (root / "metrics.jsonl").write_text(text)
    if finished:
        (root / "done.json").write_text(json.dumps({"step": 200, "reason": "max_steps"}))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("inspect") / "run")


@pytest.fixture(scope="module")
def translator(run_dir):
    from mt.translate import load_translator

    return load_translator(str(run_dir))


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


# -- reading images ------------------------------------------------------------------------------------


def png_size(path):
    """(width, height) from the PNG header."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def png_pixels(path):
    """The image as a uint8 array [height, width, 3]."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except ImportError:
        pass
    from matplotlib.image import imread

    pixels = imread(path)
    return (pixels[..., :3] * 255).round().astype(np.uint8)


def assert_not_blank(pixels):
    assert pixels.std() > 5, "the image is (nearly) one colour"
    assert (np.abs(pixels.astype(int) - 255).sum(-1) > 60).mean() > 0.01, "almost nothing is drawn"


def has_colour(pixels, rgb, tolerance=4, at_least=30):
    close = np.all(np.abs(pixels.astype(int) - np.array(rgb)) <= tolerance, axis=-1)
    return int(close.sum()) >= at_least


needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="matplotlib (the viz extra) is not installed")


# -- attention: the weights ----------------------------------------------------------------------------


def real_source(src):
    return np.asarray(src) != PAD


@pytest.mark.parametrize("kind", ["greedy", "beam"])
def test_attention_sums_to_one_over_real_pieces_and_is_zero_on_padding(translator, kind):
    import tensorflow as tf

    from mt.inspection.attention import with_attention
    from mt.search import BeamSearch, GreedySearch

    model = translator.model
    search = GreedySearch() if kind == "greedy" else BeamSearch(3, 0.6, stop="exact")
    src = np.array([[5, 6, 7, 8, 9, 10], [11, 12, 0, 0, 0, 0], [13, 14, 15, 0, 0, 0]], np.int32)
    recording = with_attention(search)
    hyps = tf.function(lambda s, m: recording(model.step_function(), model.encode(s), m,
                                              source_mask=tf.not_equal(s, PAD)))(tf.constant(src),
                                                                                 tf.constant([12, 9, 10]))
    weights, lengths = np.asarray(hyps.attention)[:, 0], np.asarray(hyps.lengths)[:, 0]
    assert weights.shape[0] == 3 and weights.shape[2] == src.shape[1]
    assert search.with_attention is False  # the copy records; the original is left as it was
    for b in range(3):
        steps = int(lengths[b])
        assert steps >= 1
        np.testing.assert_allclose(weights[b, :steps].sum(-1), 1.0, atol=1e-5)
        assert np.all(weights[b, :steps][:, ~real_source(src[b])] == 0.0)
        assert np.all(weights[b, steps:] == 0.0)  # nothing after the sentence has ended


@pytest.mark.parametrize("options", [{"search": "greedy"}, {}, {"search": "beam", "beam_size": 3,
                                                                 "length_penalty": 0.0},
                                     {"search": "sample", "seed": 7, "top_k": 5}])
def test_the_map_is_the_attention_of_what_was_decoded(translator, options):
    """The translations are those of `mt translate`'s search, and replaying their tokens through the
    decoder step gives the drawn weights, step by step."""
    from mt.inspection.attention import align, attention_translator
    from mt.search import build_search
    from mt.search_options import SearchOptions
    from mt.tokenizer import BOS
    from mt.translate import Translator

    model = translator.model
    lines = ["", *SENTENCES]  # an empty line: the others keep their line numbers (sampling depends on them)
    alignments = align(attention_translator(translator, SearchOptions(**options)), lines)
    plain = Translator(model, translator.src_tok, translator.tgt_tok,
                       search=build_search(SearchOptions(**options)))
    assert [a.translation for a in alignments] == plain.translate(lines)[1:]
    assert [a.line for a in alignments] == [2, 3, 4]
    for a in alignments:
        src = np.array([translator.src_tok.encode([a.source])[0]], np.int32)
        state, prev = model.encode(src), np.array([BOS], np.int32)
        for t, token in enumerate(a.target_ids):
            _, state, weights = model.decode_step(prev, state)
            np.testing.assert_allclose(np.asarray(weights)[0], a.weights[t], atol=1e-4)
            prev = np.array([token], np.int32)


def test_alignments_are_labelled_with_the_sentencepiece_pieces(translator):
    from mt.inspection.attention import EOS_LABEL, align, attention_translator

    alignments = align(attention_translator(translator), SENTENCES, max_length_ratio=1.0)
    assert len(alignments) == len(SENTENCES)
    for sentence, a in zip(SENTENCES, alignments):
        assert a.source == sentence
        assert a.source_pieces == pieces(translator.src_tok, sentence)
        assert a.weights.shape == (len(a.target_pieces), len(a.source_pieces))
        assert 1 <= len(a.target_pieces) <= int(1.0 * len(a.source_pieces)) + 10
        assert EOS_LABEL not in a.target_pieces[:-1]
        np.testing.assert_allclose(a.weights.sum(-1), 1.0, atol=1e-5)
        assert a.target_pieces == [EOS_LABEL if i == EOS else translator.tgt_tok.id_to_piece(i)
                                   for i in a.target_ids]
        assert a.translation == translator.tgt_tok.decode([[i for i in a.target_ids if i != EOS]])[0]


def test_attention_text_map(run_dir):
    result = invoke("inspect", "attention", "--model", run_dir, "--src", SENTENCES[0])
    assert result.exit_code == 0, result.output
    assert "source pieces: 0:" in result.stdout and "translation:" in result.stdout
    assert "->" in result.stdout


def test_attention_needs_exactly_one_source(run_dir):
    result = invoke("inspect", "attention", "--model", run_dir)
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "--src" in result.stderr
    result = invoke("inspect", "attention", "--model", run_dir, "--src", "x", "--out", "map.jpg")
    assert result.exit_code == 1 and ".png" in result.stderr


def test_a_model_without_attention_is_a_clear_error(tmp_path):
    run = make_run(tmp_path / "run", attention="none")
    result = invoke("inspect", "attention", "--model", run, "--src", SENTENCES[0])
    assert result.exit_code == 1 and "no attention" in result.stderr


# -- attention: image and page -------------------------------------------------------------------------


@needs_matplotlib
def test_attention_png_has_the_expected_size_and_is_not_blank(run_dir, translator, tmp_path):
    from mt.inspection import attention, html, plot

    out = tmp_path / "att.png"
    result = invoke("inspect", "attention", "--model", run_dir, "--src", SENTENCES[1], "--out", out)
    assert result.exit_code == 0, result.output
    alignments = attention.align(attention.attention_translator(translator), [SENTENCES[1]])
    expected = attention.image_size(alignments)
    assert png_size(out) == expected
    pixels = png_pixels(out)
    assert pixels.shape[:2] == expected[::-1]
    assert_not_blank(pixels)
    # every cell of the heatmap shows its weight, in the colour the HTML page gives it (one scale for both)
    a = alignments[0]
    assert a.weights.max() > 0.5  # the test model attends sharply: the map has dark cells
    _, left, [(_, grid_top, _)] = attention.layout(alignments)
    for i in range(a.weights.shape[0]):
        for j in range(a.weights.shape[1]):
            y = int((grid_top + (i + 0.5) * attention.CELL) * plot.DPI)
            x = int((left + (j + 0.5) * attention.CELL) * plot.DPI)
            expected_rgb = np.array(html.weight_colour(float(a.weights[i, j])))
            assert np.abs(pixels[y, x].astype(int) - expected_rgb).max() <= 6, (i, j, pixels[y, x], expected_rgb)


@needs_matplotlib
def test_attention_png_stacks_one_panel_per_sentence(run_dir, translator, tmp_path):
    from mt.inspection import attention

    (tmp_path / "in.txt").write_text("\n".join(SENTENCES) + "\n\n", encoding="utf-8")
    out = tmp_path / "att.png"
    result = invoke("inspect", "attention", "--model", run_dir, "--input", tmp_path / "in.txt", "--out", out)
    assert result.exit_code == 0, result.output
    recording = attention.attention_translator(translator)
    expected = attention.image_size(attention.align(recording, SENTENCES))
    assert png_size(out) == expected
    single = attention.image_size(attention.align(recording, SENTENCES[:1]))
    assert expected[1] > single[1]
    assert_not_blank(png_pixels(out))


def test_attention_html_report_is_one_self_contained_page(run_dir, translator, tmp_path):
    from mt.inspection import attention

    (tmp_path / "in.txt").write_text("\n" + "\n".join(SENTENCES) + "\n\nnot shown\n", encoding="utf-8")
    out = tmp_path / "report.html"
    result = invoke("inspect", "attention", "--model", run_dir, "--input", tmp_path / "in.txt", "--out", out,
                    "--max-sentences", len(SENTENCES))
    assert result.exit_code == 0, result.output
    assert "1 left out" in result.stderr and "1 empty line(s) skipped" in result.stderr
    page = out.read_text(encoding="utf-8")
    for number, sentence in enumerate(SENTENCES, start=2):  # headings keep the line numbers of the file
        assert f"<h2>{number}. " in page
    assert page.startswith("<!DOCTYPE html>") and page.count('<table class="heat">') == len(SENTENCES)
    for forbidden in ("<script", "http://", "https://", "<link", "<img", "@import"):
        assert forbidden not in page
    alignments = attention.align(attention.attention_translator(translator), SENTENCES)
    assert page.count('<td class="w"') == sum(a.weights.size for a in alignments)
    assert "&quot;hola" in page  # source text is escaped
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


# -- hidden units ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell, layers", [("lstm", 1), ("gru", 2), ("rnn", 3)])
def test_encoder_states_are_the_encoders_own(cell, layers):
    from mt.inspection.cells import encoder_states, unit_names

    model = build_model(ModelConfig(cell=cell, emb_dim=8, enc_units=5, dec_units=10, enc_layers=layers,
                                    dropout=0.3), 30, 30)
    src = np.array([[5, 6, 7, 8, 9], [10, 11, 0, 0, 0]], np.int32)
    states = encoder_states(model, src)
    assert states.shape == (2, 5, layers * 2 * 5)
    names = unit_names(model)
    assert len(names) == states.shape[-1] and names[0] == "fw_0:0" and names[5] == "bw_0:0"
    top, _, mask = model.encoder(src)
    real = np.asarray(mask)
    np.testing.assert_allclose(states[..., -10:][real], np.asarray(top)[real], atol=1e-5)
    assert np.all(np.abs(states[real]) <= 1.0)


def test_piece_features():
    from mt.inspection.cells import FEATURES, piece_features

    pieces = ["▁el", "▁perro", "▁dice", "▁\"", "hola", "▁,", "▁gato", "\"", "▁y", "<0x22>", "▁corre", "."]
    f = piece_features(pieces)
    column = {name: f[:, k] for k, name in enumerate(FEATURES)}
    assert list(column["in quotes"]) == [0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1]  # a byte-fallback quote opens
    assert column["position"][0] == 0.0 and column["position"][-1] == 1.0
    assert np.all(np.diff(column["position"]) > 0)
    assert list(column["punctuation"]) == [0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert list(column["word start"]) == [1, 1, 1, 1, 0, 1, 1, 0, 1, 0, 1, 0]


def test_correlations_find_a_unit_that_follows_a_feature():
    from mt.inspection.cells import FEATURES, correlations, top_units

    rng = np.random.default_rng(0)
    features = np.zeros((200, len(FEATURES)), np.float32)
    features[:, 1] = np.linspace(0, 1, 200)
    features[::3, 2] = 1.0  # "in quotes" (column 0) and "word start" (column 3) stay constant
    acts = rng.normal(size=(200, 6)).astype(np.float32) * 0.1
    acts[:, 4] = -0.8 * features[:, 1] + 0.01 * rng.normal(size=200)
    acts[:, 2] = np.tanh(features[:, 2])
    acts[:, 5] = 0.3  # a unit that never changes
    r = correlations(acts, features)
    assert np.all(np.isnan(r[0])) and np.all(np.isnan(r[3]))
    assert r[1, 4] < -0.99 and r[2, 2] > 0.99 and r[1, 5] == 0.0
    names = [f"fw_0:{i}" for i in range(6)]
    top = top_units(r, names, 2)
    assert top["position"][0][0] == "fw_0:4" and top["punctuation"][0][0] == "fw_0:2"
    assert top["in quotes"] == []


def test_cells_table_on_stdout(run_dir, tmp_path):
    (tmp_path / "text.txt").write_text("\n".join(corpus(30, seed=5)) + "\n", encoding="utf-8")
    result = invoke("inspect", "cells", "--model", run_dir, "--input", tmp_path / "text.txt", "--top", 3)
    assert result.exit_code == 0, result.output
    rows = result.stdout.strip().splitlines()
    assert [row.split()[0] for row in rows] == ["in", "position", "punctuation", "word"]
    assert all(len([w for w in row.split() if ":" in w]) == 3 for row in rows)


def test_cells_page_colours_every_piece_for_each_unit(run_dir, translator, tmp_path):
    text = corpus(12, seed=7)
    (tmp_path / "text.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    out = tmp_path / "cells.html"
    result = invoke("inspect", "cells", "--model", run_dir, "--input", tmp_path / "text.txt", "--out", out,
                    "--units", "fw_0:1,bw_0:7")
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    count = sum(len(pieces(translator.src_tok, line)) for line in text)
    assert page.count('title="') == 2 * count
    assert "unit <code>fw_0:1</code>" in page and "unit <code>bw_0:7</code>" in page
    for forbidden in ("<script", "http://", "https://", "<link", "<img"):
        assert forbidden not in page


def test_cells_on_a_character_model_colour_characters(tmp_path):
    from mt.inspection import cells
    from mt.translate import load_translator

    run = make_run(tmp_path / "char", model_type="char")
    translator = load_translator(str(run))
    pieces, activations = cells.collect(translator.model, translator.src_tok, ["el gato", "dice \"hola\""])
    assert all(len(p) == 1 for sentence in pieces for p in sentence)
    assert "".join(pieces[0]) == "▁el▁gato"
    assert [a.shape[0] for a in activations] == [len(p) for p in pieces]


def test_cells_unknown_unit_is_a_clear_error(run_dir):
    result = invoke("inspect", "cells", "--model", run_dir, "--src", "el gato", "--units", "fw_9:0")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "fw_9:0" in lines[0] and "fw_0" in lines[0]


# -- curves --------------------------------------------------------------------------------------------


def test_curves_table_while_training_runs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_metrics(run, finished=False, partial_last_line=True)  # no weights, no done.json yet
    result = invoke("inspect", "curves", "--model", run)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert "in progress, at step 200" in lines[0]
    assert len(lines) == 2 + 4  # status, header, one row per validation
    assert lines[-1].split()[0] == "200" and lines[-1].endswith("best")
    assert "warning" not in result.stderr  # the unfinished last line is expected, not an error


def test_curves_keep_the_latest_record_of_a_step_logged_twice(tmp_path):
    from mt.inspection.curves import read_metrics

    run = tmp_path / "run"
    run.mkdir()
    lines = [{"kind": "train", "step": 10, "loss": 5.0}, {"kind": "train", "step": 20, "loss": 4.0},
             {"kind": "train", "step": 20, "loss": 3.5}, {"kind": "dev", "step": 20, "loss": 4.2}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + "garbage\n{}\n")
    metrics = read_metrics(str(run))
    assert [r["loss"] for r in metrics["train"]] == [5.0, 3.5] and len(metrics["dev"]) == 1


@needs_matplotlib
def test_curves_png_has_the_expected_size_and_is_not_blank(run_dir, tmp_path):
    from mt.inspection import curves, plot

    out = tmp_path / "curves.png"
    result = invoke("inspect", "curves", "--model", run_dir, "--out", out)
    assert result.exit_code == 0, result.output
    expected = (round(curves.FIGSIZE[0] * plot.DPI), round(curves.FIGSIZE[1] * plot.DPI))
    assert png_size(out) == expected
    pixels = png_pixels(out)
    assert_not_blank(pixels)
    assert has_colour(pixels, (0x3b, 0x75, 0xaf), tolerance=30)  # the training loss line


def test_curves_without_a_log_is_a_clear_error(tmp_path):
    result = invoke("inspect", "curves", "--model", tmp_path)
    assert result.exit_code == 1 and "metrics.jsonl" in result.stderr


# -- matplotlib is optional; help stays instant ----------------------------------------------------------


def test_a_missing_matplotlib_says_how_to_install_it(run_dir, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    result = invoke("inspect", "curves", "--model", run_dir, "--out", tmp_path / "c.png")
    assert result.exit_code == 1 and "mt[viz]" in result.stderr
    assert not (tmp_path / "c.png").exists()
    # an HTML page needs no matplotlib
    result = invoke("inspect", "attention", "--model", run_dir, "--src", SENTENCES[0], "--out",
                    tmp_path / "a.html")
    assert result.exit_code == 0, result.output


# -- the pages in a real browser -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium (.ci/run installs it); without it the browser tests are skipped, saying so."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no chromium on this machine: `apt-get install chromium` (as .ci/run does) to run the "
                    "browser tests")
    return found


def screenshot(chromium, page, out, profile, size=(1000, 900)):
    """Render `page` in headless Chromium and save a screenshot; every process started is stopped."""
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={out}",
               f"--window-size={size[0]},{size[1]}", page.resolve().as_uri()]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        err = b"timed out"
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the browser's own helper processes, if any are left
        except ProcessLookupError:
            pass
        process.wait()
    assert out.exists(), f"chromium wrote no screenshot: {err.decode(errors='replace')[-2000:]}"
    return png_pixels(out)


@pytest.mark.slow
def test_attention_page_renders_in_chromium(chromium, run_dir, translator, tmp_path):
    from mt.inspection import attention, html

    page = tmp_path / "report.html"
    result = invoke("inspect", "attention", "--model", run_dir, "--src", SENTENCES[0], "--out", page)
    assert result.exit_code == 0, result.output
    pixels = screenshot(chromium, page, tmp_path / "shot.png", tmp_path / "profile")
    assert pixels.shape[:2] == (900, 1000)
    assert_not_blank(pixels)
    weights = attention.align(attention.attention_translator(translator), [SENTENCES[0]])[0].weights
    assert weights.max() > 0.8  # dark cells: their colours appear nowhere else on the page
    # the colours of the strongest cells of the heatmap are on the screen
    strongest = sorted({html.weight_colour(w) for w in np.sort(weights.ravel())[-3:]})
    for rgb in strongest:
        assert has_colour(pixels, rgb, tolerance=4, at_least=200), rgb


@pytest.mark.slow
def test_cells_page_renders_in_chromium(chromium, run_dir, translator, tmp_path):
    from mt.inspection import cells, html

    (tmp_path / "text.txt").write_text(SENTENCES[1] + "\n", encoding="utf-8")
    _, activations = cells.collect(translator.model, translator.src_tok, [SENTENCES[1]])
    unit = int(np.argmax(np.abs(activations[0]).max(axis=0)))  # the unit with the strongest activation
    values = activations[0][:, unit]
    strongest = html.activation_colour(values[np.argmax(np.abs(values))])
    assert np.abs(np.array(strongest) - 255).sum() > 60  # a clear colour, not (nearly) white
    page = tmp_path / "cells.html"
    result = invoke("inspect", "cells", "--model", run_dir, "--input", tmp_path / "text.txt", "--out", page,
                    "--units", cells.unit_names(translator.model)[unit])
    assert result.exit_code == 0, result.output
    pixels = screenshot(chromium, page, tmp_path / "shot.png", tmp_path / "profile")
    assert_not_blank(pixels)
    assert has_colour(pixels, strongest, tolerance=4, at_least=40), strongest


def test_attention_takes_the_search_options_of_translate_with_the_same_defaults():
    import dataclasses

    from mt.search_options import SearchOptions

    translate = {p.name: p for p in cli.commands["translate"].params}
    attention = {p.name: p for p in cli.commands["inspect"].commands["attention"].params}
    for field in dataclasses.fields(SearchOptions):
        assert translate[field.name].default == field.default, field.name
        if field.name == "n_best":  # the map shows the best hypothesis only
            assert field.name not in attention
            continue
        assert attention[field.name].default == field.default, field.name
        assert attention[field.name].help == translate[field.name].help, field.name
