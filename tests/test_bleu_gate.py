"""The end-to-end BLEU gate: the quickstart pipeline on the embedded corpus must learn to translate.

This is the one slow test (a few minutes): it runs `mt pipeline run` on a copy of the quickstart pipeline
that writes into a temporary folder and trains for a fixed number of steps, then checks BLEU on the test
split. A model that does not learn (broken masking, shifted targets, attention that ignores the source)
stays far below the floor.
"""

import json
import os

import pytest
import yaml
from click.testing import CliRunner

from mt.cli import cli
from mt.folders import RunFolder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 900
BLEU_FLOOR = 60.0


@pytest.mark.slow
def test_quickstart_pipeline_reaches_the_bleu_floor(tmp_path, monkeypatch):
    with open(os.path.join(ROOT, "pipelines", "quickstart.yaml"), encoding="utf-8") as f:
        pipeline = yaml.safe_load(f)
    work = tmp_path / "quickstart"
    for stage in pipeline["stages"]:
        (name, settings), = stage.items()
        for key, value in settings.items():
            if isinstance(value, str) and value.startswith("work/quickstart/"):
                settings[key] = str(work / value[len("work/quickstart/"):])
            elif isinstance(value, str) and value.startswith("data/"):
                settings[key] = os.path.join(ROOT, value)
        if name == "train":
            settings.update(max_steps=STEPS, max_minutes=0)
        if name == "translate":
            settings.update(search="greedy")
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    result = CliRunner().invoke(cli, ["pipeline", "run", str(path)])
    assert result.exit_code == 0, result.output[-3000:]
    done = RunFolder(work / "run").done()
    assert done["step"] == STEPS
    scores = CliRunner().invoke(cli, ["evaluate", "--ref", os.path.join(ROOT, "data", "default", "test.tgt"),
                                      "--hyp", str(work / "test.hyp"), "--json"])
    bleu = json.loads(scores.stdout)["bleu"]
    print(f"BLEU gate: {bleu:.2f} after {STEPS} steps (floor {BLEU_FLOOR})")
    assert bleu >= BLEU_FLOOR
