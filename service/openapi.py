"""What Litestar's generated OpenAPI document leaves out, put back from the contract itself.

Litestar drops the constraints of list items, puts those of nullable fields beside the
``oneOf`` instead of on its non-null branch, and does not say that unknown fields are refused
(msgspec's ``forbid_unknown_fields``). msgspec's own JSON schema of each request struct says all
of that; it is copied onto the generated component. Bodies the handlers read raw (CSV imports)
get their content type.
"""

from __future__ import annotations

import msgspec
from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, RequestBody, Schema

#: msgspec JSON-schema keywords -> litestar Schema attributes.
_CONSTRAINTS = {
    "minimum": "minimum",
    "maximum": "maximum",
    "minItems": "min_items",
    "maxItems": "max_items",
    "minLength": "min_length",
    "maxLength": "max_length",
    "pattern": "pattern",
}


def _copy_constraints(source: dict, target: Schema) -> None:
    for key, attr in _CONSTRAINTS.items():
        if key in source:
            setattr(target, attr, source[key])
    if "items" in source and isinstance(target.items, Schema):
        _copy_constraints(source["items"], target.items)


def _non_null(schema: Schema) -> Schema:
    for branch in schema.one_of or []:
        if isinstance(branch, Schema) and branch.type != OpenAPIType.NULL:
            return branch
    return schema


def _branch(source: dict) -> dict:
    return next((b for b in source.get("anyOf", []) if b.get("type") != "null"), source)


def complete_struct(app: Litestar, struct: type) -> None:
    """The component schema of ``struct`` with msgspec's constraints and strictness."""
    component = app.openapi_schema.components.schemas[struct.__name__]
    defs = msgspec.json.schema(struct)["$defs"][struct.__name__]
    if defs.get("additionalProperties") is False:
        component.additional_properties = False
    for name, prop in (component.properties or {}).items():
        if not isinstance(prop, Schema) or name not in defs["properties"]:
            continue
        if prop.one_of:  # constraints belong on the non-null branch, not beside the oneOf
            for attr in _CONSTRAINTS.values():
                setattr(prop, attr, None)
        _copy_constraints(_branch(defs["properties"][name]), _non_null(prop))


def raw_body(app: Litestar, path: str, method: str, media_type: str, description: str) -> None:
    operation = getattr(app.openapi_schema.paths[path], method)
    operation.request_body = RequestBody(
        content={media_type: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))},
        description=description,
        required=True,
    )
