"""Video fingerprints for duplicate detection: a content hash of the file and perceptual hashes
of frames sampled at a fixed rate.

- **Exact**: SHA-256 of the file's bytes (:func:`file_sha256`).
- **Near**: :func:`frame_hashes` decodes the video once and takes the first frame at or after
  every ``1 / rate`` seconds of presentation time (fixed in time, not in frames, so a copy at
  another frame rate samples the same moments). Each is scaled to 32 x 32 grey (one reused
  scaler), its 2-D DCT taken, and the 8 x 8 lowest frequencies without the DC term compared with
  their median: a 64-bit pHash that survives re-encoding and resizing. Frames with almost no
  contrast (black, a flat card) are flagged *uninformative*: their hashes are noise.

:func:`match` aligns two fingerprints in time: pairs of frames within ``frame_bits`` bits vote
for the time offset between the videos, and at the winning offset every sample of the overlap is
checked. A trimmed copy overlaps the original over its whole length at one offset; two distinct
videos of a similar scene match some frames at scattered offsets, or none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from curation.common import CurationError

#: Side of the grey image the DCT is taken of.
HASH_SIDE = 32
#: Frames whose grey standard deviation (0-255) is below this carry no usable hash.
MIN_CONTRAST = 4.0
_BITS = np.array([1 << i for i in range(64)], dtype=np.uint64)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(slots=True)
class Fingerprint:
    """Perceptual hashes of a video's frames sampled at ``rate`` per second.

    Attributes:
        rate: samples per second.
        times: presentation time of each sample, seconds (float32 [K]).
        hashes: 64-bit pHash per sample (uint64 [K]).
        informative: whether the sample has enough contrast for its hash to mean anything.
    """

    rate: float
    times: np.ndarray
    hashes: np.ndarray
    informative: np.ndarray

    @property
    def useful(self) -> int:
        """Number of informative samples."""
        return int(self.informative.sum())

    def to_dict(self) -> dict:
        """Compact JSON-able form (hashes as one hex string, times in milliseconds)."""
        return {"rate": self.rate, "hashes": "".join(f"{int(h):016x}" for h in self.hashes),
                "times_ms": [round(float(t) * 1000) for t in self.times],
                "informative": "".join("1" if i else "0" for i in self.informative)}

    @classmethod
    def from_dict(cls, d: dict) -> Fingerprint:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a malformed dict.
        """
        hx = d["hashes"]
        if len(hx) % 16:
            raise ValueError("fingerprint hashes must be 16 hex digits each")
        hashes = np.array([int(hx[i:i + 16], 16) for i in range(0, len(hx), 16)], np.uint64)
        times = np.asarray(d["times_ms"], np.float32) / 1000
        informative = np.array([c == "1" for c in d["informative"]], bool)
        if not (len(hashes) == len(times) == len(informative)):
            raise ValueError("fingerprint arrays differ in length")
        return cls(float(d["rate"]), times, hashes, informative)


def phash(gray: np.ndarray) -> int:
    """64-bit perceptual hash of a 32 x 32 grey image (DCT, 8 x 8 low frequencies vs median)."""
    import cv2

    dct = cv2.dct(gray.astype(np.float32))[:8, :8].ravel()
    bits = dct > np.median(dct[1:])
    bits[0] = False  # the DC term (mean brightness) says nothing about content
    return int(_BITS[bits].sum())


def frame_hashes(path: str | Path, rate: float = 4.0) -> Fingerprint:
    """Decode ``path`` once and hash one frame every ``1 / rate`` seconds.

    Raises:
        CurationError: the file cannot be opened or decoded, or has no frames.
    """
    from av.video.reformatter import VideoReformatter

    if not rate > 0:
        raise CurationError(f"sampling rate must be > 0, got {rate!r}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise CurationError(f"cannot open {path} as a video: {exc}") from exc
    times, hashes, informative = [], [], []
    decoded = 0
    try:
        if not container.streams.video:
            raise CurationError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        scaler = VideoReformatter()
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        t0, step, k = None, 1.0 / rate, 0
        try:
            for i, frame in enumerate(container.decode(stream)):
                decoded += 1
                t = frame.time if frame.time is not None else i / fps
                t0 = t if t0 is None else t0
                if t - t0 + 1e-6 < k * step:
                    continue  # not a sampling moment: never scaled
                gray = scaler.reformat(frame, HASH_SIDE, HASH_SIDE, "gray", interpolation="AREA",
                                       threads=1).to_ndarray()
                times.append(t - t0)
                hashes.append(phash(gray))
                informative.append(float(gray.std()) >= MIN_CONTRAST)
                k = int((t - t0 + 1e-6) // step) + 1
        except (av.error.FFmpegError, OSError) as exc:
            raise CurationError(f"{path}: decoding failed after {decoded} frames: {exc}") \
                from exc
    finally:
        container.close()
    if not decoded:
        raise CurationError(f"{path}: no frame could be decoded")
    return Fingerprint(rate, np.asarray(times, np.float32), np.asarray(hashes, np.uint64),
                       np.asarray(informative, bool))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances of two uint64 arrays, uint8 [len(a), len(b)]."""
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.uint8)


@dataclass(frozen=True, slots=True)
class Match:
    """How well a fingerprint matches another at their best time offset.

    Attributes:
        share: matching share of the overlapping informative samples (0-1).
        cover: overlap as a share of the shorter fingerprint's informative samples.
        overlap: informative samples of ``a`` that fall inside ``b`` at the offset.
        offset_s: time of ``b`` minus time of ``a`` for the same content.
        distance: mean Hamming distance over the overlap, share of 64 bits (0 = identical).
    """

    share: float
    cover: float
    overlap: int
    offset_s: float
    distance: float


def match(a: Fingerprint, b: Fingerprint, frame_bits: int = 10) -> Match | None:
    """Align ``a`` with ``b`` in time and measure the overlap (None: no frame pair matches).

    Frame pairs within ``frame_bits`` bits vote for an offset (rounded to one sample); at the
    winning offset each informative sample of ``a`` is compared with the samples of ``b`` within
    one sample of its aligned time.
    """
    ia, ib = np.flatnonzero(a.informative), np.flatnonzero(b.informative)
    if not len(ia) or not len(ib):
        return None
    d = hamming(a.hashes[ia], b.hashes[ib])
    pa, pb = np.nonzero(d <= frame_bits)
    if not len(pa):
        return None
    step = 1.0 / a.rate
    offsets = np.round((b.times[ib][pb] - a.times[ia][pa]) / step).astype(np.int64)
    values, counts = np.unique(offsets, return_counts=True)
    # a vote counts for its neighbours too: sampling jitter moves pairs by one sample
    smooth = counts + np.array([counts[np.abs(values - v) == 1].sum() for v in values])
    best = int(values[np.argmax(smooth)])
    rel = (b.times[ib][None, :] - a.times[ia][:, None]) / step - best
    near = np.abs(rel) <= 1.0 + 1e-6
    inside = near.any(1)
    overlap = int(inside.sum())
    if not overlap:
        return None
    dist = np.where(near, d, 255).min(1)[inside]
    share = float((dist <= frame_bits).mean())
    cover = overlap / min(len(ia), len(ib))
    return Match(share, min(1.0, cover), overlap, best * step, float(dist.mean()) / 64)
