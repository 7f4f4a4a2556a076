"""Training input: pairs of id sequences -> padded batches bucketed by length under a token budget.

A batch holds (src [B, S], tgt_in [B, T], tgt_out [B, T]) int32 arrays, padded with 0: tgt_in starts with
BOS, tgt_out ends with EOS. Batches are cut from length-sorted windows of shuffled pairs so that they hold
little padding, and their sizes follow a budget of padded target tokens. The order of an epoch depends
only on (seed, epoch), so a run can resume at any (epoch, batch) position and see the same data.
"""

import numpy as np

from mt.tokenizer import BOS, EOS, PAD


class Batcher:
    """Deterministic, resumable token-budget batches over a list of (src, tgt) id sequences."""

    def __init__(self, src, tgt, batch_tokens, max_len=None, seed=0, window_batches=64, multiple=1):
        src_len = np.array([len(s) for s in src], dtype=np.int64)
        tgt_len = np.array([len(t) for t in tgt], dtype=np.int64) + 1  # + BOS / EOS
        keep = (src_len > 0) & (tgt_len > 1)
        if max_len:
            keep &= (src_len <= max_len) & (tgt_len - 1 <= max_len)
        self.index = np.flatnonzero(keep)
        self.src, self.tgt = src, tgt
        self.src_len, self.tgt_len = src_len, tgt_len
        self.batch_tokens, self.seed, self.multiple = batch_tokens, seed, multiple
        mean_len = float(tgt_len[self.index].mean()) if len(self.index) else 1.0
        self.window = max(1, int(window_batches * batch_tokens / mean_len))

    @property
    def num_pairs(self):
        return len(self.index)

    def epoch_batches(self, epoch):
        """The batches of one epoch, each an array of pair indices, in training order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.index)
        batches = []
        for start in range(0, len(order), self.window):
            window = order[start:start + self.window]
            batches.extend(self._cut(self._sort(window)))
        rng.shuffle(batches)
        return batches

    def sorted_batches(self):
        """All pairs once, sorted by length (for evaluation: least padding, fixed order)."""
        return self._cut(self._sort(self.index))

    def _sort(self, pairs):
        """Pairs sorted by target length rounded up to the multiple, then by source length: target lengths
        are padded to the multiple anyway, and within one rounded length sorting by source length gives a
        batch sources of similar lengths, hence less source padding (docs/design.md)."""
        return pairs[np.lexsort((self.src_len[pairs], self._round(self.tgt_len[pairs])))]

    def _round(self, length):
        return -(-length // self.multiple) * self.multiple

    def _cut(self, ordered):
        """Cut length-sorted pairs into batches of at most batch_tokens padded target tokens
        (and at most 2 x batch_tokens padded source tokens), lengths rounded up to the multiple."""
        batches, start, max_t, max_s = [], 0, 0, 0
        for i, idx in enumerate(ordered):
            t = max(max_t, self._round(self.tgt_len[idx]))
            s = max(max_s, self._round(self.src_len[idx]))
            size = i - start + 1
            if size > 1 and (t * size > self.batch_tokens or s * size > 2 * self.batch_tokens):
                batches.append(ordered[start:i])
                start, t, s = i, self._round(self.tgt_len[idx]), self._round(self.src_len[idx])
            max_t, max_s = t, s
        if start < len(ordered):
            batches.append(ordered[start:])
        return batches

    def make_batch(self, indices):
        """Pair indices -> padded (src, tgt_in, tgt_out) int32 arrays, lengths rounded up to the multiple."""
        return pad_batch([self.src[i] for i in indices], [self.tgt[i] for i in indices], self.multiple)

    def positions(self, start_epoch=0, start_batch=0, max_epochs=0):
        """Yield (epoch, batch_number, pair indices) from a position on, epoch after epoch."""
        epoch = start_epoch
        while not max_epochs or epoch < max_epochs:
            for number, indices in enumerate(self.epoch_batches(epoch)):
                if epoch > start_epoch or number >= start_batch:
                    yield epoch, number, indices
            epoch += 1


def shard_batch(batcher, indices, replicas):
    """Split one global batch into `replicas` padded shards (rows dealt out in turn, so lengths balance).

    Returns (list of (src, tgt_in, tgt_out), number of real target tokens in the global batch). A replica
    left without rows gets one all-padding row, which adds nothing to the loss.
    """
    shards = []
    for replica in range(replicas):
        rows = indices[replica::replicas]
        if len(rows):
            shards.append(batcher.make_batch(rows))
        else:
            empty = np.zeros((1, 1), np.int32)
            shards.append((empty, empty, empty))
    tokens = float(sum(batcher.tgt_len[i] for i in indices))
    return shards, tokens


def pad_batch(src_seqs, tgt_seqs, multiple=1):
    """Pad sequences into (src [B, S], tgt_in [B, T], tgt_out [B, T]), T = longest target + 1, both
    lengths rounded up to a multiple."""
    batch = len(src_seqs)
    src = np.zeros((batch, -(-max(len(s) for s in src_seqs) // multiple) * multiple), np.int32)
    tgt_in = np.zeros((batch, -(-(max(len(t) for t in tgt_seqs) + 1) // multiple) * multiple), np.int32)
    tgt_out = np.zeros_like(tgt_in)
    for row, (s, t) in enumerate(zip(src_seqs, tgt_seqs)):
        src[row, :len(s)] = s
        tgt_in[row, 0] = BOS
        tgt_in[row, 1:len(t) + 1] = t
        tgt_out[row, :len(t)] = t
        tgt_out[row, len(t)] = EOS
    return src, tgt_in, tgt_out


def unigram_log_probs(tgt_seqs, vocab_size):
    """Log frequencies [vocab_size] of target ids plus one EOS per sequence, add-one smoothed; padding
    (id 0) and BOS, which are never predicted, get the smallest value."""
    ids = np.concatenate([np.asarray(seq, np.int64) for seq in tgt_seqs] + [np.zeros(0, np.int64)])
    counts = 1.0 + np.bincount(ids[ids < vocab_size], minlength=vocab_size).astype(np.float64)
    counts[EOS] += len(tgt_seqs)
    counts[PAD] = counts[BOS] = 1.0
    return np.log(counts / counts.sum())


def pad_sources(seqs, multiple=1):
    """Pad source sequences into one int32 array [B, S], S rounded up to a multiple (at least 1)."""
    longest = max([len(s) for s in seqs] + [1])
    longest = -(-longest // multiple) * multiple
    out = np.zeros((len(seqs), longest), np.int32)
    for row, s in enumerate(seqs):
        out[row, :len(s)] = s
    return out
