"""`vlmserve pull REPO[:FILE]`: a model from the Hugging Face Hub (or any server speaking its file API, named by
HF_ENDPOINT) into `<data_dir>/models/<owner>--<name>/`, checked, and added to the pulled-models catalog file
that the server loads at start (`<data_dir>/pulled.yaml`, see `config.pulled_models_path`).

- GGUF repos: one model file (FILE, a quantisation tag such as Q4_K_M, or the only / Q4_K_M-like one) and its
  multimodal projector (a .gguf with "mmproj" in its name), served on llama.cpp.
- Other repos with a config.json: the whole folder, served on transformers.

Files come down with `huggingface_hub.hf_hub_download` (progress bars, retries that resume an interrupted
transfer with a Range request, files already complete are not fetched again). Each file is then checked against
the Hub's metadata: its size, and its sha256 (LFS files) or git blob id (small files); a mismatch deletes the file
and fails the pull, and nothing is added to the catalog.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlmserve.domain.spec import WITH_SECRETS, ModelSpec

PREFERRED_QUANTS = ("q4_k_m", "q4_k_s", "q4_0", "q5_k_m", "q8_0")  # what `ollama pull hf.co/...` picks first
_HUB_PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", "hf.co/")
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class PullError(Exception):
    """A pull that cannot go on; the message says why and what to do."""


class PullNotFound(PullError):
    """The repository, revision or file asked for does not exist (or is private)."""


class HubFailed(PullError):
    """The Hub could not be reached, answered with an error of its own, or sent a file that does not match its
    metadata."""


@dataclass(frozen=True)
class HubFile:
    name: str
    size: int | None
    sha256: str | None  # LFS files
    blob_id: str | None  # git blob sha1 (small files)


ProgressHook = Callable[[HubFile, int], None]  # (file, bytes of it on disk so far), from the download thread


@dataclass(frozen=True)
class PullPlan:
    repo_id: str
    commit: str
    engine: str  # llamacpp | transformers
    files: list[HubFile]
    model_file: str | None = None  # GGUF
    mmproj: str | None = None  # GGUF projector


def parse_reference(reference: str) -> tuple[str, str | None]:
    """`owner/name[:FILE]` (also with an hf.co/ or https://huggingface.co/ prefix) → (repo id, file or tag)."""
    for prefix in _HUB_PREFIXES:
        reference = reference.removeprefix(prefix)
    repo_id, _, wanted = reference.partition(":")
    repo_id = repo_id.strip("/")
    if not _REPO_ID.match(repo_id):
        raise ValueError(f"{reference!r} is not a Hub repository: expected owner/name[:FILE]")
    return repo_id, wanted or None


def hub_files(siblings: Iterable[Any]) -> list[HubFile]:
    """HubFiles from `ModelInfo.siblings` (model_info with files_metadata=True)."""
    files = []
    for sibling in siblings:
        lfs = sibling.lfs
        size = lfs.size if lfs else sibling.size
        files.append(HubFile(sibling.rfilename, size, lfs.sha256 if lfs else None, None if lfs else sibling.blob_id))
    return files


def _choices(files: list[HubFile]) -> str:
    return ", ".join(f.name for f in files)


def choose_gguf(files: list[HubFile], wanted: str | None) -> tuple[HubFile, HubFile | None]:
    """The model file (by name, quantisation tag, or the only / preferred one) and its projector, if any."""
    ggufs = [f for f in files if f.name.lower().endswith(".gguf")]
    projectors = sorted((f for f in ggufs if "mmproj" in Path(f.name).name.lower()), key=lambda f: f.name)
    models = [f for f in ggufs if f not in projectors]
    if not models:
        raise PullError(f"no GGUF model file in the repository (only projectors: {_choices(projectors)})")
    if wanted:
        exact = [f for f in models if wanted in (f.name, Path(f.name).name)]
        tagged = exact or [f for f in models if wanted.lower() in Path(f.name).name.lower()]
        if len(tagged) != 1:
            how = "matches several files" if tagged else "matches no GGUF file"
            error = PullError if tagged else PullNotFound
            raise error(f"{wanted!r} {how}; choose one of: {_choices(tagged or models)}")
        chosen = tagged[0]
    elif len(models) == 1:
        chosen = models[0]
    else:
        for quant in PREFERRED_QUANTS:
            matching = [f for f in models if quant in Path(f.name).name.lower()]
            if len(matching) == 1:
                chosen = matching[0]
                break
        else:
            raise PullError(f"the repository has several GGUF files; name one as REPO:FILE: {_choices(models)}")
    # several projectors: f16 is the one most repos mean; else the first by name
    mmproj = next((p for p in projectors if "f16" in p.name.lower()), projectors[0] if projectors else None)
    return chosen, mmproj


def plan(repo_id: str, commit: str, files: list[HubFile], wanted: str | None) -> PullPlan:
    """What to download for `repo_id`: a GGUF (+ mmproj), or the whole transformers folder."""
    if any(f.name.lower().endswith(".gguf") for f in files):
        model, mmproj = choose_gguf(files, wanted)
        chosen = [model, *([mmproj] if mmproj else [])]
        return PullPlan(repo_id, commit, "llamacpp", chosen, model.name, mmproj.name if mmproj else None)
    if wanted:
        raise PullError(f"{repo_id} has no GGUF files, so there is no FILE to choose: pull {repo_id} as a folder")
    if not any(f.name == "config.json" for f in files):
        raise PullError(f"{repo_id} has neither .gguf files nor a config.json: not a model vlmserve can serve")
    return PullPlan(repo_id, commit, "transformers", [f for f in files if f.name != ".gitattributes"])


def _git_blob_id(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)  # git's object id
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify(file: HubFile, path: Path) -> None:
    """Size, then sha256 (LFS) or git blob id, against the Hub's metadata; a mismatching file is deleted."""
    problem = None
    size = path.stat().st_size
    if file.size is not None and size != file.size:
        problem = f"size {size} bytes, the Hub says {file.size}"
    elif file.sha256 and (digest := _sha256(path)) != file.sha256:
        problem = f"sha256 {digest}, the Hub says {file.sha256}"
    elif not file.sha256 and file.blob_id and (blob := _git_blob_id(path)) != file.blob_id:
        problem = f"git blob id {blob}, the Hub says {file.blob_id}"
    if problem:
        path.unlink(missing_ok=True)
        raise HubFailed(f"{file.name} is corrupt ({problem}); it was deleted, pull again to retry")


def model_dir(models_root: Path, repo_id: str) -> Path:
    return models_root / repo_id.replace("/", "--")


def default_name(repo_id: str) -> str:
    name = repo_id.split("/")[-1].lower()
    return name.removesuffix("-gguf").removesuffix("_gguf") or name


def _capabilities(folder: Path) -> list[str]:
    """What a transformers folder can do, from its config.json."""
    config = json.loads((folder / "config.json").read_text())
    architectures = " ".join(config.get("architectures") or []).lower()
    if "speechseq2seq" in architectures or config.get("model_type") == "whisper":
        return ["audio"]
    return ["completion", "vision"] if "vision_config" in config else ["completion"]


def catalog_entry(pull: PullPlan, folder: Path, name: str) -> ModelSpec:
    entry: dict[str, Any] = {
        "name": name, "engine": pull.engine, "aliases": [pull.repo_id, f"hf.co/{pull.repo_id}"],
        "description": f"pulled from {pull.repo_id}@{pull.commit[:12]}",
    }  # fmt: skip
    if pull.engine == "llamacpp":
        entry["path"] = str(folder / (pull.model_file or ""))
        entry["mmproj"] = str(folder / pull.mmproj) if pull.mmproj else None
        entry["description"] += f" ({pull.model_file})"
    else:
        entry["path"] = str(folder)
        entry["capabilities"] = _capabilities(folder)
    entry["aliases"] = [a for a in entry["aliases"] if a.lower() != name.lower()]
    return ModelSpec.model_validate(entry)


def add_to_catalog(catalog_file: Path, spec: ModelSpec) -> None:
    """Add (or replace, by name) one entry in the pulled-models file; written whole, then renamed into place."""
    data: dict[str, Any] = {"models": []}
    if catalog_file.is_file():
        data = yaml.safe_load(catalog_file.read_text()) or {"models": []}
    entries = [m for m in data.get("models") or [] if m.get("name") != spec.name]
    entries.append(spec.model_dump(mode="json", exclude_defaults=True, context=WITH_SECRETS))
    catalog_file.parent.mkdir(parents=True, exist_ok=True)
    partial = catalog_file.with_name(f".{catalog_file.name}.{os.getpid()}")
    partial.write_text("# models added by `vlmserve pull`; the server loads them at start\n"
                       + yaml.safe_dump({"models": entries}, sort_keys=False))  # fmt: skip
    partial.replace(catalog_file)


def fetch_plan(repo_id: str, wanted: str | None, revision: str | None, endpoint: str | None) -> PullPlan:
    """Ask the Hub (HF_ENDPOINT, or `endpoint`) what the repository holds, and choose the files."""
    from httpx2 import HTTPError  # huggingface_hub's HTTP client
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi(endpoint=endpoint)
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except RepositoryNotFoundError:
        raise PullNotFound(f"no model repository {repo_id!r} on {api.endpoint} (check the name; private or gated "
                        "repositories need HF_TOKEN)") from None  # fmt: skip
    except RevisionNotFoundError:
        raise PullNotFound(f"{repo_id} has no revision {revision!r}") from None
    except HfHubHTTPError as exc:
        raise HubFailed(f"the Hub at {api.endpoint} answered: {' '.join(str(exc).split())}") from None
    except (OSError, HTTPError) as exc:  # connection refused, DNS, TLS
        raise HubFailed(f"cannot reach the Hub at {api.endpoint}: {exc}") from None
    if not info.sha:
        raise PullError(f"the Hub at {api.endpoint} gave no commit for {repo_id}")
    return plan(repo_id, info.sha, hub_files(info.siblings or []), wanted)


def download(pull: PullPlan, folder: Path, endpoint: str | None, progress: ProgressHook | None = None) -> None:
    """Download and verify every planned file into `folder` (files already there and complete are kept).
    `progress` hears of every chunk written (the bytes of the file on disk so far), then of each file done."""
    from httpx2 import HTTPError
    from huggingface_hub import hf_hub_download

    for file in pull.files:
        bar: Any = None if progress is None else _progress_bar(file, progress)  # hf_hub_download's tqdm_class
        try:
            path = hf_hub_download(pull.repo_id, file.name, revision=pull.commit, local_dir=folder, endpoint=endpoint,
                                   tqdm_class=bar)  # fmt: skip
        except (OSError, HTTPError) as exc:
            raise HubFailed(f"downloading {file.name} failed: {' '.join(str(exc).split())}") from None
        try:
            verify(file, Path(path))
        except PullError:
            # forget hf's record of the file too, so the next pull fetches it again
            (folder / ".cache" / "huggingface" / "download" / f"{file.name}.metadata").unlink(missing_ok=True)
            raise
        if progress is not None:
            progress(file, Path(path).stat().st_size)


def _progress_bar(file: HubFile, progress: ProgressHook) -> type:
    """A stand-in for tqdm that huggingface_hub builds per transfer (`total`, `initial` = bytes resumed) and
    `update`s per chunk: it reports the bytes on disk and draws nothing."""

    class Bar:
        def __init__(self, *args: Any, initial: int = 0, **kwargs: Any) -> None:
            self.n = initial
            progress(file, initial)

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self, n: float | None = 1) -> None:
            self.n += int(n or 0)
            progress(file, self.n)

        def close(self) -> None:
            return None

    return Bar


def write_catalog(catalog_file: Path, specs: list[ModelSpec]) -> None:
    """Write the pulled-models file whole (written beside it, then renamed into place)."""
    entries = [spec.model_dump(mode="json", exclude_defaults=True, context=WITH_SECRETS) for spec in specs]
    catalog_file.parent.mkdir(parents=True, exist_ok=True)
    partial = catalog_file.with_name(f".{catalog_file.name}.{os.getpid()}")
    partial.write_text("# models added by `vlmserve pull` and the Ollama API (pull, create, copy); the server "
                       "loads them at start\n" + yaml.safe_dump({"models": entries}, sort_keys=False))  # fmt: skip
    partial.replace(catalog_file)


def gguf_entry(name: str, model_file: Path, mmproj: Path | None, description: str) -> ModelSpec:
    """A catalog entry serving a GGUF file (+ its multimodal projector) on llama.cpp."""
    return ModelSpec(name=name, engine="llamacpp", path=str(model_file), mmproj=str(mmproj) if mmproj else None,
                     description=description)  # fmt: skip
