"""The CLIP teacher on a tiny random open_clip ViT: shapes, normalisation, the CPU/device split, the MaskCLIP value
path, checkpoints."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.teachers import build_teacher
from models.teachers.base import SingleCameraScan
from models.teachers.clip import CLIPPreprocessor, CLIPTeacher, interpolate_pos_embed


@pytest.fixture(scope="module")
def tiny(tiny_arch) -> CLIPTeacher:
    return CLIPTeacher(tiny_arch, image_size=(32, 48), seed=3)


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_shapes_dtype_and_frozen(tiny):
    feats = tiny.encode_images(np.stack([image(32, 48), image(32, 48, 1)]))
    assert feats.shape == (2, 32, 4, 6) and feats.dtype == torch.float32 and not feats.requires_grad
    assert (tiny.dim, tiny.stride) == (32, 8)
    assert not tiny.model.training and not any(p.requires_grad for p in tiny.model.parameters())
    tiny.model.train()
    with pytest.raises(RuntimeError, match="frozen"):
        tiny.encode_images(image(32, 48))
    tiny.model.eval()


def test_preprocess_normalises_and_resizes_with_torch(tiny):
    x = tiny.preprocess(np.full((64, 96, 3), 255, dtype=np.uint8))
    assert x.shape == (1, 3, 32, 48)
    expected = (1.0 - tiny.mean) / tiny.std
    torch.testing.assert_close(x[0], expected.expand(3, 32, 48))
    with pytest.raises(ValueError, match="RGB"):
        tiny.preprocess(np.zeros((4, 32, 48), dtype=np.uint8))


def test_preprocessor_and_encode_give_the_scan_features(tiny, scene):
    """``scan_features = encode(preprocessor()(scan))``: the CPU half (no weights, cheap to pickle) reads and
    preprocesses every camera image; the values are those of one batch of all cameras, and per camera those of
    the camera alone (exactly, within one batch size; across batch sizes up to the GEMM's rounding)."""
    pre = tiny.preprocessor()
    assert isinstance(pre, CLIPPreprocessor)
    blob = pickle.dumps(pre)
    assert len(blob) < 1_000_000 < len(pickle.dumps(tiny.model.state_dict()))  # the tiny model alone is ~6 MB
    prepared = pickle.loads(blob)(scene)
    assert prepared.shape == (6, 3, 32, 48) and prepared.dtype == torch.float32 and prepared.device.type == "cpu"
    torch.testing.assert_close(prepared, pre(scene), rtol=0, atol=0)
    torch.testing.assert_close(prepared, torch.cat([tiny.preprocess(v.image) for v in scene.cameras]), rtol=0, atol=0)
    feats = tiny.encode(prepared)
    assert feats.shape == (6, 32, 4, 6) and feats.dtype == torch.float32 and feats.device == tiny.device
    torch.testing.assert_close(tiny.scan_features(scene), feats, rtol=0, atol=0)
    batched = tiny.dense_features(torch.cat([tiny.preprocess(v.image) for v in scene.cameras]))
    torch.testing.assert_close(feats, batched, rtol=0, atol=0)
    for k, view in enumerate(scene.cameras):
        alone = tiny.encode_images(view.image)[0]
        torch.testing.assert_close(tiny.camera_features(scene, k), alone, rtol=0, atol=0)
        torch.testing.assert_close(tiny.camera_features(scene, view.name), alone, rtol=0, atol=0)
        torch.testing.assert_close(feats[k], alone)
        torch.testing.assert_close(pre(SingleCameraScan(scene.scan_id, (view,)))[0], prepared[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="no camera"):
        pre(SingleCameraScan(scene.scan_id, ()))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny.encode(prepared[0])


def test_dense_features_equal_the_value_path_by_hand(tiny):
    """At the model's native grid: capture the last block's input from open_clip's own forward, then
    f_i = LN_post(W_out (W_v LN_1(x_i) + b_v) + b_out) @ proj for every patch token."""
    visual = tiny.model.visual
    teacher = CLIPTeacher(tiny.arch, image_size=(32, 32), seed=3)  # native 4 x 4 grid: no position interpolation
    pixels = teacher.preprocess(image(32, 32, 2))
    captured = {}
    handle = visual.transformer.resblocks[-1].register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0]))
    with torch.no_grad():
        visual(pixels)
    handle.remove()
    x = captured["x"][0]  # (1 + 16, width)
    last = visual.transformer.resblocks[-1]
    width = x.shape[-1]
    ln1 = F.layer_norm(x, (width,), last.ln_1.weight, last.ln_1.bias, last.ln_1.eps)
    v = ln1 @ last.attn.in_proj_weight[2 * width :].T + last.attn.in_proj_bias[2 * width :]
    o = v @ last.attn.out_proj.weight.T + last.attn.out_proj.bias
    post = F.layer_norm(o, (width,), visual.ln_post.weight, visual.ln_post.bias, visual.ln_post.eps)
    by_hand = (post @ visual.proj)[1:]  # drop the class token
    dense = teacher.dense_features(pixels)[0]  # (D, 4, 4)
    torch.testing.assert_close(dense.flatten(1).T, by_hand, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(dense[:, 1, 2], dense[:, 2, 1])  # patches differ


def test_position_embedding_interpolation():
    pos = torch.randn(1 + 4 * 4, 8)
    assert interpolate_pos_embed(pos, (4, 4), (4, 4)) is pos
    out = interpolate_pos_embed(pos, (4, 4), (4, 8))
    assert out.shape == (1 + 32, 8)
    torch.testing.assert_close(out[0], pos[0])


def test_text_embeddings_are_unit_and_distinct(tiny):
    emb = tiny.text_embeddings(["car", ["road", "street"], "tree"])
    assert emb.shape == (3, 32)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    assert float(emb[0] @ emb[2]) < 0.9999


@pytest.mark.parametrize("form", ["pt", "wrapped", "safetensors", "torchscript"])
def test_checkpoint_saved_to_a_file_loads_back_identically(tiny_arch, tmp_path, form):
    source = CLIPTeacher(tiny_arch, image_size=(32, 48), seed=5, quick_gelu=form == "torchscript")
    state = source.model.state_dict()
    path = tmp_path / f"weights.{'safetensors' if form == 'safetensors' else 'pt'}"
    if form == "pt":
        torch.save(state, path)
    elif form == "wrapped":
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    elif form == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.jit.script(source.model).save(str(path))  # the form of OpenAI's released ViT-B-16.pt
    loaded = build_teacher(
        "clip", "cpu", arch=tiny_arch, checkpoint=path, image_size=(32, 48), seed=99, allow_torchscript=True
    )
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    img = image(32, 48, 4)
    torch.testing.assert_close(loaded.encode_images(img), source.encode_images(img), rtol=0, atol=0)
    torch.testing.assert_close(loaded.text_embeddings(["car"]), source.text_embeddings(["car"]))
    assert loaded.identity != source.identity and len(loaded.identity.split("-")[-2]) == 12


def test_torchscript_archive_gets_quick_gelu(tiny_arch, tmp_path):
    source = CLIPTeacher(tiny_arch, image_size=(32, 48), quick_gelu=True)
    path = tmp_path / "openai.pt"
    torch.jit.script(source.model).save(str(path))
    with pytest.raises(ValueError, match="TorchScript archive .* runs code stored in the file"):
        CLIPTeacher(tiny_arch, checkpoint=path, image_size=(32, 48))  # code from a file: only when allowed
    loaded = CLIPTeacher(tiny_arch, checkpoint=path, image_size=(32, 48), allow_torchscript=True)
    act = loaded.model.visual.transformer.resblocks[0].mlp.gelu
    assert type(act).__name__ == "QuickGELU"


def test_clear_errors_for_a_wrong_path_or_architecture(tiny_arch, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        CLIPTeacher(tiny_arch, checkpoint=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        CLIPTeacher("ViT-Z-99")
    state = CLIPTeacher(tiny_arch, image_size=(32, 48)).model.state_dict()
    state["visual.proj"] = torch.zeros(3, 3)
    del state["logit_scale"]
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(
        ValueError,
        match=r"does not match .*1 missing keys: logit_scale; 1 keys of the wrong shape: visual.proj \[3, 3\] in",
    ):
        CLIPTeacher(tiny_arch, checkpoint=path, image_size=(32, 48))
    torch.save({"weights": [1, 2]}, path)
    with pytest.raises(ValueError, match="no state dict"):
        CLIPTeacher(tiny_arch, checkpoint=path)


def test_image_size_must_be_a_multiple_of_the_patch(tiny_arch):
    with pytest.raises(ValueError, match="multiple"):
        CLIPTeacher(tiny_arch, image_size=(30, 48))


def test_vit_b_16_dense_features_of_a_224_by_416_image():
    teacher = build_teacher("clip", "cpu", arch="ViT-B-16")  # random weights: the shape is what is checked
    feats = teacher.encode_images(image(224, 416))
    assert feats.shape == (1, 512, 14, 26)
    assert teacher.identity == "clip-ViT-B-16-random0-224x416"
