"""MP4s read back with PyAV have the codec, pixel format, frames, fps, size and metadata asked for."""

import json

import numpy as np
import pytest

from videogen.encode import check_output_path, read_mp4, write_mp4
from videogen.errors import RequestError


def gradient_frames(n=13, h=48, w=64):
    t = np.arange(n)[:, None, None]
    y = np.arange(h)[None, :, None]
    x = np.arange(w)[None, None, :]
    r, g, b = np.broadcast_arrays((x * 4 + t * 10) % 256, (y * 5) % 256, 128 + 0 * (x + y + t))
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def test_mp4_round_trip(tmp_path):
    frames = gradient_frames()
    out = write_mp4(frames, tmp_path / "clip.mp4", fps=12, metadata={"prompt": "a test", "seed": 7})
    back, info = read_mp4(out)
    assert back.shape == frames.shape
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["fps"] == 12 and (info["width"], info["height"]) == (64, 48)
    assert np.abs(back.astype(int) - frames).mean() < 4  # crf 18 is near-lossless on a smooth gradient
    assert info["metadata"]["title"] == "a test"
    assert json.loads(info["metadata"]["comment"])["seed"] == 7
    assert json.loads((tmp_path / "clip.json").read_text()) == {"prompt": "a test", "seed": 7}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.json", "clip.mp4"]


def test_the_same_frames_encode_to_the_same_mp4(tmp_path):
    """Blocky 64x64 frames (as small models make them): with x264's macroblock tree, repeated encodes
    differed by up to 19 levels inside one GOP in most runs."""
    cells = np.random.default_rng(0).integers(0, 256, (81, 8, 8, 3)).astype(np.float64)
    cells = 0.6 * cells + 0.4 * np.roll(cells, 1, axis=0)
    frames = np.kron(cells, np.ones((1, 8, 8, 1))).astype(np.uint8)
    first, _ = read_mp4(write_mp4(frames, tmp_path / "0.mp4", fps=8))
    for i in range(1, 6):
        again, _ = read_mp4(write_mp4(frames, tmp_path / f"{i}.mp4", fps=8))
        differ = np.abs(again.astype(int) - first).reshape(81, -1).max(axis=1)
        assert not differ.any(), f"encode {i}: frames {np.flatnonzero(differ).tolist()} differ by up to {differ.max()} levels"
    assert (tmp_path / "0.mp4").read_bytes() == (tmp_path / "5.mp4").read_bytes()


def test_faststart_puts_the_index_first(tmp_path):
    out = write_mp4(gradient_frames(), tmp_path / "clip.mp4", fps=8)
    head = out.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and head.find(b"moov") < max(head.find(b"mdat"), 4096)


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="even H and W"):
        write_mp4(gradient_frames(h=47), tmp_path / "clip.mp4", fps=8)
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_the_permissions_of_any_new_file(tmp_path):
    """Written under a temporary name and renamed, an MP4, its sidecar and a cache entry still get
    0666 less the umask, as a file opened for writing would (not mkstemp's 0600, which would hide a
    team's clips on a shared folder from everyone but their owner)."""
    import os
    import stat

    from videogen.cache import save_payload

    old = os.umask(0o022)
    try:
        out = write_mp4(gradient_frames(n=5), tmp_path / "clip.mp4", fps=8)
        save_payload(tmp_path / "entry.npz", np.zeros(3))
        (tmp_path / "plain").write_bytes(b"")
        os.umask(0o027)
        strict = write_mp4(gradient_frames(n=5), tmp_path / "strict.mp4", fps=8)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"clip.mp4": 0o644, "clip.json": 0o644, "entry.npz": 0o644, "plain": 0o644,
                     "strict.mp4": 0o640, "strict.json": 0o640}, {k: oct(v) for k, v in modes.items()}
    assert out.exists() and strict.exists()


def test_an_existing_file_is_replaced_whole(tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"old")
    write_mp4(gradient_frames(n=5), target, fps=8)
    assert read_mp4(target)[0].shape[0] == 5


@pytest.mark.parametrize(
    "name,fragment",
    [("missing/clip.mp4", "does not exist"), ("clip.avi", "must end in .mp4"), ("adir.mp4", "is a directory")],
)
def test_unwritable_outputs_are_refused(tmp_path, name, fragment):
    (tmp_path / "adir.mp4").mkdir()
    with pytest.raises(RequestError, match=fragment) as info:
        check_output_path(tmp_path / name)
    assert info.value.field == "output"


def test_a_url_output_is_uploaded_whole_with_its_sidecar():
    import fsspec

    url = "memory://bucket/clips/clip.mp4"
    assert check_output_path(url) == url
    write_mp4(gradient_frames(n=7), url, fps=8, metadata={"prompt": "to the bucket"})
    fs = fsspec.filesystem("memory")
    assert json.loads(fs.cat("/bucket/clips/clip.json")) == {"prompt": "to the bucket"}
    local = fs.cat("/bucket/clips/clip.mp4")
    assert local[4:8] == b"ftyp" and len(local) > 500


@pytest.mark.parametrize("url,fragment", [("nosuchfs://b/x.mp4", "no filesystem for nosuchfs://"), ("memory://b/x.avi", "must end in .mp4")])
def test_bad_urls_are_refused(url, fragment):
    with pytest.raises(RequestError, match=fragment):
        check_output_path(url)
