"""benchmarks/video.py: a tiny run writes its section with every stage and its share."""

from benchmarks import video as video_benchmark


def test_tiny_run_writes_the_section(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    video_benchmark.main(["--height=64", "--width=96", "--frames=4", "--batch_size=2",
                          "--rounds=1", f"--output={output}"])
    section = output.read_text()
    assert section.startswith("<!-- video:begin -->")
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == [
        "end to end", "decode", "network", "encode"]
    assert rows[0].rstrip(" |").endswith("100%")
