"""Camera sources: URL validation, credential injection, redaction and probing.

Credentials are stored apart from the URL (in the camera subentry) and are only put into the URL
at the moment a connection is opened, so that nothing we log or show ever carries them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
import logging
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import av
import av.error

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_LOGGER = logging.getLogger(__name__)

SUPPORTED_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https"})

# Reasons shared by the config flow and the stream hub (they are also translation keys).
REASON_CANNOT_CONNECT = "cannot_connect"
REASON_INVALID_AUTH = "invalid_auth"
REASON_INVALID_URL = "invalid_url"
REASON_NO_VIDEO = "no_video"
# The server answered but has no stream at this path: RTSP/HTTP 404, or another 4xx such as
# RTSP's 454 "Session Not Found" (FFmpeg reports every other 4xx alike).
REASON_STREAM_NOT_FOUND = "stream_not_found"


class SourceError(Exception):
    """A source could not be used; `reason` is one of the REASON_* keys."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class CameraSource:
    """Where a camera's video comes from. The URL itself never holds credentials."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        """Return a repr fit for logs: no password, and the URL redacted."""
        return redacted_repr(self)

    def connect_url(self) -> str:
        """Return the URL with credentials injected; use it only to open a connection."""
        if not self.username:
            return self.url
        parts = urlsplit(self.url)
        host = parts.netloc.rsplit("@", 1)[-1]
        userinfo = quote(self.username, safe="")
        if self.password:
            userinfo += ":" + quote(self.password, safe="")
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))

    @property
    def redacted_url(self) -> str:
        """Return the URL safe for logs."""
        return redact_url(self.url)

    def redact(self, text: str) -> str:
        """Return `text` (an FFmpeg error, say) without this source's secrets or those of any URL.

        FFmpeg's messages usually quote the URL it was given, credentials included, and
        `redact_url` takes care of that; the known password is also removed wherever else
        it might show up.
        """
        return Redactor((self.password, *url_secrets(self.url)))(text)


# ----- redaction ---------------------------------------------------------------------------------
#
# Everything we log, raise, store in diagnostics or show goes through `redact_url`, or through a
# `Redactor`, which adds the secrets it knows. Where a rule has to guess, it errs towards hiding
# too much: a redacted URL may lose some detail, but never shows a secret.
#
# - A URL is a scheme and "://" up to the next whitespace, '"', "<" or ">": characters that are
#   never raw in a URL but delimit one in messages, JSON and HTML. (Spaces are not allowed in a
#   camera URL anyway, see `validate_url`.)
# - The user info runs from "://" to the LAST "@" of the URL and becomes "***". So a password
#   with a raw "@", ":", "/", "?" or "#" is hidden whole. (RFC 3986, urlsplit and FFmpeg end the
#   host part at the first "/", which would show the end of a password holding a raw "/".) The
#   price: a URL with a raw "@" in its path or query, rare for cameras, loses what comes before
#   that "@" as well.
# - A parameter whose name looks like a secret (`_is_secret_name`, case-insensitive) keeps its
#   name; its value, up to the next "&" or the end of the URL, becomes "***". A fragment after
#   such a value goes with it: a raw "#" may be part of the password. (A raw "&" cannot be told
#   from the next parameter; only a `Redactor` that knows the secret hides what follows it.)
#   Parameters are recognised after "?", "&", ";", "/" and "_", which also covers logins written
#   into the path by some DVRs (`/user=admin&password=x&channel=1`, `.../user=admin_password=x_…`).
# - Usernames are no secret: `user=admin` stays, it tells which login a camera uses. The user
#   info's name goes, because the user info is replaced as a whole.
# - A URL percent-encoded inside another one (`?src=rtsp%3A%2F%2Fuser%3Apass%40host`, the way
#   go2rtc's API takes a source) gets the same treatment, with "%40", "%3F", "%26" and "%3D" in
#   place of "@", "?", "&" and "=".

_SECRET_NAME_WORDS = (
    "pass",  # password, passwd, pass, passphrase, passcode
    "pwd",
    "token",  # token, access_token, x-amz-security-token
    "secret",  # secret, client_secret
    "credential",
    "auth",  # auth, authkey, authorization, oauth_…
    "session",  # session, sessionid, jsessionid
    "signature",
    "apikey",
)
# Secret only as a whole word of the name: "key" yes (api_key, accessKey), "keyframe" no.
_SECRET_NAME_PARTS = frozenset({"key", "sig", "sid", "pw", "psk", "jwt", "hmac"})
_NAME_PARTS_RE = re.compile(r"[_.-]|(?<=[a-z])(?=[A-Z])")
# A parameter's name and its "=", raw and percent-encoded. The bounded name length keeps the
# search linear on long runs like "a_a_a_…" (a name may start after every "_").
_NAME = r"(?P<name>[A-Za-z][A-Za-z0-9_.-]{0,63})"
_RAW_PARAM_RE = re.compile(rf"(?<=[?&;/_]){_NAME}=")
_ENCODED_PARAM_RE = re.compile(
    rf"(?:(?<=%3[Ff])|(?<=%26)|(?<=%3[Bb])|(?<=%2[Ff])|(?<=_)){_NAME}%3[Dd]"
)
# A scheme starts at the beginning of a run of scheme characters (or right after a "%XX"
# escape). Anchoring it there also keeps the search linear on long runs of letters.
_SCHEME = r"(?:(?<![A-Za-z0-9+.-])|(?<=%[0-9A-Fa-f]{2}))[A-Za-z][A-Za-z0-9+.-]*"
_RAW_URL_RE = re.compile(rf"(?P<scheme>{_SCHEME}://)(?P<rest>[^\s\"<>]*)")
# A raw "&" ends an encoded URL: it is the next parameter of the URL that carries it.
_ENCODED_URL_RE = re.compile(rf"(?P<scheme>{_SCHEME}%3[Aa]%2[Ff]%2[Ff])(?P<rest>[^\s\"<>&]*)")
MASK = "***"
# Known secrets shorter than this are not replaced in free text: they would hit ordinary words
# and numbers. (Inside URLs, the rules above hide them whatever their length.)
MIN_SECRET_LENGTH = 4


@dataclass(frozen=True, slots=True)
class _Syntax:
    """How URLs look in text: raw, or percent-encoded inside another URL."""

    url: re.Pattern[str]
    at: str  # ends the user info
    colon: re.Pattern[str]  # splits the user info into name and password
    param: re.Pattern[str]
    value_end: re.Pattern[str]


_RAW = _Syntax(_RAW_URL_RE, "@", re.compile(":"), _RAW_PARAM_RE, re.compile("&"))
_ENCODED = _Syntax(
    _ENCODED_URL_RE, "%40", re.compile("%3[Aa]"), _ENCODED_PARAM_RE, re.compile("&|%26")
)


def _is_secret_name(name: str) -> bool:
    """Return True for a parameter name that looks like it holds a secret."""
    lowered = name.lower()
    if any(word in lowered for word in _SECRET_NAME_WORDS):
        return True
    return any(part.lower() in _SECRET_NAME_PARTS for part in _NAME_PARTS_RE.split(name))


def _secret_values(rest: str, syntax: _Syntax) -> Iterator[tuple[int, int]]:
    """Yield the (start, end) of every non-empty secret parameter value in a URL's `rest`."""
    end = 0
    for match in syntax.param.finditer(rest):
        if match.start() < end or not _is_secret_name(match["name"]):
            continue  # inside the previous secret value, or no secret
        value_end = syntax.value_end.search(rest, match.end())
        end = value_end.start() if value_end else len(rest)
        if end > match.end():
            yield match.end(), end


def _redact_rest(rest: str, syntax: _Syntax) -> str:
    """Redact what follows a URL's "://": the user info first, then secret parameters.

    In this order, an "@" inside a parameter value can only widen the user info (hiding more),
    never let part of a password escape.
    """
    at = rest.rfind(syntax.at)
    if at > 0:
        rest = MASK + rest[at:]
    pieces: list[str] = []
    pos = 0
    for start, end in _secret_values(rest, syntax):
        pieces += (rest[pos:start], MASK)
        pos = end
    pieces.append(rest[pos:])
    return "".join(pieces)


def _redact_urls(text: str, syntax: _Syntax) -> str:
    return syntax.url.sub(lambda match: match["scheme"] + _redact_rest(match["rest"], syntax), text)


def redact_url(text: str) -> str:
    """Return `text` (a URL, or free text holding any number of them) without credentials.

    User info becomes `***`, and so does the value of every parameter whose name looks like a
    secret; see the rules above.
    """
    return _redact_urls(_redact_urls(text, _RAW), _ENCODED)


def url_secrets(url: str) -> list[str]:
    """Return the secrets written into `url`: its password and secret parameter values.

    Each both as written and decoded, so that a `Redactor` finds them in either form.
    """
    found: list[str] = []
    for syntax in (_RAW, _ENCODED):
        for match in syntax.url.finditer(url):
            rest = match["rest"]
            at = rest.rfind(syntax.at)
            if at > 0 and (colon := syntax.colon.search(rest, 0, at)):
                found.append(rest[colon.end() : at])
            found += (rest[start:end] for start, end in _secret_values(rest, syntax))
    return [value for secret in found for value in {secret, unquote(secret)} if value]


def _hex_regex(byte: int) -> str:
    """Match one byte percent-encoded, in either hex case."""
    return "%(?:25)*" + "".join(
        f"[{digit}{digit.lower()}]" if digit.isalpha() else digit for digit in f"{byte:02X}"
    )


def _secret_regex(secret: str) -> str:
    """Match `secret` with every character raw or percent-encoded (repeatedly, any hex case).

    Clients differ in what they encode (`:` and `/` in a query, say) and in hex case; a URL
    carried in another URL's query is encoded twice ("%" becomes "%25"); a form encodes a space
    as "+". One pattern covers all of these, and any mix of them.
    """
    pieces = []
    for char in secret:
        choices = [re.escape(char), "".join(_hex_regex(byte) for byte in char.encode())]
        if char == " ":
            choices.append(r"\+")
        pieces.append(f"(?:{'|'.join(choices)})")
    return "".join(pieces)


class Redactor:
    """Removes credentials from text: those of every URL (`redact_url`), and known secrets.

    Known secrets are found raw and percent-encoded, in any of the ways `_secret_regex` allows,
    and replaced first: a secret with a raw "&", say, would otherwise leave its end behind a
    redacted `password=` parameter.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        """Start with some secrets."""
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Remember more secrets (short values are ignored: they would redact ordinary text)."""
        new = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH} - self._secrets
        if not new:
            return
        self._secrets |= new
        # Longest first: where two secrets start at the same place, the longer one is hidden.
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(_secret_regex(secret) for secret in ordered))

    def __call__(self, text: str) -> str:
        """Return `text` without credentials."""
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return redact_url(text)


def redacted_repr(obj: DataclassInstance) -> str:
    """Return a dataclass's repr fit for logs.

    Fields declared with `repr=False` (secrets) are left out, as in the standard repr, and every
    string, also inside tuples, lists and dicts, goes through `redact_url`. Classes holding a URL
    use it as their `__repr__`: a URL may carry a password in its user info or query.
    """
    shown = ", ".join(
        f"{item.name}={_redacted_value_repr(getattr(obj, item.name))}"
        for item in fields(obj)
        if item.repr
    )
    return f"{type(obj).__qualname__}({shown})"


def _redacted_value_repr(value: object) -> str:
    if isinstance(value, str):
        return repr(redact_url(value))
    if isinstance(value, tuple):
        items = [_redacted_value_repr(item) for item in value]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if isinstance(value, list):
        return f"[{', '.join(_redacted_value_repr(item) for item in value)}]"
    if isinstance(value, dict):
        pairs = (
            f"{_redacted_value_repr(key)}: {_redacted_value_repr(item)}"
            for key, item in value.items()
        )
        return f"{{{', '.join(pairs)}}}"
    return repr(value)


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """Move credentials written into a URL out of it: (url, username, password)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    username, _, password = userinfo.partition(":")
    return (
        urlunsplit(parts._replace(netloc=host)),
        unquote(username) or None,
        unquote(password) or None,
    )


def normalized_url(url: str) -> str:
    """Return a comparable form of a source URL (for duplicate detection)."""
    parts = urlsplit(url.strip())
    host = parts.netloc.rsplit("@", 1)[-1].lower()
    return urlunsplit((parts.scheme.lower(), host, parts.path or "/", parts.query, ""))


def validate_url(url: str) -> str:
    """Return the stripped URL or raise SourceError(invalid_url)."""
    url = url.strip()
    if not url or any(ch.isspace() for ch in url):
        raise SourceError(REASON_INVALID_URL, "empty URL or URL with spaces")
    if "${" in url:
        # go2rtc (and shells) would replace `${NAME}` with a variable of Home Assistant's
        # host: a URL could carry its secrets to the camera's host. Write a literal $ as %24.
        raise SourceError(REASON_INVALID_URL, "URL with ${, which would be replaced")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as err:
        # Not str(err): urlsplit quotes the bad port, which is a piece of the password when a
        # password holds a raw "/" ("rtsp://user:pa/ss@host" has the port "pa").
        raise SourceError(REASON_INVALID_URL, "malformed host or port") from err
    if parts.scheme.lower() not in SUPPORTED_SCHEMES:
        raise SourceError(REASON_INVALID_URL, f"unsupported scheme {parts.scheme!r}")
    if not parts.hostname:
        raise SourceError(REASON_INVALID_URL, "no host")
    if port == 0:
        raise SourceError(REASON_INVALID_URL, "port 0")
    return url


def open_options(url: str, io_timeout: float | None = None) -> dict[str, str]:
    """FFmpeg demuxer options for a source URL.

    RTSP goes over TCP (UDP loses packets on busy networks and does not cross NAT). Probing is cut
    down because cameras send SPS/PPS in-band or in the SDP; the default probe costs ~1 s per open.
    `io_timeout` (seconds) bounds every connect and read inside FFmpeg itself. Long-running
    readers use it instead of PyAV's `timeout=`, whose interrupt callback takes the GIL on every
    socket read: with many cameras in one process that costs several times the demuxing itself.
    """
    options = {"analyzeduration": "500000", "probesize": "500000", "fflags": "nobuffer"}
    micros = str(int(io_timeout * 1_000_000)) if io_timeout else None
    if url.lower().startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = "tcp"
        options["rtsp_flags"] = "prefer_tcp"
        if micros:
            options["timeout"] = micros  # RTSP's socket I/O timeout (connect included)
    elif micros:
        options["rw_timeout"] = micros
    return options


def classify_error(err: BaseException) -> str:
    """Map an exception from opening or reading a source to a REASON_* key."""
    if isinstance(err, SourceError):
        return err.reason
    if isinstance(err, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return REASON_INVALID_AUTH
    if isinstance(err, av.error.HTTPNotFoundError | av.error.HTTPOtherClientError):
        return REASON_STREAM_NOT_FOUND
    return REASON_CANNOT_CONNECT


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What a probe learned about a source's video."""

    codec: str
    width: int
    height: int
    fps: float | None


def probe_source(source: CameraSource, timeout: float) -> ProbeResult:
    """Open a source once and describe its video stream. Blocking: run it in an executor."""
    validate_url(source.url)
    url = source.connect_url()
    try:
        container = av.open(url, options=open_options(url), timeout=(timeout, min(timeout, 5.0)))
    except Exception as err:  # noqa: BLE001 - PyAV raises many error types; classify them all
        reason = classify_error(err)
        detail = source.redact(str(err))
        _LOGGER.debug("Probe of %s failed (%s): %s", source.redacted_url, reason, detail)
        raise SourceError(reason, detail) from None
    try:
        if not container.streams.video:
            raise SourceError(REASON_NO_VIDEO, "the source has no video stream")
        stream = container.streams.video[0]
        ctx: Any = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate
        return ProbeResult(
            codec=ctx.name,
            width=int(ctx.width or 0),
            height=int(ctx.height or 0),
            fps=float(rate) if rate else None,
        )
    finally:
        container.close()
