"""Model management over the API: Ollama's pull / delete / copy / create and `POST /admin/reload`.

The models it adds live in the pulled-models file (`<data_dir>/pulled.yaml`, shared with `vlmserve pull`).
Every change builds the whole new catalog first (a pipeline or fallback that names a deleted model is refused
with 409), then writes the file, then swaps the live catalog in place: a pulled or created model is served at
once, with no restart. Deleting removes only the server's own files (under `<data_dir>/models` and
`<data_dir>/blobs`) that no remaining model uses; paths given to create are never touched.

The scheduler keeps one runtime per model name, built from the definition it first saw (it has no way yet to
forget one). A name it already knows under another definition can therefore not be redefined live: create /
copy onto it is a 409, and `POST /admin/reload` keeps that model's old definition and names it under
`restart_needed`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vlmserve.config import Settings, data_dir_path, pulled_models_path
from vlmserve.domain.spec import ModelSpec
from vlmserve.errors import BadRequest, Conflict, EngineError, ModelNotFound, NotFound, VlmServeError
from vlmserve.pull import (
    HubFailed,
    HubFile,
    PullError,
    PullNotFound,
    PullPlan,
    catalog_entry,
    download,
    fetch_plan,
    gguf_entry,
    model_dir,
    parse_reference,
    write_catalog,
)
from vlmserve.scheduler.core import Scheduler
from vlmserve.service.catalog import Catalog, pulled_specs
from vlmserve.service.model_files import BlobStore, checked_gguf, is_projector, remove_unused

log = logging.getLogger("vlmserve.models")
HUB_PREFIXES = ("hf.co/", "huggingface.co/", "https://huggingface.co/", "http://huggingface.co/")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,199}$")  # Ollama's model names (namespace/model:tag)
PROGRESS_EVERY = 0.2  # seconds between progress lines of one file
Progress = dict[str, Any]  # one line of Ollama's streamed progress


@dataclass(frozen=True)
class PullJob:
    name: str
    plan: PullPlan
    folder: Path


@dataclass
class ReloadReport:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)
    models: int = 0


def checked_name(name: str, param: str = "model") -> str:
    name = name.strip()
    if not NAME.match(name):
        raise BadRequest(f"invalid model name {name!r}: letters, digits and _ . : / @ + - (at most 200)", param=param)
    return name


def hub_reference(reference: str) -> tuple[str, str, str | None]:
    """(catalog name, repo id, file or quantisation tag) of an Ollama-style Hub reference (hf.co/owner/repo:Q4_K_M);
    the name is the reference itself, as Ollama names what it pulled (`:latest` means the preferred file)."""
    try:
        repo_id, wanted = parse_reference(reference)
    except ValueError as exc:
        raise BadRequest(str(exc), param="model") from None
    if wanted is not None and wanted.lower() == "latest":
        wanted = None
    return f"hf.co/{repo_id}" + (f":{wanted}" if wanted else ""), repo_id, wanted


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        scheduler: Scheduler,
        reload_settings: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.scheduler = scheduler
        self._reload_settings = reload_settings
        self._lock = asyncio.Lock()  # one change of the catalog file at a time
        self._folder_locks: dict[Path, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.pulling: set[Path] = set()  # model folders with a download in progress
        self.blobs = BlobStore(self.data_dir / "blobs")

    @property
    def data_dir(self) -> Path:
        return data_dir_path(self.settings)

    @property
    def models_root(self) -> Path:
        return self.data_dir / "models"

    def managed(self) -> list[ModelSpec]:
        """The entries of the pulled-models file: what the API may change or delete."""
        try:
            return pulled_specs(self.settings)
        except (ValueError, ValidationError) as exc:
            raise Conflict(f"{pulled_models_path(self.settings)} cannot be read: {exc}") from None

    # --- pull ---------------------------------------------------------------------------------------------

    async def prepare_pull(self, reference: str) -> PullJob | None:
        """What a pull of `reference` will download, or None when the model is already in the catalog."""
        if self._present(reference):
            return None
        if not reference.strip().lower().startswith(HUB_PREFIXES):
            raise NotFound(
                f"model '{reference}' is not in the catalog, and vlmserve pulls only from the Hugging "
                "Face Hub (hf.co/{owner}/{repo}[:{quant}]); declare other models in the config file",
                param="model",
            )
        name, repo_id, wanted = hub_reference(reference)
        if self._present(name):
            return None
        try:
            plan = await asyncio.to_thread(fetch_plan, repo_id, wanted, None, None)
        except PullError as exc:
            raise _vlm_error(exc) from None
        return PullJob(name, plan, model_dir(self.models_root, repo_id))

    async def pull(self, job: PullJob) -> AsyncIterator[Progress]:
        """Ollama's progress lines of the pull, ending with {"status": "success"}; a failure is raised. The work
        goes on if the consumer stops listening (a client gone): the model is then added all the same."""
        queue: asyncio.Queue[Progress | VlmServeError | None] = asyncio.Queue()
        self._spawn(self._pull_work(job, queue))
        while (item := await queue.get()) is not None:
            if isinstance(item, VlmServeError):
                raise item
            yield item

    async def _pull_work(self, job: PullJob, queue: asyncio.Queue[Progress | VlmServeError | None]) -> None:
        loop = asyncio.get_running_loop()
        last: dict[str, float] = {}

        def hook(file: HubFile, done: int) -> None:  # called from the download thread
            now = time.monotonic()
            if done < (file.size or 0) and now - last.get(file.name, 0.0) < PROGRESS_EVERY:
                return
            last[file.name] = now
            loop.call_soon_threadsafe(queue.put_nowait, _layer_line(file, done))

        try:
            queue.put_nowait({"status": "pulling manifest"})
            lock = self._folder_locks.setdefault(job.folder, asyncio.Lock())
            async with lock:  # two pulls of one repository: the second waits, then finds the files there
                if not self._present(job.name):
                    self.pulling.add(job.folder)
                    try:
                        await asyncio.to_thread(download, job.plan, job.folder, None, hook)
                    finally:
                        self.pulling.discard(job.folder)
                    queue.put_nowait({"status": "verifying sha256 digest"})
                    queue.put_nowait({"status": "writing manifest"})
                    spec = catalog_entry(job.plan, job.folder, job.name).model_copy(update={"aliases": []})
                    async with self._lock:
                        self._check_redefinable(spec)
                        await self._commit([*self._without(spec.name), spec])
                    log.info("pulled %s from %s@%s", spec.name, job.plan.repo_id, job.plan.commit[:12])
            queue.put_nowait({"status": "success"})
        except PullError as exc:
            queue.put_nowait(_vlm_error(exc))
        except VlmServeError as exc:
            queue.put_nowait(exc)
        except Exception as exc:
            log.exception("pulling %s failed", job.name)
            queue.put_nowait(VlmServeError(f"pulling {job.name} failed: {exc.__class__.__name__}: {exc}"))
        finally:
            queue.put_nowait(None)

    # --- delete, copy, create -----------------------------------------------------------------------------

    async def delete(self, name: str) -> str:
        async with self._lock:
            spec = self.catalog.get(name)
            entries = self.managed()
            if spec.name not in {e.name for e in entries}:
                raise BadRequest(
                    f"model '{spec.name}' is declared in the configuration (or ships with vlmserve), not added over "
                    "the API: remove it from the config file and POST /admin/reload",
                    param="model",
                )
            remaining = [e for e in entries if e.name != spec.name]
            self._build(remaining)  # refused before anything changes if another model refers to it
            await self.scheduler.unload(spec.name, "deleted")
            await self._commit(remaining)
        removed = await asyncio.to_thread(self._remove_unused, spec)
        log.info("deleted model %s (%d files removed)", spec.name, len(removed))
        return spec.name

    async def copy(self, source: str, destination: str) -> ModelSpec:
        spec = self.catalog.get(source)
        destination = checked_name(destination, "destination")
        data = spec.model_dump(exclude_defaults=True)
        data.update(name=destination, aliases=[], description=f"copy of {spec.name}. {spec.description}".strip())
        return await self.define(ModelSpec.model_validate(data), "destination")

    async def define(self, spec: ModelSpec, param: str = "model") -> ModelSpec:
        """Add `spec` to the catalog (replacing an entry of the same name that the API added), live."""
        async with self._lock:
            try:
                existing = self.catalog.get(spec.name)
            except ModelNotFound:
                existing = None
            managed_names = {e.name for e in self.managed()}
            if existing is not None and existing.name != spec.name:
                raise Conflict(f"'{spec.name}' is another name of model '{existing.name}'", param=param)
            if existing is not None and existing.name not in managed_names:
                raise Conflict(
                    f"model '{spec.name}' is declared in the configuration (or ships with vlmserve): "
                    "choose another name, or change it in the config file and POST /admin/reload",
                    param=param,
                )
            self._check_redefinable(spec)
            await self._commit([*self._without(spec.name), spec])
        log.info("defined model %s (%s)", spec.name, spec.description)
        return spec

    async def create(self, name: str, base: str | None, files: dict[str, str], overrides: dict[str, Any]) -> ModelSpec:
        """A model from a catalog model (`base` names one: its definition, with `overrides`), or from GGUF files
        (`files`: name -> blob digest or absolute path on the server; `base` may be such a path): one model file
        and at most one multimodal projector. `overrides`: ModelSpec fields, `defaults` merged into the base's."""
        name = checked_name(name)
        if base and files:
            raise BadRequest("give either `from` (a model or a GGUF path) or `files`, not both", param="from")
        if base and self._present(base):
            source = self.catalog.get(base)
            data = source.model_dump(exclude_defaults=True)
            data.update(aliases=[], description=f"created from {source.name}. {source.description}".strip())
        else:
            if base:
                files = {Path(base).name: base}
            if not files:
                raise BadRequest("nothing to create from: give `from` (a model or GGUF path) or `files`", param="from")
            found = await asyncio.to_thread(lambda: [(n, self._file(v)) for n, v in files.items()])
            projectors = [p for n, p in found if is_projector(n, p)]
            weights = [p for n, p in found if not is_projector(n, p)]
            if len(weights) != 1 or len(projectors) > 1:
                raise BadRequest(
                    f"give one GGUF model file and at most one projector (got {len(weights)} model files and "
                    f"{len(projectors)} projectors)",
                    param="files",
                )
            mmproj = projectors[0] if projectors else None
            extra = f" + {mmproj.name}" if mmproj else ""
            data = gguf_entry(name, weights[0], mmproj, f"created from {weights[0].name}{extra}").model_dump(
                exclude_defaults=True
            )
        defaults = {**data.get("defaults", {}), **overrides.pop("defaults", {})}
        data.update(name=name, **overrides, **({"defaults": defaults} if defaults else {}))
        try:
            spec = ModelSpec.model_validate(data)
        except ValidationError as exc:
            raise BadRequest(f"invalid model: {_summary(exc)}") from None
        return await self.define(spec)

    def _file(self, value: str) -> Path:
        """A file named in `files`: an uploaded blob (sha256:...) or an absolute path on the server; a GGUF."""
        if value.startswith("sha256"):
            path = self.blobs.path(value)
            if not path.is_file():
                raise BadRequest(f"blob {value} not found: upload it first (POST /api/blobs/{value})", param="files")
            return checked_gguf(path, "files")
        return checked_gguf(Path(value), "files")

    # --- reload -------------------------------------------------------------------------------------------

    async def reload(self) -> ReloadReport:
        """Read the config file (and the pulled-models file) again and serve what they declare now."""
        settings = self.settings
        if self._reload_settings is not None:
            try:
                fresh = await asyncio.to_thread(self._reload_settings)
            except ValidationError as exc:
                raise BadRequest(f"the configuration is invalid: {_summary(exc)}") from None
            except (OSError, ValueError) as exc:  # a missing file, broken YAML (yaml.YAMLError is a ValueError)
                raise BadRequest(f"the configuration cannot be read: {' '.join(str(exc).split())}") from None
            # where data lives is fixed while the server runs (the batch database is open there)
            settings = fresh.model_copy(
                update={"data_dir": settings.data_dir, "pulled_models_file": settings.pulled_models_file}
            )
        async with self._lock:
            try:
                new = Catalog.from_settings(settings)
            except (ValueError, ValidationError) as exc:
                raise BadRequest(f"the configuration is invalid: {' '.join(str(exc).split())}") from None
            old = {s.name: s for s in self.catalog.all()}
            fresh_specs = {s.name: s for s in new.all()}
            report = ReloadReport(
                added=sorted(fresh_specs.keys() - old.keys()),
                removed=sorted(old.keys() - fresh_specs.keys()),
                changed=sorted(n for n in fresh_specs.keys() & old.keys() if fresh_specs[n] != old[n]),
            )
            report.restart_needed = [n for n in [*report.changed, *report.added] if self._stale(fresh_specs[n])]
            if report.restart_needed:  # keep what the scheduler runs; a restart applies the new definition
                kept = [old.get(s.name, s) if s.name in report.restart_needed else s for s in new.all()]
                new = Catalog([s for s in kept if s.name in old or s.name not in report.restart_needed], settings)
            for name in [*report.removed, *(n for n in report.changed if n not in report.restart_needed)]:
                await self.scheduler.unload(name, "reload")
            self.catalog.replace_with(new)
            report.models = len(new.all())
        log.info("catalog reloaded: %s", report)
        return report

    # --- helpers ------------------------------------------------------------------------------------------

    def _present(self, name: str) -> bool:
        try:
            self.catalog.get(name)
        except ModelNotFound:
            return False
        return True

    def _without(self, name: str) -> list[ModelSpec]:
        return [e for e in self.managed() if e.name != name]

    def _stale(self, spec: ModelSpec) -> bool:
        """The scheduler already runs (or ran) a model of this name under another definition."""
        known = self.scheduler.snapshot().models.get(spec.name)
        return known is not None and known.spec != spec

    def _check_redefinable(self, spec: ModelSpec) -> None:
        if self._stale(spec):
            raise Conflict(
                f"model '{spec.name}' was already served under another definition in this server's life; until "
                "the server restarts it cannot be redefined: choose another name",
                param="model",
            )

    def _build(self, entries: list[ModelSpec]) -> Catalog:
        try:
            return Catalog.from_settings(self.settings, pulled=entries)
        except ValueError as exc:
            raise Conflict(" ".join(str(exc).split())) from None

    async def _commit(self, entries: list[ModelSpec]) -> None:
        new = self._build(entries)
        await asyncio.to_thread(write_catalog, pulled_models_path(self.settings), entries)
        self.catalog.replace_with(new)

    def _remove_unused(self, spec: ModelSpec) -> list[Path]:
        used = {Path(p) for s in self.catalog.all() for p in (s.path, s.mmproj) if p}
        return remove_unused([Path(p) for p in (spec.path, spec.mmproj) if p], used, self.models_root, self.blobs.root)

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _layer_line(file: HubFile, done: int) -> Progress:
    line: Progress = {"status": f"pulling {(file.sha256 or file.name)[:12]}", "total": file.size or done}
    line["completed"] = done
    if file.sha256:
        line["digest"] = f"sha256:{file.sha256}"
    return line


def _vlm_error(exc: PullError) -> VlmServeError:
    message = " ".join(str(exc).split())
    if isinstance(exc, PullNotFound):
        return ModelNotFound(message, param="model")
    if isinstance(exc, HubFailed):
        return EngineError(message)
    return BadRequest(message, param="model")


def _summary(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"
