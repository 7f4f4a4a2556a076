"""The texts of a language model as id streams: reading them, holding out a dev part, and cutting one
long stream into parallel streams and the chunks that training and evaluation read.

Training (`TrainStreams`): the training ids, N of them, are cut into B rows of L + 1 ids, L = (N - 1) // B
(row b starts at b x L; neighbouring rows share one id, the last ids that fill no row are left out).
Update c reads the window of W = max(forward, backward) inputs from column c x forward of every row and
predicts the ids one further; its loss counts the last `forward` of them, and the state after its first
`forward` inputs is carried to update c + 1. So every row is read once per epoch, left to right, each
predicted id is counted once (except the first W - forward of a row, read as context only), and a
backward length beyond the forward one reads the characters before the chunk again, from the state
carried at the window's start. An epoch ends when a row has no full window left; the next one starts
again at column 0 from the zero state.

Evaluation (`eval_rows`): the N ids of a held-out text give N - 1 predictions, cut into S rows of
ceil((N - 1) / S) predictions, padded at the end; a row starts from the zero state, every prediction is
counted exactly once and padding never. S is at most the number asked for, and small enough that every
row holds MIN_ROW predictions (one row for a shorter text): the characters a row reads before its state
has warmed up are then a small part of it.
"""

import os
from dataclasses import dataclass

import numpy as np

from mt.errors import UserError
from mt.textio import LineReader
from mt.tokenizer import PAD

MIN_ROW = 4096  # predictions per evaluation row, at least (see eval_rows)


@dataclass
class Text:
    """Text read from files: the files joined, each ending in a newline; and what was read."""

    text: str
    files: list  # per file: {"path", "sha256", "bytes", "lines"}


def read_texts(paths, option="--text"):
    """The text of the files `paths` (UTF-8, read by mt/textio.py: lines end at '\\n', a '\\r' before it and
    a byte-order mark are dropped); each file ends in a newline. No file or an empty text is a UserError."""
    if not paths:
        raise UserError(f"no {option} given: name at least one text file")
    parts, files = [], []
    for path in paths:
        reader = LineReader(path, fix=f"convert {path} to UTF-8")
        lines = list(reader)
        if lines:
            parts.append("\n".join(lines) + "\n")
        files.append({"path": os.path.abspath(path), "sha256": reader.sha256, "bytes": reader.bytes,
                      "lines": reader.lines})
    text = "".join(parts)
    if not text.strip():
        raise UserError(f"{option} {' '.join(map(str, paths))}: the text is empty; give a file with some text in it")
    return Text(text, files)


def hold_out_end(text, fraction):
    """(training text, dev text): the last whole lines holding about `fraction` of the characters are
    the dev text ("" when fraction is 0 or the text has a single line)."""
    if fraction <= 0:
        return text, ""
    cut = text.find("\n", int(len(text) * (1.0 - fraction))) + 1
    if cut <= 0 or cut >= len(text):
        cut = text.rfind("\n", 0, len(text) - 1) + 1
    if cut <= 0:
        return text, ""
    return text[:cut], text[cut:]


def too_short(what, chars, needed, fix):
    return UserError(f"{what} has {chars:,} characters, too few for {needed}: {fix}")


class TrainStreams:
    """The training ids as `batch` parallel rows, and the window each update reads (see the module)."""

    def __init__(self, ids, batch, forward, backward):
        self.batch, self.forward, self.backward = batch, forward, backward
        self.window = max(forward, backward)
        self.length = (len(ids) - 1) // batch  # predictions per row
        if self.length < self.window:
            raise too_short("the training text", len(ids), f"{batch} streams (train.batch_size) of at least "
                            f"{self.window} characters (train.bptt, train.bptt_backward) each, "
                            f"{batch * self.window + 1:,} in all", "give more text, or lower train.batch_size "
                            "or train.bptt")
        self.rows = np.stack([ids[b * self.length:b * self.length + self.length + 1] for b in range(batch)])
        self.chunks = (self.length - self.window) // forward + 1  # updates per epoch

    def window_at(self, chunk):
        """(inputs [B, W], targets [B, W]) of update `chunk` of an epoch."""
        start = chunk * self.forward
        piece = self.rows[:, start:start + self.window + 1]
        return piece[:, :-1], piece[:, 1:]

    def predicted_per_epoch(self):
        return self.batch * self.chunks * self.forward

    def cuts(self):
        """(cuts, detach, keep) of a window for LanguageModel.run: where its recurrence is split, whether
        the gradient stops there, and after how many inputs the carried state is taken."""
        if self.backward > self.forward:
            return (self.forward,), False, self.forward
        if self.backward < self.forward:
            return tuple(range(self.backward, self.forward, self.backward)), True, None
        return (), False, None


def eval_rows(ids, streams, chunk):
    """(inputs [S, C x K], targets [S, C x K], predictions) of a held-out text's ids for S = `streams`
    rows read K = `chunk` ids at a time (see the module); targets are PAD where padding."""
    predictions = len(ids) - 1
    if predictions < 1:
        raise too_short("the text", len(ids), "one prediction", "give at least two characters")
    streams = max(1, min(streams, predictions // MIN_ROW))
    per_row = -(-predictions // streams)
    width = -(-per_row // chunk) * chunk
    inputs = np.full([streams, width], PAD, np.int32)
    targets = np.full([streams, width], PAD, np.int32)
    for row in range(streams):
        start = row * per_row
        n = max(0, min(per_row, predictions - start))
        inputs[row, :n] = ids[start:start + n]
        targets[row, :n] = ids[start + 1:start + n + 1]
    return inputs, targets, predictions
