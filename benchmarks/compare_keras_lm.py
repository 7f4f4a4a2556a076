"""`mt lm train` against a plain Keras 3 character LSTM of the same size, on the same text, for the same
minutes, one after the other in one invocation.

    python benchmarks/compare_keras_lm.py --train work/linux-c/corpus/train.txt --dev work/linux-c/corpus/dev.txt \
        --test work/linux-c/corpus/test.txt --minutes 10 --out work/compare-keras-lm

First the plain Keras model of benchmarks/keras_lm_baseline.py (Keras' LSTM(stateful=True) and
`model.fit`, float32, Keras' defaults), then `mt lm train` once for each of --mt-precisions (auto: what
mt uses without being told, bfloat16 products where the CPU has them; float32: the same arithmetic as the
Keras model), all at the sizes and settings of --config (default: mt's defaults). mt validates on --dev
within its minutes; Keras trains on the same --train text and never validates. Both are then measured on
--test as `mt lm evaluate` measures (mt with its last weights, not the best on dev, as Keras has only its
last). Characters per second: over the whole training time (characters trained / seconds), and the median
of the logged windows with the first (compilation) left out. Results: OUT/results.json, OUT/table.md.
"""

import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from mt.folders import LMRunFolder  # noqa: E402
from mt.lm.config import LMConfig  # noqa: E402

from compare_keras import MT, log, run  # noqa: E402  (the same runner of the commands it compares)


def keras(args, config):
    done = run([sys.executable, os.path.join(HERE, "keras_lm_baseline.py"), "--train", args.train, "--test", args.test,
                "--minutes", str(args.minutes), "--config", config], capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def mt(args, cfg, precision):
    name = f"mt ({precision})"
    model = os.path.join(args.out, f"mt-{precision}")
    cfg.train.precision = precision
    config = os.path.join(args.out, f"mt-{precision}.yaml")
    cfg.save(config)
    run([*MT, "lm", "train", "--text", args.train, "--dev-text", args.dev, "--out", model, "--config", config,
         "--max-minutes", str(args.minutes), "--restart"])
    done = run([*MT, "lm", "evaluate", "--model", model, "--text", args.test, "--weights", "last", "--json"],
               capture_output=True, text=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    folder = LMRunFolder(model)
    with open(folder.metrics_path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    train = [r for r in records if r["kind"] == "train"]
    done = folder.done()
    steps, seconds = done["step"], done["train_seconds"]  # training time, its validations included
    chars = steps * cfg.train.batch_size * cfg.train.bptt
    return {"name": name, "precision": folder.load_config().train.precision, "steps": steps, "chars": chars,
            "train_seconds": seconds, "chars_per_s": chars / seconds,
            "chars_per_s_median": statistics.median([r["chars_per_s"] for r in train][1:] or [0.0]),
            "bits_per_char": figures["bits_per_char"], "predictions": figures["predictions"]}


def table(results, args, cfg):
    m = cfg.model
    lines = [f"{m.layers} x {m.units} {m.cell.upper()}, embeddings {m.emb_dim}, {cfg.train.batch_size} streams x "
             f"{cfg.train.bptt} characters, {args.minutes:g} minutes each; held-out: {args.test}", "",
             "| run | precision | held-out bits/char | chars/s (whole run) | chars/s (median window) | updates |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['precision']} | {r['bits_per_char']:.3f} | {r['chars_per_s']:,.0f} | "
                     f"{r['chars_per_s_median']:,.0f} | {r['steps']:,} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", help="mt lm config (path or shipped name) for both models' sizes")
    parser.add_argument("--mt-precisions", default="auto,float32")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cfg = LMConfig.load(args.config)
    shared = os.path.join(args.out, "sizes.yaml")
    cfg.save(shared)
    results = [keras(args, shared)]
    log(json.dumps(results[-1]))
    for precision in args.mt_precisions.split(","):
        results.append(mt(args, LMConfig.load(shared), precision))
        log(json.dumps(results[-1]))
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "config": cfg.to_dict(), "results": results}, f, indent=2)
    text = table(results, args, cfg)
    with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
