"""mt against Joey NMT 2.3.0 on the Spanish-English Bible, one after the other in one invocation.

    python benchmarks/compare_joey.py --corpus work/bible/corpus --minutes 20 --out work/compare

Both toolkits get the same training and dev text, the same test books, SentencePiece unigram vocabularies of
8,000 pieces per side trained on the same text, models of the same size (benchmarks/joey/rnn_base_cpu.yaml
is mt's rnn-base-cpu in Joey's terms) and the same wall-clock training budget, counted from the first
training step. Then each decodes the test books greedily and with beam 5, and sacrebleu scores every output
against the same references (detokenized text, BLEU 13a and chrF).

Joey NMT runs in its own virtual environment (OUT/joey-venv: torch 2.13.0 CPU, joeynmt 2.3.0, made on the
first run); it is a benchmark dependency only. Peak memory is the peak resident set (VmHWM) of the training
process. Training speed is the median of the target tokens/s each toolkit logs, steady state (the first log
line of each run is left out). Decoding time is the wall time of the whole translate command, start-up and
model loading included, for both: the median of --repeats rounds, each round running every toolkit's
commands one after the other (Joey greedy, mt greedy, Joey beam 5, mt beam 5), so that a slow spell of this
shared machine falls on both toolkits rather than on one.

The corpus folder is what pipelines/bible/build_corpus.py writes (train/dev/test .es and .en).
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

from mt.folders import DataFolder, RunFolder

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JOEY_PACKAGES = [["torch==2.13.0"], ["joeynmt==2.3.0", "sentencepiece", "sacrebleu", "importlib_metadata"],
                 # Joey 2.3.0 calls SentencePieceProcessor.SetVocabulary, which 0.2.3 no longer has
                 ["sentencepiece==0.2.0"]]


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class PeakMemory:
    """Follows a process's peak resident set size (VmHWM) until it ends."""

    def __init__(self, pid):
        self.pid, self.peak_kib = pid, 0
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        path = f"/proc/{self.pid}/status"
        while True:
            try:
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                return
            time.sleep(0.5)

    @property
    def gib(self):
        return self.peak_kib / 2**20


def run(command, **kwargs):
    log(" ".join(command))
    done = subprocess.run(command, **kwargs)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command[:4])} ... failed with exit code {done.returncode}")
    return done


def timed(command, stdin_path, stdout_path):
    """Run a decoding command with stdin/stdout files; return its wall time in seconds."""
    with open(stdin_path, encoding="utf-8") as fin, open(stdout_path, "w", encoding="utf-8") as fout:
        start = time.perf_counter()
        run(command, stdin=fin, stdout=fout)
        return time.perf_counter() - start


def train_for(command, minutes, log_path, started_pattern, env=None):
    """Start a training command, give it `minutes` from the first log line matching `started_pattern`,
    then stop it with SIGINT (both toolkits save on Ctrl-C). Returns (peak GiB, seconds trained)."""
    with open(log_path, "w", encoding="utf-8") as out:
        log(" ".join(command))
        # a job started in the background by a shell inherits an ignored SIGINT: restore the default
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    memory = PeakMemory(process.pid)
    begin = None
    while process.poll() is None:
        time.sleep(1.0)
        if begin is None:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                if re.search(started_pattern, f.read()):
                    begin = time.time()
                    log("training started")
        elif time.time() - begin > minutes * 60:
            log("time is up: SIGINT")
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=600)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            break
    memory.thread.join(timeout=2)
    return memory.gib, (time.time() - begin) if begin else 0.0


# -- Joey NMT ----------------------------------------------------------------------------------------


def joey_venv(out):
    venv = os.path.join(out, "joey-venv")
    python = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, "installed.json")
    if not os.path.exists(marker):
        run([sys.executable, "-m", "venv", venv])
        for packages in JOEY_PACKAGES:
            run([python, "-m", "pip", "install", "-q", *packages])
        with open(marker, "w", encoding="utf-8") as f:
            json.dump(JOEY_PACKAGES, f)
    return python


def joey_spm(python, corpus, spm_dir):
    """SentencePiece models and Joey vocabulary files with Joey's special ids (unk 0, pad 1, bos 2, eos 3)."""
    if os.path.exists(os.path.join(spm_dir, "vocab.en.txt")):
        return
    os.makedirs(spm_dir, exist_ok=True)
    code = """
import sys, sentencepiece as spm
corpus, out = sys.argv[1], sys.argv[2]
for lang in ("es", "en"):
    spm.SentencePieceTrainer.train(input=f"{corpus}/train.{lang}", model_prefix=f"{out}/spm.{lang}",
        model_type="unigram", vocab_size=8000, character_coverage=1.0, unk_id=0, pad_id=1, bos_id=2,
        eos_id=3, unk_piece="<unk>", pad_piece="<pad>", bos_piece="<s>", eos_piece="</s>", minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=f"{out}/spm.{lang}.model")
    with open(f"{out}/vocab.{lang}.txt", "w", encoding="utf-8") as f:
        f.writelines(sp.id_to_piece(i) + "\\n" for i in range(sp.get_piece_size()))
"""
    run([python, "-c", code, corpus, spm_dir])


def joey_config(out, corpus, spm_dir, model_dir, beam, ckpt=None):
    """The benchmark's Joey config with paths filled in; `ckpt` (for decoding) sets testing.load_model."""
    with open(os.path.join(HERE, "joey", "rnn_base_cpu.yaml"), encoding="utf-8") as f:
        text = f.read()
    load = f'load_model: "{ckpt}"' if ckpt else ""
    for key, value in (("MODEL_DIR", model_dir), ("DATA_DIR", corpus), ("SPM_DIR", spm_dir), ("BEAM", beam),
                       ("LOAD_MODEL", load)):
        text = text.replace(f"@{key}@", str(value))
    path = os.path.join(out, f"joey-{'decode' if ckpt else 'train'}-beam{beam}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def joey(args, corpus, out):
    python = joey_venv(out)
    spm_dir, model_dir = os.path.join(out, "joey-spm"), os.path.join(out, "joey-model")
    joey_spm(python, corpus, spm_dir)
    train_config = joey_config(out, corpus, spm_dir, model_dir, 1)
    train_log = os.path.join(out, "joey-train.log")
    peak, seconds = train_for([python, "-m", "joeynmt", "train", train_config, "--skip-test"], args.minutes,
                              train_log, r"EPOCH \d+")
    with open(train_log, encoding="utf-8", errors="replace") as f:
        text = f.read()
    steps = [int(s) for s in re.findall(r"Step:\s*(\d+)", text)]
    speeds = [float(s) for s in re.findall(r"Tokens per Sec:\s*([\d.]+)", text)]
    # like mt, decode with the weights that scored best on the dev set (Joey: lowest perplexity)
    ckpt = next((os.path.join(model_dir, name) for name in ("best.ckpt", "latest.ckpt")
                 if os.path.exists(os.path.join(model_dir, name))), None)
    if ckpt is None:
        sys.exit(f"error: Joey NMT left no checkpoint in {model_dir}; see {train_log}")
    result = {"name": "Joey NMT 2.3.0 (rnn-base-cpu)", "toolkit": "joey", "checkpoint": ckpt,
              "steps": max(steps, default=0), "peak_gib": peak, "train_seconds": seconds,
              "tokens_per_s": statistics.median(speeds[1:] or speeds or [0.0])}
    return result


def joey_decoding(result, corpus, out):
    """{"greedy": (command, output path), "beam5": ...}"""
    python = joey_venv(out)
    spm_dir, model_dir = os.path.join(out, "joey-spm"), os.path.join(out, "joey-model")
    commands = {}
    for beam, name in ((1, "greedy"), (5, "beam5")):
        config = joey_config(out, corpus, spm_dir, model_dir, beam, result["checkpoint"])
        commands[name] = ([python, "-m", "joeynmt", "translate", config], os.path.join(out, f"joey.{name}.en"))
    return commands


# -- mt ----------------------------------------------------------------------------------------------


def mt(args, corpus, out, config):
    mt_cli = [sys.executable, "-m", "mt.cli"]
    data = os.path.join(out, "mt-data")
    if not DataFolder(data).is_complete():
        run([*mt_cli, "preprocess", "--src", f"{corpus}/train.es", "--tgt", f"{corpus}/train.en",
             "--dev-src", f"{corpus}/dev.es", "--dev-tgt", f"{corpus}/dev.en", "--out", data,
             "--vocab-size", "8000"])
    model = os.path.join(out, f"mt-{config}")
    train_log = os.path.join(out, f"mt-{config}-train.log")
    # the time limit is mt's own --max-minutes; SIGINT after it is only a safety net
    peak, seconds = train_for([*mt_cli, "train", "--data", data, "--out", model, "--config", config,
                               "--max-minutes", str(args.minutes)], args.minutes + 5, train_log, r"step\s+\d+ \|")
    done = RunFolder(model).done()
    with open(RunFolder(model).metrics_path, encoding="utf-8") as f:
        speeds = [r["tokens_per_s"] for r in map(json.loads, f) if r["kind"] == "train"]
    result = {"name": f"mt ({config})", "toolkit": "mt", "model": model, "steps": done["step"], "peak_gib": peak,
              "train_seconds": seconds, "tokens_per_s": statistics.median(speeds[1:] or speeds or [0.0])}
    return result


def mt_decoding(result):
    """{"greedy": (command, output path), "beam5": ...}"""
    model = result["model"]
    return {name: ([sys.executable, "-m", "mt.cli", "translate", "-", "--model", model, "--search", search,
                    "--beam-size", "5"], f"{model}.{name}.en")
            for search, name in (("greedy", "greedy"), ("beam", "beam5"))}


def decode_all(results, corpus, out, repeats):
    """Time every toolkit's greedy and beam-5 decoding of the test books, `repeats` rounds taking turns;
    each result gets the median seconds, every round's seconds and its output file."""
    commands = [joey_decoding(r, corpus, out) if r["toolkit"] == "joey" else mt_decoding(r) for r in results]
    times = [{name: [] for name in c} for c in commands]
    for round_ in range(repeats):
        for name in ("greedy", "beam5"):
            for result, command, seconds in zip(results, commands, times):
                log(f"round {round_ + 1}/{repeats}: {result['name']} {name}")
                seconds[name].append(timed(command[name][0], os.path.join(corpus, "test.es"), command[name][1]))
    for result, command, seconds in zip(results, commands, times):
        for name, (_, hyp) in command.items():
            result[f"{name}_seconds"] = statistics.median(seconds[name])
            result[f"{name}_all_seconds"] = seconds[name]
            result[f"{name}_hyp"] = hyp


# -- scores and table --------------------------------------------------------------------------------


def score(result, corpus):
    import sacrebleu

    with open(os.path.join(corpus, "test.en"), encoding="utf-8") as f:
        refs = f.read().splitlines()
    for name in ("greedy", "beam5"):
        with open(result[f"{name}_hyp"], encoding="utf-8") as f:
            hyps = f.read().splitlines()
        if len(hyps) != len(refs):
            sys.exit(f"error: {result[f'{name}_hyp']} has {len(hyps)} lines for {len(refs)} references")
        result[f"{name}_bleu"] = sacrebleu.corpus_bleu(hyps, [refs]).score
        result[f"{name}_chrf"] = sacrebleu.corpus_chrf(hyps, [refs]).score
        seconds = result[f"{name}_seconds"]
        result[f"{name}_sents_per_s"] = len(hyps) / seconds
        result[f"{name}_words_per_s"] = sum(len(h.split()) for h in hyps) / seconds


def table(results):
    rows = [("training target tokens/s", lambda r: f"{r['tokens_per_s']:,.0f}"),
            ("steps in the budget", lambda r: f"{r['steps']:,}"),
            ("peak memory of training (GiB)", lambda r: f"{r['peak_gib']:.2f}")]
    for name, label in (("greedy", "greedy"), ("beam5", "beam 5")):
        rows += [(f"BLEU {label}", lambda r, n=name: f"{r[n + '_bleu']:.1f}"),
                 (f"chrF {label}", lambda r, n=name: f"{r[n + '_chrf']:.1f}"),
                 (f"decoding {label}: seconds (sentences/s)",
                  lambda r, n=name: f"{r[n + '_seconds']:.1f} ({r[n + '_sents_per_s']:.1f})"),
                 (f"decoding {label}: output words/s", lambda r, n=name: f"{r[n + '_words_per_s']:,.0f}")]
    lines = ["| | " + " | ".join(r["name"] for r in results) + " |",
             "|---|" + "---:|" * len(results)]
    lines += [f"| {label} | " + " | ".join(cell(r) for r in results) + " |" for label, cell in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="work/bible/corpus", help="folder with train/dev/test .es/.en")
    parser.add_argument("--out", default="work/compare", help="working folder (venv, models, outputs)")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget of each run")
    parser.add_argument("--mt-configs", default="cpu-20min,rnn-base-cpu",
                        help="comma-separated mt configs to train (shipped names or paths)")
    parser.add_argument("--skip-joey", action="store_true", help="only run mt")
    parser.add_argument("--decode-only", action="store_true",
                        help="keep the trained models and training figures of OUT/results.json; decode and "
                        "score again (e.g. after a change to decoding), every toolkit in the same invocation")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of decoding (each toolkit's greedy and beam 5 in turn); the median counts")
    args = parser.parse_args()
    corpus, out = os.path.abspath(args.corpus), os.path.abspath(args.out)
    for split in ("train", "dev", "test"):
        for lang in ("es", "en"):
            if not os.path.exists(os.path.join(corpus, f"{split}.{lang}")):
                sys.exit(f"error: {corpus}/{split}.{lang} is missing: build the corpus first with "
                         "`python pipelines/bible/build_corpus.py --out work/bible/corpus`")
    os.makedirs(out, exist_ok=True)
    if args.repeats < 1:
        sys.exit("error: --repeats must be at least 1")
    if args.decode_only:
        with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
            results = json.load(f)
    else:
        results = []
        runs = ([] if args.skip_joey else [lambda: joey(args, corpus, out)])
        runs += [lambda c=config: mt(args, corpus, out, c) for config in filter(None, args.mt_configs.split(","))]
        for one in runs:  # the training figures so far are saved after each run
            results.append(one())
            save(out, results)
    decode_all(results, corpus, out, args.repeats)
    for result in results:
        score(result, corpus)
    report = (f"{args.minutes:g} minutes of training each, {os.cpu_count()} CPU cores; decoding: median of "
              f"{args.repeats} rounds\n\n{table(results)}\n")
    save(out, results, report)
    print(report)


def save(out, results, report=None):
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    if report is not None:
        with open(os.path.join(out, "table.md"), "w", encoding="utf-8") as f:
            f.write(report)


if __name__ == "__main__":
    main()
