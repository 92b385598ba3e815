"""PEP 440 version keys and half-open ranges, stdlib only.

`import sftrl_patches` must not import third-party modules, so `packaging` is not used here;
tests check this module's ordering against `packaging.version`.
"""
import re

_VERSION_RE = re.compile(
    r"""^\s*v?
    (?:(?P<epoch>\d+)!)?
    (?P<release>\d+(?:\.\d+)*)
    (?:[-_.]?(?P<pre_label>a|alpha|b|beta|c|rc|pre|preview)[-_.]?(?P<pre_n>\d+)?)?
    (?P<post>-(?P<post_n1>\d+)|[-_.]?(?:post|rev|r)[-_.]?(?P<post_n2>\d+)?)?
    (?P<dev>[-_.]?dev[-_.]?(?P<dev_n>\d+)?)?
    (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?
    \s*$""",
    re.VERBOSE | re.IGNORECASE,
)

_PRE_RANK = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}
_INF = float("inf")


class InvalidVersion(ValueError):
    pass


class Version:
    """A parsed version that sorts like `packaging.version.Version` (local labels ignored)."""

    __slots__ = ("text", "release", "key", "local", "is_prerelease")

    def __init__(self, text):
        match = _VERSION_RE.match(text or "")
        if not match:
            raise InvalidVersion(f"not a PEP 440 version: {text!r}")
        self.text = text.strip()
        release = tuple(int(part) for part in match.group("release").split("."))
        while len(release) > 1 and release[-1] == 0:
            release = release[:-1]
        self.release = release
        self.local = match.group("local")
        epoch = int(match.group("epoch") or 0)
        pre_label = match.group("pre_label")
        pre = (_PRE_RANK[pre_label.lower()], int(match.group("pre_n") or 0)) if pre_label else None
        post = int(match.group("post_n1") or match.group("post_n2") or 0) if match.group("post") else None
        dev = int(match.group("dev_n") or 0) if match.group("dev") else None
        # Sort rules of PEP 440: X.devN < X.aN < X < X.postN; a dev release of a pre/post sorts just before it.
        if pre is None and post is None and dev is not None:
            pre_key = (-1, 0)
        elif pre is None:
            pre_key = (_INF, 0)
        else:
            pre_key = pre
        post_key = post if post is not None else -1
        dev_key = dev if dev is not None else _INF
        self.key = (epoch, release, pre_key, post_key, dev_key)
        self.is_prerelease = pre is not None or dev is not None

    def __repr__(self):
        return f"Version({self.text!r})"

    def __str__(self):
        return self.text

    def _cmp_key(self, other):
        if isinstance(other, str):
            other = Version(other)
        if not isinstance(other, Version):
            return NotImplemented
        return other.key

    def __eq__(self, other):
        key = self._cmp_key(other)
        return key is not NotImplemented and self.key == key

    def __lt__(self, other):
        return self.key < self._cmp_key(other)

    def __le__(self, other):
        return self.key <= self._cmp_key(other)

    def __gt__(self, other):
        return self.key > self._cmp_key(other)

    def __ge__(self, other):
        return self.key >= self._cmp_key(other)

    def __hash__(self):
        return hash(self.key)


def parse(text):
    """Version for `text`, or None when it is missing or not a PEP 440 string."""
    try:
        return Version(text)
    except (InvalidVersion, TypeError):
        return None


class VersionRange:
    """The half-open range `>=low,<high`; pre-releases of `high` (e.g. 0.19.0rc1) fall inside it."""

    def __init__(self, low=None, high=None):
        self.low = Version(low) if low else None
        self.high = Version(high) if high else None

    def __contains__(self, version):
        if version is None:
            return False
        if isinstance(version, str):
            version = Version(version)
        if self.low is not None and version < self.low:
            return False
        if self.high is not None and version >= self.high:
            return False
        return True

    def __str__(self):
        parts = []
        if self.low is not None:
            parts.append(f">={self.low}")
        if self.high is not None:
            parts.append(f"<{self.high}")
        return ",".join(parts) or "any"

    def __repr__(self):
        return f"VersionRange({str(self)!r})"
