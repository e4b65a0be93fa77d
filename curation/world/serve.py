"""Serve a generated world on 127.0.0.1: its files with and without byte ranges, and its stream.

:class:`WorldServer` is a :class:`curation.media_server.MediaServer` on the world's ``media/``
folder. Corpus files planted as "served without byte ranges" have URLs under the server's
``/norange/`` prefix; the stream is ``<base_url>/hls/s000000/index.m3u8``. Because the port is
chosen when the server starts, :meth:`WorldServer.corpus` writes a copy of the corpus whose URLs
point at this server.

Command line (serves until Ctrl-C)::

    python -m curation.world.serve WORLD [--port 8765]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from curation.media_server import MediaServer
from curation.world.generate import read_manifest, write_corpus


class WorldServer(MediaServer):
    """A media server on a world's ``media/`` folder (a context manager).

    Attributes:
        world: the world folder.
        stream_url: the URL of the world's HLS stream (None when it has none).
    """

    def __init__(self, world: str | Path, port: int = 0) -> None:
        self.world = Path(world).resolve()
        self.manifest = read_manifest(self.world)
        super().__init__(self.world / "media", port)
        stream = self.manifest.get("stream")
        self.stream_url = self.url(stream) if stream else None

    def corpus(self, out: str | Path) -> Path:
        """Write the corpus CSV with URLs on this server to ``out``; returns ``out``."""
        return write_corpus(self.world, self.base_url, out)


def main(argv: list[str] | None = None) -> None:
    """Serve a world until interrupted; print its corpus and stream URLs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("world", type=Path)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    server = WorldServer(args.world, args.port)
    corpus = server.corpus(args.world / f"corpus.{args.port}.csv")
    with server:
        print(f"serving {server.root} at {server.base_url}")
        print(f"corpus: {corpus}")
        print(f"stream: {server.stream_url}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
