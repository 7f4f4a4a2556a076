"""Hidden units of the encoder over a text, and the units that follow simple features of it.

Every encoder layer has a forward cell `fw_L` and a backward cell `bw_L` (the names of their weights);
unit `fw_0:12` is hidden unit 12 of the forward cell of layer 0. Its activation at a piece is that cell's
hidden state h there, in [-1, 1] for every cell type.

Like the classic studies of character-level recurrent networks, the page colours the text by the
activation of a few units, and ranks all units by how strongly (Pearson's r over all pieces of the text)
their activation follows simple features of the text:

    in quotes     1 on a quotation, from its opening quote mark to its closing one, both included
    position      the piece's relative position in its sentence, 0 (first) to 1 (last)
    punctuation   1 on a piece that holds a punctuation mark
    word start    1 on a piece that starts a word (SentencePiece's word-start mark)

The states are the encoder's own, every layer's outputs at inference (no dropout); the top layer's are
what the decoder attends to.
"""

import os
import unicodedata

import click
import numpy as np

from mt.errors import UserError
from mt.inspection.common import WORD_MARK, display_piece, piece_text, source_lines

FEATURES = ("in quotes", "position", "punctuation", "word start")
QUOTE_MARKS = frozenset('"\u201c\u201d\u201e\u201f\u00ab\u00bb\u2039\u203a\u300c\u300d\u300e\u300f')
BATCH = 32
MAX_PIECES = 1000  # longer sentences are cut, as translate does


def piece_features(pieces) -> np.ndarray:
    """[n, len(FEATURES)] float array of the features of one sentence's pieces."""
    n = len(pieces)
    out = np.zeros((n, len(FEATURES)), np.float32)
    inside = False
    for i, piece in enumerate(pieces):
        text = piece_text(piece)
        marks = sum(ch in QUOTE_MARKS for ch in text)
        # Every quote mark toggles: opening and closing marks differ between languages (“…” and „…“).
        out[i, 0] = 1.0 if inside or marks else 0.0
        if marks % 2:
            inside = not inside
        out[i, 1] = i / (n - 1) if n > 1 else 0.0
        out[i, 2] = 1.0 if any(unicodedata.category(ch).startswith("P") for ch in text) else 0.0
        out[i, 3] = 1.0 if piece.startswith(WORD_MARK) else 0.0
    return out


def unit_names(model) -> list[str]:
    """Names of all units, in the order of the columns of `encoder_states` output."""
    names = []
    for fw, bw in zip(model.encoder.layers_fw, model.encoder.layers_bw):
        for cell in (fw, bw):
            names += [f"{cell.name}:{i}" for i in range(cell.units)]
    return names


def encoder_states(model, src) -> np.ndarray:
    """src [B, S] int32 -> hidden states [B, S, U] of every unit of every encoder layer (see unit_names),
    from the encoder at inference (no dropout)."""
    import tensorflow as tf

    layers, _, _ = model.encoder(tf.convert_to_tensor(src, tf.int32), return_layers=True)
    return np.concatenate([np.asarray(layer, np.float32) for layer in layers], axis=-1)


def collect(model, tokenizer, sentences):
    """(pieces per sentence, activations [n_pieces, U] per sentence) for a list of sentences."""
    from mt.data import pad_sources

    encoded = [ids[:MAX_PIECES] for ids in tokenizer.encode(sentences)]
    pieces = [[tokenizer.id_to_piece(i) for i in ids] for ids in encoded]
    activations = [None] * len(sentences)
    for start in range(0, len(encoded), BATCH):
        chunk = encoded[start:start + BATCH]
        states = encoder_states(model, pad_sources(chunk))
        for offset, ids in enumerate(chunk):
            activations[start + offset] = states[offset, :len(ids)]
    return pieces, activations


def correlations(activations, features) -> np.ndarray:
    """Pearson r [F, U] between each feature column [N, F] and each unit column [N, U]; NaN for a feature
    that is constant over the text, 0 for a unit that is."""
    a = np.asarray(activations, np.float64)
    f = np.asarray(features, np.float64)
    a = a - a.mean(axis=0)
    f = f - f.mean(axis=0)
    a_norm = np.sqrt((a * a).sum(axis=0))
    f_norm = np.sqrt((f * f).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (f.T @ a) / (f_norm[:, None] * a_norm[None, :])
    scale = np.sqrt(max(len(a), 1))
    r[:, a_norm / scale < 1e-6] = 0.0  # standard deviation below 1e-6: a constant unit
    r[f_norm / scale < 1e-6, :] = np.nan
    return r


def top_units(r, names, count, features=FEATURES):
    """{feature: [(unit, r), ...]} with the `count` units of largest |r| per feature ([] if constant)."""
    top = {}
    for k, feature in enumerate(features):
        row = r[k]
        if np.all(np.isnan(row)):
            top[feature] = []
            continue
        order = np.argsort(-np.abs(np.nan_to_num(row)), kind="stable")[:count]
        top[feature] = [(names[u], float(row[u])) for u in order]
    return top


def parse_units(text, names):
    """'fw_0:12,bw_0:3' -> the unit names, checked against the model's units."""
    chosen = [u.strip() for u in text.split(",") if u.strip()]
    known = set(names)
    for unit in chosen:
        if unit not in known:
            cells = sorted({n.split(":")[0] for n in names})
            size = sum(1 for n in names if n.startswith(cells[0] + ":"))
            raise UserError(f"unknown unit {unit!r}: units are CELL:INDEX with CELL one of {', '.join(cells)} "
                            f"and INDEX from 0 to {size - 1}, e.g. {cells[0]}:0")
    return chosen


def default_units(top, names, count=4):
    """Up to `count` units: the best of each feature, then the second best, ... (each unit once); the
    first units of the model if no feature varies in the text."""
    chosen = []
    depth = max((len(units) for units in top.values()), default=0)
    for rank in range(depth):
        for feature in top:
            units = top[feature]
            if rank < len(units) and units[rank][0] not in chosen and len(chosen) < count:
                chosen.append(units[rank][0])
    return chosen or names[:min(count, len(names))]


def describe_unit(unit, r, names, features=FEATURES):
    """'strongest link: in quotes (r = +0.83)' for the feature the unit follows best."""
    column = names.index(unit)
    row = r[:, column]
    if np.all(np.isnan(row)):
        return ""
    k = int(np.nanargmax(np.abs(row)))
    return f"strongest link: {features[k]} (r = {row[k]:+.2f})"


def format_table(top) -> str:
    """Plain text: each feature and its units with the largest |r|."""
    rows = []
    width = max([12] + [len(feature) for feature in top])
    for feature, units in top.items():
        listed = "  ".join(f"{unit} {r:+.2f}" for unit, r in units) if units else "(constant in this text)"
        rows.append(f"{feature:<{width}} {listed}")
    return "\n".join(rows)


def render_page(path, run_dir, source, pieces, activations, names, r, top, shown):
    """The HTML page: the feature table, then the text coloured by each shown unit."""
    from mt.inspection import html

    n_pieces = sum(len(p) for p in pieces)
    meta = (f"run <code>{html.escape(run_dir)}</code> &middot; text {html.escape(source)} &middot; "
            f"{len(pieces)} sentence(s), {n_pieces} pieces &middot; {len(names)} units")
    note = ("Each unit is the hidden state h of one encoder cell (<code>fw_L</code> forward, <code>bw_L</code> "
            "backward, layer L) at each source piece, between -1 and 1.")
    lines = [([(display_piece(piece, first=i == 0), piece) for i, piece in enumerate(sentence_pieces)], acts)
             for sentence_pieces, acts in zip(pieces, activations)]
    write_units_page(path, f"Hidden units: {os.path.basename(os.path.normpath(run_dir))}",
                     "Hidden units of the encoder", meta, note, lines, names, r, top, shown, FEATURES)


def write_units_page(path, title, heading, meta, note, lines, names, r, top, shown, features, pieces="pieces"):
    """A page of units: the table of the units that follow each feature best, then the text coloured by
    each shown unit. `lines`: per line of text, ([(shown text, tooltip) per piece], activations [n, U]);
    `meta` and `note` are HTML; `pieces` names what the text is cut into."""
    from mt.inspection import html

    parts = [f"<h1>{html.escape(heading)}</h1>", f'<p class="meta">{meta}</p>', f'<p class="note">{note}</p>',
             "<h2>Units that follow simple features</h2>",
             '<table class="list"><tr><th>feature</th><th>units with the largest |r| (Pearson, over all '
             f"{pieces})</th></tr>"]
    for feature, units in top.items():
        cells = (", ".join(f"<code>{html.escape(u)}</code> {v:+.2f}" for u, v in units)
                 if units else "constant in this text")
        parts.append(f"<tr><td>{html.escape(feature)}</td><td>{cells}</td></tr>")
    parts.append("</table>")
    parts.append(html.legend(html.DIVERGING, "-1", "+1"))
    for unit in shown:
        column = names.index(unit)
        rows = []
        for labels, acts in lines:
            spans = []
            for i, (shown_text, tooltip) in enumerate(labels):
                value = float(acts[i, column])
                rgb = html.activation_colour(value)
                spans.append(f'<span style="background:{html.css_colour(rgb)};color:{html.ink_for(rgb)}" '
                             f'title="{html.escape(tooltip)}: {value:+.3f}">{html.escape(shown_text)}</span>')
            rows.append("".join(spans))
        parts.append(f'<section><h2>unit <code>{html.escape(unit)}</code></h2>'
                     f'<p class="note">{html.escape(describe_unit(unit, r, names, features))}</p>'
                     f'<div class="text">{chr(10).join(rows)}</div></section>')
    html.write_page(path, title, "\n".join(parts))


def run(model, src, input, out, units, top, max_sentences, weights):
    """`mt inspect cells`: encoder hidden units over a text; an HTML page to OUT, or a table on stdout."""
    from mt.inspection import plot
    from mt.translate import load_translator

    if out is not None:
        plot.output_kind(out, ("html",))
    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    lines, _, left_out = source_lines(src, input, max_sentences)
    sentences = [line for line in lines if line]
    translator = load_translator(model, weights)
    names = unit_names(translator.model)
    chosen = parse_units(units, names) if units else None
    pieces, activations = collect(translator.model, translator.src_tok, sentences)
    features = np.concatenate([piece_features(p) for p in pieces])
    r = correlations(np.concatenate(activations), features)
    best = top_units(r, names, top)
    shown = chosen or default_units(best, names)
    if left_out:
        click.echo(f"note: only the first {max_sentences} sentences are used (--max-sentences); "
                   f"{left_out} left out", err=True)
    if out is None:
        click.echo(format_table(best))
    else:
        source = "--src sentence" if src is not None else ("stdin" if input == "-" else str(input))
        render_page(out, str(model), source, pieces, activations, names, r, best, shown)
        click.echo(f"{len(shown)} unit(s) over {len(sentences)} sentence(s) -> {out}", err=True)
    return {"units": names, "top": best, "shown": shown, "correlations": r, "pieces": pieces,
            "activations": activations}
