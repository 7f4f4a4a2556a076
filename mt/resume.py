"""What every training loop needs to stop and resume safely: the settings a resumed run may change, its
checkpoints (found from their files, the damaged ones skipped), and a checkpoint that signals cannot cut
short.

`mt train` (mt/train.py) and `mt lm train` (mt/lm/train.py) share these, so both keep the promises of
docs/reliability.md in the same words.
"""

import contextlib
import os
import re
import signal

import click

from mt.errors import UserError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RESTART_HINT = ("run with --restart to start a new run there (its checkpoints and weights are discarded) or train "
                "into a new --out")


class Stop(Exception):
    """Raised by a loop on a stop request (SIGTERM, Ctrl-C): save a checkpoint and exit."""


def flat_settings(cfg):
    """{"section.key": value} of a config's settings."""
    return {f"{section}.{key}": value for section, values in cfg.to_dict().items() for key, value in values.items()}


def configured(config_class, config, overrides):
    """The config of `config` (a path, a shipped name, or a `config_class` instance) with the command-line
    overrides of its train section, checked, its schedule resolved against the final budget (a decay
    needs one) and its precision resolved (the snapshot records what was used)."""
    from mt import schedule
    from mt.distribute import resolve_precision

    cfg = (config_class.from_dict(config.to_dict()) if isinstance(config, config_class)
           else config_class.load(config))
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg.train, key, value)
    cfg.check()
    schedule.resolve(cfg.train.schedule, cfg.train.max_steps, cfg.train.max_minutes)
    cfg.train.precision = resolve_precision(cfg.train.precision)
    return cfg


def config_to_resume(run_folder, config_class, config, overrides, safe_changes):
    """The config a resumed run (its data already checked) trains with: its snapshot, or `config` when
    given, with the overrides; None when it has finished and nothing changed (check_resumed_settings)."""
    stored = run_folder.load_config()
    requested = configured(config_class, config if config else stored, overrides)
    return requested if check_resumed_settings(run_folder, stored, requested, safe_changes) else None


def check_resumed_settings(run_folder, stored, requested, safe_changes):
    """Whether the run in `run_folder`, started with config `stored`, goes on with config `requested`:
    True to train, False when it has finished and nothing changed (said so on stdout).

    Keys of `safe_changes` (budget and pacing) may change, with a message; any other change, or any change
    to a finished run, is a UserError suggesting --restart or a new --out."""
    before, after = flat_settings(stored), flat_settings(requested)
    changed = [key for key in after if before.get(key) != after[key]]
    unsafe = [key for key in changed if key not in safe_changes]
    described = ", ".join(f"{key} {before.get(key)!r} -> {after[key]!r}" for key in changed)
    if unsafe:
        raise UserError(f"{run_folder.path} was started with other settings, which a resumed run cannot change "
                        f"({described}): {RESTART_HINT}")
    done = run_folder.done()
    if done is not None:
        if changed:
            raise UserError(f"{run_folder.path}: the run finished at step {done['step']} ({done['reason']}) "
                            f"with other settings ({described}): {RESTART_HINT}")
        click.echo(f"{run_folder.path}: run already finished at step {done['step']} ({done['reason']}); "
                   "nothing to do")
        return False
    if changed:
        click.echo(f"{run_folder.path}: resuming with changed settings: {described}", err=True)
    return True


def checkpoint_files(run):
    """(the run folder's checkpoint prefixes with an index file, newest first; whether its checkpoints
    folder holds any checkpoint file at all). Read from the files themselves: the `checkpoint` state file
    may be damaged or lag."""
    try:
        names = os.listdir(run.checkpoints_dir)
    except FileNotFoundError:
        return [], False
    steps = sorted((int(m.group(1)) for m in (re.fullmatch(r"ckpt-(\d+)\.index", n) for n in names) if m),
                   reverse=True)
    return ([os.path.join(run.checkpoints_dir, f"ckpt-{step}") for step in steps],
            any(n.startswith("ckpt-") for n in names))


def drop_damaged_state_file(run_folder, say):
    """Remove a run folder's checkpoint state file that cannot be read: the checkpoints themselves say
    which exist (see checkpoint_files), and the next save writes a new state file."""
    import tensorflow as tf

    try:
        tf.train.get_checkpoint_state(run_folder.checkpoints_dir)
    except (tf.errors.OpError, UnicodeDecodeError, ValueError) as e:
        path = run_folder.checkpoint_state_path
        say(f"warning: {path} cannot be read ({str(e).splitlines()[0][:120]}); it is rebuilt from the "
            "checkpoint files")
        os.remove(path)


def restore_newest(run, required, checkpoint, say):
    """Restore `checkpoint` (a tf.train.Checkpoint) from the newest checkpoint of the run folder `run` that
    reads, and return its path; None when it holds no checkpoint file at all (a new run).

    `required` is a tf.train.Checkpoint of the objects that must come back whole (the model and its
    optimizer): a checkpoint of another model is a UserError, not a half-restored run. A damaged newest
    checkpoint falls back to the one before, with a warning; none reading is a UserError, never a silent
    new run at step 0."""
    import tensorflow as tf

    candidates, any_files = checkpoint_files(run)
    damaged = []
    for path in candidates:
        try:
            check = required.restore(path)
            check.assert_existing_objects_matched()
            check.expect_partial()  # (what it leaves, the counters and RNG states, is restored next)
            checkpoint.restore(path).expect_partial()
        except (AssertionError, ValueError) as e:
            raise UserError(f"{path} does not hold this model's weights ({str(e).splitlines()[0][:200]}): "
                            "it was written by another model or version; train into a new --out") from None
        except (tf.errors.OpError, IndexError, OSError) as e:  # a truncated or missing file: try the one before
            damaged.append((path, str(e).splitlines()[0][:200]))
            continue
        if damaged:
            say(f"warning: checkpoint {os.path.basename(damaged[0][0])} cannot be read ({damaged[0][1]}); "
                f"resuming from the older {os.path.basename(path)}")
        return path
    if any_files:
        why = f" ({damaged[0][1]})" if damaged else " (no index file)"
        raise UserError(f"no checkpoint in {run.checkpoints_dir} can be read{why}: restore them from a copy, or "
                        "run with --restart to start the run again")
    return None


class Stoppable:
    """SIGTERM and Ctrl-C for a trainer's loop (a trainer has `log`, `count` and `_save_checkpoint`): inside
    `stop_requests()` the first asks the loop to stop after its step (`stop_requested`), a second one, while
    a step or a validation still runs, stops at once; `interrupted()` then writes the checkpoint."""

    stop_requested = False

    def stop_requests(self):
        self.stop_requested = False
        return stop_signals_handled_by(self._request_stop)

    def _request_stop(self, signum, frame):
        if self.stop_requested:
            raise Stop()
        self.stop_requested = True
        self.log.say(f"\n{signal.Signals(signum).name}: stopping after this step (again to stop at once)")

    def interrupted(self):
        """Save a checkpoint after a stop (Stop or KeyboardInterrupt caught by the loop), then raise
        KeyboardInterrupt: a further Ctrl-C or SIGTERM must not cut the checkpoint short, so both wait."""
        with signals_held():
            self._save_checkpoint()
            self.log.flush()
        self.log.say(f"\ninterrupted at step {self.count('step')}: checkpoint saved; run the same command again "
                     "to resume")
        raise KeyboardInterrupt from None


def signals_held():
    """Ignore SIGINT and SIGTERM while the block runs (a checkpoint being written after a stop request),
    then restore their handlers: a further Ctrl-C must not cut the checkpoint short."""
    return stop_signals_handled_by(signal.SIG_IGN)


@contextlib.contextmanager
def stop_signals_handled_by(handler):
    """SIGINT and SIGTERM go to `handler` while the block runs; their handlers are restored after."""
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
