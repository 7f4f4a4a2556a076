"""Decoding speed: the compiled searches against a Python loop that calls the model once per token.

    python benchmarks/decode.py --model work/bench/run --input data/default/test.src

Every method translates the same sentences in the same length-sorted batches, in the same process, and
the methods take turns (repeat 1 of every method, then repeat 2, ...), so that other load on the machine
hits them alike; each method's median time is reported, with its ratio to the baselines. Methods:

    baseline-eager   one eager `model.decode_step` call per token from Python, argmax in NumPy
    baseline-step    the same loop around a compiled (`tf.function`) step: one graph call per token
                     (both baselines run the encoder compiled, once per batch: only decoding differs)
    greedy           mt.search.GreedySearch: encoder and the whole search loop in one graph call per batch
    beam             mt.search.BeamSearch with --beam-size and --length-penalty
    greedy-aligned, beam-aligned
                     the same, recording the most attended source position of every output token
                     (`with_alignment`, what `mt translate --alignments` decodes with)
    beam-attention   beam, recording the whole attention of the hypotheses (`with_attention`, what
                     `mt inspect attention` decodes with)

Sentences/s counts input sentences; target tokens/s counts output pieces (EOS included). The first
translation of each method (graph tracing) is not timed. The baselines must give greedy's output: the
script checks that they do and says so.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="work/bench/run", help="Run folder written by `mt train`.")
    p.add_argument("--input", default="data/default/test.src", help="Source text, one sentence a line.")
    p.add_argument("--sentences", type=int, default=200, help="Translate the first N non-empty lines.")
    p.add_argument("--batch-sizes", default="1,64", help="Comma-separated batch sizes (sentences).")
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--length-penalty", type=float, default=0.6)
    p.add_argument("--repeats", type=int, default=3, help="Timed runs per method and batch size.")
    p.add_argument("--max-length-ratio", type=float, default=2.0)
    p.add_argument("--methods", default="baseline-eager,baseline-step,greedy,beam")
    return p.parse_args(argv)


class Workload:
    """The input as length-sorted batches of padded source ids with each sentence's output limit."""

    def __init__(self, translator, lines, batch_size, max_length_ratio):
        from mt.data import pad_sources
        from mt.translate import LENGTH_EXTRA, make_batches

        encoded = translator._encode(lines)
        self.batches = []
        for batch in make_batches([len(e) for e in encoded], batch_size):
            sources = [encoded[i] for i in batch]
            limits = np.array([int(max_length_ratio * len(e)) + LENGTH_EXTRA for e in sources], np.int32)
            self.batches.append((batch, pad_sources(sources), limits))
        self.sentences = sum(len(b) for b, _, _ in self.batches)


def python_loop(encode, step):
    """Greedy search as a Python loop over target positions, one `step` call per token."""
    from mt.tokenizer import BOS, EOS, PAD

    def translate(workload):
        outputs = {}
        for batch, src, limits in workload.batches:
            state = encode(src)
            prev = np.full(len(batch), BOS, np.int32)
            done = np.zeros(len(batch), bool)
            tokens = []
            for t in range(int(limits.max())):
                logits, state, _ = step(prev, state)
                ids = np.where(done, PAD, np.argmax(np.asarray(logits), -1)).astype(np.int32)
                tokens.append(ids)
                done |= (ids == EOS) | (t + 1 >= limits)
                if done.all():
                    break
                prev = ids
            rows = np.stack(tokens, 1)
            for i, row in zip(batch, rows):
                outputs[i] = [int(x) for x in row if x != PAD]
        return outputs

    return translate


def compiled(translator, search):
    """The toolkit's way: one compiled call per batch (a Translator of its own, for its own graph)."""
    from mt.translate import Translator

    translator = Translator(translator.model, translator.src_tok, translator.tgt_tok, search)

    def translate(workload):
        outputs = {}
        for batch, src, limits in workload.batches:
            out = translator._decode(src, limits, np.array(batch, np.int32))
            ids, lengths = np.asarray(out.ids[:, 0]), np.asarray(out.lengths[:, 0])
            for i, row, n in zip(batch, ids, lengths):
                outputs[i] = [int(x) for x in row[:n]]
        return outputs

    return translate


def make_methods(translator, names, beam_size, length_penalty):
    import tensorflow as tf

    from mt.search import BeamSearch, GreedySearch

    model = translator.model
    spec = [tf.TensorSpec([None], tf.int32)]
    state_spec = tf.nest.map_structure(lambda x: tf.TensorSpec([None] * x.shape.rank, x.dtype),
                                       model.encode(tf.constant([[5, 3]], tf.int32)))
    step = tf.function(model.decode_step, input_signature=spec + [state_spec])
    encode = tf.function(model.encode, input_signature=[tf.TensorSpec([None, None], tf.int32)])
    makers = {
        "baseline-eager": lambda: python_loop(encode, model.decode_step),
        "baseline-step": lambda: python_loop(encode, step),
        "greedy": lambda: compiled(translator, GreedySearch()),
        "beam": lambda: compiled(translator, BeamSearch(beam_size, length_penalty, stop="exact")),
        "greedy-aligned": lambda: compiled(translator, GreedySearch(with_alignment=True)),
        "beam-aligned": lambda: compiled(translator, BeamSearch(beam_size, length_penalty, stop="exact",
                                                                with_alignment=True)),
        "beam-attention": lambda: compiled(translator, BeamSearch(beam_size, length_penalty, stop="exact",
                                                                  with_attention=True)),
    }
    unknown = [n for n in names if n not in makers]
    if unknown:
        sys.exit(f"unknown method(s) {unknown}; choose from {list(makers)}")
    return {name: makers[name]() for name in names}


def measure(methods, workload, repeats):
    """{method: (median seconds, outputs)}; the first call of each method traces and is not timed."""
    outputs = {name: fn(workload) for name, fn in methods.items()}
    times = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn(workload)
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), outputs[name]) for name in methods}


def report(batch_size, workload, results):
    base = [n for n in ("baseline-eager", "baseline-step") if n in results]
    head = f"{'batch':>5} {'method':<15} {'seconds':>8} {'sents/s':>8} {'tokens/s':>9}"
    print(head + "".join(f" {'x ' + b:>16}" for b in base) + ("  vs greedy" if "greedy" in results else ""))
    for name, (seconds, outputs) in results.items():
        tokens = sum(len(o) for o in outputs.values())
        line = (f"{batch_size:>5} {name:<15} {seconds:8.2f} {workload.sentences / seconds:8.1f} "
                f"{tokens / seconds:9.0f}")
        line += "".join(f" {results[b][0] / seconds:16.1f}" for b in base)
        if "greedy" in results:
            line += f"  {seconds / results['greedy'][0]:5.2f}x time"
        print(line)
    if "greedy" in results:
        for b in base:
            same = results[b][1] == results["greedy"][1]
            print(f"      {b} output {'equals' if same else 'DIFFERS FROM'} greedy's")
    sys.stdout.flush()


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    from mt.translate import load_translator, read_source

    translator = load_translator(args.model)
    lines = [line for line in read_source(args.input) if line][:args.sentences]
    print(f"model {args.model}, input {args.input}: {len(lines)} sentences; TensorFlow {tf.__version__}, "
          f"{os.cpu_count()} CPU(s); beam {args.beam_size}, length penalty {args.length_penalty}; "
          f"median of {args.repeats} runs")
    methods = make_methods(translator, args.methods.split(","), args.beam_size, args.length_penalty)
    speeds = {}
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        workload = Workload(translator, lines, batch_size, args.max_length_ratio)
        results = measure(methods, workload, args.repeats)
        report(batch_size, workload, results)
        speeds.update({(name, batch_size): workload.sentences / r[0] for name, r in results.items()})
    summary(speeds)


def summary(speeds):
    """Each compiled method at its largest batch against each baseline one sentence at a time."""
    sizes = sorted({b for _, b in speeds})
    if len(sizes) < 2:
        return
    for name in ("greedy", "beam"):
        for base in ("baseline-eager", "baseline-step"):
            if (name, sizes[-1]) in speeds and (base, sizes[0]) in speeds:
                print(f"{name} at batch {sizes[-1]} vs {base} at batch {sizes[0]}: "
                      f"{speeds[name, sizes[-1]] / speeds[base, sizes[0]]:.1f}x sentences/s")


if __name__ == "__main__":
    main()
