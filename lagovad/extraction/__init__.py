"""Frame-feature extraction, split by concern (the front door is :mod:`lagovad.extract`).

- :mod:`~lagovad.extraction.jobs`: the sampling protocol, jobs, summary, ``ExtractError``;
- :mod:`~lagovad.extraction.sinks`: where features go (a folder in the authors' layout, or a
  prevad store with one atomic commit per video) and how failures are recorded;
- :mod:`~lagovad.extraction.pipeline`: decode threads, cross-video batching, the encoder loop
  (``run_extraction``), used by ``extract`` and by ``detect``.
"""

from lagovad.extraction.jobs import (
    FAILURES_FILE,
    LOCAL_SOURCE,
    PROTOCOL_FILE,
    STAGE,
    VIDEO_EXTENSIONS,
    ExtractError,
    ExtractSummary,
    Protocol,
    VideoJob,
    make_protocol,
)
from lagovad.extraction.pipeline import run_extraction
from lagovad.extraction.sinks import FolderSink, StoreSink, save_npy

__all__ = [
    "FAILURES_FILE", "LOCAL_SOURCE", "PROTOCOL_FILE", "STAGE", "VIDEO_EXTENSIONS", "ExtractError",
    "ExtractSummary", "FolderSink", "Protocol", "StoreSink", "VideoJob", "make_protocol",
    "run_extraction", "save_npy",
]
