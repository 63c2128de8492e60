"""Which board this is, from the kernel's device-tree model (``/proc/device-tree/model``).

Each board config lists the model names it fits (``models = [...]``); a name matches the
model whole or up to a space, so ``Raspberry Pi Compute Module 4`` fits ``Raspberry Pi
Compute Module 4 Rev 1.0`` and not a ``Compute Module 4S``. Standard library only:
``scripts/install`` runs this file from the checkout, before anything is installed:

    python3 agent/device/models.py BOARD_CONFIG_DIR [MODEL_FILE]

prints the board's name (exit 0), or the model text it did not recognise (exit 1).
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def read_model(model_file: Path = DEVICE_TREE_MODEL) -> str:
    """The model text (NUL-terminated in the device tree), or "" when there is none."""
    try:
        raw = model_file.read_bytes()
    except OSError:
        return ""
    return raw.rstrip(b"\0\n").decode("utf-8", "replace").strip()


def fits(model: str, known: Iterable[str]) -> bool:
    return any(model == name or model.startswith(name + " ") for name in known)


def detect(configs: Path, model_file: Path = DEVICE_TREE_MODEL) -> tuple[str | None, str]:
    """(the name of the board config in ``configs`` that fits, or None; the model text)."""
    model = read_model(model_file)
    if model:
        for toml in sorted(configs.glob("*.toml")):
            try:
                known = tomllib.loads(toml.read_text(encoding="utf-8")).get("models", [])
            except (OSError, tomllib.TOMLDecodeError):
                continue
            if isinstance(known, list) and fits(model, (k for k in known if isinstance(k, str))):
                return toml.stem, model
    return None, model


if __name__ == "__main__":
    found, text = detect(Path(sys.argv[1]),
                         Path(sys.argv[2]) if len(sys.argv) > 2 else DEVICE_TREE_MODEL)
    print(found or text)
    sys.exit(0 if found else 1)
