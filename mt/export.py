"""`mt export`: a run folder as a TensorFlow SavedModel that translates text with TensorFlow alone.

    mt export --model RUN --out DIR [--search beam --beam-size 5 ...]

    import tensorflow as tf, tensorflow_text  # the second registers the SentencePiece ops
    translate = tf.saved_model.load(DIR).signatures["serving_default"]
    translate(text=tf.constant(["una frase", "otra"]))  # {"translations", "scores", "log_probs"}

The signature `serving_default` takes `text`, a batch of UTF-8 strings [N], and returns for every one
`translations` [N] (strings), `scores` [N] (what the search ranked by: the log-probability after the
length and coverage penalties) and `log_probs` [N] (the model's log-probability of the output, EOS
included); an empty line gives "" with scores 0. The signature `info` returns `metadata`, the JSON record
that also lies in the folder (mt/folders.py, ExportFolder): the run, its model and training, the search
settings, the batch size.

One graph does all that `mt translate` does between reading a line and writing it, in the same order:
strip the line of surrounding whitespace (Python's definition of it), encode it with the run's
SentencePiece model (tensorflow-text runs the same library), cut it to MAX_INPUT_PIECES, sort the
non-empty lines by length and cut them into batches of `batch_size` sentences (each sorted longest
first), decode every batch with the search mt/search.py builds from the export's settings (its row ids
the lines' indices, its output limits `max_length_ratio` x source pieces + LENGTH_EXTRA), drop the EOS,
decode the pieces, and make line breaks spaces as translate's `_one_line` does. So for the same lines in
one call and the same settings and batch size the text is `mt translate`'s, up to the rounding that may
differ between two processes' kernels (BENCHMARKS.md counts the identical lines). Settings are fixed at
export: a SavedModel serves one search.
"""

import dataclasses
import json
import os
import sys
import time

import click

from mt.errors import UserError
from mt.search_options import SearchOptions
from mt.tokenizer import EOS, PAD

RECORD_FORMAT = 1
SHOWN = {"greedy": ("search", "max_length_ratio"),  # the settings each search reads, in the summary line
         "beam": ("search", "beam_size", "length_penalty", "coverage_penalty", "beam_stop", "max_length_ratio"),
         "sample": ("search", "temperature", "top_k", "top_p", "seed", "max_length_ratio")}


def python_whitespace():
    """An RE2 character class of the characters Python's str.strip() removes (str.isspace)."""
    return _char_class(c for c in range(sys.maxunicode + 1) if chr(c).isspace())


def python_line_breaks():
    """An RE2 pattern of one line break as str.splitlines() finds it: CR LF, or one of its characters."""
    breaks = [c for c in range(sys.maxunicode + 1) if len(f"a{chr(c)}b".splitlines()) == 2]
    return r"\r\n|" + _char_class(breaks)


def _char_class(points):
    points, ranges = sorted(points), []
    for c in points:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return "[" + "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges) + "]"


def graph_strip(text):
    """tf.string [N] -> the same strings stripped as str.strip() strips them."""
    import tensorflow as tf

    space = python_whitespace()
    return tf.strings.regex_replace(text, f"^{space}+|{space}+$", "")


def graph_one_line(text):
    """tf.string [N] -> `mt.translate._one_line` of each: " ".join(text.splitlines()), i.e. one line break
    at the very end removed and every other one made a space."""
    import tensorflow as tf

    breaks = python_line_breaks()
    text = tf.strings.regex_replace(text, f"(?:{breaks})\\z", "", replace_global=False)
    return tf.strings.regex_replace(text, breaks, " ")


def build_module(translator, options, batch_size, record):
    """A tf.Module holding the model, both SentencePiece models and the two signatures' functions."""
    import tensorflow as tf

    from mt.runtime import import_tensorflow_text
    from mt.search import build_search
    from mt.translate import LENGTH_EXTRA, MAX_INPUT_PIECES

    text_ops = import_tensorflow_text("mt export")
    search = build_search(options, scores=True)  # the scores a caller of the signature gets
    translator.search = search  # checks the search against the model (a coverage penalty needs attention)
    model, ratio = translator.model, float(options.max_length_ratio)

    module = tf.Module()
    module.model = model  # tracked: its variables are saved with the graph
    # a name each: two unnamed SentencePiece models in one SavedModel come back from loading as one (the
    # first), and the target side would be decoded with the source model
    module.src_pieces = text_ops.SentencepieceTokenizer(_read_bytes(translator.src_tok.path), name="source_pieces")
    module.tgt_pieces = text_ops.SentencepieceTokenizer(_read_bytes(translator.tgt_tok.path), name="target_pieces")
    metadata = json.dumps(record, sort_keys=True)

    def translate(text):
        count = tf.shape(text)[0]
        pieces = module.src_pieces.tokenize(graph_strip(text))[:, :MAX_INPUT_PIECES]
        lengths = tf.cast(pieces.row_lengths(), tf.int32)
        # make_batches: non-empty lines by length, ties in input order, cut into batches of batch_size
        order = tf.argsort(lengths, stable=True)
        order = tf.boolean_mask(order, tf.gather(lengths, order) > 0)
        batches = (tf.size(order) + batch_size - 1) // batch_size

        def body(k, translations, scores, log_probs):
            batch = order[k * batch_size:(k + 1) * batch_size]
            batch = tf.gather(batch, tf.argsort(-tf.gather(lengths, batch), stable=True))  # longest first
            source_lengths = tf.gather(lengths, batch)
            src = tf.gather(pieces, batch).to_tensor(default_value=PAD)
            limits = tf.cast(tf.cast(source_lengths, tf.float64) * ratio, tf.int32) + LENGTH_EXTRA
            found = search(model.step_function(), model.encode(src, longest_first=True), limits,
                           source_mask=tf.not_equal(src, PAD), row_ids=batch)
            ids, length = found.ids[:, 0], found.lengths[:, 0]  # the best hypothesis of each sentence
            last = tf.gather(ids, tf.maximum(length - 1, 0), batch_dims=1)
            length -= tf.cast((length > 0) & tf.equal(last, EOS), tf.int32)  # the EOS is not text
            words = graph_one_line(module.tgt_pieces.detokenize(tf.RaggedTensor.from_tensor(ids, lengths=length)))
            where = batch[:, None]
            return (k + 1, tf.tensor_scatter_nd_update(translations, where, words),
                    tf.tensor_scatter_nd_update(scores, where, found.ranks[:, 0]),
                    tf.tensor_scatter_nd_update(log_probs, where, found.scores[:, 0]))

        start = (tf.constant(0), tf.fill([count], ""), tf.zeros([count]), tf.zeros([count]))
        _, translations, scores, log_probs = tf.while_loop(lambda k, *_: k < batches, body, start)
        return {"translations": translations, "scores": scores, "log_probs": log_probs}

    def info():
        return {"metadata": tf.constant(metadata)}

    # autograph off, as for translate's search: the search and the model build their loops themselves
    module.translate = tf.function(translate, autograph=False,
                                   input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    module.info = tf.function(info, autograph=False, input_signature=[])
    return module


def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def export_record(translator, run_dir, weights_path, options, batch_size):
    """What the export's record and `info` signature say: where it comes from, the model, the search."""
    import tensorflow as tf

    import mt
    from mt.api import Model
    from mt.translate import LENGTH_EXTRA, MAX_INPUT_PIECES

    about = Model(translator, run_dir).info()
    about.pop("search_defaults", None)
    try:
        from importlib.metadata import version

        text_version = version("tensorflow-text")
    except Exception:  # installed without its distribution's metadata
        text_version = None
    return {"format": RECORD_FORMAT, "mt_version": mt.__version__, "tensorflow": tf.__version__,
            "tensorflow_text": text_version, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "run": os.path.abspath(run_dir), "weights": os.path.abspath(weights_path),
            "search": dataclasses.asdict(options), "batch_size": batch_size,
            "max_input_pieces": MAX_INPUT_PIECES, "length_extra": LENGTH_EXTRA,
            "signatures": {"serving_default": {"inputs": {"text": "string [N]"},
                                               "outputs": {"translations": "string [N]", "scores": "float32 [N]",
                                                           "log_probs": "float32 [N]"}},
                           "info": {"inputs": {}, "outputs": {"metadata": "string [] (this record, JSON)"}}},
            **about}


def check_out(out, model, force):
    """Refuse, before any work, an --out that holds something (without --force), that is a file, or that
    is or holds the run folder; check that it can be written."""
    from mt.atomic import check_writable_folder, is_empty_folder

    target = os.path.abspath(out)
    if os.path.exists(target) and not os.path.isdir(target):
        raise UserError(f"--out {out} is a file: give a folder to write the SavedModel in")
    run = os.path.abspath(model)
    if force and (run == target or run.startswith(target.rstrip(os.sep) + os.sep)):
        raise UserError(f"--out {out} holds the run folder {model}: --force would delete it; choose another --out")
    if os.path.isdir(target) and not is_empty_folder(target) and not force:
        raise UserError(f"--out {out} exists and is not empty: choose a new folder, or pass --force to replace it")
    check_writable_folder(os.path.dirname(target), "the exported model")


def export(model, out, options, batch_size=None, weights="best", precision="auto", force=False):
    """Write the SavedModel of run folder `model` with the search `options` into `out`, atomically;
    returns the export's record."""
    import tensorflow as tf

    from mt.atomic import atomic_folder
    from mt.folders import ExportFolder, RunFolder
    from mt.runtime import import_tensorflow_text
    from mt.translate import default_batch_size, load_translator

    options = options.check()
    if options.n_best != 1:
        raise UserError(f"an exported model gives one translation a line: --n-best {options.n_best} is not "
                        "exported; use `mt translate --n-best` or `mt serve`")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    RunFolder(model).vocab_sizes()  # a missing or unfinished run folder is said first
    check_out(out, model, force)
    import_tensorflow_text("mt export")  # before the model loads: the error is the first thing said
    if batch_size is None:
        batch_size = default_batch_size(options.search, options.beam_size)
    translator = load_translator(model, weights, precision)
    record = export_record(translator, model, RunFolder(model).existing_weights(weights), options, batch_size)
    module = build_module(translator, options, batch_size, record)
    try:
        with atomic_folder(out, replace=force) as tmp:
            tf.saved_model.save(module, tmp, signatures={"serving_default": module.translate.get_concrete_function(),
                                                         "info": module.info.get_concrete_function()})
            ExportFolder(tmp).write_record(record)
    except FileExistsError:  # filled by someone else while the model was exported
        raise UserError(f"--out {out} exists and is not empty: choose a new folder, or pass --force to replace it") from None
    return record


def run(model, out, search, beam_size, length_penalty, coverage_penalty, beam_stop, temperature, top_k, top_p,
        seed, max_length_ratio, batch_size, weights, precision, force):
    """`mt export`."""
    start = time.time()
    options = SearchOptions(search, beam_size, length_penalty, coverage_penalty, beam_stop, 1, temperature,
                            top_k, top_p, seed, max_length_ratio)
    record = export(model, out, options, batch_size, weights, precision, force)
    settings = ", ".join(f"{k} {v}" for k, v in record["search"].items() if k in SHOWN[search])
    click.echo(f"exported {model} ({os.path.basename(record['weights'])}) -> {out} in {time.time() - start:.1f} s: "
               f"signature serving_default, {settings}, batches of {record['batch_size']}", err=True)
