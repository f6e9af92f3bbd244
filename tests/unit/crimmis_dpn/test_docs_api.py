"""docs/api.md is generated from the apps' OpenAPI schemas and must be up to date."""

from __future__ import annotations

from crimmis_dpn.docs_api import DOC, render_api_markdown, schemas


def test_the_committed_api_reference_matches_the_apps() -> None:
    expected = render_api_markdown(schemas())
    assert DOC.read_text(encoding="utf-8") == expected, (
        "docs/api.md is out of date: run `python -m crimmis_dpn.docs_api`")


def test_the_reference_lists_both_apps_routes_and_models() -> None:
    text = DOC.read_text(encoding="utf-8")
    for needle in ("## Coordinator", "## Node", "`/v1/balances`", "`/v1/jobs/poll`",
                   "#### `Balance`", "#### `SignedAnswer`"):
        assert needle in text
    assert "/ui/" not in text and "/admin/" not in text  # the web pages are not API
