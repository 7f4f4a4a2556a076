"""Tests of data/generate.py, the generator of the committed default corpus."""

import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "data" / "generate.py"
DEFAULT_DIR = ROOT / "data" / "default"
SPLITS = ("train", "dev", "test")
FILES = [f"{split}.{side}" for split in SPLITS for side in ("src", "tgt")]
SMALL = {"train": 300, "dev": 40, "test": 40}


@pytest.fixture(scope="module")
def gen():
    """data/generate.py imported as a module (it is a script, not part of the mt package)."""
    spec = importlib.util.spec_from_file_location("mt_data_generate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def lex(gen):
    return gen.build_lexicon()


def run_script(out: Path, *args: str) -> dict[str, bytes]:
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], check=True)
    return {name: (out / name).read_bytes() for name in FILES}


def lines(text: bytes) -> list[str]:
    return text.decode("utf-8").splitlines()


# --- Determinism and splits. ---


def test_same_seed_same_files_and_other_seed_other_files(tmp_path):
    sizes = ["--train", "200", "--dev", "20", "--test", "20"]
    first = run_script(tmp_path / "a", "--seed", "3", *sizes)
    again = run_script(tmp_path / "b", "--seed", "3", *sizes)
    other = run_script(tmp_path / "c", "--seed", "4", *sizes)
    assert first == again
    for name in FILES:
        assert first[name] != other[name], name


def test_line_counts_match_the_requested_sizes(gen, tmp_path):
    gen.write_corpus(gen.generate_corpus(11, SMALL), tmp_path)
    for split in SPLITS:
        for side in ("src", "tgt"):
            text = (tmp_path / f"{split}.{side}").read_bytes()
            assert text.endswith(b"\n")
            assert len(lines(text)) == SMALL[split]
            assert all(line.strip() for line in lines(text))


def test_dev_and_test_are_distinct_and_unseen_in_train(gen):
    corpus = gen.generate_corpus(5, SMALL)
    train = {source for source, _ in corpus["train"]}
    for split in ("dev", "test"):
        sources = [source for source, _ in corpus[split]]
        assert len(set(sources)) == len(sources)
        assert not train & set(sources)
    assert not {s for s, _ in corpus["dev"]} & {s for s, _ in corpus["test"]}


def test_committed_default_corpus_is_what_the_generator_writes(tmp_path):
    generated = run_script(tmp_path)
    for name in FILES:
        assert (DEFAULT_DIR / name).read_bytes() == generated[name], f"data/default/{name} is stale"


def test_sentence_lengths_stay_in_range(gen):
    corpus = gen.generate_corpus(2, {"train": 2000, "dev": 0, "test": 0})
    lengths = [len(source.split()) for source, _ in corpus["train"]]
    assert min(lengths) >= gen.MIN_WORDS and max(lengths) <= gen.MAX_WORDS
    assert 9 <= sum(lengths) / len(lengths) <= 13
    assert max(lengths) >= 25  # long sentences do occur


# --- The language pair. ---


def test_each_source_sentence_has_a_single_translation(gen, lex):
    rng = random.Random(0)
    translations: dict[str, str] = {}
    for _ in range(20000):
        sentence = gen.sample_sentence(rng, lex)
        source, target = gen.render_source(sentence), gen.render_target(sentence)
        assert translations.setdefault(source, target) == target, source


def test_source_word_forms_are_never_shared_by_two_words(gen, lex):
    forms = [n.src + suffix for n in lex.nouns for suffix in ("", gen.SRC_PLURAL[n.src_class])]
    forms += [v.src + suffix for v in lex.transitive + lex.intransitive for suffix in ("", gen.SRC_PAST)]
    forms += [w.src for w in lex.adjectives + lex.adverbs + lex.prepositions]
    forms += list(gen.function_words("src"))
    assert len(forms) == len(set(forms))
    assert 300 <= len(forms) <= 600


def test_target_gender_is_not_predictable_from_the_source_class(lex):
    for src_class in (0, 1):
        assert {n.gender for n in lex.nouns if n.src_class == src_class} == {"m", "f", "n"}


def test_clause_order_is_svo_in_the_source_and_sov_in_the_target(gen, lex):
    farmer, carry, apple, barn = (lex.find(g) for g in ("farmer", "carry", "apple", "barn"))
    red, small = lex.find("red"), lex.find("small")
    clause = gen.Clause(
        subject=(gen.NounPhrase(farmer),),
        verb=carry,
        objects=(gen.NounPhrase(apple, adjectives=(red, small)),),
        pps=(gen.PrepPhrase(lex.find("behind"), (gen.NounPhrase(barn),)),),
    )
    source, target = gen.source_clause(clause), gen.target_clause(clause)

    def in_order(words, sequence):
        positions = [words.index(w) for w in sequence]
        return positions == sorted(positions)

    # Subject, verb, object, pp in the source; subject, pp, object, verb in the target.
    assert in_order(source, [farmer.src, carry.src, apple.src, barn.src])
    carries = gen.target_verb(carry, False, 3, False)
    assert in_order(target, [farmer.tgt, barn.tgt, apple.tgt, carries]) and target[-1] == carries
    # Adjectives follow the noun in the source and precede it, in mirror order, in the target.
    assert in_order(source, [apple.src, red.src, small.src])
    red_t, small_t = (a.tgt + gen.agreement(apple.gender, False) for a in (red, small))
    assert in_order(target, [small_t, red_t, apple.tgt])


def test_determiners_and_adjectives_agree_with_the_target_gender(gen, lex):
    big = lex.find("big")
    for src_class in (0, 1):
        forms = {}
        for gender in gen.GENDERS:
            nouns = [n for n in lex.nouns if n.src_class == src_class and n.gender == gender][:2]
            for plural in (False, True):
                phrases = [gen.NounPhrase(n, plural=plural, adjectives=(big,)) for n in nouns]
                articles_and_adjectives = {tuple(gen.target_np(np)[:2]) for np in phrases}
                assert len(articles_and_adjectives) == 1  # set by gender and number alone
                forms[gender, plural] = articles_and_adjectives.pop()
                source_articles = {gen.source_np(np)[0] for np in phrases}
                assert len(source_articles) == 1
        assert len(set(forms.values())) == 6  # six distinct article + adjective pairs
        assert len({article for article, _ in forms.values()}) == 6


def test_the_target_verb_agrees_with_its_subject(gen, lex):
    verb, dog, cat = lex.find("sleep"), lex.find("dog"), lex.find("cat")

    def verbs(subject):
        clause = gen.Clause(subject=subject, verb=verb, past=True)
        return gen.source_clause(clause)[-1], gen.target_clause(clause)[-1]

    pronouns = [verbs(gen.Pronoun(person, plural)) for person in (1, 2, 3) for plural in (False, True)]
    assert len({source for source, _ in pronouns}) == 1  # the source verb does not agree
    assert len({target for _, target in pronouns}) == 6
    one_dog = verbs((gen.NounPhrase(dog),))
    two_nouns = verbs((gen.NounPhrase(dog), gen.NounPhrase(cat)))
    dogs = verbs((gen.NounPhrase(dog, plural=True),))
    assert two_nouns[1] == dogs[1] == verbs(gen.Pronoun(3, True))[1]
    assert one_dog[1] == verbs(gen.Pronoun(3, False))[1] != dogs[1]


def test_lists_keep_every_noun_in_order(gen, lex):
    nouns = [lex.find(g) for g in ("goat", "bell", "ladder", "island")]
    clause = gen.Clause(subject=gen.Pronoun(2), verb=lex.find("count"),
                        objects=tuple(gen.NounPhrase(n, plural=True) for n in nouns))
    target = [word.rstrip(",") for word in gen.target_clause(clause)]
    positions = [target.index(n.tgt + gen.TGT_PLURAL[n.gender]) for n in nouns]
    assert positions == sorted(positions)
    assert target[-2:] == [gen.TGT["object"], gen.target_verb(clause.verb, False, 2, False)]
