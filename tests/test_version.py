import itertools

import pytest
from packaging.version import Version as Reference

from sftrl_patches._version import Version, VersionRange, parse

SAMPLES = ["0.18.9", "0.18.9+cu121", "0.19.0rc1", "0.19.0", "0.16.4.dev0", "0.16.4", "0.16.4a1", "0.16.4b2",
           "0.16.4.post1", "0.16.4.post1.dev2", "0.16.4a1.dev0", "1.0", "1.0.0", "0.19.0.dev1", "1!0.1",
           "0.16.4-1", "0.16.4rc2", "v0.15.1", "0.15.10", "0.15.9"]


@pytest.mark.parametrize("a, b", list(itertools.combinations(SAMPLES, 2)))
def test_ordering_matches_packaging(a, b):
    ra, rb = Reference(a), Reference(b)
    if ra.public == rb.public:  # local labels do not order releases here
        assert Version(a) == Version(b)
    else:
        assert (Version(a) < Version(b)) == (ra < rb)
        assert (Version(a) > Version(b)) == (ra > rb)


def test_range_membership():
    window = VersionRange("0.15.2", "0.19.0")
    assert "0.18.9+cu121" in window
    assert "0.19.0rc1" in window        # a pre-release of the fixed release is not the fix
    assert "0.16.4.dev0" in window
    assert "0.15.2.dev0" not in window  # sorts before 0.15.2
    assert "0.19.0" not in window and "0.15.1" not in window
    assert None not in window


@pytest.mark.parametrize("text", [None, "", "not a version", "1.2.x"])
def test_unparseable_versions_are_none(text):
    assert parse(text) is None
