"""Least privilege on the mesh's real Postgres cluster: a service's role reaches its own database
only (pg_hba.conf refuses it anywhere else, and no other database grants it CONNECT), can create
neither roles nor databases nor untrusted extensions, is no superuser, and owns every table its
migrations made. Patroni's REST API takes no unsafe call without its credentials, and what it
shows to anyone holds no password. Each attack must fail; the test asserts the refusal."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import httpx
import pytest

from mesh.components import patroni, postgres
from mesh.runtime import postgres as runtime_postgres
from mesh.runtime.supervisor import Mesh
from mesh.topology import PostgresNode
from tests.support import wait_for

T = TypeVar("T")


def run(work: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(work())


def url(mesh: Mesh, role: str, database: str, password: str | None = None) -> str:
    """The multi-host URL the services get (the primary, wherever it is), as `role`."""
    if password is None:
        password = postgres.passwords(mesh.state, mesh.topology)[role]
    return postgres.database_url(mesh.topology, mesh.placement, role, password, database)


def node_url(mesh: Mesh, node: PostgresNode, role: str, password: str, database: str) -> str:
    """One node's own address (a standby answers too)."""
    return f"postgresql://{role}:{password}@{mesh.placement.host(node.name)}:{node.port}/{database}"


async def fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def refused(dsn: str) -> BaseException:
    """The error connecting with `dsn` raises; fails the test if it gets in."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (asyncpg.PostgresError, OSError) as exc:
        return exc
    await conn.close()
    raise AssertionError(f"let in: {dsn.split('@')[1]} as {dsn.split('//')[1].split(':')[0]}")


def roles(mesh: Mesh) -> list[str]:
    return postgres.service_roles(mesh.topology)


def test_orders_role_is_refused_by_the_payments_database(mesh: Mesh) -> None:
    error = run(lambda: refused(url(mesh, "orders", "payments")))
    assert isinstance(error, asyncpg.InvalidAuthorizationSpecificationError), repr(error)
    assert 'no pg_hba.conf entry for host "127.0.0.1", user "orders", database "payments"' in str(
        error
    )


def test_no_service_role_gets_into_another_services_or_a_system_database(mesh: Mesh) -> None:
    async def attempts() -> dict[tuple[str, str], BaseException]:
        pairs = [(r, d) for r, d in itertools.permutations(roles(mesh), 2)]
        pairs += [(r, d) for r in roles(mesh) for d in postgres.SYSTEM_DATABASES]
        return {(r, d): await refused(url(mesh, r, d)) for r, d in pairs}

    errors = run(attempts)
    assert len(errors) == 5 * 4 + 5 * 2
    kinds = {type(e).__name__ for e in errors.values()}
    assert kinds == {"InvalidAuthorizationSpecificationError"}, errors


def test_each_database_grants_connect_to_its_owner_alone(mesh: Mesh) -> None:
    """The second lock behind pg_hba.conf (and the only one where pg_hba.conf is compose's
    image's own): PUBLIC's CONNECT is revoked from every service and system database."""
    superuser = url(mesh, postgres.SUPERUSER, "postgres")
    databases = [*roles(mesh), *postgres.SYSTEM_DATABASES]
    rows = run(
        lambda: fetch(
            superuser,
            "SELECT r AS role, d AS database, has_database_privilege(r, d, 'CONNECT') AS can"
            " FROM unnest($1::text[]) r, unnest($2::text[]) d",
            roles(mesh),
            databases,
        )
    )
    allowed = {(row["role"], row["database"]) for row in rows if row["can"]}
    assert allowed == {(role, role) for role in roles(mesh)}
    owners = run(
        lambda: fetch(
            superuser,
            "SELECT datname, pg_get_userbyid(datdba) AS owner, datacl::text[] AS acl"
            " FROM pg_database WHERE datname = ANY($1::text[])",
            databases,
        )
    )
    for row in owners:
        if row["datname"] in roles(mesh):
            assert row["owner"] == row["datname"]
        # An ACL entry for PUBLIC reads "=c/owner"; none is left.
        assert not any(entry.startswith("=") for entry in row["acl"] or []), row


def test_a_service_role_is_no_superuser_and_creates_no_role_database_or_extension(
    mesh: Mesh,
) -> None:
    orders = url(mesh, "orders", "orders")
    attrs = run(
        lambda: fetch(
            orders,
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
            " FROM pg_roles WHERE rolname = current_user",
        )
    )
    assert tuple(attrs[0]) == (False, False, False, False, False)

    async def attacks() -> dict[str, BaseException | None]:
        conn = await asyncpg.connect(orders, timeout=10)
        outcome: dict[str, BaseException | None] = {}
        try:
            for statement in (
                "CREATE ROLE intruder LOGIN PASSWORD 'x'",
                "CREATE DATABASE intruder",
                "ALTER ROLE orders SUPERUSER",
                "ALTER ROLE orders CREATEROLE",
                "SET ROLE payments",
                # dblink and postgres_fdw would reach another database from this one.
                "CREATE EXTENSION dblink",
                "CREATE EXTENSION postgres_fdw",
            ):
                try:
                    await conn.execute(statement)
                    outcome[statement] = None
                except asyncpg.PostgresError as exc:
                    outcome[statement] = exc
        finally:
            await conn.close()
        return outcome

    outcome = run(attacks)
    accepted = [statement for statement, error in outcome.items() if error is None]
    assert accepted == []
    for statement, error in outcome.items():
        assert isinstance(error, asyncpg.InsufficientPrivilegeError), (statement, repr(error))


def test_a_service_role_cannot_read_another_services_tables(mesh: Mesh) -> None:
    # The payments table is there, readable by its own service ...
    own = run(lambda: fetch(url(mesh, "payments", "payments"), "SELECT count(*) FROM payments"))
    assert own[0][0] >= 0
    # ... and orders, whose database holds no such table, has no way to it: the payments
    # database refuses it (and Postgres has no cross-database query without dblink/fdw, which
    # the test above shows it cannot create).
    error = run(lambda: refused(url(mesh, "orders", "payments")))
    assert isinstance(error, asyncpg.InvalidAuthorizationSpecificationError)
    missing = run(lambda: refused_query(url(mesh, "orders", "orders"), "SELECT * FROM payments"))
    assert isinstance(missing, asyncpg.UndefinedTableError), repr(missing)


async def refused_query(dsn: str, sql: str) -> BaseException:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.fetch(sql)
    except asyncpg.PostgresError as exc:
        return exc
    finally:
        await conn.close()
    raise AssertionError(f"{sql!r} answered")


def test_every_table_is_owned_by_its_services_role_so_migrations_ran_as_it(mesh: Mesh) -> None:
    for role in roles(mesh):
        rows = run(
            lambda role=role: fetch(
                url(mesh, postgres.SUPERUSER, role),
                "SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v', 'm')",
            )
        )
        names = {row["relname"] for row in rows}
        assert "schema_migrations" in names, f"{role}: no migrations applied"
        strangers = {row["relname"]: row["owner"] for row in rows if row["owner"] != role}
        assert strangers == {}, f"{role}'s database holds relations of {strangers}"


def test_every_node_runs_the_generated_pg_hba(mesh: Mesh) -> None:
    password = postgres.passwords(mesh.state, mesh.topology)[postgres.SUPERUSER]
    wanted = [line.split()[:3] for line in patroni.hba_lines(mesh.topology, "127.0.0.1/32")]
    for node in mesh.topology.postgres_nodes:
        rows = run(
            lambda node=node: fetch(
                node_url(mesh, node, postgres.SUPERUSER, password, "postgres"),
                "SELECT type, database, user_name, address, auth_method, error"
                " FROM pg_hba_file_rules ORDER BY line_number",
            )
        )
        assert [r["error"] for r in rows] == [None] * len(rows)
        assert {(r["address"], r["auth_method"]) for r in rows} == {("127.0.0.1", "scram-sha-256")}
        assert [[r["type"], *r["database"], *r["user_name"]] for r in rows] == wanted, node.name


def test_patronis_rewind_role_reaches_the_maintenance_database_and_no_other(mesh: Mesh) -> None:
    """pg_rewind (a failed primary rejoining) connects as the rewind role to `postgres`, whose
    CONNECT PUBLIC lost: granted to it alone."""
    password = patroni.passwords(mesh.state)[patroni.REWIND]
    rewind = url(mesh, patroni.REWIND, patroni.MAINTENANCE_DATABASE, password)
    assert run(lambda: fetch(rewind, "SELECT current_user"))[0][0] == patroni.REWIND
    error = run(lambda: refused(url(mesh, patroni.REWIND, "orders", password)))
    assert isinstance(error, asyncpg.InvalidAuthorizationSpecificationError)


def test_a_grant_made_by_hand_or_an_earlier_version_is_taken_back_at_start(mesh: Mesh) -> None:
    """What `mesh up` runs once the cluster is ready (the last node's readiness check) brings
    an existing cluster back to least privilege."""
    superuser = url(mesh, postgres.SUPERUSER, "postgres")
    ready = mesh.spec(mesh.topology.postgres_nodes[-1].name).ready
    assert ready is not None

    async def loosen() -> None:
        conn = await asyncpg.connect(superuser, timeout=10)
        try:
            await conn.execute("GRANT CONNECT ON DATABASE payments TO PUBLIC")
            await conn.execute("GRANT CONNECT ON DATABASE users TO orders")
            await conn.execute("ALTER ROLE orders CREATEDB CREATEROLE")
            await conn.execute("GRANT pg_read_all_data TO orders")
        finally:
            await conn.close()

    privileges = (
        "SELECT has_database_privilege('orders', 'payments', 'CONNECT'),"
        " has_database_privilege('orders', 'users', 'CONNECT'),"
        " (SELECT rolcreatedb OR rolcreaterole FROM pg_roles WHERE rolname = 'orders'),"
        " pg_has_role('orders', 'pg_read_all_data', 'MEMBER')"
    )

    def provisioned() -> bool:
        return ready() is None

    try:
        run(loosen)
        assert tuple(run(lambda: fetch(superuser, privileges))[0]) == (True, True, True, True)
        wait_for(provisioned, timeout=60, what="the cluster ready and provisioned again")
        assert tuple(run(lambda: fetch(superuser, privileges))[0]) == (False,) * 4
    finally:
        wait_for(provisioned, timeout=60, what="least privilege restored")


@pytest.fixture
def patroni_api(mesh: Mesh) -> str:
    return runtime_postgres.patroni_url(mesh.placement, mesh.topology.postgres_nodes[0])


def test_an_unsafe_patroni_call_without_its_credentials_is_refused(
    mesh: Mesh, patroni_api: str
) -> None:
    # /reload would only re-read the config: harmless, were it ever let through.
    anonymous = httpx.post(f"{patroni_api}/reload", timeout=10)
    assert anonymous.status_code == 401, anonymous.text
    wrong = httpx.post(f"{patroni_api}/reload", auth=(patroni.RESTAPI, "guess"), timeout=10)
    assert wrong.status_code == 401, wrong.text
    for path in ("restart", "reinitialize", "switchover", "failover"):
        resp = httpx.post(f"{patroni_api}/{path}", json={}, timeout=10)
        assert resp.status_code == 401, (path, resp.status_code, resp.text)


def test_what_patroni_shows_to_anyone_holds_no_password(mesh: Mesh, patroni_api: str) -> None:
    """Patroni's reads stay open (mesh status, the readiness checks and Patroni's own members
    read them; Patroni can close them only with client certificates): they must leak nothing."""
    secrets = [
        *postgres.passwords(mesh.state, mesh.topology).values(),
        *patroni.passwords(mesh.state).values(),
    ]
    for path in ("patroni", "cluster", "config", "history", "health", "metrics"):
        resp = httpx.get(f"{patroni_api}/{path}", timeout=10)
        assert resp.status_code in (200, 503), (path, resp.status_code)
        leaked = [s for s in secrets if s in resp.text]
        assert leaked == [], f"/{path} shows a password"
