"""The image allow-list (crontask_operator.images), by example and by property.

Invariants: parsing any text either yields a reference or raises ImageError, nothing else;
normalising is idempotent and familiar names equal their full form; the allow-list decides any
text without raising, admits only references of an allowed repository (sound: whatever it
admits parses to an admitted repository), a tag pattern never admits a digest, a digest pattern
only that digest, and ``*`` never crosses a ``/``.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from crontask_operator.images import (
    AllowList,
    ImageError,
    ImagePattern,
    ImageRef,
    parse_reference,
)

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


@pytest.mark.parametrize(("text", "expected"), [
    ("crontask-jobs", ImageRef("docker.io", "library/crontask-jobs", None, None)),
    ("crontask-jobs:dev", ImageRef("docker.io", "library/crontask-jobs", "dev", None)),
    ("docker.io/crontask-jobs:dev", ImageRef("docker.io", "library/crontask-jobs", "dev", None)),
    ("index.docker.io/library/x@" + DIGEST_A, ImageRef("docker.io", "library/x", None, DIGEST_A)),
    ("team/app:1", ImageRef("docker.io", "team/app", "1", None)),
    ("localhost/app", ImageRef("localhost", "app", None, None)),
    ("localhost:5000/a/b:c@" + DIGEST_A, ImageRef("localhost:5000", "a/b", "c", DIGEST_A)),
    ("Registry.Example:443/team/app:V1", ImageRef("registry.example:443", "team/app", "V1", None)),
    ("[::1]:5000/app", ImageRef("[::1]:5000", "app", None, None)),
])
def test_parses_and_normalises(text: str, expected: ImageRef) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize("text", [
    "", " crontask-jobs", "crontask-jobs ", "crontask jobs", "Crontask-jobs", "team/App",
    "crontask-jobs:", "crontask-jobs:.x", "crontask-jobs:" + "t" * 129, "a@b@" + DIGEST_A,
    "crontask-jobs@sha256:abc", "crontask-jobs@md5:" + "a" * 32, "crontask-jobs@SHA256:" + "a" * 64,
    "https://registry.example/app", "registry.example/", "registry.example//app", "/app",
    "registry..example/app", "-registry.example/app", "a" * 256, "app\n", "app\x00",
    "\uff43rontask-jobs", "crontask-jobs:d\u00e9v",
])
def test_refuses_what_is_not_a_reference(text: str) -> None:
    with pytest.raises(ImageError):
        parse_reference(text)
    assert "not a valid image reference" in (AllowList.parse((), "crontask-jobs:dev")
                                             .refusal(text) or "")


DEFAULT = AllowList.parse((), "crontask-jobs:dev")


@pytest.mark.parametrize(("image", "admitted"), [
    ("crontask-jobs:dev", True),
    ("crontask-jobs", True),  # :latest of the allowed repository
    ("crontask-jobs:latest", True),
    ("docker.io/library/crontask-jobs:1.2.3", True),
    ("crontask-jobs@" + DIGEST_A, True),
    ("attacker.example/anything:latest", False),
    ("attacker.example/crontask-jobs:dev", False),
    ("crontask-jobs-evil:dev", False),
    ("evil/crontask-jobs:dev", False),
    ("docker.io/library/crontask-jobs/x:dev", False),
])
def test_default_allows_the_repository_of_the_default_image(image: str, admitted: bool) -> None:
    assert DEFAULT.admits(image) is admitted


PATTERNS = AllowList.parse(f"registry.example/team/*, ghcr.io/org/jobs:1.*,"
                           f" quay.io/x@{DIGEST_B}, *.corp.example/**", "crontask-jobs:dev")


@pytest.mark.parametrize(("image", "admitted"), [
    ("registry.example/team/a:1", True),
    ("REGISTRY.EXAMPLE/team/a", True),  # host names are case-insensitive
    ("registry.example/team/a/b:1", False),  # * stays within one component
    ("registry.example/teamx/a", False),
    ("registry.example.evil/team/a", False),
    ("ghcr.io/org/jobs:1.2", True),
    ("ghcr.io/org/jobs:2.0", False),
    ("ghcr.io/org/jobs", False),  # :latest is not 1.*
    (f"ghcr.io/org/jobs:1.2@{DIGEST_A}", False),  # the digest decides what runs, not the tag
    (f"quay.io/x:any@{DIGEST_B}", True),
    (f"quay.io/x@{DIGEST_A}", False),
    ("quay.io/x:any", False),
    ("eu.corp.example/a/b/c:1", True),  # ** crosses components
    ("corp.example/a", False),
    ("crontask-jobs:dev", True),  # the operator's own default image always runs
    ("crontask-jobs:other", False),  # explicit patterns replace the repository default
])
def test_patterns(image: str, admitted: bool) -> None:
    assert PATTERNS.admits(image) is admitted


def test_everything_pattern_and_bad_patterns() -> None:
    assert AllowList.parse("**").admits("any.registry/any/image:any")
    assert not AllowList.parse("**").admits("Not A Reference")
    for bad in ("Bad Pattern", "team/App", "x@sha256:short", "https://x/y"):
        with pytest.raises(ImageError, match="allowed image pattern"):
            AllowList.parse(bad)
    empty = AllowList.parse(" , ", "crontask-jobs:dev")
    assert empty.describe() == "docker.io/library/crontask-jobs"


# --- properties -----------------------------------------------------------------------------

LOWER = string.ascii_lowercase + string.digits
components = st.builds(
    lambda head, rest: head + "".join(rest),
    st.text(LOWER, min_size=1, max_size=6),
    st.lists(st.builds(str.__add__, st.sampled_from([".", "_", "__", "-", "--"]),
                       st.text(LOWER, min_size=1, max_size=4)), max_size=2))
paths = st.lists(components, min_size=1, max_size=3).map("/".join)
hosts = st.one_of(
    st.none(),
    st.sampled_from(["localhost", "localhost:5000", "docker.io", "index.docker.io"]),
    st.builds(lambda a, b, port: f"{a}.{b}{port}", st.text(LOWER, min_size=1, max_size=8),
              st.text(string.ascii_lowercase, min_size=2, max_size=4),
              st.just("") | st.integers(1, 65535).map(":{}".format)),
)
tags = st.builds(str.__add__, st.sampled_from(list(string.ascii_letters + string.digits + "_")),
                 st.text(string.ascii_letters + string.digits + "_.-", max_size=20))
digests = st.text("0123456789abcdef", min_size=64, max_size=64).map("sha256:{}".format)


@st.composite
def references(draw: st.DrawFn) -> str:
    host, path = draw(hosts), draw(paths)
    # Without a host, a first component with a "." would be read as one (as the runtime does).
    assume(host or "/" not in path or "." not in path.split("/")[0])
    name = f"{host}/{path}" if host else path
    assume(len(name) <= 255)
    tag = draw(st.none() | tags)
    digest = draw(st.none() | digests)
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


@given(st.text(max_size=300))
def test_any_text_parses_or_raises_image_error(text: str) -> None:
    try:
        ref = parse_reference(text)
    except ImageError:
        return
    assert parse_reference(str(ref)) == ref


@given(st.text(max_size=300) | references())
def test_allow_list_decides_any_text_and_is_sound(text: str) -> None:
    verdict = DEFAULT.refusal(text)
    assert verdict == DEFAULT.refusal(text), "deterministic"
    if verdict is None:
        assert parse_reference(text).repository == "docker.io/library/crontask-jobs"
    else:
        assert isinstance(verdict, str) and verdict


@given(references())
def test_normalising_is_idempotent(text: str) -> None:
    ref = parse_reference(text)
    assert parse_reference(str(ref)) == ref
    assert str(ref).startswith(ref.domain + "/")


@given(components, st.none() | tags)
def test_familiar_names_are_their_full_names(name: str, tag: str | None) -> None:
    suffix = f":{tag}" if tag else ""
    full = {parse_reference(f"{prefix}{name}{suffix}")
            for prefix in ("", "docker.io/", "docker.io/library/", "index.docker.io/library/",
                           "DOCKER.IO/library/")}
    assert full == {ImageRef("docker.io", f"library/{name}", tag, None)}


@given(references(), references())
def test_repository_pattern_admits_its_repository_and_nothing_else(mine: str,
                                                                   other: str) -> None:
    ref, other_ref = parse_reference(mine), parse_reference(other)
    pattern = ImagePattern.parse(ref.repository)
    assert pattern.admits(ref)
    assert pattern.admits(ImageRef(ref.domain, ref.path, "any-tag", None))
    assert pattern.admits(ImageRef(ref.domain, ref.path, None, DIGEST_A))
    if other_ref.repository != ref.repository:
        assert not pattern.admits(other_ref)


@given(references(), tags, digests)
def test_tag_pattern_never_admits_a_digest_and_digest_pattern_only_its_own(
        text: str, tag: str, digest: str) -> None:
    ref = parse_reference(text)
    by_tag = ImagePattern.parse(f"{ref.repository}:{tag}")
    assert by_tag.admits(ImageRef(ref.domain, ref.path, tag, None))
    assert not by_tag.admits(ImageRef(ref.domain, ref.path, tag, digest))
    by_digest = ImagePattern.parse(f"{ref.repository}@{digest}")
    assert by_digest.admits(ImageRef(ref.domain, ref.path, tag, digest))
    assert by_digest.admits(ImageRef(ref.domain, ref.path, None, digest))
    assert not by_digest.admits(ImageRef(ref.domain, ref.path, tag, None))
    if ref.digest is not None and ref.digest != digest:
        assert not by_digest.admits(ref)


@given(paths, components)
def test_single_star_never_crosses_a_slash(path: str, extra: str) -> None:
    pattern = ImagePattern.parse("registry.example/team/*")
    one = parse_reference(f"registry.example/team/{extra}")
    deeper = parse_reference(f"registry.example/team/{extra}/{path}")
    assert pattern.admits(one)
    assert not pattern.admits(deeper)
    assert ImagePattern.parse("registry.example/team/**").admits(deeper)
