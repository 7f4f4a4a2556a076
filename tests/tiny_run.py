"""A run folder holding a tiny random model and real (tiny) SentencePiece models, as the tests of the
commands that read a trained run (serve, export, the API) need one."""

import json

import numpy as np


def make_tiny_run(folder, source_words, target_words=None):
    """Write the run into `folder` (a pathlib.Path) and return it. With `target_words` the two sides get
    tokenizers of their own, so that decoding with the wrong one would show."""
    import tensorflow as tf

    from mt.config import Config, ModelConfig
    from mt.model import build_model
    from mt.tokenizer import Tokenizer, train_tokenizer

    rng = np.random.default_rng(0)
    text = {}
    for side, words in (("src", source_words), ("tgt", target_words)):
        text[side] = [" ".join(rng.choice(words, 5)) for _ in range(200)] if words is not None else text["src"]
        train_tokenizer(text[side], folder / f"{side}.spm", 280, seed=1)
    sizes = {side: Tokenizer(str(folder / f"{side}.spm.model")).vocab_size for side in ("src", "tgt")}
    config = Config()
    # input feeding and an untied output layer, pinned: the random model the tests using this run were
    # written on, whose outputs have no near-ties that batch rounding could flip
    config.model = ModelConfig(emb_dim=16, enc_units=12, dec_units=24, dropout=0.0, input_feeding=True,
                               tie_embeddings=False)
    config.train.precision = "float32"  # as `mt train` writes it, resolved
    config.save(str(folder / "config.yaml"))
    (folder / "data.json").write_text(json.dumps({"src_vocab": sizes["src"], "tgt_vocab": sizes["tgt"]}))
    (folder / "weights").mkdir()
    tf.keras.utils.set_random_seed(1)
    build_model(config.model, sizes["src"], sizes["tgt"]).save_weights(str(folder / "weights/best.weights.h5"))
    return folder
