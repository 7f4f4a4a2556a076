"""The settings of a character language model and its training: two sections, `model:` and `train:`, as
in mt/config.py (any key left out keeps its default; `--config` takes a path or the name of a shipped
config in mt/configs/lm/).
"""

import os
from dataclasses import dataclass, field

from mt.config import CELLS, CONFIG_DIR, Sections, choice, positive
from mt.errors import UserError

VOCABS = ("char", "byte")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")


@dataclass
class LMModelConfig:
    # char: the characters of the training text (those seen fewer than min_count times, and any unseen
    # one, read as one unknown symbol); byte: the 256 byte values of its UTF-8, nothing unknown
    vocab: str = "char"
    min_count: int = 1
    cell: str = "lstm"  # lstm | gru | rnn: the cells of the translation model (mt/model.py)
    emb_dim: int = 64
    units: int = 256
    layers: int = 2
    # on the embeddings, between layers and before the softmax (not on the recurrent connections); off
    # by default: a run of minutes sees less than one pass over a large text and does not overfit
    dropout: float = 0.0

    def check(self):
        choice("model.vocab", self.vocab, VOCABS)
        choice("model.cell", self.cell, CELLS)
        for name in ("min_count", "emb_dim", "units", "layers"):
            positive(f"model.{name}", getattr(self, name))
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class LMTrainConfig:
    batch_size: int = 64  # parallel streams: the text is cut into this many pieces, read side by side
    # truncated BPTT: each update reads `bptt` more characters of every stream (the forward length) and
    # backpropagates through `bptt_backward` of them (0: the same). Longer: the window reaches back over
    # the characters before, read again from the state carried at its start; shorter: the gradient is cut
    # every bptt_backward characters inside the chunk
    bptt: int = 100
    bptt_backward: int = 0
    learning_rate: float = 2e-3  # Adam; the peak rate of the schedule
    schedule: str = "constant"  # constant | cosine | linear | inverse_sqrt | auto (mt/schedule.py)
    warmup_steps: int = 0
    final_lr: float = 0.02
    clip_norm: float = 1.0  # clip gradients by their global norm
    max_steps: int = 0  # 0 = no step limit
    max_minutes: float = 0.0  # 0 = no time limit
    max_epochs: int = 0  # passes over the streams; 0 = no limit
    dev_fraction: float = 0.05  # without --dev-text: the last lines of the text held out for validation
    eval_every: int = 500  # steps between validations (dev bits per character)
    eval_chunk: int = 256  # characters per stream read at once when validating and evaluating
    patience: int = 10  # validations without improvement before early stopping (0 = never)
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 50
    seed: int = 42
    # auto: bfloat16 products where the CPU has them in hardware and no GPU is used, else float32 (as
    # `mt train`); the states, gates and the softmax stay float32
    precision: str = "auto"

    def check(self):
        for name in ("batch_size", "bptt", "eval_every", "eval_chunk", "checkpoint_every", "keep_checkpoints",
                     "log_every"):
            positive(f"train.{name}", getattr(self, name))
        for name in ("bptt_backward", "max_steps", "max_minutes", "max_epochs", "patience", "warmup_steps"):
            if getattr(self, name) < 0:
                raise UserError(f"train.{name} must be 0 or more, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.clip_norm <= 0:
            raise UserError("train.learning_rate and train.clip_norm must be positive")
        if not 0.0 <= self.dev_fraction < 1.0:
            raise UserError(f"train.dev_fraction must be in [0, 1), got {self.dev_fraction}")
        choice("train.precision", self.precision, PRECISIONS)
        if not 0.0 <= self.final_lr <= 1.0:
            raise UserError(f"train.final_lr must be in [0, 1], got {self.final_lr}")
        from mt.schedule import SCHEDULES

        # only the name here: the budget a decay needs may still come from the command line, and the
        # trainer resolves the schedule against the final budget
        choice("train.schedule", self.schedule, SCHEDULES)

    @property
    def backward(self):
        """The backward length: bptt_backward, or bptt when it is 0."""
        return self.bptt_backward or self.bptt


@dataclass
class LMConfig(Sections):
    """The settings of a language model and its training."""

    SHIPPED = os.path.join(CONFIG_DIR, "lm")

    model: LMModelConfig = field(default_factory=LMModelConfig)
    train: LMTrainConfig = field(default_factory=LMTrainConfig)
