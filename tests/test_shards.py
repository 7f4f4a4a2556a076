"""Id shards: write/read round trips, several shards, empty sequences and splits."""

import numpy as np
import pytest

from mt.errors import UserError
from mt.shards import pack, read_split, unpack, write_split


def random_seqs(count, seed):
    """`count` seeded id lists of 0 to 11 ids."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 50_000, size=rng.integers(0, 12)).tolist() for _ in range(count)]


def assert_same(arrays, lists):
    """Arrays read back are int32 and hold the ids written."""
    assert len(arrays) == len(lists)
    for array, expected in zip(arrays, lists):
        assert array.dtype == np.int32
        assert array.tolist() == list(expected)


def test_round_trip_over_several_shards(tmp_path):
    src, tgt = random_seqs(30, 1), random_seqs(30, 2)
    src[3], tgt[17] = [], []
    names = write_split(tmp_path, "train", src, tgt, shard_size=7)
    assert names == [f"train.{k:03d}.npz" for k in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no temporary files left
    got_src, got_tgt = read_split(tmp_path, names)
    assert_same(got_src, src)
    assert_same(got_tgt, tgt)
    assert len(got_src[3]) == 0 and len(got_tgt[17]) == 0


def test_shard_arrays_are_flat_ids_and_offsets(tmp_path):
    write_split(tmp_path, "dev", [[5, 6], [], [7]], [[1], [2, 3], []])
    with np.load(tmp_path / "dev.000.npz") as data:
        assert data["src_ids"].dtype == np.int32 and data["src_offsets"].dtype == np.int64
        assert data["src_ids"].tolist() == [5, 6, 7]
        assert data["src_offsets"].tolist() == [0, 2, 2, 3]
        assert data["tgt_offsets"].tolist() == [0, 1, 3, 3]


def test_empty_split_still_has_one_shard(tmp_path):
    names = write_split(tmp_path, "dev", [], [])
    assert names == ["dev.000.npz"]
    assert read_split(tmp_path, names) == ([], [])


def test_errors(tmp_path):
    with pytest.raises(ValueError):
        write_split(tmp_path, "train", [[1]], [])
    with pytest.raises(UserError, match="not found"):
        read_split(tmp_path, ["train.000.npz"])


def test_pack_unpack(tmp_path):
    ids, offsets = pack([[1, 2], [], [3]])
    assert offsets.tolist() == [0, 2, 2, 3]
    assert [a.tolist() for a in unpack(ids, offsets)] == [[1, 2], [], [3]]
