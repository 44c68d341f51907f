"""The printed results table (and results.md): its R@k columns are the run's eval.ks."""

import math

from retrerank.report import columns, format_markdown, format_table, recall_ks, table_rows

METRICS = {
    "test/bi/i2t_r1": 10.0,
    "test/bi/i2t_r5": 20.0,
    "test/bi/i2t_r10": 30.0,
    "test/bi/t2i_r1": 11.0,
    "test/bi/t2i_r5": 21.0,
    "test/bi/t2i_r10": 31.0,
    "test/bi/rsum": 123.0,
    "test/bi/i2t_map_at_r": 12.34,
    "test/bi/t2i_map_at_r": 56.78,
    "test/bi/i2t_ms_per_query": 0.125,
    "test/bi/t2i_ms_per_query": 0.5,
    "test/cross_all/rsum": 0.0,  # an older metrics file: no mAP@R
}


def test_format_table_shows_map_at_r_after_rsum():
    header, bi, cross_all = format_table(METRICS).splitlines()
    names = header.split()
    assert names.index("mAP@R") == names.index("rsum") + 2 and names.count("mAP@R") == 2
    assert "i2t mAP@R  t2i mAP@R" in header
    cells = bi.split()
    assert cells[0] == "bi" and cells[7:] == ["123.0", "12.3", "56.8", "0.12", "0.50"]
    assert cross_all.split()[8:10] == ["nan", "nan"]
    assert columns(METRICS)[8:10] == ["i2t_map_at_r", "t2i_map_at_r"]
    assert table_rows(METRICS)[0][8:10] == [12.34, 56.78] and math.isnan(table_rows(METRICS)[1][8])


def test_the_recall_columns_are_the_ks_of_the_run():
    metrics = {
        "test/bi/i2t_r1": 40.0,
        "test/bi/i2t_r5": 80.0,
        "test/bi/t2i_r1": 30.0,
        "test/bi/t2i_r5": 70.0,
        "test/bi/rsum": 220.0,
    }
    assert recall_ks(metrics) == [1, 5]
    header, row = format_table(metrics).splitlines()
    assert header.split()[:7] == ["method", "i2t", "R@1", "R@5", "t2i", "R@1", "R@5"]
    assert "R@10" not in header
    assert row.split()[:6] == ["bi", "40.0", "80.0", "30.0", "70.0", "220.0"]  # no nan for an R@10 never computed


def test_results_markdown_has_one_row_per_method():
    lines = format_markdown(METRICS).splitlines()
    assert lines[0].startswith("| method | i2t R@1 | R@5 | R@10 | t2i R@1 |") and lines[1].startswith("|---|")
    assert lines[2].startswith("| bi | 10.0 | 20.0 | 30.0 | 11.0 |") and lines[3].startswith("| cross_all |")
