import json

import pytest

from tli_lightning.errors import TLIError
from tli_lightning.lexicon import read_lexicon, resolve_leakage, shared_words, split_control


def test_tsv_with_named_columns_normalises_and_counts_duplicates(tmp_path):
    path = tmp_path / "lex.tsv"
    path.write_text(
        "pos\tsw\ten\nn\tmaji\twater\nn\t  mama   mkwe \tmother-in-law\nn\tmaji\twater\nadj\t-anana\tthin\n",
        encoding="utf-8",
    )
    lexicon = read_lexicon(path)
    assert lexicon.pairs == [("maji", "water"), ("mama mkwe", "mother-in-law"), ("-anana", "thin")]
    assert lexicon.duplicates_dropped == 1


def test_paper_json_format(tmp_path):
    path = tmp_path / "train.json"
    entries = [
        {"swahili": "haba na haba hujaza", "english": "little by little fills the measure"},
        {"swahili": "-anana", "english": "thin"},
    ]
    path.write_text(json.dumps(entries), encoding="utf-8")
    assert read_lexicon(path).pairs == [
        ("haba na haba hujaza", "little by little fills the measure"),
        ("-anana", "thin"),
    ]


def test_other_language_pair_through_column_names(tmp_path):
    path = tmp_path / "yo.tsv"
    path.write_text("yo\ten\nomi\twater\n", encoding="utf-8")
    assert read_lexicon(path, "yo", "en").pairs == [("omi", "water")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("sw\tenglish\nmaji\twater\n", r"lex.tsv:1: header .* no column \['en'\]"),
        ("sw\ten\nmaji\twater\nmoto\n", r"lex.tsv:3: expected 2 tab-separated fields, got 1: \['moto'\]"),
        ("sw\ten\nmaji\t \n", r"lex.tsv:2: entries must be non-empty strings"),
        ("", "empty"),
    ],
)
def test_bad_tsv_names_file_line_and_value(tmp_path, content, message):
    path = tmp_path / "lex.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TLIError, match=message):
        read_lexicon(path)


def test_bad_json_names_the_entry(tmp_path):
    path = tmp_path / "lex.json"
    path.write_text('[{"swahili": "maji", "english": "water"},\n\n  {"swahili": "maji"}]', encoding="utf-8")
    with pytest.raises(TLIError, match=r"lex.json:3: entry \{'swahili': 'maji'\}"):  # the line the entry is on
        read_lexicon(path)
    path.write_text('[{"swahili": "maji",\n "english": }]', encoding="utf-8")
    with pytest.raises(TLIError, match=r"lex.json:2: not valid JSON"):
        read_lexicon(path)


def test_missing_file():
    with pytest.raises(TLIError, match="not found: /no/such.tsv"):
        read_lexicon("/no/such.tsv")


def _many_pairs():
    # Hubs: several sources share targets and vice versa, so naive splits would leak.
    pairs = [(f"s{i}", f"t{i // 2}") for i in range(200)] + [(f"s{i}", f"u{i}") for i in range(0, 200, 7)]
    return pairs


def test_control_split_is_leakage_free_seeded_and_close_to_the_fraction():
    pairs = _many_pairs()
    trained, control = split_control(pairs, 0.1, seed=3)
    assert shared_words(trained, control) == (set(), set())
    assert sorted(trained + control) == sorted(pairs)
    assert abs(len(control) - 0.1 * len(pairs)) <= 3
    assert split_control(pairs, 0.1, seed=3) == (trained, control)
    assert split_control(pairs, 0.1, seed=4) != (trained, control)


def test_leakage_is_refused_or_dropped_from_the_trained_side():
    trained = [("maji", "water"), ("moto", "fire"), ("jua", "sun")]
    control = [("maji", "liquid"), ("joto", "fire")]
    with pytest.raises(TLIError, match="1 source and 1 target words occur in both"):
        resolve_leakage(trained, control, "error")
    kept, dropped = resolve_leakage(trained, control, "drop")
    assert kept == [("jua", "sun")] and dropped == 2


def test_real_dictionary_splits_cleanly(shared_data):
    lexicon = read_lexicon(shared_data / "lexicon_sw_en.tsv")
    assert len(lexicon.pairs) == 2171
    trained, control = split_control(lexicon.pairs, 0.1, seed=42)
    assert shared_words(trained, control) == (set(), set())
    assert 150 < len(control) < 300
