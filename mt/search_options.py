"""The search options of every command that decodes: their names, defaults, checks and click options.

`SearchOptions` is the one home of the defaults: the click options of `search_options` and the
constructors of mt/search.py take theirs from it. This module imports no TensorFlow, since the command
line imports it to build its help.
"""

import dataclasses
from dataclasses import dataclass

import click

from mt.errors import UserError

SEARCH_NAMES = ("beam", "greedy", "sample")  # the keys of mt.search.SEARCHES
BEAM_STOPS = ("early", "exact")


@dataclass(frozen=True)
class SearchOptions:
    """Which search decodes, and its settings (each used only by the searches its help names)."""

    search: str = "beam"
    beam_size: int = 5
    length_penalty: float = 0.6
    coverage_penalty: float = 0.0
    beam_stop: str = "early"
    n_best: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 1234
    max_length_ratio: float = 2.0

    @classmethod
    def pick(cls, values):
        """The options among `values` (a mapping, e.g. a command's keyword arguments); the rest default."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def check(self):
        """Raise a UserError naming the option for a value no search accepts; return self."""
        if self.search not in SEARCH_NAMES:
            raise UserError(f"unknown search {self.search!r}: choose one of {', '.join(SEARCH_NAMES)}")
        if self.beam_stop not in BEAM_STOPS:
            raise UserError(f"unknown --beam-stop {self.beam_stop!r}: choose one of {', '.join(BEAM_STOPS)}")
        if self.n_best > 1 and self.search != "beam":
            raise UserError(f"--n-best {self.n_best} needs --search beam (greedy and sampling give one "
                            "hypothesis)")
        if self.beam_size < 1:
            raise UserError(f"--beam-size must be at least 1, got {self.beam_size}")
        if not 1 <= self.n_best <= self.beam_size:
            raise UserError(f"--n-best must be between 1 and --beam-size ({self.beam_size}), got {self.n_best}")
        if self.length_penalty < 0 or self.coverage_penalty < 0:
            raise UserError("--length-penalty and --coverage-penalty must be 0 (off) or more")
        if self.temperature <= 0:
            raise UserError(f"--temperature must be positive, got {self.temperature}")
        if self.top_k < 0:
            raise UserError(f"--top-k must be 0 (off) or more, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise UserError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.max_length_ratio <= 0:
            raise UserError(f"--max-length-ratio must be positive, got {self.max_length_ratio}")
        return self


DEFAULTS = SearchOptions()


def _click_options(n_best):
    d = DEFAULTS
    options = [
        click.option("--search", type=click.Choice(list(SEARCH_NAMES)), default=d.search, show_default=True,
                     help="Search strategy."),
        click.option("--beam-size", default=d.beam_size, show_default=True,
                     help="Beam search: hypotheses kept per sentence."),
        click.option("--length-penalty", default=d.length_penalty, show_default=True,
                     help="Beam search: GNMT length penalty alpha, finished scores / ((5 + length) / 6) ** alpha "
                     "(0 = off)."),
        click.option("--coverage-penalty", default=d.coverage_penalty, show_default=True,
                     help="Beam search: GNMT coverage penalty beta, + beta x sum of log(min(attention received, "
                     "1)) over source pieces (0 = off)."),
        click.option("--beam-stop", type=click.Choice(list(BEAM_STOPS)), default=d.beam_stop, show_default=True,
                     help="Beam search: stop a sentence once no live hypothesis outranks its finished ones at "
                     "the current length (early), or only once none could at any length up to its limit "
                     "(exact: never loses a better hypothesis to the length penalty, and runs longer)."),
    ]
    if n_best:
        options.append(click.option(
            "--n-best", default=d.n_best, show_default=True,
            help="Beam search: write this many hypotheses per input line, as 'LINE ||| TRANSLATION ||| "
            "LOG_PROB ||| SCORE' lines (LINE counted from 0), instead of one translation a line."))
    options += [
        click.option("--temperature", default=d.temperature, show_default=True,
                     help="Sampling: divide log-probabilities by this."),
        click.option("--top-k", default=d.top_k, show_default=True,
                     help="Sampling: only from the K most probable pieces (0 = all)."),
        click.option("--top-p", default=d.top_p, show_default=True,
                     help="Sampling: only from the most probable pieces that together reach this probability "
                     "(1 = all)."),
        click.option("--seed", default=d.seed, show_default=True,
                     help="Sampling: the same seed gives the same output."),
        click.option("--max-length-ratio", default=d.max_length_ratio, show_default=True,
                     help="Output length limit of each sentence: ratio x its source length + 10 pieces."),
    ]
    return options


def search_options(command=None, *, n_best=True):
    """Click decorator: the options of SearchOptions, with its defaults, added to a command, which gets
    them as keyword arguments (`SearchOptions.pick(kwargs)` collects them). `n_best=False` leaves out
    --n-best, for a command that shows one hypothesis a sentence.

    Use as `@search_options` or `@search_options(n_best=False)`."""

    def decorate(fn):
        for option in reversed(_click_options(n_best)):  # the first option listed first in the help
            fn = option(fn)
        return fn

    return decorate if command is None else decorate(command)
