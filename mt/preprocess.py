"""`mt preprocess`: check, clean and filter a parallel corpus, train SentencePiece, write a prepared data folder.

The folder holds `src.spm.model` and `tgt.spm.model` (identical files with --joint), id shards
(`train.000.npz`, ..., `dev.000.npz`, see mt/shards.py), the cleaned dev text (`dev.src.txt`, `dev.tgt.txt`)
and `manifest.json`, written last: a folder without it is incomplete. A rerun removes the old manifest
before it writes anything, so a failed rerun never leaves a folder that looks complete.

Cleaning rules:
- Whitespace: leading/trailing whitespace is removed and every run of Unicode whitespace (tabs, non-breaking
  spaces, carriage returns, line/paragraph separators, ...) becomes one space. No Unicode normalization is
  done here: SentencePiece applies NFKC (its `nmt_nfkc` rule) itself, the same way at training and at
  translation time, and the dev reference text stays as written.
- A pair is dropped if either side is empty, or (training data only) if either side has more than
  `max_len` words, or if the word-count ratio longer/shorter exceeds `max_ratio`. The ratio test applies only
  when the longer side has at least RATIO_MIN_WORDS words, so short pairs such as "Sí ." / "Yes , sure ."
  survive, while a one-word line aligned with a 40-word line does not. A dropped pair is counted once,
  under the first reason that applies (empty, then too_long, then ratio).
- Words are whitespace-separated tokens; each Chinese/Japanese (Han, kana) character also counts as one
  word, so text written without spaces is not seen as one giant word.
- Dev data (given, or held out) gets the same whitespace cleaning and loses empty pairs, but no length or
  ratio filtering: it should look like real input.
"""

import collections
import itertools
import os
import re
import shutil
import sys
from dataclasses import dataclass

import click
import numpy as np

from mt import __version__
from mt.atomic import atomic_open, atomic_path
from mt.errors import UserError
from mt.folders import DataFolder
from mt.shards import DEFAULT_SHARD_SIZE, write_split
from mt.textio import LineReader
from mt.tokenizer import Tokenizer, check_vocab_size, train_tokenizer

FORMAT = 1
RATIO_MIN_WORDS = 6
ENCODE_BATCH = 20_000
PROGRESS_STEP = 20_000
INVALID_FIX = "fix the file or pass --on-invalid replace"
CJK_CHAR = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class Corpus:
    """Where a split's pairs come from: two aligned text files, or one TSV file."""

    src: str = None
    tgt: str = None
    tsv: str = None

    def files(self):
        """(role suffix, path) of each input file."""
        return [("tsv", self.tsv)] if self.tsv else [("src", self.src), ("tgt", self.tgt)]


# ---------------------------------------------------------------- options and inputs

def resolve_corpus(src, tgt, tsv, prefix, required):
    """Check one split's input options; return a Corpus, or None if the split is optional and not given."""
    src_opt, tgt_opt, tsv_opt = f"--{prefix}src", f"--{prefix}tgt", f"--{prefix}tsv"
    if tsv and (src or tgt):
        raise UserError(f"pass either {tsv_opt} or {src_opt}/{tgt_opt}, not both")
    if tsv:
        return Corpus(tsv=os.fspath(tsv))
    if src and tgt:
        return Corpus(src=os.fspath(src), tgt=os.fspath(tgt))
    if src or tgt:
        given, missing = (src_opt, tgt_opt) if src else (tgt_opt, src_opt)
        raise UserError(f"{given} needs {missing}: pass both aligned files, or {tsv_opt} instead")
    if required:
        raise UserError("no training data: pass --src and --tgt (aligned text files), or --tsv")
    return None


def check_settings(out, vocab_size, max_len, max_ratio, dev_size, on_invalid):
    """Raise UserError for option values that cannot work."""
    if not out:
        raise UserError("pass --out, the prepared data folder to write")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file: pass a folder path")
    check_vocab_size(vocab_size)
    if max_len < 1:
        raise UserError(f"--max-len must be at least 1, got {max_len}")
    if max_ratio < 1:
        raise UserError(f"--max-ratio must be at least 1.0, got {max_ratio}")
    if dev_size < 1:
        raise UserError(f"--dev-size must be at least 1, got {dev_size}")
    if on_invalid not in ("error", "replace"):
        raise UserError(f"--on-invalid must be 'error' or 'replace', got {on_invalid!r}")


def check_files_exist(corpora):
    """Raise UserError naming the first input file that is missing or is a folder."""
    for corpus in corpora:
        for _, path in corpus.files():
            if not os.path.exists(path):
                raise UserError(f"file not found: {path}")
            if os.path.isdir(path):
                raise UserError(f"{path} is a folder: pass a text file")


def iter_tsv_pairs(reader):
    """Yield (source, target) from 'source<TAB>target' lines; a blank line is an empty pair (dropped as
    empty), any other tab count a UserError."""
    for line_no, line in enumerate(reader, 1):
        if not line.strip():
            yield "", ""
            continue
        tabs = line.count("\t")
        if tabs != 1:
            raise UserError(f"{reader.path}, line {line_no}: expected exactly one tab (source<TAB>target), "
                            f"found {tabs}")
        source, target = line.split("\t")
        yield source, target


def iter_aligned_pairs(src, tgt):
    """Yield (source, target) lines of two LineReaders; files of different lengths are a UserError,
    raised once both are read to their ends (so that it can give both counts)."""
    missing = object()
    uneven = False
    for source, target in itertools.zip_longest(src, tgt, fillvalue=missing):
        uneven = uneven or source is missing or target is missing
        if not uneven:
            yield source, target
    if uneven:
        raise UserError(f"{src.path} has {src.lines} lines but {tgt.path} has {tgt.lines}: "
                        "source and target files must be aligned line by line")


def open_pairs(corpus, on_invalid, replaced):
    """(the corpus's LineReaders, an iterator of its raw (source, target) pairs). Every input is read
    once, as the pairs are taken, so it may be a pipe; the readers know each file's lines and SHA-256
    once the pairs are exhausted."""
    if corpus.tsv:
        reader = LineReader(corpus.tsv, on_invalid, replaced, INVALID_FIX)
        return [reader], iter_tsv_pairs(reader)
    src, tgt = (LineReader(path, on_invalid, replaced, INVALID_FIX) for path in (corpus.src, corpus.tgt))
    return [src, tgt], iter_aligned_pairs(src, tgt)


def with_progress(items, readers, label):
    """Yield `items` while a progress bar on stderr follows the bytes the readers have read (no bar for
    an input of unknown size, such as a pipe)."""
    sizes = [os.path.getsize(r.path) if os.path.isfile(r.path) else None for r in readers]
    if None in sizes:
        click.echo(f"{label}...", err=True)
        yield from items
        return
    with click.progressbar(length=max(sum(sizes), 1), label=label, file=sys.stderr) as bar:
        shown = 0
        for number, item in enumerate(items, 1):
            yield item
            if number % PROGRESS_STEP == 0:
                now = sum(r.bytes for r in readers)
                bar.update(now - shown)
                shown = now
        bar.update(sum(r.bytes for r in readers) - shown)


# ---------------------------------------------------------------- cleaning

def normalize(text):
    """Strip and collapse every run of whitespace (any Unicode whitespace) to one space."""
    return " ".join(text.split())


def word_count(text):
    """Whitespace-separated words of normalized text; each Han or kana character counts as a word too."""
    if not text:
        return 0
    words = text.count(" ") + 1
    if CJK_CHAR.search(text):
        words += len(CJK_CHAR.findall(text))
    return words


def drop_reason(source, target, max_len, max_ratio):
    """Why a normalized pair is dropped ("empty", "too_long", "ratio"), or None to keep it.

    max_len None means no length or ratio filtering (dev data).
    """
    if not source or not target:
        return "empty"
    if max_len is None:
        return None
    src_words, tgt_words = word_count(source), word_count(target)
    longer, shorter = max(src_words, tgt_words), min(src_words, tgt_words)
    if longer > max_len:
        return "too_long"
    if longer >= RATIO_MIN_WORDS and longer > max_ratio * shorter:
        return "ratio"
    return None


def clean_pairs(pairs, max_len, max_ratio):
    """Normalize and filter pairs; return (sources, targets, dropped counts by reason)."""
    sources, targets = [], []
    dropped = {"empty": 0, "too_long": 0, "ratio": 0}
    for raw_source, raw_target in pairs:
        source, target = normalize(raw_source), normalize(raw_target)
        reason = drop_reason(source, target, max_len, max_ratio)
        if reason:
            dropped[reason] += 1
        else:
            sources.append(source)
            targets.append(target)
    return sources, targets, dropped


def read_corpus(corpus, on_invalid, replaced, max_len, max_ratio, label):
    """Read, check and clean one corpus; return (sources, targets, dropped counts, its LineReaders)."""
    readers, pairs = open_pairs(corpus, on_invalid, replaced)
    name = os.path.basename(corpus.tsv or corpus.src)
    sources, targets, dropped = clean_pairs(with_progress(pairs, readers, f"reading {label} ({name})"), max_len,
                                            max_ratio)
    return sources, targets, dropped, readers


def hold_out(sources, targets, dev_size, seed):
    """Split off a seeded random sample for dev: dev_size pairs, at most 10% of them, at least 1.

    Returns (train sources, train targets, dev sources, dev targets), both in corpus order.
    """
    count = len(sources)
    if count < 2:
        raise UserError(f"only {count} training pair(s) left after cleaning: need at least 2 to hold out a dev "
                        "pair, or pass a dev set with --dev-src/--dev-tgt or --dev-tsv")
    dev_count = max(1, min(dev_size, count // 10))
    is_dev = np.zeros(count, dtype=bool)
    is_dev[np.random.default_rng(seed).choice(count, size=dev_count, replace=False)] = True
    dev_index, train_index = np.flatnonzero(is_dev).tolist(), np.flatnonzero(~is_dev).tolist()
    return ([sources[i] for i in train_index], [targets[i] for i in train_index],
            [sources[i] for i in dev_index], [targets[i] for i in dev_index])


# ---------------------------------------------------------------- writing

def prepare_out(folder):
    """Create the out folder; remove a previous run's manifest (first, so it stops looking complete) and shards."""
    os.makedirs(folder.path, exist_ok=True)
    folder.remove_manifest()
    folder.remove_shards()


def train_tokenizers(folder, train_src, train_tgt, vocab_size, model_type, joint, seed):
    """Train the source and target SentencePiece models (or one joint model saved under both names)."""
    src_prefix = folder.new_tokenizer_path("src")[: -len(".model")]
    tgt_path = folder.new_tokenizer_path("tgt")
    if joint:
        click.echo(f"training tokenizer (joint, {model_type}, vocab {vocab_size})...", err=True)
        src_path = train_tokenizer(itertools.chain(train_src, train_tgt), src_prefix, vocab_size, model_type,
                                   seed)
        with atomic_path(tgt_path) as tmp:
            shutil.copyfile(src_path, tmp)
    else:
        click.echo(f"training tokenizer (source, {model_type}, vocab {vocab_size})...", err=True)
        src_path = train_tokenizer(train_src, src_prefix, vocab_size, model_type, seed)
        click.echo(f"training tokenizer (target, {model_type}, vocab {vocab_size})...", err=True)
        train_tokenizer(train_tgt, tgt_path[: -len(".model")], vocab_size, model_type, seed)
    return Tokenizer(src_path), Tokenizer(tgt_path)


def tokenizer_sources(source):
    """{side: path} of the tokenizers of `source`, a run folder or a prepared data folder, each checked to
    load as mt's SentencePiece model."""
    from mt.folders import RunFolder

    run, data = RunFolder(source), DataFolder(source)
    if run.is_run():
        paths = {side: run.tokenizer_path(side) for side in ("src", "tgt")}
    elif data.is_complete():
        paths = {side: data.tokenizer_path(side) for side in ("src", "tgt")}
    else:
        raise UserError(f"--tokenizers-from {source}: neither a run folder (no {RunFolder.DATA_INFO}) nor a "
                        f"prepared data folder (no {DataFolder.MANIFEST})")
    for path in paths.values():
        Tokenizer(path)
    return paths


def reuse_tokenizers(folder, source, paths):
    """Copy the tokenizers `paths` of `source` into `folder`, so that a new corpus is encoded with the pieces
    a trained model knows."""
    from mt.atomic import write_bytes

    for side, path in paths.items():
        with open(path, "rb") as f:
            write_bytes(folder.new_tokenizer_path(side), f.read())
    click.echo(f"tokenizers: those of {source} (no new ones trained)", err=True)
    return Tokenizer(folder.new_tokenizer_path("src")), Tokenizer(folder.new_tokenizer_path("tgt"))


class EncodedTexts:
    """A split's texts as id sequences, encoded a slice at a time when `write_split` takes that slice, so
    only one shard's ids are in memory at once; the lengths of what was encoded are kept."""

    def __init__(self, tokenizer, texts, bar):
        self.tokenizer, self.texts, self.bar, self.lengths = tokenizer, texts, bar, []

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, part):
        texts, seqs = self.texts[part], []
        for start in range(0, len(texts), ENCODE_BATCH):
            batch = self.tokenizer.encode(texts[start:start + ENCODE_BATCH])
            seqs.extend(batch)
            self.bar.update(len(batch))
        self.lengths.extend(len(seq) for seq in seqs)
        return seqs


def length_stats(lengths):
    """Mean, max and 95th percentile of sequence lengths."""
    if len(lengths) == 0:
        return {"mean": 0.0, "max": 0, "p95": 0.0}
    return {"mean": round(float(np.mean(lengths)), 2), "max": int(np.max(lengths)),
            "p95": round(float(np.percentile(lengths, 95)), 2)}


def write_encoded_split(folder, split, sources, targets, tokenizers, shard_size=DEFAULT_SHARD_SIZE):
    """Encode a split and write its shards; return its manifest entry."""
    src_tok, tgt_tok = tokenizers
    with click.progressbar(length=max(2 * len(sources), 1), label=f"encoding {split} ({len(sources):,} pairs)",
                           file=sys.stderr) as bar:
        src, tgt = EncodedTexts(src_tok, sources, bar), EncodedTexts(tgt_tok, targets, bar)
        names = write_split(folder.path, split, src, tgt, shard_size)
    src_lengths, tgt_lengths = np.array(src.lengths, np.int64), np.array(tgt.lengths, np.int64)
    return {"pairs": len(sources), "shards": names,
            "src_tokens": int(src_lengths.sum()), "tgt_tokens": int(tgt_lengths.sum()),
            "src_len": length_stats(src_lengths), "tgt_len": length_stats(tgt_lengths)}


def write_lines(path, lines):
    """Write lines, one a line, atomically."""
    with atomic_open(path) as f:
        for line in lines:
            f.write(line)
            f.write("\n")


def source_info(readers, replaced):
    """Manifest entries for the input files: role, SHA-256, line count, lines with replaced bytes."""
    return {reader.path: {"role": role, "sha256": reader.sha256, "lines": reader.lines,
                          "replaced_lines": replaced[reader.path]} for role, reader in readers}


# ---------------------------------------------------------------- the stage

@dataclass
class Prepared:
    """Cleaned text of both splits, with what was dropped."""

    train_src: list
    train_tgt: list
    dev_src: list
    dev_tgt: list
    kept: int  # training pairs that passed cleaning (before a dev sample was held out)
    dropped: dict
    dev_dropped: dict
    dev_origin: str
    readers: list  # (role, LineReader) of every input file, read


def load_data(corpora, max_len, max_ratio, dev_size, seed, on_invalid, replaced):
    """Read and clean the training (and dev) corpora, holding out a dev sample if no dev set is given."""
    train_src, train_tgt, dropped, readers = read_corpus(corpora["train"], on_invalid, replaced, max_len,
                                                         max_ratio, "training data")
    read = [(f"train.{role}", reader) for (role, _), reader in zip(corpora["train"].files(), readers)]
    if "dev" not in corpora:
        kept = len(train_src)
        train_src, train_tgt, dev_src, dev_tgt = hold_out(train_src, train_tgt, dev_size, seed)
        return Prepared(train_src, train_tgt, dev_src, dev_tgt, kept, dropped, {"empty": 0}, "held-out", read)
    dev_src, dev_tgt, dev_dropped, readers = read_corpus(corpora["dev"], on_invalid, replaced, None, None,
                                                         "dev data")
    read += [(f"dev.{role}", reader) for (role, _), reader in zip(corpora["dev"].files(), readers)]
    if not train_src:
        raise UserError(f"no training pairs left after cleaning (dropped: {format_dropped(dropped)}): "
                        "check the input files, or raise --max-len / --max-ratio")
    if not dev_src:
        raise UserError(f"no dev pairs left after removing {dev_dropped['empty']} empty ones: check the dev files")
    return Prepared(train_src, train_tgt, dev_src, dev_tgt, len(train_src), dropped,
                    {"empty": dev_dropped["empty"]}, "given", read)


def format_dropped(dropped):
    """'3 empty, 2 too long, 1 length ratio'."""
    return f"{dropped['empty']:,} empty, {dropped['too_long']:,} too long, {dropped['ratio']:,} length ratio"


def build_manifest(data, splits, tokenizers, settings, sources):
    """The manifest.json content."""
    src_tok, tgt_tok = tokenizers
    splits["dev"]["origin"] = data.dev_origin
    splits["dev"]["dropped"] = data.dev_dropped
    return {
        "format": FORMAT,
        "mt_version": __version__,
        "tokenizers": dict(DataFolder.TOKENIZERS),
        "vocab": {"src": src_tok.vocab_size, "tgt": tgt_tok.vocab_size, "joint": settings["joint"],
                  "model_type": settings["model_type"], "requested": settings["vocab_size"]},
        "splits": splits,
        "dropped": data.dropped,
        "sources": sources,
        "settings": settings,
        "dev_text": dict(DataFolder.DEV_TEXT),
    }


def print_summary(data, manifest, out, replaced):
    """Final summary lines on stderr."""
    echo = lambda text: click.echo(text, err=True)  # noqa: E731
    settings, splits, vocab = manifest["settings"], manifest["splits"], manifest["vocab"]
    echo(f"kept {data.kept:,} of {data.kept + sum(data.dropped.values()):,} training pairs; dropped "
         f"{data.dropped['empty']:,} empty, {data.dropped['too_long']:,} too long (> {settings['max_len']} words), "
         f"{data.dropped['ratio']:,} length ratio (> {settings['max_ratio']})")
    for path, count in replaced.items():
        if count:
            echo(f"replaced invalid UTF-8 in {count:,} lines of {path}")
    if data.dev_origin == "held-out":
        echo(f"dev: {len(data.dev_src):,} pairs held out from the training data (seed {settings['seed']})")
    else:
        echo(f"dev: {len(data.dev_src):,} pairs ({data.dev_dropped['empty']:,} empty pairs dropped)")
    kind = "joint" if vocab["joint"] else "separate"
    echo(f"vocabulary: src {vocab['src']:,}, tgt {vocab['tgt']:,} pieces ({vocab['model_type']}, {kind})")
    echo(f"mean length in pieces: train src {splits['train']['src_len']['mean']}, "
         f"tgt {splits['train']['tgt_len']['mean']}; dev src {splits['dev']['src_len']['mean']}, "
         f"tgt {splits['dev']['tgt_len']['mean']}")
    echo(f"wrote {out} (train {splits['train']['pairs']:,} pairs, dev {splits['dev']['pairs']:,} pairs)")


def run(src=None, tgt=None, tsv=None, dev_src=None, dev_tgt=None, dev_tsv=None, out=None, vocab_size=8000,
        model_type="unigram", joint=False, max_len=250, max_ratio=3.0, dev_size=1000, seed=1234,
        on_invalid="error", tokenizers_from=None):
    """Prepare a data folder from a parallel corpus; return the manifest (also written to out/manifest.json).

    `tokenizers_from`: a run or data folder whose tokenizers encode this corpus instead of new ones (the
    vocabulary options are then unused)."""
    check_settings(out, vocab_size, max_len, max_ratio, dev_size, on_invalid)
    corpora = {"train": resolve_corpus(src, tgt, tsv, "", required=True)}
    dev = resolve_corpus(dev_src, dev_tgt, dev_tsv, "dev-", required=False)
    if dev:
        corpora["dev"] = dev
    check_files_exist(corpora.values())
    reused = tokenizer_sources(tokenizers_from) if tokenizers_from else None
    from mt.atomic import check_writable_folder

    check_writable_folder(out, "the prepared data folder")  # before reading the corpus, not after
    replaced = collections.Counter()
    data = load_data(corpora, max_len, max_ratio, dev_size, seed, on_invalid, replaced)

    folder = DataFolder(out)
    prepare_out(folder)
    if tokenizers_from:
        tokenizers = reuse_tokenizers(folder, tokenizers_from, reused)
        joint = open(folder.new_tokenizer_path("src"), "rb").read() == open(folder.new_tokenizer_path("tgt"), "rb").read()
        model_type, vocab_size = "reused", None
    else:
        tokenizers = train_tokenizers(folder, data.train_src, data.train_tgt, vocab_size, model_type, joint, seed)
    splits = {"train": write_encoded_split(folder, "train", data.train_src, data.train_tgt, tokenizers),
              "dev": write_encoded_split(folder, "dev", data.dev_src, data.dev_tgt, tokenizers)}
    write_lines(folder.new_dev_text_path("src"), data.dev_src)
    write_lines(folder.new_dev_text_path("tgt"), data.dev_tgt)
    settings = {"src": src, "tgt": tgt, "tsv": tsv, "dev_src": dev_src, "dev_tgt": dev_tgt, "dev_tsv": dev_tsv,
                "vocab_size": vocab_size, "model_type": model_type, "joint": joint, "max_len": max_len,
                "max_ratio": max_ratio, "dev_size": dev_size, "seed": seed, "on_invalid": on_invalid,
                "ratio_min_words": RATIO_MIN_WORDS, "shard_size": DEFAULT_SHARD_SIZE,
                "tokenizers_from": os.path.abspath(tokenizers_from) if tokenizers_from else None}
    manifest = build_manifest(data, splits, tokenizers, settings, source_info(data.readers, replaced))
    folder.write_manifest(manifest)
    print_summary(data, manifest, out, replaced)
    return manifest
