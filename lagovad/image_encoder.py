"""CLIP image encoder for frame features (open_clip).

The default is the authors' protocol: OpenAI CLIP ViT-B/16 (`open_clip` name "ViT-B-16",
pretrained tag "openai", QuickGELU as OpenAI trained it), `encode_image` output (after the visual
projection, not normalised), frames resized to the model's input size (224x224) without crop,
OpenAI mean/std. Weights come from an open_clip pretrained tag (downloaded into the open_clip /
Hugging Face cache once) or from a local checkpoint file. Half precision on GPU, float32 on CPU.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

from lagovad.errors import LagovadError
from lagovad.text import register_open_clip_configs

DEFAULT_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "openai"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
#: Seconds the hub may take to accept a connection before uncached weights count as
#: unreachable (one attempt, instead of the hub client's retries).
HUB_PROBE_TIMEOUT_S = 3.0


class ImageEncoderError(LagovadError):
    """The image encoder cannot be built as asked."""


class PretrainedWeightsUnavailable(ImageEncoderError):
    """A pretrained tag's weights are not cached locally and cannot be downloaded."""


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class ImageEncoder:
    """A loaded CLIP image tower plus its preprocessing.

    Attributes:
        model: The open_clip model (its `encode_image` is used).
        name: open_clip model name.
        pretrained: Pretrained tag or checkpoint path (None = random weights).
        image_size: (height, width) the frames must be resized to.
        mean: Per-channel normalisation mean (RGB, in [0, 1] units).
        std: Per-channel normalisation std.
        device: Where the model runs.
        dtype: float16 on GPU, float32 on CPU.
        dim: Output feature dimension.
    """

    model: torch.nn.Module
    name: str
    pretrained: str | None
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    dtype: torch.dtype
    dim: int

    @property
    def model_id(self) -> str:
        """Identifier stored with features: `open_clip:<name>:<tag or checkpoint file name>`."""
        if self.pretrained is None:
            weights = "random"
        elif os.path.exists(self.pretrained):
            weights = Path(self.pretrained).name
        else:
            weights = self.pretrained
        return f"open_clip:{self.name}:{weights}"

    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 RGB frames [N, H, W, 3] already at `image_size` -> normalised [N, 3, H, W]."""
        x = torch.as_tensor(frames)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ImageEncoderError(f"frames must be [N, H, W, 3] RGB, got shape {tuple(x.shape)}")
        if tuple(x.shape[1:3]) != self.image_size:
            raise ImageEncoderError(
                f"frames must be {self.image_size} (height, width) for {self.name}, "
                f"got {tuple(x.shape[1:3])}"
            )
        # Normalise on the device: on GPU the host only ships uint8 (4x less to copy).
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).to(self.dtype).div_(255)
        mean = torch.tensor(self.mean, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.inference_mode()
    def encode(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """Encode uint8 RGB frames [N, H, W, 3] into float32 features [N, dim]."""
        if len(frames) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.forward(self.preprocess(frames)).float().cpu().numpy()

    @torch.inference_mode()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The bare model forward on preprocessed pixels [N, 3, H, W] -> [N, dim]."""
        return self.model.encode_image(pixels.to(self.device, self.dtype))


def load_image_encoder(
    name: str = DEFAULT_MODEL,
    pretrained: str | os.PathLike | None = DEFAULT_PRETRAINED,
    *,
    device: str | torch.device | None = None,
    half: bool | None = None,
    quick_gelu: bool | None = None,
    seed: int = 0,
    option: str = "--pretrained",
) -> ImageEncoder:
    """Build an open_clip image encoder.

    Args:
        name: open_clip model name ("ViT-B-16", or a config in lagovad/model_configs such as
            "lagovad-clip-tiny").
        pretrained: An open_clip pretrained tag ("openai"), a local checkpoint file
            (.safetensors/.bin/.pt) or None for random weights.
        device: "cuda", "cpu", ...; CUDA when available if None.
        half: float16 weights/activations; defaults to True on GPU and False on CPU.
        quick_gelu: Force QuickGELU. None = what the pretrained tag was trained with; for a local
            checkpoint of the default "ViT-B-16" it is True, since the default protocol is
            OpenAI's CLIP (pass False for a non-OpenAI ViT-B-16 checkpoint).
        seed: Seed of random weights (``pretrained`` None): every load gives the same encoder,
            so features extracted by two processes (a store and a held-out folder, ``extract``
            and ``detect``) are comparable. The global torch RNG is left as it was.
        option: The command-line option that sets ``pretrained`` (named in errors:
            ``--pretrained`` for ``lagovad extract``, ``--clip-pretrained`` for ``detect``).

    Returns:
        The encoder in eval mode.

    Raises:
        PretrainedWeightsUnavailable: If `pretrained` is a tag whose weights are not cached and
            cannot be downloaded (offline): checked before the model is built, see
            :func:`check_weights_available`.
        ImageEncoderError: If the name or checkpoint is unknown or does not fit the model.
    """
    register_open_clip_configs()
    device = torch.device(device) if device is not None else default_device()
    half = device.type == "cuda" if half is None else half
    if half and device.type == "cpu":
        raise ImageEncoderError("half precision needs a GPU device, got device=cpu")
    if name not in open_clip.list_models():
        raise ImageEncoderError(
            f"unknown open_clip model {name!r}; use one of open_clip.list_models() "
            f"or a config in {MODEL_CONFIG_DIR}"
        )
    pretrained = None if pretrained in (None, "", "none") else str(pretrained)
    check_weights_available(name, pretrained, option=option)
    quick_gelu = _resolve_quick_gelu(name, pretrained, quick_gelu)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.create_model(
                name,
                pretrained=pretrained,
                precision="fp16" if half else "fp32",
                device=device,
                force_quick_gelu=quick_gelu,
            )
    except RuntimeError as exc:
        raise _explain_load_error(name, pretrained, exc, option) from exc
    model.eval()
    image_size = model.visual.image_size
    image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    pcfg = open_clip.get_model_preprocess_cfg(model)
    return ImageEncoder(
        model=model,
        name=name,
        pretrained=pretrained,
        image_size=(int(image_size[0]), int(image_size[1])),
        mean=tuple(pcfg.get("mean", OPENAI_MEAN)),
        std=tuple(pcfg.get("std", OPENAI_STD)),
        device=device,
        dtype=torch.float16 if half else torch.float32,
        dim=int(model.visual.output_dim),
    )


def _resolve_quick_gelu(name: str, pretrained: str | None, quick_gelu: bool | None) -> bool:
    if quick_gelu is not None:
        return quick_gelu
    if pretrained is None:
        return False
    if not os.path.exists(pretrained):
        return bool(get_pretrained_cfg(name, pretrained).get("quick_gelu", False))
    # A local file for the default model is taken to be OpenAI's ViT-B/16 (the protocol's model).
    return name == DEFAULT_MODEL


def check_weights_available(name: str, pretrained: str | None,
                            option: str = "--pretrained") -> None:
    """Fail fast when a pretrained tag's weights can only come from a network that is not there.

    Runs before any model is built: a tag whose weights are in neither the Hugging Face cache
    nor open_clip's download folder needs the hub; with ``HF_HUB_OFFLINE`` (or
    ``TRANSFORMERS_OFFLINE``) set, or when the hub does not accept a connection within
    :data:`HUB_PROBE_TIMEOUT_S` (one attempt), that is one error naming ``option`` instead of
    the hub client's retries and log lines. A local file, no weights (None) and an unknown tag
    (the loader lists the known ones) pass.

    Raises:
        PretrainedWeightsUnavailable: the weights are not here and cannot be downloaded.
    """
    if pretrained is None or Path(pretrained).expanduser().is_file():
        return
    register_open_clip_configs()
    pcfg = get_pretrained_cfg(name, pretrained)
    if not pcfg or _cached_weights(pcfg):
        return
    why = _offline_reason() or _hub_unreachable()
    if why:
        raise PretrainedWeightsUnavailable(
            f"the weights of open_clip model {name!r} ({option} {pretrained!r}) are not in the "
            f"local cache and cannot be downloaded: {why}. Download them once with network "
            f"access, or pass {option} /path/to/checkpoint")


def _cached_weights(pcfg: dict) -> bool:
    """Whether open_clip will find a tag's weights on disk (HF cache or its URL folder)."""
    from huggingface_hub import try_to_load_from_cache
    from open_clip.pretrained import HF_WEIGHTS_NAME

    hub = str(pcfg.get("hf_hub", ""))
    if hub:
        repo, filename = os.path.split(hub)  # "org/repo/" names the repo's default file
        names = [filename] if filename else ["open_clip_model.safetensors", HF_WEIGHTS_NAME]
        if any(isinstance(try_to_load_from_cache(repo, n), str) for n in names):
            return True
    url = str(pcfg.get("url", ""))
    return bool(url) and (Path("~/.cache/clip").expanduser() / os.path.basename(url)).is_file()


def _offline_reason() -> str | None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    return None


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached (None when it accepts a connection)."""
    url = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return f"{host}:{port} is unreachable ({exc})"
    return None


def _explain_load_error(name: str, pretrained: str | None, exc: Exception,
                        option: str = "--pretrained") -> ImageEncoderError:
    if pretrained and not os.path.exists(pretrained):
        if get_pretrained_cfg(name, pretrained):
            return PretrainedWeightsUnavailable(
                f"the weights of open_clip model {name!r} ({option} {pretrained!r}) could not "
                f"be loaded (offline?). Download them once where there is network access, or "
                f"pass {option} /path/to/checkpoint ({exc})"
            )
        return ImageEncoderError(
            f"pretrained {pretrained!r} is neither a pretrained tag of {name!r} "
            f"(known tags: {list_pretrained_tags_by_model(name)}) nor an existing checkpoint file"
        )
    return ImageEncoderError(f"cannot load open_clip model {name!r} from {pretrained!r}: {exc}")
