import pytest

from rare.data import DataError, MBEIRRoot
from rare.data.records import Candidate, Enhanced, Query
from rare.data.views import candidate_text, query_text, side_file
from rare.stages.variants import variant_sides


def enh(txt, status="ok"):
    return Enhanced(op="caption", status=status, txt=txt)


def test_combine_modes_and_fallback():
    passage = Candidate("1:1", "A passage.", "mbeir_images/x.png", "image,text", enhanced=enh("red car"))
    image_only = Candidate("1:2", "", "mbeir_images/y.png", "image", enhanced=enh("blue boat"))
    failed = Candidate("1:3", "orig", None, "text", enhanced=Enhanced("refine", "failed", None, "empty output"))
    assert candidate_text(passage, False, "append") == "A passage."
    assert candidate_text(passage, True, "append") == "A passage. Visual context: red car"
    assert candidate_text(passage, True, "replace") == "red car"
    assert candidate_text(image_only, True, "append") == "blue boat"
    assert candidate_text(failed, True, "replace") == "orig"
    q = Query("7:1", "Make it green please", "mbeir_images/q.png", "image,text", 7, ["7:9"],
              enhanced=enh("green square"))
    assert query_text(q, "Find the edited image.", True, "replace") == "Find the edited image. green square"
    assert query_text(q, "Find the edited image.", False, "replace") == "Find the edited image. Make it green please"
    img_q = Query("7:2", "", "mbeir_images/q.png", "image", 4, ["7:9"])
    assert query_text(img_q, "Find a similar image.", True, "replace") == "Find a similar image."
    assert candidate_text(passage, True, "prepend") == "Visual context: red car. A passage."
    assert candidate_text(image_only, True, "prepend") == "blue boat"
    assert candidate_text(failed, True, "prepend") == "orig"
    with pytest.raises(ValueError, match="unknown text mode"):
        candidate_text(passage, True, "interleave")
    with pytest.raises(ValueError, match="unknown variant 'all'"):
        variant_sides("all")


def test_side_file(tmp_path, tiny_root_session):
    raw = MBEIRRoot(tiny_root_session)
    pool = raw.global_pool("test")
    assert side_file(raw, None, pool, False) == pool
    with pytest.raises(ValueError, match="no enhanced directory"):
        side_file(raw, None, pool, True)
    with pytest.raises(DataError, match="run `rare enhance`"):
        side_file(raw, tmp_path, pool, True)
    mirror = tmp_path / "cand_pool/global" / pool.name
    mirror.parent.mkdir(parents=True)
    mirror.write_text("")
    assert side_file(raw, tmp_path, pool, True) == mirror
