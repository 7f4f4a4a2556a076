"""Stage 3: load a run folder, translate text in length-sorted batches, keep one output line per input line."""

import json
import os
import sys
import time

import click

from mt.errors import UserError

MAX_INPUT_PIECES = 1000  # longer inputs are cut to this many pieces, with a warning


class Translator:
    """A trained model and its tokenizers, ready to translate lists of sentences."""

    def __init__(self, model, src_tokenizer, tgt_tokenizer):
        from mt.search import GreedySearch

        self.model, self.src_tok, self.tgt_tok = model, src_tokenizer, tgt_tokenizer
        self.search = GreedySearch(model)

    def translate(self, lines, batch_size=64, max_length_ratio=2.0, progress=False):
        """Translate a list of strings; returns a list of strings of the same length and order."""
        from mt.data import pad_sources
        from mt.search import strip_ids

        encoded = self.src_tok.encode(lines)
        long = sum(len(e) > MAX_INPUT_PIECES for e in encoded)
        if long:
            click.echo(f"warning: {long} input line(s) longer than {MAX_INPUT_PIECES} pieces were cut to "
                       f"that length", err=True)
            encoded = [e[:MAX_INPUT_PIECES] for e in encoded]
        order = sorted((i for i, e in enumerate(encoded) if e), key=lambda i: len(encoded[i]))
        outputs = [""] * len(lines)
        batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
        with _maybe_progress(batches, progress, "translating") as bar:
            for batch in bar:
                src = pad_sources([encoded[i] for i in batch])
                max_steps = int(max_length_ratio * src.shape[1]) + 10
                ids, _ = self.search(src, max_steps)
                texts = self.tgt_tok.decode([strip_ids(row) for row in ids])
                for i, text in zip(batch, texts):
                    outputs[i] = text
        return outputs


def _maybe_progress(items, show, label):
    if show:
        return click.progressbar(items, label=label, file=sys.stderr)
    import contextlib

    return contextlib.nullcontext(items)


def load_translator(run_dir, weights="best"):
    """Open a run folder written by `mt train`: its config, tokenizers and weights."""
    from mt.config import Config
    from mt.model import build_model
    from mt.tokenizer import Tokenizer

    info_path = os.path.join(run_dir, "data.json")
    if not os.path.exists(info_path):
        raise UserError(f"{run_dir} is not a run folder (no data.json): train one with `mt train`")
    with open(info_path, encoding="utf-8") as f:
        info = json.load(f)
    config = Config.load(os.path.join(run_dir, "config.yaml"))
    path = os.path.join(run_dir, "weights", f"{weights}.weights.h5")
    if not os.path.exists(path):
        other = "last" if weights == "best" else "best"
        fallback = os.path.join(run_dir, "weights", f"{other}.weights.h5")
        if not os.path.exists(fallback):
            raise UserError(f"{run_dir} holds no weights yet (weights/{weights}.weights.h5): let training "
                            "reach its first validation")
        path = fallback
    model = build_model(config.model, info["src_vocab"], info["tgt_vocab"])
    model.load_weights(path)
    src_tok = Tokenizer(os.path.join(run_dir, "src.spm.model"))
    tgt_tok = Tokenizer(os.path.join(run_dir, "tgt.spm.model"))
    return Translator(model, src_tok, tgt_tok)


def read_lines(path):
    """Read input lines ('-' is stdin) as UTF-8; an invalid byte is an error naming file and line."""
    raw = sys.stdin.buffer.read() if path == "-" else _read_bytes(path)
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for number, line in enumerate(lines, 1):
        try:
            out.append(line.decode("utf-8").rstrip("\r").strip())
        except UnicodeDecodeError:
            name = "stdin" if path == "-" else path
            raise UserError(f"{name}, line {number}: not valid UTF-8; convert the file to UTF-8") from None
    return out


def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None


def run(input, model, output, batch_size, max_length_ratio, weights):
    """`mt translate`: translate INPUT with the run folder MODEL, to OUTPUT or stdout."""
    from mt.atomic import atomic_open

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    lines = read_lines(input)
    translator = load_translator(model, weights)
    start = time.time()
    outputs = translator.translate(lines, batch_size, max_length_ratio, progress=output is not None)
    text = "".join(line.replace("\n", " ") + "\n" for line in outputs)
    if output:
        with atomic_open(output) as f:
            f.write(text)
        click.echo(f"translated {len(lines)} lines in {time.time() - start:.1f} s -> {output}", err=True)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
