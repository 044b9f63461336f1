"""Wire-relevant summary of protobuf descriptors, the same function for our side and the SDK's."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor


def describe_field(f: FieldDescriptor) -> dict[str, Any]:
    """The wire-relevant facts of one field: the same function summarises both sides."""
    return {
        "name": f.name,
        "number": f.number,
        "type": f.type,
        "repeated": f.is_repeated if hasattr(f, "is_repeated") else f.label == FieldDescriptor.LABEL_REPEATED,
        "oneof": f.containing_oneof.name if f.containing_oneof else None,
        "message_type": f.message_type.full_name if f.message_type else None,
        "enum_type": f.enum_type.full_name if f.enum_type else None,
        "map_entry": bool(f.message_type and f.message_type.GetOptions().map_entry),
    }


def describe_message(d: Descriptor) -> dict[str, Any]:
    return {f.name: describe_field(f) for f in d.fields}


def describe_enum(e: EnumDescriptor) -> dict[str, int]:
    return {v.name: v.number for v in e.values}
