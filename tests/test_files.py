"""damono_jax.files: atomic writes leave the old file or the new one, never a temporary."""

import json

import pytest

from damono_jax import files


def test_atomic_write_replaces_and_cleans_up_on_failure(tmp_path):
    path = tmp_path / "results.json"
    files.atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2) + "\n"

    def failing(temporary):
        temporary.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(path, failing)
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_temporary_keeps_the_suffix(tmp_path):
    seen = []
    files.atomic_write(tmp_path / "depth.png", lambda temporary: (seen.append(temporary.name),
                                                                  temporary.write_bytes(b"x")))
    assert seen == [".depth.png.tmp.png"] and (tmp_path / "depth.png").read_bytes() == b"x"
    files.atomic_write_text(tmp_path / "a.txt", "text")
    assert (tmp_path / "a.txt").read_text() == "text"
