"""mt.pipeline: validation, argument building and skip logic, with fake stages (no training)."""

import json
import os
import sys
import time

import pytest
import yaml
from click.testing import CliRunner

from mt import pipeline
from mt.cli import cli
from mt.folders import DataFolder, RunFolder
from mt.errors import UserError

# A `command` stage body: copy argv[1] to argv[2] and append the tag argv[3] to log.txt.
COPY = ("import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2]); "
        "open('log.txt', 'a').write(sys.argv[3] + '\\n')")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own empty folder: pipeline paths are relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def copy_stage(src, dst, tag):
    return {"command": {"run": ["python", "-c", COPY, src, dst, tag], "inputs": [src], "outputs": [dst]}}


def chain(tags=("s1", "s2", "s3")):
    """a.txt -> b.txt -> c.txt -> d.txt, one copy stage each."""
    files = ["a.txt", "b.txt", "c.txt", "d.txt"]
    return [copy_stage(files[i], files[i + 1], tag) for i, tag in enumerate(tags)]


def write_pipeline(stages, path="p.yaml"):
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({"name": "test", "stages": stages}, f, sort_keys=False)
    return path


def run_cli(*args):
    return CliRunner().invoke(cli, ["pipeline", "run", *args])


def log():
    if not os.path.exists("log.txt"):
        return []
    with open("log.txt", encoding="utf-8") as f:
        return f.read().split()


def make_newer(path):
    """Give `path` a modification time clearly later than anything written so far."""
    later = time.time() + 10
    os.utime(path, (later, later))


def one_error_line(outcome):
    assert outcome.exit_code == 1, outcome.output
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome.stderr
    return lines[0]


def test_stages_run_in_order_then_are_skipped():
    open("a.txt", "w").write("hello\n")
    write_pipeline(chain())
    first = run_cli("p.yaml")
    assert first.exit_code == 0, first.output + first.stderr
    assert log() == ["s1", "s2", "s3"]
    assert open("d.txt").read() == "hello\n"
    assert "[1/3] command: running" in first.output and "[3/3] command: running" in first.output

    second = run_cli("p.yaml")
    assert second.exit_code == 0
    assert log() == ["s1", "s2", "s3"]
    assert second.output.count("up to date, skipped") == 3
    assert "[2/3] command: up to date, skipped" in second.output


def test_touched_input_reruns_that_stage_and_later_ones():
    open("a.txt", "w").write("hello\n")
    write_pipeline(chain())
    assert run_cli("p.yaml").exit_code == 0
    make_newer("b.txt")  # the input of stage 2
    outcome = run_cli("p.yaml")
    assert outcome.exit_code == 0
    assert log() == ["s1", "s2", "s3", "s2", "s3"]
    assert "[1/3] command: up to date, skipped" in outcome.output


def test_changed_settings_rerun_the_stage():
    open("a.txt", "w").write("hello\n")
    write_pipeline(chain())
    assert run_cli("p.yaml").exit_code == 0
    write_pipeline(chain(tags=("s1", "s2-changed", "s3")))
    assert run_cli("p.yaml").exit_code == 0
    assert log() == ["s1", "s2", "s3", "s2-changed", "s3"]


def test_force_runs_everything():
    open("a.txt", "w").write("hello\n")
    write_pipeline(chain())
    assert run_cli("p.yaml").exit_code == 0
    assert run_cli("p.yaml", "--force").exit_code == 0
    assert log() == ["s1", "s2", "s3"] * 2


def test_missing_output_file_reruns():
    open("a.txt", "w").write("hello\n")
    write_pipeline(chain())
    assert run_cli("p.yaml").exit_code == 0
    os.remove("d.txt")
    assert run_cli("p.yaml").exit_code == 0
    assert log() == ["s1", "s2", "s3", "s3"]


def test_failing_command_stops_the_pipeline():
    open("a.txt", "w").write("hello\n")
    stages = chain()
    stages[1] = {"command": {"run": ["python", "-c", "raise SystemExit(3)"], "outputs": ["c.txt"]}}
    write_pipeline(stages)
    line = one_error_line(run_cli("p.yaml"))
    assert "stage 2 (command)" in line and "3" in line
    assert log() == ["s1"]  # stage 3 did not run


def test_python_means_this_interpreter():
    script = "import sys; open('exe.txt', 'w').write(sys.executable)"
    write_pipeline([{"command": {"run": ["python", "-c", script], "outputs": ["exe.txt"]}}])
    assert run_cli("p.yaml").exit_code == 0
    assert open("exe.txt").read() == sys.executable


def test_unknown_key_names_the_stage():
    stages = chain(tags=("s1",)) + [{"train": {"data": "d", "out": "r", "epochs": 3}}]
    write_pipeline(stages)
    line = one_error_line(run_cli("p.yaml"))
    assert "p.yaml: stage 2 (train)" in line and "'epochs'" in line
    assert "max_steps" in line and "config" in line  # the valid keys are listed
    assert log() == []  # checked before anything ran


@pytest.mark.parametrize("stage, message", [
    ({"train": {"data": "d"}}, "stage 2 (train): missing required option 'out'"),
    ({"translate": {"model": "m"}}, "stage 2 (translate): missing required argument 'input'"),
    ({"translate": {"input": "x", "model": "m", "weights": "worst"}}, "stage 2 (translate): "),
    ({"train": {"data": "d", "out": "r", "max_steps": "many"}}, "stage 2 (train): "),
    ({"bake": {}}, "stage 2: unknown command 'bake'"),
    ({"train": {}, "translate": {}}, "stage 2: expected a mapping with exactly one key"),
    ({"command": {"inputs": ["a"]}}, "stage 2 (command): `run` is required"),
    ({"evaluate": {"ref": "r", "hyp": "h", "lowercase": "yes"}}, "stage 2 (evaluate): 'lowercase'"),
])
def test_invalid_stage_fails_before_anything_runs(stage, message):
    open("a.txt", "w").write("hello\n")
    write_pipeline(chain(tags=("s1",)) + [stage])
    line = one_error_line(run_cli("p.yaml"))
    assert "p.yaml: " + message in line
    assert log() == []


def test_empty_stages():
    write_pipeline([])
    assert "p.yaml: `stages` must be a non-empty list" in one_error_line(run_cli("p.yaml"))


def test_not_a_mapping():
    with open("p.yaml", "w") as f:
        f.write("- just\n- a list\n")
    assert "p.yaml: expected a mapping" in one_error_line(run_cli("p.yaml"))


def command_of(name):
    return cli.commands[name]


def args_for(name, settings):
    command = command_of(name)
    values = pipeline.settings_by_param(command, settings, "p.yaml: stage 1")
    return pipeline.build_args(command, values, "p.yaml: stage 1")


def test_build_args_options_and_positionals():
    assert args_for("preprocess", {"out": "o", "vocab_size": 1000}) == ["--out", "o", "--vocab-size", "1000"]
    assert args_for("preprocess", {"vocab-size": 1000, "out": "o"}) == ["--out", "o", "--vocab-size", "1000"]
    assert args_for("translate", {"input": "in.txt", "model": "m", "output": "o"}) == [
        "--model", "m", "--output", "o", "--", "in.txt"]
    assert args_for("translate", {"input": "-", "model": "m"}) == ["--model", "m", "--", "-"]


def test_build_args_flags():
    base = {"out": "o"}
    assert args_for("preprocess", {**base, "joint": True}) == ["--out", "o", "--joint"]
    assert args_for("preprocess", {**base, "joint": False}) == ["--out", "o", "--separate"]
    assert args_for("preprocess", {**base, "separate": True}) == ["--out", "o", "--separate"]
    evaluate = {"ref": "r", "hyp": "h"}
    assert args_for("evaluate", {**evaluate, "json": True, "lowercase": True}) == [
        "--ref", "r", "--hyp", "h", "--json", "--lowercase"]
    assert args_for("evaluate", {**evaluate, "as_json": False}) == ["--ref", "r", "--hyp", "h"]


def test_build_args_rejects_two_spellings_of_one_option():
    with pytest.raises(UserError, match="same option"):
        args_for("preprocess", {"out": "o", "joint": True, "separate": True})


class FakeStages:
    """Stand-ins for the preprocess, train and translate callbacks: record the call, write the outputs."""

    def __init__(self, monkeypatch):
        self.calls = []
        for name in ("preprocess", "train", "translate"):
            monkeypatch.setattr(command_of(name), "callback", getattr(self, name))

    def preprocess(self, **params):
        self.calls.append(("preprocess", params))
        os.makedirs(params["out"], exist_ok=True)
        open(DataFolder(params["out"]).manifest_path, "w").write("{}")

    def train(self, **params):
        self.calls.append(("train", params))
        os.makedirs(params["out"], exist_ok=True)
        open(RunFolder(params["out"]).done_path, "w").write("{}")

    def translate(self, **params):
        self.calls.append(("translate", params))
        with open(params["input"]) as src, open(params["output"], "w") as out:
            out.write(src.read().replace("src", "tgt"))


def mt_pipeline():
    for split in ("train", "test"):
        for side in ("src", "tgt"):
            text = f"this is the first {side} sentence\nand this is the second {side} sentence\n"
            open(f"{split}.{side}", "w").write(text)
    open("config.yaml", "w").write("train:\n  max_steps: 5\n")
    return write_pipeline([
        {"preprocess": {"src": "train.src", "tgt": "train.tgt", "out": "w/data", "vocab_size": 1000,
                        "joint": True}},
        {"train": {"data": "w/data", "out": "w/run", "config": "config.yaml", "max_steps": 5}},
        {"translate": {"input": "test.src", "model": "w/run", "output": "w/test.hyp"}},
        {"evaluate": {"ref": "test.tgt", "hyp": "w/test.hyp"}},
    ])


def test_mt_commands_run_through_click(monkeypatch):
    fakes = FakeStages(monkeypatch)
    mt_pipeline()
    outcome = run_cli("p.yaml")
    assert outcome.exit_code == 0, outcome.output + outcome.stderr
    assert [name for name, _ in fakes.calls] == ["preprocess", "train", "translate"]
    preprocess = fakes.calls[0][1]
    assert preprocess["vocab_size"] == 1000 and preprocess["joint"] is True
    assert preprocess["model_type"] == "unigram"  # the command's own default
    assert fakes.calls[1][1]["max_steps"] == 5
    assert fakes.calls[2][1]["input"] == "test.src"
    assert "[4/4] evaluate: running" in outcome.output
    assert "final scores (w/test.hyp): BLEU 100.00" in outcome.output
    assert "pipeline test: 4 of 4 stages run" in outcome.output

    again = run_cli("p.yaml")
    assert again.exit_code == 0
    assert len(fakes.calls) == 3  # preprocess, train and translate were skipped
    assert again.output.count("up to date, skipped") == 3
    assert "[4/4] evaluate: running" in again.output  # evaluate always runs
    assert "BLEU 100.00" in again.output


def test_changed_config_file_retrains(monkeypatch):
    fakes = FakeStages(monkeypatch)
    mt_pipeline()
    assert run_cli("p.yaml").exit_code == 0
    make_newer("config.yaml")
    assert run_cli("p.yaml").exit_code == 0
    assert [name for name, _ in fakes.calls] == ["preprocess", "train", "translate", "train", "translate"]


def test_stamp_is_beside_the_first_output(monkeypatch):
    FakeStages(monkeypatch)
    mt_pipeline()
    assert run_cli("p.yaml").exit_code == 0
    done, manifest = RunFolder("w/run").done_path, DataFolder("w/data").manifest_path
    with open(os.path.join("w/run", ".mt-pipeline", os.path.basename(done) + ".json")) as f:
        stamp = json.load(f)
    assert stamp["command"] == "train" and stamp["stage"] == 2
    assert os.path.exists(os.path.join("w/data", ".mt-pipeline", os.path.basename(manifest) + ".json"))


def test_failing_mt_stage_names_the_stage(monkeypatch):
    FakeStages(monkeypatch)

    def broken(**params):
        raise UserError("the data folder is broken")

    monkeypatch.setattr(command_of("train"), "callback", broken)
    mt_pipeline()
    line = one_error_line(run_cli("p.yaml"))
    assert "stage 2 (train): the data folder is broken" in line
    assert not os.path.exists("w/test.hyp")


def test_run_returns_the_scores(monkeypatch, capsys):
    FakeStages(monkeypatch)
    mt_pipeline()
    scores = pipeline.run("p.yaml", cli.commands)
    assert scores["bleu"] == pytest.approx(100.0) and scores["hyp"] == "w/test.hyp"
    assert "final scores" in capsys.readouterr().out


def test_shipped_quickstart_is_valid():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    name, stages = pipeline.load(os.path.join(root, "pipelines", "quickstart.yaml"), cli.commands)
    assert name == "quickstart"
    assert [stage.name for stage in stages] == ["preprocess", "train", "translate", "evaluate"]
    assert "--vocab-size" in stages[0].argv and stages[1].outputs == [RunFolder("work/quickstart/run").done_path]
