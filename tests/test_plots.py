"""Run-folder figures: the curves PNG from a Lightning CSV log."""

from retrerank.plots import plot_curves, read_curves

LOG = """epoch,step,train/loss,train/loss_bi,val/bi/rsum,val/rerank@20/rsum
0,9,4.5,3.2,,
0,19,3.0,2.0,,
0,19,,,500.0,510.5
1,29,2.0,1.5,,
"""


def test_read_curves_keeps_each_series_with_its_steps(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(LOG)
    curves = read_curves(path)
    assert curves["train/loss"] == [(9, 4.5), (19, 3.0), (29, 2.0)]
    assert curves["val/rerank@20/rsum"] == [(19, 510.5)]
    assert "epoch" not in curves and "step" not in curves


def test_plot_curves_writes_a_png_and_skips_a_log_without_training(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(LOG)
    png = plot_curves(path, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path.write_text("epoch,step,test/bi/rsum\n0,0,500\n")
    assert plot_curves(path, tmp_path / "other.png") is None and not (tmp_path / "other.png").exists()
