"""Attention maps: for every target piece of a translation, the decoder's attention over the source pieces.

The weights come out of the search that translates: the Translator of `mt translate`, with the search
its options build (the same options and defaults here), set to record the attention of the chosen
hypothesis at each step (`with_attention`). So the map shows what `mt translate` decodes, row by row,
down to the step that produced the end of sentence (`</s>`). Rows are target pieces, columns source
pieces, labelled with their SentencePiece pieces; padding never gets a column.

Outputs: a text map on stdout, an image (.png, .svg, .pdf; matplotlib, one panel per sentence), or a
self-contained HTML page (one heatmap table per sentence; no matplotlib needed).
"""

import copy
import os

import click
import numpy as np

from mt.errors import UserError
from mt.inspection.common import printable, source_lines
from mt.search_options import SearchOptions
from mt.tokenizer import EOS

EOS_LABEL = "</s>"
SHADES = " .:-=+*#%@"  # text map: weight 0 ... 1


class Alignment:
    """One sentence: its line number (from 1), source and target pieces, the decoded ids and translation,
    and the weights [target, source]."""

    def __init__(self, line, source, source_pieces, target_ids, target_pieces, translation, weights):
        self.line, self.source, self.translation = line, source, translation
        self.source_pieces, self.target_ids, self.target_pieces = source_pieces, target_ids, target_pieces
        self.weights = weights


def with_attention(search):
    """A copy of `search` (same strategy and settings) that also returns the attention of its hypotheses."""
    recording = copy.copy(search)  # the caller's object stays as it is
    recording.with_attention = True
    return recording


def attention_translator(translator, options=None):
    """A Translator over the same model and tokenizers whose search is the one `mt translate` builds from
    these SearchOptions (its defaults without any), with one hypothesis a sentence, recording attention."""
    from mt.search import build_search
    from mt.translate import Translator

    options = (options or SearchOptions()).replace(n_best=1)
    return Translator(translator.model, translator.src_tok, translator.tgt_tok,
                      search=build_search(options, with_attention=True))


def align(translator, lines, max_length_ratio=2.0, batch_size=64):
    """Translate `lines` with the translator as it is (its search must record attention: see
    attention_translator) and return one Alignment per non-empty line."""
    model = translator.model
    if not getattr(model, "attention", True):
        raise UserError("this model has no attention (model.attention: none): there is no map to draw")
    src_tok, tgt_tok = translator.src_tok, translator.tgt_tok
    found = translator.hypotheses(lines, batch_size, max_length_ratio)
    out = []
    for number, (sentence, hypotheses) in enumerate(zip(lines, found), start=1):
        if not sentence:
            continue
        best = hypotheses[0]
        if best.attention is None:
            raise UserError("the search returned no attention weights")
        weights = np.asarray(best.attention, np.float32)
        target_ids = list(best.ids) + [EOS] * (weights.shape[0] - len(best.ids))  # the step that ended it
        source_ids = src_tok.encode([sentence])[0][:weights.shape[1]]
        out.append(Alignment(number, sentence, [src_tok.id_to_piece(i) for i in source_ids], target_ids,
                             [EOS_LABEL if i == EOS else tgt_tok.id_to_piece(i) for i in target_ids],
                             best.text, weights))
    return out


# -- text ----------------------------------------------------------------------------------------------


def format_text(alignment) -> str:
    """A text map: the numbered source pieces, then per target piece a shade per source piece and the
    piece it attends to most."""
    a = alignment
    lines = [f"line {a.line}", f"source:      {printable(a.source)}",
             f"translation: {printable(a.translation)}", "source pieces: " + "  ".join(f"{j}:{p}" for j, p in enumerate(a.source_pieces))]
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
HEADER = 0.3  # inches at the top of the figure for its title
TITLE = 0.62  # inches above each panel for its two heading lines (source, translation)
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
    panels, top = [], HEADER
    for a in alignments:
        labels_h = 0.15 + CHAR * _label_length(a.source_pieces)
        grid_h = CELL * len(a.target_pieces)
        panels.append((top, top + TITLE + labels_h, grid_h))
        top += TITLE + labels_h + grid_h + GAP
    return (round(width, 2), round(top, 2)), left, panels


def image_size(alignments, dpi=None):
    """The image size in pixels (width, height) that `draw` gives for these sentences."""
    from mt.inspection.plot import DPI

    (width, height), _, _ = layout(alignments)
    dpi = dpi or DPI
    return int(round(width * dpi)), int(round(height * dpi))


def draw(alignments, path, title=None):
    """One heatmap panel per sentence, stacked, with its pieces as tick labels; saved to `path`."""
    from matplotlib.colors import LinearSegmentedColormap

    from mt.inspection import html, plot

    plt = plot.pyplot()
    (width, height), left, panels = layout(alignments)
    fig = plt.figure(figsize=(width, height), dpi=plot.DPI)
    cmap = LinearSegmentedColormap.from_list("attention", [[c / 255 for c in rgb] for rgb in html.SEQUENTIAL])
    max_chars = int((width - 0.3) / 0.07)
    for a, (panel_top, grid_top, grid_h) in zip(alignments, panels):
        grid_w = CELL * len(a.source_pieces)
        bottom = 1 - (grid_top + grid_h) / height
        ax = fig.add_axes([left / width, bottom, grid_w / width, grid_h / height])
        image = ax.imshow(a.weights, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
        ax.xaxis.tick_top()
        ax.set_xticks(range(len(a.source_pieces)))
        ax.set_xticklabels([printable(p) for p in a.source_pieces], rotation=90, fontsize=8)
        ax.set_yticks(range(len(a.target_pieces)))
        ax.set_yticklabels([printable(p) for p in a.target_pieces], fontsize=8)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        bar = fig.add_axes([(left + grid_w + 0.15) / width, bottom, 0.12 / width, min(grid_h, 1.5) / height])
        fig.colorbar(image, cax=bar).ax.tick_params(labelsize=7)
        for line, (text, colour) in enumerate(((f"{a.line}. {a.source}", "#000"),
                                               (f"\u2192 {a.translation}", "#444"))):
            text = printable(text)
            if len(text) > max_chars:
                text = text[:max_chars - 1] + "\u2026"
            fig.text(0.1 / width, 1 - (panel_top + 0.05 + 0.2 * line) / height, text, fontsize=9, va="top",
                     ha="left", color=colour)
    if title:
        fig.text(0.1 / width, 1 - 0.08 / height, title, fontsize=7, color="#777", va="top", ha="left")
    plot.save(fig, path)


# -- HTML ----------------------------------------------------------------------------------------------


def render_page(path, alignments, run_dir, source, search_name, notes=()):
    """One page: for every sentence, its source, translation and heatmap table."""
    from mt.inspection import html

    parts = ["<h1>Attention</h1>",
             f'<p class="meta">run <code>{html.escape(run_dir)}</code> &middot; {html.escape(source)} &middot; '
             f"{len(alignments)} sentence(s) &middot; {html.escape(search_name)}</p>",
             '<p class="note">Rows: the target pieces as decoded (down to the end of sentence); columns: the '
             "source pieces. Each row is the decoder's attention at that step; it sums to 1.</p>"]
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in notes]
    parts.append(html.legend(html.SEQUENTIAL, "0", "1"))
    for a in alignments:
        rows, columns = [printable(p) for p in a.target_pieces], [printable(p) for p in a.source_pieces]
        parts.append(f"<section><h2>{a.line}. {html.escape(printable(a.source))}</h2>"
                     f'<p class="meta">&#8594; {html.escape(printable(a.translation))}</p>'
                     f"{html.heatmap_table(rows, columns, a.weights)}</section>")
    html.write_page(path, f"Attention: {os.path.basename(os.path.normpath(run_dir))}", "\n".join(parts))


def describe_search(o):
    """'beam search (beam 5, length penalty 0.6)', 'greedy search' or 'sampling (...)', for the page, from
    SearchOptions."""
    if o.search == "greedy":
        return "greedy search"
    if o.search == "sample":
        return f"sampling (temperature {o.temperature}, top-k {o.top_k}, top-p {o.top_p}, seed {o.seed})"
    text = f"beam search (beam {o.beam_size}, length penalty {o.length_penalty}"
    if o.coverage_penalty:
        text += f", coverage penalty {o.coverage_penalty}"
    if o.beam_stop != "early":
        text += f", {o.beam_stop} stop"
    return text + ")"


def run(model, src, input, out, max_sentences, weights, **search_options):
    """`mt inspect attention`: maps for --src or the lines of --input; to OUT (.png/.svg/.pdf/.html) or
    as text on stdout. `search_options` are those of SearchOptions (search, beam_size, ...)."""
    from mt.inspection import plot
    from mt.translate import load_translator

    kind = plot.output_kind(out, plot.IMAGE_FORMATS + ("html",)) if out is not None else "text"
    if kind in plot.IMAGE_FORMATS:
        plot.pyplot()  # a missing matplotlib stops here, before the model is loaded
    options = SearchOptions.pick(search_options).check()
    lines, empty, left_out = source_lines(src, input, max_sentences)
    notes = []
    if empty:
        notes.append(f"{empty} empty line(s) skipped")
    if left_out:
        notes.append(f"only the first {max_sentences} sentences are shown (--max-sentences); {left_out} left out")
    for note in notes:
        click.echo(f"note: {note}", err=True)
    translator = load_translator(model, weights)
    if not translator.model.attention:
        raise UserError(f"{model}: this model has no attention (model.attention: none): there is no map to draw")
    alignments = align(attention_translator(translator, options), lines, options.max_length_ratio)
    if kind == "text":
        click.echo("\n\n".join(format_text(a) for a in alignments))
    elif kind == "html":
        where = "--src sentence" if src is not None else ("stdin" if input == "-" else f"input {input}")
        render_page(out, alignments, str(model), where, describe_search(options), notes)
    else:
        draw(alignments, out, title=f"attention of {os.path.normpath(model)}, {describe_search(options)}")
    if out is not None:
        click.echo(f"attention of {len(alignments)} sentence(s) -> {out}", err=True)
    return alignments
