"""Run Poetry with a fallback for package indexes that serve only the simple API.

Usage: <python of a Poetry 2.x install> tools/poetry_simple_index.py <poetry arguments>

Stock Poetry asks PyPI's per-release JSON API (``/pypi/<name>/<version>/json``) for each
release's metadata and files. Some mirrors and proxies serve only the simple index
(PEP 503/691) and answer that endpoint with 404, and Poetry then reports
"Package X not found" from ``poetry lock`` and ``poetry install``.

This wrapper patches ``PyPiRepository`` so that, only when the per-release JSON is missing,
release information comes from the simple index instead: file links and hashes from the
simple page, dependencies and Requires-Python from the wheel metadata (PEP 658 ``.metadata``
files when offered, else the wheel itself). That is the same path Poetry already takes for
any non-PyPI ("legacy") source, so the lock file it writes is an ordinary one. Where the
JSON API answers, as on real PyPI, nothing changes: the original code runs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from packaging.utils import NormalizedName
    from poetry.core.constraints.version import Version
    from poetry.core.packages.package import Package
    from poetry.core.packages.utils.link import Link
    from poetry.repositories.pypi_repository import PyPiRepository


def _install_patch() -> None:
    """Patch PyPiRepository; on a Poetry whose internals differ, warn and run it unpatched."""
    try:
        from poetry.inspection.info import PackageInfo
        from poetry.repositories.exceptions import PackageNotFoundError
        from poetry.repositories.pypi_repository import PyPiRepository

        original_get_release_info = PyPiRepository._get_release_info
        original_find_links_for_package = PyPiRepository.find_links_for_package
        PyPiRepository._links_to_data  # noqa: B018  (used below: fail early if missing)
        PyPiRepository._get_page  # noqa: B018  (get_page is its cached instance wrapper)
    except (ImportError, AttributeError) as e:  # pragma: no cover
        print(f"poetry_simple_index: not patching this Poetry ({e!r})", file=sys.stderr)
        return

    def _get_release_info(
        self: PyPiRepository, name: NormalizedName, version: Version
    ) -> dict[str, Any]:
        try:
            return original_get_release_info(self, name, version)
        except PackageNotFoundError:
            pass

        self._log(f"No release JSON for {name} ({version}); using the simple index", "debug")
        page = self.get_page(name)  # raises PackageNotFoundError if the project is unknown
        links = list(page.links_for_version(name, version))
        return self._links_to_data(
            links,
            PackageInfo(
                name=name,
                version=version.text,
                summary="",
                requires_dist=[],
                requires_python=None,
                files=[],
                yanked=page.yanked(name, version),
                cache_version=str(self.CACHE_VERSION),
            ),
        )

    def _find_links_for_package(self: PyPiRepository, package: Package) -> list[Link]:
        links = original_find_links_for_package(self, package)
        if links:
            return links
        try:
            page = self.get_page(package.name)
        except PackageNotFoundError:
            return []
        return list(page.links_for_version(package.name, package.version))

    PyPiRepository._get_release_info = _get_release_info  # type: ignore[method-assign]
    PyPiRepository.find_links_for_package = _find_links_for_package  # type: ignore[method-assign]


if __name__ == "__main__":
    _install_patch()

    from poetry.console.application import main

    sys.argv[0] = "poetry"
    sys.exit(main())
