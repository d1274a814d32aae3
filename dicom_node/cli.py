"""The ``dicom-node`` command: serve, db, user, service-account, demo, import, backup,
verify, config."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from dicom_node import __version__, log_limit
from dicom_node.db import migrate
from dicom_node.db.engine import redact_url
from dicom_node.domain.api_keys import KeyScope
from dicom_node.domain.audit import Actor, SystemActor
from dicom_node.domain.enums import Role
from dicom_node.domain.errors import DomainError
from dicom_node.logging_setup import configure_logging
from dicom_node.node import (
    Node,
    StartupError,
    configure_password_hashing,
    ensure_schema,
    open_database,
    open_store,
)
from dicom_node.services.audit.chain import AuditAnchor
from dicom_node.settings import ConfigError, Settings, load_settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger("dicom_node")


class CommandError(Exception):
    """A command could not do what was asked; one line for the operator."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    try:
        settings = load_settings(args.config)
        configure_logging(settings.log_level, fmt=settings.log_format)
        configure_password_hashing(settings)
        result: int = args.run(settings, args)
        return result
    except ConfigError as exc:
        return _fail(f"configuration: {exc}", EXIT_USAGE)
    except (StartupError, CommandError, DomainError) as exc:
        return _fail(str(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        log_limit.flush_all()  # an import's refusal lines still held back, with their counts


def _fail(message: str, code: int) -> int:
    print(f"dicom-node: error: {message}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicom-node",
        description="DICOM network node and radiology workflow backend.",
        epilog="Every setting can be given as DICOM_NODE_<NAME> in the environment; "
        "see config/node.toml for the list.",
    )
    parser.add_argument("--version", action="version", version=f"dicom-node {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML config file (default: $DICOM_NODE_CONFIG, else ./config/node.toml if present)",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the DICOM SCP, the HTTP API and the scheduler until SIGINT/SIGTERM"
    )
    serve.set_defaults(run=cmd_serve)

    db = commands.add_parser("db", help="database schema").add_subparsers(
        title="db commands", metavar="DB_COMMAND", required=True
    )
    db.add_parser(
        "upgrade",
        help=(
            "create or update the schema to this version (as database_owner_url's role when "
            "set, which then grants the node's role what it needs)"
        ),
    ).set_defaults(run=cmd_db_upgrade)
    db.add_parser("current", help="show the schema revision of the database").set_defaults(
        run=cmd_db_current
    )

    user = commands.add_parser("user", help="user accounts").add_subparsers(
        title="user commands", metavar="USER_COMMAND", required=True
    )
    add = user.add_parser("add", help="create a user (the first admin included)")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=[role.value for role in Role])
    add.add_argument("--email")
    add.add_argument("--display-name")
    add.add_argument("--specialty")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    add.set_defaults(run=cmd_user_add)

    _service_account_parser(commands)

    demo = commands.add_parser(
        "demo", help="load demo centers, modalities, users and orders matching sample_dicom/"
    )
    demo.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the demo users' password from standard input (default: generated, printed)",
    )
    demo.set_defaults(run=cmd_demo)

    importing = commands.add_parser(
        "import", help="store and index DICOM files and folders through the C-STORE path"
    )
    importing.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    importing.set_defaults(run=cmd_import)

    commands.add_parser(
        "reindex", help="rebuild the index from the files in the store"
    ).set_defaults(run=cmd_reindex)

    backup = commands.add_parser(
        "backup",
        help="copy the database and the instance files, consistently, while the node runs",
    )
    backup.add_argument("destination", type=Path, metavar="DEST", help="a new or empty directory")
    backup.set_defaults(run=cmd_backup)

    restore = commands.add_parser(
        "restore",
        help=(
            "bring a backup back into an empty data dir and an empty database (loaded by "
            "database_owner_url's role when set), then check the audit trail's hash chain"
        ),
    )
    restore.add_argument("source", type=Path, metavar="SRC", help="a directory made by backup")
    restore.set_defaults(run=cmd_restore)

    verify = commands.add_parser(
        "verify",
        help=(
            "compare the index with the files in the store, and check the audit trail's "
            "hash chain (exit 1 on any disagreement)"
        ),
    )
    verify.add_argument("--quick", action="store_true", help="compare file sizes only (no hashing)")
    verify.add_argument(
        "--repair",
        action="store_true",
        help=(
            "index the orphan files (DICOM files of SOP instances the index does not know) "
            "where they lie, through the import path with the duplicate policy keep; "
            "changes nothing else: superseded copies, non-DICOM files, purge leftovers, "
            "missing and damaged files are only reported"
        ),
    )
    verify.add_argument(
        "--remove-purged",
        action="store_true",
        help=(
            "delete the purge leftovers: files of a study whose images retention purged "
            "(Study Deleted audited) that were last changed before that purge; files put "
            "back after the purge (even with cp -a or rsync -a) are orphans, not leftovers"
        ),
    )
    verify.add_argument(
        "--remove-superseded",
        action="store_true",
        help=(
            "delete the superseded copies (old copies an interrupted replace left of an "
            "instance the index holds at another path), each only when the indexed copy "
            "exists and verifies (size and SHA-256, hashed even with --quick); a copy whose "
            "indexed copy is missing or damaged is kept and reported: it may be the best "
            "copy left"
        ),
    )
    verify.add_argument(
        "--audit-anchor",
        type=_audit_anchor,
        metavar="ID:SHA256",
        help=(
            "an audit trail head recorded earlier (as verify prints it): check that this row "
            "still holds that hash; finds rows cut off the end of the trail, or the trail "
            "rewritten together with its hashes, which the hash chain alone cannot show"
        ),
    )
    verify.set_defaults(run=cmd_verify)

    config = commands.add_parser("config", help="configuration").add_subparsers(
        title="config commands", metavar="CONFIG_COMMAND", required=True
    )
    config.add_parser("show", help="print the effective settings").set_defaults(run=cmd_config_show)
    return parser


# --------------------------------------------------------------------------- serve


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    node = Node(settings)
    stop = threading.Event()
    with _signals_set(stop):
        node.start()
        log.info("dicom-node %s running (SIGINT or SIGTERM to stop)", __version__)
        stop.wait()
        log.info("stopping")
        node.stop()
    log.info("stopped")
    if node.jobs_abandoned:
        # the job threads would hold the interpreter's exit until they end
        _exit_now(EXIT_OK)
    return EXIT_OK


def _exit_now(code: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _signals_set:
    """SIGINT/SIGTERM set an event instead of interrupting whatever is running."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event
        self._previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}

    def __enter__(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self._event.is_set():
            # a second signal while stopping: the operator wants out now (every
            # job and the ingest path are crash-safe: nothing acknowledged is lost)
            log.warning("second signal while stopping: exiting at once")
            _exit_now(EXIT_INTERRUPTED)
        self._event.set()


# --------------------------------------------------------------------------- db


def cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    open_database(settings).dispose()  # reachable, or one line saying why not
    try:
        # as the owner role when there is one, which then grants the node's role
        # its privileges again (new tables included)
        before, after = migrate.upgrade_schema(settings.database_url, settings.database_owner_url)
    except migrate.SchemaAccessError as exc:
        raise CommandError(str(exc)) from None
    where = redact_url(settings.database_url)
    if before == after:
        print(f"{where}: schema already at revision {after}")
    else:
        print(f"{where}: schema upgraded from {before or 'empty'} to {after}")
    if settings.database_owner_url:
        role = migrate.node_role(settings.database_url)
        print(
            f"schema owned by the role of database_owner_url; {role} may only read and "
            "append to the audit trail"
        )
    return EXIT_OK


def cmd_db_current(settings: Settings, args: argparse.Namespace) -> int:
    db = open_database(settings)
    try:
        current = migrate.current_revision(db.engine)
    finally:
        db.dispose()
    head = migrate.head_revision()
    state = "up to date" if current == head else f"this version needs {head}"
    print(f"{redact_url(settings.database_url)}: revision {current or 'none'} ({state})")
    return EXIT_OK


# --------------------------------------------------------------------------- users, demo


def _read_password(from_stdin: bool, prompt: str) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CommandError("no terminal to ask for a password: use --password-stdin")
    first = getpass.getpass(prompt)
    if getpass.getpass("Repeat: ") != first:
        raise CommandError("the two passwords differ")
    return first


def cmd_user_add(settings: Settings, args: argparse.Namespace) -> int:
    from dicom_node.services.access.users import create_user

    password = _read_password(args.password_stdin, f"Password for {args.username}: ")
    db = open_database(settings)
    try:
        ensure_schema(db, upgrade_if_empty=True, owner_url=settings.database_owner_url)
        with db.unit_of_work() as session:
            user = create_user(
                session,
                username=args.username,
                password=password,
                role=args.role,
                email=args.email,
                display_name=args.display_name,
                specialty=args.specialty,
                actor=Actor.system(SystemActor.CLI),
            )
    finally:
        db.dispose()
    print(f"created user {user.username} (role {user.role.value}, id {user.id})")
    return EXIT_OK


def _service_account_parser(commands: Any) -> None:
    accounts = commands.add_parser(
        "service-account", help="service accounts and their API keys (viewers, pipelines)"
    ).add_subparsers(title="service-account commands", metavar="COMMAND", required=True)
    create = accounts.add_parser("create", help="create a service account (no password)")
    create.add_argument("name")
    create.add_argument(
        "--role", required=True, choices=[role.value for role in Role if role is not Role.ADMIN]
    )
    create.add_argument("--description")
    create.set_defaults(run=cmd_service_account_create)
    key = accounts.add_parser("key", help="make an API key (printed once, never stored)")
    key.add_argument("name", help="the service account")
    key.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[scope.value for scope in KeyScope],
        help="repeat for several",
    )
    key.add_argument("--days", type=int, help="lifetime (default: api_key_default_days)")
    key.add_argument("--label", help="where the key goes, e.g. 'OHIF reading room 2'")
    key.set_defaults(run=cmd_service_account_key)
    keys = accounts.add_parser("keys", help="list an account's keys (never the keys themselves)")
    keys.add_argument("name")
    keys.set_defaults(run=cmd_service_account_keys)
    revoke = accounts.add_parser("revoke", help="revoke a key")
    revoke.add_argument("name")
    revoke.add_argument("key_id", type=int)
    revoke.set_defaults(run=cmd_service_account_revoke)


def _with_database(settings: Settings, work: Callable[[Any], Any]) -> Any:
    """``work(session)`` in one unit of work on the configured database."""
    db = open_database(settings)
    try:
        ensure_schema(db, upgrade_if_empty=True, owner_url=settings.database_owner_url)
        with db.unit_of_work() as session:
            return work(session)
    finally:
        db.dispose()


def cmd_service_account_create(settings: Settings, args: argparse.Namespace) -> int:
    from dicom_node.services.access.service_accounts import create_service_account

    account = _with_database(
        settings,
        lambda session: create_service_account(
            session,
            name=args.name,
            role=args.role,
            description=args.description,
            actor=Actor.system(SystemActor.CLI),
        ),
    )
    print(f"created service account {account.name} (role {account.role.value}, id {account.id})")
    return EXIT_OK


def cmd_service_account_key(settings: Settings, args: argparse.Namespace) -> int:
    from dicom_node.services.access.service_accounts import find_service_account, issue_key

    def make(session: Any) -> Any:
        account = find_service_account(session, args.name)
        return issue_key(
            session,
            account.id,
            scopes=args.scope,
            expires_in_days=args.days,
            default_days=settings.api_key_default_days,
            max_days=settings.api_key_max_days,
            label=args.label,
            actor=Actor.system(SystemActor.CLI),
        )

    issued = _with_database(settings, make)
    info = issued.info
    print(
        f"key {info.id} of {args.name} ({' '.join(s.value for s in info.scopes)}), expires "
        f"{info.expires_at:%Y-%m-%d}; shown this once, send as 'Authorization: Bearer <key>':",
        file=sys.stderr,
    )
    print(issued.key)
    return EXIT_OK


def cmd_service_account_keys(settings: Settings, args: argparse.Namespace) -> int:
    from dicom_node.services.access.service_accounts import find_service_account, list_keys

    keys = _with_database(
        settings, lambda session: list_keys(session, find_service_account(session, args.name).id)
    )
    for info in keys:
        state = "revoked" if info.revoked_at else f"expires {info.expires_at:%Y-%m-%d}"
        used = f"{info.last_used_at:%Y-%m-%d %H:%M}" if info.last_used_at else "never"
        scopes = ",".join(scope.value for scope in info.scopes)
        print(f"{info.id}  {info.prefix}...  {scopes}  {state}  last used {used}")
    return EXIT_OK


def cmd_service_account_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from dicom_node.services.access.service_accounts import find_service_account, revoke_key

    _with_database(
        settings,
        lambda session: revoke_key(
            session,
            find_service_account(session, args.name).id,
            args.key_id,
            actor=Actor.system(SystemActor.CLI),
        ),
    )
    print(f"revoked key {args.key_id} of {args.name}")
    return EXIT_OK


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from dicom_node.services.operations.demo import generate_demo_password, load_demo

    password = _read_password(True, "") if args.password_stdin else generate_demo_password()
    db = open_database(settings)
    try:
        ensure_schema(db, upgrade_if_empty=True, owner_url=settings.database_owner_url)
        with db.unit_of_work() as session:
            summary = load_demo(session, password=password, actor=SystemActor.CLI)
    finally:
        db.dispose()
    # printed to the terminal of whoever ran the command, never logged
    print(summary.describe())
    if summary.users_created:
        shown = "(the password given on standard input)" if args.password_stdin else password
        print("demo users (username, role, password):")
        width = max(len(user.username) for user in summary.users_created)
        for user in summary.users_created:
            print(f"  {user.username:<{width}}  {user.role.value:<19}  {shown}")
    else:
        print("the demo users exist already: their passwords are unchanged")
    print("\n".join(_demo_next_steps(settings)))
    return EXIT_OK


def _demo_next_steps(settings: Settings) -> list[str]:
    """What a newcomer tries next, as commands for this node's settings (a test
    runs them against `serve`)."""
    host = settings.bind_host
    try:
        if ipaddress.ip_address(host).is_unspecified:
            host = "127.0.0.1"  # a node listening on every address is reached on loopback
    except ValueError:  # a host name
        pass
    url_host = f"[{host}]" if ":" in host else host
    scheme = "https" if settings.http_tls_certificate else "http"
    samples = Path(__file__).resolve().parents[1] / "sample_dicom"
    node = ["-aec", settings.ae_title, host, str(settings.dicom_port)]
    # DCMTK's own binaries: the venv holds pynetdicom scripts of the same names
    store = ["/usr/bin/storescu", "+sd", "+r", "+sp", "*.dcm", *node]
    store.append(str(samples) if samples.is_dir() else "sample_dicom")
    find = ["/usr/bin/findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName"]
    find += ["-k", "AccessionNumber", "-k", "StudyDescription", *node]
    return [
        "next, with the node running (dicom-node serve):",
        f"  sign in to the API at {scheme}://{url_host}:{settings.http_port}/docs "
        "(Authorize) as a user above",
        f"  send the sample images: {shlex.join(store)}",
        f"  (they reach the reading worklist after study_stable_seconds, "
        f"{settings.study_stable_seconds} s, with no new image)",
        f"  query the studies: {shlex.join(find)}",
    ]


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    missing = [str(path) for path in args.paths if not path.exists()]
    if missing:
        raise CommandError(f"no such file or directory: {', '.join(missing)}")
    from dicom_node.services.ingest.importing import iter_files

    return _import(settings, list(iter_files(args.paths)), actor=SystemActor.IMPORT)


def cmd_reindex(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings)
    return _import(settings, store.iter_files(), actor=SystemActor.REINDEX, in_store=True)


def _import(
    settings: Settings, files: list[Path], *, actor: SystemActor, in_store: bool = False
) -> int:
    from dicom_node.services.ingest.importing import import_files
    from dicom_node.services.ingest.instances import IngestPolicy

    db = open_database(settings)
    try:
        ensure_schema(db, upgrade_if_empty=True, owner_url=settings.database_owner_url)
        store = open_store(settings)
        summary = import_files(
            db,
            store,
            files,
            policy=IngestPolicy(settings.duplicate_policy, settings.max_dataset_bytes),
            actor=actor,
            progress=_progress_bar(len(files)) if sys.stderr.isatty() else None,
            in_store=in_store,
        )
    finally:
        db.dispose()
    print(summary.describe())
    return EXIT_OK if summary.ok else EXIT_FAILURE


def _progress_bar(total: int) -> Callable[[int], None]:
    width = 40

    def show(done: int) -> None:
        filled = width * done // max(total, 1)
        end = "\n" if done == total else ""
        print(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    return show


# --------------------------------------------------------------------------- backup, verify


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    from dicom_node.services.operations.backup import create_backup
    from dicom_node.services.operations.backup_format import BackupError

    db = open_database(settings)
    try:
        ensure_schema(db, upgrade_if_empty=False)
    finally:
        db.dispose()
    try:
        result = create_backup(
            database_url=settings.database_url,
            store=open_store(settings),
            destination=args.destination,
            fsync=settings.fsync,
            actor=SystemActor.CLI,
        )
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    print(result.describe())
    return EXIT_OK


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    from dicom_node.services.operations.backup_format import BackupError
    from dicom_node.services.operations.restore import restore_backup

    try:
        result = restore_backup(
            source=args.source,
            database_url=settings.database_url,
            owner_url=settings.database_owner_url,
            data_dir=settings.data_dir,
            fsync=settings.fsync,
            actor=SystemActor.CLI,
        )
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    print(result.describe())
    return EXIT_OK


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    from dicom_node.services.audit.chain import verify_audit_chain, warn_if_unprotected
    from dicom_node.services.operations.verify import repair_store, verify_store

    db = open_database(settings)
    try:
        ensure_schema(db, upgrade_if_empty=False)
        warn_if_unprotected(db)
        store = open_store(settings)
        if args.repair or args.remove_purged or args.remove_superseded:
            repaired = repair_store(
                db,
                store,
                actor=SystemActor.VERIFY_REPAIR,
                index_orphans=args.repair,
                remove_purged=args.remove_purged,
                remove_superseded=args.remove_superseded,
                quick=args.quick,
            )
            print(repaired.describe())
            store_ok = repaired.after.ok
        else:
            report = verify_store(db, store, quick=args.quick)
            print(report.describe())
            store_ok = report.ok
        chain = verify_audit_chain(db, anchor=args.audit_anchor)
    finally:
        db.dispose()
    print(chain.describe())
    return EXIT_OK if store_ok and chain.ok else EXIT_FAILURE


def _audit_anchor(value: str) -> AuditAnchor:
    try:
        return AuditAnchor.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_config_show(settings: Settings, args: argparse.Namespace) -> int:
    for name, value in settings.model_dump().items():
        if name in ("database_url", "database_owner_url") and value:
            value = redact_url(value)
        elif name == "peers":
            value = ",".join(str(peer) for peer in settings.peers.values())
        elif isinstance(value, list):
            value = ",".join(value)
        print(f"{name} = {value}")
    return EXIT_OK
