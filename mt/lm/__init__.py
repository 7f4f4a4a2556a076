"""A character-level recurrent language model, trained on long streams by truncated backpropagation
through time (`mt lm train | sample | evaluate`).

    config.py    the model and training settings (LMConfig), YAML in and out
    vocab.py     the character or byte vocabulary: text <-> ids
    streams.py   reading the texts, and cutting one long id stream into parallel streams and chunks
    model.py     LanguageModel: embedding, the recurrent cells of mt/model.py, softmax; chunks with a
                 carried state, and the search step of mt/search.py
    train.py     `mt lm train`: truncated BPTT with the state carried from chunk to chunk, checkpoints
                 holding the stream position and the carried state
    sample.py    `mt lm sample`: the compiled sampling and greedy searches of mt/search.py
    evaluate.py  `mt lm evaluate`: bits per character of held-out text

The cells of a language model are looked at by `mt inspect cells` (mt/inspection/lm_cells.py).
"""
