"""DATABASE_URL, parsed once, strictly, into what the driver is given and what may be shown.

Users give a libpq URL (`postgresql://user:password@host:5432/db?sslmode=require`), the form
every PostgreSQL tool accepts. It is parsed here rather than by SQLAlchemy or the driver, so
that the password is known exactly in every form libpq accepts (user-info, a `password` query
parameter, percent-encoded or raw), the driver receives the parts as separate keywords (never
a string it might echo), and a URL that cannot be parsed safely is refused before anything is
printed. Messages about a bad URL never quote any part of it: a garbled URL may hold a
password anywhere.

What is accepted, beyond RFC 3986, and why:
- raw `@` and `:` in the user-info (a password with an unencoded `@` is common): the user-info
  ends at the *last* `@` before the host, the user name at the first `:`;
- raw `/`, `?` and `@` end the host part, so an `@` in the database name or after a `/` in the
  host part is refused as ambiguous: percent-encode it (`%40`);
- several hosts (`h1:5432,h2:5433`), IPv6 in brackets, a Unix-socket directory as a
  percent-encoded host, and every libpq connection keyword as a query parameter (a later one
  wins, and one naming a URL part overrides it, as in libpq), with the enumerated and numeric
  ones checked here. Nothing else (PGPASSWORD, PGPASSFILE, PGHOST, a service file) is read:
  what the URL leaves out is left to libpq.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote

SCHEMES: Final = ("postgresql", "postgres", "postgresql+psycopg")

LIBPQ_KEYWORDS: Final = frozenset({
    "service", "user", "password", "passfile", "channel_binding", "connect_timeout", "dbname",
    "host", "hostaddr", "port", "client_encoding", "options", "application_name",
    "fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval",
    "keepalives_count", "tcp_user_timeout", "sslmode", "sslnegotiation", "sslcompression",
    "sslcert", "sslkey", "sslcertmode", "sslpassword", "sslrootcert", "sslcrl", "sslcrldir",
    "sslsni", "requirepeer", "require_auth", "min_protocol_version", "max_protocol_version",
    "ssl_min_protocol_version", "ssl_max_protocol_version", "gssencmode", "krbsrvname",
    "gsslib", "gssdelegation", "replication", "target_session_attrs", "load_balance_hosts",
    "scram_client_key", "scram_server_key", "oauth_issuer", "oauth_client_id",
    "oauth_client_secret", "oauth_scope", "sslkeylogfile",
})
"""The connection keywords of the libpq the driver ships (a unit test compares them)."""

SECRET_KEYWORDS: Final = frozenset({
    "password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key",
})
"""Keywords whose value is a credential: masked wherever they are shown."""

CHOICES: Final = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "sslnegotiation": ("postgres", "direct"),
    "sslcertmode": ("disable", "allow", "require"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby",
                             "prefer-standby"),
    "load_balance_hosts": ("disable", "random"),
    "sslcompression": ("0", "1"),
    "sslsni": ("0", "1"),
    "keepalives": ("0", "1"),
    "ssl_min_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "ssl_max_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
}
INTEGER_KEYWORDS: Final = ("connect_timeout", "keepalives_idle", "keepalives_interval",
                           "keepalives_count", "tcp_user_timeout")
MAX_URL_CHARS: Final = 8192

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_PERCENT: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_SAFE_USERINFO: Final = "!$&'()*+,;="  # sub-delims stay readable in a rendered URL


class DatabaseUrlError(ValueError):
    """DATABASE_URL cannot be used; the message never quotes any part of it."""


@dataclass(frozen=True)
class DatabaseTarget:
    """Where to connect, as libpq keywords: the one object the jobs build engines from."""

    scheme: str = "postgresql"
    hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    dbname: str | None = None
    params: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """Query parameters, decoded, one per keyword (the last one given), in first-seen order."""
    raw_secrets: tuple[str, ...] = field(default=(), repr=False)
    """Each credential as it was spelled in the URL (encoded or not), for masking echoes.
    (The fields that may hold a credential are left out of the repr.)"""

    def keywords(self) -> dict[str, str]:
        """What the driver is given: URL parts first, query parameters over them (libpq's
        order of precedence). Missing parts stay missing, so libpq's own defaults apply."""
        out: dict[str, str] = {}
        if any(self.hosts):
            out["host"] = ",".join(self.hosts)
        if any(self.ports):
            out["port"] = ",".join(self.ports)
        if self.user:
            out["user"] = self.user
        if self.password is not None:
            out["password"] = self.password
        if self.dbname:
            out["dbname"] = self.dbname
        out.update(self.params)
        return out

    def secrets(self) -> tuple[str, ...]:
        """Every credential this URL carries, decoded and as spelled, without duplicates."""
        found = [self.password] if self.password else []
        found += [v for k, v in self.params if k in SECRET_KEYWORDS and v]
        found += [s for s in self.raw_secrets if s]
        return tuple(dict.fromkeys(found))

    def render(self, *, masked: bool = True) -> str:
        """The URL again; with `masked`, every credential is `***` (the default: for humans)."""
        userinfo = ""
        if self.user is not None or self.password is not None:
            userinfo = quote(self.user or "", safe=_SAFE_USERINFO)
            if self.password is not None:
                userinfo += ":" + ("***" if masked else quote(self.password, safe=""))
            userinfo += "@"
        hosts = ",".join(
            _render_host(host) + (f":{port}" if port else "")
            for host, port in zip(self.hosts, self.ports, strict=True)
        )
        path = "/" + quote(self.dbname, safe="") if self.dbname else ""
        query = "&".join(
            f"{key}={'***' if masked and key in SECRET_KEYWORDS else quote(value, safe='')}"
            for key, value in self.params
        )
        return f"{self.scheme}://{userinfo}{hosts}{path}" + (f"?{query}" if query else "")


def _render_host(host: str) -> str:
    if ":" in host:
        return f"[{host}]"
    return quote(host, safe="")


def _decode(text: str, what: str) -> str:
    """libpq's percent-decoding: %XX only, no %00, and the bytes must be UTF-8."""
    if "%" in _PERCENT.sub("", text):
        raise DatabaseUrlError(f"DATABASE_URL: {what} has a '%' that is not followed by two"
                               " hexadecimal digits (percent-encode '%' as %25)")
    data = bytearray()
    pos = 0
    for match in _PERCENT.finditer(text):
        data += text[pos:match.start()].encode("utf-8", "surrogatepass")
        byte = int(match.group(1), 16)
        if byte == 0:
            raise DatabaseUrlError(f"DATABASE_URL: {what} holds %00, which libpq refuses")
        data.append(byte)
        pos = match.end()
    data += text[pos:].encode("utf-8", "surrogatepass")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatabaseUrlError(f"DATABASE_URL: {what} is not valid UTF-8 once decoded") from exc


def _split_hosts(netloc: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    hosts: list[str] = []
    ports: list[str] = []
    for item in netloc.split(","):
        if item.startswith("["):
            end = item.find("]")
            if end < 0:
                raise DatabaseUrlError("DATABASE_URL: a host has an unbalanced '[' (IPv6 "
                                       "addresses are written [::1]:5432)")
            host, rest = item[1:end], item[end + 1:]
            if "[" in host or "]" in rest or "[" in rest:
                raise DatabaseUrlError("DATABASE_URL: a host has unbalanced brackets")
            if rest and not rest.startswith(":"):
                raise DatabaseUrlError("DATABASE_URL: a bracketed host must be followed by "
                                       "':port', ',' or '/'")
            port = rest[1:]
        else:
            if "[" in item or "]" in item:
                raise DatabaseUrlError("DATABASE_URL: a host has unbalanced brackets")
            host, _, port = item.partition(":")
            host = _decode(host, "a host name")
        if port and not _is_port(port):
            raise DatabaseUrlError("DATABASE_URL: a port is not a number from 1 to 65535")
        hosts.append(host)
        ports.append(port)
    return tuple(hosts), tuple(ports)


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) < 65536


def _check_param(key: str, value: str) -> None:
    choices = CHOICES.get(key)
    if choices is not None and value not in choices:
        raise DatabaseUrlError(f"DATABASE_URL: query parameter {key} must be one of "
                               f"{', '.join(choices)}")
    if key in INTEGER_KEYWORDS and not (value.isascii() and value.isdigit() and len(value) < 10):
        raise DatabaseUrlError(f"DATABASE_URL: query parameter {key} must be a whole number")
    if key == "port":
        for port in value.split(","):
            if port and not _is_port(port):
                raise DatabaseUrlError("DATABASE_URL: a port is not a number from 1 to 65535")


def _parse_query(query: str) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    params: dict[str, str] = {}
    raw_secrets: list[str] = []
    for position, item in enumerate(query.split("&"), start=1):
        raw_key, sep, raw_value = item.partition("=")
        if not sep or not raw_key:
            raise DatabaseUrlError(f"DATABASE_URL: query parameter {position} is not key=value")
        key = _decode(raw_key, f"query parameter {position}")
        if key not in LIBPQ_KEYWORDS:
            if key == "ssl":  # JDBC's spelling, which libpq accepts too
                if _decode(raw_value, "query parameter ssl") != "true":
                    raise DatabaseUrlError("DATABASE_URL: query parameter ssl must be true")
                key, raw_value = "sslmode", "require"
            else:
                raise DatabaseUrlError(
                    f"DATABASE_URL: query parameter {position} is not a libpq connection "
                    "keyword (names are not quoted here: see libpq's 'Parameter Key Words')")
        value = _decode(raw_value, f"query parameter {key}")
        _check_param(key, value)
        if key in SECRET_KEYWORDS:
            raw_secrets.append(raw_value)
        params.pop(key, None)  # a later value wins, and takes the later place
        params[key] = value
    return tuple(params.items()), tuple(raw_secrets)


def parse_database_url(text: str) -> DatabaseTarget:
    """Parse a libpq URL. Raises DatabaseUrlError (and nothing else) for anything unusable."""
    raw = text.strip()
    if not raw:
        raise DatabaseUrlError("DATABASE_URL is empty")
    if len(raw) > MAX_URL_CHARS:
        raise DatabaseUrlError(f"DATABASE_URL is longer than {MAX_URL_CHARS} characters")
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme not in SCHEMES:
        raise DatabaseUrlError("DATABASE_URL must start with postgresql:// or postgres:// "
                               "(postgresql://user:password@host:5432/db)")
    if _CONTROL.search(raw):
        raise DatabaseUrlError("DATABASE_URL holds a control character (a newline?)")

    end = len(rest)
    for stop in ("/", "?"):
        found = rest.find(stop)
        if found >= 0:
            end = min(end, found)
    authority, tail = rest[:end], rest[end:]
    path, _, query = tail.partition("?")
    if "@" in path:
        raise DatabaseUrlError("DATABASE_URL has an '@' after the host: percent-encode '@', "
                               "'/' and '?' in user names, passwords and database names "
                               "(%40, %2F, %3F)")

    user = password = None
    raw_secrets: list[str] = []
    userinfo, at, netloc = authority.rpartition("@")
    if at:
        raw_user, colon, raw_password = userinfo.partition(":")
        user = _decode(raw_user, "the user name")
        if colon:
            password = _decode(raw_password, "the password")
            raw_secrets.append(raw_password)
    hosts, ports = _split_hosts(netloc)
    dbname = _decode(path[1:], "the database name") if path.startswith("/") else None
    params: tuple[tuple[str, str], ...] = ()
    if query:
        params, query_secrets = _parse_query(query)
        raw_secrets += query_secrets
    return DatabaseTarget(
        scheme="postgresql" if scheme == "postgresql+psycopg" else scheme,
        hosts=hosts, ports=ports, user=user, password=password, dbname=dbname or None,
        params=params, raw_secrets=tuple(raw_secrets),
    )
