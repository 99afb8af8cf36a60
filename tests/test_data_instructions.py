from collections import Counter

import pytest

from rare.data import DataError
from rare.data.instructions import InstructionTable

TSV = (
    "query_modality\tcand_modality\tdataset\tdataset_id\tp1\tp2\tp3\tp4\n"
    "text\timage\tMSCOCO\t9\tFind an image.\tShow a picture.\tRetrieve the photo.\tGet the image.\n"
    "image\ttext\tMSCOCO\t9\tCaption it.\tDescribe it.\t\t\n"
)


def test_lookup_and_deterministic_choice(tmp_path):
    p = tmp_path / "i.tsv"
    p.write_text(TSV)
    table = InstructionTable.load(p)
    assert table.options(9, "image", "text") == ("Caption it.", "Describe it.")  # empty cells ignored
    assert table.names[9] == "mscoco"
    picks = [table.choose(f"9:{i}", 9, "text", "image", seed=0) for i in range(400)]
    assert picks == [table.choose(f"9:{i}", 9, "text", "image", seed=0) for i in range(400)]
    counts = Counter(picks)
    assert set(counts) == set(table.options(9, "text", "image")) and min(counts.values()) > 60
    assert picks != [table.choose(f"9:{i}", 9, "text", "image", seed=1) for i in range(400)]
    with pytest.raises(DataError, match=r"i.tsv: no instruction for dataset 9, text -> text"):
        table.choose("9:1", 9, "text", "text")


def test_bad_rows(tmp_path):
    p = tmp_path / "i.tsv"
    p.write_text(TSV + "video\ttext\tX\t1\tp\n")
    with pytest.raises(DataError, match=r"i.tsv:4: query_modality 'video'"):
        InstructionTable.load(p)
    p.write_text(TSV + "text\ttext\tX\tone\tp\n")
    with pytest.raises(DataError, match=r"i.tsv:4: dataset_id 'one'"):
        InstructionTable.load(p)
    p.write_text(TSV + "text\timage\tMSCOCO\t9\tp\n")
    with pytest.raises(DataError, match=r"i.tsv:4: duplicate instruction group"):
        InstructionTable.load(p)
