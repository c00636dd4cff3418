"""Typed, frozen settings from one TOML file plus ``DICOMVAULT_*`` overrides.

``load_settings(toml_path, environ)`` is the only place that reads the
environment.  Overrides use ``DICOMVAULT_<SECTION>__<KEY>`` (double
underscore between section and key), e.g. ``DICOMVAULT_DIMSE__PORT=11113``;
top-level keys use ``DICOMVAULT_<KEY>`` (``DICOMVAULT_DATA_DIR``).  Every key is
documented in ``docs/configuration.md``.  Secrets are only referenced (a key
file path or the *name* of an environment variable), never stored here.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dicomvault.errors import ConfigurationError

ENV_PREFIX = "DICOMVAULT_"
DIMSE_SERVICES = ("echo", "store", "find", "move", "get")


@dataclass(frozen=True)
class DimseSettings:
    ae_title: str = "DICOMVAULT"
    host: str = "127.0.0.1"
    port: int = 11112
    #: A plain-TCP listener; 0 = disabled (the default).  Enabling it is audited.
    plain_port: int = 0
    require_client_cert: bool = True
    #: Reject calling AE titles that are not configured peers.
    reject_unknown_peers: bool = True
    max_pdu: int = 262_144
    max_associations: int = 16
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    #: Largest single instance accepted over C-STORE, in MiB.
    max_instance_mb: int = 4096
    #: Processes accepting associations; 1 = the serve process itself, N >= 2 = N worker
    #: processes sharing the listening sockets (one GIL each: uses several cores).
    workers: int = 1


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8443
    #: Extra origins allowed by CORS (the same origin never needs it).
    cors_origins: tuple[str, ...] = ()
    max_body_mb: int = 1024
    require_client_cert: bool = False
    #: External base URL, e.g. https://pacs.example.org:8443 (for BulkDataURIs).
    public_url: str = ""


@dataclass(frozen=True)
class DatabaseSettings:
    #: SQLAlchemy URL; empty = SQLite file ``index.sqlite3`` in the data folder.
    url: str = ""
    pool_size: int = 10


@dataclass(frozen=True)
class StorageSettings:
    backend: Literal["filesystem", "s3"] = "filesystem"
    #: Filesystem root; empty = ``blobs/`` in the data folder.
    path: str = ""
    s3_endpoint: str = ""
    s3_bucket: str = "dicomvault"
    s3_region: str = "us-east-1"
    #: Names of environment variables holding the S3 credentials.
    s3_access_key_env: str = "DICOMVAULT_S3_ACCESS_KEY"
    s3_secret_key_env: str = "DICOMVAULT_S3_SECRET_KEY"  # noqa: S105 - a variable name


@dataclass(frozen=True)
class KeySettings:
    #: KEK key file (mode 0600); empty = ``keys/kek.key`` in the data folder.
    kek_file: str = ""
    #: If set, the *name* of an environment variable holding the base64 KEK.
    kek_env: str = ""


@dataclass(frozen=True)
class TlsSettings:
    #: Empty = the files ``init`` generated in ``tls/`` of the data folder.
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    ca_key_file: str = ""
    min_version: Literal["1.2", "1.3"] = "1.2"


@dataclass(frozen=True)
class ArchiveSettings:
    #: What a different object under an existing SOP Instance UID does.
    on_duplicate: Literal["reject", "overwrite"] = "reject"
    dek_cache_size: int = 4096
    dek_cache_ttl_seconds: int = 600
    #: Rows returned by one query before the result is capped (warning status).
    max_query_results: int = 10_000


@dataclass(frozen=True)
class SecuritySettings:
    session_idle_minutes: int = 15
    session_absolute_hours: int = 12
    password_min_length: int = 12
    password_history: int = 5
    login_lockout_threshold: int = 5
    login_lockout_minutes: int = 15
    break_glass_minutes: int = 60
    mfa_issuer: str = "dicomvault"


@dataclass(frozen=True)
class AuditSettings:
    checkpoint_interval_seconds: int = 300
    #: Folder (ideally write-once storage) that receives signed checkpoints.
    checkpoint_export_dir: str = ""
    syslog_host: str = ""
    syslog_port: int = 6514
    syslog_ca_file: str = ""
    webhook_url: str = ""
    failed_login_threshold: int = 5
    failed_login_window_seconds: int = 300
    bulk_retrieve_threshold: int = 1000
    bulk_retrieve_window_seconds: int = 600
    #: Local hours outside which PHI access raises an alert, e.g. "07-19"; empty = off.
    working_hours: str = ""


@dataclass(frozen=True)
class PeerSettings:
    """A DICOM peer (PS3.8 AE) allowed to associate, and/or a C-MOVE destination."""

    ae_title: str
    host: str = ""
    port: int = 0
    tls: bool = True
    #: Services this peer may request (echo, store, find, move, get).
    services: tuple[str, ...] = DIMSE_SERVICES
    #: AE titles this peer may name as C-MOVE destination ("*" = any configured peer).
    move_destinations: tuple[str, ...] = ()
    #: Accept the association only from this address (empty = any).
    allowed_hosts: tuple[str, ...] = ()
    #: SHA-256 (hex) of the client certificate this AE must present (empty = any trusted).
    client_cert_sha256: str = ""
    #: Role of the principal this AE becomes (see access model).
    role: str = "service"


@dataclass(frozen=True)
class OidcSettings:
    """OpenID Connect single sign-on (authorization code + PKCE) against one IdP."""

    enabled: bool = False
    #: The IdP issuer URL (discovery at ``<issuer>/.well-known/openid-configuration``).
    issuer: str = ""
    client_id: str = ""
    #: *Name* of the environment variable holding the client secret (empty = public client).
    client_secret_env: str = "DICOMVAULT_OIDC_CLIENT_SECRET"  # noqa: S105 - a variable name
    #: Our callback, e.g. https://pacs.example.org:8443/auth/oidc/callback.
    redirect_uri: str = ""
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    #: ID-token claim holding the user's groups, and the username claim.
    groups_claim: str = "groups"
    username_claim: str = "preferred_username"
    #: "IdP group=dicomvault role" pairs, e.g. ["pacs-rad=radiologist"].
    group_roles: tuple[str, ...] = ()
    #: Signature algorithms accepted for ID tokens.
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    #: Accept the IdP's MFA (``amr`` claim) as the second factor for PHI roles.
    trust_idp_mfa: bool = True
    http_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./data")
    dimse: DimseSettings = field(default_factory=DimseSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    keys: KeySettings = field(default_factory=KeySettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    peers: tuple[PeerSettings, ...] = ()
    oidc: OidcSettings = field(default_factory=OidcSettings)
    #: Folder of the installed OHIF Viewer; empty = ``cache/ohif-<version>/`` in the data folder.
    ohif_dir: str = ""

    # Derived locations -------------------------------------------------
    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"

    @property
    def blob_root(self) -> Path:
        return Path(self.storage.path) if self.storage.path else self.data_dir / "blobs"

    @property
    def kek_file(self) -> Path:
        return Path(self.keys.kek_file) if self.keys.kek_file else self.data_dir / "keys" / "kek.key"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def tls_cert_file(self) -> Path:
        return Path(self.tls.cert_file) if self.tls.cert_file else self.tls_dir / "server.crt"

    @property
    def tls_key_file(self) -> Path:
        return Path(self.tls.key_file) if self.tls.key_file else self.tls_dir / "server.key"

    @property
    def tls_ca_file(self) -> Path:
        return Path(self.tls.ca_file) if self.tls.ca_file else self.tls_dir / "ca.crt"

    @property
    def tls_ca_key_file(self) -> Path:
        return Path(self.tls.ca_key_file) if self.tls.ca_key_file else self.tls_dir / "ca.key"

    def peer(self, ae_title: str) -> PeerSettings | None:
        for peer in self.peers:
            if peer.ae_title == ae_title:
                return peer
        return None

    def weakened_security(self) -> list[str]:
        """Settings that weaken a secure default; audited at startup."""
        weak = []
        if self.dimse.plain_port:
            weak.append("dimse.plain_port")
        if not self.dimse.require_client_cert:
            weak.append("dimse.require_client_cert=false")
        if not self.dimse.reject_unknown_peers:
            weak.append("dimse.reject_unknown_peers=false")
        if self.archive.on_duplicate == "overwrite":
            weak.append("archive.on_duplicate=overwrite")
        return weak


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ConfigurationError(f"{where}: must be one of {list(args)}")
        return value
    if origin in (types.UnionType, typing.Union):
        non_none = [a for a in args if a is not type(None)]
        return None if value is None else _coerce(value, non_none[0], where)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigurationError(f"{where}: expected a list")
        item_tp = args[0]
        return tuple(_coerce(v, item_tp, f"{where}[]") for v in value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"{where}: expected a table")
        return _build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigurationError(f"{where}: expected true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigurationError(f"{where}: expected an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{where}: expected an integer") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{where}: expected a number") from None
    if tp is Path:
        return Path(str(value))
    if tp is str:
        if not isinstance(value, str):
            raise ConfigurationError(f"{where}: expected a string")
        return value
    raise ConfigurationError(f"{where}: unsupported type")


def _build(cls: Any, data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigurationError(f"{where or 'config'}: unknown key(s) {sorted(unknown)}")
    kwargs = {
        name: _coerce(value, hints[name], f"{where}.{name}" if where else name)
        for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigurationError(f"{where or 'config'}: {exc}") from None


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    hints = typing.get_type_hints(Settings)
    merged = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name.startswith(ENV_PREFIX + "S3_"):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        if "__" in rest:
            section, key = rest.split("__", 1)
            if section not in hints or not dataclasses.is_dataclass(hints[section]):
                raise ConfigurationError(f"{name}: unknown section {section!r}")
            merged.setdefault(section, {})[key] = raw
        elif rest in hints and not dataclasses.is_dataclass(hints[rest]) and rest != "peers":
            merged[rest] = raw
    return merged


def load_settings(
    toml_path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings: defaults, then the TOML file, then environment overrides.

    Fails fast with ``ConfigurationError`` naming the bad key.
    """
    data: dict[str, Any] = {}
    if toml_path is not None:
        path = Path(toml_path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{path}: {exc}") from None
    merged = _apply_env(data, environ or {})
    settings: Settings = _build(Settings, merged, "")
    seen: set[str] = set()
    for peer in settings.peers:
        if peer.ae_title in seen:
            raise ConfigurationError(f"peers: duplicate ae_title {peer.ae_title!r}")
        if not 0 < len(peer.ae_title) <= 16:
            raise ConfigurationError(f"peers: invalid ae_title {peer.ae_title!r}")
        bad = set(peer.services) - set(DIMSE_SERVICES)
        if bad:
            raise ConfigurationError(f"peers.{peer.ae_title}.services: unknown {sorted(bad)}")
        seen.add(peer.ae_title)
    if not 0 < len(settings.dimse.ae_title) <= 16:
        raise ConfigurationError("dimse.ae_title: 1 to 16 characters")
    return settings
