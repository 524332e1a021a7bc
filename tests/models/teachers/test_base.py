"""The teacher interface: input protocols, upsampling and pixel sampling, the prompt ensemble, prompt data, the
factory."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.data.classes import NUSCENES_CLASSES, SEMANTICKITTI_CLASSES
from models.teachers import (
    Teacher,
    build_teacher,
    class_phrases,
    prompt_templates,
    sample,
    upsample,
    zero_shot_classifier,
    zero_shot_predict,
)
from models.teachers.base import (
    CameraInput,
    PairedCameraInput,
    RenderedCameraInput,
    ScanInput,
    SingleCameraScan,
    camera_view,
)


class LookupTeacher(Teacher):
    """Embeds a prompt as a fixed random vector per prompt string (for checking the ensemble arithmetic)."""

    name = "lookup"
    dim = 8

    def __init__(self):
        self.table: dict[str, torch.Tensor] = {}

    @property
    def identity(self) -> str:
        return "lookup"

    def preprocessor(self):
        raise NotImplementedError

    def encode(self, prepared):
        raise NotImplementedError

    def _embed_prompts(self, phrase: str, prompts: Sequence[str]) -> torch.Tensor:
        g = torch.Generator().manual_seed(len(self.table))
        for p in prompts:
            self.table.setdefault(p, torch.randn(self.dim, generator=g) * (1 + len(p)))
        return torch.stack([self.table[p] for p in prompts])


def protocol_members(protocol: type) -> set[str]:
    """Names a protocol declares (its own and its protocol bases'), without the typing machinery."""
    return {
        name
        for cls in protocol.__mro__
        if cls.__module__ == "models.teachers.base"
        for name in vars(cls)
        if not name.startswith("_")
    }


def test_bench_scans_and_views_satisfy_the_input_protocols(scene):
    """The benchmark's ``Scan`` and ``CameraView`` have every member of the protocols (found statically, so a lazy
    image is not read)."""
    assert protocol_members(CameraInput) == {"name", "image", "size"}
    assert protocol_members(RenderedCameraInput) == {"name", "image", "size", "class_map", "instance_map"}
    assert protocol_members(PairedCameraInput) == {"name", "image", "size", "pairing"}
    assert protocol_members(ScanInput) == {"scan_id", "cameras"}
    for name in protocol_members(ScanInput):
        inspect.getattr_static(scene, name)
    assert isinstance(scene.scan_id, str) and isinstance(scene.cameras, Sequence)
    for view in scene.cameras:
        for name in protocol_members(RenderedCameraInput) | protocol_members(PairedCameraInput):
            inspect.getattr_static(view, name)
        assert isinstance(view.name, str) and view.image.shape == (*view.size, 3) and view.image.dtype == np.uint8
        assert view.class_map.shape == view.size and view.pairing.shape[1] == 3


def test_camera_view_by_index_or_name(scene):
    assert camera_view(scene, 2) is scene.cameras[2]
    assert camera_view(scene, "CAM_FRONT") is scene.camera("CAM_FRONT")
    with pytest.raises(KeyError, match="no camera 'CAM_TOP'"):
        camera_view(scene, "CAM_TOP")
    one = SingleCameraScan(scene.scan_id, (scene.cameras[1],))
    assert camera_view(one, scene.cameras[1].name) is scene.cameras[1]


def test_sample_equals_full_upsampling_at_pixels_including_borders():
    patch = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    size = (48, 64)
    full = upsample(patch, size)
    assert full.shape == (5, 48, 64)
    rows = np.array([0, 0, 47, 47, 5, 23, 24, 31])
    cols = np.array([0, 63, 0, 63, 7, 30, 33, 8])
    got = sample(patch, rows, cols, size)
    torch.testing.assert_close(got, full[:, rows, cols].T)
    # patch centres sit at pixel (r, c) = (16 i + 7.5, 16 j + 7.5): row 15.5 is halfway between patch rows 0 and 1
    torch.testing.assert_close(
        sample(patch, np.array([15.5]), np.array([23.5]), size)[0], (patch[:, 0, 1] + patch[:, 1, 1]) / 2
    )
    torch.testing.assert_close(full[:, 0, 0], patch[:, 0, 0])  # clamped at the border


def test_upsample_matches_interpolate_and_blurs_edges():
    patch = torch.zeros(1, 2, 2)
    patch[0, :, 1] = 1.0  # a vertical edge between the two patch columns
    up = upsample(patch, (32, 32))
    torch.testing.assert_close(up[None], F.interpolate(patch[None], (32, 32), mode="bilinear", align_corners=False))
    row = up[0, 5]
    assert row[0] == 0 and row[-1] == 1 and 0 < row[15] < 1  # a ramp across the edge, not a step


def test_text_embeddings_are_the_renormalised_mean_of_normalised_prompts():
    teacher = LookupTeacher()
    templates = ["a {}.", "the {} here."]
    emb = teacher.text_embeddings(["car", ["road", "street"]], templates)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    prompts = ["a road.", "the road here.", "a street.", "the street here."]
    rows = F.normalize(torch.stack([teacher.table[p] for p in prompts]), dim=1)
    torch.testing.assert_close(emb[1], F.normalize(rows.mean(0), dim=0))
    # the plain mean of unnormalised prompts differs (prompt norms differ), so the normalisation matters
    raw = torch.stack([teacher.table[p] for p in prompts]).mean(0)
    assert not torch.allclose(emb[1], F.normalize(raw, dim=0))


def test_template_and_phrase_validation():
    teacher = LookupTeacher()
    with pytest.raises(ValueError, match="contain"):
        teacher.text_embeddings(["car"], ["no placeholder"])
    with pytest.raises(ValueError, match="at least one phrase"):
        teacher.text_embeddings([[]], ["a {}"])


def test_prompt_data_covers_both_label_spaces_in_order():
    assert tuple(class_phrases("nuscenes")) == NUSCENES_CLASSES
    assert tuple(class_phrases("semantickitti")) == SEMANTICKITTI_CLASSES
    assert all(phrases for phrases in class_phrases("nuscenes").values())
    assert len(prompt_templates()) >= 10 and all("{}" in t for t in prompt_templates())
    with pytest.raises(ValueError, match="known"):
        class_phrases("waymo")


def test_zero_shot_classifier_and_prediction():
    teacher = LookupTeacher()
    clf = zero_shot_classifier(teacher, "semantickitti")
    assert clf.shape == (len(SEMANTICKITTI_CLASSES), 8)
    feats = 3.0 * clf[[4, 0, 18]] + 0.01
    assert zero_shot_predict(feats, clf).tolist() == [4, 0, 18]


def test_build_teacher_rejects_unknown_names():
    with pytest.raises(ValueError, match="synthetic, clip"):
        build_teacher("dino")
