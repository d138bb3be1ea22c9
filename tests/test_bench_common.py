"""The benchmarks' shared timer, names and result files (benchmarks/common.py)."""

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import common  # noqa: E402


class FakeClock:
    """A clock that only moves when a timed function says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_measure_takes_the_median_after_warmup_and_alternates():
    clock, calls = FakeClock(), []
    durations = {"a": [100.0, 90.0, 1.0, 5.0, 3.0], "b": [50.0, 40.0, 2.0, 2.0, 9.0]}

    def timed(name):
        def fn(i):
            calls.append((name, i))
            clock.now += durations[name][i]
        return fn

    result = common.measure({"a": timed("a"), "b": timed("b")}, repeats=3, warmup=2, clock=clock)
    assert result == {"a": 3.0, "b": 2.0}  # medians of the last three; warm-up rounds dropped
    assert calls == [(n, i) for i in range(5) for n in ("a", "b")]  # a, b, a, b, ...


def test_measure_with_an_even_count_averages_the_middle_two():
    clock = FakeClock()
    steps = iter([7.0, 1.0, 2.0, 10.0, 4.0])

    def fn(i):
        clock.now += next(steps)

    assert common.measure({"x": fn}, repeats=4, warmup=1, clock=clock) == {"x": 3.0}
    with pytest.raises(ValueError, match="repeats"):
        common.measure({"x": fn}, repeats=0)


def test_ratio_text_and_size_batch():
    assert common.ratio_text(1.234) == "= 1.23x"
    assert common.ratio_text(0.996) == "= 1.00x"
    assert common.size_batch("128x16") == (128, 16)
    for bad in ("128", "ax2", "16x1", "128x0"):
        with pytest.raises(argparse.ArgumentTypeError, match=bad):
            common.size_batch(bad)


@pytest.mark.parametrize("name, slug", [
    ("AMD EPYC 7B13 64-Core Processor", "epyc-7b13"),
    ("AMD EPYC", "epyc"),
    ("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "xeon-platinum-8481c"),
    ("NVIDIA H100 80GB HBM3", "h100-80gb-hbm3"),
    ("NVIDIA GeForce RTX 4090", "rtx-4090"),
    ("", "unknown"),
])
def test_chip_names_become_file_name_words(name, slug):
    assert common.chip_slug(name) == slug


def test_machine_tag_names_device_threads_and_chip():
    cpu = {"device": "cpu", "threads": 2, "cpu": "AMD EPYC 7B13 64-Core Processor"}
    assert common.machine_tag(cpu) == "cpu-2threads-epyc-7b13"
    assert common.machine_tag({**cpu, "threads": 1}) == "cpu-1thread-epyc-7b13"
    assert common.machine_tag({"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3"}) == \
        "cuda-h100-80gb-hbm3"


def test_result_file_holds_command_environment_and_rows(tmp_path):
    path = common.result_path("speed", torch.device("cpu"), tmp_path)
    threads = torch.get_num_threads()
    assert path.parent == tmp_path and path.name.startswith(f"speed-cpu-{threads}thread")
    rows = [{"bench": "train", "ratio": 1.2}]
    common.write_result(path, rows, torch.device("cpu"))
    common.write_result(None, rows, torch.device("cpu"))  # no --out: nothing written
    saved = json.loads(path.read_text())
    assert set(saved) == {"command", "environment", "rows"} and saved["rows"] == rows
    assert saved["environment"]["threads"] == threads
    assert saved["environment"]["torch"] == torch.__version__
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_rendered_batch_is_rgb_in_unit_range_with_class_ids():
    images, labels = common.rendered_batch(3, 2, 48)
    assert images.shape == (2, 3, 48, 48) and labels.shape == (2, 48, 48)
    assert 0 <= images.min() and images.max() <= 1 and labels.dtype == torch.long
    assert not torch.equal(images[0], images[1])  # two different renders
