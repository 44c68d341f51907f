"""The printed results table."""
import math

from retrerank.report import COLUMNS, format_table, table_rows


def test_format_table_shows_map_at_r_after_rsum():
    metrics = {
        "test/bi/i2t_r1": 10.0, "test/bi/i2t_r5": 20.0, "test/bi/i2t_r10": 30.0,
        "test/bi/t2i_r1": 11.0, "test/bi/t2i_r5": 21.0, "test/bi/t2i_r10": 31.0, "test/bi/rsum": 123.0,
        "test/bi/i2t_map_at_r": 12.34, "test/bi/t2i_map_at_r": 56.78,
        "test/bi/i2t_ms_per_query": 0.125, "test/bi/t2i_ms_per_query": 0.5,
        "test/cross_all/rsum": 0.0,  # an older metrics file: no mAP@R
    }
    header, bi, cross_all = format_table(metrics).splitlines()
    names = header.split()
    assert names.index("mAP@R") == names.index("rsum") + 2 and names.count("mAP@R") == 2
    assert "i2t mAP@R  t2i mAP@R" in header
    cells = bi.split()
    assert cells[0] == "bi" and cells[7:] == ["123.0", "12.3", "56.8", "0.12", "0.50"]
    assert cross_all.split()[8:10] == ["nan", "nan"]
    assert COLUMNS[8:10] == ["i2t_map_at_r", "t2i_map_at_r"]
    assert table_rows(metrics)[0][8:10] == [12.34, 56.78] and math.isnan(table_rows(metrics)[1][8])
