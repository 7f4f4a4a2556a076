"""Translating an input in chunks against translating it whole: how many outputs differ, and the time.

In one process, the same lines are translated as one list (`Translator.iter_hypotheses`, the batches of
a sort of the whole input) and in chunks of --chunk-lines (`Translator.stream_hypotheses`, what
`mt translate` does), taking turns for --rounds rounds; the table shows each round's wall and CPU
seconds, then the number of lines whose output differs and, for those, how far apart the model's
log-probabilities of the two pieces are at the first position where the outputs part (forced decoding
of both prefixes; greedy search picks the more probable piece, so a choice that rounding decided is a
near-tie, and the gap is of the size of the batch's rounding).

    python benchmarks/translate_chunks.py --model RUN --input test.es --lines 12000 --chunk-lines 4000
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="run folder written by mt train")
    parser.add_argument("--input", required=True, help="source text")
    parser.add_argument("--lines", type=int, default=12000, help="the first N lines of the input")
    parser.add_argument("--chunk-lines", type=int, default=4000)
    parser.add_argument("--search", default="greedy")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    from mt.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    from mt.search import build_search
    from mt.search_options import SearchOptions
    from mt.translate import decoding_workers, default_batch_size, load_translator, read_source

    workers = decoding_workers(None)
    translator = load_translator(args.model, precision=args.precision)
    translator.search = build_search(SearchOptions(search=args.search))  # with scores, to compare them
    lines = read_source(args.input)[:args.lines]
    batch = default_batch_size(args.search, SearchOptions().beam_size, workers=workers)
    list(translator.iter_hypotheses(lines[:100], batch, workers=workers))  # traced before timing
    size = args.chunk_lines

    def whole():
        return translator.iter_hypotheses(lines, batch, workers=workers)

    def chunked():
        return translator.stream_hypotheses((lines[k:k + size] for k in range(0, len(lines), size)), batch,
                                            workers=workers)

    print(f"{len(lines)} lines of {args.input}, {args.search}, precision {args.precision}, {workers} worker(s), "
          f"{batch} sentences a batch, chunks of {size}")
    print("| round | how | seconds | CPU seconds |")
    print("|---:|---|---:|---:|")
    found = {}
    for round_ in range(1, args.rounds + 1):
        for name, make in (("whole", whole), (f"chunks of {size}", chunked)):
            cpu, wall = time.process_time(), time.perf_counter()
            found[name] = [hyps[0] for _, hyps in make()]
            print(f"| {round_} | {name} | {time.perf_counter() - wall:.1f} | {time.process_time() - cpu:.1f} |",
                  flush=True)
    a, b = found.values()
    differ = [i for i, (x, y) in enumerate(zip(a, b)) if x.ids != y.ids]
    gaps = sorted(parting_gap(translator, lines[i], a[i], b[i]) for i in differ)
    print(f"{len(differ)} of {len(lines)} outputs differ (lines {', '.join(str(i) for i in differ[:20])}); "
          f"where they part, the two pieces' log-probabilities are apart by {', '.join(f'{g:.4f}' for g in gaps)}")


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
