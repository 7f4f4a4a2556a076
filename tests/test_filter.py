"""`mt translate` as a filter: input read in chunks as it arrives (a file, stdin, a pipe fed line by line),
the same output as the whole input decoded at once, bounded memory, and `--alignments` from the attention."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from mt.alignment import links, parse_pharaoh, pharaoh, words_of_pieces
from mt.cli import cli
from mt.config import Config, ModelConfig
from mt.errors import UserError
from mt.model import build_model
from mt.search_options import SearchOptions
from mt.textio import iter_chunks
from mt.tokenizer import EOS, Tokenizer, train_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ["el", "gato", "come", "pescado", "la", "casa", "es", "grande", "perro", "corre", "rápido", "niño",
         "juega", "con", "una", "pelota", "roja", "sol", "brilla", "hoy", "dice", "que", ",", "."]


def corpus(count, seed=0, longest=8):
    rng = np.random.default_rng(seed)
    return [" ".join(str(w) for w in rng.choice(WORDS, int(rng.integers(1, longest + 1)))) for _ in range(count)]


def make_run(root, endless=False, **model_settings):
    """A run folder as `mt train` lays it out, with untrained weights made to attend sharply; `endless`: its
    model never ends a sentence, every output runs to its length limit."""
    root.mkdir(parents=True, exist_ok=True)
    text = corpus(300)
    src = train_tokenizer(text, root / "src.spm", 300, seed=1)
    tgt = train_tokenizer([line.upper() for line in text], root / "tgt.spm", 300, seed=1)
    settings = dict(emb_dim=8, enc_units=8, dec_units=16, dropout=0.0)
    settings.update(model_settings)
    config = Config(model=ModelConfig(**settings)).check()
    config.train.precision = "float32"
    src_vocab, tgt_vocab = Tokenizer(src).vocab_size, Tokenizer(tgt).vocab_size
    keras.utils.set_random_seed(0)
    model = build_model(config.model, src_vocab, tgt_vocab)
    if model.attention:  # a sharp maximum: the alignments are then not decided by rounding
        model.decoder.attn_key.set_weights([w * 200.0 for w in model.decoder.attn_key.get_weights()])
    model.encoder.embedding.set_weights([w * 40.0 for w in model.encoder.embedding.get_weights()])
    if endless:
        kernel, bias = model.decoder.output_layer.get_weights()
        bias[EOS] = -1e4
        model.decoder.output_layer.set_weights([kernel, bias])
    config.save(root / "config.yaml")
    (root / "data.json").write_text(json.dumps({"src_vocab": src_vocab, "tgt_vocab": tgt_vocab}))
    (root / "weights").mkdir(exist_ok=True)
    model.save_weights(str(root / "weights" / "best.weights.h5"))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("filter") / "run")


@pytest.fixture(scope="module")
def lines():
    """Input lines with empty ones, surrounding spaces, runs of spaces and a no-break space."""
    found = corpus(40, seed=3, longest=10)
    found[4] = found[17] = ""
    found[9] = "  el  gato\u00a0come  "
    found[23] = "rápido, niño."
    return found


def mt(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def child_env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def default_sigint():
    """For a child whose Ctrl-C is tested: SIGINT back to its default action, since a test run started in
    the background by a shell ignores SIGINT and its children inherit that (Python then installs no
    KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# -- reading in chunks -------------------------------------------------------------------------------------


def test_a_file_is_cut_into_chunks_of_lines_and_a_pipe_into_what_has_arrived(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("".join(f"{i}\n" for i in range(25)))
    calls = []
    chunks = list(iter_chunks(str(path), 10, between=lambda: calls.append(1)))
    assert [len(c) for c in chunks] == [10, 10, 5] and sum(chunks, []) == [str(i) for i in range(25)]
    assert len(calls) == 2  # before each chunk after the first

    read, write = os.pipe()

    def writer():
        with open(write, "wb") as f:
            for burst in (["a"], ["b"], ["c", "d", "e"], [str(i) for i in range(25)]):
                f.write("".join(f"{line}\n" for line in burst).encode())
                f.flush()
                time.sleep(0.4)  # longer than the pause: what has arrived is a chunk

    threading.Thread(target=writer, daemon=True).start()
    # the first line did not wait for the second, written 0.4 s later; a burst is cut at the chunk size
    assert list(iter_chunks(f"/dev/fd/{read}", 10, pause=0.1, hold=5.0)) == [
        ["a"], ["b"], ["c", "d", "e"], [str(i) for i in range(10)], [str(i) for i in range(10, 20)],
        [str(i) for i in range(20, 25)]]


def test_a_line_is_not_held_longer_than_the_hold_by_a_steady_trickle():
    read, write = os.pipe()

    def writer():
        with open(write, "wb") as f:
            for i in range(30):
                f.write(f"{i}\n".encode())
                f.flush()
                time.sleep(0.02)  # faster than the pause: only the hold ends a chunk

    threading.Thread(target=writer, daemon=True).start()
    chunks = list(iter_chunks(f"/dev/fd/{read}", 1000, pause=0.1, hold=0.2))
    assert sum(chunks, []) == [str(i) for i in range(30)] and len(chunks) >= 2
    assert max(len(c) for c in chunks) < 20


def test_invalid_utf8_in_a_pipe_is_raised_at_its_line():
    read, write = os.pipe()
    os.write(write, b"good\nbad \xff\n")
    os.close(write)
    with pytest.raises(UserError, match=r"line 2: invalid UTF-8 byte 0xff"):
        list(iter_chunks(f"/dev/fd/{read}", 10))


WAIT_SCRIPT = """
import os, signal, sys, threading, time
from mt.textio import iter_chunks
read, write = os.pipe()
os.write(write, b"first\\n")
bystander = threading.Thread(target=time.sleep, args=(30,), daemon=True)
bystander.start()

printed = threading.Event()

def interrupt():
    printed.wait()
    time.sleep(0.5)  # by now the main thread waits for a second line that never comes
    signal.pthread_kill(bystander.ident, signal.SIGINT)

threading.Thread(target=interrupt, daemon=True).start()
try:
    for chunk in iter_chunks(f"/dev/fd/{read}", 10):
        print(chunk, flush=True)
        printed.set()
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_ctrl_c_received_by_another_thread_ends_the_wait_for_input():
    """The process's SIGINT may land on any of its threads (TensorFlow's, the reader's); the main thread
    waiting for the next line still sees it, within a fraction of a second."""
    done = subprocess.run([sys.executable, "-c", WAIT_SCRIPT], capture_output=True, text=True, timeout=20,
                          env=child_env(), preexec_fn=default_sigint)
    assert done.stdout.splitlines() == ["['first']", "interrupted"], done.stdout + done.stderr


# -- the same output as the whole input -----------------------------------------------------------------


@pytest.mark.parametrize("args", [["--search", "greedy"], ["--beam-size", "3", "--n-best", "2"],
                                  ["--search", "sample", "--seed", "5", "--top-k", "8"]],
                         ids=["greedy", "beam-n-best", "sample"])
def test_chunks_give_the_output_of_the_whole_input_from_a_file_and_from_stdin(run_dir, lines, tmp_path, args):
    """Chunks of 1, 7 and 10,000 lines (one chunk: the batches of the whole input) give the same bytes,
    read from a file or from stdin, and equal to the Translator's translation of the whole list. Other
    chunks may settle a near-tie otherwise by rounding; this model's outputs have none."""
    from mt.translate import format_line

    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    common = ["--model", str(run_dir), "--batch-size", "4", *args]
    whole = mt("translate", str(source), *common)
    assert whole.exit_code == 0, whole.output
    for chunk in ("1", "7"):
        assert_same_output(mt("translate", str(source), *common, "--chunk-lines", chunk).stdout, whole.stdout)
    assert_same_output(mt("translate", "-", *common, "--chunk-lines", "7", input=source.read_bytes()).stdout,
                       whole.stdout)
    options = options_of(args)
    found = hypotheses_of(run_dir, lines, args, batch_size=4)
    assert whole.stdout == "".join(format_line(i, h, options.n_best) for i, h in enumerate(found))


def assert_same_output(found, expected):
    """The same lines and texts, the printed scores within their last digit: other chunks are other
    batches, whose rounding moves a score by about 1e-6 (docs/design.md), enough to flip a printed 4th
    decimal."""
    found, expected = found.splitlines(), expected.splitlines()
    assert len(found) == len(expected)
    for a, b in zip(found, expected):
        a, b = a.split(" ||| "), b.split(" ||| ")
        assert len(a) == len(b) and a[:2] == b[:2] and a[4:] == b[4:], (a, b)
        np.testing.assert_allclose([float(x) for x in a[2:4]], [float(x) for x in b[2:4]], atol=2e-4)


def options_of(args):
    """The SearchOptions of the command-line options `args` (the few these tests use)."""
    option = dict(zip(args[::2], args[1::2]))
    return SearchOptions(search=option.get("--search", "beam"), beam_size=int(option.get("--beam-size", 5)),
                         n_best=int(option.get("--n-best", 1)), seed=int(option.get("--seed", 1234)),
                         top_k=int(option.get("--top-k", 0)))


def hypotheses_of(run_dir, lines, args, batch_size):
    """The Translator's hypotheses of the whole list of lines, with the search of `args`."""
    from mt.search import build_search
    from mt.translate import Translator, load_translator

    loaded = load_translator(str(run_dir))
    t = Translator(loaded.model, loaded.src_tok, loaded.tgt_tok, build_search(options_of(args), scores=False))
    return t.hypotheses([line.strip() for line in lines], batch_size=batch_size)


def test_a_chunk_is_batched_as_its_lines_alone_and_no_batch_spans_two_chunks(run_dir, lines, tmp_path,
                                                                              monkeypatch):
    """What the output of a line of a file depends on: its chunk's lines (every `--chunk-lines` lines of
    the file), batched exactly as those lines translated alone, never with lines of another chunk."""
    from mt import translate

    seen, decode = [], translate.Translator._decode_job

    def recording(self, job):
        seen.append(tuple(job[0]))
        return decode(self, job)

    monkeypatch.setattr(translate.Translator, "_decode_job", recording)
    common = ["--model", str(run_dir), "--search", "greedy", "--batch-size", "3", "--workers", "1"]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    whole = mt("translate", str(source), *common, "--chunk-lines", "9")
    batches = sorted(seen)
    assert all(min(b) // 9 == max(b) // 9 for b in batches)
    expected, outputs = [], []
    for start in range(0, len(lines), 9):
        seen.clear()
        part = tmp_path / f"part{start}.txt"
        part.write_text("\n".join(lines[start:start + 9]) + "\n", encoding="utf-8")
        outputs.append(mt("translate", str(part), *common).stdout)
        expected += [tuple(start + i for i in b) for b in seen]
    assert batches == sorted(expected)
    assert whole.stdout == "".join(outputs)


def test_the_chunk_option_defaults_to_the_translators_chunk_and_is_checked(run_dir, lines, tmp_path):
    from mt.translate import CHUNK_LINES

    params = {p.name: p for p in cli.commands["translate"].params}
    assert params["chunk_lines"].default == CHUNK_LINES
    source = tmp_path / "in.txt"
    source.write_text("el gato\n")
    result = mt("translate", str(source), "--model", str(run_dir), "--chunk-lines", "0")
    assert result.exit_code == 1 and "--chunk-lines must be at least 1" in result.stderr


def test_an_invalid_line_of_a_file_stops_before_any_output(run_dir, tmp_path):
    """A file is checked whole before decoding, as when it was read whole: its later chunks too."""
    source = tmp_path / "in.txt"
    source.write_bytes(b"el gato\nla casa\nes grande \xff\n")
    result = mt("translate", str(source), "--model", str(run_dir), "--chunk-lines", "1")
    assert result.exit_code == 1 and result.stdout == ""
    assert "in.txt, line 3: invalid UTF-8" in result.stderr


# -- stdin fed line by line, a pipe or a terminal ------------------------------------------------------


@pytest.mark.parametrize("stdin", ["pipe", "terminal"])
def test_stdin_fed_one_line_at_a_time_gets_each_translation_before_the_next_line(run_dir, lines, stdin):
    """`mt translate -` in a subprocess, its stdin a pipe or a terminal (a pseudo-terminal in canonical
    mode, as a user types): each line is answered while the input stays open, before the next line is
    written; the answers are the lines of the whole input's translation."""
    import termios

    sent = [line for line in lines[:6]]
    expected = mt("translate", "-", "--model", str(run_dir), "--search", "greedy",
                  input="\n".join(sent) + "\n").stdout.splitlines()
    command = [sys.executable, "-m", "mt.cli", "translate", "-", "--model", str(run_dir), "--search", "greedy"]
    if stdin == "terminal":
        master, slave = os.openpty()
        settings = termios.tcgetattr(slave)
        settings[3] &= ~termios.ECHO  # nobody reads the echo
        termios.tcsetattr(slave, termios.TCSANOW, settings)
        child = subprocess.Popen(command, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=child_env())
        os.close(slave)
        write, end = (lambda data: os.write(master, data)), (lambda: os.write(master, b"\x04"))  # Ctrl-D
    else:
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=child_env())
        write = lambda data: (child.stdin.write(data), child.stdin.flush())  # noqa: E731
        end = child.stdin.close
    answers = []
    try:
        for line in sent:
            write(line.encode() + b"\n")
            answer = read_line(child.stdout, timeout=60)
            assert answer is not None, f"no answer to {line!r} within 60 s"
            answers.append(answer)
        end()
        assert child.wait(timeout=60) == 0 and child.stdout.read() == b""
    finally:
        stop(child)
        if stdin == "terminal":
            os.close(master)
    assert answers == expected


def stop(child):
    """Kill the child if it still runs, and close its pipes."""
    child.kill()
    child.wait()
    for stream in (child.stdin, child.stdout, child.stderr):
        if stream is not None and not stream.closed:
            stream.close()


def read_line(stream, timeout):
    """One line of a binary stream as str, or None if none comes within `timeout` seconds."""
    found = []
    reader = threading.Thread(target=lambda: found.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return found[0].decode().rstrip("\n") if found else None


@pytest.mark.parametrize("how", ["sigint", "bad-line"])
def test_ctrl_c_or_an_invalid_line_while_waiting_for_stdin_is_a_clean_exit(run_dir, how):
    """The reader thread waits in a read of stdin: Ctrl-C exits with 130 and an invalid line with one error
    line, without Python's abort at exit over a thread holding stdin."""
    child = subprocess.Popen([sys.executable, "-m", "mt.cli", "translate", "-", "--model", str(run_dir),
                              "--search", "greedy"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=child_env(), preexec_fn=default_sigint)
    try:
        child.stdin.write(b"el gato\n")
        child.stdin.flush()
        assert read_line(child.stdout, timeout=60) is not None
        if how == "sigint":
            child.send_signal(signal.SIGINT)
        else:
            child.stdin.write(b"la casa\nes \xff grande\n")
            child.stdin.flush()
        code = child.wait(timeout=60)
        err = child.stderr.read().decode()
    finally:
        stop(child)
    assert "Fatal Python error" not in err and "Traceback" not in err, err
    if how == "sigint":
        assert code == 130 and "interrupted" in err
    else:
        assert code == 1 and "error: stdin, line 3: invalid UTF-8 byte 0xff" in err


# -- bounded memory ----------------------------------------------------------------------------------------


def peak_script():
    """benchmarks/translate_memory.py's PEAK: runs `mt ARGS...` and writes its peak RSS (VmHWM, kB) to the
    file named first, measured in the process itself (a child's ru_maxrss also counts the memory it was
    forked from); the test measures as the benchmark does."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("translate_memory",
                                                  os.path.join(ROOT, "benchmarks", "translate_memory.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PEAK


def peak_rss_mb(args, stdin, tmp_path):
    """Run `mt ARGS` in a child process and return its peak resident memory in MB."""
    peak = tmp_path / "peak.txt"
    done = subprocess.run([sys.executable, "-c", peak_script(), str(peak), *args], stdin=stdin,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(), cwd=ROOT)  # `-c` puts the cwd first on sys.path
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return int(peak.read_text()) / 1024


@pytest.mark.slow
def test_a_200000_line_input_decodes_in_the_memory_of_a_20000_line_one(tmp_path):
    """Greedy search on the tiny model, from a file (-o) and through a pipe (stdout): the peak RSS of
    200,000 short lines is that of 20,000 within 25 MB; reading the whole input held 59 MB more (its lines,
    pieces and batches; BENCHMARKS.md). Every line has three pieces and the model never ends a sentence
    early, so every batch has the same shapes: TensorFlow's oneDNN kernels keep a compiled primitive per
    operand shape (up to 1,024 per thread), which otherwise adds memory with every new shape over the
    first hundreds of thousands of lines, chunks or not."""
    run = make_run(tmp_path / "run", endless=True)
    tok = Tokenizer(str(run / "src.spm.model"))
    single = [w for w in WORDS if len(tok.encode([w])[0]) == 1]
    rng = np.random.default_rng(0)
    text = [" ".join(rng.choice(single, 3)) for _ in range(200_000)]
    assert {len(e) for e in tok.encode(text[:1000])} == {3}
    big, small = tmp_path / "big.txt", tmp_path / "small.txt"
    big.write_text("\n".join(text) + "\n", encoding="utf-8")
    small.write_text("\n".join(text[:20_000]) + "\n", encoding="utf-8")
    common = ["--model", str(run), "--search", "greedy", "--max-length-ratio", "0.5"]
    peaks = {}
    for name, path in (("small", small), ("big", big)):
        peaks[name] = peak_rss_mb(["translate", str(path), *common, "-o", str(tmp_path / f"{name}.out")],
                                  subprocess.DEVNULL, tmp_path)
    assert len((tmp_path / "big.out").read_text(encoding="utf-8").splitlines()) == 200_000
    cat = subprocess.Popen(["cat", str(big)], stdout=subprocess.PIPE)
    peaks["big-pipe"] = peak_rss_mb(["translate", "-", *common], cat.stdout, tmp_path)
    cat.stdout.close()
    cat.wait()
    print("peak RSS (MB):", {name: round(mb) for name, mb in peaks.items()})
    assert peaks["big"] < peaks["small"] + 25 and peaks["big-pipe"] < peaks["small"] + 25, peaks


# -- alignments --------------------------------------------------------------------------------------------


def test_words_of_pieces_place_every_piece_in_its_word(run_dir):
    tok = Tokenizer(str(run_dir / "src.spm.model"))
    for text in ["el gato come", "  el  gato\u00a0come  ", "rápido, niño.", "xyzzy ñandú el"]:
        (ids, spans), = tok.encode_with_spans([text])
        assert ids == tok.encode([text])[0]
        words = words_of_pieces(text, spans)
        assert len(words) == len(ids) and sorted(set(words)) == list(range(len(text.split())))
        data = text.encode()
        for (begin, end), word in zip(spans, words):
            surface = data[begin:end].decode("utf-8", "replace").strip()
            if surface:  # a piece with text lies inside its word
                assert surface in text.split()[word]
    assert words_of_pieces("ab  c", [(0, 1), (1, 2), (2, 4), (4, 5)]) == [0, 0, 1, 1]
    assert words_of_pieces("a ", [(0, 1), (1, 2)]) == [0, -1]


def test_links_and_the_pharaoh_format():
    assert links([2, 0, 0]) == [(2, 0), (0, 1), (0, 2)]
    # words: target pieces 0, 1 are word 0 and piece 2 word 1; source pieces 0, 1 word 0, piece 2 word 1
    assert links([2, 0, 1], [0, 0, 1], [0, 0, 1]) == [(0, 0), (1, 0), (0, 1)]
    assert pharaoh([(0, 0), (3, 1)]) == "0-0 3-1" and parse_pharaoh("0-0 3-1") == [(0, 0), (3, 1)]
    assert parse_pharaoh("") == []
    with pytest.raises(ValueError):
        parse_pharaoh("0-0 1:2")


@pytest.mark.parametrize("args", [["--search", "greedy"], ["--beam-size", "3", "--n-best", "3"],
                                  ["--search", "sample", "--seed", "2"]], ids=["greedy", "beam-n-best", "sample"])
@pytest.mark.parametrize("unit", ["word", "piece"])
def test_alignment_lines_parse_and_stay_within_the_lengths(run_dir, lines, tmp_path, args, unit):
    """Every output line is the plain output's line, ' ||| ' and Pharaoh pairs whose positions are
    within the source and the translation: words, each target word linked at least once, or pieces, one
    link per target piece the search wrote."""
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    common = [str(source), "--model", str(run_dir), "--batch-size", "8", *args]
    plain = mt("translate", *common)
    aligned = mt("translate", *common, "--alignments", "--alignment-unit", unit, "--chunk-lines", "9")
    assert plain.exit_code == 0 and aligned.exit_code == 0, aligned.output
    src_tok = Tokenizer(str(run_dir / "src.spm.model"))
    found = [(number, h) for number, hyps in enumerate(hypotheses_of(run_dir, lines, args, 8)) for h in hyps]
    rows, plain_rows = aligned.stdout.splitlines(), plain.stdout.splitlines()
    assert len(rows) == len(plain_rows) == len(found)
    for row, plain_row, (number, hypothesis) in zip(rows, plain_rows, found):
        text, sep, alignment = row.rpartition(" ||| ")
        assert sep and text == plain_row  # the translation is unchanged
        line = lines[number]
        pairs = parse_pharaoh(alignment)
        if unit == "word":
            source_length = len(line.split())
            assert sorted({j for _, j in pairs}) == list(range(len(hypothesis.text.split()))), row
            assert pairs == sorted(set(pairs), key=lambda p: (p[1], p[0]))
        else:
            source_length = len(src_tok.encode([line.strip()])[0])
            assert [j for _, j in pairs] == list(range(len(hypothesis.ids)))  # one link per target piece
        assert all(0 <= i < source_length for i, _ in pairs), (row, line)
        if not line.strip():
            assert pairs == []


def test_greedy_alignment_is_the_argmax_of_the_attention_of_mt_inspect(run_dir, lines, tmp_path):
    """The piece alignment of `--alignments` (recorded in the search as the most attended position) is the
    argmax of the attention map `mt inspect attention` draws for the same sentences; the word alignment
    is that, mapped to the words of the source and of the translation."""
    from mt.inspection.attention import align, attention_translator
    from mt.translate import load_translator

    options = SearchOptions(search="greedy")
    maps = align(attention_translator(load_translator(str(run_dir)), options), [line.strip() for line in lines])
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    common = [str(source), "--model", str(run_dir), "--search", "greedy", "--alignments"]
    by_piece = mt("translate", *common, "--alignment-unit", "piece").stdout.splitlines()
    by_word = mt("translate", *common).stdout.splitlines()
    src_tok, tgt_tok = (Tokenizer(str(run_dir / f"{side}.spm.model")) for side in ("src", "tgt"))
    assert len(maps) == sum(1 for line in lines if line.strip())
    checked = 0
    for a in maps:
        text, _, alignment = by_piece[a.line - 1].rpartition(" ||| ")
        assert text == " ".join(a.translation.splitlines())  # as translate writes it: one line
        target = len(a.target_ids) - (a.target_ids[-1] == EOS)  # the end of sentence has no link
        expected = [(int(np.argmax(a.weights[j])), j) for j in range(target)]
        assert parse_pharaoh(alignment) == expected
        (_, source_spans), = src_tok.encode_with_spans([a.source])
        (_, target_spans), = tgt_tok.decode_with_spans([a.target_ids[:target]])
        words = links([i for i, _ in expected], words_of_pieces(a.source, source_spans),
                      words_of_pieces(a.translation, target_spans))
        assert parse_pharaoh(by_word[a.line - 1].rpartition(" ||| ")[2]) == words
        checked += len({i for i, _ in expected}) > 1  # the attention moves along the source
    assert checked > len(maps) // 2


def test_alignments_need_a_model_with_attention(tmp_path):
    run = make_run(tmp_path / "plain", attention="none")
    source = tmp_path / "in.txt"
    source.write_text("el gato\n")
    result = mt("translate", str(source), "--model", str(run), "--alignments")
    assert result.exit_code == 1 and "--alignments needs a model with attention" in result.stderr


# -- alignments in the Python API -------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--search", "greedy"], ["--beam-size", "3", "--n-best", "2"]],
                         ids=["greedy", "beam-n-best"])
@pytest.mark.parametrize("unit", ["word", "piece"])
def test_the_api_gives_the_alignments_of_translate(run_dir, lines, tmp_path, args, unit):
    """`translate(..., alignments=True)` pairs every translation with the alignment `mt translate
    --alignments` writes for it; without the keyword the translations are as before."""
    import mt as package

    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cli_rows = mt("translate", str(source), "--model", str(run_dir), "--alignments", "--alignment-unit", unit,
                  *args).stdout.splitlines()
    options = options_of(args)
    settings = {"search": options.search, "beam_size": options.beam_size, "n_best": options.n_best}
    model = package.load(str(run_dir))
    found = model.translate(lines, alignments=True, alignment_unit=unit, **settings)
    if options.n_best == 1:
        found = [[pair] for pair in found]
    got = [(text, pairs) for hyps in found for text, pairs in hyps]
    if options.n_best == 1:
        expected = [(text, parse_pharaoh(a)) for text, _, a in (row.rpartition(" ||| ") for row in cli_rows)]
    else:
        expected = [(fields[1], parse_pharaoh(fields[4])) for fields in (row.split(" ||| ") for row in cli_rows)]
    assert got == expected
    assert any(pairs for _, pairs in got) and all(isinstance(i, int) for _, p in got for pair in p for i in pair)
    assert [[t for t, _ in hyps] for hyps in found] == [
        hyps if options.n_best > 1 else [hyps] for hyps in model.translate(lines, **settings)]
    single = model.translate(lines[0], alignments=True, alignment_unit=unit, **settings)
    assert (single if options.n_best == 1 else single[0]) == got[0]


def test_the_api_refuses_alignments_it_cannot_give(tmp_path):
    import mt as package

    plain = package.load(str(make_run(tmp_path / "plain", attention="none")))
    assert plain.translate("el gato", search="greedy")  # translating is fine
    with pytest.raises(UserError, match="alignments need a model with attention"):
        plain.translate("el gato", alignments=True)
    with pytest.raises(UserError, match="alignment_unit must be one of word, piece"):
        plain.translate("el gato", alignments=True, alignment_unit="char")


def test_the_api_decodes_a_long_list_in_the_chunks_of_translate(run_dir, lines, tmp_path, monkeypatch):
    """A list longer than a chunk is batched per chunk of CHUNK_LINES lines, as `mt translate` batches a
    file, not after a sort of the whole list: the batches, and so the bytes, of `mt translate --workers
    1` (other batches could settle a near-tie the other way)."""
    import mt as package
    from mt import translate

    monkeypatch.setattr(translate, "CHUNK_LINES", 9)
    seen, decode = [], translate.Translator._decode_job

    def recording(self, job):
        seen.append(tuple(job[0]))  # the line numbers of the batch
        return decode(self, job)

    monkeypatch.setattr(translate.Translator, "_decode_job", recording)
    found = package.load(str(run_dir)).translate(lines, search="greedy", batch_size=4)
    api_batches = sorted(seen)
    seen.clear()
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = mt("translate", str(source), "--model", str(run_dir), "--search", "greedy", "--batch-size", "4",
                "--workers", "1", "--chunk-lines", "9")
    assert found == result.stdout.splitlines()
    assert api_batches == sorted(seen) and len(api_batches) > len(lines) // 9
    assert all(min(batch) // 9 == max(batch) // 9 for batch in api_batches)  # no batch spans two chunks
