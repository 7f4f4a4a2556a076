"""Validation during training: the dev loss, BLEU on a dev sample, the best weights, and early stopping.

A validation scores the model (BLEU when a dev sample is translated, else minus the dev loss: higher is
better), saves the weights as the best ones when the score improves on the best so far, and counts the
validations without improvement; patience is the pure function `early_stopping` of that state, so it is
tested without a model or a distribution strategy. The state itself (best score, validations without
improvement) lives in two variables that the training loop checkpoints, so a resumed run keeps it.
"""

import itertools
from dataclasses import dataclass
from typing import NamedTuple, Optional


class Verdict(NamedTuple):
    """What one validation changes: whether it improved, the new state, and whether to stop now."""

    improved: bool
    best: float
    bad_evals: int
    stop: bool


def early_stopping(best, bad_evals, score, patience):
    """The Verdict of a validation scoring `score` (higher is better) after `bad_evals` validations
    without improvement on `best`: an improvement resets the count, and training stops once the count
    reaches `patience` (0: never)."""
    improved = score > best
    if improved:
        best, bad_evals = score, 0
    else:
        bad_evals += 1
    return Verdict(improved, best, bad_evals, bool(patience) and bad_evals >= patience)


def dev_loss(eval_step, batcher):
    """Mean token loss over the dev set: eval_step(src, tgt_in, tgt_out) gives (loss sum, real tokens) of
    one batch; the batches are the dev pairs sorted by length (least padding, fixed order)."""
    loss_sum = tokens = 0.0
    for indices in batcher.sorted_batches():
        batch_loss, batch_tokens = eval_step(*batcher.make_batch(indices))
        loss_sum, tokens = loss_sum + float(batch_loss), tokens + float(batch_tokens)
    return loss_sum / max(tokens, 1.0)


def read_dev_sample(data, sentences):
    """The first `sentences` lines of the data folder's cleaned dev text, as (sources, references); None
    when the folder has no dev text or no sentence is asked for."""
    from mt.textio import iter_lines

    if not sentences or data.dev_text_path("src") is None:
        return None
    return tuple(list(itertools.islice(iter_lines(data.dev_text_path(side)), sentences))
                 for side in ("src", "tgt"))


class DevBleu:
    """Corpus BLEU of the model's greedy translations of a dev sample against its references."""

    def __init__(self, model, src_tokenizer, tgt_tokenizer, sources, references):
        from mt.translate import Translator

        self.translator = Translator(model, src_tokenizer, tgt_tokenizer)
        self.sources, self.references = list(sources), list(references)

    def __call__(self):
        from mt.evaluate import score

        return score(self.translator.translate(self.sources), self.references)["bleu"]


@dataclass
class Validation:
    """The result of one validation: its metrics record and the verdict on it."""

    step: int
    loss: float
    bleu: Optional[float]
    improved: bool
    stop: bool

    def record(self):
        """The metrics record of this validation (kind "dev")."""
        scores = {"loss": self.loss} if self.bleu is None else {"loss": self.loss, "bleu": self.bleu}
        return {"kind": "dev", "step": self.step, **scores, "best": self.improved}


class Validator:
    """Validates the model on the dev set and keeps its best weights.

    `best` and `bad_evals` are the (checkpointed) variables holding the early-stopping state; `weights`
    is the RunFolder that receives the best weights, None on a task that writes no run folder (every task
    validates, since the result is the same everywhere, so all of them stop at the same step)."""

    def __init__(self, model, eval_step, dev_batcher, best, bad_evals, patience, weights=None, bleu=None):
        self.model, self.eval_step, self.dev = model, eval_step, dev_batcher
        self.best, self.bad_evals, self.patience = best, bad_evals, patience
        self.weights, self.bleu = weights, bleu
        self.floor = None  # the score of the best weights on disk, when known: never replaced by a worse one

    def dev_loss(self):
        """The mean token loss on the dev set."""
        return dev_loss(self.eval_step, self.dev)

    def __call__(self, step):
        """Validate at `step`; returns the Validation (with stop=True when it is time to stop early)."""
        loss = self.dev_loss()
        bleu = self.bleu() if self.bleu is not None else None
        score = -loss if bleu is None else bleu
        verdict = early_stopping(float(self.best.numpy()), int(self.bad_evals.numpy()), score, self.patience)
        if verdict.improved:
            self.best.assign(verdict.best)
            if self.weights is not None and (self.floor is None or verdict.best > self.floor):
                self.weights.save_weights(self.model, "best", score=verdict.best)
                self.floor = verdict.best
        self.bad_evals.assign(verdict.bad_evals)
        return Validation(step, loss, bleu, verdict.improved, verdict.stop)
