"""damono_jax.tools.markdown: generated sections inside hand-edited markdown files."""

import pytest

from damono_jax.tools import markdown


def test_write_markdown_section_replaces_only_its_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nother text\n")
    markdown.write_markdown_section(path, "train_step", "first")
    markdown.write_markdown_section(path, "other", "kept")
    markdown.write_markdown_section(path, "train_step", "second")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\nother text\n")
    assert "first" not in text and text.count("second") == 1 and "kept" in text
    assert text.index("second") < text.index("kept")  # replaced in place
    path.write_text(text.replace("<!-- other:end -->", ""))
    with pytest.raises(ValueError, match="markers for 'other' are unbalanced"):
        markdown.write_markdown_section(path, "other", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["BENCHMARKS.md"]  # no temp files left
