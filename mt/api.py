"""The Python API: `mt.load(RUN)` opens a run folder, `.translate(...)` translates as `mt translate` does.
`mt.load(DIR)` of a folder written by `mt export` opens the SavedModel instead (ExportedModel), which
translates with the search settings chosen at export.

    import mt
    model = mt.load("runs/es-en")
    model.translate("una frase")                                 # -> "a sentence"
    model.translate(["una frase", "otra"], search="greedy")       # -> ["a sentence", "another"]
    model.translate(["una frase"], beam_size=8, n_best=3)         # -> [["...", "...", "..."]]
    model.translate("una frase", alignments=True)                 # -> ("a sentence", [(0, 0), (1, 1)])

Keyword settings are the fields of SearchOptions, with its defaults (those of `mt translate`); the same
settings give the text `mt translate --workers 1` writes for the same lines, batched alike (in chunks of
10,000 lines, 320 search rows a batch by default; other batches can settle a near-tie otherwise, see
docs/design.md, "Reading the input as it arrives"). `mt serve` (mt/serve.py) translates through the
same object. `alignments=True` makes every translation a (text, alignment) pair, the alignment the
(source, target) position pairs that `mt translate --alignments` writes in Pharaoh format
(mt/alignment.py), over words or, with `alignment_unit="piece"`, SentencePiece pieces.
"""

import dataclasses
import threading
from collections import OrderedDict

from mt.errors import UserError
from mt.search_options import DEFAULTS, SearchOptions

SEARCH_FIELDS = tuple(f.name for f in dataclasses.fields(SearchOptions))
_TYPES = {f.name: type(getattr(DEFAULTS, f.name)) for f in dataclasses.fields(SearchOptions)}
CACHED_SEARCHES = 8  # compiled searches kept at once: each distinct setting traces its own function


def search_options(settings):
    """A checked SearchOptions from a mapping of setting names to values: a UserError names an unknown
    setting, a value of the wrong type or one that SearchOptions.check refuses."""
    unknown = sorted(set(settings) - set(SEARCH_FIELDS))
    if unknown:
        raise UserError(f"unknown setting(s) {', '.join(unknown)}: choose among {', '.join(SEARCH_FIELDS)}")
    values = {}
    for name, value in settings.items():
        wanted = _TYPES[name]
        # bool is an int to Python, but true as a beam size is a mistake; an int is a fine float
        if isinstance(value, bool) or not isinstance(value, (int, float) if wanted is float else wanted):
            raise UserError(f"{name} must be {'a number' if wanted is float else _TYPE_NAMES[wanted]}, "
                            f"got {value!r}")
        values[name] = float(value) if wanted is float else value
    return SearchOptions(**values).check()


_TYPE_NAMES = {int: "an integer", str: "a string"}


def load(path, weights="best", precision="auto"):
    """A Model of a run folder, or an ExportedModel of a folder written by `mt export`."""
    from mt.folders import ExportFolder

    if ExportFolder(path).is_export():
        if weights != "best" or precision != "auto":
            raise UserError(f"{path} is an exported model: its weights and precision were chosen at export "
                            "(mt export --weights, --precision)")
        return ExportedModel(path)
    return Model.load(path, weights, precision)


class Model:
    """A trained run folder ready to translate; see the module docstring.

    Its methods are what a caller of the run needs beside the command line: `translate`, and `score`, the
    model's log-probabilities of given translations (the forced decoding of `mt score`)."""

    def __init__(self, translator, run_dir):
        self.translator, self.run_dir = translator, str(run_dir)
        self._translators = OrderedDict()  # search key -> Translator sharing the model and tokenizers
        self._lock = threading.Lock()
        self._scorer = None  # built at the first `score`

    @classmethod
    def load(cls, run_dir, weights="best", precision="auto"):
        from mt.runtime import import_tensorflow_quietly
        from mt.translate import load_translator

        import_tensorflow_quietly()
        return cls(load_translator(run_dir, weights, precision), run_dir)

    def translate(self, text, batch_size=None, alignments=False, alignment_unit="word", **settings):
        """Translate a string (returns a string) or a list of strings (returns a list in the same order).
        With n_best > 1 every translation becomes a list of up to n_best strings, best first. With
        `alignments`, every string becomes a pair (string, its alignment: a list of (source, target)
        positions of `alignment_unit`, "word" or "piece", as `mt translate --alignments` writes them)."""
        from mt.translate import _one_line

        options = search_options(settings)
        single = isinstance(text, str)
        lines = [text] if single else list(text)
        if not all(isinstance(line, str) for line in lines):
            raise TypeError("translate takes a string or a list of strings")
        unit = self._alignment_unit(alignment_unit) if alignments else None
        found = self.hypotheses(lines, options, batch_size=batch_size, alignments=unit)
        if unit:
            texts = [[(_one_line(h.text), list(h.alignment or ())) for h in hyps] for hyps in found]
        else:
            texts = [[_one_line(h.text) for h in hyps] for hyps in found]
        out = texts if options.n_best > 1 else [t[0] for t in texts]
        return out[0] if single else out

    def _alignment_unit(self, unit):
        """`unit` checked, for a model that has the attention alignments come from."""
        from mt.alignment import UNITS

        if unit not in UNITS:
            raise UserError(f"alignment_unit must be one of {', '.join(UNITS)}, got {unit!r}")
        if not self.translator.model.attention:
            raise UserError(f"alignments need a model with attention ({self.run_dir} has model.attention: none)")
        return unit

    def score(self, sources, targets, per_token=False, batch_size=64):
        """The log-probability under the model of each target given its source (a string each, or two
        aligned lists): the sum over the target's pieces, EOS included, as a search scores that output;
        with `per_token`, the list of the pieces' log-probabilities instead."""
        from mt.scoring import Scorer

        single = isinstance(sources, str)
        if single != isinstance(targets, str):
            raise TypeError("score takes two strings or two lists of strings")
        sources, targets = ([sources], [targets]) if single else (list(sources), list(targets))
        with self._lock:
            if self._scorer is None:
                self._scorer = Scorer(self.translator)
        found = self._scorer.score([s.strip() for s in sources], [t.strip() for t in targets], batch_size)
        out = [[float(x) for x in pieces] if per_token else float(sum(float(x) for x in pieces)) for pieces in found]
        return out[0] if single else out

    def hypotheses(self, lines, options=DEFAULTS, scores=False, batch_size=None, alignments=None):
        """For every line (stripped of surrounding whitespace, as `mt translate` reads them), its list of
        Hypothesis, best first. `scores` asks greedy search for log-probabilities too (beam search and
        sampling always have them); `alignments` ("word" or "piece") gives every hypothesis its alignment.

        The lines are batched in chunks of CHUNK_LINES, as `mt translate` reads a file: which lines share a
        batch can decide a near-tie by rounding (docs/design.md, "Reading the input as it arrives"), and so
        a list gives the bytes `mt translate --workers 1` writes for the same lines, however long."""
        from mt.translate import CHUNK_LINES, default_batch_size

        if batch_size is None:
            batch_size = default_batch_size(options.search, options.beam_size)
        translator = self.translator_for(options, scores, with_alignment=alignments is not None)
        lines, size = [line.strip() for line in lines], CHUNK_LINES
        chunks = (lines[k:k + size] for k in range(0, len(lines), size))
        return [found for _, found in translator.stream_hypotheses(chunks, batch_size, options.max_length_ratio,
                                                                   alignments=alignments)]

    def translator_for(self, options, scores=False, with_alignment=False):
        """The Translator of these search settings, compiled once and kept among the last CACHED_SEARCHES;
        `with_alignment`: its search records the most attended source position of every output piece."""
        from mt.search import build_search
        from mt.translate import Translator

        # the length ratio is an input of the compiled search, and only greedy search skips scores
        key = (options.replace(max_length_ratio=DEFAULTS.max_length_ratio), scores and options.search == "greedy",
               with_alignment)
        with self._lock:
            translator = self._translators.pop(key, None)
            if translator is None:
                t = self.translator
                search = build_search(options, scores=key[1], with_alignment=with_alignment)
                translator = Translator(t.model, t.src_tok, t.tgt_tok, search)
            self._translators[key] = translator
            while len(self._translators) > CACHED_SEARCHES:
                self._translators.popitem(last=False)
        return translator

    def info(self):
        """What the run folder says of the model: its settings, vocabularies, size and training records."""
        import json
        import os

        from mt.folders import RunFolder

        run = RunFolder(self.run_dir)
        src_vocab, tgt_vocab = run.vocab_sizes()
        info = {"model": dataclasses.asdict(run.load_config().model), "src_vocab": src_vocab, "tgt_vocab": tgt_vocab,
                "parameters": int(self.translator.model.count_params()),
                "search_defaults": dataclasses.asdict(DEFAULTS)}
        step, best = None, None
        if os.path.exists(run.metrics_path):
            with open(run.metrics_path, encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:  # a line cut by a crash or still being written
                        continue
                    step = record.get("step", step)
                    if record.get("kind") == "dev" and record.get("best"):
                        best = record
        done = run.done()
        if done is not None:
            step = done.get("step", step)
        info["training"] = {"step": step, "finished": None if done is None else done.get("reason"),
                            "best_dev_step": None if best is None else best.get("step"),
                            "dev_bleu": None if best is None else best.get("bleu"),
                            "dev_loss": None if best is None else best.get("loss")}
        return info


class ExportedModel:
    """A SavedModel written by `mt export`, loaded with TensorFlow (and tensorflow-text) alone: `translate`
    as Model's, with the search settings of the export; `info` is the export's record.

    Settings passed to `translate` must be those of the export (a SavedModel holds one compiled search);
    `score` needs the run folder, whose model the SavedModel does not expose step by step."""

    def __init__(self, path):
        from mt.folders import ExportFolder
        from mt.runtime import import_tensorflow_text

        self.path = str(path)
        self.record = ExportFolder(path).record()
        import_tensorflow_text("loading an exported model")
        import tensorflow as tf

        self._translate = tf.saved_model.load(self.path).signatures["serving_default"]
        self.options = SearchOptions(**self.record["search"])

    def translate(self, text, batch_size=None, alignments=False, alignment_unit="word", **settings):
        """Translate a string (returns a string) or a list of strings (returns a list in the same order)."""
        import tensorflow as tf

        if alignments:
            raise UserError(f"{self.path} is an exported model, whose signature returns no alignments: "
                            f"load the run folder it was exported from ({self.record.get('run')}) for them")
        asked = search_options(settings)
        differing = [f"{name} {getattr(asked, name)!r} (exported: {getattr(self.options, name)!r})"
                     for name in settings if getattr(asked, name) != getattr(self.options, name)]
        if batch_size is not None and batch_size != self.record["batch_size"]:
            differing.append(f"batch_size {batch_size!r} (exported: {self.record['batch_size']})")
        if differing:
            raise UserError(f"{self.path} cannot translate with {', '.join(differing)}: an exported model's "
                            "settings are chosen at export (mt export ...); load the run folder for others")
        single = isinstance(text, str)
        lines = [text] if single else list(text)
        if not all(isinstance(line, str) for line in lines):
            raise TypeError("translate takes a string or a list of strings")
        out = self._translate(text=tf.constant(lines, tf.string))["translations"].numpy()
        texts = [t.decode("utf-8", "replace") for t in out]
        return texts[0] if single else texts

    def score(self, sources, targets, per_token=False, batch_size=64):
        raise UserError(f"{self.path} is an exported model, which translates only: scoring needs the run folder "
                        f"it was exported from ({self.record.get('run')}), mt.load(RUN).score(...)")

    def info(self):
        return dict(self.record)
