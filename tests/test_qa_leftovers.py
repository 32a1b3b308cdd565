"""QA leftovers: input JSON saved with a UTF-8 byte-order mark, extract's output folder against
expand's and photo-shards', a finished extract rerun, and orphaned expand workers after a kill."""

from __future__ import annotations

from pathlib import Path

import pytest

from augment.config import SourceConfig
from augment.sources import read_source
from cli_checks import assert_one_line_error, run_cli
from sources_factory import make_coco, make_label_map, make_mask_pairs

BOM = b"\xef\xbb\xbf"


def _with_bom(path: Path) -> None:
    path.write_bytes(BOM + path.read_bytes())


# ------------------------------------------------------------ byte-order marks
@pytest.mark.parametrize("make, json_name, categories", [
    (make_coco, "instances.json", ["shirt", "shoe"]),
    (make_label_map, "label_list.json", ["jacket", "jacket", "skirt"]),
    (make_mask_pairs, "categories.json", ["object", "cup", "bag"]),
])
def test_source_json_saved_with_a_byte_order_mark_is_read(tmp_path, make, json_name, categories):
    """Notepad and Excel save "UTF-8" with a byte-order mark: the COCO .json, label_list.json and
    categories.json were refused ('Unexpected UTF-8 BOM')."""
    source = make(tmp_path / "source")
    _with_bom(source / json_name)
    items = list(read_source(source, SourceConfig()))
    assert [item.category for item in items] == categories


def test_source_json_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    source = make_label_map(tmp_path / "source")
    (source / "label_list.json").write_bytes('["null", "caf\xe9"]'.encode("latin-1"))
    result = run_cli("photo-shards", source, "-o", tmp_path / "out")
    assert_one_line_error(result, 2, str(source / "label_list.json"), "not UTF-8")
    assert not (tmp_path / "out").exists()


def test_a_yaml_config_and_a_pairs_file_with_a_byte_order_mark_share_the_reader(tmp_path):
    from augment.config import read_yaml_mapping
    from pipelines.search_jobs import read_pairs

    config = tmp_path / "config.yaml"
    config.write_bytes(BOM + b"seed: 3\n")
    assert read_yaml_mapping(config) == {"seed": 3}
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(BOM + b'{"query": "q.png", "medium": "a.jpg"}\n')
    assert [job.error for job in read_pairs(pairs)] == [None]
