"""A sequence as loaded from a file: its spec, its content-derived version, where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

from nurture.core.versions import content_version
from nurture.sequences.spec import SequenceSpec


def spec_version(spec: SequenceSpec) -> str:
    """The version of a sequence: a hash of its meaning, not its formatting. Comments,
    key order and whitespace do not make a new version; any change of a value does."""
    return content_version(spec_document(spec))


def spec_document(spec: SequenceSpec) -> dict[str, object]:
    """The spec as plain JSON data (what is stored in ``sequence_versions.spec``)."""
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def spec_from_document(document: dict[str, object]) -> SequenceSpec:
    return SequenceSpec.model_validate(document)


@dataclass(frozen=True)
class LoadedSequence:
    spec: SequenceSpec
    path: str
    version: str = field(default="")

    def __post_init__(self) -> None:
        if not self.version:
            object.__setattr__(self, "version", spec_version(self.spec))
