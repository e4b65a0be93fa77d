"""Text branch and anomaly definitions: outputs checked against each library's own CLIP."""

from __future__ import annotations

import open_clip
import pytest
import torch
from transformers import CLIPTextModel

import lagovad
from lagovad.definition import NORMAL_PROMPT, AnomalyDefinition, DefinitionError
from lagovad.text import (
    EOT_TOKEN,
    SOT_TOKEN,
    ClipLoadError,
    TextBranch,
    load_clip_text,
    tokenize,
)

TEXTS = ["Fighting", "a man is shooting at people in a store", "Car Accident"]


@pytest.fixture(scope="module")
def hf_backbone(tiny_hf_clip_text_dir):
    return load_clip_text({"backend": "hf", "name": str(tiny_hf_clip_text_dir)})


@pytest.fixture(scope="module")
def oc_backbone(tiny_open_clip_checkpoint):
    return load_clip_text({"backend": "open_clip", "name": "lagovad-clip-tiny",
                           "pretrained": str(tiny_open_clip_checkpoint)})


def test_tokenizer_matches_authors_ids_and_pads_with_end_token():
    ids = tokenize(["Fighting"], 45)
    assert ids.shape == (1, 45)
    assert ids[0, :3].tolist() == [SOT_TOKEN, 4652, EOT_TOKEN]
    assert (ids[0, 2:] == EOT_TOKEN).all()


def test_hf_plain_path_equals_library_pooler_output(hf_backbone, tiny_hf_clip_text_dir):
    branch = TextBranch(hf_backbone, front=0, back=0)
    ids = tokenize(TEXTS, 77)
    ref = CLIPTextModel.from_pretrained(tiny_hf_clip_text_dir).eval()
    with torch.no_grad():
        expected = ref(input_ids=ids).pooler_output
        got = branch.encode_plain_ids(ids)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_open_clip_plain_path_equals_encode_text_before_projection(
    oc_backbone, tiny_open_clip_checkpoint
):
    branch = TextBranch(oc_backbone, front=0, back=0)
    ref = open_clip.create_model("lagovad-clip-tiny", pretrained=str(tiny_open_clip_checkpoint))
    ref.eval()
    with torch.no_grad():
        expected = ref.encode_text(open_clip.tokenize(TEXTS))
        got = branch.encode(TEXTS, prompts=False) @ ref.text_projection
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("which", ["hf", "open_clip"])
def test_causal_mask_is_applied(which, hf_backbone, oc_backbone):
    backbone = hf_backbone if which == "hf" else oc_backbone
    torch.manual_seed(0)
    x = torch.randn(1, 12, backbone.width)
    y = x.clone()
    y[0, 7] += torch.randn(backbone.width)  # (a constant shift would vanish in LayerNorm)
    with torch.no_grad():
        hx, hy = backbone.encode(x), backbone.encode(y)
    torch.testing.assert_close(hx[0, :7], hy[0, :7], atol=1e-6, rtol=1e-6)
    assert (hx[0, 7:] - hy[0, 7:]).abs().amax(dim=-1).min() > 1e-4


def test_names_without_prompts_equal_plain_path(oc_backbone):
    branch = TextBranch(oc_backbone, front=0, back=0)
    with torch.no_grad():
        torch.testing.assert_close(branch.encode(TEXTS, prompts=True),
                                   branch.encode(TEXTS, prompts=False), atol=1e-6, rtol=1e-6)


def _reference_name_embedding(branch: TextBranch, text: str) -> torch.Tensor:
    """Build the prompted sequence of one name slot by slot, as the layout is documented."""
    bb = branch.backbone
    ids = tokenize([text], branch.name_context_length)[0]
    n = int((ids == EOT_TOKEN).nonzero()[0]) - 1
    pos = bb.positions()
    tok = bb.embed_tokens(ids[None])[0]
    eot = bb.embed_tokens(torch.tensor([[EOT_TOKEN]]))[0, 0]
    p = branch.prompt_embedding
    rows = [tok[0] + pos[0]]
    rows += [p[i] for i in range(branch.front)]
    rows += [tok[1 + j] + pos[1 + branch.front + j] for j in range(n)]
    rows += [p[branch.front + i] for i in range(branch.back)]
    end = len(rows)
    assert end == 1 + branch.front + branch.back + n
    rows.append(eot + pos[end])
    h = bb.encode(torch.stack(rows)[None])
    return h[0, end]


def test_prompted_names_follow_documented_layout(oc_backbone):
    torch.manual_seed(1)
    branch = TextBranch(oc_backbone, front=3, back=2, init_std=0.5)
    names = ["Fighting", "Road Accident with a truck", "Fire"]
    with torch.no_grad():
        got = branch.encode(names, prompts=True)
        expected = torch.stack([_reference_name_embedding(branch, t) for t in names])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_prompts_change_name_embeddings_but_not_descriptions(oc_backbone):
    branch = TextBranch(oc_backbone, front=2, back=2, init_std=0.5)
    with torch.no_grad():
        name_before = branch.encode(["Fighting"], prompts=True).clone()
        desc_before = branch.encode(["Fighting"], prompts=False).clone()
        branch.prompt_embedding.add_(torch.randn_like(branch.prompt_embedding))  # optimizer-like
        name_after = branch.encode(["Fighting"], prompts=True)
        desc_after = branch.encode(["Fighting"], prompts=False)
    assert (name_after - name_before).abs().max() > 1e-3  # cache was invalidated
    torch.testing.assert_close(desc_after, desc_before)


def test_gradients_reach_prompts_and_not_the_frozen_backbone(oc_backbone):
    branch = TextBranch(oc_backbone, front=2, back=2, init_std=0.5).train()
    assert all(not p.requires_grad for p in branch.backbone.parameters())
    # A fixed random readout: `sum()` of a LayerNorm output has zero gradient by construction
    # (LayerNorm's output sums to a constant), so it could not show that gradients flow.
    readout = torch.randn(branch.backbone.width, generator=torch.Generator().manual_seed(0))

    def objective() -> torch.Tensor:
        return (branch.encode(["Fighting", "Shooting"], prompts=True) @ readout).sum()

    before = objective()
    before.backward()
    grad = branch.prompt_embedding.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad.abs().amax() > 1e-3 * branch.prompt_embedding.abs().amax()
    # The gradient is the real one: a small step against it lowers the objective.
    with torch.no_grad():
        branch.prompt_embedding.sub_(1e-2 * grad / grad.norm())
        assert objective() < before.detach()
    assert all(p.grad is None for p in branch.backbone.parameters())
    assert not branch.backbone.training


def test_model_encode_text_caches_and_matches_fresh_computation(tiny_model):
    with torch.no_grad():
        first = tiny_model.encode_text(["Explosion", "Fighting"])
        second = tiny_model.encode_text(["Fighting", "Explosion"])
        tiny_model.text.clear_cache()
        fresh = tiny_model.encode_text(["Fighting"])
    torch.testing.assert_close(second[0], first[1])
    torch.testing.assert_close(fresh[0], first[1])


def test_tiny_hf_clip_plugs_into_tiny_model(tiny_hf_clip_text_dir):
    model = lagovad.create_model("lagovad-tiny",
                                 clip={"backend": "hf", "name": str(tiny_hf_clip_text_dir)})
    with torch.no_grad():
        out = model(torch.randn(1, 6, 32), None, AnomalyDefinition.from_strings(["Fire"]))
    assert out.class_logits.shape == (1, 6, 2)


def test_missing_clip_gives_clear_error(tmp_path):
    with pytest.raises(ClipLoadError, match="could not load Hugging Face CLIPTextModel"):
        load_clip_text({"backend": "hf", "name": str(tmp_path / "nope")})
    with pytest.raises(ClipLoadError, match="backend must be"):
        load_clip_text({"backend": "tf", "name": "x"})


# -- definitions ----------------------------------------------------------------------------
def test_definition_puts_normal_first_and_adds_it():
    d = AnomalyDefinition.from_strings(["Fighting", "normal", "Shooting"])
    assert d.texts == ["Normal", "Fighting", "Shooting"]
    d2 = AnomalyDefinition.from_strings(["Fighting"])
    assert d2.texts[0] == "Normal" and len(d2) == 2


def test_definition_auto_kinds_and_descriptions_use_normal_prompt():
    d = AnomalyDefinition.from_strings(["A person falls from a ladder while painting a wall."])
    assert d.kinds == ["description", "description"]
    assert d.texts[0] == NORMAL_PROMPT
    mixed = AnomalyDefinition.from_strings(["Fire", "two people punch each other in a bar"])
    assert mixed.kinds[1:] == ["name", "description"]
    names = AnomalyDefinition.from_strings(["a b c d e f"], kind="names")
    assert names.kinds == ["name", "name"]


@pytest.mark.parametrize("items, match", [
    ([], "at least one anomaly class"),
    (["Normal"], "at least one anomaly class"),
    (["Fighting", "  "], "non-blank"),
    (["Fighting", "fighting"], "duplicate class"),
])
def test_definition_rejects_bad_input(items, match):
    with pytest.raises(DefinitionError, match=match):
        AnomalyDefinition.from_strings(items)


def test_definition_json_round_trip_and_id():
    d = AnomalyDefinition.from_strings(["Fighting", "Shooting"])
    assert AnomalyDefinition.from_json(d.to_json()) == d
    assert d.id != AnomalyDefinition.from_strings(["Shooting", "Fighting"]).id


def test_definition_longer_than_clip_reads_is_not_cut_silently(tiny_model):
    import warnings

    from lagovad.errors import LagovadWarning

    long_text = "A man walks into a store and " + "looks around slowly " * 500  # ~10,000 chars
    definition = AnomalyDefinition.from_strings(["Fighting", long_text])
    too_long = r"'A man walks into.*\.\.\.' has \d{4} CLIP tokens but the description path reads 77"
    with pytest.warns(LagovadWarning, match=too_long), torch.no_grad():
        tiny_model.encode_definition(definition)
    long_name = " ".join(["Fire"] * 80)
    with pytest.warns(LagovadWarning, match=r"name \(soft-prompt\) path reads 69"), \
            torch.no_grad():
        tiny_model.encode_text([long_name], prompts=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a definition that fits warns nothing
        with torch.no_grad():
            tiny_model.encode_definition(AnomalyDefinition.from_strings(
                ["Shooting", "A man points a gun at a cashier and takes the money."]))


def test_definition_keeps_the_authors_normal_sentence_selectable():
    # the authors' sentence given verbatim stays their sentence, even in a names definition
    d = AnomalyDefinition.from_strings(["Fighting", NORMAL_PROMPT], kind="names")
    assert d[0].text == NORMAL_PROMPT and d[0].kind == "description" and d.labels[0] == "Normal"
    # or chosen without typing it
    d = AnomalyDefinition.from_strings(["Fighting", "Shooting"], normal="prompt")
    assert (d[0].text, d[0].kind) == (NORMAL_PROMPT, "description")
    assert d.texts[1:] == ["Fighting", "Shooting"]
    # the documented default: the word Normal for names, the sentence for descriptions
    assert AnomalyDefinition.from_strings(["Fighting"]).texts[0] == "Normal"
    assert AnomalyDefinition.from_strings(["Fighting"], normal="name").texts[0] == "Normal"
    desc = AnomalyDefinition.from_strings(["normal", "Two men fight."], kind="descriptions")
    assert desc.texts[0] == NORMAL_PROMPT
    with pytest.raises(DefinitionError, match="normal must be"):
        AnomalyDefinition.from_strings(["Fighting"], normal="sentence")
