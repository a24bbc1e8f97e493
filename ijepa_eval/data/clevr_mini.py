"""CLEVR-mini: a small procedural CLEVR look-alike, written in the CLEVR v1.0 layout.

It lets the demo, the tests and tiny pretraining runs exercise the real CLEVR code path (scenes JSON,
RGBA PNGs, VTAB count/distance labels) without the 18 GB download. Scenes follow CLEVR's vocabulary:
3–10 objects (sphere/cube/cylinder, 8 colours, 2 sizes, rubber/metal) on a ground plane, seen by a
perspective camera placed so that object depths span CLEVR's ≈7–13 range. Each pixel is ray-cast against
every object in numpy (exact occlusion by a z-buffer), Lambert-shaded, with a specular highlight and an
environment reflection for metal, and ground shadows from one key light; 2× supersampled.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ijepa_eval.errors import DatasetError
from ijepa_eval.io import atomic_write_json

VERSION = 1
SHAPES = ("sphere", "cube", "cylinder")
COLORS = {  # CLEVR's properties.json RGB values
    "gray": (87, 87, 87), "red": (173, 35, 35), "blue": (42, 75, 215), "green": (29, 105, 20),
    "brown": (129, 74, 25), "purple": (129, 38, 192), "cyan": (41, 208, 208), "yellow": (255, 238, 51),
}
SIZES = {"large": 0.7, "small": 0.35}
MATERIALS = ("rubber", "metal")
MIN_OBJECTS, MAX_OBJECTS = 3, 10
PLACEMENT_RANGE = 3.0  # object centres lie in [-3, 3]^2 on the ground, as in CLEVR
CAMERA = np.array([7.25, -6.62, 5.37])
LOOK_AT = np.array([0.0, 0.0, 0.0])
FOV_DEG = 44.0
LIGHT = np.array([-0.35, -0.6, 1.0]) / np.linalg.norm([-0.35, -0.6, 1.0])
SUPERSAMPLE = 2


def camera_frame() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward, right and up unit vectors of the camera."""
    forward = LOOK_AT - CAMERA
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return forward, right, np.cross(right, forward)


def project(point: np.ndarray, size: int) -> list[float]:
    """CLEVR ``pixel_coords``: [x, y] in pixels and the depth along the camera's viewing axis."""
    forward, right, up = camera_frame()
    v = np.asarray(point) - CAMERA
    depth = float(v @ forward)
    half = math.tan(math.radians(FOV_DEG) / 2)
    x = (v @ right) / depth / half
    y = (v @ up) / depth / half
    return [round((x + 1) / 2 * size, 3), round((1 - y) / 2 * size, 3), round(depth, 4)]


@functools.lru_cache(maxsize=4)
def camera_rays(size: int) -> np.ndarray:
    """Unit ray directions [size*size, 3] through pixel centres, row-major from the top-left."""
    forward, right, up = camera_frame()
    half = math.tan(math.radians(FOV_DEG) / 2)
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    ys, xs = np.meshgrid(-coords * half, coords * half, indexing="ij")
    d = forward + xs.reshape(-1, 1) * right + ys.reshape(-1, 1) * up
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _rotate_z(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1], v[..., 2]], axis=-1)


def intersect(obj: dict, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray hit distance (inf where missed) and unit surface normal of one object, for many rays at once."""
    centre = np.asarray(obj["3d_coords"], dtype=np.float64)
    r = SIZES[obj["size"]]
    o = origins - centre
    t = np.full(len(dirs), np.inf)
    normal = np.zeros_like(dirs)
    if obj["shape"] == "sphere":
        b = np.einsum("ij,ij->i", o, dirs)
        disc = b * b - (np.einsum("ij,ij->i", o, o) - r * r)
        hit = disc > 0
        th = -b[hit] - np.sqrt(disc[hit])
        t[hit] = np.where(th > 1e-6, th, np.inf)
        normal[hit] = (o[hit] + th[:, None] * dirs[hit]) / r
    elif obj["shape"] == "cube":
        h = r / math.sqrt(2)  # CLEVR shrinks cubes by sqrt(2) so they look as big as spheres
        angle = math.radians(obj["rotation"])
        lo, ld = _rotate_z(o, -angle), _rotate_z(dirs, -angle)
        ld = np.where(np.abs(ld) < 1e-12, 1e-12, ld)
        t1, t2 = (-h - lo) / ld, (h - lo) / ld
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        tmin, tmax = near.max(axis=1), far.min(axis=1)
        hit = (tmax >= tmin) & (tmin > 1e-6)
        t[hit] = tmin[hit]
        axis = near.argmax(axis=1)
        local = np.zeros_like(dirs)
        rows = np.arange(len(dirs))
        local[rows, axis] = -np.sign(ld[rows, axis])
        normal = np.where(hit[:, None], _rotate_z(local, angle), 0.0)
    else:  # cylinder: vertical axis, radius r, height 2r; the bottom cap is never visible from above
        a = dirs[:, 0] ** 2 + dirs[:, 1] ** 2
        b = o[:, 0] * dirs[:, 0] + o[:, 1] * dirs[:, 1]
        c = o[:, 0] ** 2 + o[:, 1] ** 2 - r * r
        disc = b * b - a * c
        ok = (disc > 0) & (a > 1e-12)
        ts = np.full(len(dirs), np.inf)
        ts[ok] = (-b[ok] - np.sqrt(disc[ok])) / a[ok]
        zs = o[:, 2] + ts * dirs[:, 2]
        ts = np.where((ts > 1e-6) & (np.abs(zs) <= r), ts, np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            tc = (r - o[:, 2]) / dirs[:, 2]
        px, py = o[:, 0] + tc * dirs[:, 0], o[:, 1] + tc * dirs[:, 1]
        tc = np.where((tc > 1e-6) & (px * px + py * py <= r * r), tc, np.inf)
        side = ts < tc
        t = np.minimum(ts, tc)
        p = o + np.where(np.isfinite(t), t, 0)[:, None] * dirs
        normal[side] = np.stack([p[side, 0] / r, p[side, 1] / r, np.zeros(side.sum())], axis=1)
        normal[~side & np.isfinite(t), 2] = 1.0
    return t, normal


def bounding_radius(obj: dict) -> float:
    r = SIZES[obj["size"]]
    return {"sphere": r, "cube": r / math.sqrt(2) * math.sqrt(3), "cylinder": r * math.sqrt(2)}[obj["shape"]]


def camera_hits(obj: dict, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``intersect`` on the camera rays that pass the object's bounding sphere (most rays miss it).

    Returns (ray indices, hit distances, normals) for those rays; distances are inf where the object
    itself is missed.
    """
    to_centre = np.asarray(obj["3d_coords"]) - CAMERA
    along = dirs @ to_centre
    radius = bounding_radius(obj)
    idx = np.flatnonzero((to_centre @ to_centre - along**2 <= radius**2) & (along > -radius))
    t, normal = intersect(obj, np.broadcast_to(CAMERA, (len(idx), 3)), dirs[idx])
    return idx, t, normal


@functools.lru_cache(maxsize=1)
def light_frame() -> np.ndarray:
    """Rows: two unit vectors across the light direction, then the light direction."""
    across = np.cross(LIGHT, [1.0, 0.0, 0.0])
    across /= np.linalg.norm(across)
    return np.stack([across, np.cross(LIGHT, across), LIGHT])


@functools.lru_cache(maxsize=4)
def ground(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-resolution constants of the ground plane z = 0, the same for every scene.

    Returns the ground ray indices, their hit points, the unshadowed background colours of all rays, and
    the hit points in a frame aligned with the light ([N, 3]: two coordinates across the light direction,
    one along it) for a cheap bounding test of shadow rays.
    """
    dirs = camera_rays(n)
    rays = np.flatnonzero(dirs[:, 2] < 0)
    points = CAMERA + (-CAMERA[2] / dirs[rays, 2])[:, None] * dirs[rays]
    rgb = np.full((len(dirs), 3), 0.45)  # sky / horizon
    rgb[rays] = (0.35 + 0.3 * np.exp(-np.linalg.norm(points[:, :2], axis=1) / 25))[:, None]
    return rays, points, rgb, points @ light_frame().T


def shade(obj: dict, normal: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    colour = np.asarray(COLORS[obj["color"]], dtype=np.float64) / 255
    lambert = np.clip(normal @ LIGHT, 0, None)[:, None]
    if obj["material"] == "rubber":
        return colour * (0.3 + 0.75 * lambert)
    half = LIGHT - dirs
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    spec = np.clip(np.einsum("ij,ij->i", normal, half), 0, None)[:, None] ** 60
    reflected_up = np.clip((dirs - 2 * np.einsum("ij,ij->i", dirs, normal)[:, None] * normal)[:, 2:], 0, 1)
    return colour * (0.2 + 0.55 * lambert) + 0.25 * reflected_up + 1.2 * spec


def render(objects: list[dict], size: int) -> tuple[np.ndarray, np.ndarray]:
    """RGBA uint8 image [size, size, 4] and per-object visible pixel counts (at render resolution)."""
    n = size * SUPERSAMPLE
    dirs = camera_rays(n)
    ground_rays, ground_pts, background, ground_in_light_frame = ground(n)
    rgb = background.copy()
    zbuf = np.full(len(dirs), np.inf)
    zbuf[ground_rays] = np.linalg.norm(ground_pts - CAMERA, axis=1)
    owner = np.full(len(dirs), -1)
    for k, obj in enumerate(objects):
        idx, t, normal = camera_hits(obj, dirs)
        front = t < zbuf[idx]
        rays = idx[front]
        zbuf[rays] = t[front]
        owner[rays] = k
        rgb[rays] = shade(obj, normal[front], dirs[rays])
    # Shadows: a ground point is dark when the ray towards the light hits an object.
    shadowed = np.zeros(len(ground_rays), dtype=bool)
    for obj in objects:
        u, v, w = light_frame() @ np.asarray(obj["3d_coords"])
        radius = bounding_radius(obj)
        du, dv = ground_in_light_frame[:, 0] - u, ground_in_light_frame[:, 1] - v
        near = np.flatnonzero((du * du + dv * dv <= radius**2) & (w - ground_in_light_frame[:, 2] > -radius))
        t, _ = intersect(obj, ground_pts[near], np.broadcast_to(LIGHT, (len(near), 3)))
        shadowed[near[np.isfinite(t)]] = True
    dark = ground_rays[shadowed]
    dark = dark[owner[dark] < 0]
    rgb[dark] *= 0.6
    visible = np.bincount(owner[owner >= 0], minlength=len(objects)) // SUPERSAMPLE**2
    img = (np.clip(rgb, 0, 1) * 255).astype(np.uint8).reshape(n, n, 3)
    img = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BOX))
    alpha = np.full((size, size, 1), 255, dtype=np.uint8)
    return np.concatenate([img, alpha], axis=2), visible


def sample_scene(rng: np.random.Generator, size: int) -> tuple[list[dict], np.ndarray]:
    """CLEVR-style random objects without interpenetration, each clearly visible (else resample), and
    their rendered image."""
    n_objects = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    min_visible = max(2, round(25 * (size / 128) ** 2))
    for _ in range(100):
        objects: list[dict] = []
        while len(objects) < n_objects:
            size_name = str(rng.choice(list(SIZES)))
            r = SIZES[size_name]
            xy = rng.uniform(-PLACEMENT_RANGE, PLACEMENT_RANGE, size=2)
            if any(np.hypot(*(xy - o["3d_coords"][:2])) < r + SIZES[o["size"]] + 0.15 for o in objects):
                continue
            shape = str(rng.choice(SHAPES))
            z = r / math.sqrt(2) if shape == "cube" else r
            objects.append({
                "shape": shape, "color": str(rng.choice(list(COLORS))), "size": size_name,
                "material": str(rng.choice(MATERIALS)), "rotation": float(rng.uniform(0, 360)),
                "3d_coords": [float(xy[0]), float(xy[1]), z],
            })
        image, visible = render(objects, size)
        if visible.min() >= min_visible:
            return objects, image
    raise RuntimeError(f"could not place {n_objects} visible objects in 100 tries")  # practically unreachable


def _render_one(job: tuple[str, int, int, int, str]) -> dict:
    split, index, size, seed, out = job
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
    objects, image = sample_scene(rng, size)
    for obj in objects:
        obj["pixel_coords"] = project(obj["3d_coords"], size)
    filename = f"CLEVR_{split}_{index:06d}.png"
    # No fsync per image: the split only counts as rendered once its scenes JSON is (atomically) written.
    path = Path(out) / "images" / split / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, "RGBA").save(path, "PNG")
    return {"image_index": index, "image_filename": filename, "split": split, "objects": objects}


def _info(split: str, n: int, size: int, seed: int) -> dict:
    return {"generator": "ijepa_eval.data.clevr_mini", "version": VERSION, "split": split, "n": n,
            "size": size, "seed": seed, "license": "synthetic"}


def _already_rendered(scenes_path: Path, info: dict) -> bool:
    try:
        return json.loads(scenes_path.read_text())["info"] == info
    except (OSError, json.JSONDecodeError, KeyError):
        return False


def render_clevr_mini(
    root: str | os.PathLike,
    n_train: int,
    n_val: int,
    size: int = 128,
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Write ``images/{train,val}/CLEVR_<split>_NNNNNN.png`` + ``scenes/CLEVR_<split>_scenes.json``.

    Deterministic in (n, size, seed) regardless of ``workers``. The scenes JSON of a split is written last
    and atomically, so an interrupted render never looks finished; a split whose scenes JSON already
    records the same settings is kept as is (cheap re-runs for the demo and pretraining).
    """
    if n_train < 0 or n_val < 0 or size < 16:
        raise DatasetError(f"CLEVR-mini needs n_train, n_val >= 0 and size >= 16 (got {n_train}, {n_val}, {size})")
    root = Path(root)
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    for split, n in (("train", n_train), ("val", n_val)):
        scenes_path = root / "scenes" / f"CLEVR_{split}_scenes.json"
        info = _info(split, n, size, seed)
        if _already_rendered(scenes_path, info):
            continue
        scenes_path.unlink(missing_ok=True)
        jobs = [(split, i, size, seed, str(root)) for i in range(n)]
        scenes = list(tqdm(_map(jobs, workers), total=n, desc=f"CLEVR-mini {split}", disable=not progress))
        atomic_write_json(scenes_path, {"info": info, "scenes": scenes})
    return root


def _map(jobs: list, workers: int) -> Iterator[dict]:
    if workers <= 1 or len(jobs) < 64:
        yield from map(_render_one, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_render_one, jobs, chunksize=16)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ijepa_eval.data.clevr_mini",
        description="Render CLEVR-mini in the CLEVR v1.0 layout (usable as --root for clevr_count/clevr_dist).",
        epilog="example:\n  python -m ijepa_eval.data.clevr_mini --out data/clevr_mini --n-train 2000 --n-val 500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="output folder (CLEVR_v1.0 layout)")
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-val", type=int, default=500)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    render_clevr_mini(args.out, args.n_train, args.n_val, args.size, args.seed, workers=args.workers)


if __name__ == "__main__":
    main()
