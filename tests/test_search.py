import numpy as np

from mt.config import ModelConfig
from mt.model import BOS, EOS, PAD, build_model
from mt.search import GreedySearch, strip_ids


def test_greedy_matches_a_step_by_step_argmax_loop():
    model = build_model(ModelConfig(emb_dim=8, enc_units=6, dec_units=12), 20, 24)
    src = np.array([[5, 6, 7, 3], [9, 4, 0, 0], [11, 0, 0, 0]], np.int32)
    ids, scores = GreedySearch(model)(src, 12)
    state, prev = model.encode(src), np.full([3], BOS, np.int32)
    finished = np.zeros(3, bool)
    expected, total = [], np.zeros(3)
    for _ in range(ids.shape[1]):
        logits, state = model.decode_step(prev, state)
        logp = np.asarray(logits) - np.log(np.exp(np.asarray(logits)).sum(-1, keepdims=True))
        prev = np.where(finished, PAD, logp.argmax(-1)).astype(np.int32)
        total += np.where(finished, 0.0, logp.max(-1))
        finished |= prev == EOS
        expected.append(prev)
    np.testing.assert_array_equal(ids, np.stack(expected, 1))
    np.testing.assert_allclose(scores, total, rtol=1e-4)
    assert ids.shape[1] <= 12


def test_finished_sentences_emit_only_padding():
    model = build_model(ModelConfig(emb_dim=8, enc_units=6, dec_units=12), 20, 24)
    # bias the output layer towards EOS so that sentences end early
    kernel, bias = model.output_layer.get_weights()
    bias[EOS] = 5.0
    model.output_layer.set_weights([kernel, bias])
    ids, _ = GreedySearch(model)(np.array([[5, 6, 7, 3]], np.int32), 20)
    assert ids[0, 0] == EOS and ids.shape[1] == 1
    assert strip_ids([7, 8, EOS, PAD, 9]) == [7, 8]
