"""Generate the default corpus: a small synthetic language pair, deterministically.

Both languages are invented. Their words are coined from syllables by a random generator
with a fixed seed (LEXICON_SEED), so the two languages never change; `--seed` only picks
which sentences are drawn. Every sentence is generated as a structure (Sentence, Clause,
NounPhrase, ...) and rendered once in each language, so each source sentence has exactly
one correct translation. Only the Python standard library is used.

Source language (SVO, head-initial):

    sentence   = "pa" clause "?" | clause [connective clause] "."   "pa" asks a yes/no question
    clause     = subject ["nu"] verb [np-list] {pp} [adverb]         "nu" negates; 0-3 pps
    subject    = pronoun | np-list
    np-list    = np | np "," ... np "da" np                           2-4 phrases, no relatives
    pp         = preposition np-list
    np         = det noun {adjective} ["ri" verb [np]]              0-2 adjectives after the
                                                                     noun; subject relative clause

    A determiner is an article or demonstrative, a numeral (2 to 9, plural noun) or nothing
    (bare plural). Nouns belong to one of two classes; the article ("ka" / "te", ...) and the
    plural suffix ("-n" / "-s") show the class. Verbs take "-ti" in the past tense and do not
    agree with their subject. A relative clause has no relative clause, pp or adverb of its own.

Target language (SOV, head-final):

    sentence   = clause "haz" "?" | clause [connective clause] "."   "haz" marks the question
    clause     = subject {pp} [np-list "ra"] [adverb] verb ["mek"]   "ra" marks the object,
                                                                     "mek" negates
    pp         = np-list postposition
    np         = det {adjective} noun [numeral] [relativizer [np "ra"] verb]
                                                                     adjectives before the noun,
                                                                     in mirror order

    Nouns have one of three genders (masculine, feminine, neuter), assigned independently
    of the source class, so the right agreement can only be read off the noun itself.
    Determiners, adjectives and relativizers agree with the noun in gender and number
    (gender shown by the vowel i / o / u, plural by a final -n); nouns take a plural suffix
    that depends on their gender. Verbs inflect for tense and for the person and number of
    their subject; a list of two or more subjects takes a plural verb.

Example, glossed word for word ("dog" is neuter, "cat" masculine in the target):

    source: ka   tapari lulo ri   vitaseti te   rali bapa.
            the  dog    big  that see-PAST the  cat  run
    target: zu   kuku   tathul ku     zi   jol ra  tarare       bere.
            the  big    dog    that   the  cat OBJ see-PAST-3SG run-3SG
            N.SG N.SG          N.SG   M.SG

Usage: python data/generate.py --out data/default [--seed N --train N --dev N --test N]
"""

from __future__ import annotations

import argparse
import functools
import random
from dataclasses import dataclass
from pathlib import Path

LEXICON_SEED = 4127
DEFAULT_SEED = 7
DEFAULT_SIZES = {"train": 20000, "dev": 500, "test": 500}
MIN_WORDS, MAX_WORDS = 3, 30

GENDERS = ("m", "f", "n")

# --- Glosses of the content words (meanings only; the word forms are coined below). ---

NOUNS = """
    dog cat horse bird fish cow goat sheep wolf bear fox mouse frog snake lion owl bee duck
    man woman child king queen farmer doctor teacher sailor soldier baker priest thief friend
    neighbour student house tree river stone book table door window ship cart boat road bridge
    garden field forest mountain lake village city market tower wall bell lamp knife cup bowl
    basket rope box coin ring hat coat shoe bread apple cheese egg letter song key chair bed
    clock flower leaf cloud star candle sword shield drum mirror ladder wheel kettle blanket
    feather barn fence hill island
""".split()
TRANSITIVE_VERBS = """
    see find carry build paint hear follow help watch push pull open close break buy sell
    wash cook hold throw catch bring hide call visit count greet draw fix lift miss lose
    praise feed teach cut
""".split()
INTRANSITIVE_VERBS = "run sleep sing laugh wait swim dance fall shout arrive leave sit cry rest".split()
ADJECTIVES = """
    big small old young red green blue black white tall short heavy light new quiet loud
    happy sad clever brave strange rich poor warm cold wet dry clean dirty round sharp soft
    hard slow fast kind
""".split()
ADVERBS = """
    quickly slowly today yesterday often again quietly loudly carefully gladly early late always rarely
""".split()
PREPOSITIONS = "in on under behind near with without for from towards".split()

# --- Function words, listed by hand: (meaning, source form, target form). ---

CONNECTIVES = (("and", "pela", "jamo"), ("but", "sul", "beth"), ("because", "poki", "gorsa"))
SRC_PRONOUNS = {(1, False): "ami", (2, False): "oku", (3, False): "esa",
                (1, True): "amin", (2, True): "okun", (3, True): "esan"}
TGT_PRONOUNS = {(1, False): "gam", (2, False): "tush", (3, False): "hel",
                (1, True): "gamir", (2, True): "tushir", (3, True): "helir"}
SRC_DETERMINERS = {  # (kind, noun class, plural)
    ("def", 0, False): "ka", ("def", 0, True): "kai",
    ("def", 1, False): "te", ("def", 1, True): "tei",
    ("dem", 0, False): "vika", ("dem", 0, True): "vikai",
    ("dem", 1, False): "vite", ("dem", 1, True): "vitei",
    ("indef", 0, False): "om", ("indef", 1, False): "em",
}
TGT_DETERMINERS = {"def": "z", "dem": "th", "indef": "b"}  # + gender vowel (+ "n" in the plural)
TGT_RELATIVIZER = "k"  # + gender vowel (+ "n")
GENDER_VOWELS = {"m": "i", "f": "o", "n": "u"}
SRC_NUMERALS = {2: "sel", 3: "nok", 4: "pim", 5: "dar", 6: "lus", 7: "kem", 8: "vor", 9: "tam"}
TGT_NUMERALS = {2: "dov", 3: "shar", 4: "kel", 5: "ban", 6: "gis", 7: "hom", 8: "rez", 9: "jut"}
SRC = {"and": "da", "relative": "ri", "not": "nu", "question": "pa"}
TGT = {"and": "hag", "object": "ra", "not": "mek", "question": "haz"}

# --- Inflection. ---

SRC_PLURAL = ("n", "s")  # by noun class
SRC_PAST = "ti"
TGT_PLURAL = {"m": "im", "f": "os", "n": "ar"}
TGT_PAST = "ar"
TGT_PERSON = {(1, False): "em", (2, False): "es", (3, False): "e",
              (1, True): "emo", (2, True): "ete", (3, True): "en"}

SRC_SOUNDS = {"onsets": "p t k b d m n l s v r".split(), "vowels": "a e i o u".split(), "codas": [""]}
TGT_SOUNDS = {"onsets": "b d g h j k m r s sh t th z".split(), "vowels": "a e i o u".split(),
              "codas": "l m n r s k".split()}


def agreement(gender: str, plural: bool) -> str:
    """The target agreement ending of determiners, adjectives and relativizers."""
    return GENDER_VOWELS[gender] + ("n" if plural else "")


@dataclass(frozen=True)
class Word:
    """A lexical entry: its meaning and its form in each language."""

    gloss: str
    src: str
    tgt: str


@dataclass(frozen=True)
class Noun(Word):
    src_class: int  # 0 or 1: source agreement class
    gender: str  # "m", "f" or "n": target gender


@dataclass(frozen=True)
class Verb(Word):
    transitive: bool


@dataclass(frozen=True)
class Lexicon:
    nouns: tuple[Noun, ...]
    transitive: tuple[Verb, ...]
    intransitive: tuple[Verb, ...]
    adjectives: tuple[Word, ...]
    adverbs: tuple[Word, ...]
    prepositions: tuple[Word, ...]
    connectives: tuple[Word, ...]

    def find(self, gloss: str) -> Word:
        """The entry with this gloss (for tests and examples)."""
        for group in (self.nouns, self.transitive, self.intransitive, self.adjectives,
                      self.adverbs, self.prepositions, self.connectives):
            for word in group:
                if word.gloss == gloss:
                    return word
        raise KeyError(gloss)


class Coiner:
    """Invents word forms from a syllable inventory, never reusing a form already taken."""

    def __init__(self, rng: random.Random, sounds: dict, taken: set[str]):
        self.rng = rng
        self.sounds = sounds
        self.taken = taken

    def coin(self, min_syllables: int, max_syllables: int, endings=("",)) -> str:
        """A new stem whose forms (stem + each ending) are all unused; the forms become taken."""
        while True:
            size = self.rng.randint(min_syllables, max_syllables)
            stem = "".join(self.rng.choice(self.sounds["onsets"]) + self.rng.choice(self.sounds["vowels"])
                           for _ in range(size))
            stem += self.rng.choice(self.sounds["codas"])
            forms = {stem + ending for ending in endings}
            if len(forms) == len(endings) and not forms & self.taken:
                self.taken.update(forms)
                return stem


def function_words(side: str) -> set[str]:
    """All hand-listed function words of one side ("src" or "tgt")."""
    if side == "src":
        return {*SRC_PRONOUNS.values(), *SRC_DETERMINERS.values(), *SRC_NUMERALS.values(),
                *SRC.values(), *(c[1] for c in CONNECTIVES)}
    articles = {prefix + agreement(g, plural) for prefix in (*TGT_DETERMINERS.values(), TGT_RELATIVIZER)
                for g in GENDERS for plural in (False, True)}
    return {*TGT_PRONOUNS.values(), *articles, *TGT_NUMERALS.values(), *TGT.values(),
            *(c[2] for c in CONNECTIVES)}


ADJECTIVE_ENDINGS = tuple(agreement(g, plural) for g in GENDERS for plural in (False, True))
VERB_ENDINGS = tuple(t + p for t in ("", TGT_PAST) for p in TGT_PERSON.values())


@functools.lru_cache(maxsize=1)
def build_lexicon() -> Lexicon:
    """The fixed lexicon of the language pair (the same on every call and every machine)."""
    rng = random.Random(LEXICON_SEED)
    src = Coiner(rng, SRC_SOUNDS, function_words("src"))
    tgt = Coiner(rng, TGT_SOUNDS, function_words("tgt"))
    # Each (source class, target gender) combination is given to about a sixth of the nouns.
    kinds = [(c, g) for c in (0, 1) for g in GENDERS] * (len(NOUNS) // 6 + 1)
    rng.shuffle(kinds)
    nouns = tuple(Noun(gloss, src.coin(2, 3, ("", SRC_PLURAL[c])), tgt.coin(1, 2, ("", TGT_PLURAL[g])), c, g)
                  for gloss, (c, g) in zip(NOUNS, kinds))

    def verbs(glosses, transitive):
        return tuple(Verb(g, src.coin(2, 3, ("", SRC_PAST)), tgt.coin(1, 2, VERB_ENDINGS), transitive)
                     for g in glosses)

    def words(glosses, src_syllables, tgt_syllables, endings=("",)):
        return tuple(Word(g, src.coin(*src_syllables), tgt.coin(*tgt_syllables, endings)) for g in glosses)

    return Lexicon(
        nouns=nouns,
        transitive=verbs(TRANSITIVE_VERBS, True),
        intransitive=verbs(INTRANSITIVE_VERBS, False),
        adjectives=words(ADJECTIVES, (2, 3), (1, 2), ADJECTIVE_ENDINGS),
        adverbs=words(ADVERBS, (2, 3), (2, 3)),
        prepositions=words(PREPOSITIONS, (1, 2), (1, 1)),
        connectives=tuple(Word(*c) for c in CONNECTIVES),
    )


# --- Sentence structures. ---


@dataclass(frozen=True)
class Relative:
    """A subject relative clause: "that <verb> [<object>]"."""

    verb: Verb
    past: bool = False
    obj: NounPhrase | None = None


@dataclass(frozen=True)
class NounPhrase:
    noun: Noun
    det: str = "def"  # "def", "dem", "indef", "num" (a numeral) or "bare" (bare plural)
    plural: bool = False
    numeral: int = 0
    adjectives: tuple[Word, ...] = ()
    relative: Relative | None = None


@dataclass(frozen=True)
class Pronoun:
    person: int
    plural: bool = False


@dataclass(frozen=True)
class PrepPhrase:
    prep: Word
    nps: tuple[NounPhrase, ...]


@dataclass(frozen=True)
class Clause:
    subject: Pronoun | tuple[NounPhrase, ...]
    verb: Verb
    past: bool = False
    negated: bool = False
    objects: tuple[NounPhrase, ...] = ()
    pps: tuple[PrepPhrase, ...] = ()
    adverb: Word | None = None


@dataclass(frozen=True)
class Sentence:
    clauses: tuple[Clause, ...]
    connective: Word | None = None
    question: bool = False


# --- Rendering. ---


def coordinate(phrases: list[list[str]], conjunction: str) -> list[str]:
    """Join phrases as "A, B, C and D"."""
    words: list[str] = []
    for i, phrase in enumerate(phrases):
        if i == len(phrases) - 1 and i > 0:
            words.append(conjunction)
        elif i > 0:
            words[-1] += ","
        words.extend(phrase)
    return words


def finish(words: list[str], question: bool) -> str:
    """Attach the final punctuation and join the words."""
    return " ".join(words) + ("?" if question else ".")


def source_np(np: NounPhrase) -> list[str]:
    noun = np.noun.src + (SRC_PLURAL[np.noun.src_class] if np.plural else "")
    if np.det == "num":
        words = [SRC_NUMERALS[np.numeral], noun]
    elif np.det == "bare":
        words = [noun]
    else:
        words = [SRC_DETERMINERS[np.det, np.noun.src_class, np.plural], noun]
    words += [adjective.src for adjective in np.adjectives]
    if np.relative:
        rel = np.relative
        words += [SRC["relative"], source_verb(rel.verb, rel.past)]
        if rel.obj:
            words += source_np(rel.obj)
    return words


def source_verb(verb: Verb, past: bool) -> str:
    return verb.src + (SRC_PAST if past else "")


def source_list(nps: tuple[NounPhrase, ...]) -> list[str]:
    return coordinate([source_np(np) for np in nps], SRC["and"])


def source_clause(clause: Clause) -> list[str]:
    if isinstance(clause.subject, Pronoun):
        words = [SRC_PRONOUNS[clause.subject.person, clause.subject.plural]]
    else:
        words = source_list(clause.subject)
    if clause.negated:
        words.append(SRC["not"])
    words.append(source_verb(clause.verb, clause.past))
    words += source_list(clause.objects)
    for pp in clause.pps:
        words += [pp.prep.src] + source_list(pp.nps)
    if clause.adverb:
        words.append(clause.adverb.src)
    return words


def render_source(sentence: Sentence) -> str:
    words = [SRC["question"]] if sentence.question else []
    words += source_clause(sentence.clauses[0])
    for clause in sentence.clauses[1:]:
        words += [sentence.connective.src] + source_clause(clause)
    return finish(words, sentence.question)


def target_verb(verb: Verb, past: bool, person: int, plural: bool) -> str:
    return verb.tgt + (TGT_PAST if past else "") + TGT_PERSON[person, plural]


def target_np(np: NounPhrase) -> list[str]:
    gender, plural = np.noun.gender, np.plural
    words = [TGT_DETERMINERS[np.det] + agreement(gender, plural)] if np.det in TGT_DETERMINERS else []
    words += [adjective.tgt + agreement(gender, plural) for adjective in reversed(np.adjectives)]
    words.append(np.noun.tgt + (TGT_PLURAL[gender] if plural else ""))
    if np.det == "num":
        words.append(TGT_NUMERALS[np.numeral])
    if np.relative:
        rel = np.relative
        words.append(TGT_RELATIVIZER + agreement(gender, plural))
        if rel.obj:
            words += target_np(rel.obj) + [TGT["object"]]
        words.append(target_verb(rel.verb, rel.past, 3, plural))
    return words


def target_list(nps: tuple[NounPhrase, ...]) -> list[str]:
    return coordinate([target_np(np) for np in nps], TGT["and"])


def subject_agreement(subject: Pronoun | tuple[NounPhrase, ...]) -> tuple[int, bool]:
    """Person and number of a subject; two or more coordinated phrases are plural."""
    if isinstance(subject, Pronoun):
        return subject.person, subject.plural
    return 3, len(subject) > 1 or subject[0].plural


def target_clause(clause: Clause) -> list[str]:
    if isinstance(clause.subject, Pronoun):
        words = [TGT_PRONOUNS[clause.subject.person, clause.subject.plural]]
    else:
        words = target_list(clause.subject)
    for pp in clause.pps:
        words += target_list(pp.nps) + [pp.prep.tgt]
    if clause.objects:
        words += target_list(clause.objects) + [TGT["object"]]
    if clause.adverb:
        words.append(clause.adverb.tgt)
    words.append(target_verb(clause.verb, clause.past, *subject_agreement(clause.subject)))
    if clause.negated:
        words.append(TGT["not"])
    return words


def render_target(sentence: Sentence) -> str:
    words = target_clause(sentence.clauses[0])
    for clause in sentence.clauses[1:]:
        words += [sentence.connective.tgt] + target_clause(clause)
    if sentence.question:
        words.append(TGT["question"])
    return finish(words, sentence.question)


# --- Sampling. ---


def weighted(rng: random.Random, weights: dict):
    """One key of `weights`, drawn with probability proportional to its value."""
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def sample_np(rng: random.Random, lex: Lexicon, relative: bool = True) -> NounPhrase:
    """A noun phrase; with `relative`, it may carry a relative clause."""
    det = weighted(rng, {"def": 40, "indef": 20, "dem": 10, "num": 12, "bare": 18})
    plural = det in ("num", "bare") or (det != "indef" and rng.random() < 0.35)
    n_adjectives = weighted(rng, {0: 55, 1: 35, 2: 10})
    rel = None
    if relative and rng.random() < 0.12:
        verb = rng.choice(lex.transitive if rng.random() < 0.6 else lex.intransitive)
        obj = sample_np(rng, lex, relative=False) if verb.transitive else None
        rel = Relative(verb, rng.random() < 0.4, obj)
    return NounPhrase(
        noun=rng.choice(lex.nouns),
        det=det,
        plural=plural,
        numeral=rng.randint(2, 9) if det == "num" else 0,
        adjectives=tuple(rng.sample(lex.adjectives, n_adjectives)),
        relative=rel,
    )


def sample_np_list(rng: random.Random, lex: Lexicon, p_list: float, max_items: int) -> tuple[NounPhrase, ...]:
    """One noun phrase, or (with probability p_list) a list of 2..max_items without relative clauses."""
    if rng.random() >= p_list:
        return (sample_np(rng, lex),)
    return tuple(sample_np(rng, lex, relative=False) for _ in range(rng.randint(2, max_items)))


def sample_clause(rng: random.Random, lex: Lexicon) -> Clause:
    if rng.random() < 0.3:
        subject = Pronoun(rng.randint(1, 3), rng.random() < 0.5)
    else:
        subject = sample_np_list(rng, lex, p_list=0.18, max_items=4)
    transitive = rng.random() < 0.65
    verb = rng.choice(lex.transitive if transitive else lex.intransitive)
    n_pps = weighted(rng, {0: 50, 1: 30, 2: 13, 3: 7})
    return Clause(
        subject=subject,
        verb=verb,
        past=rng.random() < 0.4,
        negated=rng.random() < 0.15,
        objects=sample_np_list(rng, lex, p_list=0.2, max_items=4) if transitive else (),
        pps=tuple(PrepPhrase(rng.choice(lex.prepositions), sample_np_list(rng, lex, 0.12, 3))
                  for _ in range(n_pps)),
        adverb=rng.choice(lex.adverbs) if rng.random() < 0.25 else None,
    )


def sample_sentence(rng: random.Random, lex: Lexicon) -> Sentence:
    """A sentence of MIN_WORDS..MAX_WORDS source words (longer or shorter draws are redrawn)."""
    while True:
        question = rng.random() < 0.1
        if not question and rng.random() < 0.12:
            clauses = (sample_clause(rng, lex), sample_clause(rng, lex))
            sentence = Sentence(clauses, rng.choice(lex.connectives))
        else:
            sentence = Sentence((sample_clause(rng, lex),), question=question)
        if MIN_WORDS <= len(render_source(sentence).split()) <= MAX_WORDS:
            return sentence


# --- Corpus. ---


def generate_corpus(seed: int = DEFAULT_SEED, sizes: dict | None = None) -> dict[str, list[tuple[str, str]]]:
    """Sentence pairs for each split; no source sentence occurs twice in the whole corpus.

    The test and dev splits are drawn first, so changing the training size leaves them unchanged.
    """
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    rng = random.Random(seed)
    lex = build_lexicon()
    seen: set[str] = set()
    corpus = {}
    for split in ("test", "dev", "train"):
        pairs = []
        while len(pairs) < sizes[split]:
            sentence = sample_sentence(rng, lex)
            source = render_source(sentence)
            if source not in seen:
                seen.add(source)
                pairs.append((source, render_target(sentence)))
        corpus[split] = pairs
    return corpus


def write_corpus(corpus: dict[str, list[tuple[str, str]]], out: Path) -> None:
    """Write <split>.src and <split>.tgt for each split (UTF-8, one sentence a line)."""
    out.mkdir(parents=True, exist_ok=True)
    for split, pairs in corpus.items():
        for side, index in (("src", 0), ("tgt", 1)):
            text = "".join(pair[index] + "\n" for pair in pairs)
            (out / f"{split}.{side}").write_text(text, encoding="utf-8", newline="\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="Folder to write the six corpus files to.")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="Seed for drawing the sentences.")
    for split, size in DEFAULT_SIZES.items():
        parser.add_argument(f"--{split}", type=int, default=size, help=f"Number of {split} pairs.")
    args = parser.parse_args(argv)
    corpus = generate_corpus(args.seed, {split: getattr(args, split) for split in DEFAULT_SIZES})
    write_corpus(corpus, args.out)


if __name__ == "__main__":
    main()
