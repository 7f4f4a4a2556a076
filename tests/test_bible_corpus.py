"""Tests of the Bible corpus recipe (pipelines/bible/build_corpus.py): no network, no apt.

The raw verses below are copied from the two SWORD modules the recipe reads
(spaRV1909eb and engWEB2015eb), shortened where marked with '...'.
"""

import importlib.util
import json
import os
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "pipelines" / "bible" / "build_corpus.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("build_corpus", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bc = load_recipe()


# --- cleaning ---------------------------------------------------------------

def test_footnote_removed_with_its_content_and_words_kept_apart():
    # Genesis 1:1, WEB: the note sits between two words with no space around it.
    raw = ('<w lemma="strong:H0430">In</w> <w lemma="strong:H0853">the</w> <w lemma="strong:H7225">beginning</w>, '
           '<w lemma="strong:H0430">God</w><note placement="foot"><reference type="annotateRef">1:1 </reference>'
           'The Hebrew word rendered “God” is “אֱלֹהִ֑ים” (Elohim).</note><w lemma="strong:H1254">created</w> '
           '<w lemma="strong:H0853">the</w> <w lemma="strong:H8064">heavens</w> <w lemma="strong:H0430">and</w> '
           '<w lemma="strong:H0853">the</w> <w lemma="strong:H0776">earth</w>. ')
    assert bc.clean_verse(raw) == "In the beginning, God created the heavens and the earth."


def test_note_after_bare_text_keeps_words_apart():
    # Matthew 2:1, WEB: "wise men" is not wrapped in <w>, the note is followed by one.
    raw = ('<w lemma="strong:G2400">behold</w>, wise men<note placement="foot"><reference type="annotateRef">2:1 '
           '</reference>The word for “wise men” (magoi) can also mean teachers, scientists, physicians, '
           'astrologers, seers, interpreters of dreams, or sorcerers.</note><w lemma="strong:G0575">from</w> '
           '<w lemma="strong:G3588">the</w> east')
    assert bc.clean_verse(raw) == "behold, wise men from the east"


def test_note_between_quotation_elements():
    # John 3:16, WEB (shortened).
    raw = ('<q marker="" who="Jesus"><w lemma="strong:G1063">For</w> <w lemma="strong:G2316">God</w> ... his '
           '<w lemma="strong:G3439">only</w> born</q><note placement="foot"><reference type="annotateRef">3:16 '
           '</reference>The phrase “only born” is from the Greek word “μονογενη”, which is sometimes translated '
           '“only begotten” or “one and only”.</note><q marker="" who="Jesus"><w lemma="strong:G5207">Son</w>, '
           '<w lemma="strong:G2443">that</w> whoever believes</q>')
    assert bc.clean_verse(raw) == "For God ... his only born Son, that whoever believes"


def test_cross_reference_and_entities_in_notes_vanish():
    # Mark 11:1 (WEB) has "TR &amp;NU" inside a note; 2 Kings 12:4 a cross-reference.
    raw = ('When they came near to Jerusalem, to Bethsphage<note placement="foot"><reference type="annotateRef">'
           '11:1 </reference>TR &amp;NU read “Bethphage” instead of “Bethsphage”</note> and Bethany,'
           '<note type="crossReference"><reference subType="x-origin" type="annotateRef">12:4 </reference>'
           '<reference>Exodus 30:12</reference></note> at the Mount of Olives')
    assert bc.clean_verse(raw) == "When they came near to Jerusalem, to Bethsphage and Bethany, at the Mount of Olives"


def test_entities_in_verse_text_are_unescaped():
    raw = '<w lemma="strong:H1">salt</w> &amp; <w lemma="strong:H2">light</w> &lt;3&gt; caf&#233;'
    assert bc.clean_verse(raw) == "salt & light <3> café"


def test_psalm_title_kept_and_poetry_lines_separated():
    # Psalm 3:1, WEB: the canonical title is part of verse 1 (the RV1909 has it there too).
    raw = ('<div type="x-milestone" subType="x-preverse" sID="pv4877"/><title canonical="true" type="psalm">'
           'A Psalm by David, when he fled from Absalom his son.</title> <lg sID="gen7860"/> '
           '<l level="1" sID="gen7861"/><div type="x-milestone" subType="x-preverse" eID="pv4877"/>Yahweh, how '
           '<w lemma="strong:H1732">my</w> adversaries <w lemma="strong:H1121">have</w> increased!'
           '<l eID="gen7861" level="1"/> <l level="2" sID="gen7862"/>Many <w lemma="strong:H1121">are</w> those '
           'who rise up against me. <l eID="gen7862" level="2"/>')
    assert bc.clean_verse(raw) == ("A Psalm by David, when he fled from Absalom his son. Yahweh, how my adversaries "
                                   "have increased! Many are those who rise up against me.")


def test_milestones_between_words_give_a_space():
    raw = 'face to face.<div eID="gen35566" type="x-p"/><div sID="gen35567" type="x-p"/>Peace<lb type="x-p"/>be'
    assert bc.clean_verse(raw) == "face to face. Peace be"


def test_speaker_labels_and_headings_removed():
    # Song of Songs 1:2, WEB, and an editorial (non-canonical) heading.
    raw = ('<div type="x-milestone" subType="x-preverse" sID="pv8242"/><speaker>Beloved</speaker> '
           '<lg sID="gen15617"/> <l level="1" sID="gen15618"/>Let <w lemma="strong:H3588">him</w> kiss me'
           '<l eID="gen15618" level="1"/>')
    assert bc.clean_verse(raw) == "Let him kiss me"
    assert bc.clean_verse('<title type="section">The Creation</title>In the beginning') == "In the beginning"


def test_no_space_before_closing_or_after_opening_punctuation():
    # 2 Kings 17:27 (WEB): a note right before a word; Tobit 2:6: a note right before an opening quote.
    raw = ('and let him<note placement="foot"><reference type="annotateRef">17:27 </reference>Hebrew: '
           '<catchWord>them</catchWord></note> go and dwell there, as he said,<l level="1" sID="gen5231"/>'
           '<note type="crossReference"><reference>Amos 8:10</reference></note>“Your feasts'
           '<note placement="foot">x</note>, he said<note placement="foot">y</note>.”')
    assert bc.clean_verse(raw) == "and let him go and dwell there, as he said, “Your feasts, he said.”"


def test_glossary_after_the_last_verse_is_cut():
    # Revelation 22:21, WEB: the glossary is stored after the book's closing milestone.
    raw = ('The grace of the Lord Jesus Christ be with all the saints. Amen.  <chapter eID="Rev.22"/>'
           '<div eID="gen35836" type="x-p"/> <div canonical="true" eID="gen35575" osisID="Rev" type="book"/> '
           '<div sID="gen35837" type="glossary"/> <title level="1" type="main">World English Bible Glossary</title> '
           '<list> <item type="x-indent-1"><seg type="keyword">Abaddon</seg> Abaddon is Hebrew for destruction.</item>')
    assert bc.clean_verse(raw) == "The grace of the Lord Jesus Christ be with all the saints. Amen."


def test_spanish_added_words_are_separate_words():
    # Genesis 2:12, RV1909: <transChange> (words added by the translators) glued between two <w> elements.
    raw = ('<w lemma="strong:H8033">hay allí</w><transChange type="added">también</transChange>'
           '<w lemma="strong:H0916">bdelio</w> <w lemma="strong:H0068">y piedra</w> ')
    assert bc.clean_verse(raw) == "hay allí también bdelio y piedra"


def test_spanish_enclitic_pronouns_join_their_verb():
    # 1 Kings 3:5, Genesis 19:12, 1 Chronicles 10:13 (RV1909): a pronoun attached to the verb.
    assert bc.clean_verse('<w lemma="strong:H1">y díjo</w><transChange type="added">le</transChange>'
                          '<w lemma="strong:H2">Dios</w>: ') == "y díjole Dios:"
    assert bc.clean_verse('<w lemma="strong:H1">sáca</w><transChange type="added">lo</transChange> '
                          '<w lemma="strong:H2">de</w> ') == "sácalo de"
    assert bc.clean_verse('<w lemma="strong:H1">al pythón</w>, preguntándo<transChange type="added">le</transChange>'
                          ', ') == "al pythón, preguntándole,"


def test_spanish_pronouns_before_a_verb_stay_apart():
    # Psalm 35:5, Joshua 5:4, 1 Samuel 14:1 (RV1909): the added pronoun goes with the next word.
    assert bc.clean_verse('<w lemma="strong:H1">el ángel</w> <w lemma="strong:H2">de Jehová</w>'
                          '<transChange type="added">los</transChange><w lemma="strong:H3">acose</w>. '
                          ) == "el ángel de Jehová los acose."
    assert bc.clean_verse('<w lemma="strong:H1">por la cual</w> <w lemma="strong:H2">Josué</w>'
                          '<transChange type="added">los</transChange> circuncidó') == "por la cual Josué los circuncidó"
    assert bc.clean_verse('<w lemma="strong:H1">Y no</w><transChange type="added">lo</transChange>'
                          '<w lemma="strong:H2">hizo saber</w> ') == "Y no lo hizo saber"


def test_spanish_opening_marks_keep_their_word():
    # Psalm 3:1, RV1909.
    raw = ('<w lemma="strong:H1732">de David</w>. ¡<w lemma="strong:H1121">OH</w> <w lemma="strong:H3068">Jehová'
           '</w>, <w lemma="strong:H4100">cuánto se</w> <w lemma="strong:H7231">han multiplicado</w> '
           '<w lemma="strong:H6862">mis enemigos</w>! <chapter eID="Ps.3"/>')
    assert bc.clean_verse(raw) == "de David. ¡OH Jehová, cuánto se han multiplicado mis enemigos!"


def test_colophons_of_letters_are_stripped():
    assert bc.strip_colophon("La gracia de nuestro Señor Jesucristo sea con todos vosotros. Amén. "
                             "Escrita de Roma con Epafrodito.") == (
        "La gracia de nuestro Señor Jesucristo sea con todos vosotros. Amén.")
    verse = "cuando una tal voz fué á él enviada de la magnífica gloria: Este es el amado Hijo mío."
    assert bc.strip_colophon(verse) == verse


def test_cleaning_never_leaves_tags_or_double_spaces():
    raw = '<w lemma="a">uno</w>  <note>x</note> <l sID="1"/> <w lemma="b">dos</w>\n<w lemma="c">tres</w>'
    cleaned = bc.clean_verse(raw)
    assert cleaned == "uno dos tres"
    assert "<" not in cleaned and "  " not in cleaned and bc.SEP not in cleaned


# --- alignment --------------------------------------------------------------

def verses(book, numbers, lengths):
    return [((book, 1, n), chr(ord("a") + i % 26) * length) for i, (n, length) in enumerate(zip(numbers, lengths))]


def test_alignment_follows_references_when_lengths_agree():
    lengths = [40, 90, 55, 120, 70, 100, 45, 160]
    spanish = verses("Ruth", range(1, 9), lengths)
    english = verses("Ruth", range(1, 9), [round(n * 1.05) for n in lengths])
    steps = bc.VerseAligner(spanish, english, (0.05, 0.1)).align()
    assert steps == [([i], [i]) for i in range(8)]


def test_alignment_repairs_a_numbering_shift():
    # Like Jonah 1:17 = RV1909 2:1: the Spanish numbers every verse one higher and
    # puts the last two English verses into its last verse.
    lengths = [40, 90, 55, 120, 70, 100, 45, 160, 60, 80]
    english = verses("Jonah", range(1, 11), lengths)
    spanish = verses("Jonah", range(2, 11), lengths[:8] + [lengths[8] + lengths[9]])
    steps = bc.VerseAligner(spanish, english, (0.0, 0.1)).align()
    assert steps == [([i], [i]) for i in range(8)] + [([8], [8, 9])]


def test_alignment_drops_a_verse_the_other_text_omits():
    # Like Acts 8:37: the WEB leaves the verse empty, the RV1909 has it.
    lengths = [40, 90, 55, 120, 70, 100]
    english = verses("Acts", [1, 2, 4, 5, 6], lengths[:2] + lengths[3:])
    spanish = verses("Acts", range(1, 7), lengths)
    steps = bc.VerseAligner(spanish, english, (0.0, 0.1)).align()
    assert ([2], []) in steps
    assert [s for s in steps if s[0] and s[1]] == [([0], [0]), ([1], [1]), ([3], [2]), ([4], [3]), ([5], [4])]


def test_pair_verses_reports_books_and_verses_on_one_side():
    verses_es = {("Ruth", 1, 1): "<w>Y aconteció</w>", ("Ruth", 1, 2): "<w>Y murió</w>", ("Ruth", 1, 3): " "}
    verses_en = {("Ruth", 1, 1): "It happened", ("Ruth", 1, 2): "He died", ("Ruth", 1, 3): "She left",
                 ("Tob", 1, 1): "Tobit"}
    pairs, report = bc.pair_verses(verses_es, verses_en, ["Ruth", "Tob"])
    assert [(ref, es, en) for ref, es, en in pairs] == [
        (("Ruth", 1, 1), "Y aconteció", "It happened"), (("Ruth", 1, 2), "Y murió", "He died")]
    assert report["dropped"]["only_in_english"] == {"verses": 1, "by_book": {"Tob": 1}}
    assert report["dropped"]["empty_after_cleaning"]["es"]["refs"] == ["Ruth 1:3"]
    assert report["dropped"]["unpaired"]["en"]["refs"] == ["Ruth 1:3"]


# --- splitting --------------------------------------------------------------

def fake_pairs():
    books = ["Gen", "Ruth", "Lam", "Amos", "Mic", "Hab", "Eph", "Phil", "1Thess", "Gal", "Col", "Jas", "1Pet", "Rev"]
    return [((book, c, v), "es %s %d:%d" % (book, c, v), "en %s %d:%d" % (book, c, v))
            for book in books for c in (1, 2) for v in (1, 2, 3)]


def test_split_keeps_whole_books_apart_and_uses_every_verse_once():
    pairs = fake_pairs()
    splits = bc.split_by_books(pairs)
    books = {name: {ref[0] for ref, _, _ in split} for name, split in splits.items()}
    assert books["test"] == set(bc.TEST_BOOKS) and books["dev"] == set(bc.DEV_BOOKS)
    assert not books["test"] & books["train"] and not books["test"] & books["dev"]
    assert not books["dev"] & books["train"]
    assigned = [pair for split in splits.values() for pair in split]
    assert sorted(assigned) == sorted(pairs)
    assert splits["train"] == [p for p in pairs if p[0][0] in ("Gen", "Rev")]


def test_recipe_book_lists():
    assert len(bc.TEST_BOOKS) == 7 and not set(bc.TEST_BOOKS) & set(bc.DEV_BOOKS)


def test_split_refuses_overlapping_or_missing_books():
    with pytest.raises(bc.RecipeError, match="both in test and dev"):
        bc.split_by_books(fake_pairs(), test_books=("Ruth", "Lam"), dev_books=("Lam",))
    with pytest.raises(bc.RecipeError, match="Tob"):
        bc.split_by_books(fake_pairs(), test_books=("Ruth", "Tob"), dev_books=("Lam",))


# --- writing ----------------------------------------------------------------

def test_write_lines_is_atomic(tmp_path):
    path = tmp_path / "train.es"
    bc.write_lines(path, ["uno", "dos"])
    assert path.read_text(encoding="utf-8") == "uno\ndos\n"
    with pytest.raises(ValueError):
        bc.write_lines(path, ["tres", "cuatro\ncinco"])
    assert path.read_text(encoding="utf-8") == "uno\ndos\n"  # the old file is untouched
    assert os.listdir(tmp_path) == ["train.es"]  # and no temporary file is left


def test_write_corpus_writes_aligned_files_and_json_last(tmp_path, monkeypatch):
    splits = bc.split_by_books(fake_pairs())
    seen_before_json = []
    real_write_json = bc.write_json

    def spy(path, obj):
        seen_before_json.extend(sorted(os.listdir(tmp_path / "out")))
        real_write_json(path, obj)

    monkeypatch.setattr(bc, "write_json", spy)
    bc.write_corpus(tmp_path / "out", splits, {"pairs": len(fake_pairs())})
    names = ["%s.%s" % (s, lang) for s in ("dev", "test", "train") for lang in ("en", "es")]
    assert seen_before_json == names
    for name in ("train", "dev", "test"):
        es = (tmp_path / "out" / (name + ".es")).read_text(encoding="utf-8").splitlines()
        en = (tmp_path / "out" / (name + ".en")).read_text(encoding="utf-8").splitlines()
        assert [e.replace("es ", "en ", 1) for e in es] == en and len(es) == len(splits[name])
    info = json.loads((tmp_path / "out" / "corpus.json").read_text(encoding="utf-8"))
    assert info["splits"]["test"] == {"verses": 42, "books": list(bc.TEST_BOOKS)}


# --- tools and messages -----------------------------------------------------

def test_package_version_from_file_name():
    assert bc.package_version("/tmp/sword-text-web_426.0-1_all.deb") == "426.0-1"
    assert bc.package_version("sword-text-sparv_1%3a2.60-1_all.deb") == "1:2.60-1"


def test_missing_tools_give_one_line_and_exit_code(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bc.shutil, "which", lambda name: None)
    assert bc.main(["--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: this recipe needs Debian's apt-get and dpkg (not found: apt-get, dpkg)"
    assert not (tmp_path / "out").exists()


def test_failed_download_names_the_package(monkeypatch, tmp_path):
    class Result:
        returncode, stderr = 100, "E: Unable to locate package sword-text-web\n"

    monkeypatch.setattr(bc.subprocess, "run", lambda *args, **kwargs: Result())
    with pytest.raises(bc.RecipeError, match="sword-text-web.*apt-get update"):
        bc.download_deb("sword-text-web", str(tmp_path))
