"""Model and training settings: dataclasses, read from and written to YAML, checked with clear errors.

A config file has two sections, `model:` and `train:`; any key left out keeps its default. `--config` takes
a path or the name of a shipped config (mt/configs/NAME.yaml), e.g. `rnn-base-cpu`.
"""

import dataclasses
import os
import re
from dataclasses import dataclass, field

import yaml

from mt.errors import UserError

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
CELLS = ("lstm", "gru", "rnn")
ATTENTIONS = ("general", "dot", "none")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
TRAIN_PRECISIONS = ("auto",) + PRECISIONS  # auto: see mt.distribute.resolve_precision


@dataclass
class ModelConfig:
    cell: str = "lstm"  # lstm | gru | rnn
    emb_dim: int = 256
    enc_units: int = 256  # per direction
    enc_layers: int = 1
    dec_units: int = 512
    dec_layers: int = 1
    attention: str = "general"  # Luong: general | dot | none (no attention: a plain encoder-decoder)
    # off: the attention feeds no later step, so teacher forcing runs it over all steps at once; it won at
    # 1,000 updates and in minutes (BENCHMARKS.md, "No input feeding and tied embeddings")
    input_feeding: bool = False
    # the target embedding is also the output matrix, after a projection of the decoder's output to emb_dim;
    # on: it won at 1,000 updates and makes an update cheaper (the same section)
    tie_embeddings: bool = True
    dropout: float = 0.1  # 0.2 lost 0.5 BLEU at 1,000 updates: a short run underfits (BENCHMARKS.md)

    def check(self):
        choice("model.cell", self.cell, CELLS)
        choice("model.attention", self.attention, ATTENTIONS)
        for name in ("emb_dim", "enc_units", "enc_layers", "dec_units", "dec_layers"):
            positive(f"model.{name}", getattr(self, name))
        if self.attention == "dot" and 2 * self.enc_units != self.dec_units:
            raise UserError(
                f"model.attention 'dot' needs dec_units = 2 x enc_units (got {self.dec_units} and "
                f"{self.enc_units}): use attention 'general' or change the sizes")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainConfig:
    batch_tokens: int = 2000  # target tokens per global batch (batches are bucketed by length)
    max_len: int = 80  # pairs longer than this (in pieces, either side) are left out of training
    # batch lengths are padded to a multiple of this: fewer distinct shapes keep the CPU kernels' per-shape
    # caches small (docs/design.md, "Batch shapes are rounded")
    length_multiple: int = 8
    learning_rate: float = 3e-3  # the peak rate of the schedule: 3e-3 beat 2e-3 at 1,000 updates (BENCHMARKS.md)
    # constant by measurement: in 20 minutes on the Bible corpus it beat the cosine planned to the budget
    # (BENCHMARKS.md); auto | cosine | linear | cooldown | inverse_sqrt are there to choose (mt/schedule.py)
    schedule: str = "constant"
    warmup_steps: int = 0  # the rate rises linearly over this many updates
    final_lr: float = 0.02  # a cosine, linear or cooldown schedule ends at this fraction of the peak rate
    cooldown: float = 0.2  # the cooldown schedule decays over this last fraction of the budget
    # validate and save an exponential moving average of the weights (0 = off): the largest gain of the
    # ablations (BENCHMARKS.md); its decay warms up, so a short run averages over its own length
    ema_decay: float = 0.995
    clip_norm: float = 1.0  # clip gradients by their global norm
    accumulate: int = 1  # sum the gradients of this many batches into one update (clipped as one)
    label_smoothing: float = 0.0
    max_steps: int = 0  # 0 = no step limit
    max_minutes: float = 0.0  # 0 = no time limit
    max_epochs: int = 0  # 0 = no epoch limit
    eval_every: int = 500  # steps between validations
    eval_bleu_sentences: int = 200  # dev sentences translated for BLEU at each validation (0 = none)
    patience: int = 10  # validations without improvement before early stopping (0 = never stop early)
    checkpoint_every: int = 500
    keep_checkpoints: int = 2  # the last this many checkpoints are kept: what `mt average` can average
    log_every: int = 50
    seed: int = 42
    precision: str = "auto"  # bfloat16 products where the CPU has them natively, else float32

    def check(self):
        for name in ("batch_tokens", "max_len", "length_multiple", "eval_every", "checkpoint_every",
                     "keep_checkpoints", "log_every", "accumulate"):
            positive(f"train.{name}", getattr(self, name))
        for name in ("max_steps", "max_minutes", "max_epochs", "patience", "eval_bleu_sentences"):
            if getattr(self, name) < 0:
                raise UserError(f"train.{name} must be 0 or more, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.clip_norm <= 0:
            raise UserError("train.learning_rate and train.clip_norm must be positive")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UserError(f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        choice("train.precision", self.precision, TRAIN_PRECISIONS)
        from mt.schedule import SCHEDULES

        # only the name here: the budget a decay needs may still come from the command line, and the
        # trainer resolves the schedule against the final budget
        choice("train.schedule", self.schedule, SCHEDULES)
        if self.warmup_steps < 0 or not 0.0 <= self.final_lr <= 1.0:
            raise UserError("train.warmup_steps must be 0 or more and train.final_lr in [0, 1]")
        if not 0.0 < self.cooldown <= 1.0:
            raise UserError(f"train.cooldown must be in (0, 1] (a fraction of the budget), got {self.cooldown}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"train.ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}")


class Sections:
    """A config of named sections (dataclasses of settings), read from and written to YAML.

    A subclass is a dataclass whose fields are its sections, each with a default factory; SHIPPED is the
    folder of its shipped configs (`--config NAME`)."""

    SHIPPED = CONFIG_DIR

    @classmethod
    def section_types(cls):
        return {f.name: type(f.default_factory()) for f in dataclasses.fields(cls)}

    def check(self):
        for name in self.section_types():
            getattr(self, name).check()
        return self

    def to_dict(self):
        return dataclasses.asdict(self)

    def save(self, path):
        from mt.atomic import atomic_open

        with atomic_open(path) as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False)

    @classmethod
    def from_dict(cls, data, where="config"):
        data = data or {}
        types = cls.section_types()
        expected = " and ".join(f"'{name}'" for name in types)
        if not isinstance(data, dict):
            raise UserError(f"{where}: expected a mapping with {expected} sections")
        unknown = set(data) - set(types)
        if unknown:
            raise UserError(f"{where}: unknown section(s) {sorted(unknown)}; expected {expected}")
        return cls(**{name: build_section(kind, data.get(name), f"{where}: {name}") for name, kind in types.items()}).check()

    @classmethod
    def load(cls, path_or_name=None):
        """Read a config file, or a shipped config by name; None gives the defaults."""
        if path_or_name is None:
            return cls().check()
        path = resolve_config_path(path_or_name, cls.SHIPPED)
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        return cls.from_dict(data, where=path)


@dataclass
class Config(Sections):
    """The settings of a translation model and its training."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def resolve_config_path(path_or_name, shipped_folder=CONFIG_DIR):
    """A config file's path: `path_or_name` itself, or the shipped config of that name in `shipped_folder`."""
    if os.path.exists(path_or_name):
        return path_or_name
    shipped = os.path.join(shipped_folder, f"{path_or_name}.yaml")
    if os.path.exists(shipped):
        return shipped
    names = sorted(n[:-5] for n in os.listdir(shipped_folder) if n.endswith(".yaml"))
    raise UserError(f"config '{path_or_name}' is neither a file nor a shipped config ({', '.join(names)})")


def build_section(cls, data, where):
    """The settings dataclass `cls` from a mapping, every key known and every value of its field's type."""
    data = data or {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of settings")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise UserError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {', '.join(fields)}")
    values = {}
    for key, value in data.items():
        default = fields[key].default
        values[key] = coerce(value, type(default), f"{where}.{key}")
    return cls(**values)


def coerce(value, kind, where):
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no decimal point) as a string
    elif isinstance(value, kind):
        return value
    raise UserError(f"{where}: expected {kind.__name__}, got {value!r}")


def choice(name, value, choices):
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}; got '{value}'")


def positive(name, value):
    if value <= 0:
        raise UserError(f"{name} must be positive, got {value}")
