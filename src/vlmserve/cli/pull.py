"""`vlmserve pull REPO[:FILE]`: download a model from the Hugging Face Hub (HF_ENDPOINT honoured) into
<data_dir>/models and add it to the catalog a server loads at start. The work is in `vlmserve.pull`."""

from __future__ import annotations

from typing import Annotated

import typer

from vlmserve.cli.common import err, fail, out
from vlmserve.cli.settings_flags import settings_or_exit
from vlmserve.config import data_dir_path, pulled_models_path
from vlmserve.pull import (
    PullError,
    add_to_catalog,
    catalog_entry,
    default_name,
    download,
    fetch_plan,
    model_dir,
    parse_reference,
)

REFERENCE_HELP = "owner/name, optionally :file.gguf or :QUANT (e.g. :Q4_K_M) for GGUF repositories"


def _size(size: int | None) -> str:
    return "?" if size is None else f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size} B"


def pull(
    reference: Annotated[str, typer.Argument(metavar="REPO[:FILE]", help=REFERENCE_HELP)],
    name: Annotated[str | None, typer.Option(help="catalog name (default: the repository's name)")] = None,
    revision: Annotated[str | None, typer.Option(help="branch, tag or commit (default: main)")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Hub address (default: HF_ENDPOINT or huggingface.co)")] = None,
    config: Annotated[
        str | None, typer.Option(help="YAML config file (also VLMSERVE_CONFIG): where data_dir is", metavar="FILE")
    ] = None,
    data_dir: Annotated[str | None, typer.Option(help="where models and the catalog file go (~/.vlmserve)")] = None,
) -> None:
    """Download a GGUF (+ its mmproj) or a transformers folder from the Hub and add it to the catalog."""
    try:
        repo_id, wanted = parse_reference(reference)
    except ValueError as exc:
        fail(str(exc), code=2)
    settings = settings_or_exit(config, {"data_dir": data_dir})
    folder = model_dir(data_dir_path(settings) / "models", repo_id)
    catalog_file = pulled_models_path(settings)
    try:
        plan = fetch_plan(repo_id, wanted, revision, endpoint)
        listing = ", ".join(f"{f.name} ({_size(f.size)})" for f in plan.files)
        err.print(f"pulling {repo_id}@{plan.commit[:12]} for {plan.engine}: {listing}")
        download(plan, folder, endpoint)
        spec = catalog_entry(plan, folder, name or default_name(repo_id))
        add_to_catalog(catalog_file, spec)
    except PullError as exc:
        fail(str(exc))
    err.print(f"verified; added model {spec.name!r} ({spec.engine}) to {catalog_file}. A server started now serves "
              "it (restart a running one).")  # fmt: skip
    out.print(spec.name)
