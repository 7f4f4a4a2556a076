"""mt's default training against a plain Keras 3 baseline, on the Spanish-English Bible, in one invocation.

    python benchmarks/compare_keras.py --corpus work/bible/corpus --minutes 20 --out work/compare-keras

One after the other, each for the same wall-clock minutes of training: the plain Keras model of
benchmarks/keras_baseline.py (`model.fit`) once for each initial output bias of --keras-biases, then
`mt train` with no `--config` (the default), then each config of --mt-configs (shipped names or YAML
paths; a YAML holds only the settings it changes from the default, so every row is one change), then the
default at each size of --mt-vocab-sizes. All but those read the same prepared data folder (SentencePiece
unigram, 8,000 pieces per side, made once by `mt preprocess`); each other size has a data folder of its
own. Then every model decodes the held-out test books (Keras greedily; mt greedily and with beam 5) and
sacrebleu scores them against the same references.
Training speed: real target tokens per second over the training time (mt: the median of its logged
windows, the first left out). Results: OUT/results.json and OUT/table.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from mt.folders import DataFolder, RunFolder  # noqa: E402

MT = [sys.executable, "-m", "mt.cli"]


def log(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run(command, **kwargs):
    log(" ".join(command))
    done = subprocess.run(command, **kwargs)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command[:6])} ... failed with exit code {done.returncode}"
                 + (f": {done.stderr[-2000:]}" if kwargs.get("capture_output") else ""))
    return done


VOCAB = 8000  # SentencePiece pieces per side of the shared data folder


def prepare(corpus, out, vocab=VOCAB):
    """The data folder of `vocab` pieces per side, made once (OUT/data at the shared size, else OUT/data-N)."""
    data = os.path.join(out, "data" if vocab == VOCAB else f"data-{vocab}")
    if not DataFolder(data).is_complete():
        run([*MT, "preprocess", "--src", f"{corpus}/train.es", "--tgt", f"{corpus}/train.en",
             "--dev-src", f"{corpus}/dev.es", "--dev-tgt", f"{corpus}/dev.en", "--out", data,
             "--vocab-size", str(vocab)])
    return data


def budget(args):
    """The training budget's options, as both trainers take them."""
    return ["--max-steps", str(args.max_steps)] if args.max_steps else ["--max-minutes", str(args.minutes)]


def keras(args, corpus, data, out, bias):
    name = "plain Keras" + ("" if bias == "zeros" else f", {bias} output bias")
    hyp = os.path.join(out, f"keras-{bias}.greedy.en")
    done = run([sys.executable, os.path.join(HERE, "keras_baseline.py"), "--data", data, *budget(args),
                "--output-bias", bias, "--test-src", f"{corpus}/test.es", "--out", hyp],
               capture_output=True, text=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {"name": name, "steps": figures["steps"], "tokens_per_s": figures["tokens_per_s"],
            "mean_loss": figures.get("mean_loss"), "hyps": {"greedy": hyp}}


def mt(args, corpus, data, out, config, vocab=VOCAB):
    name = "mt default" if config == "default" else f"mt {os.path.basename(config).removesuffix('.yaml')}"
    if vocab != VOCAB:
        name += f" vocab-{vocab}"
        data = prepare(corpus, out, vocab)
    model = os.path.join(out, name.replace(" ", "-"))
    command = [*MT, "train", "--data", data, "--out", model, *budget(args)]
    run(command + ([] if config == "default" else ["--config", config]))
    folder = RunFolder(model)
    with open(folder.metrics_path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    speeds = [r["tokens_per_s"] for r in records if r["kind"] == "train"]
    hyps = {}
    for search in ("greedy", "beam"):
        hyps[search] = f"{model}.{search}.en"
        run([*MT, "translate", f"{corpus}/test.es", "--model", model, "--search", search, "--beam-size", "5",
             "-o", hyps[search]])
    return {"name": name, "config": config, "steps": folder.done()["step"],
            "tokens_per_s": statistics.median(speeds[1:] or speeds or [0.0]), "hyps": hyps}


def score(result, corpus):
    import sacrebleu

    with open(os.path.join(corpus, "test.en"), encoding="utf-8") as f:
        refs = f.read().splitlines()
    for search, path in result["hyps"].items():
        with open(path, encoding="utf-8") as f:
            hyps = f.read().splitlines()
        result[f"{search}_bleu"] = sacrebleu.corpus_bleu(hyps, [refs]).score
        result[f"{search}_chrf"] = sacrebleu.corpus_chrf(hyps, [refs]).score


def table(results):
    def cell(result, key, form):
        return form.format(result[key]) if key in result else "-"

    lines = ["| run | BLEU beam 5 | BLEU greedy | chrF beam 5 | chrF greedy | target tokens/s | steps |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['name']} | {cell(r, 'beam_bleu', '{:.1f}')} | {cell(r, 'greedy_bleu', '{:.1f}')} | "
                     f"{cell(r, 'beam_chrf', '{:.1f}')} | {cell(r, 'greedy_chrf', '{:.1f}')} | "
                     f"{r['tokens_per_s']:,.0f} | {r['steps']:,} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="work/bible/corpus", help="folder with train/dev/test .es/.en")
    parser.add_argument("--out", default="work/compare-keras", help="working folder (data, models, outputs)")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget of each run")
    parser.add_argument("--max-steps", type=int, default=0,
                        help="train this many updates instead of --minutes: rows that change the quality per update "
                             "compare alike on a busy machine, whose speed would decide a race in minutes")
    parser.add_argument("--mt-configs", default="cpu-20min",
                        help="comma-separated configs trained after the default (shipped names or YAML paths)")
    parser.add_argument("--mt-vocab-sizes", default="",
                        help="comma-separated vocabulary sizes (pieces per side) at which the default config is "
                             "trained too, each on its own data folder, after the configs")
    parser.add_argument("--keras-biases", default="zeros,unigram",
                        help="comma-separated initial output biases of the Keras baselines trained first "
                             "(zeros: Keras' own; unigram: the log target frequencies, as mt starts)")
    parser.add_argument("--skip-keras", action="store_true", help="train no Keras baseline")
    parser.add_argument("--skip-default", action="store_true", help="train no run with the default config")
    args = parser.parse_args()
    corpus, out = os.path.abspath(args.corpus), os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    data = prepare(corpus, out)
    biases = [] if args.skip_keras else [b for b in args.keras_biases.split(",") if b]
    jobs = [lambda b=b: keras(args, corpus, data, out, b) for b in biases]
    configs = ([] if args.skip_default else ["default"]) + [c for c in args.mt_configs.split(",") if c]
    jobs += [lambda c=c: mt(args, corpus, data, out, c) for c in configs]
    jobs += [lambda v=v: mt(args, corpus, data, out, "default", int(v)) for v in args.mt_vocab_sizes.split(",") if v]
    results = []
    for job in jobs:
        results.append(job())
        score(results[-1], corpus)
        with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU")
    spent = f"{args.max_steps:,} updates" if args.max_steps else f"{args.minutes:g} minutes"
    report = f"{spent} of training each, {os.cpu_count()} cores of {cpu}\n\n{table(results)}\n"
    with open(os.path.join(out, "table.md"), "w", encoding="utf-8") as f:
        f.write(report)
    print(report)


if __name__ == "__main__":
    main()
