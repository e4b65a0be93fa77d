"""Pretrained CLIP weights that are not cached fail fast offline, naming the right option.

``lagovad extract`` sets the weights with ``--pretrained``, ``lagovad detect`` with
``--clip-pretrained``; with ``HF_HUB_OFFLINE`` set, or a hub that does not accept a connection,
each command ends with one ``error:`` line before any model is built (no hub retries, no log
lines), and writes nothing. The hub's cache location is read when ``huggingface_hub`` is
imported, so each case runs in a fresh interpreter with empty caches.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

OFFLINE = [
    ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
    # not marked offline, but the hub does not answer: one connection attempt, no retries
    ({"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"},
     "127.0.0.1:9 is unreachable"),
]


def _run(args: list[str], tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    run_env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path / "home"),
               **env}
    return subprocess.run([sys.executable, "-m", "lagovad.cli", *args], capture_output=True,
                          text=True, env=run_env, timeout=300, cwd=REPO)


@pytest.mark.parametrize("env, why", OFFLINE, ids=["offline", "hub-unreachable"])
def test_extract_without_cached_weights_fails_first_naming_pretrained(
        tmp_path: Path, env: dict, why: str) -> None:
    out = tmp_path / "features"
    proc = _run(["extract", str(tmp_path / "clip.mp4"), "--out", str(out), "--device", "cpu"],
                tmp_path, env)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: the weights of open_clip model 'ViT-B-16' (--pretrained "
                           "'openai') are not in the local cache") and why in line, line
    assert "pass --pretrained /path/to/checkpoint" in line and "--clip-pretrained" not in line
    assert not out.exists()


@pytest.mark.parametrize("env, why", OFFLINE, ids=["offline", "hub-unreachable"])
def test_detect_without_cached_weights_fails_first_naming_clip_pretrained(
        tmp_path: Path, tiny_lagovad_checkpoint: Path, env: dict, why: str) -> None:
    out = tmp_path / "detect_out"
    proc = _run(["detect", str(tmp_path / "clip.mp4"), "--checkpoint",
                 str(tiny_lagovad_checkpoint), "--define", "Fighting", "--clip-model",
                 "ViT-B-16", "--clip-pretrained", "openai", "--device", "cpu", "--out", str(out)],
                tmp_path, env)
    assert proc.returncode == 2, proc.stderr
    # (the tiny checkpoint's random text tower logs open_clip's "no pretrained weights" line)
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in proc.stderr and "Failed to download" not in proc.stderr
    assert line.startswith("error: the weights of open_clip model 'ViT-B-16' (--clip-pretrained "
                           "'openai') are not in the local cache") and why in line, line
    assert " --pretrained" not in line
    assert not out.exists()


def test_cached_weights_pass_the_check_offline(tmp_path: Path) -> None:
    # the layout huggingface_hub keeps: refs/main -> snapshots/<revision>/<file>
    repo = tmp_path / "hf" / "hub" / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"weights")
    code = ("from lagovad.image_encoder import check_weights_available as c\n"
            "c('ViT-B-16', 'openai')\n"
            "try:\n"
            "    c('ViT-B-16', 'laion2b_s34b_b88k')\n"
            "except Exception as e:\n"
            "    print(type(e).__name__)\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path / "home"),
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "PretrainedWeightsUnavailable"  # another tag is not cached
