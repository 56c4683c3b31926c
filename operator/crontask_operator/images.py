"""Which container images the operator may run: the allow-list behind ``--allowed-images``.

A CronTask may name its own ``spec.image``; the operator writes it into a CronJob with its own
rights, so the image is the operator's choice, not the author's: only images the allow-list
admits are run (anything else is refused with ``ImageNotAllowed``). Pure functions, total over
any string: a hostile ``spec.image`` is refused, never an exception.

**References** are read as the container runtime reads them (the grammar of
distribution/reference, which containerd and the kubelet use): ``crontask-jobs:dev`` is
``docker.io/library/crontask-jobs:dev``; no tag and no digest means ``:latest``; a reference
with a digest runs that digest whatever its tag says. Anything outside the grammar (upper-case
repository, white space, a scheme, an empty tag, a digest that is not sha256/sha512 hex, more
than 255 characters of name) is not a valid reference and is refused.

**Patterns** (one per allow-list entry) are references whose name and tag may hold globs:
``*`` and ``?`` never cross a ``/``; ``**`` does. They are normalised like references
(``crontask-jobs`` means ``docker.io/library/crontask-jobs``); a pattern that starts with
``**`` is taken as is (``**`` alone admits every image). What a pattern admits:

- ``repo`` (no tag, no digest): every tag and every digest of that repository;
- ``repo:tag`` (tag may be a glob): that tag only, and never a reference with a digest, because
  the digest, not the tag, decides what runs (``repo:1.2`` does not admit
  ``repo:1.2@sha256:...``); ``repo:latest`` admits the bare ``repo``;
- ``repo@sha256:...``: that digest only, with any tag.

The registry host is compared without regard to case (DNS names are case-insensitive).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from crontask_operator.validation import Refusal

if TYPE_CHECKING:
    from crontask_operator.cronjob import JobDefaults
    from crontask_operator.reconcile import Check
    from crontask_operator.spec import CronTaskSpec

IMAGE_NOT_ALLOWED: Final = "ImageNotAllowed"
DEFAULT_DOMAIN: Final = "docker.io"
LEGACY_DOMAIN: Final = "index.docker.io"
OFFICIAL_PREFIX: Final = "library/"
MAX_NAME_LENGTH: Final = 255
"""distribution/reference's NameTotalLengthMax."""

_DOMAIN_COMPONENT: Final = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN: Final = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_PATH_COMPONENT: Final = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG: Final = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST: Final = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_GLOB_CHARS: Final = "*?"


class ImageError(ValueError):
    """Not a valid image reference (or allow-list pattern); the message says why."""


@dataclass(frozen=True)
class ImageRef:
    """A parsed, normalised image reference."""

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def effective_tag(self) -> str | None:
        """The tag the runtime resolves: ``latest`` when neither tag nor digest is given."""
        return self.tag if self.tag is not None or self.digest is not None else "latest"

    def __str__(self) -> str:
        return (self.repository + (f":{self.tag}" if self.tag is not None else "")
                + (f"@{self.digest}" if self.digest is not None else ""))


def _split(text: str) -> tuple[str, str | None, str | None]:
    """name, tag, digest: the digest after ``@``, the tag after a ``:`` past the last ``/``."""
    name, at, digest = text.partition("@")
    colon = name.rfind(":")
    tag = None
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1:]
    return name, tag, (digest if at else None)


def _split_domain(name: str) -> tuple[str, str]:
    """distribution's splitDockerDomain: a first component with ``.``, ``:``, an upper-case
    letter, or ``localhost`` is a registry host; otherwise the image lives on Docker Hub."""
    first, slash, rest = name.partition("/")
    if slash and (any(c in first for c in ".:[") or first == "localhost"
                  or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain.lower() == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain.lower(), path


def parse_reference(text: str) -> ImageRef:
    """The normalised reference, or ImageError saying what is wrong with ``text``."""
    if not isinstance(text, str) or not text:
        raise ImageError("an image reference must be a non-empty string")
    if text != text.strip() or any(c.isspace() for c in text):
        raise ImageError("an image reference holds no white space")
    if text.count("@") > 1:
        raise ImageError("an image reference has at most one '@digest'")
    name, tag, digest = _split(text)
    if tag is not None and not _TAG.fullmatch(tag):
        raise ImageError(f"the tag {tag!r} is not valid (letters, digits, '_', '.', '-';"
                         " at most 128, not starting with '.' or '-')")
    if digest is not None and not _DIGEST.fullmatch(digest):
        raise ImageError(f"the digest {digest!r} is not sha256:<64 hex> or sha512:<128 hex>")
    if len(name) > MAX_NAME_LENGTH:
        raise ImageError(f"the repository name is longer than {MAX_NAME_LENGTH} characters")
    domain, path = _split_domain(name)
    if domain != DEFAULT_DOMAIN and not _DOMAIN.fullmatch(domain):
        raise ImageError(f"the registry host {domain!r} is not valid")
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            raise ImageError(f"the repository path component {component!r} is not valid"
                             " (lower-case letters and digits, separated by '.', '_' or '-')")
    return ImageRef(domain=domain, path=path, tag=tag, digest=digest)


def _glob(pattern: str) -> re.Pattern[str]:
    """``*`` and ``?`` stay within one path component; ``**`` crosses them."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


@dataclass(frozen=True)
class ImagePattern:
    """One allow-list entry: a repository glob, and optionally a tag glob or one digest."""

    text: str
    repository: re.Pattern[str]
    tag: re.Pattern[str] | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImagePattern:
        text = text.strip()
        if text.startswith("**"):
            name, tag, digest = _split(text)
            return cls(text, _glob(name), _glob(tag) if tag is not None else None, digest)
        # Validate the shape with every glob character replaced by a letter: the positions of
        # '/', ':' and '@' are the same, so the split below is the one the reference gets.
        try:
            parse_reference(re.sub(r"[*?]", "x", text))
        except ImageError as exc:
            raise ImageError(f"allowed image pattern {text!r}: {exc}") from None
        name, tag, digest = _split(text)
        domain, path = _split_domain(name)
        return cls(text, _glob(f"{domain}/{path}"),
                   _glob(tag) if tag is not None else None, digest)

    def admits(self, ref: ImageRef) -> bool:
        if not self.repository.fullmatch(ref.repository):
            return False
        if self.digest is not None:
            return ref.digest == self.digest
        if self.tag is not None:
            tag = ref.effective_tag
            return ref.digest is None and tag is not None and bool(self.tag.fullmatch(tag))
        return True


@dataclass(frozen=True)
class AllowList:
    """The images the operator runs: its own default image, and what the patterns admit."""

    patterns: tuple[ImagePattern, ...]
    default_image: str | None = None

    @classmethod
    def parse(cls, patterns: str | Iterable[str], default_image: str | None = None
              ) -> AllowList:
        """From a comma-separated string (the flag) or a list. With no pattern at all, the
        repository of ``default_image`` (every tag of the operator's own jobs image)."""
        items = patterns.split(",") if isinstance(patterns, str) else list(patterns)
        texts = [p.strip() for p in items if p.strip()]
        if not texts and default_image:
            ref = parse_reference(default_image)
            texts = [ref.repository]
        return cls(tuple(ImagePattern.parse(t) for t in texts), default_image)

    def describe(self) -> str:
        return ", ".join(p.text for p in self.patterns) or "(none)"

    def refusal(self, image: str) -> str | None:
        """None when ``image`` may run; otherwise the message for a human saying why not."""
        if self.default_image is not None and image == self.default_image:
            return None
        try:
            ref = parse_reference(image)
        except ImageError as exc:
            return f"spec.image {image!r} is not a valid image reference: {exc}"
        if any(p.admits(ref) for p in self.patterns):
            return None
        return (f"spec.image {image!r} ({ref}) is not allowed: this operator runs only images"
                f" matching {self.describe()}. Use the default image (leave spec.image unset),"
                " or ask the platform team to add the image to the chart's jobs.allowedImages"
                " (--allowed-images)")

    def admits(self, image: str) -> bool:
        return self.refusal(image) is None


def image_check(allowed: AllowList) -> Check:
    """The allow-list as a reconcile check: a foreign ``spec.image`` is refused with
    ``ImageNotAllowed`` (Ready=False, a Warning event, the CronJob suspended or never made)."""

    def check(spec: CronTaskSpec, _: JobDefaults) -> Refusal | None:
        if spec.image is None:
            return None
        message = allowed.refusal(spec.image)
        return None if message is None else Refusal(IMAGE_NOT_ALLOWED, message)

    return check
