"""Wheels for the lent GPU machines: what spinebench needs there and they lack, checked here.

The device machines (``/work/.library/device/KINDS.md``) run Python 3.12 with torch 2.11,
timm, transformers, pluggy, typer, rich, pyyaml, scipy and matplotlib, but without mlflow,
monai, nibabel, SimpleITK or open-clip-torch, and they reach no package registry. What is
missing travels as wheels in ``.whl/`` (ignored by git, named in the device call's ``carry``),
installed there offline with ``--no-deps --target`` by ``benchmarks/gpu.sh``.

- ``download``: ``pip download --no-deps --only-binary=:all:`` of :data:`WHEELS` for Python
  3.12 on manylinux x86-64 into ``.whl/`` (``--python-version 3.11`` makes a set for a local
  3.11 rehearsal).
- ``check``: every wheel's ``Requires-Dist`` (markers evaluated for that Python on Linux x86-64)
  must be carried or already on the device (:data:`DEVICE_PACKAGES`, KINDS.md's list); nothing
  the device has is carried (it would shadow the device's copy on ``PYTHONPATH``); one version of
  each; and the working tree that travels plus the wheels stay under the 64 MiB a call carries.

Tracking needs only MLflow's client and its sqlite store, so ``mlflow-skinny`` (the ``mlflow``
package without the UI and the server's dependencies) plus SQLAlchemy and Alembic replace the
full ``mlflow`` distribution; spinebench imports nothing else of MLflow.

    python -m benchmarks.gpu_wheels                 # download into .whl/, then check
    python -m benchmarks.gpu_wheels check           # sizes and the dependency closure only
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
BUDGET_MIB = 64.0
"""What one device call carries: the working tree that travels plus the carried paths."""

#: Carried to the device, pinned to the versions this project is tested with. Grouped by the
#: dependency of spinebench that needs them.
WHEELS = [
    # engine: losses and metrics (monai), NIfTI input/output (nibabel)
    "monai==1.6.1",
    "nibabel==5.4.2",
    # tokenizer: only the CLIP BPE vocabulary file inside the package is read, never imported
    "open-clip-torch==3.3.0",
    # tracking: MLflow's client and sqlite store
    "mlflow-skinny==3.17.2",
    "sqlalchemy==2.1.9",
    "alembic==1.20.1",
    "mako==1.4.3",
    # mlflow-skinny's own requirements the device lacks
    "cachetools==7.3.3",
    "databricks-sdk==0.167.0",
    "google-auth==2.63.1",
    "cryptography==50.0.2",
    "cffi==2.1.1",
    "pycparser==3.12",
    "pyasn1==0.6.5",
    "pyasn1-modules==0.4.2",
    "fastapi==0.165.0",
    "starlette==1.10.0",
    "uvicorn==0.55.0",
    "gitpython==3.2.1",
    "gitdb==4.0.12",
    "smmap==5.0.3",
    "importlib-metadata==9.1.0",
    "opentelemetry-api==1.45.2",
    "opentelemetry-proto==1.45.2",
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-semantic-conventions==0.66b2",
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "python-dotenv==1.2.4",
    "sqlparse==0.6.1",
]

#: Wheels whose own requirements are not needed: the package is never imported.
NOT_IMPORTED = {
    "open-clip-torch": "only bpe_simple_vocab_16e6.txt.gz is read (spinebench.models.tokenizer)",
}

#: spinebench requirements that are neither carried nor on the device, and why that is fine.
NOT_CARRIED = {
    "simpleitk": "imported lazily, only to read non-NIfTI files (the spider reader's .mha)",
    "mlflow": "mlflow-skinny provides the mlflow package (client and sqlite store)",
}

#: Python packages on the device image ('cuda'), from KINDS.md ("Python packages already
#: there", read 2026-11-17). Carry none of these: the carried copy would shadow the device's.
_DEVICE_LIST = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn
einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml
markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda
numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich
sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
"""
DEVICE_PACKAGES = frozenset(canonicalize_name(name) for name in _DEVICE_LIST.split())

PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
    "manylinux_2_34_x86_64",
]


def download(dest: Path, python_version: str) -> None:
    """Fetch :data:`WHEELS` (binary only, no dependencies) for ``python_version`` on Linux."""
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        *platforms,
        "-d",
        str(dest),
        *WHEELS,
    ]
    subprocess.run(command, check=True)


def _metadata(wheel: Path) -> tuple[str, str, list[str]]:
    """(canonical name, version, Requires-Dist lines) of a wheel."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(z.read(name).decode("utf-8"))
    return canonicalize_name(meta["Name"]), meta["Version"], meta.get_all("Requires-Dist") or []


def _environment(python_version: str) -> dict[str, str]:
    """Marker values of CPython ``python_version`` on Linux x86-64 (the device)."""
    return {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "implementation_name": "cpython",
        "implementation_version": f"{python_version}.0",
        "platform_python_implementation": "CPython",
        "platform_machine": "x86_64",
        "platform_system": "Linux",
        "sys_platform": "linux",
        "os_name": "posix",
        "platform_release": "",
        "platform_version": "",
        "extra": "",
    }


def _needed(requirement: str, env: dict[str, str]) -> str | None:
    """The canonical name a ``Requires-Dist`` line asks for on the device, or None (a marker
    excludes it, e.g. an extra)."""
    req = Requirement(requirement)
    if req.marker is not None and not Marker(str(req.marker)).evaluate(env):
        return None
    return canonicalize_name(req.name)


def project_requirements() -> list[str]:
    """spinebench's own ``dependencies`` from pyproject.toml."""
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(data["project"]["dependencies"])


def tree_bytes(root: Path = ROOT) -> int:
    """Bytes of the working tree a device call sends: tracked files, untracked files git does
    not ignore, and ``shared/`` when the checkout has one."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    paths = {root / name for name in listed.decode().split("\0") if name}
    if (root / "shared").is_dir():
        paths |= {p for p in (root / "shared").rglob("*") if p.is_file()}
    total = 0
    for path in paths:
        if path.is_symlink():
            total += len(str(path.readlink()))
        elif path.is_file():
            total += path.stat().st_size
    return total


def check(dest: Path, python_version: str) -> list[str]:
    """Problems with the wheels in ``dest`` (empty: fine); prints sizes and the closure."""
    problems: list[str] = []
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        return [f"no wheels in {dest}; run `python -m benchmarks.gpu_wheels download` first"]
    env = _environment(python_version)
    carried: dict[str, str] = {}
    needs: dict[str, set[str]] = {}
    for wheel in wheels:
        name, version, requires = _metadata(wheel)
        if name in carried:
            problems.append(f"two versions of {name}: {carried[name]} and {version}")
        carried[name] = version
        if name in NOT_IMPORTED:
            continue
        needs[name] = {n for r in requires if (n := _needed(r, env)) is not None}
    needs["spinebench"] = {
        n for r in project_requirements() if (n := _needed(r, env)) is not None
    } - {canonicalize_name(k) for k in NOT_CARRIED}
    for name in sorted(set(carried) & DEVICE_PACKAGES):
        problems.append(f"{name} is on the device already: carrying it would shadow that copy")
    if "torch" in carried:
        problems.append("torch must never be carried: the device's build is used")
    for name, required in sorted(needs.items()):
        for dep in sorted(required - set(carried) - DEVICE_PACKAGES - {"spinebench"}):
            problems.append(f"{name} requires {dep}, neither carried nor on the device")
    wheel_bytes = sum(w.stat().st_size for w in wheels)
    tree = tree_bytes()
    total = (wheel_bytes + tree) / 2**20
    print(f"{len(wheels)} wheels in {dest}: {wheel_bytes / 2**20:.1f} MiB")
    for wheel in sorted(wheels, key=lambda w: -w.stat().st_size)[:8]:
        print(f"  {wheel.stat().st_size / 2**20:6.2f} MiB  {wheel.name}")
    print(
        f"working tree that travels: {tree / 2**20:.1f} MiB; with the wheels {total:.1f} MiB "
        f"of the {BUDGET_MIB:.0f} MiB a device call carries"
    )
    if total > BUDGET_MIB:
        problems.append(f"tree + wheels are {total:.1f} MiB, over the {BUDGET_MIB:.0f} MiB budget")
    missing = sorted({canonicalize_name(re.split(r"[=<>]", w)[0]) for w in WHEELS} - set(carried))
    if missing:
        problems.append(f"listed but not in {dest}: {', '.join(missing)}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", nargs="?", choices=("all", "download", "check"), default="all")
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl")
    parser.add_argument("--python-version", default="3.12", help="the device's: 3.12")
    args = parser.parse_args()
    if args.action in ("all", "download"):
        download(args.dest, args.python_version)
    if args.action in ("all", "check"):
        problems = check(args.dest, args.python_version)
        for problem in problems:
            print(f"PROBLEM: {problem}")
        print("wheels: OK" if not problems else f"wheels: {len(problems)} problem(s)")
        sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
