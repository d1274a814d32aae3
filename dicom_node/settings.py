"""All configuration in one pydantic-settings object.

Sources, strongest first: explicit arguments, environment variables
``DICOM_NODE_<NAME>``, the TOML config file (``--config`` or ``DICOM_NODE_CONFIG``,
else ``config/node.toml`` when it exists in the working directory), defaults.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from dicom_node.domain.aetitle import (
    Peer,
    parse_peer,
    parse_peer_list,
    peer_from_table,
)
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.matching import SlaPolicy
from dicom_node.domain.vr import validate_ae_title

ENV_PREFIX = "DICOM_NODE_"
CONFIG_ENV = "DICOM_NODE_CONFIG"
DEFAULT_CONFIG_PATH = Path("config/node.toml")

Port = Annotated[int, Field(ge=0, le=65535)]

# The DICOM services known_ae_required_for can restrict to known calling AEs
CallingAeService = Literal["storage", "query", "retrieve", "worklist", "mpps", "commitment"]


MIN_METRICS_TOKEN_LENGTH = 16


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    # --- identity and network -------------------------------------------------
    ae_title: str = "DICOM_NODE"
    bind_host: str = "127.0.0.1"
    dicom_port: Port = 11112
    http_port: Port = 8000
    allowed_calling_aets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    peers: Annotated[dict[str, Peer], NoDecode] = Field(default_factory=dict)
    max_pdu_size: Annotated[int, Field(ge=0)] = 1_048_576
    max_associations: Annotated[int, Field(ge=1, le=1000)] = 32
    acse_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    dimse_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    network_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 10.0
    # Processes receiving DICOM on the one port: 0 = one per CPU core, 1 = inside the
    # main process. Threads cannot spread C-STORE over cores (the GIL); processes can.
    dicom_workers: Annotated[int, Field(ge=0, le=64)] = 0
    # C-FIND answers at most this many matches, then fails with 0xA700 (narrow it)
    max_find_matches: Annotated[int, Field(ge=1)] = 1000
    # a worklist query that leaves ScheduledStationAETitle empty gets the calling
    # AE's own steps only (for modalities that do not fill it in)
    worklist_by_calling_ae: bool = False

    # --- retrieve (C-MOVE, C-GET; docs/conformance.md) ------------------------
    # Orthanc (and others) send a C-MOVE/C-GET at PATIENT level on the Study Root
    # model, which PS3.4 C.6.2 does not define. Accepted when it carries a
    # PatientID (every study of that patient is sent); false: refused 0xA900.
    accept_patient_level_on_study_root: bool = True
    # A stored compressed instance that the destination accepts in no stored
    # syntax is decompressed (or re-encoded losslessly) for it; false: such a
    # sub-operation fails and is listed as failed.
    transcode_on_retrieve: bool = True
    # Largest decoded pixel data one transcoding may hold in memory; a larger
    # instance is not transcoded (its sub-operation fails, and says why).
    max_transcode_bytes: Annotated[int, Field(ge=1_048_576)] = 1_073_741_824
    # Transcodings run at once in one process (each holds decoded pixels in
    # memory and a core busy); a retrieve waits for a free slot.
    max_concurrent_transcodes: Annotated[int, Field(ge=1, le=64)] = 2
    # A study sent from the API (POST /api/studies/{id}/send) holds its HTTP
    # request until the peer has answered every instance: what is not sent
    # within this long fails, and a peer that stops reading is cut at this
    # deadline (its socket shut down), so the request always ends.
    send_time_limit_seconds: Annotated[float, Field(gt=0)] = 300.0
    # Sends at once in one API process (each holds a worker thread for up to
    # send_time_limit_seconds); one more is answered 503 with Retry-After.
    max_concurrent_sends: Annotated[int, Field(ge=1, le=64)] = 2

    # --- hostile peers and resource limits (docs/security.md) ----------------
    # Largest data set one C-STORE (or one imported file) may carry, counted as it
    # arrives and again as a Deflated transfer syntax inflates: over it the
    # instance is refused (0xA700) before it is held in memory or written.
    max_dataset_bytes: Annotated[int, Field(ge=65536)] = 1_073_741_824
    # C-STORE on the lean receive path (docs/ingest.md, "The receive path"): its
    # response encoded directly, byte for byte what pynetdicom sends; false:
    # pynetdicom's encoding through a pydicom Dataset, as before.
    lean_receive: bool = True
    # A connection must complete its A-ASSOCIATE-RQ (after its TLS handshake, on
    # the TLS port) within this long, or it is closed. max_associations counts
    # negotiated associations only; connections still waiting for their request
    # count against max_pending_connections (per receiving process), past which a
    # new connection is closed at once.
    association_request_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    max_pending_connections: Annotated[int, Field(ge=1, le=10000)] = 64
    # Rejected associations (and requests refused to unknown AEs): the first from a
    # peer address is audited at once, the rest of the interval in one event with
    # their count (not one row each: an unauthenticated flood must not fill the trail)
    rejected_association_audit_interval_seconds: Annotated[float, Field(gt=0)] = 60.0
    # Values one key of a query may list (backslash-separated): UID lists of a
    # retrieve, name lists of a C-FIND or an HTTP search; more are refused
    max_query_list_values: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # Services only a known calling AE may use: one listed in allowed_calling_aets
    # or peers, or the AE title of a modality registered in the node. Any of
    # "storage", "query", "retrieve", "worklist", "mpps", "commitment".
    known_ae_required_for: Annotated[list[CallingAeService], NoDecode] = Field(default_factory=list)
    # An MPPS N-SET from an AE other than the one whose N-CREATE made the step is
    # refused (a failure status, logged and audited)
    mpps_set_by_creator_only: bool = True

    # --- DICOM TLS and HTTPS (docs/tls.md) -------------------------------------
    # A DICOM TLS listener (PS3.15 Annex B, BCP 195) on this port; unset = none.
    dicom_tls_port: Port | None = None
    # Serve the plain dicom_port as well (false: TLS only; needs dicom_tls_port)
    dicom_plain_listener: bool = True
    # The node's certificate chain and private key (PEM), for the TLS listener and
    # as the client certificate of outgoing TLS associations
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    # CA certificates (PEM) that peers' certificates must chain to, both ways
    tls_ca_bundle: Path | None = None
    # Client certificates on the TLS listener: "required" (mutual authentication,
    # as PS3.15 B.1 expects), "optional" (verified when sent) or "none"
    tls_client_certificates: Literal["required", "optional", "none"] = "required"
    # A TLS handshake must finish within this long; it never holds up other peers
    tls_handshake_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    # HTTPS for the API (uvicorn's TLS): both set = the API serves HTTPS only
    http_tls_certificate: Path | None = None
    http_tls_private_key: Path | None = None

    # --- storage and database -------------------------------------------------
    data_dir: Path = Path("data")
    database_url: str = ""
    # PostgreSQL: the role that owns the schema, used by `db upgrade`, by schema
    # creation in an empty database and by `restore`; the node's own login
    # (database_url) then gets no more than it needs, and only INSERT and SELECT
    # on the audit trail. Empty: database_url's role owns the schema.
    database_owner_url: str = ""
    # fsync each instance file and its directory before acknowledging it
    fsync: bool = True
    # the most instances the index writer of a worker commits in one transaction
    # (group commit: batches are whatever is waiting, never waited for)
    ingest_batch_max_instances: Annotated[int, Field(ge=1, le=1000)] = 64
    # same SOPInstanceUID, different content: keep the first copy or replace it
    duplicate_policy: Literal["keep", "replace"] = "keep"
    # accept storage SOP classes pynetdicom does not know (private ones)
    accept_unknown_sop_classes: bool = False
    # temp files older than this are leftovers of interrupted transfers
    temp_file_max_age_seconds: Annotated[int, Field(gt=0)] = 3600
    # scheduled backups (database snapshot + instance files + manifest): where, how
    # often, how many to keep; no backup_dir = no scheduled backups
    backup_dir: Path | None = None
    backup_interval_hours: Annotated[float, Field(gt=0)] = 24.0
    backup_keep: Annotated[int, Field(ge=1)] = 7

    # --- workflow -------------------------------------------------------------
    study_stable_seconds: Annotated[int, Field(gt=0)] = 60
    stability_check_interval_seconds: Annotated[float, Field(gt=0)] = 10.0
    # how often the escalation job flags overdue worklist items and escalates
    # critical results not communicated by their deadline
    escalation_interval_seconds: Annotated[float, Field(gt=0)] = 60.0
    # a quiet study waits for its order's MPPS IN PROGRESS at most this long
    mpps_wait_max_seconds: Annotated[int, Field(gt=0)] = 7200
    # maintenance jobs (jobs/maintenance.py). A scheduled order this many hours past
    # its slot with no images and no MPPS gets an acquisition follow-up item
    stale_order_hours: Annotated[float, Field(gt=0)] = 48.0
    stale_order_interval_seconds: Annotated[float, Field(gt=0)] = 900.0
    # unmatched studies are matched again against orders that arrived since
    rematch_interval_seconds: Annotated[float, Field(gt=0)] = 60.0
    # instance files of fully reported studies are removed this many days after
    # their last image (0 = never: retention is off)
    retention_days: Annotated[int, Field(ge=0)] = 0
    retention_interval_seconds: Annotated[float, Field(gt=0)] = 3600.0
    # at most this many studies purged per retention run (one unit of work each)
    retention_max_studies_per_run: Annotated[int, Field(gt=0)] = 100
    # change-feed entries older than this are trimmed (the newest one always stays)
    change_log_keep_days: Annotated[float, Field(gt=0)] = 7.0
    change_log_trim_interval_seconds: Annotated[float, Field(gt=0)] = 3600.0
    # reading-worklist due time after a study completes, by priority
    sla_stat_minutes: Annotated[int, Field(gt=0)] = 60
    sla_urgent_minutes: Annotated[int, Field(gt=0)] = 720
    sla_routine_minutes: Annotated[int, Field(gt=0)] = 1440
    # a critical finding must be communicated within this many minutes
    critical_result_deadline_minutes: Annotated[int, Field(gt=0)] = 60
    # an open order for the same patient and modality/procedure within this window
    # is a duplicate (HTTP 409) unless forced with a reason
    duplicate_order_window_hours: Annotated[float, Field(ge=0)] = 24.0
    # may the author of a report also finalize it (no second reader)?
    report_self_review: bool = False

    # --- HTTP API -------------------------------------------------------------
    # bearer tokens expire this long after sign-in
    api_token_ttl_minutes: Annotated[int, Field(gt=0)] = 480
    # static bearer token for Prometheus at GET /metrics (admins' own tokens work too);
    # unset: only signed-in admins may scrape. Set it from the environment.
    metrics_token: SecretStr | None = None
    # consecutive failed sign-ins that lock an account, and for how long
    sign_in_max_failures: Annotated[int, Field(ge=1)] = 5
    sign_in_lockout_minutes: Annotated[int, Field(gt=0)] = 15
    # Addresses of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto the API
    # believes (uvicorn's forwarded_allow_ips); empty = none: the client address
    # is the TCP peer's, which the lock-out and the audit trail rely on
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Live-event streams (GET /api/events) one user may hold open; more: 429
    max_event_streams_per_user: Annotated[int, Field(ge=1, le=1000)] = 4
    # Password hashes computed at once (each takes password_hash_memory_kib of
    # memory); a sign-in that waits longer than password_hash_wait_seconds for a
    # turn is answered 503 with Retry-After
    max_concurrent_password_hashes: Annotated[int, Field(ge=1, le=64)] = 2
    password_hash_wait_seconds: Annotated[float, Field(gt=0)] = 10.0
    # how often expired and revoked bearer tokens are deleted
    token_purge_interval_seconds: Annotated[float, Field(gt=0)] = 3600.0
    # argon2id cost of new password hashes (RFC 9106 low-memory profile by default);
    # hashes made at another cost are re-hashed at their next sign-in
    password_hash_time_cost: Annotated[int, Field(ge=1, le=20)] = 3
    password_hash_memory_kib: Annotated[int, Field(ge=1024, le=4_194_304)] = 65536
    password_hash_parallelism: Annotated[int, Field(ge=1, le=64)] = 4

    # --- GraphQL (/graphql, docs/graphql.md) ---------------------------------
    # deepest selection a query may nest (a worklist item's study's series'
    # instances is 4); deeper: refused before anything is read
    graphql_max_depth: Annotated[int, Field(ge=2, le=50)] = 10
    # estimated cost of a query: each field 1, a connection's fields multiplied
    # by the page size asked for (``first``); more: refused before anything is read
    graphql_max_complexity: Annotated[int, Field(ge=10, le=10_000_000)] = 20_000
    # aliases in one document (an alias repeats a field: a cheap way to multiply work)
    graphql_max_aliases: Annotated[int, Field(ge=1, le=10_000)] = 30
    # lexical tokens in one document: a bound on what the parser is asked to do
    graphql_max_tokens: Annotated[int, Field(ge=100, le=1_000_000)] = 5_000
    # size of a POST /graphql body (the query and its variables); larger: 413,
    # before it is read. A body without Content-Length (chunked) is 411
    graphql_max_request_bytes: Annotated[int, Field(ge=4096, le=104_857_600)] = 1_048_576
    # live subscriptions (graphql-transport-ws) one user may hold open per node
    # process, over every connection; more: the subscription is refused
    graphql_max_subscriptions_per_user: Annotated[int, Field(ge=1, le=1000)] = 8

    # --- DICOMweb (docs/dicomweb.md) -----------------------------------------
    # scheme://host[:port] the HTTP API is published at (as a reverse proxy or DNS
    # name shows it): RetrieveURL and BulkDataURI values are built on it. Unset:
    # from each request's Host header (which some clients send without the port)
    public_base_url: str | None = None
    # STOW-RS: a request body over this is refused (413) as it arrives, never buffered
    stow_max_request_bytes: Annotated[int, Field(ge=1_048_576)] = 4_294_967_296
    # rendered and thumbnail images: neither side of a viewport over this (400)
    rendered_max_dimension: Annotated[int, Field(ge=16, le=16384)] = 4096
    # origins (scheme://host[:port]) a browser viewer may call /dicomweb and /api
    # from (CORS); empty: none, same origin only
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # service accounts' API keys: lifetime when the admin gives none, and the longest
    api_key_default_days: Annotated[int, Field(ge=1, le=3650)] = 365
    api_key_max_days: Annotated[int, Field(ge=1, le=3650)] = 730

    # --- logging --------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_phi: bool = False
    # "json": one JSON object a line (ts, level, logger, message, exception)
    log_format: Literal["text", "json"] = "text"

    def sla(self) -> SlaPolicy:
        """Reading turnaround targets by priority."""
        return SlaPolicy(
            stat_minutes=self.sla_stat_minutes,
            urgent_minutes=self.sla_urgent_minutes,
            routine_minutes=self.sla_routine_minutes,
        )

    @property
    def dicom_worker_count(self) -> int:
        return self.dicom_workers or max(1, os.cpu_count() or 1)

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # a scrape token guards the node's figures: no guessable short ones
        if value is not None and len(value.get_secret_value()) < MIN_METRICS_TOKEN_LENGTH:
            raise ValueError(f"at least {MIN_METRICS_TOKEN_LENGTH} characters")
        return value

    @field_validator("ae_title")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        title: str = _as_value_error(validate_ae_title, value)
        return title

    @field_validator("allowed_calling_aets", mode="before")
    @classmethod
    def _split_aets(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [_as_value_error(validate_ae_title, str(item)) for item in value]
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for item in value:
                try:
                    ipaddress.ip_network(str(item), strict=False)
                except ValueError:
                    raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @field_validator("public_base_url")
    @classmethod
    def _check_public_base_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(
            r"https?://[A-Za-z0-9.\-\[\]:]+(/[^\s?#]*)?", value
        ):
            raise ValueError(f"{value!r} is not an http(s) URL without query or fragment")
        return value.rstrip("/") if value is not None else None

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for item in value:
                # an origin is scheme://host[:port], nothing after: a browser sends
                # exactly that, so anything else would never match
                if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", str(item)):
                    raise ValueError(f"{item!r} is not an origin (scheme://host[:port])")
        return value

    @model_validator(mode="after")
    def _check_api_key_days(self) -> Settings:
        if self.api_key_default_days > self.api_key_max_days:
            raise ValueError("api_key_default_days is over api_key_max_days")
        return self

    @field_validator("known_ae_required_for", mode="before")
    @classmethod
    def _split_services(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_owner_url")
    @classmethod
    def _check_owner_url(cls, value: str) -> str:
        if value and not value.startswith("postgresql"):
            raise ValueError("must be a postgresql+psycopg:// URL (SQLite has no roles)")
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        if not self.dicom_plain_listener and self.dicom_tls_port is None:
            raise ValueError("dicom_plain_listener = false needs dicom_tls_port")
        if self.dicom_tls_port is not None and (
            self.tls_certificate is None or self.tls_private_key is None
        ):
            raise ValueError("dicom_tls_port needs tls_certificate and tls_private_key")
        if (
            self.dicom_tls_port is not None
            and self.tls_client_certificates != "none"
            and self.tls_ca_bundle is None
        ):
            raise ValueError(
                "tls_client_certificates = required/optional needs tls_ca_bundle "
                "(the CAs client certificates must chain to)"
            )
        if (self.http_tls_certificate is None) != (self.http_tls_private_key is None):
            raise ValueError("http_tls_certificate and http_tls_private_key go together")
        return self

    @field_validator("peers", mode="before")
    @classmethod
    def _parse_peers(cls, value: Any) -> Any:
        # Accepted forms: "AE@host:port,AE2@host:port" (env), a TOML list of such
        # strings, or a TOML table {AE = "host:port"}.
        if isinstance(value, str):
            peers = _as_value_error(parse_peer_list, value)
        elif isinstance(value, list):
            peers = _as_value_error(parse_peer_list, ",".join(str(item) for item in value))
        elif isinstance(value, dict):
            peers = [
                # already parsed (Peer) or serialised (the settings JSON the main
                # process hands its DICOM workers): taken as they are
                address
                if isinstance(address, Peer)
                else _as_value_error(partial(peer_from_table, ae), address)
                if isinstance(address, dict)
                else _as_value_error(parse_peer, f"{ae}@{address}")
                for ae, address in value.items()
            ]
        else:
            return value
        return {peer.ae_title: peer for peer in peers}

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            # frozen model: set through object.__setattr__ once, during validation
            sqlite_path = (self.data_dir / "dicom-node.sqlite3").resolve()
            object.__setattr__(self, "database_url", f"sqlite:///{sqlite_path}")
        return self

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value:
            return value  # filled in from data_dir by _default_database
        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError:
            raise ValueError("not a database URL") from None
        if backend not in ("sqlite", "postgresql"):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        return value

    @model_validator(mode="after")
    def _owner_needs_postgresql(self) -> Settings:
        if self.database_owner_url and not self.database_url.startswith("postgresql"):
            raise ValueError("database_owner_url goes with a PostgreSQL database_url")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_path = _config_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_path))
        return tuple(sources)


def _as_value_error(func: Any, value: Any) -> Any:
    try:
        return func(value)
    except InvalidValue as exc:
        # pydantic turns ValueError into a validation error on the field
        raise ValueError(str(exc)) from None


_explicit_config: Path | None = None


def _config_path() -> Path | None:
    if _explicit_config is not None:
        return _explicit_config
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


class ConfigError(Exception):
    """Configuration that cannot be used; the message is one line for the operator."""


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, turning every failure into a one-line ConfigError."""
    global _explicit_config
    _explicit_config = config_file
    try:
        path = _config_path()
        if path is not None and not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        if path is not None:
            try:
                tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    finally:
        _explicit_config = None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad setting, naming both the TOML key and the environment variable."""
    lines = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "configuration"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            lines.append(f"unknown setting {name!r} in the config file")
            continue
        value = error.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
        lines.append(f"setting {name} / {ENV_PREFIX}{name.upper()}: {message}{shown}")
    return "; ".join(lines)
