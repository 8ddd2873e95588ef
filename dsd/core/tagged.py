"""The base of every message type in the core: a frozen msgspec struct that names its own type.

The types are plain data; the codecs around the core (`dsd.wire` for datagrams,
`dsd.linkwire` for the links) encode and decode them, and msgspec checks each field
against its annotation as it decodes.
"""

from __future__ import annotations

from msgspec import Struct


class Tagged(Struct, frozen=True, forbid_unknown_fields=True, tag_field="t", tag=str.lower):
    """A message; its type travels as ``t``: the class name in lower case."""

    @classmethod
    def type_name(cls) -> str:
        return cls.__struct_config__.tag  # type: ignore[return-value]
