"""Stage 3: load a run folder, translate text in length-sorted batches, keep one output line per input line.

`Translator` holds a model, its tokenizers and a search (mt/search.py; greedy unless told otherwise). It
sorts the input by length, cuts it into batches of sentences or of source tokens, decodes every batch with
one compiled call (encoder and the whole search loop in one graph), and puts the results back in input
order. A sentence's output limit is `max_length_ratio` x its own source length + LENGTH_EXTRA pieces.

n-best output (`mt translate --n-best K`), K lines per input line, best first, input lines in order:
    LINE ||| TRANSLATION ||| LOG_PROB ||| SCORE
LINE counts input lines from 0; LOG_PROB is the model's log-probability of the output pieces, EOS included;
SCORE is what the search ranked by (LOG_PROB after the length and coverage penalties; equal to LOG_PROB
for greedy and sampling). A search that finds fewer than K distinct hypotheses writes fewer lines; an
empty input line gets one empty hypothesis with scores 0.

With alignments (`--alignments`), every translation line, or n-best line, ends in ` ||| ALIGNMENT`: the
hard alignment of that hypothesis from its attention, as Pharaoh `i-j` pairs (mt/alignment.py):
    TRANSLATION ||| ALIGNMENT
    LINE ||| TRANSLATION ||| LOG_PROB ||| SCORE ||| ALIGNMENT
An empty input line, or an output without words, has an empty ALIGNMENT.

`mt translate` reads its input in chunks of `chunk_lines` lines as they arrive (mt/textio.py,
iter_chunks), sorts and batches each chunk on its own and writes its lines before it asks for the next:
memory does not grow with the input, and a line typed into a terminal or written alone into a pipe is
translated at once. An input that fits in one chunk is batched exactly as a whole list would be; a longer
one decodes the same up to the rounding of other batches, which can decide a near-tie, as another batch
size can (a sentence's output does not depend on its batch otherwise: mt/search.py). A file gives the same
bytes on every run; the chunks of a pipe are what has arrived (docs/design.md, "Reading the input as it
arrives", with how often an output changed: up to 3 lines in 1,000 with bfloat16 products, none in 10,894
in float32).
"""

import contextlib
import sys
import time
from dataclasses import dataclass

import click
import numpy as np

from mt.errors import UserError
from mt.search_options import SearchOptions
from mt.tokenizer import EOS, PAD

CHUNK_LINES = 10_000  # input lines read, sorted and decoded together: bounds the memory of a long input
INPUT_PAUSE = 0.02  # seconds: an input that arrives slowly is translated once it pauses this long ...
INPUT_HOLD = 0.5  # ... or this long after the first line waiting, whichever comes first
MAX_INPUT_PIECES = 1000  # longer inputs are cut to this many pieces, with a warning
LENGTH_EXTRA = 10  # output limit: max_length_ratio x source pieces + this
DEFAULT_ROWS = 320  # default batch: this many rows (sentences x beams) in the search
BATCH_TYPES = ("sents", "tokens")


@dataclass
class Hypothesis:
    """One translation of one sentence."""

    text: str
    ids: list  # target piece ids, without EOS
    log_prob: float  # the model's log-probability of the output (EOS included when it ended with one)
    score: float  # what the search ranked by
    complete: bool  # it ended with EOS (False: it was cut at the length limit)
    attention: np.ndarray = None  # [output pieces incl. EOS, source pieces] when the search recorded it
    sources: np.ndarray = None  # [output pieces incl. EOS] the source piece attended most, when recorded
    alignment: list = None  # (source, target) position pairs, when asked for (mt/alignment.py)


EMPTY = Hypothesis("", [], 0.0, 0.0, True)


class Translator:
    """A trained model (or an ensemble), its tokenizers and a search, ready to translate lists of sentences.

    `model` is a Seq2Seq, an `mt.ensemble.Ensemble`, or a list of models, which become an Ensemble."""

    def __init__(self, model, src_tokenizer, tgt_tokenizer, search=None):
        from mt.search import GreedySearch

        if isinstance(model, (list, tuple)):
            from mt.ensemble import Ensemble

            model = Ensemble(model) if len(model) > 1 else model[0]
        self.model, self.src_tok, self.tgt_tok = model, src_tokenizer, tgt_tokenizer
        self.search = search if search is not None else GreedySearch()

    @property
    def search(self):
        return self._search

    @search.setter
    def search(self, search):
        """A new search gets its own compiled function (traced at its first batch). A coverage penalty
        needs a model with attention."""
        import tensorflow as tf

        if getattr(search, "coverage_penalty", 0) and not self.model.attention:
            raise UserError("--coverage-penalty needs a model with attention (this one has model.attention: none)")
        self._search = search
        spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None], tf.int32)]
        # autograph off: the search and the model build their loops with tf.while_loop and tf.cond, and
        # converting their Python code to graph code would take longer than decoding a batch
        self._decode = tf.function(self._decode_batch, input_signature=spec, autograph=False)

    def trace(self):
        """Trace the compiled search now, in this thread (see _decode_jobs)."""
        self._decode.get_concrete_function()

    def _decode_batch(self, src, max_lengths, row_ids):
        import tensorflow as tf

        state = self.model.encode(src, longest_first=True)  # see hypotheses
        # the step with its weights cast to the compute dtype once per batch, outside the search loop
        return self._search(self.model.step_function(), state, max_lengths, source_mask=tf.not_equal(src, PAD),
                            row_ids=row_ids)

    def translate(self, lines, batch_size=64, max_length_ratio=2.0, progress=False, batch_type="sents"):
        """Translate a list of strings; returns a list of strings of the same length and order."""
        return [best[0].text for best in self.hypotheses(lines, batch_size, max_length_ratio, progress,
                                                         batch_type)]

    def hypotheses(self, lines, batch_size=64, max_length_ratio=2.0, progress=False, batch_type="sents",
                   workers=1, alignments=None):
        """For every line, its list of Hypothesis (best first: n-best for beam search, else one).

        `workers` > 1 decodes that many batches at once, each in its own thread (see `decoding_workers`
        for the threads TensorFlow should then give each batch). The output is the same: a sentence's
        result does not depend on when its batch runs. `alignments`: see `iter_hypotheses`."""
        return [found for _, found in self.iter_hypotheses(lines, batch_size, max_length_ratio, progress,
                                                            batch_type, workers, alignments)]

    def iter_hypotheses(self, lines, batch_size=64, max_length_ratio=2.0, progress=False, batch_type="sents",
                        workers=1, alignments=None):
        """(line index, its list of Hypothesis) for every line, in input order, each as soon as it and
        every line before it are decoded (the arguments: see `hypotheses`). `alignments`, "word" or
        "piece", gives every hypothesis its alignment in those units (mt/alignment.py); the search must
        record the attended source positions (`with_alignment`) or the attention (`with_attention`)."""
        return self._chunk_hypotheses(0, lines, batch_size, max_length_ratio, progress, batch_type, workers,
                                      alignments)

    def stream_hypotheses(self, chunks, batch_size=64, max_length_ratio=2.0, batch_type="sents", workers=1,
                          alignments=None):
        """`iter_hypotheses` of an input given as lists of lines (chunks; mt.textio.iter_chunks reads a
        file so), lines counted across the chunks. Each chunk is sorted and batched on its own, and all of
        its lines are yielded before the next chunk is asked for, so a caller that writes them has written
        everything when the input waits. Sampling draws follow the line's index, not its chunk."""
        first = 0
        for lines in chunks:
            yield from self._chunk_hypotheses(first, lines, batch_size, max_length_ratio, False, batch_type,
                                              workers, alignments)
            first += len(lines)

    def _chunk_hypotheses(self, first, lines, batch_size, max_length_ratio, progress, batch_type, workers,
                          alignments):
        """iter_hypotheses of `lines`, the first of which is line `first` of the input."""
        from mt.alignment import UNITS

        if alignments is not None and (alignments not in UNITS or not self._search.needs_attention):
            raise ValueError(f"alignments are one of {UNITS}, of a search that records attention "
                             f"(with_alignment); got {alignments!r}")
        if alignments == "word":
            encoded, source_words = self._encode_with_words(lines)
        else:
            encoded, source_words = self._encode(lines), None
        results, following = {}, 0
        jobs = []
        for batch in make_batches([len(e) for e in encoded], batch_size, batch_type):
            batch = sorted(batch, key=lambda i: -len(encoded[i]))  # longest first, for the encoder
            # the input's line numbers: sampling draws depend on them
            jobs.append(([first + i for i in batch], [encoded[i] for i in batch], max_length_ratio))

        def ready():
            nonlocal following
            while following < len(lines) and (following in results or not encoded[following]):
                yield first + following, results.pop(following, [EMPTY])
                following += 1

        yield from ready()
        with _maybe_progress(self._decode_jobs(jobs, workers), progress, "translating", len(jobs)) as bar:
            for (rows, sources, _), out in bar:
                found = self._unpack(out, [len(e) for e in sources])
                if alignments:
                    self._align(found, alignments, source_words and [source_words[row - first] for row in rows])
                for row, hyps in zip(rows, found):
                    results[row - first] = hyps
                yield from ready()
        yield from ready()

    def _align(self, found, unit, source_words):
        """Give every hypothesis of `found` (per sentence, its hypotheses) its alignment in `unit`, given
        the word of every source piece of every sentence (for words)."""
        from mt.alignment import links, source_of_target, words_of_pieces

        hyps = [(s, h) for s, sentence in enumerate(found) for h in sentence]
        targets = self.tgt_tok.decode_with_spans([h.ids for _, h in hyps]) if unit == "word" and hyps else None
        for k, (s, h) in enumerate(hyps):
            if h.sources is not None:
                sources = h.sources[:len(h.ids)]
            else:
                sources = source_of_target(h.attention, len(h.ids))
            if unit == "word":
                h.alignment = links(sources, source_words[s], words_of_pieces(*targets[k]))
            else:
                h.alignment = links(sources)

    def _decode_job(self, job):
        """One batch (sentence indices, their pieces longest first, the length ratio) -> the search's
        result as numpy arrays."""
        from mt.data import pad_sources

        batch, sources, ratio = job
        limits = [int(ratio * len(e)) + LENGTH_EXTRA for e in sources]
        out = self._decode(pad_sources(sources), np.array(limits, np.int32), np.array(batch, np.int32))
        return type(out)(*(None if x is None else x.numpy() for x in out))

    def _decode_jobs(self, jobs, workers):
        """Yield (job, the search's tensors as numpy arrays) for every job, in the order they finish.

        With several workers the largest batches go first, so that the workers finish together. The
        function is traced here, in the calling thread, before any worker calls it: Keras keeps its
        settings per thread, and a worker calling a traced function runs no model code."""
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                yield job, self._decode_job(job)
            return
        import queue
        import threading

        from mt.textio import interruptible_get

        self.trace()
        todo, finished = queue.SimpleQueue(), queue.SimpleQueue()
        for job in sorted(jobs, key=lambda job: -len(job[1]) * len(job[1][0])):  # sentences x longest
            todo.put(job)

        def work():
            while True:
                try:
                    job = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    finished.put((job, self._decode_job(job)))
                except BaseException as error:  # handed to the caller's thread, which raises it
                    finished.put((job, error))
                    return

        # daemon threads: an interrupted or failed command does not wait for batches still running
        for _ in range(min(workers, len(jobs))):
            threading.Thread(target=work, daemon=True).start()
        try:
            for _ in jobs:
                job, out = interruptible_get(finished)  # Ctrl-C is seen while a batch runs
                if isinstance(out, BaseException):
                    raise out
                yield job, out
        finally:
            while not todo.empty():  # on an error, start no further batch
                try:
                    todo.get_nowait()
                except queue.Empty:
                    break

    def _encode(self, lines):
        """The pieces of every line, cut to MAX_INPUT_PIECES (with a warning)."""
        return self._cut(self.src_tok.encode(lines))

    def _encode_with_words(self, lines):
        """`_encode`, and the word of every piece in its line (mt.alignment.words_of_pieces)."""
        from mt.alignment import words_of_pieces

        pairs = self.src_tok.encode_with_spans(lines)
        words = [words_of_pieces(line, spans)[:MAX_INPUT_PIECES] for line, (_, spans) in zip(lines, pairs)]
        return self._cut([ids for ids, _ in pairs]), words

    def _cut(self, encoded):
        long = sum(len(e) > MAX_INPUT_PIECES for e in encoded)
        if long:
            click.echo(f"warning: {long} input line(s) longer than {MAX_INPUT_PIECES} pieces were cut to "
                       f"that length", err=True)
            encoded = [e[:MAX_INPUT_PIECES] for e in encoded]
        return encoded

    def _unpack(self, out, source_lengths):
        """The search's tensors for one batch -> for every sentence, its valid hypotheses, best first."""
        ids, scores, ranks, lengths = (np.asarray(x) for x in out[:4])
        attention = None if out.attention is None else np.asarray(out.attention)
        sources = None if out.sources is None else np.asarray(out.sources)
        entries = [(r, n) for r in range(len(source_lengths)) for n in range(ids.shape[1])
                   if np.isfinite(ranks[r, n])]
        outputs = [[int(i) for i in ids[r, n, :lengths[r, n]]] for r, n in entries]
        complete = [bool(o) and o[-1] == EOS for o in outputs]
        pieces = [o[:-1] if c else o for o, c in zip(outputs, complete)]
        texts = self.tgt_tok.decode(pieces) if pieces else []
        results = [[] for _ in source_lengths]
        for (r, n), piece_ids, text, done in zip(entries, pieces, texts, complete):
            weights = None if attention is None else attention[r, n, :lengths[r, n], :source_lengths[r]]
            attended = None if sources is None else sources[r, n, :lengths[r, n]]
            results[r].append(Hypothesis(text, piece_ids, float(scores[r, n]), float(ranks[r, n]), done,
                                         weights, attended))
        return results

    # -- lines of several callers in one batch (mt/serve.py) ------------------------------------------------

    def hypotheses_of_pieces(self, encoded, max_length_ratio, row_ids, batch_size):
        """`hypotheses` of source pieces already encoded (and cut), with every sentence's row id given: a
        sentence's random draws depend on its row id, and `hypotheses` uses its index, so lines gathered
        from several callers keep the draws each would get alone by passing their own indices."""
        results = [[EMPTY] for _ in encoded]
        for batch in make_batches([len(e) for e in encoded], batch_size):
            batch = sorted(batch, key=lambda i: -len(encoded[i]))  # longest first, for the encoder
            sources = [encoded[i] for i in batch]
            out = self._decode_job(([row_ids[i] for i in batch], sources, max_length_ratio))
            for i, found in zip(batch, self._unpack(out, [len(e) for e in sources])):
                results[i] = found
        return results


def default_batch_size(search, beam_size, batch_type="sents", workers=1):
    """DEFAULT_ROWS rows of the search in flight, shared among the workers' batches: on a CPU one batch at
    a time runs fastest at about that many rows, and two workers as fast at half of them each
    (docs/design.md, "Input length and memory" and "Several batches at once")."""
    rows = max(1, DEFAULT_ROWS // max(1, workers))
    sentences = max(1, rows // (beam_size if search == "beam" else 1))
    return sentences if batch_type == "sents" else 32 * sentences


def decoding_workers(workers=None, share_cores=True):
    """How many batches to decode at once, with TensorFlow's threads set to share the CPU among them.

    On a CPU, one batch at a time leaves cores idle: between its large matrix products a step runs many
    small operations one after another, and each product is split across every core, which costs
    synchronization. Two batches, each with half the cores' threads, fill each other's gaps
    (docs/design.md, "Several batches at once").

    `workers` None means the default: 2 on a CPU with at least 2 cores, 1 with a GPU (one large batch
    keeps a GPU busy). With `share_cores`, TensorFlow's threads per operation become
    cores / workers; that is possible only before TensorFlow has run its first operation, and it holds
    for the rest of the process, so `mt pipeline` (which runs its stages in one process) leaves them
    alone, and so does a caller that has run TensorFlow already; then the default is 1 worker.
    """
    import tensorflow as tf

    from mt.runtime import usable_cores

    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if tf.config.list_physical_devices("GPU"):
        return workers or 1
    cores = usable_cores()
    wanted = workers or (2 if cores >= 2 else 1)
    if wanted == 1:
        return 1
    threads = max(1, cores // wanted)
    if share_cores:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already runs: its threads cannot change any more
            pass
    if workers is None and tf.config.threading.get_intra_op_parallelism_threads() != threads:
        return 1  # the default, where the cores could not be shared out: one batch at a time
    return wanted


def make_batches(lengths, batch_size, batch_type="sents"):
    """Indices of the non-empty inputs, sorted by length and cut into batches.

    "sents": at most `batch_size` sentences a batch. "tokens": at most `batch_size` source pieces a batch,
    padding included (sentences x longest); a sentence longer than that makes a batch of its own. Beam
    search multiplies the memory of a batch by the beam size.
    """
    if batch_type not in BATCH_TYPES:
        raise UserError(f"unknown batch type {batch_type!r}: choose one of {', '.join(BATCH_TYPES)}")
    order = sorted((i for i, n in enumerate(lengths) if n), key=lambda i: lengths[i])
    if batch_type == "sents":
        return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    batches, current = [], []
    for i in order:  # ascending lengths: the newest sentence is the longest of its batch
        if current and (len(current) + 1) * lengths[i] > batch_size:
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current] if current else batches


def _maybe_progress(items, show, label, length=None):
    if show:
        return click.progressbar(items, label=label, file=sys.stderr, length=length)
    return contextlib.nullcontext(items)


def load_translator(run_dir, weights="best", precision="auto"):
    """Open a run folder written by `mt train`: its config, tokenizers and weights; or several, as an
    ensemble.

    `run_dir` is a run folder or a list of them (an ensemble of their models, which need the same
    tokenizers). `weights` is best, last or a weights file (`mt average` writes one), for every model, or a
    list of those, one per run folder. `precision` is the compute precision of decoding: "auto" decodes in
    the precision each model was trained in (a mixed_bfloat16 model runs its matrix products in bfloat16,
    as in training), or one of float32, mixed_bfloat16, mixed_float16."""
    from mt.folders import RunFolder

    runs = [run_dir] if isinstance(run_dir, (str, bytes)) or not hasattr(run_dir, "__iter__") else list(run_dir)
    if not runs:
        raise UserError("no --model given")
    choices = [weights] if isinstance(weights, str) else list(weights)
    if len(choices) == 1:
        choices = choices * len(runs)
    if len(choices) != len(runs):
        raise UserError(f"{len(choices)} --weights for {len(runs)} --model: give one for all, or one per model")
    folders = [RunFolder(path) for path in runs]
    tgt_sizes = [folder.vocab_sizes()[1] for folder in folders]
    for folder, size in zip(folders[1:], tgt_sizes[1:]):
        if size != tgt_sizes[0]:
            raise UserError(f"an ensemble needs one target vocabulary: {folders[0].path} has {tgt_sizes[0]} "
                            f"target pieces, {folder.path} {size}")
    for folder in folders[1:]:
        for side in ("src", "tgt"):
            if _file_bytes(folder.tokenizer_path(side)) != _file_bytes(folders[0].tokenizer_path(side)):
                raise UserError(f"an ensemble needs the same tokenizers: {folders[0].tokenizer_path(side)} and "
                                f"{folder.tokenizer_path(side)} differ")
    models = [load_model(folder, choice, precision) for folder, choice in zip(folders, choices)]
    return Translator(models, *folders[0].tokenizers())


def _file_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None


def load_model(run, weights="best", precision="auto"):
    """The model of a RunFolder with the weights `weights` (best, last or a weights file), built in the
    compute precision `precision` (see load_translator)."""
    import keras

    from mt.config import PRECISIONS
    from mt.model import build_model, weights_to_be_loaded

    src_vocab, tgt_vocab = run.vocab_sizes()
    config = run.load_config()
    path = run.existing_weights(weights)
    if precision == "auto":
        precision = config.train.precision
    if precision == "auto":  # a snapshot written by hand: `mt train` records the precision it resolved
        from mt.distribute import resolve_precision

        precision = resolve_precision("auto")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: choose auto or one of {', '.join(PRECISIONS)}")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)  # layers take the policy when they are built
    try:
        with weights_to_be_loaded():
            model = build_model(config.model, src_vocab, tgt_vocab)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    try:
        model.load_weights(path)
    except ValueError as e:
        raise UserError(f"{path} does not fit the model of {run.path}: {str(e).splitlines()[0]}") from None
    return model


def read_source(path):
    """Input lines for translation ('-' is stdin), each stripped of surrounding whitespace."""
    from mt.textio import read_lines

    return [line.strip() for line in read_lines(path)]


def source_chunks(path, chunk_lines=CHUNK_LINES, between=None):
    """The input lines of `read_source` as they arrive, in lists of at most `chunk_lines` (see
    mt.textio.iter_chunks; `between` is called before each list after the first)."""
    from mt.textio import iter_chunks

    for chunk in iter_chunks(path, chunk_lines, INPUT_PAUSE, INPUT_HOLD, between):
        yield [line.strip() for line in chunk]


def check_source(path):
    """The number of lines of INPUT when it is a file that can be read twice (a regular file), read once
    before decoding so that an unreadable file or an invalid line stops the command before any output, as
    when the whole input was read first; None for stdin, a pipe or a terminal, which are read only as
    they are translated."""
    import os

    from mt.textio import LineReader, is_regular_file

    if path == "-" or (os.path.exists(path) and not is_regular_file(path)):
        return None
    reader = LineReader(path)
    for _ in reader:
        pass
    return reader.lines


def run(input, model, output, search, beam_size, length_penalty, coverage_penalty, n_best, temperature,
        top_k, top_p, seed, batch_size, batch_type, max_length_ratio, weights, precision="auto", beam_stop="early",
        workers=None, chunk_lines=CHUNK_LINES, alignments=False, alignment_unit="word"):
    """`mt translate`: translate INPUT with the run folder MODEL, to OUTPUT or stdout."""
    from mt.atomic import atomic_open
    from mt.runtime import process_is_shared
    from mt.search import build_search

    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if chunk_lines < 1:
        raise UserError(f"--chunk-lines must be at least 1, got {chunk_lines}")
    options = SearchOptions(search, beam_size, length_penalty, coverage_penalty, beam_stop, n_best, temperature,
                            top_k, top_p, seed, max_length_ratio).check()
    workers = decoding_workers(workers, share_cores=not process_is_shared())  # before TensorFlow's first operation
    if batch_size is None:
        batch_size = default_batch_size(search, beam_size, batch_type, workers)
    if output:
        import os

        if input != "-" and os.path.abspath(output) == os.path.abspath(input):
            raise UserError(f"-o {output} is the input file: write the translation to another file")
        from mt.atomic import check_writable_folder

        check_writable_folder(os.path.dirname(os.path.abspath(output)), "the translation")  # before decoding
    total = check_source(input)
    translator = load_translator(model, weights, precision)
    if alignments and not translator.model.attention:
        raise UserError("--alignments needs a model with attention (this one has model.attention: none)")
    # only n-best lines show scores, of beam search; the attended positions are recorded only for alignments
    translator.search = build_search(options, scores=False, with_alignment=alignments)
    start = time.time()
    chunks = source_chunks(input, chunk_lines, between=None if output else sys.stdout.flush)
    found = translator.stream_hypotheses(chunks, batch_size, max_length_ratio, batch_type, workers,
                                         alignment_unit if alignments else None)
    if output:
        # written as lines are decoded, to a temporary file that becomes OUTPUT only when it is whole
        written = 0
        try:
            with atomic_open(output) as f, _line_progress(total) as advance:
                for line, hyps in found:
                    f.write(format_line(line, hyps, n_best, alignments))
                    written += 1
                    advance(written)
        except OSError as e:  # a full disk, say: the temporary file is gone, OUTPUT is as it was
            raise UserError(f"cannot write {output}: {e.strerror or e}") from None
        click.echo(f"translated {written} lines in {time.time() - start:.1f} s -> {output}", err=True)
    else:
        for line, hyps in found:
            sys.stdout.write(format_line(line, hyps, n_best, alignments))
            if not line % 64:
                sys.stdout.flush()
        sys.stdout.flush()


PROGRESS_STEP = 256  # lines between updates of the progress bar


@contextlib.contextmanager
def _line_progress(total):
    """A function of the number of lines written so far that shows them in a progress bar on stderr (of
    `total` lines; nothing when the total is unknown)."""
    if total is None:
        yield lambda written: None
        return
    with click.progressbar(length=total, label="translating", file=sys.stderr) as bar:
        shown = 0

        def advance(written):
            nonlocal shown
            if written - shown >= PROGRESS_STEP or written == total:
                bar.update(written - shown)
                shown = written

        yield advance


def format_line(line, hyps, n_best, alignments=False):
    """The output of input line `line`: its translation, or its n-best lines when n_best > 1; with
    `alignments`, each followed by ' ||| ' and its alignment."""
    if n_best > 1:
        return format_nbest_line(line, hyps, alignments)
    text = _one_line(hyps[0].text)
    return f"{text} ||| {_alignment(hyps[0])}\n" if alignments else text + "\n"


def format_nbest_line(line, hyps, alignments=False):
    return "".join(f"{line} ||| {_one_line(h.text)} ||| {h.log_prob:.4f} ||| {h.score:.4f}"
                   + (f" ||| {_alignment(h)}\n" if alignments else "\n") for h in hyps)


def format_nbest(found):
    """n-best lines (see the module docstring): 'LINE ||| TRANSLATION ||| LOG_PROB ||| SCORE'."""
    return "".join(format_nbest_line(line, hyps) for line, hyps in enumerate(found))


def _alignment(hypothesis):
    from mt.alignment import pharaoh

    return pharaoh(hypothesis.alignment or ())


def _one_line(text):
    """The text with every line break Python knows (\\r, \\v, \\x1c, U+2028, ...) made a space: an
    untrained model can produce such bytes, and the output must stay one line per input line."""
    return " ".join(text.splitlines())
