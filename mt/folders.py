"""The two folders data flows through, and every file name in them.

    DataFolder   written by `mt preprocess`, read by `mt train`:
                 manifest.json (written last: a folder without it is incomplete), the tokenizers
                 src.spm.model and tgt.spm.model, id shards train.NNN.npz and dev.NNN.npz (mt/shards.py),
                 the cleaned dev text dev.src.txt and dev.tgt.txt
    RunFolder    written by `mt train`, read by translate, inspect and the pipeline:
                 config.yaml (the settings used), data.json (vocabulary sizes and where the data came
                 from), the tokenizers, weights/best.weights.h5 and weights/last.weights.h5,
                 checkpoints/ (for resuming), metrics.jsonl, tb/ (TensorBoard), done.json (written when
                 the run has finished)
    LMRunFolder  written by `mt lm train`, read by `mt lm sample|evaluate` and `mt inspect cells`: a
                 run folder without tokenizers, whose data.json describes the texts ("kind": "lm") and
                 whose vocab.json holds the model's characters or bytes
    ExportFolder written by `mt export`, read by TensorFlow alone (and `mt.load`): a SavedModel
                 (saved_model.pb, variables/) and assets.extra/mt-export.json, what it was exported from
                 and with which search settings

No other module spells these names: they ask a folder object for its paths and records. Records are
JSON, read with one-line errors naming the file, and written atomically and durably (mt/atomic.py).
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket

from mt.atomic import atomic_path, write_json
from mt.errors import UserError

MANIFEST_FORMAT = 1
SIDES = ("src", "tgt")


def read_json(path, what):
    """The JSON object in `path`; a missing, unreadable or malformed file is a one-line UserError."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise UserError(f"{path} not found: {what}") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path} is damaged (not valid JSON: {str(e).splitlines()[0]}): {what}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is damaged (not a JSON object): {what}")
    return value


def bare_name(name, where):
    """`name` if it is a plain file name (no folder part, not hidden, not . or ..), else a UserError: a
    folder's records may only name files inside that folder."""
    if (not isinstance(name, str) or not name or name in (".", "..") or name.startswith(".")
            or os.path.basename(name) != name or "/" in name or "\\" in name or "\0" in name):
        raise UserError(f"{where}: {name!r} is not a file name inside the folder; run `mt preprocess` again")
    return name


class DataFolder:
    """A prepared data folder."""

    MANIFEST = "manifest.json"
    TOKENIZERS = {"src": "src.spm.model", "tgt": "tgt.spm.model"}
    DEV_TEXT = {"src": "dev.src.txt", "tgt": "dev.tgt.txt"}

    def __init__(self, path):
        self.path = os.fspath(path)
        self._manifest = None

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def manifest_path(self):
        return self.file(self.MANIFEST)

    def is_complete(self):
        return os.path.isfile(self.manifest_path)

    def manifest(self):
        """The manifest, checked: its format, and the file names it gives (bare names in this folder)."""
        if self._manifest is None:
            if not self.is_complete():
                raise UserError(f"{self.path} is not a prepared data folder (no {self.MANIFEST}): run "
                                "`mt preprocess` first")
            manifest = read_json(self.manifest_path, "run `mt preprocess` again")
            where = self.manifest_path
            if manifest.get("format") != MANIFEST_FORMAT:
                raise UserError(f"{where}: format {manifest.get('format')!r}, this mt reads format "
                                f"{MANIFEST_FORMAT}: run `mt preprocess` again")
            try:
                for side in SIDES:
                    bare_name(manifest["tokenizers"][side], where)
                    int(manifest["vocab"][side])
                for split in ("train", "dev"):
                    for name in manifest["splits"][split]["shards"]:
                        bare_name(name, where)
                for name in (manifest.get("dev_text") or {}).values():
                    bare_name(name, where)
            except (KeyError, TypeError, ValueError) as e:
                raise UserError(f"{where} is damaged (missing or wrong entry {e}): run `mt preprocess` "
                                "again") from None
            self._manifest = manifest
        return self._manifest

    # -- paths, from the manifest once it exists ------------------------------------------------------

    def tokenizer_path(self, side):
        return self.file(self.manifest()["tokenizers"][side])

    def new_tokenizer_path(self, side):
        """Where preprocess writes the tokenizer of `side`."""
        return self.file(self.TOKENIZERS[side])

    def shard_names(self, split):
        splits = self.manifest()["splits"]
        if split not in splits:
            raise UserError(f"{self.manifest_path} has no split {split!r} (it has: {', '.join(sorted(splits))})")
        return list(splits[split]["shards"])

    def dev_text_path(self, side):
        """The cleaned dev text of `side`, or None when the manifest lists none."""
        names = self.manifest().get("dev_text")
        return self.file(names[side]) if names else None

    def fingerprint(self):
        """A hash of the manifest and the tokenizers: what a run trained on this folder depends on. Any
        rerun of `mt preprocess` with another corpus or other settings changes it."""
        digest = hashlib.sha256()
        for path in (self.manifest_path, *(self.tokenizer_path(side) for side in SIDES)):
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise UserError(f"cannot read {path}: {e.strerror or e}; run `mt preprocess` again") from None
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
        return digest.hexdigest()

    def new_dev_text_path(self, side):
        return self.file(self.DEV_TEXT[side])

    def vocab_sizes(self):
        vocab = self.manifest()["vocab"]
        return int(vocab["src"]), int(vocab["tgt"])

    def read_split(self, split):
        """(source sequences, target sequences) of a split, from its shards in order."""
        from mt.shards import read_split

        return read_split(self.path, self.shard_names(split))

    # -- writing (preprocess) -------------------------------------------------------------------------

    def write_manifest(self, manifest):
        write_json(self.manifest_path, manifest)
        self._manifest = None

    def remove_shards(self):
        """Remove the shards of an earlier preprocess run (any train.NNN.npz or dev.NNN.npz)."""
        from mt.shards import is_shard_name

        for name in os.listdir(self.path):
            if is_shard_name(name):
                os.remove(self.file(name))

    def remove_manifest(self):
        """First step of a rewrite: the folder stops looking complete."""
        if os.path.exists(self.manifest_path):
            os.remove(self.manifest_path)
        self._manifest = None


class RunFolder:
    """A run folder: one training run, and everything translate needs."""

    CONFIG = "config.yaml"
    DATA_INFO = "data.json"
    DONE = "done.json"
    METRICS = "metrics.jsonl"
    WEIGHTS = "weights"
    CHECKPOINTS = "checkpoints"
    TENSORBOARD = "tb"
    TOKENIZERS = {"src": "src.spm.model", "tgt": "tgt.spm.model"}
    WEIGHT_NAMES = ("best", "last")
    WEIGHTS_SUFFIX = ".weights.h5"  # Keras saves weights only under a name with this ending
    LOCK = ".lock"
    CHECKPOINT_STATE = "checkpoint"  # in checkpoints/: tf.train.CheckpointManager's list of checkpoints
    COMMAND = "mt train"  # what writes such a folder, as the lock names its holder

    def __init__(self, path):
        self.path = os.fspath(path)

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def config_path(self):
        return self.file(self.CONFIG)

    @property
    def data_info_path(self):
        return self.file(self.DATA_INFO)

    @property
    def done_path(self):
        return self.file(self.DONE)

    @property
    def metrics_path(self):
        return self.file(self.METRICS)

    @property
    def checkpoints_dir(self):
        return self.file(self.CHECKPOINTS)

    @property
    def checkpoint_state_path(self):
        return os.path.join(self.checkpoints_dir, self.CHECKPOINT_STATE)

    @property
    def tensorboard_dir(self):
        return self.file(self.TENSORBOARD)

    @property
    def weights_dir(self):
        return self.file(self.WEIGHTS)

    def tokenizer_path(self, side):
        return self.file(self.TOKENIZERS[side])

    def weights_path(self, name):
        return os.path.join(self.weights_dir, name + self.WEIGHTS_SUFFIX)

    # -- records --------------------------------------------------------------------------------------

    def is_run(self):
        return os.path.isfile(self.data_info_path)

    def data_info(self):
        if not self.is_run():
            raise UserError(f"{self.path} is not a run folder (no {self.DATA_INFO}): train one with `mt train`")
        return read_json(self.data_info_path, "train the run again with `mt train`")

    def write_data_info(self, info):
        write_json(self.data_info_path, info)

    def vocab_sizes(self):
        info = self.data_info()
        if info.get("kind") == LMRunFolder.KIND:
            raise UserError(f"{self.path} holds a language model (`mt lm train`), not a translation model: use "
                            "`mt lm sample`, `mt lm evaluate` or `mt inspect cells` with it")
        try:
            return int(info["src_vocab"]), int(info["tgt_vocab"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{self.data_info_path} is damaged (no vocabulary sizes): train the run again") from None

    def done(self):
        """The record of a finished run, or None while it is unfinished."""
        if not os.path.exists(self.done_path):
            return None
        return read_json(self.done_path, f"delete it to let `mt train` finish the run again")

    def write_done(self, info):
        write_json(self.done_path, info)

    def clear(self):
        """Remove everything a run wrote (records, tokenizers, weights, checkpoints, logs), so that the
        folder starts a new run; the lock file stays, since its holder is the caller."""
        for name in (self.CONFIG, self.DATA_INFO, self.DONE, self.METRICS, *self.TOKENIZERS.values()):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.file(name))
        for name in (self.WEIGHTS, self.CHECKPOINTS, self.TENSORBOARD):
            shutil.rmtree(self.file(name), ignore_errors=True)

    def has_config(self):
        return os.path.isfile(self.config_path)

    def load_config(self):
        from mt.config import Config

        return Config.load(self.config_path)

    def save_config(self, config):
        config.save(self.config_path)

    @contextlib.contextmanager
    def lock(self):
        """Hold the run folder for this process while the block runs; a second holder is refused at once
        with a UserError naming the process that holds it."""
        fd = self.hold()
        try:
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def hold(self):
        """Take the run folder's lock for this process and return its file descriptor, whose closing
        releases it; a UserError naming the holder when another process holds it.

        An advisory lock (flock) on a file in the folder: the kernel releases it when its holder exits in
        any way, SIGKILL included, so a crashed run never leaves the folder locked."""
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(self.file(self.LOCK), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"{self.path} is in use by {holder}: wait for that run to end or stop it, or "
                            "train into another --out") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"`{self.COMMAND}` (process {os.getpid()} on {socket.gethostname()})\n".encode(), 0)
        except OSError:
            os.close(fd)
            raise
        return fd

    # -- weights and tokenizers -----------------------------------------------------------------------

    def existing_weights(self, name="best"):
        """The weights file `name`, or the other one when it does not exist yet; a UserError without any.

        `name` may also be the path of a weights file (one `mt average` wrote), used as it is."""
        if self.is_weights_file_name(name):
            if not os.path.isfile(name):
                raise UserError(f"weights file {name} not found")
            return name
        if name not in self.WEIGHT_NAMES:
            raise UserError(f"unknown weights {name!r}: choose one of {', '.join(self.WEIGHT_NAMES)} or a "
                            f"path to a {self.WEIGHTS_SUFFIX} file")
        for candidate in (name, *[n for n in self.WEIGHT_NAMES if n != name]):
            if os.path.exists(self.weights_path(candidate)):
                return self.weights_path(candidate)
        raise UserError(f"{self.path} holds no weights yet ({self.WEIGHTS}/{name}{self.WEIGHTS_SUFFIX}): let training "
                        "reach its first validation")

    SCORE_ATTRIBUTE = "mt_validation_score"

    @classmethod
    def is_weights_file_name(cls, name):
        """`name` names a weights file (it ends in the suffix Keras needs), not one of WEIGHT_NAMES."""
        return str(name).endswith(cls.WEIGHTS_SUFFIX)

    def save_weights(self, model, name, score=None):
        """Save the model's weights as `name`, atomically and durably; `score` (the validation score of
        these weights) is kept inside the same file, so weights and score never disagree."""
        os.makedirs(self.weights_dir, exist_ok=True)
        self.save_weights_file(model, self.weights_path(name), score)

    @classmethod
    def save_weights_file(cls, model, path, score=None):
        """Save the model's weights to `path` (a name ending in WEIGHTS_SUFFIX), atomically and durably,
        with `score` among its attributes when given."""
        if not cls.is_weights_file_name(path):
            raise UserError(f"{path}: a weights file name must end in {cls.WEIGHTS_SUFFIX}")
        with atomic_path(path) as tmp:
            staged = tmp + cls.WEIGHTS_SUFFIX  # a temporary name Keras accepts, in the same folder
            try:
                model.save_weights(staged)
                if score is not None:
                    import h5py

                    with h5py.File(staged, "a") as f:
                        f.attrs[cls.SCORE_ATTRIBUTE] = float(score)
                os.replace(staged, tmp)
            finally:
                if os.path.exists(staged):
                    os.remove(staged)

    def weights_score(self, name="best"):
        """The validation score recorded in the weights file `name`, or None (no file, no score, or a file
        that cannot be read)."""
        path = self.weights_path(name)
        if not os.path.exists(path):
            return None
        try:
            import h5py

            with h5py.File(path, "r") as f:
                value = f.attrs.get(self.SCORE_ATTRIBUTE)
        except (OSError, ValueError):
            return None
        return None if value is None else float(value)

    def copy_tokenizers(self, data_folder, missing_only=False):
        """Copy the data folder's tokenizers in (replacing any older copy, or with `missing_only` only
        those the run folder lacks), after checking that each loads as a SentencePiece model with mt's
        special ids."""
        from mt.atomic import write_bytes
        from mt.tokenizer import Tokenizer

        for side in SIDES:
            if missing_only and os.path.exists(self.tokenizer_path(side)):
                continue
            source = data_folder.tokenizer_path(side)
            Tokenizer(source)  # a UserError unless it is a SentencePiece model with mt's ids
            with open(source, "rb") as f:
                write_bytes(self.tokenizer_path(side), f.read())

    def tokenizers(self):
        from mt.tokenizer import Tokenizer

        return tuple(Tokenizer(self.tokenizer_path(side)) for side in SIDES)


class LMRunFolder(RunFolder):
    """The run folder of a character language model (`mt lm train`): the records, weights, checkpoints
    and logs of a RunFolder, no tokenizers, and the vocabulary of the model (`vocab.json`)."""

    VOCAB = "vocab.json"
    KIND = "lm"  # data.json's "kind"
    TOKENIZERS = {}
    COMMAND = "mt lm train"

    @property
    def vocab_path(self):
        return self.file(self.VOCAB)

    def is_lm(self):
        """The folder holds (or is training) a language model."""
        return os.path.isfile(self.vocab_path)

    def data_info(self):
        if not self.is_run():
            raise UserError(f"{self.path} is not a language model's run folder (no {self.DATA_INFO}): train one "
                            "with `mt lm train`")
        info = read_json(self.data_info_path, "train the run again with `mt lm train --restart`")
        if info.get("kind") != self.KIND:
            raise UserError(f"{self.path} holds a translation model, not a language model: give the run folder "
                            "of `mt lm train`")
        return info

    def load_config(self):
        from mt.lm.config import LMConfig

        return LMConfig.load(self.config_path)

    def read_vocab(self):
        """The vocabulary record (see mt/lm/vocab.py)."""
        if not os.path.isfile(self.vocab_path):
            self.data_info()  # the clearer error when the folder is not a language model's
            raise UserError(f"{self.vocab_path} not found: train the run again with `mt lm train --restart`")
        return read_json(self.vocab_path, "train the run again with `mt lm train --restart`")

    def write_vocab(self, record):
        write_json(self.vocab_path, record)

    def clear(self):
        super().clear()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.vocab_path)


class ExportFolder:
    """A folder written by `mt export`: a TensorFlow SavedModel and the record of how it was made.

    The record lies in assets.extra/, the SavedModel's place for files its graph does not read (TensorFlow
    Serving copies the folder with the model and ignores them)."""

    SAVED_MODEL = "saved_model.pb"
    EXTRA = "assets.extra"
    RECORD = "mt-export.json"

    def __init__(self, path):
        self.path = os.fspath(path)

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def record_path(self):
        return os.path.join(self.path, self.EXTRA, self.RECORD)

    def is_export(self):
        """The folder holds a SavedModel with mt's record beside it."""
        return os.path.isfile(self.file(self.SAVED_MODEL)) and os.path.isfile(self.record_path)

    def write_record(self, record):
        os.makedirs(os.path.dirname(self.record_path), exist_ok=True)
        write_json(self.record_path, record)

    def record(self):
        if not self.is_export():
            raise UserError(f"{self.path} is not a folder written by `mt export` (no {self.SAVED_MODEL} with "
                            f"{self.EXTRA}/{self.RECORD}): export a run with `mt export --model RUN --out DIR`")
        return read_json(self.record_path, "export the run again with `mt export`")
