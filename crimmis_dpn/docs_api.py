"""Generate docs/api.md from the OpenAPI schemas of the coordinator's and the node's apps.

    python -m crimmis_dpn.docs_api            # rewrite docs/api.md
    python -m crimmis_dpn.docs_api --check    # exit 1 if docs/api.md is out of date

Both apps are built on throw-away homes in a temporary directory; nothing is served.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["DOC", "render_api_markdown", "schemas"]

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
_METHODS = ("get", "post", "put", "patch", "delete")


def schemas() -> dict[str, dict[str, Any]]:
    """``{"coordinator": openapi, "node": openapi}``."""
    import coordinator
    import node

    with tempfile.TemporaryDirectory() as tmp:
        hub = coordinator.init_coordinator(home=Path(tmp) / "coordinator")
        peer = node.init_node(home=Path(tmp) / "node", node_id="example-node",
                              display_name="Example node")
        try:
            return {"coordinator": coordinator.create_app(hub).openapi(),
                    "node": node.create_app(peer, run_agent=False).openapi()}
        finally:
            hub.engine.dispose()
            peer.engine.dispose()


def _ref_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[-1]}`"
    if schema.get("type") == "array" and "items" in schema:
        return f"list of {_ref_name(schema['items'])}"
    if "anyOf" in schema:
        return " or ".join(_ref_name(s) for s in schema["anyOf"])
    return f"`{schema.get('type', 'object')}`"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _operations(spec: dict[str, Any]) -> list[str]:
    lines = ["| method | path | auth | request body | response |",
             "| --- | --- | --- | --- | --- |"]
    for path, item in spec.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            request = _ref_name(body["schema"]) if "schema" in body else ""
            ok: dict[str, Any] = next((r for code, r in op.get("responses", {}).items()
                       if code.startswith("2")), {})
            response = ok.get("content", {}).get("application/json", {}).get("schema")
            auth = "bearer" if op.get("security") else ""
            lines.append(f"| {method.upper()} | `{path}` | {auth} | {request} | "
                         f"{_ref_name(response) if response else '(none)'} |")
    return lines


def _models(spec: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name, schema in sorted(spec.get("components", {}).get("schemas", {}).items()):
        if name in ("HTTPValidationError", "ValidationError"):
            continue
        out += ["", f"#### `{name}`", ""]
        if schema.get("description"):
            out += [_cell(schema["description"]), ""]
        if "enum" in schema:
            out.append("one of: " + ", ".join(f"`{v}`" for v in schema["enum"]))
            continue
        props = schema.get("properties", {})
        if not props:
            continue
        required = set(schema.get("required", []))
        out += ["| field | type | required | description |", "| --- | --- | --- | --- |"]
        for field, prop in props.items():
            out.append(f"| `{field}` | {_ref_name(prop)} | {'yes' if field in required else ''}"
                       f" | {_cell(prop.get('description', ''))} |")
    return out


def render_api_markdown(specs: dict[str, dict[str, Any]]) -> str:
    """docs/api.md from the two schemas."""
    lines = [
        "# HTTP API reference",
        "",
        "Generated from the apps' OpenAPI schemas by `python -m crimmis_dpn.docs_api`; do not "
        "edit by hand (a test checks it is up to date). Errors are an `ErrorBody` "
        "(`error`, `message`, `detail`). The web pages (`/ui`, `/admin`, see "
        "[web.md](web.md)) are not part of the API.",
        "",
        "Roles on the coordinator: **operator** and **auditor** bearer tokens "
        "(`coordinator.toml`); node routes (`/v1/enrol`, `/v1/jobs/*`, `/v1/keys/rotate`) take "
        "signed envelopes instead (see [pull-mode.md](pull-mode.md)). On the node, bearer "
        "routes take the node's `access_token` (push mode, development).",
    ]
    for name, spec in specs.items():
        info = spec.get("info", {})
        lines += ["", f"## {name.capitalize()} (`{_cell(info.get('title', ''))}`, version "
                      f"{info.get('version', '')})", "", _cell(info.get("description", "")), "",
                  "### Routes", "", *_operations(spec), "", "### Models", *_models(spec)]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) docs/api.md."""
    args = sys.argv[1:] if argv is None else argv
    text = render_api_markdown(schemas())
    if "--check" in args:
        current = DOC.read_text(encoding="utf-8") if DOC.is_file() else ""
        if current != text:
            print(f"{DOC} is out of date: run python -m crimmis_dpn.docs_api", file=sys.stderr)
            return 1
        return 0
    if "--json" in args:
        print(json.dumps(schemas(), indent=2, sort_keys=True))
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
