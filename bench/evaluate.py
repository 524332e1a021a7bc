"""Evaluation of a distilled student (docs/method.md#evaluation-protocols): mIoU, zero-shot, linear probe,
few-shot fine-tuning.

- **mIoU** from one confusion matrix ``M`` over non-ignored points (rows ground truth, columns prediction):
  ``IoU_c = M_cc / (sum_j M_cj + sum_i M_ic - M_cc)``; a class absent from both prediction and ground truth
  has no IoU (NaN) and is left out of the mean; per-class IoU is always reported (``None`` when NaN).
  **Chance** (to tell whether every class is learned above chance): the IoU of a predictor that draws each point's class
  uniformly at random, ``p_c / (1 + p_c (C - 1))`` for a class holding the share ``p_c`` of the labelled points
  (``TP = p_c / C``, ``FP = (1 - p_c) / C``, ``FN = p_c (1 - 1/C)``); a class is *learned* when its IoU exceeds it.
- **Zero-shot**: ``argmax_c normalize(k) . e_c`` with the teacher's prompt-ensemble text embeddings ``e_c``.
- **Linear probe**: the backbone frozen in eval mode, a linear head trained with cross-entropy on the frozen
  features of a uniform sample of labelled train points: ``p = min(lp_points_per_scan, lp_max_points // n_scans)``
  random labelled points of every train scan (choice: the probe sees every train scan but a bounded number of
  its points, so its memory, ``lp_max_points x D`` floats, does not grow with the train split; SLidR trains the
  head on every point for many epochs, which this approximates by a uniform sample of at most
  ``lp_max_points`` points).
- **Few-shot fine-tuning**: backbone and a new linear head trained together on the 1% split (every 100th
  train scan, SLidR's rule); the same on the OOD dataset for **OOD few-shot**. The head reads the student's
  projection before its L2 normalisation (choice, as SLidR's downstream network: unit-norm inputs give the new
  head near-uniform logits that a short schedule does not get out of).

Downstream optimisation (SLidR lineage): SGD, momentum 0.9, weight decay 1e-4, cosine schedule (fine-tuning: after an
optional linear warm-up, ``ft_warmup``, with optional gradient-norm clipping, ``ft_clip_norm``: the stabilisers the
few-shot protocol selection on val chose between, :mod:`bench.study.few_shot_tune`), cross-entropy with the ignore index
excluded (``seg_loss = "ce+lovasz"`` adds Lovász-softmax, :mod:`bench.segmentation_loss`). Predictions are made per
voxel by the network and carried back to every point (:func:`models.students.devoxelize`), and every point of the
evaluation scans is scored. Every split is streamed through a ``DataLoader``
(:func:`bench.data.loader.scene_loader`), one scan at a time for evaluation. Under ``torchrun`` the evaluation scans
are split over the ranks and the confusion matrices summed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from bench import distributed as dist
from bench.config_sections import FewShotConfig, LinearProbeConfig, SegmentationConfig
from bench.data.classes import IGNORE_INDEX
from bench.data.loader import SceneDataset, ShardSampler, StepSampler, scene_loader, step_generator
from bench.segmentation_loss import class_weights, segmentation_loss
from bench.train import cosine_factor, make_optimizer, warmup_cosine_factor
from models.students import point_outputs, use_downstream_bn_momentum
from models.students.sparse import synchronise_batch_norms
from models.teachers.base import zero_shot_predict


def confusion_matrix(
    pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, n_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """``(C, C)`` int64 counts ``M[t, p]`` of points with ground truth ``t`` predicted ``p``; ignored points and
    labels outside ``0..C-1`` are skipped."""
    pred = torch.as_tensor(pred).reshape(-1).cpu().to(torch.int64)
    target = torch.as_tensor(target).reshape(-1).cpu().to(torch.int64)
    if pred.shape != target.shape:
        raise ValueError(f"{pred.numel()} predictions for {target.numel()} labels")
    keep = (target != ignore_index) & (target >= 0) & (target < n_classes)
    flat = target[keep] * n_classes + pred[keep].clamp(0, n_classes - 1)
    return torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes).numpy()


def miou(confusion: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """``{"miou": NaN-mean IoU, "per_class": {name: IoU or None}, "points": labelled points, "chance": {name:
    chance IoU or None}, "below_chance": [names of present classes whose IoU does not exceed chance]}`` of a
    confusion matrix (module docstring)."""
    conf = np.asarray(confusion, dtype=np.float64)
    if conf.shape != (len(classes), len(classes)):
        raise ValueError(f"confusion matrix {conf.shape} does not match {len(classes)} classes")
    tp = np.diag(conf)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    present = ~np.isnan(iou)
    mean = float(iou[present].mean()) if present.any() else float("nan")
    per_class = {name: (float(v) if ok else None) for name, v, ok in zip(classes, iou, present, strict=True)}
    share = conf.sum(axis=1) / max(conf.sum(), 1.0)
    chance_iou = share / (1.0 + share * (len(classes) - 1))
    labelled = conf.sum(axis=1) > 0
    chance = {name: (float(c) if ok else None) for name, c, ok in zip(classes, chance_iou, labelled, strict=True)}
    below = [name for name, v, c, ok in zip(classes, iou, chance_iou, labelled, strict=True) if ok and not v > c]
    return {"miou": mean, "per_class": per_class, "points": int(conf.sum()), "chance": chance, "below_chance": below}


PointPredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def evaluate_predictor(
    predict: PointPredictor, scenes: SceneDataset, classes: Sequence[str], device: torch.device, workers: int = 0
) -> dict[str, Any]:
    """mIoU of ``predict(points, batch) -> class per point`` over every point of ``scenes`` (split over ranks)."""
    conf = torch.zeros(len(classes), len(classes), dtype=torch.int64)
    for batch in scene_loader(scenes.without_features(), ShardSampler(len(scenes)), workers, device):
        conf += torch.from_numpy(confusion_matrix(predict(*batch.inputs(device)), batch.labels, len(classes)))
    return miou(dist.all_reduce_sum(conf).numpy(), classes)


def zero_shot(
    student: nn.Module,
    scenes: SceneDataset,
    text: torch.Tensor,
    classes: Sequence[str],
    device: torch.device,
    workers: int = 0,
) -> dict[str, Any]:
    """Zero-shot mIoU: each point's class is the text embedding nearest to its feature (cosine)."""
    student.eval()
    text = text.to(device)

    def predict(points: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return point_outputs(student, points, batch, lambda feats: zero_shot_predict(feats, text))

    return evaluate_predictor(predict, scenes, classes, device, workers)


class Segmenter(nn.Module):
    """A backbone (points -> features) followed by a linear classification head (features -> logits)."""

    def __init__(self, backbone: nn.Module, feature_dim: int, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, n_classes)

    def forward(self, points: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return point_outputs(self.backbone, points, batch, self.head)  # the head runs per voxel


def probe_points_per_scan(n_scans: int, per_scan: int, max_points: int) -> int:
    """Labelled points per train scan of the linear probe: ``min(per_scan, max_points // n_scans)``, at least 1."""
    return max(1, min(per_scan, max_points // max(n_scans, 1)))


@torch.no_grad()
def frozen_features(
    student: nn.Module, scenes: SceneDataset, per_scan: int, seed: int, device: torch.device, workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(n, D)`` (CPU) and labels ``(n,)`` of up to ``per_scan`` random labelled points of every scan
    (the points of scan ``i`` drawn by ``numpy.random.default_rng([seed, i])``), in scan order.

    Streamed, one scan in memory at a time plus the ``n x D`` result, allocated once (long-lived pieces between
    the per-scan temporaries would fragment the heap and hold on to their memory). Under ``torchrun`` scan ``i``
    is read on rank ``i mod W`` and the parts are gathered on every rank.
    """
    feats: torch.Tensor | None = None
    mine = list(range(len(scenes)))[dist.rank() :: dist.world_size()]
    labels = torch.empty(len(mine) * per_scan, dtype=torch.int64)
    scan_of = torch.empty(len(mine) * per_scan, dtype=torch.int64)
    filled = 0
    loader = scene_loader(scenes.without_features(), ShardSampler(len(scenes)), workers, device)
    for position, batch in zip(mine, loader, strict=True):
        scene_labels = batch.labels.numpy()
        idx = np.flatnonzero(scene_labels != IGNORE_INDEX)
        if len(idx) > per_scan:
            idx = np.sort(np.random.default_rng([seed, position]).choice(idx, size=per_scan, replace=False))
        out = point_outputs(student, *batch.inputs(device), index=torch.from_numpy(idx).to(device))
        if feats is None:
            feats = torch.empty(len(mine) * per_scan, out.shape[1], dtype=out.dtype)
        feats[filled : filled + len(idx)] = out.cpu()
        labels[filled : filled + len(idx)] = torch.from_numpy(scene_labels[idx])
        scan_of[filled : filled + len(idx)] = position
        filled += len(idx)
    if feats is None:
        feats = torch.empty(0, 0)
    if dist.active():
        width = max(int(x) for x in dist.all_gather_objects(feats.shape[1]))
        parts = dist.all_gather_rows(feats[:filled] if feats.shape[1] else torch.empty(0, width))
        scans = torch.cat(dist.all_gather_rows(scan_of[:filled]))
        order = torch.argsort(scans, stable=True)  # scan order, as in one process
        feats, labels = torch.cat(parts)[order], torch.cat(dist.all_gather_rows(labels[:filled]))[order]
        filled = len(order)
    if not filled:
        raise ValueError(f"the linear probe found no labelled point in the {len(scenes)} train scans")
    return feats[:filled], labels[:filled]


def _label_counts(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Points per class ``(C,)`` of a label tensor (ignored and out-of-range labels skipped)."""
    labels = labels.reshape(-1).to(torch.int64)
    labels = labels[(labels >= 0) & (labels < n_classes)]
    return torch.bincount(labels.cpu(), minlength=n_classes)


def _split_label_counts(scenes: SceneDataset, n_classes: int, workers: int = 0) -> torch.Tensor:
    """Points per class over every scan of ``scenes`` (one streamed pass, labels only; summed over the ranks)."""
    counts = torch.zeros(n_classes, dtype=torch.int64)
    for batch in scene_loader(scenes.without_features(), ShardSampler(len(scenes)), workers):
        counts += _label_counts(batch.labels, n_classes)
    return dist.all_reduce_sum(counts)


def _share_from_main(module: nn.Module) -> None:
    """Load rank 0's weights and buffers of ``module`` on every rank (nothing in a single process)."""
    if dist.active():
        state = {k: v.cpu() for k, v in module.state_dict().items()} if dist.is_main() else None
        module.load_state_dict(dist.broadcast_object(state))


def linear_probe(
    student: nn.Module,
    train: SceneDataset,
    evaluation: SceneDataset,
    classes: Sequence[str],
    settings: LinearProbeConfig,
    device: torch.device,
    progress: bool = False,
    workers: int = 0,
    *,
    segmentation: SegmentationConfig,
    seed: int,
    momentum: float,
    weight_decay: float,
) -> dict[str, Any]:
    """Linear-probe mIoU: frozen backbone (eval mode), a linear head trained on its features of the train split.

    ``settings``: the protocol's section (points per scan, at most ``max_points``, ``steps`` SGD steps at ``lr`` on
    batches of ``batch_points``); ``segmentation``: the loss and class weights; ``seed``: the run's; ``momentum``
    and ``weight_decay`` of the SGD: the run's distillation values (``distillation.momentum``,
    ``distillation.weight_decay``). Every rank computes the same head (same scans, same seed); only the evaluation
    is split over ranks.
    """
    student.eval()
    per_scan = probe_points_per_scan(len(train), settings.points_per_scan, settings.max_points)
    feats, labels = frozen_features(student, train, per_scan, seed, device, workers)
    torch.manual_seed(seed)
    head = nn.Linear(feats.shape[1], len(classes)).to(device)
    weight = class_weights(_label_counts(labels, len(classes)), segmentation.class_weight)
    if dist.is_main():  # the head is trained once, on rank 0, and sent to the other ranks
        optimizer = make_optimizer(head.parameters(), "sgd", settings.lr, momentum, weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, settings.steps))
        for step in tqdm(range(1, settings.steps + 1), desc="linear probe", leave=False, disable=not progress):
            pick = torch.randint(len(feats), (settings.batch_points,), generator=step_generator(seed, step, 7))
            logits = head(feats[pick].to(device))
            loss = segmentation_loss(logits, labels[pick].to(device), segmentation.loss, IGNORE_INDEX, weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    _share_from_main(head)
    head.eval()
    return evaluate_predictor(lambda p, b: head(student(p, b)).argmax(dim=1), evaluation, classes, device, workers)


def fine_tune(
    student: nn.Module,
    train: SceneDataset,
    evaluation: SceneDataset,
    classes: Sequence[str],
    settings: FewShotConfig,
    device: torch.device,
    progress: bool = False,
    workers: int = 0,
    *,
    segmentation: SegmentationConfig,
    seed: int,
    out_dim: int,
    sync_bn: bool,
) -> dict[str, Any]:
    """Few-shot mIoU: a copy of the student and a new linear head trained together on ``train`` (the 1% split).

    ``settings``: the protocol's section (``steps`` of ``batch_size`` scans, the ``optimizer`` at ``lr``, warm-up
    steps ``floor(warmup * steps)``, :func:`bench.train.warmup_cosine_factor`, gradient norm clipped to
    ``clip_norm``); ``segmentation``: the loss and class weights; ``seed``, the student's ``out_dim`` and
    ``sync_bn`` (``distillation.sync_bn``): the run's. Besides the mIoU the result holds the optimisation's
    trace: the first, largest and last training loss and the largest gradient norm (before clipping), on rank 0, so that
    an unstable fine-tuning is visible in the run's metrics. The student's batch norms take their downstream momentum
    (SLidR's 0.02 for the ``slidr`` preset, :func:`models.students.use_downstream_bn_momentum`). Under ``torchrun`` the
    scans of a step are split over the ranks as in distillation (DistributedDataParallel, synchronised batch norm, the
    logits of the whole batch gathered so that every rank computes the single-process loss); when a step has fewer scans
    than ranks the model is trained once, on rank 0, and sent to the others. Never repeated; the evaluation is split
    over the ranks.
    """
    if not len(train):
        raise ValueError("the few-shot split is empty; lower few_shot_every or use more train scenes")
    torch.manual_seed(seed)
    backbone = copy.deepcopy(student)
    network = getattr(backbone, "network", None)
    if network is not None and hasattr(network, "normalize"):
        network.normalize = False  # the head reads the projection before L2 normalisation (SLidR's downstream)
    use_downstream_bn_momentum(backbone)
    model = Segmenter(backbone, out_dim, len(classes)).to(device)
    scheme = segmentation.class_weight
    weight = None if scheme == "none" else class_weights(_split_label_counts(train, len(classes), workers), scheme)
    world = dist.world_size()
    split = world > 1 and min(settings.batch_size, len(train)) >= world
    synchronise_batch_norms(backbone, split and sync_bn)
    trace: list[torch.Tensor] = []  # (loss, gradient norm) of every step where this rank trains; kept on the device
    if split or dist.is_main():
        network: nn.Module = model
        if split:
            network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = make_optimizer(model.parameters(), settings.optimizer, settings.lr, 0.9, 1e-4)
        warmup = int(settings.warmup * settings.steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: warmup_cosine_factor(s, settings.steps, warmup)
        )
        model.train()
        sampler = StepSampler(len(train), settings.batch_size, seed, 0, settings.steps, stream=11, shard=split)
        loader = scene_loader(train.without_features(), sampler, workers, device)
        for batch in tqdm(loader, desc="fine-tune", leave=False, disable=not progress):
            logits = network(*batch.inputs(device))
            target = batch.labels.to(device, non_blocking=True)
            if split:  # every rank scores the whole batch (gathered in one process's order): exact gradients
                lengths = np.diff(batch.offsets).tolist()
                logits = dist.gather_slots(logits, lengths, differentiable=True)
                target = dist.gather_slots(target, lengths)
            loss = segmentation_loss(logits, target, segmentation.loss, IGNORE_INDEX, weight)
            norm = optimisation_step(loss, optimizer, model.parameters(), settings.clip_norm)
            schedule.step()
            trace.append(torch.stack([loss.detach(), norm]))
    if not split:
        _share_from_main(model)
    model.eval()
    result = evaluate_predictor(lambda p, b: model(p, b).argmax(dim=1), evaluation, classes, device, workers)
    if trace:  # one transfer at the end: no step waits on the host
        losses, norms = torch.stack(trace).double().cpu().unbind(1)
        result["train_loss"] = {"first": float(losses[0]), "max": float(losses.max()), "last": float(losses[-1])}
        result["grad_norm_max"] = float(norms.max())
    return result


def optimisation_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, parameters: Any, clip_norm: float | None
) -> torch.Tensor:
    """Back-propagate ``loss`` and step ``optimizer``, the gradients first rescaled so that their global L2 norm
    ``||g||`` is at most ``clip_norm`` (``g <- g * min(1, clip_norm / ||g||)``, Pascanu et al., ICML 2013; None:
    unclipped). Returns ``||g||`` before clipping, a 0-d tensor on the gradients' device (no synchronisation)."""
    params = [p for p in parameters if p.requires_grad]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    max_norm = float("inf") if clip_norm is None else clip_norm
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    return norm.detach()
