"""Regenerate toto_robot/assets/ (FR3 arm + Franka hand) from the installed franky-sim package.

Run once after upgrading franky-sim: ``python toto_robot/assets/make_assets.py``. It copies fr3.xml
(mesh folder rewritten), the collision STLs and the licence NOTICE, and writes visual meshes
decimated with fast-simplification: rendering cost on a CPU rasteriser is set by triangle
count (the full ~240k-triangle visual set takes ~37 ms a frame on one core). franky-sim is read
from disk, never imported, and is not needed at run time.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
from pathlib import Path

import fast_simplification
import numpy as np

HERE = Path(__file__).resolve().parent
KEEP_BELOW = 1000  # faces: small meshes (buttons, fingers) are kept exact


def franky_sim_assets() -> Path:
    spec = importlib.util.find_spec("franky_sim")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("franky-sim is not installed: pip install --no-deps franky-sim")
    return Path(list(spec.submodule_search_locations)[0]) / "assets"


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float and triangles (F, 3) int of a Wavefront OBJ (polygons fanned)."""
    verts, faces = [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            verts.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("f "):
            idx = [int(tok.split("/")[0]) - 1 for tok in line.split()[1:]]
            faces.extend([idx[0], idx[i], idx[i + 1]] for i in range(1, len(idx) - 1))
    return np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int64)


def weld(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge duplicate vertices (exporters split them per normal) so decimation sees a connected surface."""
    uniq, inverse = np.unique(np.round(verts, 6), axis=0, return_inverse=True)
    faces = inverse.reshape(-1)[faces]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    return uniq, faces


def write_obj(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    lines = [f"v {x:.5f} {y:.5f} {z:.5f}" for x, y, z in verts]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def main(reduction: float) -> None:
    src = franky_sim_assets()
    xml = (src / "fr3.xml").read_text()
    out_meshes = HERE / "meshes"
    out_meshes.mkdir(exist_ok=True)
    files = sorted(set(re.findall(r'file="([^"]+)"', xml)))
    total_in = total_out = 0
    for name in files:
        path = src / "meshes" / name
        if name.endswith(".stl"):
            shutil.copyfile(path, out_meshes / name)
            continue
        verts, faces = read_obj(path)
        total_in += len(faces)
        verts, faces = weld(verts, faces)
        if len(faces) >= KEEP_BELOW:
            verts, faces = fast_simplification.simplify(verts.astype(np.float32), faces.astype(np.int32), reduction)
        total_out += len(faces)
        write_obj(out_meshes / name, verts, faces)
    (HERE / "fr3.xml").write_text(xml.replace('meshdir="assets"', 'meshdir="meshes"'))
    notice = (src / "NOTICE").read_text()
    (HERE / "NOTICE").write_text(
        notice + "\n\nModified for toto-robot: visual OBJ meshes decimated with fast-simplification "
        f"(target reduction {reduction}); mesh folder renamed.\n"
    )
    print(f"visual triangles {total_in} -> {total_out}; wrote {len(files)} meshes to {out_meshes}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--reduction", type=float, default=0.94, help="fraction of triangles removed per visual mesh")
    main(p.parse_args().reduction)
