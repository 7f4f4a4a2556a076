"""Score a translation against a reference with sacrebleu: BLEU, chrF and TER, each with its signature.

The signature (e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`) records every setting
that changes a score, so a number can be compared with another only when their signatures match.
`--tokenize` and `--lowercase` apply to BLEU (and `--lowercase` to chrF as well); TER keeps sacrebleu's
defaults, which are case-insensitive, as its signature (`case:lc`) says.
"""

import json

import click

from mt.errors import UserError

METRICS = ("bleu", "chrf", "ter")
LABELS = {"bleu": "BLEU", "chrf": "chrF", "ter": "TER"}


def _make_metrics(tokenize, lowercase):
    """Build the three sacrebleu metric objects; an unknown or unusable tokenizer is a UserError."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    if tokenize is not None and tokenize not in BLEU.TOKENIZERS:
        raise UserError(f"unknown BLEU tokenizer {tokenize!r}; choose one of: {', '.join(BLEU.TOKENIZERS)}")
    try:
        bleu = BLEU(tokenize=tokenize, lowercase=lowercase)
    except ImportError as e:
        raise UserError(f"BLEU tokenizer {tokenize!r} needs a package that is not installed: {e}") from e
    return {"bleu": bleu, "chrf": CHRF(lowercase=lowercase), "ter": TER()}


def score(hyps: list[str], refs: list[str], tokenize=None, lowercase=False) -> dict:
    """Corpus BLEU, chrF and TER of `hyps` against one reference per line.

    Returns {"bleu": float, "chrf": float, "ter": float, "signatures": {"bleu": str, "chrf": str,
    "ter": str}, "sentences": n}. `tokenize` is a sacrebleu BLEU tokenizer name (None: 13a).
    """
    if not hyps:
        raise UserError("nothing to score: the hypothesis is empty")
    if len(hyps) != len(refs):
        raise UserError(f"{len(hyps)} hypotheses but {len(refs)} references; they must be line-aligned")
    result = {"signatures": {}}
    for name, metric in _make_metrics(tokenize, lowercase).items():
        result[name] = float(metric.corpus_score(hyps, [refs]).score)
        # The signature knows the number of references only after a corpus has been scored.
        result["signatures"][name] = str(metric.get_signature())
    result["sentences"] = len(hyps)
    return result


def read_lines(path) -> list[str]:
    """The lines of a UTF-8 text file, without line ends (and without a leading byte-order mark).

    Lines are split on '\\n' only, so other Unicode line separators inside a sentence stay in it.
    """
    try:
        with open(path, "rb") as f:
            raw_lines = f.read().split(b"\n")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from e
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()  # the newline ending the last line does not start another one
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: line {number}: invalid UTF-8 byte 0x{raw[e.start]:02x} at byte "
                            f"{e.start + 1} of the line; fix or re-encode the file") from e
        lines.append(text.removesuffix("\r"))
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    return lines


def format_table(result: dict) -> str:
    """The scores as aligned rows: `BLEU   34.21  signature`, then chrF and TER."""
    width = max(len(label) for label in LABELS.values())
    rows = [f"{LABELS[name]:<{width}}  {result[name]:6.2f}  {result['signatures'][name]}" for name in METRICS]
    return "\n".join(rows)


def run(ref, hyp, as_json, tokenize, lowercase):
    """Score the file `hyp` against `ref`, print a table (or one JSON object), and return the scores.

    The returned dict is the one printed with --json: the scores, their signatures, the number of
    sentences and both paths.
    """
    refs = read_lines(ref)
    hyps = read_lines(hyp)
    if len(refs) != len(hyps):
        raise UserError(f"line counts differ: {hyp} has {len(hyps)} lines, {ref} has {len(refs)}; "
                        "the hypothesis must have one line per reference line")
    if not hyps:
        raise UserError(f"{hyp} and {ref} are empty: nothing to score")
    result = score(hyps, refs, tokenize=tokenize, lowercase=lowercase)
    result.update(ref=str(ref), hyp=str(hyp))
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
    else:
        click.echo(format_table(result))
        click.echo(f"{result['sentences']} sentences: {hyp} against {ref}")
    return result
