"""Run a YAML pipeline: `mt` commands and external programs in order, skipping stages that are up to date.

A pipeline file looks like this:

    # Paths are relative to the current working directory (shipped pipelines are run from the
    # repository root).
    name: quickstart            # optional; shown in the summary (default: the file name)
    stages:
      - preprocess:             # any `mt` command: preprocess | train | translate | evaluate, or
                                # lm train | lm evaluate | lm sample (pipelines/linux-c.yaml)
          src: data/default/train.src
          tgt: data/default/train.tgt
          out: work/quickstart/data
          vocab_size: 1000      # = --vocab-size 1000; `vocab-size` works too
      - train:
          data: work/quickstart/data
          out: work/quickstart/run
          config: quickstart
      - translate:
          input: data/default/test.src     # the command's INPUT argument, passed positionally
          model: work/quickstart/run
          output: work/quickstart/test.hyp
      - evaluate:
          ref: data/default/test.tgt
          hyp: work/quickstart/test.hyp
      - command:                # any external program, e.g. a corpus recipe
          run: [python, pipelines/bible/build_corpus.py, --out, work/bible/corpus]
          inputs: [pipelines/bible/build_corpus.py]
          outputs: [work/bible/corpus/train.es, work/bible/corpus/train.en]

The settings of an `mt` stage are the options of that command (`mt COMMAND --help`), named with `_` or
`-`: a flag takes true or false (`joint: false` gives `--separate`), a list repeats its option, and a
missing required option is reported before any stage runs. Each stage runs through the click command
itself, so a pipeline accepts exactly what the command line accepts. In a `command` stage, a first word
`python` is replaced by the interpreter running `mt`, so the program runs in the same environment.

A stage is skipped when all of its outputs exist and are newer than all of its inputs, and its settings
are the ones of its last successful run. That run is recorded in a stamp file, `.mt-pipeline/NAME.json`
in the folder of the stage's first output (NAME: that output's file name). The files of each command:

    preprocess  inputs: src, tgt, tsv, dev_src, dev_tgt, dev_tsv     output: OUT/manifest.json
    train       inputs: DATA/manifest.json and the config file       output: OUT/done.json
    translate   inputs: INPUT and MODEL/done.json                   output: the output file
    evaluate    never skipped (it is cheap and prints the scores it returns)
    lm train    inputs: TEXT, DEV_TEXT and the config file           output: OUT/done.json
    lm evaluate, lm sample   never skipped (they print what they find)
    command     its `inputs` and `outputs`; without outputs, never skipped

A stale train (or lm train) stage runs with --restart: its run folder gets a new model, never the old run's
"nothing to do". Only a run that this stage started with the same settings and inputs and that did not
finish (interrupted) is resumed instead.

Once a stage has run, every later stage runs too (its inputs may have changed), except after a stage
that writes nothing (evaluate, lm evaluate, lm sample). `--force` runs every stage.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time

import click
import yaml

from mt.atomic import write_json
from mt.errors import UserError
from mt.folders import DataFolder, LMRunFolder, RunFolder
from mt.runtime import shared_process

MT_COMMANDS = ("preprocess", "train", "translate", "evaluate", "lm train", "lm evaluate", "lm sample")
TRAINING = ("train", "lm train")  # a stale stage of these runs with --restart
WRITES_NOTHING = ("evaluate", "lm evaluate", "lm sample")  # print only: later stages do not become stale
EXTERNAL = "command"
EXTERNAL_KEYS = ("run", "inputs", "outputs")
TOP_LEVEL_KEYS = ("name", "stages")
STAMP_FOLDER = ".mt-pipeline"
PYTHON_WORDS = ("python", "python3")


@dataclasses.dataclass
class Stage:
    """One validated stage: what to run and which files it reads and writes."""

    number: int  # 1-based position in the pipeline
    name: str  # an `mt` command, or "command" for an external program
    where: str  # "FILE: stage I (NAME)", the prefix of every error about this stage
    argv: list  # arguments of the `mt` command, or the external program and its arguments
    inputs: list
    outputs: list

    def fingerprint(self):
        """A hash of the stage's settings; a change means its outputs are stale.

        The arguments define an `mt` stage (its files follow from them); an external command's
        declared inputs and outputs count as well.
        """
        parts = [self.name, self.argv]
        if self.name == EXTERNAL:
            parts += [self.inputs, self.outputs]
        text = json.dumps(parts)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Reading and checking the file


def load(path, commands) -> tuple[str, list[Stage]]:
    """Read and check the whole pipeline; every error is raised here, before any stage runs.

    `commands` maps each `mt` command name to its click command."""
    try:
        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        place = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: invalid YAML{place}: {getattr(e, 'problem', None) or e}") from e
    if not isinstance(document, dict):
        raise UserError(f"{path}: expected a mapping with a `stages` list")
    unknown = sorted(set(document) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(TOP_LEVEL_KEYS)}")
    raw_stages = document.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise UserError(f"{path}: `stages` must be a non-empty list")
    name = document.get("name") or os.path.splitext(os.path.basename(path))[0]
    return str(name), [parse_stage(path, number, raw, commands) for number, raw in enumerate(raw_stages, start=1)]


def parse_stage(path, number, raw, commands) -> Stage:
    """Check one entry of `stages` and turn it into a Stage."""
    known = MT_COMMANDS + (EXTERNAL,)
    if not isinstance(raw, dict) or len(raw) != 1:
        raise UserError(f"{path}: stage {number}: expected a mapping with exactly one key, the command "
                        f"({', '.join(known)})")
    (name, settings), = raw.items()
    if name not in known:
        raise UserError(f"{path}: stage {number}: unknown command {name!r}; "
                        f"choose one of: {', '.join(known)}")
    where = f"{path}: stage {number} ({name})"
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise UserError(f"{where}: expected a mapping of settings, got {type(settings).__name__}")
    if name == EXTERNAL:
        return parse_external(number, where, settings)
    command = mt_command(commands, name)
    values = settings_by_param(command, settings, where)
    argv = build_args(command, values, where)
    check_with_click(command, name, argv, where)
    inputs, outputs = mt_stage_files(name, {param.name: value for param, value in values.items()}, where)
    return Stage(number, name, where, argv, inputs, outputs)


def parse_external(number, where, settings) -> Stage:
    """A `command` stage: `run` (a non-empty list of words), optional `inputs` and `outputs` lists."""
    unknown = sorted(set(settings) - set(EXTERNAL_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(EXTERNAL_KEYS)}")
    lists = {}
    for key in EXTERNAL_KEYS:
        value = settings.get(key, [])
        if not isinstance(value, list) or any(isinstance(v, (dict, list)) or v is None for v in value):
            raise UserError(f"{where}: `{key}` must be a list of words, e.g. [python, script.py, --out, DIR]")
        lists[key] = [str(v) for v in value]
    if not lists["run"]:
        raise UserError(f"{where}: `run` is required: the program and its arguments as a list")
    return Stage(number, EXTERNAL, where, lists["run"], lists["inputs"], lists["outputs"])


# ---------------------------------------------------------------------------------------------------
# Settings -> command-line arguments


def setting_names(command) -> dict:
    """Map each accepted setting name to (click param, polarity).

    A param is reachable by its name and by each long option, with `-` or `_`; the secondary option of
    an on/off switch (`--separate` of `--joint/--separate`) has polarity False: true means "off".
    """
    names = {}
    for param in command.params:
        spellings = [(param.name, True)]
        if isinstance(param, click.Option):
            spellings += [(opt, True) for opt in param.opts if opt.startswith("--")]
            spellings += [(opt, False) for opt in param.secondary_opts if opt.startswith("--")]
        for spelling, polarity in spellings:
            key = spelling.lstrip("-").replace("-", "_")
            names.setdefault(key, (param, polarity))
    return names


def display_names(command) -> list[str]:
    """The setting names to show in error messages: one per option or argument (plus switch negations)."""
    shown = []
    for param in command.params:
        long_opts = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        if isinstance(param, click.Option) and long_opts:
            shown.append(long_opts[0].lstrip("-").replace("-", "_"))
            shown += [o.lstrip("-").replace("-", "_") for o in param.secondary_opts if o.startswith("--")]
        else:
            shown.append(param.name)
    return sorted(shown)


def settings_by_param(command, settings, where) -> dict:
    """Resolve each setting to its click param: {param: value}, with switch negations already applied."""
    names = setting_names(command)
    values, origin = {}, {}
    for key, value in settings.items():
        found = names.get(str(key).replace("-", "_"))
        if found is None:
            raise UserError(f"{where}: unknown key {key!r}; valid keys: {', '.join(display_names(command))}")
        param, polarity = found
        if param in values:
            raise UserError(f"{where}: keys {origin[param]!r} and {key!r} set the same option")
        if not polarity:
            if not isinstance(value, bool):
                raise UserError(f"{where}: {key!r} takes true or false, got {value!r}")
            value = not value
        values[param], origin[param] = value, key
    for param in command.params:
        if param.required and values.get(param) is None:
            kind = "argument" if isinstance(param, click.Argument) else "option"
            raise UserError(f"{where}: missing required {kind} {param.name!r}")
    return values


def build_args(command, values, where) -> list[str]:
    """The argument list for `command`: options in the command's order, then `--` and the arguments."""
    options, positionals = [], []
    for param in command.params:
        value = values.get(param)
        if value is None:
            continue
        if isinstance(param, click.Argument):
            positionals += _argument_words(param, value, where)
        else:
            options += _option_words(param, value, where)
    return options + (["--"] + positionals if positionals else [])


def _option_words(param, value, where) -> list[str]:
    """`--name value` for one option; a flag gives its switch, a list repeats the option."""
    flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
    if param.is_flag:
        if not isinstance(value, bool):
            raise UserError(f"{where}: {param.name!r} takes true or false, got {value!r}")
        if param.secondary_opts:
            return [flag] if value else [param.secondary_opts[0]]
        return [flag] if value else []
    if isinstance(value, list):
        if param.nargs != 1:
            return [flag] + [_word(v, param, where) for v in value]
        if not param.multiple:
            raise UserError(f"{where}: {param.name!r} takes one value, got a list")
        return [word for v in value for word in (flag, _word(v, param, where))]
    return [flag, _word(value, param, where)]


def _argument_words(param, value, where) -> list[str]:
    """The words of one positional argument (a list only where the argument takes several values)."""
    if isinstance(value, list):
        if param.nargs == 1:
            raise UserError(f"{where}: {param.name!r} takes one value, got a list")
        return [_word(v, param, where) for v in value]
    return [_word(value, param, where)]


def _word(value, param, where) -> str:
    """One YAML scalar as a command-line word (booleans as true/false, as click reads them)."""
    if isinstance(value, (dict, list)) or value is None:
        raise UserError(f"{where}: {param.name!r} takes a single value, got {value!r}")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check_with_click(command, name, argv, where):
    """Let click parse the arguments now (types, choices), so a bad value stops the pipeline early."""
    try:
        command.make_context(f"mt {name}", list(argv)).close()
    except click.ClickException as e:
        raise UserError(f"{where}: {e.format_message()}") from e


def mt_stage_files(name, values, where) -> tuple[list, list]:
    """(inputs, outputs) of an `mt` stage, from its settings keyed by click param name."""
    if name == "preprocess":
        keys = ("src", "tgt", "tsv", "dev_src", "dev_tgt", "dev_tsv")
        return [values[k] for k in keys if values.get(k)], [DataFolder(values["out"]).manifest_path]
    if name == "train":
        inputs = [DataFolder(values["data"]).manifest_path]
        if values.get("config"):
            from mt.config import resolve_config_path

            try:
                inputs.append(resolve_config_path(str(values["config"])))
            except UserError as e:
                raise UserError(f"{where}: {e}") from e
        return inputs, [RunFolder(values["out"]).done_path]
    if name == "translate":
        inputs = [] if values["input"] == "-" else [values["input"]]
        inputs.append(RunFolder(values["model"]).done_path)
        return inputs, [values["output"]] if values.get("output") else []
    if name == "lm train":
        inputs = _as_list(values["text"]) + _as_list(values.get("dev_text"))
        if values.get("config"):
            from mt.config import resolve_config_path
            from mt.lm.config import LMConfig

            try:
                inputs.append(resolve_config_path(str(values["config"]), LMConfig.SHIPPED))
            except UserError as e:
                raise UserError(f"{where}: {e}") from e
        return inputs, [LMRunFolder(values["out"]).done_path]
    if name in ("lm evaluate", "lm sample"):
        return _as_list(values.get("text")) + [LMRunFolder(values["model"]).done_path], []  # never skipped
    return [values["ref"], values["hyp"]], []  # evaluate: no outputs, never skipped


def _as_list(value):
    """The files of a setting that may repeat: one path, or a list of them."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


# ---------------------------------------------------------------------------------------------------
# Skipping


def stamp_path(stage) -> str:
    """Where the stage's last successful settings are kept: beside its first output, in a hidden folder."""
    first = os.path.normpath(stage.outputs[0])
    return os.path.join(os.path.dirname(first), STAMP_FOLDER, os.path.basename(first) + ".json")


def is_up_to_date(stage) -> bool:
    """True when every output exists, is newer than every input, and the settings match the stamp."""
    if not stage.outputs:
        return False
    try:
        with open(stamp_path(stage), encoding="utf-8") as f:
            if json.load(f).get("fingerprint") != stage.fingerprint():
                return False
        output_times = [os.stat(p).st_mtime_ns for p in stage.outputs]
        input_times = [os.stat(p).st_mtime_ns for p in stage.inputs]
    except (OSError, ValueError, AttributeError):
        return False  # no stamp, an unreadable stamp, or a missing file: run the stage
    return not input_times or min(output_times) > max(input_times)


def attempt_path(stage) -> str:
    """Where a train stage records the run it has started: settings and input times, kept until it ends."""
    return stamp_path(stage)[:-len(".json")] + ".started.json"


def _attempt(stage) -> dict:
    times = {}
    for path in stage.inputs:
        try:
            times[path] = os.stat(path).st_mtime_ns
        except OSError:
            times[path] = None
    return {"fingerprint": stage.fingerprint(), "inputs": times}


def train_argv(stage) -> list:
    """The arguments of a stale train stage: with --restart, so that changed inputs or settings give a new
    model rather than the old run's "nothing to do", unless the run in its folder is the one this stage
    started with the same settings and inputs and did not finish (then it resumes)."""
    try:
        with open(attempt_path(stage), encoding="utf-8") as f:
            resumable = json.load(f) == _attempt(stage)
    except (OSError, ValueError):
        resumable = False
    resumable = resumable and not os.path.exists(stage.outputs[0])
    write_json(attempt_path(stage), _attempt(stage))
    return list(stage.argv) if resumable else ["--restart", *stage.argv]


def forget_stamp(stage):
    """Remove the stamp before a stage runs, so a failed run never looks like a successful one."""
    if stage.outputs:
        try:
            os.remove(stamp_path(stage))
        except FileNotFoundError:
            pass


def write_stamp(stage, pipeline_path):
    """Record a successful run (with the settings it used), if all of the stage's outputs exist."""
    if stage.outputs and all(os.path.exists(p) for p in stage.outputs):
        write_json(stamp_path(stage), {"pipeline": str(pipeline_path), "stage": stage.number,
                                       "command": stage.name, "argv": stage.argv,
                                       "fingerprint": stage.fingerprint()})
        if stage.name in TRAINING:
            with contextlib.suppress(FileNotFoundError):
                os.remove(attempt_path(stage))


# ---------------------------------------------------------------------------------------------------
# Running


def run_mt_command(stage, command):
    """Invoke the `mt` command through click, as the command line would, and return its result.

    The stages share this process, so each runs inside `shared_process`: none may fix process-wide
    settings (TensorFlow's threads) that a later stage would inherit."""
    argv = train_argv(stage) if stage.name in TRAINING else list(stage.argv)
    try:
        with shared_process():
            return command.main(argv, prog_name=f"mt {stage.name}", standalone_mode=False)
    except click.ClickException as e:
        raise UserError(f"{stage.where}: {e.format_message()}") from e
    except UserError as e:
        raise UserError(f"{stage.where}: {e}") from e
    except SystemExit as e:
        # The command has printed its own one-line error; add which stage it was, unless interrupted.
        if e.code in (0, None):
            return None
        if e.code == 130:
            raise
        raise UserError(f"{stage.where} failed (see the error above)") from e


def run_external(stage):
    """Run an external program; `python` as its first word means this interpreter."""
    argv = list(stage.argv)
    if argv[0] in PYTHON_WORDS:
        argv[0] = sys.executable
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        completed = subprocess.run(argv, check=False)
    except OSError as e:
        raise UserError(f"{stage.where}: cannot start {argv[0]!r}: {e.strerror or e}") from e
    if completed.returncode != 0:
        raise UserError(f"{stage.where}: `{shlex.join(stage.argv)}` failed with exit status "
                        f"{completed.returncode}")
    missing = [p for p in stage.outputs if not os.path.exists(p)]
    if missing:
        raise UserError(f"{stage.where}: finished but did not write its declared output {missing[0]}")


def run_stage(stage, commands):
    """Run one stage; return what its stage function returns (the scores, for evaluate)."""
    if stage.name == EXTERNAL:
        return run_external(stage)
    return run_mt_command(stage, mt_command(commands, stage.name))


def mt_command(commands, name):
    """The click command of `name`: a command of `mt` ("train"), or of one of its groups ("lm train")."""
    group, _, sub = name.partition(" ")
    return commands[group].commands[sub] if sub else commands[group]


def format_duration(seconds) -> str:
    """`42.0s`, `3m 07s` or `2h 05m`."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def run(path, commands, force=False):
    """Run the pipeline in `path` with the click `commands` of `mt` (by name); return the scores of its
    last evaluate stage (None without one)."""
    name, stages = load(path, commands)
    started = time.monotonic()
    scores, stale, ran = None, force, 0
    for stage in stages:
        label = f"[{stage.number}/{len(stages)}] {stage.name}"
        if not stale and is_up_to_date(stage):
            click.echo(f"{label}: up to date, skipped")
            continue
        click.echo(f"{label}: running")
        stage_started = time.monotonic()
        forget_stamp(stage)
        result = run_stage(stage, commands)
        write_stamp(stage, path)
        ran += 1
        if stage.name == "evaluate":
            scores = result
        elif stage.name == "lm evaluate":
            click.echo(f"{label}: {result['bits_per_char']:.4f} bits per character on {', '.join(result['text'])}")
        elif stage.name not in WRITES_NOTHING:
            stale = True  # later stages may read what this one wrote
        click.echo(f"{label}: done in {format_duration(time.monotonic() - stage_started)}")
    print_summary(name, scores, ran, len(stages), time.monotonic() - started)
    return scores


def print_summary(name, scores, ran, total, seconds):
    """The final scores (of the last evaluate stage) and the total time."""
    if scores:
        click.echo(f"final scores ({scores.get('hyp')}): BLEU {scores['bleu']:.2f}  "
                   f"chrF {scores['chrf']:.2f}  TER {scores['ter']:.2f}")
    click.echo(f"pipeline {name}: {ran} of {total} stages run, {total - ran} skipped, "
               f"in {format_duration(seconds)}")
