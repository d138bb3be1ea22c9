"""Models named by a Hugging Face Hub id (``owner/name``), fetched through ``huggingface_hub``.

Only :func:`fetch_model` touches the network, and only for a name that is not a local path;
nothing is fetched at import. With ``HF_HUB_OFFLINE=1`` a model already in the local Hugging
Face cache loads, and any other is a clear error.
"""

from __future__ import annotations

from pathlib import Path

from celseg.errors import ModelLoadError


def is_hub_id(name: str) -> bool:
    """``owner/name``: two non-empty parts, not a relative or absolute path spelling."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def fetch_model(source: str | Path) -> Path:
    """A local folder or file as it is; a Hub id downloaded (or read from the local Hugging
    Face cache) and returned as the snapshot folder."""
    path = Path(source).expanduser()
    if path.exists() or not is_hub_id(str(source)):
        if not path.exists():
            raise ModelLoadError(f"model not found: {source} (neither a file or folder here "
                                 "nor a Hugging Face Hub id 'owner/name')")
        return path
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError as exc:  # pragma: no cover - a dependency of transformers
        raise ModelLoadError(f"{source!r} is not a local folder; fetching it from the Hugging "
                             "Face Hub needs huggingface_hub (pip install huggingface_hub)"
                             ) from exc
    try:
        return Path(snapshot_download(repo_id=str(source)))
    except Exception as exc:  # noqa: BLE001 - network, auth and cache errors alike
        if constants.HF_HUB_OFFLINE:
            raise ModelLoadError(
                f"{source!r} is not a local folder, and as a Hugging Face Hub id it is not in "
                "the local cache while the network is off (HF_HUB_OFFLINE=1); fetch it once "
                "online, or give the folder that celseg export wrote") from None
        raise ModelLoadError(f"{source!r} is not a local folder, and fetching it from the "
                             f"Hugging Face Hub failed: {type(exc).__name__}: {exc}") from None
