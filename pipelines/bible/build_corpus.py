"""Build a verse-aligned Spanish-English Bible corpus from Debian's SWORD packages.

Spanish: Reina-Valera 1909 (package sword-text-sparv, module spaRV1909eb).
English: World English Bible (package sword-text-web, module engWEB2015eb).
Both texts are in the public domain. The corpus is built on the machine that
needs it and is never committed.

    python pipelines/bible/build_corpus.py --out work/bible/corpus [--keep-downloads DIR]

Steps: download the two .deb files with `apt-get download`, unpack them with
`dpkg -x` into a temporary folder, read every verse of both Bibles with pysword
(raw OSIS markup), clean the markup, pair the verses book by book (by
reference, realigned by length where the Spanish numbering differs), split by
whole books into train/dev/test and write one verse a line per side,
plus corpus.json (written last) describing what was built.
"""

import argparse
import functools
import html
import importlib
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

from mt.atomic import atomic_open, write_json

LANGUAGES = ("es", "en")
PACKAGES = {"es": "sword-text-sparv", "en": "sword-text-web"}
MODULES = {"es": "spaRV1909eb", "en": "engWEB2015eb"}

# Held-out books (OSIS names), whole books so that no test verse is seen in
# training. Test: seven books, one narrative, one poem and one prophet from the
# Old Testament, three letters of Paul and one general letter from the New:
# 838 verses, all paired 1-1 by reference. Dev: five more books, 513 verses.
TEST_BOOKS = ("Ruth", "Lam", "Amos", "Eph", "Phil", "1Thess", "1Pet")
DEV_BOOKS = ("Mic", "Hab", "Gal", "Col", "Jas")

# ----------------------------------------------------------------------------
# Cleaning the OSIS markup
# ----------------------------------------------------------------------------

# Stands for "a word boundary may be here" while tags are removed; it becomes a
# space, or nothing when it touches punctuation.
SEP = "\ue000"

# Where a Bible's last verse ends: the closing milestone of the book. The WEB
# stores its whole glossary after the closing milestone of Revelation, inside
# the record of Revelation 22:21.
_BOOK_END = re.compile(r'<div\b(?=[^>]*\btype="book")(?=[^>]*\beID=)[^>]*/>')
# Elements whose content is not verse text: footnotes and cross-references
# (<note>, holding <reference>, <catchWord>, <rdg>), the speaker labels of the
# WEB's Song of Songs, and titles that are not canonical (editorial headings).
_DROPPED_ELEMENTS = re.compile(
    r'<note\b[^>]*/>|<note\b.*?</note>'
    r'|<speaker\b.*?</speaker>'
    r'|<title\b(?![^>]*\bcanonical="true")[^>]*>.*?</title>',
    re.DOTALL,
)
# Tags that mark a break between words: milestones (self-closing tags such as
# <l sID=.../>, <lb/>, <div eID=.../>, <chapter .../>) and block elements.
_BREAKING_TAG = re.compile(
    r"<[^>]*/>|</?(?:title|item|list|lg|l|p|div|head|lb|chapter|verse|table|row|cell)\b[^>]*>"
)
# A closing tag directly followed by an opening tag: two adjacent elements, such
# as <w>hay allí</w><transChange>también</transChange>, are two words.
_ADJACENT_ELEMENTS = re.compile(r"(</\w+>)(?=<\w)")
# Any remaining tag (<w>, <transChange>, <q>, <name>, ...) only wraps text.
_ANY_TAG = re.compile(r"<[^>]*>")

# Spanish object pronouns that the RV1909 marks as added words when they are
# attached to a verb (díjo + le = díjole), and the test for such an attachment.
_CLITIC = re.compile(
    r"\b(?P<word>\w+)</w>" + SEP + r"<transChange\b[^>]*>"
    r"(?P<clitic>lo|la|le|los|las|les|me|te|se|nos|os)(?P<close></transChange>)(?P<next>.?)",
    re.DOTALL,
)
_VERB_ENDING = re.compile(r"(?:r|d|ndo)$")
_ACCENT_BEFORE_LAST = re.compile(r"[áéíóú].", re.IGNORECASE)
_OPENING_PUNCT = "([{“‘«¿¡"
_CLOSING_PUNCT = ",.;:!?)]}”’»…"


def looks_like_verb(word, sentence_start):
    """Guess whether a Spanish word is a verb form that can take an enclitic pronoun.

    Infinitives (-r), plural imperatives (-d) and gerunds (-ndo) qualify, and so
    do words with a written accent before their last letter, the RV1909's way of
    spelling verbs with attached pronouns (díjo, sáca, oyéndo). A capitalised
    word inside a sentence is taken for a name (Josué, Jehová).
    """
    if word[:1].isupper() and not sentence_start:
        return False
    lowered = word.lower()
    if lowered in ("cuánto", "cuántos", "cuánta", "cuántas", "cómo", "qué", "quién", "dónde", "cuándo"):
        return False
    return bool(_VERB_ENDING.search(lowered) or _ACCENT_BEFORE_LAST.search(lowered))


def attach_clitics(text):
    """Join an added pronoun to the verb before it when it is an enclitic (sáca+lo = sácalo).

    The pronoun is attached when the word before it looks like a verb, or when
    the pronoun is followed by a space or punctuation (not by the next word) and
    the word before it is not capitalised. Otherwise the two stay apart
    (Jehová los acose, Como lo oímos).
    """
    if "<transChange" not in text:
        return text

    def decide(match):
        """Rewrite one verb + pronoun match, with or without a word break between them."""
        before = _ANY_TAG.sub("", text[: match.start()]).replace(SEP, " ").rstrip()
        sentence_start = not before or before[-1] in ".:;!?¡¿"
        word, nxt = match.group("word"), match.group("next")
        enclitic_position = nxt == "" or nxt.isspace() or nxt in _CLOSING_PUNCT
        joined = looks_like_verb(word, sentence_start) or (enclitic_position and word[:1].islower())
        boundary = "" if joined else SEP
        return word + boundary + match.group("clitic") + match.group("close") + nxt

    return _CLITIC.sub(decide, text)


def resolve_separators(text):
    """Turn SEP marks into single spaces, except next to punctuation that hugs a word."""
    text = re.sub(r"\s*%s[\s%s]*" % (SEP, SEP), SEP, text)
    text = re.sub(SEP + "(?=[%s])" % re.escape(_CLOSING_PUNCT), "", text)
    text = re.sub("(?<=[%s])" % re.escape(_OPENING_PUNCT) + SEP, "", text)
    text = text.replace(SEP, " ")
    return re.sub(r"\s+", " ", text).strip()


_COLOPHON = re.compile(r"(?<=Amén\.) [^.]*\b(?:[Ee]scrita|[Ee]nviada)\b.*$")


def strip_colophon(text):
    """Remove the note on where a letter was written that the RV1909 adds after its last verse.

    Fourteen letters end like 'Amén. Escrita de Roma con Epafrodito.' (Phil
    4:23); the note is not part of the English verse.
    """
    return _COLOPHON.sub("", text)


def clean_verse(raw):
    """Return the plain text of one verse from its raw OSIS markup.

    Footnotes, cross-references, speaker labels and editorial headings are
    removed with their content; canonical psalm titles are kept (the Spanish
    text has them inside verse 1 too). Other tags are removed and their text
    kept, with a space wherever a tag stood between two words, but never before
    closing or after opening punctuation. HTML entities are unescaped and
    whitespace is collapsed.
    """
    text = raw.replace(SEP, " ")
    end = _BOOK_END.search(text)
    if end:
        text = text[: end.start()]
    text = _DROPPED_ELEMENTS.sub(SEP, text)
    text = _ADJACENT_ELEMENTS.sub(r"\1" + SEP, text)
    text = attach_clitics(text)
    text = _BREAKING_TAG.sub(SEP, text)
    text = _ANY_TAG.sub("", text)
    text = html.unescape(text)
    return resolve_separators(text)


# ----------------------------------------------------------------------------
# Tools, download, unpacking
# ----------------------------------------------------------------------------


class RecipeError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


def check_tools(need_apt):
    """Fail with one clear line if apt-get/dpkg or pysword are missing."""
    missing = [tool for tool in (("apt-get", "dpkg") if need_apt else ("dpkg",)) if not shutil.which(tool)]
    if missing:
        raise RecipeError("this recipe needs Debian's apt-get and dpkg (not found: %s)" % ", ".join(missing))
    try:
        importlib.import_module("pysword.modules")
    except ImportError:
        raise RecipeError("pysword is not installed: run 'pip install pysword' (or pip install -e '.[bible]')")


def find_deb(folder, package):
    """Return the path of a downloaded PACKAGE_*.deb in folder, or None."""
    if not folder or not os.path.isdir(folder):
        return None
    names = sorted(n for n in os.listdir(folder) if n.startswith(package + "_") and n.endswith(".deb"))
    return os.path.join(folder, names[-1]) if names else None


def download_deb(package, folder):
    """Download one package's .deb into folder with `apt-get download`; return its path."""
    os.makedirs(folder, exist_ok=True)
    result = subprocess.run(["apt-get", "download", package], cwd=folder, capture_output=True, text=True)
    path = find_deb(folder, package)
    if result.returncode != 0 or path is None:
        errors = [line for line in result.stderr.splitlines() if line.startswith("E:")]
        reason = errors[0] if errors else "apt-get exited with code %d" % result.returncode
        raise RecipeError(
            "could not download Debian package %s (%s); run 'apt-get update' as root and try again"
            % (package, reason)
        )
    return path


def package_version(deb_path):
    """Read the version from a Debian file name such as sword-text-web_426.0-1_all.deb."""
    name = urllib.parse.unquote(os.path.basename(deb_path))
    parts = name[: -len(".deb")].split("_")
    return parts[1] if len(parts) == 3 else "unknown"


def fetch_packages(download_folder):
    """Return {language: .deb path}, reusing .deb files already in download_folder."""
    debs = {}
    for lang in LANGUAGES:
        package = PACKAGES[lang]
        debs[lang] = find_deb(download_folder, package) or download_deb(package, download_folder)
    return debs


def unpack(deb_path, folder):
    """Unpack a .deb's files into folder with `dpkg -x`."""
    result = subprocess.run(["dpkg", "-x", deb_path, folder], capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["dpkg exited with code %d" % result.returncode])[-1]
        raise RecipeError("could not unpack %s: %s" % (os.path.basename(deb_path), message))


# ----------------------------------------------------------------------------
# Reading the modules
# ----------------------------------------------------------------------------


def cache_blocks(bible):
    """Make pysword keep its last decompressed blocks.

    pysword's zText reader decompresses the whole block (here: a whole book)
    again for every verse it returns; remembering the last few blocks turns a
    read of 31,000 verses from about a minute into a fraction of a second. If a
    pysword release renames the method, reading still works, only slower.
    """
    decompress = getattr(bible, "_decompressed_text", None)
    if callable(decompress):
        bible._decompressed_text = functools.lru_cache(maxsize=4)(decompress)


def read_module(sword_root, module):
    """Read every verse of a SWORD Bible module with pysword.

    Returns (verses, versification, book order) where verses maps
    (OSIS book, chapter, verse) to the raw markup of that verse.
    """
    from pysword.modules import SwordModules

    modules = SwordModules(sword_root)
    confs = modules.parse_modules()
    if module not in confs:
        raise RecipeError("module %s not found in %s (found: %s)" % (module, sword_root, ", ".join(confs)))
    bible = modules.get_bible_from_module(module)
    cache_blocks(bible)
    verses, order = {}, []
    for books in bible.get_structure().get_books().values():
        for book in books:
            order.append(book.osis_name)
            for chapter, length in enumerate(book.chapter_lengths, start=1):
                texts = list(bible.get_iter(books=book.name, chapters=chapter, clean=False))
                if len(texts) != length:
                    raise RecipeError("%s %s %d: pysword returned %d verses, expected %d"
                                      % (module, book.osis_name, chapter, len(texts), length))
                for number, text in enumerate(texts, start=1):
                    verses[(book.osis_name, chapter, number)] = text
    return verses, confs[module].get("versification", "KJV"), order


# ----------------------------------------------------------------------------
# Pairing and aligning verses
# ----------------------------------------------------------------------------

# The Spanish module says KJV versification and the English one NRSVA; for the
# 66 books they share these agree except two verse slots the WEB leaves empty
# (3 John 1:15, Revelation 12:18). But inside a few chapters the RV1909 keeps
# its own (Hebrew) numbering: Numbers 13 starts one verse early, Job 39:30
# holds nine English verses, Jonah 2:1 is the English 1:17, and so on. So each
# book is aligned as a sequence: by reference wherever the texts agree, and by
# a length-based dynamic programme (Gale & Church style) where they do not.

# Costs of an alignment step (negative log odds, in units of the length cost).
SAME_REFERENCE_BONUS = 0.5  # a 1-1 step pairing two verses with the same reference
SKIP_COST = 12.0  # a verse left unpaired although the other text has a verse with its reference
# A verse left unpaired whose reference the other text leaves empty. Where the
# WEB leaves a verse empty it omits it (Luke 17:36, Acts 8:37): drop the Spanish
# verse. Where the RV1909 leaves one empty, its text is in a neighbouring verse
# (Job 35:15 holds the English 35:15-16): rather merge than drop.
ORPHAN_SKIP_COST = {"es": 4.0, "en": 8.0}
MERGE_COST = 5.0  # one verse against two
MERGE_EXTRA_COST = 2.0  # each further verse merged (Job 39:30 = nine English verses)
TWO_TWO_COST = 12.0  # two verses against two, split at different points
MAX_MERGE = 10
SMOOTHING = 20  # characters added to both lengths: short verses vary more in length ratio
BAND = 10  # how far (in verses) the alignment may wander from the reference pairing


def length_model(pairs_by_reference):
    """Median and robust spread of log(len(english) / len(spanish)) over same-reference pairs."""
    ratios = sorted(math.log((len(en) + SMOOTHING) / (len(es) + SMOOTHING)) for es, en in pairs_by_reference)
    centre = statistics.median(ratios)
    spread = 1.4826 * statistics.median(abs(r - centre) for r in ratios)
    return centre, max(spread, 1e-3)


def band_centres(spanish, english):
    """For each Spanish position, the English position of the verse with the same reference."""
    english_index = {ref: j for j, (ref, _) in enumerate(english)}
    centres, last = [], -1
    for ref, _ in spanish:
        last = english_index.get(ref, last + 1)
        centres.append(last)
    return centres


class VerseAligner:
    """Align the verses of one book in two languages (dynamic programming over steps).

    A step pairs one verse with one, one with several (up to MAX_MERGE), several
    with one, two with two, or leaves one verse unpaired. Its cost is a fixed
    cost for its kind plus how unlikely the length ratio of its two sides is;
    1-1 steps between verses with the same reference get a bonus, so the
    reference pairing wins wherever the lengths do not clearly contradict it.
    """

    def __init__(self, spanish, english, model):
        """spanish, english: lists of (reference, text) of one book; model: (centre, spread) of the length model."""
        self.spanish, self.english, self.model = spanish, english, model
        self.prefix_es = self._prefix_lengths(spanish)
        self.prefix_en = self._prefix_lengths(english)
        refs_es, refs_en = {ref for ref, _ in spanish}, {ref for ref, _ in english}
        self.skip_es = [SKIP_COST if ref in refs_en else ORPHAN_SKIP_COST["es"] for ref, _ in spanish]
        self.skip_en = [SKIP_COST if ref in refs_es else ORPHAN_SKIP_COST["en"] for ref, _ in english]
        self.centres = [0] + [c + 1 for c in band_centres(spanish, english)]

    @staticmethod
    def _prefix_lengths(verses):
        """Cumulative character counts, so that any run of verses has its length in O(1)."""
        prefix = [0]
        for _, text in verses:
            prefix.append(prefix[-1] + len(text) + 1)
        return prefix

    def length_cost(self, i, j, di, dj):
        """How unlikely it is that spanish[i-di:i] and english[j-dj:j] translate each other, by length."""
        centre, spread = self.model
        length_es = self.prefix_es[i] - self.prefix_es[i - di]
        length_en = self.prefix_en[j] - self.prefix_en[j - dj]
        z = (math.log((length_en + SMOOTHING) / (length_es + SMOOTHING)) - centre) / spread
        return abs(z)

    def steps_into(self, i, j):
        """Yield (di, dj, cost) for every step that ends after i Spanish and j English verses."""
        if i and j:
            same = self.spanish[i - 1][0] == self.english[j - 1][0]
            yield 1, 1, self.length_cost(i, j, 1, 1) - (SAME_REFERENCE_BONUS if same else 0.0)
        if i:
            yield 1, 0, self.skip_es[i - 1]
        if j:
            yield 0, 1, self.skip_en[j - 1]
        if i >= 2 and j >= 2:
            yield 2, 2, TWO_TWO_COST + self.length_cost(i, j, 2, 2)
        ratio = math.exp(self.model[0])
        for k in range(2, min(j, MAX_MERGE) + 1 if i else 0):  # one Spanish verse, k English ones
            yield 1, k, MERGE_COST + MERGE_EXTRA_COST * (k - 2) + self.length_cost(i, j, 1, k)
            if self.prefix_en[j] - self.prefix_en[j - k] > ratio * (self.prefix_es[i] - self.prefix_es[i - 1]):
                break  # more verses would only make the English side longer still
        for k in range(2, min(i, MAX_MERGE) + 1 if j else 0):  # k Spanish verses, one English one
            yield k, 1, MERGE_COST + MERGE_EXTRA_COST * (k - 2) + self.length_cost(i, j, k, 1)
            if ratio * (self.prefix_es[i] - self.prefix_es[i - k]) > self.prefix_en[j] - self.prefix_en[j - 1]:
                break

    def align(self):
        """Return the cheapest alignment as a list of (spanish indices, english indices)."""
        n, m = len(self.spanish), len(self.english)
        best = [dict() for _ in range(n + 1)]  # best[i][j] = (cost, step) over the first i and j verses
        best[0][0] = (0.0, None)
        for i in range(n + 1):
            for j in range(max(0, self.centres[i] - BAND), min(m, self.centres[i] + BAND) + 1):
                options = [(best[i - di][j - dj][0] + cost, (di, dj)) for di, dj, cost in self.steps_into(i, j)
                           if j - dj in best[i - di]]
                if options:
                    best[i][j] = min(options)
        if m not in best[n]:
            raise RecipeError("could not align a book: its two texts differ too much")
        steps, i, j = [], n, m
        while i or j:
            di, dj = best[i][j][1]
            steps.append((list(range(i - di, i)), list(range(j - dj, j))))
            i, j = i - di, j - dj
        return steps[::-1]


def book_sequences(verses_es, verses_en, book_order):
    """Clean both texts and group the non-empty verses by book, in canonical order.

    Returns (books, empty) where books maps each book present in both modules to
    (spanish, english) lists of (reference, text), and empty lists, per
    language, the references of verses that are empty after cleaning.
    """
    rank = {book: i for i, book in enumerate(book_order)}
    shared_books = {ref[0] for ref in verses_es} & {ref[0] for ref in verses_en}
    books = {book: ([], []) for book in sorted(shared_books, key=lambda b: rank.get(b, len(rank)))}
    empty = {"es": [], "en": []}
    for side, (lang, verses) in enumerate((("es", verses_es), ("en", verses_en))):
        for ref in sorted(verses, key=lambda r: (rank.get(r[0], len(rank)), r)):
            if ref[0] not in shared_books:
                continue
            text = clean_verse(verses[ref])
            if lang == "es":
                text = strip_colophon(text)
            if text:
                books[ref[0]][side].append((ref, text))
            else:
                empty[lang].append(format_ref(ref))
    return books, empty


def pair_verses(verses_es, verses_en, book_order):
    """Pair the verses of both Bibles, book by book.

    Returns (pairs, report): pairs is a list of (reference, spanish, english),
    the reference being that of the first English verse of the pair; report
    says what was dropped ("dropped") and where verses were merged or paired
    across different references ("alignment").
    """
    books, empty = book_sequences(verses_es, verses_en, book_order)
    same_reference = [(es, en) for spanish, english in books.values()
                      for (ref, es), (ref2, en) in zip(spanish, english) if ref == ref2]
    model = length_model(same_reference)
    pairs, unpaired, merged, realigned = [], {"es": [], "en": []}, [], []
    for spanish, english in books.values():
        for steps_es, steps_en in VerseAligner(spanish, english, model).align():
            refs_es = [spanish[i][0] for i in steps_es]
            refs_en = [english[j][0] for j in steps_en]
            if not refs_es or not refs_en:
                unpaired["es" if refs_es else "en"] += [format_ref(r) for r in refs_es + refs_en]
                continue
            if len(refs_es) > 1 or len(refs_en) > 1:
                merged.append(describe_step(refs_es, refs_en))
            elif refs_es != refs_en:
                realigned.append(describe_step(refs_es, refs_en))
            pairs.append((refs_en[0], " ".join(spanish[i][1] for i in steps_es),
                          " ".join(english[j][1] for j in steps_en)))
    dropped = one_sided_books(verses_es, verses_en, books)
    dropped["empty_after_cleaning"] = {lang: {"verses": len(v), "refs": v} for lang, v in empty.items()}
    dropped["unpaired"] = {lang: {"verses": len(v), "refs": v} for lang, v in unpaired.items()}
    alignment = {
        "merged_pairs": {"pairs": len(merged), "steps": merged},
        "realigned_pairs": {"pairs": len(realigned), "steps": realigned},
        "length_model": {"median_log_ratio_en_es": round(model[0], 4), "spread": round(model[1], 4)},
    }
    return pairs, {"dropped": dropped, "alignment": alignment}


def one_sided_books(verses_es, verses_en, books):
    """Count verses of books that only one module has (the WEB's deuterocanon)."""
    report = {}
    for lang, verses in (("es", verses_es), ("en", verses_en)):
        by_book = {}
        for ref in verses:
            if ref[0] not in books:
                by_book[ref[0]] = by_book.get(ref[0], 0) + 1
        report["only_in_" + ("spanish" if lang == "es" else "english")] = {
            "verses": sum(by_book.values()), "by_book": by_book}
    return report


def describe_step(refs_es, refs_en):
    """Describe an alignment step, such as 'es Num 13:1 = en Num 12:16'."""
    return "es %s = en %s" % (format_span(refs_es), format_span(refs_en))


def format_span(refs):
    """Format one or more consecutive references: 'Job 39:30' or 'Job 39:27-40:5'."""
    first, last = format_ref(refs[0]), refs[-1]
    if len(refs) == 1:
        return first
    return first + "-" + ("%d" % last[2] if last[1] == refs[0][1] else "%d:%d" % last[1:])


def format_ref(ref):
    """Format (book, chapter, verse) as 'Book chapter:verse'."""
    return "%s %d:%d" % ref


# ----------------------------------------------------------------------------
# Splitting and writing
# ----------------------------------------------------------------------------


def split_by_books(pairs, test_books=TEST_BOOKS, dev_books=DEV_BOOKS):
    """Assign whole books to test and dev, everything else to train.

    Returns {"train": [...], "dev": [...], "test": [...]} keeping the order of
    pairs. Fails if a held-out book is in both sets or has no verse at all.
    """
    overlap = set(test_books) & set(dev_books)
    if overlap:
        raise RecipeError("books both in test and dev: %s" % ", ".join(sorted(overlap)))
    present = {ref[0] for ref, _, _ in pairs}
    missing = [book for book in tuple(test_books) + tuple(dev_books) if book not in present]
    if missing:
        raise RecipeError("held-out books without verses: %s" % ", ".join(missing))
    splits = {"train": [], "dev": [], "test": []}
    for pair in pairs:
        book = pair[0][0]
        name = "test" if book in test_books else "dev" if book in dev_books else "train"
        splits[name].append(pair)
    return splits


def write_lines(path, lines):
    """Write lines, one a line, atomically: a temporary file renamed over path."""
    with atomic_open(path) as f:
        for line in lines:
            if "\n" in line or "\r" in line:
                raise ValueError("a line of %s contains a line break: %r" % (path, line[:60]))
            f.write(line + "\n")


def books_in_order(split_pairs):
    """The books of a split in the order they first appear."""
    return list(dict.fromkeys(ref[0] for ref, _, _ in split_pairs))


def write_corpus(out, splits, info):
    """Write SPLIT.es / SPLIT.en for every split, then corpus.json last."""
    os.makedirs(out, exist_ok=True)
    for name, split_pairs in splits.items():
        write_lines(os.path.join(out, name + ".es"), [es for _, es, _ in split_pairs])
        write_lines(os.path.join(out, name + ".en"), [en for _, _, en in split_pairs])
    summary = {name: {"verses": len(p), "books": books_in_order(p)} for name, p in splits.items()}
    write_json(os.path.join(out, "corpus.json"), dict(info, splits=summary))


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------


def build(out, keep_downloads=None):
    """Run the whole recipe; return the dict written to corpus.json plus timings."""
    started = time.monotonic()
    check_tools(need_apt=not all(find_deb(keep_downloads, PACKAGES[lang]) for lang in LANGUAGES))
    with tempfile.TemporaryDirectory(prefix="bible-corpus-") as tmp:
        debs = fetch_packages(keep_downloads or os.path.join(tmp, "debs"))
        downloaded = time.monotonic()
        sword_root = os.path.join(tmp, "root", "usr", "share", "sword")
        for deb in debs.values():
            unpack(deb, os.path.join(tmp, "root"))
        verses, versification, order = {}, {}, []
        for lang in LANGUAGES:
            verses[lang], versification[lang], book_order = read_module(sword_root, MODULES[lang])
            order += [book for book in book_order if book not in order]
    pairs, report = pair_verses(verses["es"], verses["en"], order)
    splits = split_by_books(pairs)
    info = {
        "sources": {lang: {"package": PACKAGES[lang], "version": package_version(debs[lang]),
                           "module": MODULES[lang], "versification": versification[lang],
                           "license": "public domain"} for lang in LANGUAGES},
        "pairs": len(pairs),
        **report,
    }
    write_corpus(out, splits, info)
    finished = time.monotonic()
    return dict(info, splits={k: len(v) for k, v in splits.items()},
                seconds={"download": downloaded - started, "total": finished - started})


def print_summary(out, result):
    """Print what was built, in a few lines."""
    dropped = result["dropped"]
    print("wrote %s: %d verse pairs" % (out, result["pairs"]))
    for name, count in result["splits"].items():
        print("  %-5s %6d verses" % (name, count))
    print("  dropped: %d verses of books only in English (%d books), %d only in Spanish"
          % (dropped["only_in_english"]["verses"], len(dropped["only_in_english"]["by_book"]),
             dropped["only_in_spanish"]["verses"]))
    for what in ("empty_after_cleaning", "unpaired"):
        print("           %-20s es %d, en %d" % (what.replace("_", " "), dropped[what]["es"]["verses"],
                                                 dropped[what]["en"]["verses"]))
    alignment = result["alignment"]
    print("  aligned: %d pairs merge several verses, %d pair verses of different numbers"
          % (alignment["merged_pairs"]["pairs"], alignment["realigned_pairs"]["pairs"]))
    for lang, source in result["sources"].items():
        print("  %s: %s %s (%s, %s versification)"
              % (lang, source["package"], source["version"], source["module"], source["versification"]))
    seconds = result["seconds"]
    print("  time: %.1f s (download %.1f s)" % (seconds["total"], seconds["download"]))


def main(argv=None):
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write train/dev/test files and corpus.json")
    parser.add_argument("--keep-downloads", metavar="DIR",
                        help="keep the .deb files in DIR (and reuse them from there next time)")
    args = parser.parse_args(argv)
    try:
        result = build(args.out, args.keep_downloads)
    except RecipeError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print_summary(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
