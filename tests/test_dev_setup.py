"""The newcomer's path through the repository itself: every dependency pyproject.toml names is pinned in
requirements.lock (at a version its range allows) and every install of the project goes through the lock; CI runs
`make lint` after `make test`; and `make test` without PostgreSQL/Redis says in one line what it skipped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parent.parent
SERVICE_VARIABLES = ("VLMSERVE_TEST_POSTGRES_DSN", "VLMSERVE_TEST_REDIS_URL")


def _locked() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = Version(version.strip())
    return pins


def test_every_dependency_is_locked_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in ("dev", "transformers") for r in project["optional-dependencies"][extra]]
    locked = _locked()
    missing = [str(r) for r in wanted if canonicalize_name(r.name) not in locked]
    assert missing == [], "run `make lock`: requirements.lock lacks these"
    outside = [f"{r} (locked {locked[canonicalize_name(r.name)]})" for r in wanted
               if not r.specifier.contains(locked[canonicalize_name(r.name)], prereleases=True)]  # fmt: skip
    assert outside == [], "run `make lock`: pyproject.toml's ranges moved past the lock"


def test_installs_go_through_the_lock_and_ci_lints() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^LOCK := -c requirements\.lock$", makefile, re.M)
    project_installs = [line for line in makefile.splitlines() if re.search(r"pip install .*-e ", line)]
    assert len(project_installs) == 2 and all("$(LOCK)" in line for line in project_installs), project_installs
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        assert 'pip install -c requirements.lock ".' in (ROOT / dockerfile).read_text(), dockerfile
    steps = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert steps.index("make test") < steps.index("make lint")


def test_skipped_database_tests_are_named_in_one_line() -> None:
    """The real conftest and a real module that needs both services, run with neither set."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_replicas.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    skipped = re.search(r"(\d+) skipped", done.stdout)
    assert skipped is not None, done.stdout[-3000:]
    lines = [line for line in done.stdout.splitlines() if "without PostgreSQL/Redis" in line]
    assert lines == [
        f"{skipped.group(1)} tests skipped without PostgreSQL/Redis (tests/test_replicas.py); run them with "
        "VLMSERVE_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test "
        "VLMSERVE_TEST_REDIS_URL=redis://127.0.0.1:6379/0 make test"
    ]
