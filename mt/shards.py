"""Token id shards: each `{split}.{k:03d}.npz` holds a slice of a split's sentence pairs as flat arrays.

A shard has four arrays: `src_ids` (int32, every source sentence's ids one after another), `src_offsets`
(int64, n + 1 entries: sentence i is `src_ids[src_offsets[i]:src_offsets[i + 1]]`), and the same two for the
target side. Shards are written uncompressed (fast to load; token ids compress poorly anyway) and atomically.
A data folder's manifest lists the shards of each split (mt/folders.py).
"""

import itertools
import os
import re
import zipfile

import numpy as np

from mt.atomic import atomic_open
from mt.errors import UserError

DEFAULT_SHARD_SIZE = 200_000
ARRAYS = ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets")
SHARD_NAME = re.compile(r"^(train|dev)\.\d{3}\.npz$")


def shard_name(split, index):
    """File name of shard `index` of `split`, e.g. train.000.npz."""
    return f"{split}.{index:03d}.npz"


def is_shard_name(name):
    """True for the name of a shard of the train or dev split."""
    return SHARD_NAME.match(name) is not None


def pack(seqs):
    """Flatten a list of id sequences to (int32 ids, int64 offsets of length n + 1)."""
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    ids = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int32, count=total)
    return ids, offsets


def unpack(ids, offsets):
    """Split flat ids by offsets into a list of int32 arrays (views, no copy)."""
    bounds = offsets.tolist()
    return [ids[start:end] for start, end in zip(bounds[:-1], bounds[1:])]


def write_shard(path, src, tgt):
    """Write one shard atomically from packed source and target: each an (ids, offsets) pair."""
    (src_ids, src_offsets), (tgt_ids, tgt_offsets) = src, tgt
    if len(src_offsets) != len(tgt_offsets):
        raise ValueError(f"{len(src_offsets) - 1} source but {len(tgt_offsets) - 1} target sequences")
    with atomic_open(path, "wb") as f:  # a file object: np.savez would add .npz to a temporary name
        np.savez(f, src_ids=np.asarray(src_ids, dtype=np.int32), src_offsets=np.asarray(src_offsets, np.int64),
                 tgt_ids=np.asarray(tgt_ids, dtype=np.int32), tgt_offsets=np.asarray(tgt_offsets, np.int64))


def write_split(folder, split, src_seqs, tgt_seqs, shard_size=DEFAULT_SHARD_SIZE):
    """Write aligned id sequences as shards of at most `shard_size` pairs; return the shard file names.

    The sequences may be any objects with len() and slicing that give lists of ids (preprocess encodes a
    slice when it is taken). An empty split still gets one (empty) shard, so every split has a file.
    """
    if len(src_seqs) != len(tgt_seqs):
        raise ValueError(f"{len(src_seqs)} source but {len(tgt_seqs)} target sequences")
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    names = []
    for index, start in enumerate(range(0, max(len(src_seqs), 1), shard_size)):
        name = shard_name(split, index)
        end = start + shard_size
        write_shard(os.path.join(folder, name), pack(src_seqs[start:end]), pack(tgt_seqs[start:end]))
        names.append(name)
    return names


def read_shard(path):
    """Read one shard: (source arrays, target arrays), each a list of int32 arrays."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ARRAYS}
    except FileNotFoundError:
        raise UserError(f"shard not found: {path}; run `mt preprocess` again") from None
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
        raise UserError(f"damaged shard: {path}; run `mt preprocess` again") from None
    src = unpack(arrays["src_ids"].astype(np.int32, copy=False), arrays["src_offsets"])
    tgt = unpack(arrays["tgt_ids"].astype(np.int32, copy=False), arrays["tgt_offsets"])
    return src, tgt


def read_split(folder, names):
    """Read the shards `names` of `folder`, in order; (source sequences, target sequences), two lists of
    int32 arrays. (A split's names are in the data folder's manifest: `DataFolder.read_split`.)"""
    src, tgt = [], []
    for name in names:
        shard_src, shard_tgt = read_shard(os.path.join(folder, name))
        src.extend(shard_src)
        tgt.extend(shard_tgt)
    return src, tgt
