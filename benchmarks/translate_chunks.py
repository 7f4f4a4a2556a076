"""How much the output depends on how the input is batched: chunks, batch sizes, the whole input.

In one process the same lines are translated in several ways (--variants), each of them:

    whole        one list (`Translator.iter_hypotheses`): the batches of a sort of all the lines
    batch:N      the same with N sentences a batch
    chunks:N     in chunks of N lines as `mt translate` reads them (`Translator.stream_hypotheses`)

The first variant is the reference. For every variant the table shows its wall and CPU seconds, how many
lines differ from the reference and, with --repeat-to (the input repeated to that many lines, so that
every source line occurs several times in one run), how many lines differ from another copy of the same
source in the same run: a copy's output can differ from its twin's only by the batch each copy landed in.
The last column is the largest change of the model's log-probability of an output that stayed the same:
the size of the rounding that batching brings. For the lines that differ from the reference, the summary
gives how far apart the model's log-probabilities of the two pieces are at the first position where the
outputs part (forced decoding of both prefixes; greedy search takes the more probable piece, so a choice
that rounding decided is a near-tie of about the size of the batch's rounding).

    python benchmarks/translate_chunks.py --model RUN --input test.es --repeat-to 10894 \\
        --variants whole,batch:64,chunks:1000,chunks:100 --precision float32
"""

import argparse
import os
import sys
import time
from collections import Counter, defaultdict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="run folder written by mt train")
    parser.add_argument("--input", required=True, help="source text")
    parser.add_argument("--lines", type=int, default=None, help="the first N lines of the input")
    parser.add_argument("--repeat-to", type=int, default=None,
                        help="repeat the input (after --lines) to this many lines")
    parser.add_argument("--chunk-lines", type=int, default=4000,
                        help="without --variants: compare the whole input with chunks of this many lines")
    parser.add_argument("--variants", default=None, help="comma-separated: whole, batch:N, chunks:N")
    parser.add_argument("--search", default="greedy")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    from mt.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    from mt.search import build_search
    from mt.search_options import SearchOptions
    from mt.translate import decoding_workers, default_batch_size, load_translator, read_source

    workers = decoding_workers(args.workers)
    translator = load_translator(args.model, precision=args.precision)
    translator.search = build_search(SearchOptions(search=args.search))  # with scores, to compare them
    lines = read_source(args.input)[:args.lines]
    if args.repeat_to:
        lines = (lines * (args.repeat_to // len(lines) + 1))[:args.repeat_to]
    batch = default_batch_size(args.search, SearchOptions().beam_size, workers=workers)
    list(translator.iter_hypotheses(lines[:100], batch, workers=workers))  # traced before timing
    variants = (args.variants or f"whole,chunks:{args.chunk_lines}").split(",")

    def run(variant):
        how, _, size = variant.partition(":")
        if how == "whole":
            return translator.iter_hypotheses(lines, batch, workers=workers)
        if how == "batch":
            return translator.iter_hypotheses(lines, int(size), workers=workers)
        if how == "chunks":
            size = int(size)
            return translator.stream_hypotheses((lines[k:k + size] for k in range(0, len(lines), size)), batch,
                                                workers=workers)
        raise SystemExit(f"unknown variant {variant!r}: whole, batch:N or chunks:N")

    print(f"{len(lines)} lines of {args.input} ({len(set(lines))} distinct), {args.search}, precision "
          f"{args.precision}, {workers} worker(s), {batch} sentences a batch unless batch:N")
    print("| round | variant | seconds | CPU seconds | lines differing from " + variants[0]
          + " | lines differing from a copy of the same source in the same run | largest change of the "
          "log-probability of an output that did not change |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    found = [None] * len(variants)  # a variant may be named twice: is the output the same run to run?
    for round_ in range(1, args.rounds + 1):
        for k, variant in enumerate(variants):
            cpu, wall = time.process_time(), time.perf_counter()
            found[k] = [hyps[0] for _, hyps in run(variant)]
            seconds, cpu = time.perf_counter() - wall, time.process_time() - cpu
            differ = sum(x.ids != y.ids for x, y in zip(found[0], found[k]))
            moved = max((abs(x.log_prob - y.log_prob) for x, y in zip(found[0], found[k]) if x.ids == y.ids),
                        default=0.0)
            print(f"| {round_} | {variant} | {seconds:.1f} | {cpu:.1f} | {differ} | "
                  f"{copies_differing(lines, found[k])} | {moved:.2g} |", flush=True)
    reference = found[0]
    for k, variant in enumerate(variants[1:], 1):
        differ = [i for i, (x, y) in enumerate(zip(reference, found[k])) if x.ids != y.ids]
        gaps = sorted(parting_gap(translator, lines[i], reference[i], found[k][i]) for i in differ[:40])
        print(f"{variant}: {len(differ)} of {len(lines)} outputs differ from {variants[0]} (lines "
              f"{', '.join(str(i) for i in differ[:20])}{' ...' if len(differ) > 20 else ''}); where they part, "
              f"the two pieces' log-probabilities are apart by {', '.join(f'{g:.4f}' for g in gaps)}")


def copies_differing(lines, hyps):
    """Lines whose output is not the most frequent output of the copies of their source line."""
    outputs = defaultdict(Counter)
    for line, h in zip(lines, hyps):
        outputs[line][tuple(h.ids)] += 1
    return sum(sum(counts.values()) - counts.most_common(1)[0][1] for counts in outputs.values())


def parting_gap(translator, line, a, b):
    """|log P(a's piece) - log P(b's piece)| at the first position where the outputs a and b part, given
    their common prefix (forced decoding)."""
    import numpy as np

    from mt.scoring import forced_log_probs
    from mt.tokenizer import EOS, PAD

    first = [x + [EOS] if h.complete else x for x, h in ((a.ids, a), (b.ids, b))]
    part = next(k for k, (x, y) in enumerate(zip(first[0] + [PAD], first[1] + [PAD])) if x != y)
    prefixes = [seq[:part + 1] for seq in first]
    src = np.array(translator._encode([line]) * 2, np.int32)
    tgt = np.zeros([2, part + 1], np.int32)
    for row, seq in enumerate(prefixes):
        tgt[row, :len(seq)] = seq
    scores = forced_log_probs(translator.model, src, tgt).numpy()
    return abs(float(scores[0, part] - scores[1, part])) if all(len(p) == part + 1 for p in prefixes) else float("nan")


if __name__ == "__main__":
    main()
