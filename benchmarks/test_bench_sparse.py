"""Sparse-convolution benchmarks: the ``torch`` backend against patched ``spconv`` and ``torchsparse`` (optional,
built from source) on a lidar-like scan.

Run: ``pytest benchmarks/test_bench_sparse.py --benchmark-only``. The backends run in the same process on the same
scan, so the pair ratios ``minkunet_torch_vs_spconv`` and ``minkunet_torch_vs_torchsparse`` (torch time / other
time) are meaningful on a shared machine. ``python benchmarks/test_bench_sparse.py`` prints, for every installed
backend, the forward and forward + backward times of the MinkUNet and of the layer against the torch backend's.

Nominal multiply-add counts (``record_reference``), forward + backward = 3 x forward:
- a convolution costs ``pairs * C_in * C_out`` per forward, ``pairs`` = active (input, output, offset) triples
  (submanifold: valid neighbour-table entries; kernel-2 stride-2 and its transpose: fine sites; 1x1: sites).
- the MinkUNet count is the sum over its convolutions (batch norm and activations are not counted).

Peak memory: each case also runs in a fresh subprocess, which reports the peak resident set size of its second
step above the resident size just before it (Linux ``VmHWM`` after ``clear_refs``; ``extra_info["peak_rss_mib"]``).
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from models.students.minkunet import PRESETS, MinkUNet
from models.students.sparse import DownConv3d, SparseTensor, SubmanifoldConv3d, UpConv3d, available_backends
from models.students.sparse.kernel_map import submanifold_pairs
from models.students.voxelize import voxelize

N_VOXELS = 30_000
VOXEL_SIZE = 0.1
OUT_DIM = 512
BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(name not in available_backends(), reason=f"{name} not installed"))
    for name in ("torch", "spconv", "torchsparse")
]


def _ray_box(origin: torch.Tensor, dirs: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Distance along each ray to an axis-aligned box (slab method), ``inf`` when missed."""
    with torch.no_grad():
        inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
        t0 = (low - origin) * inv
        t1 = (high - origin) * inv
        near = torch.minimum(t0, t1).amax(1)
        far = torch.maximum(t0, t1).amin(1)
        hit = (far >= near) & (near > 0)
        return torch.where(hit, near, torch.full_like(near, math.inf))


def lidar_scan(seed: int = 0, beams: int = 64, azimuths: int = 2048, max_range: float = 60.0) -> torch.Tensor:
    """A lidar-like scan (N, 4): a spinning sensor 1.8 m above a street, ray-cast against the ground plane, two
    building walls, parked cars (boxes) and poles (thin boxes), with 2 cm range noise; x, y, z, intensity.
    """
    gen = torch.Generator().manual_seed(seed)
    elev = torch.deg2rad(torch.linspace(-25.0, 3.0, beams, dtype=torch.float64))
    azim = torch.linspace(0, 2 * math.pi, azimuths + 1, dtype=torch.float64)[:-1]
    e, a = torch.meshgrid(elev, azim, indexing="ij")
    dirs = torch.stack([e.cos() * a.cos(), e.cos() * a.sin(), e.sin()], -1).reshape(-1, 3)
    origin = torch.tensor([0.0, 0.0, 1.8], dtype=torch.float64)
    boxes = [((-60.0, 9.0, 0.0), (60.0, 12.0, 12.0)), ((-60.0, -12.0, 0.0), (60.0, -8.0, 9.0))]  # walls
    for i in range(24):  # cars along both kerbs
        x = -50.0 + 4.3 * i + float(torch.rand(1, generator=gen)) * 1.5
        y = 5.5 if i % 2 else -5.0
        boxes.append(((x, y, 0.0), (x + 4.2, y + 1.8, 1.5)))
    for i in range(16):  # poles
        x = -48.0 + 6.5 * i
        boxes.append(((x, 7.8, 0.0), (x + 0.25, 8.05, 6.0)))
    t = torch.where(dirs[:, 2] < 0, -origin[2] / dirs[:, 2].clamp(max=-1e-9), torch.full_like(dirs[:, 2], math.inf))
    for low, high in boxes:
        t = torch.minimum(t, _ray_box(origin, dirs, torch.tensor(low).double(), torch.tensor(high).double()))
    keep = t < max_range
    t = t[keep] + 0.02 * torch.randn(int(keep.sum()), generator=gen, dtype=torch.float64)
    xyz = origin + dirs[keep] * t[:, None]
    intensity = torch.rand(xyz.shape[0], 1, generator=gen, dtype=torch.float64)
    return torch.cat([xyz, intensity], 1).float()


def scan_tensor(n_voxels: int = N_VOXELS, channels: int = 1, seed: int = 0) -> SparseTensor:
    """The ``n_voxels`` voxels (0.1 m) of :func:`lidar_scan` nearest to the sensor, with ``channels`` features."""
    points = lidar_scan(seed)
    vox = voxelize(points[:, :3], torch.zeros(points.shape[0], dtype=torch.long), points[:, 3:], VOXEL_SIZE)
    centres = (vox.coords[:, 1:].double() + 0.5) * VOXEL_SIZE
    nearest = torch.argsort(torch.linalg.vector_norm(centres[:, :2], dim=1))[:n_voxels].sort().values
    coords = vox.coords[nearest]
    gen = torch.Generator().manual_seed(seed + 1)
    if channels == 1:
        feats = vox.feats[nearest]
    else:
        feats = torch.randn(coords.shape[0], channels, generator=gen)
    return SparseTensor(coords, feats)


def minkunet_forward_macs(net: MinkUNet, x: SparseTensor) -> float:
    """Nominal forward multiply-adds of ``net`` on ``x`` (see module docstring), with the torch backend's maps."""
    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        sites_in = inputs[0]
        k, c_in, c_out = module.weight.shape
        if isinstance(module, SubmanifoldConv3d) and module.kernel_size > 1:
            pair_map = sites_in.cache[("torch", "subm", sites_in.stride, module.kernel_size)]
            pairs = pair_map.src.shape[0] + sites_in.num_sites
        elif isinstance(module, UpConv3d):
            pairs = output.num_sites
        else:
            pairs = sites_in.num_sites
        total += pairs * c_in * c_out

    handles = [
        m.register_forward_hook(hook) for m in net.modules() if isinstance(m, SubmanifoldConv3d | DownConv3d | UpConv3d)
    ]
    with torch.no_grad():
        net(SparseTensor(x.coords, x.feats))
    for h in handles:
        h.remove()
    return total


def _minkunet(backend: str) -> MinkUNet:
    torch.manual_seed(0)
    return MinkUNet(1, OUT_DIM, PRESETS["small"], backend=backend)


def _minkunet_step(net: MinkUNet, x: SparseTensor) -> None:
    """One forward + backward from raw coordinates: kernel maps are rebuilt (fresh cache), as in training."""
    net.zero_grad(set_to_none=True)
    out = net(SparseTensor(x.coords, x.feats))
    out.feats.sum().backward()


def _layer_case(backend: str) -> tuple[SubmanifoldConv3d, SparseTensor, torch.Tensor]:
    torch.manual_seed(0)
    layer = SubmanifoldConv3d(32, 32, 3, backend=backend)
    x = scan_tensor(channels=32)
    x = x.replace(x.feats.requires_grad_(True))
    layer(x)  # builds and caches the kernel map
    return layer, x, torch.ones(x.num_sites, 32)


def _layer_step(layer: SubmanifoldConv3d, x: SparseTensor, grad: torch.Tensor) -> None:
    layer.zero_grad(set_to_none=True)
    x.feats.grad = None
    layer(x).feats.backward(grad)


def peak_rss_mib(case: str, backend: str) -> float:
    """Peak resident memory (MiB) of one step of ``case`` (``layer`` or ``minkunet``) above the resident memory
    just before it, in a fresh subprocess, after one warm-up step: Linux ``VmHWM`` reset through ``clear_refs``.
    """
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import test_bench_sparse as b\n"
        f"case, backend = {case!r}, {backend!r}\n"
        "if case == 'layer':\n"
        "    args = b._layer_case(backend); step = b._layer_step\n"
        "else:\n"
        "    args = (b._minkunet(backend), b.scan_tensor()); step = b._minkunet_step\n"
        "step(*args)\n"
        "def kib(field):\n"
        "    return next(int(v.split()[1]) for v in open('/proc/self/status') if v.startswith(field))\n"
        "before = kib('VmRSS:')\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "step(*args)\n"
        "print((kib('VmHWM:') - before) / 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_submanifold_layer(benchmark, record_reference, backend):
    """One submanifold convolution 32 -> 32, kernel 3, forward + backward, kernel map cached."""
    layer, x, grad = _layer_case(backend)
    pairs = submanifold_pairs(x.coords, 3).src.shape[0] + x.num_sites
    benchmark.extra_info["voxels"] = x.num_sites
    benchmark.extra_info["pairs"] = pairs
    benchmark.extra_info["peak_rss_mib"] = peak_rss_mib("layer", backend)
    record_reference(3 * pairs * 32 * 32)
    benchmark.pedantic(_layer_step, args=(layer, x, grad), rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_minkunet_fwd_bwd(benchmark, record_reference, backend):
    """MinkUNet (preset ``small``, 512 outputs) forward + backward on the 30 000-voxel scan, maps included."""
    x = scan_tensor()
    net = _minkunet(backend)
    benchmark.extra_info["voxels"] = x.num_sites
    benchmark.extra_info["peak_rss_mib"] = peak_rss_mib("minkunet", backend)
    record_reference(3 * minkunet_forward_macs(_minkunet("torch"), x))
    benchmark.pedantic(_minkunet_step, args=(net, x), rounds=3, iterations=1, warmup_rounds=1)


def _forward(step_input: tuple) -> None:
    with torch.no_grad():
        if isinstance(step_input[0], MinkUNet):
            net, x = step_input
            net(SparseTensor(x.coords, x.feats))
        else:
            layer, x, _ = step_input
            layer(x)


def compare_backends(rounds: int = 5) -> dict[str, dict[str, float]]:
    """Best times (s) per backend of the MinkUNet (maps built) and the layer (map cached), forward (no grad) and
    forward + backward, rounds interleaved across backends; printed with their ratio to the torch backend's."""
    names = available_backends()
    cases = {name: {"minkunet": (_minkunet(name), scan_tensor()), "layer": _layer_case(name)} for name in names}
    steps = {"minkunet": _minkunet_step, "layer": _layer_step}
    best: dict[str, dict[str, float]] = {name: {} for name in names}
    for r in range(rounds + 1):  # round 0 warms up
        for name in names:
            for case, args in cases[name].items():
                for mode, run in (
                    ("fwd", lambda a=args: _forward(a)),
                    ("fwd+bwd", lambda a=args, c=case: steps[c](*a)),
                ):
                    t0 = time.perf_counter()
                    run()
                    seconds = time.perf_counter() - t0
                    key = f"{case} {mode}"
                    if r:
                        best[name][key] = min(best[name].get(key, math.inf), seconds)
    print(f"threads={torch.get_num_threads()} voxels={N_VOXELS}; best of {rounds}; ratio = backend time / torch time")
    for name in names:
        for key, seconds in best[name].items():
            print(f"{name:<12} {key:<18} {seconds * 1e3:9.1f} ms  ratio {seconds / best['torch'][key]:.2f}")
    return best


if __name__ == "__main__":
    compare_backends()
