"""`videogen bench`: picking sections, and the ad-batch section at a tiny size on a local Ray.

The section's numbers are checked for consistency with each other, never against a time: the
targets are for the bench's own 48-clip batch, not for this one."""

import textwrap

import pytest

from videogen.bench import AD_BUSY_TARGET, AD_CLIPS, AD_RERUN_TARGET, ad_batch
from videogen.cli import main

SPEC = """\
name: tiny
template: "a {product} on a table"
variables:
  product: [cup, lamp]
formats: [square]
candidates: 2
keep: 1
pixels: 1024
clip: {model: bench-cpu, frames: 9, fps: 8, steps: 2}
"""


def test_the_compute_floor_needs_the_parallelism_section(capsys):
    assert main(["bench", "--sections", "4", "5"]) == 2
    assert "sections=[4, 5]: section 4 (compute floor) is a share of section 3's 1-actor time; add 3" in capsys.readouterr().err


def test_an_unknown_section_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--sections", "7"])
    assert e.value.code == 2 and "invalid choice: 7" in capsys.readouterr().err


def test_the_ad_batch_section_reports_a_first_run_and_a_rerun(ray_local, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(SPEC))
    lines = []
    m = ad_batch(spec, {"model": "tiny-random"}, say=lines.append)  # replaces the spec's model: 2 variants x 2 seeds

    assert m["clips"] == 4 and m["workers"] == 2
    assert 0 < m["utilisation"] <= 1
    assert 0 < m["rerun_seconds"] < m["seconds"] and 0 < m["rerun_ratio"] < 1
    assert m["rerun_ratio"] == pytest.approx(m["rerun_seconds"] / m["seconds"], abs=1e-3)
    assert "cache_seconds" not in m  # the bench leaves out measure_batch's third run
    assert m["met"] == {"clips": False, "actors": True, "utilisation": m["utilisation"] >= AD_BUSY_TARGET,
                        "rerun_ratio": m["rerun_ratio"] <= AD_RERUN_TARGET}
    rows = {line[3:27].strip(): line[27:].split() for line in lines[2:]}
    assert lines[0] == "   2 variants x 2 candidates: 4 clips of 9 frames at 32x32, 2 steps, guidance 5; 2 MP4s kept"
    assert rows["clips"] == ["4", str(AD_CLIPS), "missed"]
    assert rows["actors"] == ["2", "2", "met"]
    assert rows["actors busy (manifest)"][:3] == [f"{100 * m['utilisation']:.1f}%", ">=", "90%"]
    assert rows["re-run / first run"][:3] == [f"{100 * m['rerun_ratio']:.2f}%", "<=", "5%"]
    assert rows["first run, wall"] == [f"{m['seconds']:.1f}", "s", "-"]
