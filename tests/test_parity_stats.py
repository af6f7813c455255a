"""tools/parity_stats.py: seed pairs read from bench_kernels' parity lines,
a run cut short left out, cases kept apart, files pooled."""
import math

from tool_loader import load_tool

ps = load_tool("parity_stats")

LOG = """\
cuDNN autotuning off
  parity shipped bayer torch: val PSNR 35.0 -> 40.000 dB after 300 steps, mean loss (last 50) 0.07, 9.7 s
  parity shipped bayer cuda: val PSNR 35.0 -> 40.100 dB after 300 steps, mean loss (last 50) 0.07, 9.0 s
  parity shipped xtrans torch: val PSNR 35.0 -> 38.000 dB after 300 steps, mean loss (last 50) 0.07, 9.0 s
  parity shipped xtrans cuda: val PSNR 35.0 -> 37.950 dB after 300 steps, mean loss (last 50) 0.07, 9.0 s
  parity shipped bayer torch: val PSNR 35.0 -> 41.000 dB after 300 steps, mean loss (last 50) 0.07, 9.7 s
  parity shipped bayer cuda: val PSNR 35.0 -> 40.900 dB after 300 steps, mean loss (last 50) 0.07, 9.0 s
  parity shipped bayer torch: val PSNR 35.0 -> 39.000 dB after 300 steps, mean loss (last 50) 0.07, 9.7 s
"""


def test_pairs_by_case_leave_the_cut_run_out():
    got = ps.pairs(LOG)
    assert set(got) == {("shipped", "bayer"), ("shipped", "xtrans")}
    assert [round(d, 3) for d in got["shipped", "bayer"]] == [0.1, -0.1]
    assert [round(d, 3) for d in got["shipped", "xtrans"]] == [-0.05]


def test_mean_and_standard_error():
    m, se = ps.mean_se([0.1, -0.1, 0.3])
    assert math.isclose(m, 0.1) and math.isclose(se, 0.2 / math.sqrt(3))
    assert math.isnan(ps.mean_se([0.2])[1])


def test_files_are_pooled(tmp_path, capsys):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(LOG)
    b.write_text(LOG)
    assert ps.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "| shipped bayer | 4 | +0.000 |" in out and "| shipped xtrans | 2 | -0.050 |" in out


def test_no_pairs_is_an_error(tmp_path, capsys):
    f = tmp_path / "empty.txt"
    f.write_text("nothing here\n")
    assert ps.main([str(f)]) == 1
    assert "no complete seed pair" in capsys.readouterr().err
