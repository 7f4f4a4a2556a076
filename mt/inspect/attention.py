"""Attention maps: for every target piece of a translation, the decoder's attention over the source pieces.

The weights come out of the search that translates (`with_attention=True`): the run's own search strategy
and settings, with the attention of the chosen hypothesis recorded at each step. So the map shows what
was decoded, row by row, down to the step that produced the end of sentence (`</s>`). Rows are target
pieces, columns source pieces, labelled with their SentencePiece pieces; padding never gets a column.

Outputs: a text map on stdout, an image (.png, .svg, .pdf; matplotlib, one panel per sentence), or a
self-contained HTML page (one heatmap table per sentence; no matplotlib needed).
"""

import copy
import os

import click
import numpy as np

from mt.errors import UserError
from mt.inspect.common import display_piece, source_lines

BATCH = 16
MAX_PIECES = 1000  # longer inputs are cut, as translate does
EOS_LABEL = "</s>"
SHADES = " .:-=+*#%@"  # text map: weight 0 ... 1


class Alignment:
    """One sentence: source and target pieces, the translation, and weights [target, source]."""

    def __init__(self, source, source_pieces, target_pieces, translation, weights):
        self.source, self.translation = source, translation
        self.source_pieces, self.target_pieces = source_pieces, target_pieces
        self.weights = weights


def attention_search(translator):
    """The translator's search with attention recorded: the same strategy and settings, or greedy search
    if the translator has no search object of its own."""
    from mt import search as search_module

    current = getattr(translator, "search", None)
    if isinstance(current, search_module.Search) and current.step_fn == translator.model.decode_step:
        search = copy.copy(current)  # the translator's own object stays as it is
        search.with_attention = True
        return search
    return search_module.GreedySearch(translator.model.decode_step, with_attention=True)


def compile_search(model, search):
    """A graph function (src [B, S] int32, max_lengths [B] int32) -> (ids, lengths, attention) of the best
    hypothesis: ids [B, T], lengths [B] (EOS included), attention [B, T, S]."""
    import tensorflow as tf

    from mt.model import PAD

    def run(src, max_lengths):
        hyps = search(model.encode(src), max_lengths, source_mask=tf.not_equal(src, PAD))
        return hyps.ids[:, 0], hyps.lengths[:, 0], hyps.attention[:, 0]

    spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)]
    return tf.function(run, input_signature=spec)


def max_lengths_for(encoded, max_length_ratio):
    """Each sentence's output limit: ratio x its source length + 10 pieces."""
    return np.array([int(max_length_ratio * len(ids)) + 10 for ids in encoded], np.int32)


def align(translator, sentences, max_length_ratio=2.0):
    """Translate `sentences` (non-empty strings) and return one Alignment per sentence."""
    from mt.data import pad_sources
    from mt.model import EOS
    from mt.search import strip_ids

    model = translator.model
    if not getattr(model, "attention", True):
        raise UserError("this model has no attention (model.attention: none): there is no map to draw")
    src_tok, tgt_tok = translator.src_tok, translator.tgt_tok
    encoded = [ids[:MAX_PIECES] for ids in src_tok.encode(sentences)]
    if any(not ids for ids in encoded):
        raise UserError("a source sentence encodes to no piece at all; nothing to attend to")
    decode = compile_search(model, attention_search(translator))
    out = []
    for start in range(0, len(encoded), BATCH):
        chunk = encoded[start:start + BATCH]
        ids, lengths, weights = decode(pad_sources(chunk), max_lengths_for(chunk, max_length_ratio))
        ids, lengths, weights = np.asarray(ids), np.asarray(lengths), np.asarray(weights)
        for row, source_ids in enumerate(chunk):
            steps = int(lengths[row])
            target_ids = [int(i) for i in ids[row, :steps]]
            target_pieces = [EOS_LABEL if i == EOS else tgt_tok.id_to_piece(i) for i in target_ids]
            translation = tgt_tok.decode([strip_ids(target_ids)])[0]
            out.append(Alignment(sentences[start + row], [src_tok.id_to_piece(i) for i in source_ids],
                                 target_pieces, translation, weights[row, :steps, :len(source_ids)]))
    return out


# -- text ----------------------------------------------------------------------------------------------


def format_text(alignment) -> str:
    """A text map: the numbered source pieces, then per target piece a shade per source piece and the
    piece it attends to most."""
    a = alignment
    lines = [f"source:      {a.source}", f"translation: {a.translation}",
             "source pieces: " + "  ".join(f"{j}:{p}" for j, p in enumerate(a.source_pieces))]
    width = max([len(p) for p in a.target_pieces] + [6])
    ruler = "".join(f"{j % 10} " for j in range(len(a.source_pieces)))
    lines.append(f"{'':<{width}}  {ruler}")
    for i, piece in enumerate(a.target_pieces):
        row = a.weights[i]
        cells = "".join(SHADES[min(len(SHADES) - 1, int(w * len(SHADES)))] * 2 for w in row)
        j = int(np.argmax(row)) if len(row) else 0
        lines.append(f"{piece:<{width}}  {cells}  -> {j}:{a.source_pieces[j]} {row[j]:.2f}")
    return "\n".join(lines)


# -- image ---------------------------------------------------------------------------------------------

CELL = 0.26  # inches per heatmap cell
CHAR = 0.075  # inches per label character (8 pt)
TITLE = 0.45  # inches above each panel for its title
GAP = 0.3  # inches below each panel
RIGHT = 0.95  # inches right of the grid: colour bar and its labels
MIN_WIDTH = 4.0


def _label_length(labels):
    return max([len(label) for label in labels] + [1])


def layout(alignments):
    """(figure size in inches, left margin, panels): per sentence, its panel's top and its grid's top
    (inches from the figure top) and the grid's height."""
    left = 0.25 + CHAR * max(_label_length(a.target_pieces) for a in alignments)
    width = max(MIN_WIDTH, left + CELL * max(len(a.source_pieces) for a in alignments) + RIGHT)
    panels, top = [], 0.0
    for a in alignments:
        labels_h = 0.15 + CHAR * _label_length(a.source_pieces)
        grid_h = CELL * len(a.target_pieces)
        panels.append((top, top + TITLE + labels_h, grid_h))
        top += TITLE + labels_h + grid_h + GAP
    return (round(width, 2), round(top, 2)), left, panels


def image_size(alignments, dpi=None):
    """The image size in pixels (width, height) that `draw` gives for these sentences."""
    from mt.inspect.plot import DPI

    (width, height), _, _ = layout(alignments)
    dpi = dpi or DPI
    return int(round(width * dpi)), int(round(height * dpi))


def draw(alignments, path, title=None):
    """One heatmap panel per sentence, stacked, with its pieces as tick labels; saved to `path`."""
    from matplotlib.colors import LinearSegmentedColormap

    from mt.inspect import html, plot

    plt = plot.pyplot()
    (width, height), left, panels = layout(alignments)
    fig = plt.figure(figsize=(width, height), dpi=plot.DPI)
    cmap = LinearSegmentedColormap.from_list("attention", [[c / 255 for c in rgb] for rgb in html.SEQUENTIAL])
    max_chars = int((width - 0.3) / 0.07)
    for number, (a, (panel_top, grid_top, grid_h)) in enumerate(zip(alignments, panels), start=1):
        grid_w = CELL * len(a.source_pieces)
        bottom = 1 - (grid_top + grid_h) / height
        ax = fig.add_axes([left / width, bottom, grid_w / width, grid_h / height])
        image = ax.imshow(a.weights, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
        ax.xaxis.tick_top()
        ax.set_xticks(range(len(a.source_pieces)))
        ax.set_xticklabels(a.source_pieces, rotation=90, fontsize=8)
        ax.set_yticks(range(len(a.target_pieces)))
        ax.set_yticklabels(a.target_pieces, fontsize=8)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        bar = fig.add_axes([(left + grid_w + 0.15) / width, bottom, 0.12 / width, min(grid_h, 1.5) / height])
        fig.colorbar(image, cax=bar).ax.tick_params(labelsize=7)
        heading = f"{number}. {a.source}  \u2192  {a.translation}"
        if len(heading) > max_chars:
            heading = heading[:max_chars - 1] + "\u2026"
        fig.text(0.1 / width, 1 - (panel_top + 0.12) / height, heading, fontsize=9, va="top", ha="left")
    if title:
        fig.text(1 - 0.1 / width, 1 - 0.04 / height, title, fontsize=7, color="#777", va="top", ha="right")
    plot.save(fig, path)


# -- HTML ----------------------------------------------------------------------------------------------


def render_page(path, alignments, run_dir, source, search_name, notes=()):
    """One page: for every sentence, its source, translation and heatmap table."""
    from mt.inspect import html

    parts = ["<h1>Attention</h1>",
             f'<p class="meta">run <code>{html.escape(run_dir)}</code> &middot; {html.escape(source)} &middot; '
             f"{len(alignments)} sentence(s) &middot; {html.escape(search_name)}</p>",
             '<p class="note">Rows: the target pieces as decoded (down to the end of sentence); columns: the '
             "source pieces. Each row is the decoder's attention at that step; it sums to 1.</p>"]
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in notes]
    parts.append(html.legend(html.SEQUENTIAL, "0", "1"))
    for number, a in enumerate(alignments, start=1):
        parts.append(f"<section><h2>{number}. {html.escape(a.source)}</h2>"
                     f'<p class="meta">&#8594; {html.escape(a.translation)}</p>'
                     f"{html.heatmap_table(a.target_pieces, a.source_pieces, a.weights)}</section>")
    html.write_page(path, f"Attention: {os.path.basename(os.path.normpath(run_dir))}", "\n".join(parts))


def describe_search(search):
    """'greedy search' or 'beam search (beam 5)', for the page."""
    name = type(search).__name__
    words = {"GreedySearch": "greedy search", "BeamSearch": "beam search", "SamplingSearch": "sampling"}
    text = words.get(name, name)
    if getattr(search, "beam_size", 1) > 1:
        text += f" (beam {search.beam_size})"
    return text


def run(model, src, input, out, max_sentences, max_length_ratio, weights):
    """`mt inspect attention`: maps for --src or the lines of --input; to OUT (.png/.svg/.pdf/.html) or
    as text on stdout."""
    from mt.inspect import plot
    from mt.translate import load_translator

    kind = plot.output_kind(out, plot.IMAGE_FORMATS + ("html",)) if out is not None else "text"
    if kind in plot.IMAGE_FORMATS:
        plot.pyplot()  # a missing matplotlib stops here, before the model is loaded
    if max_length_ratio <= 0:
        raise UserError(f"--max-length-ratio must be positive, got {max_length_ratio}")
    sentences, empty, left_out = source_lines(src, input, max_sentences)
    notes = []
    if empty:
        notes.append(f"{empty} empty line(s) skipped")
    if left_out:
        notes.append(f"only the first {max_sentences} lines are shown (--max-sentences); {left_out} left out")
    for note in notes:
        click.echo(f"note: {note}", err=True)
    translator = load_translator(model, weights)
    alignments = align(translator, sentences, max_length_ratio)
    if kind == "text":
        click.echo("\n\n".join(format_text(a) for a in alignments))
    elif kind == "html":
        where = "--src sentence" if src is not None else ("stdin" if input == "-" else f"input {input}")
        render_page(out, alignments, str(model), where, describe_search(attention_search(translator)), notes)
    else:
        draw(alignments, out, title=f"attention of {os.path.normpath(model)}")
    if out is not None:
        click.echo(f"attention of {len(alignments)} sentence(s) -> {out}", err=True)
    return alignments
