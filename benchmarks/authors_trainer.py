"""Time the AUTHORS' training step under their Lightning trainer (the other side of
``benchmarks/train_throughput.py``; run by it in a subprocess, not meant to be run by hand).

It imports their release (``--src``: a checkout of Kamino666/LaGoVAD-PreVAD) with their
dependencies on ``PYTHONPATH`` (transformers 4.x, lightning, einops; see ``train_throughput.py``
for the pip line), builds ``LaGoVADLightModel`` with the
settings of their ``src/configs/default.yaml`` and runs ``lightning.Trainer.fit`` on CPU in fp32
over the batches written by ``train_throughput.py`` (the same samples our trainer gets), padded to
``max_len`` as their ``truncate_or_pad_feature_length`` pads every sample. Nothing of their code is
changed; two things they load from the Hugging Face hub are built locally instead (no download
is possible here, and the cost of a step does not depend on the weights):

- ``CLIPTextModel.from_pretrained`` returns a randomly initialised ``CLIPTextModel`` with the
  text architecture of openai/clip-vit-base-patch16;
- ``AutoTokenizer.from_pretrained`` returns a ``CLIPTokenizerFast`` built from the CLIP BPE
  vocabulary that open_clip ships (the same ids as the hub tokenizer, end token as padding).

Prints one JSON line: wall and CPU (``time.process_time``, all threads) seconds of every timed
step (a Lightning callback stamps ``on_train_batch_start``/``on_train_batch_end``; the first
``--warmup`` steps are not counted).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.train_samples import CLIP_B16_TEXT, read_samples  # noqa: E402


def clip_tokenizer(folder: Path):
    """A CLIPTokenizerFast from the BPE merges open_clip ships (vocab.json + merges.txt)."""
    import open_clip
    from transformers import CLIPTokenizerFast
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe) as fh:
        merges = fh.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    pairs = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(p) for p in pairs]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in pairs))
    return CLIPTokenizerFast(
        vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
        bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>", model_max_length=77,
    )


def build_model(src: Path, work: Path, seed: int):
    """Their LaGoVADLightModel with default.yaml's settings (CLIP and tokenizer built locally)."""
    sys.modules.setdefault("decord", types.ModuleType("decord"))  # their plotting helpers
    for path in (src, src / "src"):  # they import both `models...` and `src.utils...`
        sys.path.insert(0, str(path))
    from models.LaGoVAD import lagovad as theirs  # noqa: PLC0415
    from models.LaGoVAD import modeling_clip  # noqa: PLC0415
    from transformers import CLIPTextConfig, CLIPTextModel

    class LocalCLIP:
        @staticmethod
        def from_pretrained(name):
            torch.manual_seed(seed)
            return CLIPTextModel(CLIPTextConfig(**CLIP_B16_TEXT))

    tokenizer = clip_tokenizer(work)
    modeling_clip.CLIPTextModel = LocalCLIP
    theirs.AutoTokenizer = types.SimpleNamespace(from_pretrained=lambda name: tokenizer)
    mc = theirs.LaGoVADModelConfig(  # src/configs/default.yaml
        clip_name="openai/clip-vit-base-patch16", hidden_size=512, num_soft_prompts=32,
        verbalizer_type=None, temp_enc_type="RoFormer", temp_gate=None, temp_encoder_layers=2,
        temp_attention_heads=4, temp_window_size=25, fusion_type="co_attn", fusion_num_layers=2,
        head_num_layers=1, head_activation="gelu", head_norm="layernorm", head_kernel_size=9,
        multi_head_type="sim", bin_head_type="adaptive",
    )
    tc = theirs.LaGoVADTrainingConfig(
        lr=5e-5, weight_decay=0.0, lr_scheduler_name="cosine",
        lr_scheduler_kwargs={"num_warmup_steps": 20}, mil_topk_pct=16, sup_mil_topk_pct=4,
        mul_mil_topk_pct=16, smooth_reg_weight=0.0, sparsity_reg_weight=0.0,
        mul_sparsity_reg_weight=0.0, pseudo_sup_weight=1.0, pseudo_sup_mil_weight=1.0,
        anomaly_cap_contrastive_weight=1.0, contrastive_neg_mining="n3", contrastive_temp=0.02,
        anomaly_cap_forward=True, score_type="binary", mul_score_type="vanilla",
        mul_mil_type="v1", temp_gate_init=0.0, save_res_mode="fix10",
    )
    torch.manual_seed(seed)
    model = theirs.LaGoVADLightModel(mc, tc)
    model.log_dir = work  # their on_train_start asks the (absent) logger for a folder otherwise
    return model


class _Samples(torch.utils.data.Dataset):
    """The shared samples as their PreVADDatasetOnline returns them (padded to max_len)."""

    def __init__(self, samples: dict, names: list[str]):
        self.s, self.class_names = samples, names

    def __len__(self) -> int:
        return len(self.s["lengths"])

    def __getitem__(self, i: int) -> dict:
        n = int(self.s["lengths"][i])
        feat = torch.zeros(self.s["max_len"], self.s["features"].shape[-1])
        feat[:n] = self.s["features"][i, :n]
        frame = torch.zeros(self.s["max_len"])
        frame[:n] = self.s["frame_labels"][i, :n]
        cat = self.s["categories"][i]
        return {
            "v_feat": feat, "v_feat_l": torch.tensor(n), "target_length": torch.tensor(n),
            "cls_label_idx": torch.tensor(self.class_names.index(cat)),
            "desc_label": self.s["descriptions"][i], "pseudo_frame_label": frame,
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", type=Path, required=True, help="their repository checkout")
    parser.add_argument("--samples", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import lightning

    samples = read_samples(args.samples)
    with tempfile.TemporaryDirectory() as work:
        model = build_model(args.src.resolve(), Path(work), seed=0)
        from datasets.PreVAD import DEFAULT_CLASSES  # noqa: PLC0415  (their src on sys.path)

        data = _Samples(samples, list(DEFAULT_CLASSES))
        loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=False,
                                             num_workers=0)
        stamps: list[float] = []
        cpu: list[float] = []

        class Clock(lightning.Callback):
            def on_train_batch_start(self, *a, **k):
                stamps.append(time.perf_counter())
                cpu.append(time.process_time())

            def on_train_batch_end(self, *a, **k):
                stamps.append(time.perf_counter())
                cpu.append(time.process_time())

        trainer = lightning.Trainer(
            accelerator="cpu", devices=1, precision=32, max_epochs=1, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, limit_val_batches=0, callbacks=[Clock()],
        )
        trainer.fit(model, train_dataloaders=loader)
    # a step runs from one batch start to the next (their loader's collate included)
    def per_step(marks: list[float]) -> list[float]:
        return np.diff(marks[0::2] + [marks[-1]])[args.warmup :].tolist()

    print(json.dumps({"side": "authors", "step_seconds": per_step(stamps),
                      "step_cpu_seconds": per_step(cpu),
                      "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
