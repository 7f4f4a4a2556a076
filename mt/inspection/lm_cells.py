"""Hidden units of a character language model over a text, and the units that follow structures of code
and prose (`mt inspect cells` on the run folder of `mt lm train`).

Unit `lstm_1:42` is hidden unit 42 of the cell of layer 1 (the cell type names the layer). Its activation
at a character is that cell's hidden state h after reading the character, in [-1, 1]. The text is read as
one stream from the zero state, as the model reads a text: every character sees all the text before it.

The detectors, one value per character, say what holds once the model has read that character (the
state the unit's activation is), found by one scan of the text that knows C's lexical rules and reads
prose as well:

    in quotes           1 inside a string or character literal ("...", '.', with backslash escapes; a
                        string ends at the end of its line) or a “curly quotation”: from the opening
                        quote mark on, up to the character before the closing one
    in comment          1 inside a /* block */ or a // line comment: from its second character (the *
                        or /) to the character before the closing / or the newline
    bracket depth       how many ( [ { are open, outside C strings and comments (inside a curly
                        quotation too)
    position in line    the share of the line read so far: 1 / L at its first character, 1 at its last;
                        0 at the newline, which starts the next line
    line length so far  the characters of the line read so far: 1 at its first, 0 at the newline

A detector that never changes over the text (no comment in prose) is reported as constant.
"""

import os
import re

import click
import numpy as np

from mt.errors import UserError
from mt.inspection.cells import correlations, default_units, format_table, parse_units, top_units
from mt.inspection.cells import write_units_page
from mt.inspection.common import printable

FEATURES = ("in quotes", "in comment", "bracket depth", "position in line", "line length so far")
CHAR_LITERAL = re.compile(r"'(?:\\(?:x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)|[^\\'\n])'")
OPENING, CLOSING = "([{", ")]}"
CHUNK = 512  # characters read per compiled call


def text_features(text) -> np.ndarray:
    """[len(text), len(FEATURES)] float array of the detectors at every character (see the module)."""
    n = len(text)
    quote = np.zeros(n, np.float32)
    comment = np.zeros(n, np.float32)
    depth = np.zeros(n, np.float32)
    mode, level, i = "code", 0, 0
    while i < n:
        ch = text[i]
        step = 1
        if mode == "code":
            literal = CHAR_LITERAL.match(text, i) if ch == "'" else None
            if text.startswith("/*", i) or text.startswith("//", i):
                mode = "block" if text[i + 1] == "*" else "line"
                comment[i + 1] = 1.0
                step = 2
            elif literal:
                quote[i:literal.end() - 1] = 1.0
                step = literal.end() - i
            elif ch in '"\u201c':
                mode = "string" if ch == '"' else "curly"
                quote[i] = 1.0
            else:
                level = bracketed(ch, level)
        elif mode == "string":
            if ch == "\\" and i + 1 < n and text[i + 1] != "\n":
                quote[i:i + 2] = 1.0
                step = 2
            elif ch in '"\n':
                mode = "code"
            else:
                quote[i] = 1.0
        elif mode == "curly":
            if ch == "\u201d":
                mode = "code"
            else:
                quote[i] = 1.0
                level = bracketed(ch, level)  # prose: a bracket inside a quotation is still one
        elif mode == "block":
            if text.startswith("*/", i):
                comment[i] = 1.0
                mode, step = "code", 2
            else:
                comment[i] = 1.0
        elif ch == "\n":  # the end of a line comment
            mode = "code"
        else:
            comment[i] = 1.0
        depth[i:i + step] = level
        i += step
    read, share = line_positions(text)
    return np.stack([quote, comment, depth, share, read], axis=1)


def bracketed(ch, level):
    """The bracket depth after `ch` at depth `level`."""
    if ch in OPENING:
        return level + 1
    if ch in CLOSING:
        return max(0, level - 1)
    return level


def line_positions(text):
    """(characters of the line read so far, their share of the line) after every character: 1 and 1 / L
    at a line's first character, L and 1 at its last, 0 and 0 at the newline."""
    n = len(text)
    read = np.zeros(n, np.float32)
    share = np.zeros(n, np.float32)
    start = 0
    while start < n:
        end = text.find("\n", start)
        end = n if end < 0 else end
        length = end - start
        read[start:end] = np.arange(1, length + 1)
        share[start:end] = np.arange(1, length + 1) / max(length, 1)
        start = end + 1
    return read, share


def unit_names(model) -> list[str]:
    """Names of all units, in the order of the columns of `states`."""
    return [f"{cell.name}:{i}" for cell in model.cells for i in range(cell.units)]


def states(model, vocab, text) -> np.ndarray:
    """The hidden states [len(text), U] of every unit (see unit_names) after each character of `text`,
    read as one stream from the zero state (for a byte vocabulary: after each character's last byte)."""
    import tensorflow as tf

    ids = vocab.encode(text)
    spec = tf.TensorSpec([1, CHUNK], tf.int32)
    state_spec = tuple(tuple(tf.TensorSpec([1, cell.units], tf.float32) for _ in range(cell.state_size))
                       for cell in model.cells)

    def chunk(x, state):
        layers, state = model.run(x, state, return_layers=True)
        return tf.concat(layers, axis=-1), state

    read = tf.function(chunk, input_signature=[spec, state_spec], autograph=False)
    padded = np.zeros(-(-len(ids) // CHUNK) * CHUNK, np.int32)
    padded[:len(ids)] = ids
    state, out = model.zero_state(1), []
    for start in range(0, len(padded), CHUNK):
        values, state = read(padded[None, start:start + CHUNK], state)
        out.append(values.numpy()[0])
    values = np.concatenate(out)[:len(ids)]
    if vocab.kind == "byte":
        ends = np.cumsum([len(ch.encode("utf-8")) for ch in text]) - 1
        values = values[ends]
    return values


def read_text(src, input, max_lines):
    """The text to look at: --src, or the first `max_lines` lines of --input ('-': stdin), each ending in
    a newline; (text, lines left out)."""
    from mt.textio import iter_lines

    if (src is None) == (input is None):
        raise UserError("give exactly one of --src (a text) and --input (a file)")
    if max_lines < 1:
        raise UserError(f"--max-sentences must be at least 1, got {max_lines}")
    if src is not None:
        lines = [src]
        left_out = 0
    else:
        lines, left_out = [], 0
        for line in iter_lines(input):
            if len(lines) < max_lines:
                lines.append(line)
            else:
                left_out += 1
    text = "".join(line + "\n" for line in lines)
    if not text.strip():
        raise UserError("nothing to look at: the text is empty")
    return text, left_out


def report(model, vocab, text, top):
    """(unit names, correlations [F, U], {feature: [(unit, r), ...]}, activations [n, U]) of `text`."""
    names = unit_names(model)
    activations = states(model, vocab, text)
    r = correlations(activations, text_features(text))
    return names, r, top_units(r, names, top, FEATURES), activations


def render_page(path, run_dir, source, text, activations, names, r, best, shown):
    """The HTML page: the detector table, then the text coloured by each shown unit, line by line."""
    from mt.inspection import html

    lines, start = [], 0
    for line in text.split("\n")[:-1]:
        labels = [(printable(ch) if ch != "\t" else ch, f"{ch!r} at column {i}") for i, ch in enumerate(line)]
        labels.append((" ", "newline"))  # the newline's own activation, shown at the end of its line
        lines.append((labels, activations[start:start + len(line) + 1]))
        start += len(line) + 1
    meta = (f"run <code>{html.escape(run_dir)}</code> &middot; text {html.escape(source)} &middot; "
            f"{len(lines)} line(s), {len(text):,} characters &middot; {len(names)} units")
    note = ("Each unit is the hidden state h of one layer's cell (<code>lstm_L</code>, <code>gru_L</code> or "
            "<code>rnn_L</code>, layer L) after each character, between -1 and 1; the text is read as one "
            "stream, from the zero state.")
    write_units_page(path, f"Hidden units: {os.path.basename(os.path.normpath(run_dir))}",
                     "Hidden units of the language model", meta, note, lines, names, r, best, shown, FEATURES,
                     pieces="characters")


def run(model, src, input, out, units, top, max_sentences, weights):
    """`mt inspect cells` on a language model: units over the text; an HTML page to OUT, or the table of
    the best units per detector on stdout."""
    from mt.inspection import plot
    from mt.lm.model import load_model

    if out is not None:
        plot.output_kind(out, ("html",))
    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    text, left_out = read_text(src, input, max_sentences)
    lm, vocab, _ = load_model(model, weights)
    names, r, best, activations = report(lm, vocab, text, top)
    shown = parse_units(units, names) if units else default_units(best, names)
    if left_out:
        click.echo(f"note: only the first {max_sentences} lines are used (--max-sentences); {left_out} left out",
                   err=True)
    if out is None:
        click.echo(format_table(best))
    else:
        source = "--src text" if src is not None else ("stdin" if input == "-" else str(input))
        render_page(out, str(model), source, text, activations, names, r, best, shown)
        click.echo(f"{len(shown)} unit(s) over {len(text):,} characters -> {out}", err=True)
    return {"units": names, "top": best, "shown": shown, "correlations": r, "text": text,
            "activations": activations}
