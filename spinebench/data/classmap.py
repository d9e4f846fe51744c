"""Class maps: positional class identity, display names and the prompt text VLM methods use."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SpineClass:
    """One foreground class. ``kind`` is "vertebra", "disc", "sacrum", "canal" or "other"."""

    id: int
    name: str
    kind: str
    prompt_name: str


@dataclass(frozen=True)
class ClassMap:
    """Foreground classes by label value; background (0) is implicit."""

    classes: tuple[SpineClass, ...]
    scheme: str = "custom"
    _by_id: dict[int, SpineClass] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        if len(set(ids)) != len(ids) or any(i <= 0 for i in ids):
            raise ValueError(f"class ids must be unique and positive, got {ids}")
        object.__setattr__(self, "_by_id", {c.id: c for c in self.classes})

    @property
    def num_classes(self) -> int:
        """Output channels of a segmentation network, background included."""
        return len(self.classes) + 1

    @property
    def ids(self) -> list[int]:
        return [c.id for c in self.classes]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def __getitem__(self, class_id: int) -> SpineClass:
        return self._by_id[class_id]

    def __len__(self) -> int:
        return len(self.classes)

    def is_contiguous(self) -> bool:
        """Training uses label values as channel indices, so ids must be 1..N."""
        return self.ids == list(range(1, len(self.classes) + 1))

    def to_dict(self) -> dict:
        return {
            "scheme": self.scheme,
            "classes": [
                {"id": c.id, "name": c.name, "kind": c.kind, "prompt_name": c.prompt_name}
                for c in self.classes
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> ClassMap:
        return cls(
            classes=tuple(SpineClass(**c) for c in data["classes"]),
            scheme=data.get("scheme", "custom"),
        )


_VERTEBRAE = ["S", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9"]
_DISCS = ["L5/S", "L4/L5", "L3/L4", "L2/L3", "L1/L2", "T12/L1", "T11/T12", "T10/T11", "T9/T10"]


def mrspineseg_class_map() -> ClassMap:
    """MRSpineSeg's 19 classes: 1 S, 2-10 L5..T9 vertebrae, 11-19 L5/S..T9/T10 discs."""
    classes: list[SpineClass] = [SpineClass(1, "S", "sacrum", "sacrum")]
    for offset, level in enumerate(_VERTEBRAE[1:]):
        classes.append(SpineClass(2 + offset, level, "vertebra", f"{level} vertebra"))
    for offset, level in enumerate(_DISCS):
        classes.append(SpineClass(11 + offset, level, "disc", f"{level} intervertebral disc"))
    return ClassMap(classes=tuple(classes), scheme="mrspineseg")
