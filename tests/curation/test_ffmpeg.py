import os

from curation.ffmpeg import ffmpeg_path, ffmpeg_version


def test_ffmpeg_binary_is_available_without_root():
    path = ffmpeg_path()
    assert path.is_file() and os.access(path, os.X_OK)
    assert ffmpeg_version().startswith("ffmpeg version")
