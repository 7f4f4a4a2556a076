"""The run log of training: a progress line on stderr, one JSON object per line in the run folder's
metrics file, and the same numbers as TensorBoard scalars.

Every task prints its lines; only the chief writes files (a RunLog without a folder writes nothing), so a
multi-worker run has one metrics file and one TensorBoard log.
"""

import json
import math
import time
from dataclasses import dataclass

import click


@dataclass
class Clock:
    """Time since this process started training, and the training loss and target tokens summed since
    the last progress line (its window)."""

    start: float
    start_step: int
    window_start: float
    loss_sum: float = 0.0
    tokens: float = 0.0
    norm_sum: float = 0.0  # gradient norms before clipping
    steps: int = 0
    rate: float = 0.0  # the learning rate of the last update

    @classmethod
    def started(cls, step, now=None):
        now = time.time() if now is None else now
        return cls(start=now, start_step=step, window_start=now)

    def add(self, loss_sum, tokens, norm=0.0, rate=0.0):
        self.loss_sum += loss_sum
        self.tokens += tokens
        self.norm_sum += norm
        self.steps += 1
        self.rate = rate

    def seconds(self, now=None):
        return (time.time() if now is None else now) - self.start

    def minutes(self, now=None):
        return self.seconds(now) / 60.0

    def close_window(self, now=None):
        """(mean token loss, target tokens per second, mean gradient norm) of the window, which then
        starts again."""
        now = time.time() if now is None else now
        loss = self.loss_sum / max(self.tokens, 1.0)
        speed = self.tokens / max(now - self.window_start, 1e-9)
        norm = self.norm_sum / max(self.steps, 1)
        self.loss_sum, self.tokens, self.norm_sum, self.steps, self.window_start = 0.0, 0.0, 0.0, 0, now
        return loss, speed, norm


def eta(step, steps_done, minutes, max_steps, max_minutes):
    """Time left under the step and minute limits, as ' | ETA m:ss' (empty without limits)."""
    remaining = []
    if max_steps:
        remaining.append((max_steps - step) * minutes / max(steps_done, 1))
    if max_minutes:
        remaining.append(max_minutes - minutes)
    if not remaining:
        return ""
    left = max(0.0, min(remaining))
    return f" | ETA {int(left)}:{int((left % 1) * 60):02d}"


def progress_line(step, epoch, loss, speed, minutes, eta_text="", rate=None, unit="tgt tok", bits=False):
    """One progress line; `unit` names what the speed counts, `bits` adds the loss in bits (per
    character, for a language model)."""
    lr = f" | lr {rate:.2e}" if rate is not None else ""
    size = f" | {loss / math.log(2):6.3f} bits" if bits else f" | ppl {math.exp(min(loss, 50)):8.2f}"
    return (f"step {step:>7} | epoch {epoch:6.2f} | loss {loss:6.3f}{size}"
            f"{lr} | {speed:7.0f} {unit}/s | {minutes:6.1f} min{eta_text}")


def validation_line(validation):
    bleu = f" | dev BLEU {validation.bleu:5.2f}" if validation.bleu is not None else ""
    return (f"validation at step {validation.step}: dev loss {validation.loss:.3f}{bleu}"
            f"{' (best so far)' if validation.improved else ''}")


class RunLog:
    """Prints progress and validation lines and records their numbers in `folder` (a RunFolder; None:
    print only)."""

    def __init__(self, folder=None, echo=None, unit="tgt tok", speed_key="tokens_per_s", bits=False):
        """`unit`, `speed_key`: what the speed counts, in the progress line and in the records; `bits`:
        the progress line gives the loss in bits too (see progress_line)."""
        self.folder = folder
        self.unit, self.speed_key, self.bits = unit, speed_key, bits
        self.echo = echo if echo is not None else (lambda line: click.echo(line, err=True))
        self.writer = None
        if folder is not None:
            import tensorflow as tf

            self.writer = tf.summary.create_file_writer(folder.tensorboard_dir)

    def say(self, line):
        self.echo(line)

    def progress(self, step, epoch, clock, max_steps=0, max_minutes=0):
        """The progress line of `step` from the clock's window (which starts again), and its record."""
        minutes, rate = clock.minutes(), clock.rate
        loss, speed, norm = clock.close_window()
        eta_text = eta(step, step - clock.start_step, minutes, max_steps, max_minutes)
        self.echo(progress_line(step, epoch, loss, speed, minutes, eta_text, rate, self.unit, self.bits))
        self.record({"kind": "train", "step": step, "epoch": round(epoch, 4), "loss": loss,
                     self.speed_key: speed, "minutes": minutes, "lr": rate, "grad_norm": norm})

    def validation(self, validation):
        self.record(validation.record())
        self.echo(validation_line(validation))

    def record(self, record):
        """Append `record` (with its "kind" and "step") to the metrics file, and its numbers to TensorBoard
        as KIND/NAME scalars."""
        if self.folder is None:
            return
        import tensorflow as tf

        record = {"time": round(time.time(), 3), **record}
        with open(self.folder.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        with self.writer.as_default(step=int(record["step"])):
            for key, value in record.items():
                if key not in ("time", "step", "kind") and isinstance(value, (int, float)):
                    tf.summary.scalar(f"{record['kind']}/{key}", value)

    def flush(self):
        if self.writer is not None:
            self.writer.flush()
