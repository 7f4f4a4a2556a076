"""The data and run folders: their records, read with one-line errors, and the file names a manifest may
give (bare names inside the folder only)."""

import json
import os

import pytest

from mt.errors import UserError
from mt.folders import DataFolder, RunFolder, bare_name
from mt.shards import write_split
from mt.tokenizer import train_tokenizer

WORDS = "uno dos tres cuatro cinco seis siete ocho nueve diez".split()


def manifest(**changes):
    value = {"format": 1, "tokenizers": dict(DataFolder.TOKENIZERS), "vocab": {"src": 300, "tgt": 300},
             "splits": {"train": {"shards": ["train.000.npz"]}, "dev": {"shards": ["dev.000.npz"]}},
             "dev_text": dict(DataFolder.DEV_TEXT)}
    value.update(changes)
    return value


def write_manifest(folder, value):
    os.makedirs(folder, exist_ok=True)
    with open(DataFolder(folder).manifest_path, "w", encoding="utf-8") as f:
        f.write(value if isinstance(value, str) else json.dumps(value))
    return DataFolder(folder)


def test_a_split_is_read_in_the_order_of_the_manifest(tmp_path):
    first = write_split(tmp_path, "train", [[1], [2]], [[3], [4]])
    second = write_split(tmp_path, "dev", [[9]], [[8]])
    folder = write_manifest(tmp_path, manifest(splits={"train": {"shards": second + first},
                                                       "dev": {"shards": second}}))
    src, tgt = folder.read_split("train")
    assert [s.tolist() for s in src] == [[9], [1], [2]] and [t.tolist() for t in tgt] == [[8], [3], [4]]
    with pytest.raises(UserError, match="no split 'test'"):
        folder.read_split("test")


@pytest.mark.parametrize("text, words", [
    ("{\"format\": 1, ", ["manifest.json", "damaged", "mt preprocess"]),
    ("[1, 2]", ["manifest.json", "not a JSON object"]),
    ("\xff", ["manifest.json", "damaged"]),
    (json.dumps(manifest(format=7)), ["format 7", "mt preprocess"]),
    (json.dumps({"format": 1}), ["damaged", "tokenizers"]),
    (json.dumps(manifest(vocab={"src": "many", "tgt": 3})), ["damaged"]),
])
def test_a_damaged_manifest_is_a_one_line_error_naming_the_file(tmp_path, text, words):
    folder = write_manifest(tmp_path, text)
    with pytest.raises(UserError) as error:
        folder.manifest()
    assert "\n" not in str(error.value) and all(w in str(error.value) for w in words), str(error.value)


@pytest.mark.parametrize("name", ["../secret.model", "/etc/passwd", "sub/src.spm.model", "..", ".hidden", "",
                                  "a\\b"])
def test_a_manifest_may_name_only_files_inside_its_folder(tmp_path, name):
    tokenizers = {"src": name, "tgt": "tgt.spm.model"}
    for changes in ({"tokenizers": tokenizers}, {"splits": {"train": {"shards": [name]}, "dev": {"shards": []}}},
                    {"dev_text": {"src": name, "tgt": "dev.tgt.txt"}}):
        folder = write_manifest(tmp_path, manifest(**changes))
        with pytest.raises(UserError, match="not a file name inside the folder"):
            folder.manifest()


def test_bare_names_pass():
    assert bare_name("train.000.npz", "here") == "train.000.npz"


def test_a_missing_data_folder_says_run_preprocess(tmp_path):
    with pytest.raises(UserError, match="no manifest.json.*mt preprocess"):
        DataFolder(tmp_path / "nowhere").manifest()


def test_tokenizers_are_checked_before_they_are_copied(tmp_path):
    data = tmp_path / "data"
    folder = write_manifest(data, manifest())
    (data / "src.spm.model").write_text("not a model")
    run = RunFolder(tmp_path / "run")
    os.makedirs(run.path)
    with pytest.raises(UserError, match="not a SentencePiece model"):
        run.copy_tokenizers(folder)
    assert not os.path.exists(run.tokenizer_path("src"))
    for side in ("src", "tgt"):
        train_tokenizer([" ".join(WORDS[i:] + WORDS[:i]) for i in range(10)] * 20,
                        folder.new_tokenizer_path(side)[:-len(".model")], 300, seed=1)
    run.copy_tokenizers(folder)
    for side in ("src", "tgt"):
        assert open(run.tokenizer_path(side), "rb").read() == open(folder.tokenizer_path(side), "rb").read()


@pytest.mark.parametrize("record", ["data_info", "done"])
def test_damaged_run_records_are_one_line_errors(tmp_path, record):
    run = RunFolder(tmp_path)
    path = run.data_info_path if record == "data_info" else run.done_path
    with open(path, "w") as f:
        f.write("{\"step\": ")
    with pytest.raises(UserError) as error:
        getattr(run, record)()
    assert os.path.basename(path) in str(error.value) and "damaged" in str(error.value)


def test_a_folder_without_data_info_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="not a run folder"):
        RunFolder(tmp_path).data_info()
    assert RunFolder(tmp_path).done() is None


def test_weights_fall_back_to_the_other_file_and_say_when_there_are_none(tmp_path):
    run = RunFolder(tmp_path)
    with pytest.raises(UserError, match="no weights yet"):
        run.existing_weights("best")
    os.makedirs(run.weights_dir)
    open(run.weights_path("last"), "w").close()
    assert run.existing_weights("best") == run.weights_path("last")
    with pytest.raises(UserError, match="unknown weights"):
        run.existing_weights("newest")


def test_a_run_folder_is_held_by_one_process_at_a_time_even_after_sigkill(tmp_path):
    import signal
    import subprocess
    import sys

    run = RunFolder(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from mt.folders import RunFolder\n"
        "with RunFolder(sys.argv[1]).lock():\n    print('held', flush=True)\n    time.sleep(60)"),
        run.path], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as error:
            with run.lock():
                pass
        assert f"process {holder.pid}" in str(error.value) and "in use" in str(error.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run.lock():  # the kernel released the killed holder's lock
        with pytest.raises(UserError):
            with RunFolder(run.path).lock():  # and this process now holds it: a second holder is refused
                pass
    with run.lock():
        pass
