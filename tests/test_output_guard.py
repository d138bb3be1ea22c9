"""Outputs never replace inputs or files celseg did not write, and are written atomically."""

from __future__ import annotations

import errno
import os

import pytest

from celseg.errors import OutputError
from celseg.io import atomic
from celseg.io.outputs import MANIFEST, OutputGuard, written_by_celseg


def _dataset(root):
    for sub in ("images/val", "annotations/val"):
        (root / sub).mkdir(parents=True)
    (root / "classes.json").write_text("{}")
    return root


def test_inputs_are_never_outputs_even_with_overwrite(tmp_path):
    data = _dataset(tmp_path / "data")
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"x")
    guard = OutputGuard("test", overwrite=True).read_dataset(data).read_files(photo)
    for bad in (photo, data / "classes.json", data / "images" / "val" / "a.png",
                data / "annotations"):
        with pytest.raises(OutputError, match=str(bad)):
            guard.claim(files=[bad])
    with pytest.raises(OutputError, match="dataset folder"):
        guard.claim(folders=[data])
    guard.claim(files=[data / "contact_sheet.png"])  # the dataset root may hold outputs


def test_foreign_files_need_overwrite_and_celseg_files_do_not(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"mine")
    with pytest.raises(OutputError, match=r"a.png.*--overwrite"):
        OutputGuard("test").claim(files=[out / "a.png", out / "b.png"])
    assert not (out / MANIFEST).exists()  # nothing recorded when one output is refused
    OutputGuard("test", overwrite=True).claim(files=[out / "a.png", out / "b.png"])
    assert written_by_celseg(out) == {"a.png", "b.png"}
    OutputGuard("test").claim(files=[out / "a.png"])  # now celseg's own


def test_a_folder_claim(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    with pytest.raises(OutputError, match=r"notes.txt.*--overwrite"):
        OutputGuard("test").claim(folders=[user])
    OutputGuard("test").claim(folders=[tmp_path / "new"])
    (tmp_path / "new" / "x.json").write_text("{}")
    OutputGuard("test").claim(folders=[tmp_path / "new"], files=[tmp_path / "new" / "x.json"])
    with pytest.raises(OutputError, match="is a file"):
        OutputGuard("test").claim(folders=[user / "notes.txt"])


def test_record_after_writing(tmp_path):
    guard = OutputGuard("test")
    guard.claim(files=[tmp_path / "s.png"], record_files=False)
    assert not (tmp_path / MANIFEST).exists()
    guard.record(tmp_path / "s.png")
    assert written_by_celseg(tmp_path) == {"s.png"}


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    atomic.write_json(path, {"v": 1})
    with pytest.raises(RuntimeError), atomic.atomic_paths(path) as (tmp,):
        tmp.write_text('{"v": 2, "half')
        raise RuntimeError("crash while writing")
    assert path.read_text() == '{\n "v": 1\n}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temporary left

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.Path, "write_text", full)
    with pytest.raises(OutputError, match=r"report.json.*No space left"):
        atomic.write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == '{\n "v": 1\n}'


def test_several_files_are_replaced_only_when_all_are_complete(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("old a")
    b.write_text("old b")
    with pytest.raises(OutputError, match="Permission"), atomic.atomic_paths(a, b) as (ta, tb):
        ta.write_text("new a")
        raise OSError(errno.EACCES, "Permission denied")
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    with atomic.atomic_paths(a, b) as (ta, tb):
        ta.write_text("new a")
        tb.write_text("new b")
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
