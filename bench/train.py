"""The distillation trainer: a 3D student learns to imitate the frozen 2D teacher (docs/method.md#pair-sampling,
docs/method.md#losses).

One step:

1. draw ``batch_size`` scans of the train split (a generator seeded by ``(seed, step)``, so a resumed run draws
   exactly what an uninterrupted one draws); a ``DataLoader`` reads them ahead in worker processes
   (:class:`bench.data.loader.StepSampler`, :func:`bench.data.loader.scene_loader`), so only the scans of the next steps
   are in memory;
2. run the student on all their points (voxelised inside, :class:`models.students.PointStudent`);
3. sample ``N = n_pairs`` point-pixel pairs uniformly, without replacement, over all valid pairs of the batch
   (SLidR's choice, docs/method.md#pair-sampling); ``K`` = the student's features of the pairs' points, ``Q`` = the
   teacher's features at the pairs' pixels;
   *Region losses* (:func:`models.losses.loss_inputs` ``"superpixels"``: SLidR, ST-SLidR) use every pair of the
   batch instead: the student's features of the pairs are L2-normalised and averaged per superpixel of each scan
   (superpoints), ``K`` = one row per superpixel reached by a pair, ``Q`` = the teacher's features averaged over
   the same superpixels (:func:`batch_regions`, :mod:`bench.data.superpixels`);
4. ``loss(K, Q, **loss_params)`` by name (:data:`models.losses.LOSSES`, or a plug-in); one optimiser step; the learning
   rate follows the cosine schedule ``lr_t = lr * (1 + cos(pi t / T)) / 2`` (SGDR without restarts,
   Loshchilov & Hutter, ICLR 2017; SLidR's schedule).

Every ``probe_every`` steps (and at steps 0 and T) U, T, G of the student on a fixed probe set go to the
trajectory; every ``checkpoint_every`` steps (and at T) the model, optimiser, schedule and trajectory are saved
atomically, and training resumes from that file.

Under ``torchrun`` the result does not depend on the number of ranks W (up to float rounding): the
``batch_size`` scans of a step are split over the ranks (rank r takes scans r, r + W, ...; more ranks than
scans is refused), each rank runs the student on its scans, the pair counts of all scans are gathered and the
``n_pairs`` pairs are drawn over the whole batch with the generator a single process uses
(:func:`batch_pairs`); each rank reads ``K`` and ``Q`` of the pairs on its own scans and all of them are gathered
(``K`` differentiably) in the single-process order, so every rank computes the same loss on the same N pairs.
The collectives' backward sums the gradients that reach each rank's features from every rank, so rank r holds
``W dL/dtheta_r`` and DistributedDataParallel's average over ranks is the single-process ``dL/dtheta``. Batch
norm is synchronised over the ranks (``sync_bn``, :class:`models.students.sparse.SparseBatchNorm`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from bench import distributed as dist
from bench.config import DistillConfig
from bench.data.loader import SCAN_CACHE, SceneDataset, StepSampler, scene_loader, step_generator
from bench.data.scene import SceneBatch
from bench.files import write_bytes
from bench.probe import GeometrySet
from bench.results import RunDir, without_locations
from geomstruct.run_folder import CHECKPOINT_FILE, CONFIG_FILE, flat_config, read_config, read_object
from models.losses import get_loss, loss_inputs, pool_selected_rows
from models.students import PointStudent, build_student
from models.students.checkpoints import load_published
from models.students.sparse import synchronise_batch_norms

TRAJECTORY_COLUMNS = ("step", "loss", "lr", "U", "T", "G")


def build_distill_student(cfg: DistillConfig) -> PointStudent:
    """The student of a run, with weights drawn from ``torch.manual_seed(cfg.seed)``; a published backbone's
    (``student.checkpoint`` in ``student.checkpoint_layout``, :func:`models.students.checkpoints.load_published`)
    where the run names one: every tensor mapped, or a :class:`~models.students.checkpoints.CheckpointMismatch`
    listing the offending keys."""
    torch.manual_seed(cfg.seed)
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.student.overrides.items()}
    student = build_student(
        cfg.student.name,
        out_dim=cfg.student.out_dim,
        preset=cfg.student.preset,
        voxel_size=cfg.student.voxel_size,
        inputs=tuple(cfg.student.inputs),
        system=cfg.student.voxel_system,
        **overrides,
    )
    if cfg.student.checkpoint is not None:
        load_published(student, cfg.student.checkpoint, str(cfg.student.checkpoint_layout))
    return student


def cosine_factor(step: int, total: int) -> float:
    """``(1 + cos(pi * step / total)) / 2``: the cosine schedule's multiplier of the base learning rate."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def warmup_cosine_factor(step: int, total: int, warmup: int) -> float:
    """The multiplier of the base learning rate at ``step`` of ``total``: a linear warm-up ``(step + 1) / warmup``
    over the first ``warmup`` steps (Goyal et al., 2017), then the cosine schedule over the remaining steps,
    ``(1 + cos(pi * (step - warmup) / (total - warmup))) / 2``; ``warmup = 0`` is :func:`cosine_factor`."""
    if step < warmup:
        return (step + 1) / warmup
    return cosine_factor(step - warmup, total - warmup)


def make_optimizer(
    params: Sequence[torch.nn.Parameter] | Any, name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid optimizers: sgd, adamw")


def sample_pairs(counts: Sequence[int], n_pairs: int, generator: torch.Generator) -> list[tuple[int, np.ndarray]]:
    """``n_pairs`` pairs drawn uniformly without replacement over all pairs of scans holding ``counts`` pairs
    (all of them if fewer).

    Returns per scan ``(scan position, rows into its pairs)``, scans with no drawn pair left out.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total < 2:
        raise ValueError(f"a batch of {len(counts)} scans has {total} point-pixel pairs; a loss needs 2")
    chosen = torch.randperm(total, generator=generator)[: min(n_pairs, total)].numpy()
    chosen.sort()
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = []
    for i in range(len(counts)):
        rows = chosen[(chosen >= starts[i]) & (chosen < starts[i + 1])] - starts[i]
        if len(rows):
            out.append((i, rows))
    return out


def batch_pairs(
    batch: SceneBatch,
    feats: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
    n_pairs: int,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``K`` (student features, differentiable) and ``Q`` (teacher features) of the step's ``n_pairs`` pairs,
    drawn over the scans of every rank; identical on every rank and to a single process (module docstring).

    ``batch`` holds this rank's scans (slots ``r, r + W, ...`` of the step's draw); ``feats`` is the student's
    features of their points, or a function from the drawn points' indices (into the batch's points) to their
    features (``lambda index: student(points, batch_index, index)``: only those rows are projected, the
    training step's path).
    """
    world, rank = dist.world_size(), dist.rank()
    counts = dist.all_gather_objects([len(s.pairs) for s in batch.scenes])
    slots = sorted((r + world * i, r, i) for r, mine in enumerate(counts) for i in range(len(mine)))
    picks = sample_pairs([counts[r][i] for _, r, i in slots], n_pairs, generator)
    by_rank: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(world)]
    for g, rows in picks:
        by_rank[slots[g][1]].append((slots[g][2], rows))
    mine = by_rank[rank]
    index = np.concatenate([batch.scenes[i].pairs[rows, 0] + batch.offsets[i] for i, rows in mine] or [[]])
    rows = torch.from_numpy(index.astype(np.int64)).to(device)
    k = feats(rows) if callable(feats) else feats[rows]
    q_parts = [batch.scenes[i].pair_features(rows, device) for i, rows in mine]
    q = torch.cat(q_parts) if q_parts else feats.new_zeros((0, batch.scenes[0].grids.shape[1]))
    if world == 1:
        return k, q
    lengths = [0] * len(batch.scenes)  # rows of every scan of this rank (0 for scans without a drawn pair)
    for i, rows in mine:
        lengths[i] = len(rows)
    return dist.gather_slots(k, lengths, differentiable=True), dist.gather_slots(q, lengths)


def batch_regions(
    batch: SceneBatch,
    feats: torch.Tensor | Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    unit_rows: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``K`` (superpoint features, differentiable) and ``Q`` (superpixel features), one row per superpixel that a
    pair of the batch reaches, scans in the single-process order over every rank (region losses, module docstring).

    Pooling is per scan (regions never span scans), so each rank pools its own scans and the pooled rows are
    gathered: the same rows as pooling all pairs of the batch at once. The pairs'
    features are L2-normalised before pooling; ``unit_rows=True`` says ``feats`` already has unit rows (the
    student's output, L2-normalised by its head): normalising again is then the identity in value and, after the
    head's own normalisation, in gradient (its projection ``I - f f^T`` is idempotent), and is skipped. The means
    are taken without copying the pairs' rows (:func:`models.losses.pool_selected_rows`).

    ``feats`` is the student's features of the batch's points, or a function from point indices (into the
    batch's points) to ``(F, rows)``, the features ``F`` of the points' distinct voxels and the row of ``F`` of
    every point (``lambda index: student(points, batch_index, index, distinct=True)``, the training step's path:
    the head and its normalisation then run once per voxel holding a pair and the pooling reads those rows,
    forward and backward, instead of every point of the batch; the same values up to float rounding, since the
    sums run in another order).
    """
    for scene in batch.scenes:
        if scene.pair_regions is None or scene.region_feats is None:
            raise ValueError(
                f"scene {scene.scan_id} has no superpixel regions; region losses need the superpixel cache"
            )
    index = [torch.from_numpy(scene.pairs[:, 0] + batch.offsets[i]).to(device) for i, scene in enumerate(batch.scenes)]
    if callable(feats):  # index becomes the pairs' rows of F
        feats, rows = feats(torch.cat(index))
        index = list(rows.split([len(i) for i in index]))
    if not unit_rows:
        feats = torch.nn.functional.normalize(feats, dim=1)  # per point: the same rows as per pair
    k_parts, q_parts, lengths = [], [], []
    for i, scene in enumerate(batch.scenes):
        regions = torch.tensor(scene.pair_regions, device=device)  # a copy: the array is the scan cache's
        pooled, ids = pool_selected_rows(feats, index[i], regions)
        k_parts.append(pooled)
        q_parts.append(scene.region_feats.to(device, non_blocking=True)[ids])
        lengths.append(len(ids))
    k, q = torch.cat(k_parts), torch.cat(q_parts)
    if dist.world_size() == 1:
        return k, q
    return dist.gather_slots(k, lengths, differentiable=True), dist.gather_slots(q, lengths)


CONVERGENCE_FRACTION = 0.2
"""The diagnostic compares the end of training with the trajectory row at ``(1 - fraction) T``."""
CONVERGENCE_TOLERANCE = 0.05
"""*(choice, fixed before any run of the fair study)* a run counts as converged when every relative change of
the diagnostic is at most this."""


def convergence(trajectory: Sequence[dict[str, float]], fraction: float = CONVERGENCE_FRACTION) -> dict[str, Any]:
    """Relative change of the probe's U, T, G and of the training loss over the last ``fraction`` of the steps.

    With ``a`` the trajectory row at the largest step ``<= (1 - fraction) T`` and ``b`` the last row (step T):
    ``change_x = |x_b - x_a| / max(|x_a|, 1e-8)`` for ``x`` in U, T, G and the loss (the loss of a row is the mean
    training loss since the previous row, so ``a`` must be after step 0); ``converged`` when every change is at
    most :data:`CONVERGENCE_TOLERANCE`. Values are None where the trajectory has no such row.
    """
    if not trajectory:
        return {"from_step": None, "to_step": None, "converged": None}
    last = trajectory[-1]
    limit = (1.0 - fraction) * last["step"]
    earlier = [row for row in trajectory if 0 < row["step"] <= limit]
    out: dict[str, Any] = {"fraction": fraction, "to_step": int(last["step"])}
    if not earlier:
        return {**out, "from_step": None, "converged": None}
    first = earlier[-1]
    out["from_step"] = int(first["step"])
    changes = []
    for key in ("U", "T", "G", "loss"):
        a, b = first.get(key), last.get(key)
        ok = a is not None and b is not None and math.isfinite(a) and math.isfinite(b)
        change = abs(b - a) / max(abs(a), 1e-8) if ok else None
        out[f"change_{key}"] = change
        if change is not None:
            changes.append(change)
    out["converged"] = bool(changes) and max(changes) <= CONVERGENCE_TOLERANCE
    return out


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes(path, buf.getvalue())


def _digest(resolved: dict[str, Any]) -> str:
    text = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_hash(cfg: DistillConfig | dict[str, Any]) -> str:
    """SHA-256 (16 hex digits) of the resolved configuration's flat form (:meth:`bench.config.DistillConfig.flat`;
    or of a run's stored ``config.json``, either format, flattened) without its location fields
    (:func:`bench.results.without_locations`): the identity a checkpoint is tied to, the same when the data, caches
    or weights have moved."""
    resolved = flat_config(cfg) if isinstance(cfg, dict) else cfg.flat()
    return _digest(without_locations(resolved))


def _hash_with_locations(cfg: DistillConfig | dict[str, Any]) -> str:
    """The hash that checkpoints written before locations were left out carry (every field)."""
    return _digest(flat_config(cfg) if isinstance(cfg, dict) else cfg.flat())


def accepted_hashes(cfg: DistillConfig, run_path: Path | None) -> set[str]:
    """The configuration hashes a run's checkpoint may carry: this configuration's, and, when the run folder's
    ``config.json`` is this configuration (:meth:`bench.results.RunDir.config_differences` with the field
    defaults: a field it lacks at its default, locations ignored), that file's: a run interrupted before a new
    field existed, or whose inputs have moved since, resumes. Each also as checkpoints written before locations
    were left out of the hash carry it (every field, the file's own locations)."""
    accepted = {config_hash(cfg), _hash_with_locations(cfg)}
    stored = run_path / CONFIG_FILE if run_path is not None else None
    if (
        stored is not None
        and stored.is_file()
        and not RunDir(run_path).config_differences(cfg.resolved(), DistillConfig.field_defaults())
    ):
        old = read_config(run_path)
        if old is not None:
            accepted |= {config_hash(old), _hash_with_locations(old)}
    return accepted


def load_checkpoint(
    path: Path, expected_hash: str | set[str] | None = None, vouched_by: Path | None = None
) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (CPU tensors), or None when there is none.

    A checkpoint carries the hash of the configuration that wrote it, which must be one of ``expected_hash``
    (none given: any checkpoint loads). One without a hash (written before hashes existed) loads only when
    ``vouched_by``, the run folder's ``config.json`` from before this attempt, is there and is this run's
    configuration (its hash among ``expected_hash``, :func:`accepted_hashes`): that file was written by the
    attempt that wrote the checkpoint.

    Raises:
        ValueError: the file does not load (naming it and the remedy), it was written by another configuration
            than the one(s) of ``expected_hash``, or it has no hash and no ``config.json`` vouches for it.
    """
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupted or foreign file
        raise ValueError(
            f"{path}: the checkpoint does not load ({type(exc).__name__}); remove it to restart this run from step 0"
        ) from None
    if not isinstance(state, dict) or "student" not in state:
        raise ValueError(f"{path} is not a checkpoint of this harness; remove it to restart this run from step 0")
    found = state.get("config_hash")
    expected = {expected_hash} if isinstance(expected_hash, str) else expected_hash
    if expected is None:
        return state
    if found is None:
        _check_vouched(path, expected, vouched_by)
    elif found not in expected:
        expected_hash = ", ".join(sorted(expected))
        raise ValueError(
            f"{path} was written by another configuration (hash {found}, this run's is {expected_hash}); "
            "remove it to restart this run from step 0"
        )
    return state


def _check_vouched(path: Path, expected: set[str], vouched_by: Path | None) -> None:
    """Raise unless ``vouched_by`` is a ``config.json`` of one of the ``expected`` configurations (the checkpoint
    at ``path`` carries no hash)."""
    if vouched_by is not None and vouched_by.is_file():
        stored = flat_config(read_object(vouched_by))
        if {config_hash(stored), _hash_with_locations(stored)} & expected:
            return
        why = f"{vouched_by} is another configuration"
    else:
        why = f"its folder has no {CONFIG_FILE} from the run that wrote it"
    raise ValueError(
        f"{path} carries no configuration hash (written by an older version) and {why}: it may be another "
        "run's checkpoint; remove it to restart this run from step 0"
    )


def train_student(
    cfg: DistillConfig,
    scenes: SceneDataset,
    probe: GeometrySet,
    device: torch.device,
    run_path: Path | None = None,
    on_step: Callable[[int], None] | None = None,
    workers: int = 0,
    on_bind: Callable[[], None] | None = None,
) -> tuple[PointStudent, list[dict[str, float]]]:
    """Distil the teacher into a new student; resumes from ``run_path / checkpoint.pt`` when it exists.

    On a CPU, when the run has no augmentation and its train and probe scans fit :data:`bench.data.loader.SCAN_CACHE`,
    the student keeps every scan's voxels and kernel maps (``PointStudent.scan_cache``; bit-for-bit the same
    outputs, :mod:`models.students.sparse.scan_maps`), so they are built once per process instead of every step.

    Args:
        cfg: the run configuration.
        scenes: the train split, with teacher grids.
        probe: the fixed probe set of the trajectory.
        device: where to train.
        run_path: the run directory (checkpoints, written by rank 0 only); None trains without checkpoints.
        on_step: called after every step with its number (progress bars).
        workers: DataLoader worker processes reading the scans ahead (0: in this process).
        on_bind: called once on rank 0 when the run folder holds state of this attempt's configuration: right
            after a checkpoint was resumed, or else just before the first checkpoint is written (the harness
            writes ``config.json`` then, so a run that fails before that binds no folder); not called without
            ``run_path``.

    Returns:
        The trained student (not wrapped) and the trajectory rows (``TRAJECTORY_COLUMNS``).
    """
    student = build_distill_student(cfg).to(device)
    if device.type == "cpu" and cfg.data.augmentation is None and len(scenes) + cfg.probe.scenes <= SCAN_CACHE:
        student.scan_cache.capacity = SCAN_CACHE  # every step's scans were seen before: keep their maps
    optimizer = make_optimizer(
        student.parameters(),
        cfg.distillation.optimizer,
        cfg.distillation.lr,
        cfg.distillation.momentum,
        cfg.distillation.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, cfg.distillation.steps))
    loss_fn = get_loss(cfg.distillation.loss)
    trajectory: list[dict[str, float]] = []
    start, running, seen = 0, 0.0, 0
    ckpt_path = run_path / CHECKPOINT_FILE if run_path is not None else None
    identity = config_hash(cfg)
    state = None
    if run_path is not None and ckpt_path is not None:  # config.json is not yet this attempt's (on_bind)
        state = load_checkpoint(ckpt_path, accepted_hashes(cfg, run_path), vouched_by=run_path / CONFIG_FILE)
    bind = on_bind if run_path is not None and dist.is_main() else None
    if state is not None:
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        trajectory, start = list(state["trajectory"]), int(state["step"])
        running, seen = state["running_loss"]
        if bind is not None:
            bind()
            bind = None
    model: torch.nn.Module = student
    if dist.active():
        if cfg.distillation.sync_bn:
            synchronise_batch_norms(student)
        model = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)

    def record(step: int, loss: float) -> None:
        geo = probe.geometry(
            probe.student_features(student, device, workers), t=cfg.geometry.uniformity_t, with_structure=False
        )
        lr = optimizer.param_groups[0]["lr"]
        trajectory.append({"step": step, "loss": loss, "lr": lr, "U": geo["U"], "T": geo["T"], "G": geo["G"]})

    if start == 0:
        record(0, float("nan"))
    if cfg.student.checkpoint is not None:  # a published backbone: evaluated as it is, no distillation step
        if bind is not None:
            bind()
        student.eval()
        return student, trajectory
    model.train()
    augmentation = cfg.data.augmentations()
    if augmentation is not None:
        scenes = scenes.augmented(augmentation)
    sampler = StepSampler(
        len(scenes),
        cfg.distillation.batch_size,
        cfg.seed,
        start,
        cfg.distillation.steps,
        seeded=augmentation is not None,
    )
    loader = scene_loader(scenes, sampler, workers, device)
    regions = loss_inputs(cfg.distillation.loss) == "superpixels"
    for step, batch in zip(range(start + 1, cfg.distillation.steps + 1), loader, strict=True):
        points, batch_index = batch.inputs(device)
        if regions:  # the student projects only the points that hold a pair
            feats = functools.partial(model, points, batch_index, distinct=True)
            k, q = batch_regions(batch, feats, device, unit_rows=student.network.normalize)
        else:  # the student projects only the drawn pairs' points
            k, q = batch_pairs(
                batch,
                functools.partial(model, points, batch_index),
                cfg.distillation.n_pairs,
                step_generator(cfg.seed, step, 1),
                device,
            )
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.distillation.loss_dtype == "bfloat16"):
            loss = loss_fn(k, q, **cfg.distillation.loss_params)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running += float(loss.detach())  # the same on every rank
        seen += 1
        if step % cfg.probe.every == 0 or step == cfg.distillation.steps:
            record(step, running / seen)
            running, seen = 0.0, 0
        if (
            ckpt_path is not None
            and dist.is_main()
            and (step % cfg.distillation.checkpoint_every == 0 or step == cfg.distillation.steps)
        ):
            # every rank reads the checkpoint when it resumes; only rank 0 writes it
            if bind is not None:  # the folder is this configuration's from its first checkpoint on
                bind()
                bind = None
            state = {
                "step": step,
                "student": student.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "trajectory": trajectory,
                "running_loss": (running, seen),
                "config_hash": identity,
            }
            _save_checkpoint(ckpt_path, state)
        if on_step is not None:
            on_step(step)
    student.eval()
    return student, trajectory
