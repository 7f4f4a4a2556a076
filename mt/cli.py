"""The `mt` command. Each command parses its options and calls one stage function.

TensorFlow is imported only inside the stages, so `mt --help` answers at once.
"""

import functools
import os
import sys

import click

from mt import __version__
from mt.errors import UserError
from mt.folders import RunFolder
from mt.runtime import import_tensorflow_quietly
from mt.search_options import DEFAULTS, search_options


def stage(fn, tensorflow=True):
    """Run a stage; a UserError becomes one line on stderr and exit code 1, never a traceback.

    `tensorflow`: the stage needs TensorFlow, imported first with its start-up noise silenced."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            if tensorflow:
                import_tensorflow_quietly()
            return fn(*args, **kwargs)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            # the reader of stdout has gone (`mt translate ... | head -1`): end quietly, and keep Python
            # from reporting the failed flush of stdout at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {where}{e.strerror or e}", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mt")
def cli():
    """mt: recurrent neural machine translation.

    \b
    mt preprocess --src train.es --tgt train.en --out DATA
    mt train --data DATA --out RUN
    mt translate input.txt --model RUN -o out.txt
    mt translate input.txt --model RUN_A --model RUN_B -o out.txt    (ensemble)
    mt score --model RUN --src test.es --tgt test.en
    mt average RUN --last 5 --out RUN/averaged.weights.h5
    mt export --model RUN --out DIR    (a TensorFlow SavedModel that translates)
    mt evaluate --ref ref.txt --hyp out.txt
    mt pipeline run pipelines/quickstart.yaml
    mt lm train --text input.txt --out RUN                           (a character language model)
    """


@cli.command()
@click.option("--src", type=click.Path(dir_okay=False), help="Training source text, one sentence a line.")
@click.option("--tgt", type=click.Path(dir_okay=False), help="Training target text, aligned with --src.")
@click.option("--tsv", type=click.Path(dir_okay=False), help="Training pairs as 'source<TAB>target' lines "
              "(instead of --src/--tgt).")
@click.option("--dev-src", type=click.Path(dir_okay=False), help="Dev source text.")
@click.option("--dev-tgt", type=click.Path(dir_okay=False), help="Dev target text.")
@click.option("--dev-tsv", type=click.Path(dir_okay=False), help="Dev pairs as TSV.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Prepared data folder to write.")
@click.option("--vocab-size", default=8000, show_default=True, help="SentencePiece vocabulary size per side "
              "(or of the joint vocabulary).")
@click.option("--model-type", type=click.Choice(["unigram", "bpe", "char"]), default="unigram",
              show_default=True, help="SentencePiece model type.")
@click.option("--joint/--separate", default=False, show_default=True,
              help="One vocabulary for both sides, or one per side.")
@click.option("--max-len", default=250, show_default=True, help="Drop pairs with more words than this "
              "on either side.")
@click.option("--max-ratio", default=3.0, show_default=True, help="Drop pairs whose word-count ratio "
              "exceeds this.")
@click.option("--dev-size", default=1000, show_default=True, help="Without a dev set: how many training "
              "pairs to hold out (seeded sample).")
@click.option("--seed", default=1234, show_default=True, help="Seed for the held-out sample and SentencePiece.")
@click.option("--on-invalid", type=click.Choice(["error", "replace"]), default="error", show_default=True,
              help="An invalid UTF-8 byte: stop with an error naming file and line, or replace it.")
@click.option("--tokenizers-from", type=click.Path(file_okay=False, exists=True),
              help="Encode with the tokenizers of this run folder or prepared data folder instead of training "
              "new ones (to continue training a model on new data: mt train --init-from).")
def preprocess(**kwargs):
    """Check, clean and filter a parallel corpus, train SentencePiece, write a prepared data folder."""
    from mt import preprocess as stage_module

    return stage(stage_module.run, tensorflow=False)(**kwargs)


_PRECISION = click.option("--precision", type=click.Choice(["auto", "float32", "mixed_bfloat16", "mixed_float16"]),
                          default="auto", show_default=True,
                          help="Compute precision of decoding; auto: the precision each model was trained in.")


@cli.command()
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Prepared data folder.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder (created, or "
              "resumed if it holds a checkpoint).")
@click.option("--config", help="Config YAML path or shipped config name (quickstart, rnn-base-cpu, cpu-20min).")
@click.option("--max-steps", type=int, help="Stop after this many steps (overrides the config).")
@click.option("--max-minutes", type=float, help="Stop after this many minutes (overrides the config).")
@click.option("--seed", type=int, help="Random seed (overrides the config).")
@click.option("--strategy", type=click.Choice(["auto", "one", "mirrored", "multi-worker", "tpu"]), default="auto",
              show_default=True, help="tf.distribute strategy: auto picks multi-worker when TF_CONFIG names a "
              "cluster, mirrored with several GPUs, else one device.")
@click.option("--cpu-replicas", default=0, help="Split the CPU into N logical devices and train data-parallel "
              "on them (to try mirrored training without GPUs).")
@click.option("--join-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Multi-worker: how long to wait for every task of the cluster to join (default 600).")
@click.option("--worker-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Multi-worker: a task that sends no heartbeat for this long counts as gone, and the others "
              "stop with an error naming it (default 10).")
@click.option("--precision", type=click.Choice(["auto", "float32", "mixed_float16", "mixed_bfloat16"]),
              help="Compute precision (overrides the config); mixed_float16 uses loss scaling; auto: "
              "mixed_bfloat16 where the CPU has bfloat16 products in hardware (AVX-512 BF16, AMX) and no "
              "GPU is used, else float32.")
@click.option("--checkpoint-every", type=int, help="Steps between checkpoints (overrides the config).")
@click.option("--init-from", type=click.Path(file_okay=False, exists=True),
              help="Start a new run from the weights of this trained run (fine-tuning, domain adaptation): its "
              "model settings, a fresh optimizer and step count; the data must use its tokenizers "
              "(mt preprocess --tokenizers-from RUN).")
@click.option("--init-weights", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="With --init-from: which of its weights to start from.")
@click.option("--restart", is_flag=True, help="Start a new run in --out, discarding the checkpoints, weights and "
              "metrics of the run it holds (needed to train it again on other data or with other settings).")
def train(**kwargs):
    """Train an encoder-decoder with attention on a prepared data folder."""
    from mt import train as stage_module

    return stage(stage_module.run)(**kwargs)


_MODELS = click.option("--model", required=True, multiple=True, type=click.Path(file_okay=False),
                       help="Run folder written by train; repeat it for an ensemble (the models' log-probabilities "
                       "averaged at every step; they need the same tokenizers).")
def _weights_values(ctx, param, values):
    """best, last, or a weights file's name: anything else is a usage error now, before a model loads."""
    for value in values:
        if value not in RunFolder.WEIGHT_NAMES and not RunFolder.is_weights_file_name(value):
            raise click.BadParameter(f"{value!r} is neither best, last nor a file ending in "
                                     f"{RunFolder.WEIGHTS_SUFFIX}")
    return values


_WEIGHTS_OF_MODELS = click.option(
    "--weights", multiple=True, default=("best",), show_default=True, callback=_weights_values,
    help="Which saved weights: best, last, or a path to a weights file (as `mt average` writes); once for "
    "every --model, or once per --model in their order.")


@cli.command()
@click.argument("input", type=click.Path(dir_okay=False, allow_dash=True))
@_MODELS
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output file (default: stdout).")
@search_options
@click.option("--batch-size", type=int, default=None, help="Sentences (or source pieces, see --batch-type) "
              "decoded together; bounds memory. Default: 320 rows of the search shared among the --workers, "
              "i.e. 320 / workers sentences for greedy search and sampling, 320 / workers / beam size for "
              "beam search (32 x that many source pieces with --batch-type tokens).")
@click.option("--batch-type", type=click.Choice(["sents", "tokens"]), default="sents", show_default=True,
              help="What --batch-size counts: sentences, or source pieces including padding.")
@click.option("--workers", type=int, default=None,
              help="Batches decoded at once, the CPU cores shared among them. Default: 2 on a CPU with 2 or "
              "more cores, 1 on a GPU or inside `mt pipeline`.")
@click.option("--chunk-lines", type=int, default=10_000, show_default=True,
              help="Input lines read, sorted by length and decoded together before the next ones are read; "
              "bounds memory. Input that arrives slowly (a terminal, a pipe) is translated as it comes, "
              "once it pauses for 20 ms. Lines of different chunks never share a batch, so, as --batch-size "
              "does, this can change the output of a line whose best next pieces tie to within the rounding "
              "of other batches: up to 3 lines in 1,000 measured with bfloat16 products, none in 10,894 in float32 "
              "(docs/design.md, \"Reading the input as it arrives\").")
@click.option("--alignments", is_flag=True,
              help="End every output line with ' ||| ' and the hard alignment from the attention: "
              "space-separated 'i-j' pairs (source i, target j, from 0), Pharaoh format as fast_align writes "
              "it. Units: see --alignment-unit.")
@click.option("--alignment-unit", type=click.Choice(["word", "piece"]), default="word", show_default=True,
              help="With --alignments: positions of the whitespace-separated words of the input line and "
              "of the translation (word: a target word links to every source word one of its pieces attends "
              "to most), or of the SentencePiece pieces the model reads and writes (piece: one link per "
              "target piece).")
@_WEIGHTS_OF_MODELS
@_PRECISION
def translate(**kwargs):
    """Translate INPUT ('-' for stdin), one output line per input line.

    The input is read and translated in chunks as it arrives, and output lines are written in input order
    as their chunk finishes, so `mt translate - --model RUN` works as a filter, line by line in a terminal.
    Inputs longer than 1000 pieces are cut to that length, with a warning.
    """
    from mt import translate as stage_module

    return stage(stage_module.run)(**kwargs)


@cli.command()
@click.option("--model", required=True, type=click.Path(file_okay=False), help="Run folder written by train.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every "
              "interface).")
@click.option("--port", default=8000, show_default=True, help="Port to listen on (0: a free one, printed).")
@click.option("--max-batch-rows", type=int, default=None, help="Rows of the search (sentences x beam size) "
              "gathered from concurrent requests into one batch. Default: 320.")
@click.option("--max-wait-ms", default=5.0, show_default=True, help="How long a request waits for others "
              "with the same settings to share its batch.")
@click.option("--max-body-bytes", default=1_000_000, show_default=True, help="Larger request bodies are "
              "refused (413).")
@click.option("--max-lines", default=1000, show_default=True, help="Requests with more lines are refused (413).")
@click.option("--weights", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which saved weights to use.")
@click.option("--precision", type=click.Choice(["auto", "float32", "mixed_bfloat16", "mixed_float16"]),
              default="auto", show_default=True,
              help="Compute precision of decoding; auto: the precision the model was trained in.")
@click.option("--workers", type=int, default=None, help="Batches decoded at once, each on its share of the "
              "cores (as for translate). Default: 2 on a CPU with 2 or more cores, 1 on a GPU.")
def serve(**kwargs):
    """Translate over HTTP: POST /v1/translate with {"text": ...} and search settings as JSON.

    \b
    curl -s localhost:8000/v1/translate -d '{"text": ["una frase", "otra"], "beam_size": 5}'
    GET /health (200 once the model is loaded), GET /v1/info (the model and its training).

    Search settings and their defaults are those of `mt translate` (its option names with _ for -);
    concurrent requests with the same settings are decoded in one batch. Needs pip install 'mt[serve]'.
    SIGTERM or Ctrl-C: stop accepting, answer the requests in flight, exit.
    """
    from mt import serve as stage_module

    return stage(stage_module.run)(**kwargs)


@cli.command()
@click.option("--model", required=True, type=click.Path(file_okay=False), help="Run folder written by train.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write the SavedModel "
              "in: new or empty (see --force). Written beside it under a temporary name, renamed when whole.")
@search_options(n_best=False)
@click.option("--batch-size", type=int, default=None, help="Sentences decoded together inside the SavedModel. "
              "Default: 320 rows of the search, i.e. 320 sentences for greedy search and sampling, 320 / beam "
              "size for beam search (the batches of `mt translate --workers 1`).")
@click.option("--weights", default="best", show_default=True,
              callback=lambda ctx, param, value: _weights_values(ctx, param, [value])[0],
              help="Which saved weights: best, last, or a path to a weights file (as `mt average` writes).")
@_PRECISION
@click.option("--force", is_flag=True, help="Replace --out even if it holds something.")
def export(**kwargs):
    """Export a run as a TensorFlow SavedModel that translates strings with TensorFlow alone.

    \b
    import tensorflow as tf, tensorflow_text
    f = tf.saved_model.load(DIR).signatures["serving_default"]
    f(text=tf.constant(["una frase"]))["translations"]

    The signature serving_default maps text (a batch of strings) to translations, scores and log_probs;
    SentencePiece and the search run inside the graph, with the search settings given here (the defaults
    of `mt translate`), recorded in DIR/assets.extra/mt-export.json and the signature info. Needs
    pip install 'mt[export]' (tensorflow-text).
    """
    from mt import export as stage_module

    return stage(stage_module.run)(**kwargs)


@cli.command()
@_MODELS
@click.option("--src", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Source text, one sentence a line ('-' for stdin).")
@click.option("--tgt", required=True, type=click.Path(dir_okay=False),
              help="Target text to score, aligned with --src.")
@click.option("--per-token", is_flag=True, help="Also write the log-probability of every target piece.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output file (default: stdout).")
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="Pairs (or source pieces, see --batch-type) scored together.")
@click.option("--batch-type", type=click.Choice(["sents", "tokens"]), default="sents", show_default=True,
              help="What --batch-size counts: sentences, or source pieces including padding.")
@_WEIGHTS_OF_MODELS
@_PRECISION
def score(**kwargs):
    """Score target sentences under the model: forced decoding, one line per pair.

    Each line holds the total log-probability of the target's pieces (EOS included), the number of those
    pieces, and with --per-token the log-probability of each, tab-separated (the pieces' scores
    space-separated): exactly the scores a search assigns to that output. A pair with an empty source
    line scores 0 over 0 pieces.
    """
    from mt import scoring as stage_module

    return stage(stage_module.run)(**kwargs)


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--last", type=int, default=None, help="Average the last N checkpoints (default: all the run "
              "keeps, train.keep_checkpoints).")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help=f"Weights file to write; its name must end in {RunFolder.WEIGHTS_SUFFIX}. Translate with it: "
              "mt translate --model RUN --weights OUT.")
def average(**kwargs):
    """Average the model weights of the last checkpoints of RUN into one weights file.

    The mean of the weights saved at the last few checkpoints is often a better model than any of them.
    """
    from mt import averaging as stage_module

    return stage(stage_module.run)(**kwargs)


@cli.command()
@click.option("--ref", required=True, type=click.Path(dir_okay=False, allow_dash=False), help="Reference text.")
@click.option("--hyp", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="System output; repeat to compare systems with the first one (paired bootstrap "
              "resampling and approximate randomization).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--tokenize", default=None, help="sacrebleu BLEU tokenizer (default: 13a).")
@click.option("--lowercase", is_flag=True, help="Case-insensitive BLEU.")
def evaluate(**kwargs):
    """Score a translation with sacrebleu: BLEU, chrF and TER, with their signatures.

    With several --hyp, each system is also compared with the first: p-values of sacrebleu's paired
    bootstrap resampling and approximate randomization, and 95% confidence intervals.
    """
    from mt import evaluate as stage_module

    return stage(stage_module.run, tensorflow=False)(**kwargs)


@cli.group()
def pipeline():
    """Run a YAML pipeline of stages."""


@pipeline.command("run")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--force", is_flag=True, help="Run every stage, even those whose outputs are up to date.")
def pipeline_run(path, force):
    """Run the stages of PATH in order, skipping those whose outputs are newer than their inputs."""
    from mt import pipeline as stage_module

    # the pipeline runs the other commands of this group; TensorFlow is imported by the stages that need it
    return stage(stage_module.run, tensorflow=False)(path, cli.commands, force=force)


_WEIGHTS = click.option("--weights", type=click.Choice(["best", "last"]), default="best", show_default=True,
                        help="Which saved weights to use.")


@cli.group("lm")
def lm_group():
    """A character-level language model: train it on a text, sample from it, measure it.

    \b
    mt lm train --text input.txt --out RUN [--config small] [--max-minutes 10]
    mt lm sample --model RUN --prime "static int" --length 500 --temperature 0.8
    mt lm evaluate --model RUN --text held-out.txt
    mt inspect cells --model RUN --input held-out.txt --out cells.html
    """


_LM_RUN = click.option("--model", required=True, type=click.Path(file_okay=False),
                       help="Run folder written by `mt lm train`.")


@lm_group.command("train")
@click.option("--text", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="Training text; repeat for several files, read in the order given as one stream.")
@click.option("--dev-text", multiple=True, type=click.Path(dir_okay=False),
              help="Dev text for validation (repeatable); without it, the last lines of --text "
              "(train.dev_fraction) are held out.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder (created, or resumed "
              "if it holds a checkpoint).")
@click.option("--config", help="Config YAML path or shipped config name (small, kernel).")
@click.option("--max-steps", type=int, help="Stop after this many updates (overrides the config).")
@click.option("--max-minutes", type=float, help="Stop after this many minutes (overrides the config).")
@click.option("--seed", type=int, help="Random seed (overrides the config).")
@click.option("--checkpoint-every", type=int, help="Updates between checkpoints (overrides the config).")
@click.option("--restart", is_flag=True, help="Start a new run in --out, discarding the run it holds.")
def lm_train(**kwargs):
    """Train a character language model by truncated backpropagation through time.

    The text is cut into train.batch_size parallel streams; every update reads train.bptt more
    characters of each, from the state the previous update carried over. Ctrl-C or SIGTERM saves a
    checkpoint; the same command resumes at the same place in the streams.
    """
    from mt.lm import train as stage_module

    return stage(stage_module.run)(**kwargs)


@lm_group.command("sample")
@_LM_RUN
@click.option("--prime", default="", help="Text the sample continues (default: the start of a line).")
@click.option("--length", default=500, show_default=True, help="Characters to generate (bytes, for a byte "
              "vocabulary).")
@click.option("--temperature", default=DEFAULTS.temperature, show_default=True,
              help="Divide log-probabilities by this: lower is safer and more repetitive, higher more varied.")
@click.option("--argmax", is_flag=True, help="Always take the most probable character (greedy; no randomness).")
@click.option("--top-k", default=DEFAULTS.top_k, show_default=True,
              help="Only from the K most probable characters (0 = all).")
@click.option("--top-p", default=DEFAULTS.top_p, show_default=True,
              help="Only from the most probable characters that together reach this probability (1 = all).")
@click.option("--seed", default=DEFAULTS.seed, show_default=True, help="The same seed gives the same text.")
@_WEIGHTS
def lm_sample(**kwargs):
    """Generate text from a language model; the prime and the sample go to stdout."""
    from mt.lm import sample as stage_module

    return stage(stage_module.run)(**kwargs)


@lm_group.command("evaluate")
@_LM_RUN
@click.option("--text", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="Held-out text (repeatable).")
@click.option("--streams", default=64, show_default=True, help="At most this many parallel rows the text "
              "is read as, each from the zero state and at least 4,096 characters long: more is faster.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_WEIGHTS
def lm_evaluate(**kwargs):
    """Bits per character (and perplexity) of a language model on held-out text."""
    from mt.lm import evaluate as stage_module

    return stage(stage_module.run)(**kwargs)


@cli.group("inspect")
def inspect_group():
    """Look inside a run: attention maps, hidden units, training curves.

    \b
    mt inspect attention --model RUN --src "una frase" --out att.png
    mt inspect attention --model RUN --input test.es --out report.html
    mt inspect cells --model RUN --input text.txt --out cells.html
    mt inspect curves --model RUN --out curves.png

    Images (.png, .svg, .pdf) need matplotlib: pip install 'mt[viz]'. HTML pages need nothing more.
    """


_RUN = click.option("--model", required=True, type=click.Path(file_okay=False), help="Run folder written by train.")
_SRC = click.option("--src", help="One source sentence.")
_INPUT = click.option("--input", type=click.Path(dir_okay=False, allow_dash=True),
                      help="Source text, one sentence a line ('-' for stdin); empty lines are skipped.")

@inspect_group.command("attention")
@_RUN
@_SRC
@_INPUT
@click.option("--out", type=click.Path(dir_okay=False), help="Image (.png, .svg, .pdf) or page (.html) to "
              "write; default: a text map on stdout.")
@click.option("--max-sentences", default=20, show_default=True, help="Use at most this many lines of --input.")
@search_options(n_best=False)
@_WEIGHTS
def inspect_attention(**kwargs):
    """Where the decoder attends, as heatmaps.

    Translates the source as `mt translate` does, with the same search options and defaults, and shows
    for each target piece the attention over the source pieces at the step that produced it.
    """
    from mt.inspection import attention as stage_module

    return stage(stage_module.run)(**kwargs)


@inspect_group.command("cells")
@_RUN
@_SRC
@_INPUT
@click.option("--out", type=click.Path(dir_okay=False), help="HTML page to write; default: the table of "
              "units on stdout.")
@click.option("--units", help="Units to colour the text by, e.g. 'fw_0:12,bw_0:3' (default: the unit "
              "that follows each feature best).")
@click.option("--top", default=5, show_default=True, help="Units listed per feature.")
@click.option("--max-sentences", default=50, show_default=True, help="Use at most this many lines of --input.")
@_WEIGHTS
def inspect_cells(**kwargs):
    """Hidden units coloured over a text: the encoder's, or a language model's.

    Lists the units whose activation follows simple features of the text (translation models: inside
    quotes, position in the sentence, punctuation, word start; language models of `mt lm train`: inside
    quotes, inside a comment, bracket depth, position in the line, line length so far) and colours the
    text by a few of them. For a language model --max-sentences counts the lines of --input.
    """
    from mt.folders import LMRunFolder

    if LMRunFolder(kwargs["model"]).is_lm():
        from mt.inspection import lm_cells as stage_module
    else:
        from mt.inspection import cells as stage_module

    return stage(stage_module.run)(**kwargs)


@inspect_group.command("curves")
@_RUN
@click.option("--out", type=click.Path(dir_okay=False), help="Image (.png, .svg, .pdf) to write; default: "
              "a table on stdout.")
def inspect_curves(**kwargs):
    """Loss and dev BLEU against the training step.

    Reads the run's metrics.jsonl, so it also works while training is still running.
    """
    from mt.inspection import curves as stage_module

    return stage(stage_module.run)(**kwargs)


def main():
    cli(prog_name="mt")


if __name__ == "__main__":
    main()
