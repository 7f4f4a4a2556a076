"""`mt serve` and the Python API on a tiny random model with real SentencePiece tokenizers: request
checks, the gathering of requests into batches, and the real server in a subprocess (answers equal to
`mt translate`'s, concurrent requests, bad requests, health, info, shutdown on SIGTERM)."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mt.search_options import DEFAULTS, SearchOptions
from mt.serve import BadRequest, Job, Worker, answer, parse_request
from mt.translate import Hypothesis
from tiny_run import make_tiny_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ["kat", "hund", "maus", "vogel", "fisch", "baum", "haus", "see"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder with a tiny random model and real (tiny) SentencePiece models."""
    folder = make_tiny_run(tmp_path_factory.mktemp("run"), WORDS)
    (folder / "metrics.jsonl").write_text(
        json.dumps({"kind": "dev", "step": 10, "loss": 3.5, "bleu": 1.25, "best": True}) + "\n"
        + json.dumps({"kind": "dev", "step": 20, "loss": 3.7, "bleu": 0.5, "best": False}) + "\n")
    (folder / "done.json").write_text(json.dumps({"step": 20, "reason": "max_steps", "best_score": 1.25}))
    return folder


def lines(count, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(1, 7))) for _ in range(count)]


def mt_translate(run_dir, source_lines, *args):
    """`mt translate`'s output lines for these lines and options, in this process."""
    from click.testing import CliRunner

    from mt.cli import cli

    path = run_dir / f"in-{abs(hash(tuple(source_lines)))}.txt"
    path.write_text("".join(line + "\n" for line in source_lines), encoding="utf-8")
    result = CliRunner().invoke(cli, ["translate", str(path), "--model", str(run_dir), *args],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


# -- requests and batches, without a server ---------------------------------------------------------------


@pytest.mark.parametrize("body, message", [
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"text": ', "not JSON"),
    (b'["a"]', "JSON object"),
    (b'{"txt": "a"}', 'missing "text"'),
    (b'{"text": 3}', "a string or a list of strings"),
    (b'{"text": ["a", 3]}', "a string or a list of strings"),
    (b'{"text": "a", "beam": 3}', "unknown setting(s) beam"),
    (b'{"text": "a", "beam_size": "3"}', "beam_size must be an integer"),
    (b'{"text": "a", "beam_size": true}', "beam_size must be an integer"),
    (b'{"text": "a", "temperature": "hot"}', "temperature must be a number"),
    (b'{"text": "a", "scores": 1}', '"scores" must be true or false'),
    (b'{"text": "a", "search": "greedy", "n_best": 2}', "needs --search beam"),
    (b'{"text": "a", "top_p": 0}', "--top-p must be in (0, 1]"),
])
def test_bad_requests_name_their_fault(body, message):
    with pytest.raises(BadRequest, match=re.escape(message)) as caught:
        parse_request(body, max_lines=10)
    assert caught.value.status == 400


def test_a_request_of_too_many_lines_is_refused():
    with pytest.raises(BadRequest, match="more than") as caught:
        parse_request(json.dumps({"text": ["a"] * 11}).encode(), max_lines=10)
    assert caught.value.status == 413


def test_a_request_takes_the_defaults_of_translate_and_its_settings():
    lines_, single, scores, options = parse_request(b'{"text": "hola"}', 10)
    assert (lines_, single, scores, options) == (["hola"], True, False, DEFAULTS)
    _, single, scores, options = parse_request(
        b'{"text": ["a", "b"], "search": "greedy", "length_penalty": 1, "scores": true}', 10)
    assert not single and scores and options == SearchOptions(search="greedy", length_penalty=1.0)


def test_answers_have_the_shape_of_the_request():
    found = [[Hypothesis("a", [], -1.0, -0.5, True), Hypothesis("b\nc", [], -2.0, -1.5, True)]]
    assert answer(found, True, 1, False) == {"translations": "a"}
    assert answer(found, False, 1, True) == {"translations": ["a"], "scores": [-0.5], "log_probs": [-1.0]}
    assert answer(found, True, 2, False) == {"translations": ["a", "b c"], "scores": [-0.5, -1.5],
                                             "log_probs": [-1.0, -2.0]}


class FakeTranslator:
    """Records the batches it is given and translates a sentence's pieces to their text, row id appended;
    a sentence holding the piece 666 fails its batch."""

    def __init__(self, model):
        self.model = model

    def trace(self):
        self.model.traced_in.add(threading.current_thread().name)

    def hypotheses_of_pieces(self, encoded, ratio, row_ids, batch_size):
        with self.model.lock:
            self.model.batches.append(len(encoded))
            self.model.parts.append(sorted(len(e) for e in encoded))
            self.model.running += 1
            self.model.most = max(self.model.most, self.model.running)
        try:
            time.sleep(self.model.seconds + self.model.per_piece * max(len(e) for e in encoded))
            if any(666 in e for e in encoded):
                raise RuntimeError("a failing batch")
            return [[Hypothesis(" ".join(map(str, e)) + f"#{r}", e, 0.0, 0.0, True)]
                    for e, r in zip(encoded, row_ids)]
        finally:
            with self.model.lock:
                self.model.running -= 1


class FakeModel:
    def __init__(self, seconds=0.01, per_piece=0.0):
        self.batches, self.parts, self.traced_in = [], [], set()
        self.seconds, self.per_piece, self.running, self.most = seconds, per_piece, 0, 0
        self.lock = threading.Lock()

    def hypotheses(self, lines, options):
        return []

    def translator_for(self, options, scores=False):
        return FakeTranslator(self)


def test_concurrent_jobs_are_gathered_into_batches_and_each_gets_its_own_results():
    model = FakeModel()
    worker = Worker(lambda: model, max_rows=40, max_wait=0.05, on_failure=lambda: None)
    worker.start()
    assert worker.ready.wait(5)
    greedy, beam = SearchOptions(search="greedy"), SearchOptions(beam_size=4)

    def request(k):
        options = greedy if k % 3 else beam
        encoded = [[k, j] for j in range(1 + k % 4)]
        return k, encoded, worker.submit(Job(options, False, encoded)).result(timeout=10)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(request, range(60)))
    worker.stop()
    worker.join(5)
    assert not worker.is_alive()
    for k, encoded, found in results:
        assert [hyps[0].text for hyps in found] == [f"{k} {j}#{j}" for j in range(len(encoded))]
    assert sum(model.batches) == sum(len(e) for _, e, _ in results)
    assert len(model.batches) < 60  # requests shared batches
    assert max(model.batches) <= 40  # greedy rows: sentences; beam rows: 4 x sentences <= 40


def test_a_gathered_batch_is_shared_among_the_free_decoders_shortest_first():
    model = FakeModel(seconds=0.2)
    worker = Worker(lambda: model, max_rows=320, max_wait=0.05, on_failure=lambda: None, decoders=2)
    greedy = SearchOptions(search="greedy")
    jobs = [Job(greedy, False, [[k] * (1 + (7 * k) % 13)]) for k in range(20)]
    for job in jobs:  # waiting before the model is loaded: one gathered batch
        worker.submit(job)
    worker.start()
    found = [job.future.result(timeout=10) for job in jobs]
    worker.stop()
    worker.join(5)
    assert not worker.is_alive()
    assert [hyps[0].text for [hyps] in found] == [" ".join([str(k)] * (1 + (7 * k) % 13)) + "#0" for k in range(20)]
    assert model.batches == [10, 10] and model.most == 2  # two parts, decoded at once
    short, long = sorted(model.parts)
    assert max(short) <= min(long)  # cut by length, as translate sorts its batches
    assert model.traced_in == {"mt-serve-worker"}  # traced where the model was loaded, not in a decoder


def test_a_request_is_answered_once_its_own_part_is_decoded():
    """The short part's requests are answered while the long part still runs: their clients can send the
    next sentences to the decoder that has just become free."""
    model = FakeModel(seconds=0.0, per_piece=0.1)
    worker = Worker(lambda: model, max_rows=320, max_wait=0.05, on_failure=lambda: None, decoders=2)
    greedy = SearchOptions(search="greedy")
    jobs = [Job(greedy, False, [[k] * (1 if k < 4 else 20)]) for k in range(8)]  # parts: 0.1 s and 2 s
    for job in jobs:
        worker.submit(job)
    worker.start()
    assert [job.future.result(timeout=10)[0][0].text for job in jobs[:4]] == [f"{k}#0" for k in range(4)]
    assert not any(job.future.done() for job in jobs[4:])
    assert all(job.future.result(timeout=10) for job in jobs[4:])
    worker.stop()
    worker.join(5)
    assert not worker.is_alive()


def test_a_failing_part_fails_the_requests_it_holds_and_the_server_goes_on():
    model = FakeModel()
    worker = Worker(lambda: model, max_rows=320, max_wait=0.05, on_failure=lambda: None, decoders=2)
    greedy = SearchOptions(search="greedy")
    # shortest first: the part of jobs 0-3 holds the failing sentence; job 8 has a sentence in each part
    jobs = [Job(greedy, False, [[666 if k == 3 else k] * (1 + k)]) for k in range(8)]
    jobs.append(Job(greedy, False, [[9], [9] * 20]))
    for job in jobs:
        worker.submit(job)
    worker.start()
    for job in jobs[:4] + jobs[8:]:
        with pytest.raises(RuntimeError, match="a failing batch"):
            job.future.result(timeout=10)
    assert [job.future.result(timeout=10)[0][0].text for job in jobs[4:8]] == [
        " ".join([str(k)] * (1 + k)) + "#0" for k in range(4, 8)]
    later = worker.submit(Job(greedy, False, [[5, 6]]))
    assert later.result(timeout=10)[0][0].text == "5 6#0"
    worker.stop()
    worker.join(5)
    assert not worker.is_alive()


# -- the Python API --------------------------------------------------------------------------------------


def test_import_mt_loads_no_tensorflow():
    code = "import sys, mt; assert callable(mt.load); assert 'tensorflow' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.stdout.strip() == "ok", out.stderr


def test_the_api_translates_as_translate_does(run_dir):
    import mt

    model = mt.load(str(run_dir))
    source = lines(7, seed=1) + [""]
    assert model.translate(source) == mt_translate(run_dir, source)
    assert model.translate(source, search="greedy") == mt_translate(run_dir, source, "--search", "greedy")
    assert model.translate(source[0]) == model.translate(source)[0]
    nbest = model.translate(source[:2], n_best=3)
    assert all(1 <= len(n) <= 3 for n in nbest) and [n[0] for n in nbest] == model.translate(source[:2])
    with pytest.raises(Exception, match="unknown setting"):
        model.translate("kat", beam=3)


def test_the_api_scores_as_score_does(run_dir, tmp_path):
    import mt

    model = mt.load(str(run_dir))
    source = lines(5, seed=2)
    targets = model.translate(source, search="greedy")
    (tmp_path / "s").write_text("\n".join(source) + "\n", encoding="utf-8")
    (tmp_path / "t").write_text("\n".join(targets) + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "mt.cli", "score", "--model", str(run_dir), "--src",
                           str(tmp_path / "s"), "--tgt", str(tmp_path / "t")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr
    totals = [float(line.split("\t")[0]) for line in done.stdout.splitlines()]
    assert model.score(source, targets) == pytest.approx(totals, abs=1e-4)
    per_token = model.score(source[0], targets[0], per_token=True)
    assert sum(per_token) == pytest.approx(totals[0], abs=1e-4) and all(x <= 0 for x in per_token)


# -- the server ------------------------------------------------------------------------------------------


class Server:
    """`mt serve` in a subprocess on a free loopback port."""

    def __init__(self, run_dir, *args):
        env = {**os.environ, "PYTHONPATH": ROOT}
        self.process = subprocess.Popen([sys.executable, "-m", "mt.cli", "serve", "--model", str(run_dir),
                                         "--port", "0", *args], stderr=subprocess.PIPE, text=True, env=env)
        self.log, self.url = [], None
        found = threading.Event()

        def read():
            for line in self.process.stderr:
                self.log.append(line)
                match = re.search(r"on (http://[\d.]+:\d+)", line)
                if match and self.url is None:
                    self.url = match.group(1)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        assert found.wait(60), "".join(self.log)

    def request(self, path, body=None, timeout=60):
        """(status, JSON answer) of a GET, or of a POST of `body` (bytes, or an object sent as JSON)."""
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def wait_ready(self, seconds=120):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            status, _ = self.request("/health")
            if status == 200:
                return
            assert status == 503
            time.sleep(0.2)
        raise AssertionError("not ready: " + "".join(self.log))

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


@pytest.fixture(scope="module")
def server(run_dir):
    s = Server(run_dir, "--max-lines", "50", "--max-body-bytes", "4000")
    s.wait_ready()
    yield s
    if s.process.poll() is None:
        s.process.kill()
        s.process.wait(10)


@pytest.mark.slow
def test_the_server_answers_as_translate_writes(server, run_dir):
    source = lines(9, seed=2) + ["", "  kat  hund "]
    for settings, args in (({}, []), ({"search": "greedy"}, ["--search", "greedy"]),
                           ({"beam_size": 3, "length_penalty": 1.0}, ["--beam-size", "3", "--length-penalty", "1.0"]),
                           ({"search": "sample", "seed": 7, "top_k": 5}, ["--search", "sample", "--seed", "7",
                                                                          "--top-k", "5"])):
        status, body = server.request("/v1/translate", {"text": source, **settings})
        assert status == 200 and body["translations"] == mt_translate(run_dir, source, *args), settings
    status, body = server.request("/v1/translate", {"text": source[0]})
    assert status == 200 and body == {"translations": mt_translate(run_dir, source[:1])[0]}
    status, body = server.request("/v1/translate", {"text": source[:3], "beam_size": 3, "n_best": 3})
    rows = [r.split(" ||| ") for r in mt_translate(run_dir, source[:3], "--beam-size", "3", "--n-best", "3")]
    assert [[r[1] for r in rows if r[0] == str(i)] for i in range(3)] == body["translations"]
    assert [[r[3] for r in rows if r[0] == str(i)] for i in range(3)] == [[f"{s:.4f}" for s in n] for n in body["scores"]]
    status, body = server.request("/v1/translate", {"text": ["kat"], "search": "greedy", "scores": True})
    assert status == 200 and body["scores"][0] < 0 and body["scores"] == body["log_probs"]


@pytest.mark.slow
def test_concurrent_requests_get_their_own_translations(server, run_dir):
    source = list(dict.fromkeys(lines(80, seed=3)))[:40]
    expected = dict(zip(source, mt_translate(run_dir, source, "--search", "greedy")))
    expected_beam = dict(zip(source, mt_translate(run_dir, source)))

    def one(k):
        sentence = source[k % len(source)]
        settings = {"search": "greedy"} if k % 2 else {}
        status, body = server.request("/v1/translate", {"text": sentence, **settings}, timeout=60)
        return sentence, k % 2, status, body

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(80)))
    for sentence, greedy, status, body in results:
        assert status == 200 and body["translations"] == (expected if greedy else expected_beam)[sentence]


@pytest.mark.slow
def test_bad_requests_are_json_errors_and_the_server_keeps_serving(server):
    for body, status in ((b"\xff", 400), (b"{", 400), (b'{"text": 1}', 400), (b'{"text": "a", "x": 1}', 400),
                         (b'{"text": "a", "beam_size": 0}', 400), (json.dumps({"text": ["a"] * 51}).encode(), 413),
                         (json.dumps({"text": "kat " * 1500}).encode(), 413)):
        got, answer_ = server.request("/v1/translate", body)
        assert got == status and isinstance(answer_["error"], str) and answer_["error"], (body[:40], answer_)
    assert server.request("/nowhere")[0] == 404 and "error" in server.request("/nowhere")[1]
    assert server.request("/v1/translate")[0] == 405
    status, body = server.request("/v1/translate", {"text": " ".join(["kat"] * 1100), "search": "greedy"})
    assert status == 413  # over --max-body-bytes 4000 already
    status, body = server.request("/v1/translate", {"text": "kat hund"})
    assert status == 200 and isinstance(body["translations"], str)


@pytest.mark.slow
def test_info_tells_the_model_and_its_training(server, run_dir):
    status, info = server.request("/v1/info")
    assert status == 200
    assert info["model"]["enc_units"] == 12 and info["src_vocab"] > 0 and info["parameters"] > 0
    assert info["training"] == {"step": 20, "finished": "max_steps", "best_dev_step": 10, "dev_bleu": 1.25,
                                "dev_loss": 3.5}
    assert info["search_defaults"]["beam_size"] == 5


@pytest.mark.slow
def test_sigterm_finishes_requests_in_flight_and_exits_0(run_dir):
    s = Server(run_dir, "--max-wait-ms", "3000")
    try:
        s.wait_ready()
        with ThreadPoolExecutor(4) as pool:
            pending = [pool.submit(s.request, "/v1/translate", {"text": lines(20, seed=k), "search": "greedy"})
                       for k in range(4)]
            time.sleep(1.0)  # the requests are in, their batch waiting 3 s for more of them
            code = s.stop()
            answers = [p.result(timeout=60) for p in pending]
        assert code == 0, "".join(s.log)
        assert all(status == 200 and len(body["translations"]) == 20 for status, body in answers)
    finally:
        if s.process.poll() is None:
            s.process.kill()


@pytest.mark.slow
def test_a_long_input_is_cut_with_a_warning(run_dir):
    s = Server(run_dir)
    try:
        s.wait_ready()
        status, body = s.request("/v1/translate", {"text": ["kat"] + [" ".join(WORDS * 130)], "search": "greedy"})
        assert status == 200 and len(body["translations"]) == 2 and "input 1 is longer" in body["warnings"][0]
        assert s.stop() == 0
        assert any("warning: input 1" in line for line in s.log)
    finally:
        if s.process.poll() is None:
            s.process.kill()
