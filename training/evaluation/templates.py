"""Prompt templates: ``{c}`` stands for the class name, as in CLIP_benchmark's
``zeroshot_classification_templates.txt``.

``openai``: the 80 templates OpenAI used for ImageNet; ``simple``: "a photo of a {c}.";
``none``: the bare class name; a path: a file with one template per line; ``dataset`` (the
default): the dataset's own templates when it ships some, else ``simple``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

NAMED = ("openai", "simple", "none", "dataset")
SIMPLE = ("a photo of a {c}.",)
NONE = ("{c}",)


class TemplateError(ValueError):
    """A template set that cannot be used (unknown name, unreadable file, a line without {c})."""


@dataclass(frozen=True, slots=True)
class Templates:
    """A named template set; ``name`` is what the results table shows."""

    name: str
    texts: tuple[str, ...]

    def fill(self, class_name: str) -> list[str]:
        # str.replace, not str.format: a template may hold other braces
        return [template.replace("{c}", class_name) for template in self.texts]


def openai_imagenet() -> tuple[str, ...]:
    path = resources.files("entitynet.training.evaluation") / "data" / "openai_imagenet_templates.txt"
    return tuple(line for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def check(texts: Sequence[str], origin: str) -> tuple[str, ...]:
    texts = tuple(text.strip() for text in texts if text.strip())
    if not texts:
        raise TemplateError(f"{origin}: no templates")
    missing = [text for text in texts if "{c}" not in text]
    if missing:
        raise TemplateError(f"{origin}: every template needs {{c}} for the class name; {len(missing)} lack it, "
                            f"e.g. {missing[0]!r}")
    return texts


def resolve_templates(spec: str | None, dataset_templates: Sequence[str] | None = None) -> Templates:
    """The template set ``spec`` names (None means ``dataset``)."""
    spec = spec or "dataset"
    if spec == "openai":
        return Templates("openai", openai_imagenet())
    if spec == "simple":
        return Templates("simple", SIMPLE)
    if spec == "none":
        return Templates("none", NONE)
    if spec == "dataset":
        if dataset_templates:
            return Templates("dataset", check(dataset_templates, "the dataset's templates"))
        return Templates("simple", SIMPLE)
    path = Path(spec)
    if not path.is_file():
        raise TemplateError(f"--templates {spec}: neither one of {', '.join(NAMED)} nor a file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TemplateError(f"{path}: cannot read templates ({error})") from error
    return Templates(path.stem, check(lines, str(path)))
