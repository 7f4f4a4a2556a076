"""Score a translation against a reference with sacrebleu: BLEU, chrF and TER, each with its signature.

The signature (e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`) records every setting
that changes a score, so a number can be compared with another only when their signatures match.
`--tokenize` and `--lowercase` apply to BLEU (and `--lowercase` to chrF as well); TER keeps sacrebleu's
defaults, which are case-insensitive, as its signature (`case:lc`) says.

With several hypothesis files, the first is the baseline and every other system is compared with it by
sacrebleu's paired tests (`sacrebleu.significance.PairedTest`): paired bootstrap resampling (Koehn, 2004),
which also gives each system's mean score and 95% confidence interval over the resamples, and approximate
randomization (Riezler and Maxwell, 2005). A p-value below 0.05 says that a difference as large as the one
observed would rarely come from chance alone. The tests are sacrebleu's own; the only addition here is
that a system whose every line equals the baseline's gets p = 1: sacrebleu's count of resampled
differences strictly above the observed one gives the smallest p-value, 1/(n+1), when the two outputs
are identical, which would call a system significantly different from itself.
"""

import json
import os

import click

from mt.errors import UserError
from mt.textio import read_lines

METRICS = ("bleu", "chrf", "ter")
LABELS = {"bleu": "BLEU", "chrf": "chrF", "ter": "TER"}
BOOTSTRAP_SAMPLES = 1000  # sacrebleu's defaults for its paired tests
RANDOMIZATION_TRIALS = 10000
SIGNIFICANCE_LEVEL = 0.05


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


def format_table(result: dict) -> str:
    """The scores as aligned rows: `BLEU   34.21  signature`, then chrF and TER."""
    width = max(len(label) for label in LABELS.values())
    rows = [f"{LABELS[name]:<{width}}  {result[name]:6.2f}  {result['signatures'][name]}" for name in METRICS]
    return "\n".join(rows)


def paired_tests(systems, refs, tokenize=None, lowercase=False, bootstrap_samples=BOOTSTRAP_SAMPLES,
                 randomization_trials=RANDOMIZATION_TRIALS) -> dict:
    """Compare every system with the first (the baseline) by paired bootstrap and approximate randomization.

    `systems` is a list of (name, hypotheses) with one hypothesis per reference. Returns
    {"systems": [{"hyp": name, "bleu": score, "chrf": ..., "ter": ...,
                  "bootstrap": {"bleu": {"mean": m, "ci95": half_width, "p": p}, ...},
                  "randomization": {"bleu": {"p": p}, ...}}, ...],
     "bootstrap_samples": n, "randomization_trials": n,
     "signatures": {"bootstrap": {"bleu": str, ...}, "randomization": {"bleu": str, ...}}}.
    The baseline's p-values are None; the 95% interval of a score is mean ± ci95.
    """
    from sacrebleu.significance import PairedTest

    if len(systems) < 2:
        raise UserError("a paired test needs at least two systems")
    for name, hyps in systems:
        if len(hyps) != len(refs):
            raise UserError(f"{name} has {len(hyps)} lines but the reference has {len(refs)}")
    if not refs:
        raise UserError("nothing to compare: the reference is empty")
    baseline = list(systems[0][1])
    same_as_baseline = [list(hyps) == baseline for _, hyps in systems]
    out = {"systems": [{"hyp": name} for name, _ in systems], "bootstrap_samples": bootstrap_samples,
           "randomization_trials": randomization_trials, "signatures": {}}
    for test, key, samples in (("bs", "bootstrap", bootstrap_samples),
                               ("ar", "randomization", randomization_trials)):
        metrics = _make_metrics(tokenize, lowercase)
        named = [(name, list(hyps)) for name, hyps in systems]
        # One process: the machine is shared, and the tests are quick at these sizes.
        signatures, columns = PairedTest(named, metrics, [list(refs)], test_type=test, n_samples=samples,
                                         n_ar_confidence=-1, n_jobs=1)()
        # sacrebleu keys its results by score name (BLEU, chrF2, TER), in the order of `metrics`.
        score_names = [column for column in columns if column != "System"]
        out["signatures"][key] = {m: str(signatures[c]) for m, c in zip(metrics, score_names)}
        for metric, column in zip(metrics, score_names):
            for index, result in enumerate(columns[column]):
                system = out["systems"][index]
                system[metric] = float(result.score)
                entry = {"p": None if result.p_value is None else float(result.p_value)}
                if index > 0 and same_as_baseline[index]:
                    entry["p"] = 1.0
                if test == "bs":
                    entry = {"mean": float(result.mean), "ci95": float(result.ci), **entry}
                system.setdefault(key, {})[metric] = entry
    for system in out["systems"]:  # keys in a readable order: hyp, scores, then the tests
        for key in ("bootstrap", "randomization"):
            system[key] = system.pop(key)
    return out


def format_comparison(result: dict) -> str:
    """The systems one block each: score, bootstrap mean ± 95% CI, difference and p-values per metric."""
    systems = result["systems"]
    names = [system["hyp"] + (" (baseline)" if index == 0 else "") for index, system in enumerate(systems)]
    width = max(len("system"), *(len(name) for name in names))
    header = (f"{'system':<{width}}  {'metric':<6}  {'score':>6}  {'mean ± 95% CI':>15}  {'diff':>7}  "
              f"{'p (bootstrap)':>13}  {'p (AR)':>8}")
    rows = [header, "-" * len(header)]
    base = systems[0]
    for name, system in zip(names, systems):
        for number, metric in enumerate(METRICS):
            boot = system["bootstrap"][metric]
            interval = f"{boot['mean']:6.2f} ± {boot['ci95']:5.2f}"
            diff = p_bs = p_ar = ""
            if system is not base:
                diff = f"{system[metric] - base[metric]:+7.2f}"
                p_bs = _p_text(boot["p"])
                p_ar = _p_text(system["randomization"][metric]["p"])
            label = name if number == 0 else ""
            rows.append(f"{label:<{width}}  {LABELS[metric]:<6}  {system[metric]:6.2f}  {interval:>15}  "
                        f"{diff:>7}  {p_bs:>13}  {p_ar:>8}")
    paired = result["paired"]
    rows.append("")
    rows.append(f"paired bootstrap: {paired['bootstrap_samples']} resamples; approximate randomization (AR): "
                f"{paired['randomization_trials']} trials; * p < {SIGNIFICANCE_LEVEL}: the difference from the "
                "baseline is unlikely to be chance (TER: lower is better)")
    for metric in METRICS:
        rows.append(f"{LABELS[metric]:<4}  {paired['signatures']['bootstrap'][metric]}")
    return "\n".join(rows)


def _p_text(p):
    return f"{p:.4f}{' *' if p < SIGNIFICANCE_LEVEL else '  '}"


def run(ref, hyp, as_json, tokenize, lowercase, bootstrap_samples=BOOTSTRAP_SAMPLES,
        randomization_trials=RANDOMIZATION_TRIALS):
    """Score the file(s) `hyp` against `ref`, print a table (or one JSON object), and return the scores.

    `hyp` is one path or a list of paths. With one, the returned dict is the one printed with --json: the
    scores, their signatures, the number of sentences and both paths. With several, the dict starts the
    same way for the first file (the baseline), and adds `systems` (every file's scores, bootstrap mean
    and 95% confidence interval, and p-values against the baseline) and `paired` (the tests' settings and
    signatures).
    """
    paths = [hyp] if isinstance(hyp, (str, os.PathLike)) else list(hyp)
    if not paths:
        raise UserError("no hypothesis file given: pass --hyp")
    refs = read_lines(ref)
    all_hyps = []
    for path in paths:
        hyps = read_lines(path)
        if len(refs) != len(hyps):
            raise UserError(f"line counts differ: {path} has {len(hyps)} lines, {ref} has {len(refs)}; "
                            "the hypothesis must have one line per reference line")
        if not hyps:
            raise UserError(f"{path} and {ref} are empty: nothing to score")
        all_hyps.append(hyps)
    result = score(all_hyps[0], refs, tokenize=tokenize, lowercase=lowercase)
    result.update(ref=str(ref), hyp=str(paths[0]))
    if len(paths) > 1:
        compared = paired_tests([(str(p), h) for p, h in zip(paths, all_hyps)], refs, tokenize, lowercase,
                                bootstrap_samples, randomization_trials)
        result["systems"] = compared.pop("systems")
        result["paired"] = compared
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
    elif len(paths) > 1:
        click.echo(format_comparison(result))
        click.echo(f"{result['sentences']} sentences, {len(paths)} systems against {ref}")
    else:
        click.echo(format_table(result))
        click.echo(f"{result['sentences']} sentences: {paths[0]} against {ref}")
    return result
