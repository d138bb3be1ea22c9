"""benchmarks/bench_ensemble.py: every setting is timed in one run, each as the protocol it
names, and the separate VLM pass at each --dense-input-scales is a row of its own."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_ensemble  # noqa: E402


def test_dense_input_scales_add_rows_with_their_own_reference(tmp_path, capsys):
    out = tmp_path / "rows.json"
    bench_ensemble.main(["--device", "cpu", "--sizes", "64", "--repeats", "1",
                         "--dense-input-scales", "0.5", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    by_setting = {r["setting"]: r for r in rows}
    assert set(by_setting) == {*bench_ensemble.SETTINGS, "ensemble, separate VLM, dense x0.5"}
    scaled = by_setting["ensemble, separate VLM, dense x0.5"]
    assert scaled["protocol"] == "ensemble" and scaled["size"] == 64
    assert by_setting["segmenter"]["ratio"] == 1.0
    assert scaled["ratio"] == pytest.approx(scaled["ms"] / scaled["reference_ms"], rel=1e-2)
    assert "dense x0.5" in capsys.readouterr().out


def test_a_bad_scale_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench_ensemble.main(["--dense-input-scales", "0", "--repeats", "1"])
    assert "--dense-input-scales must be positive, got [0.0]" in capsys.readouterr().err
