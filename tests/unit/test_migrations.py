import pytest

from services.auth.app import MIGRATIONS as AUTH
from services.common.messaging.migrations import OUTBOX, PROCESSED_EVENTS
from services.common.migration_history import Recorded, keyed_by_set
from services.common.migrations import (
    MigrationError,
    MigrationSet,
    ServiceMigrations,
    load_migrations,
)
from services.notifications.app import MIGRATIONS as NOTIFICATIONS
from services.orders.app import MIGRATIONS
from services.payments.app import MIGRATIONS as PAYMENTS
from services.users.app import MIGRATIONS as USERS

# The SHA-256 of the SQL the services' folders held as copies: the checksums existing databases
# recorded, by which their records move to the shared sets.
COPIED_CHECKSUMS = {
    OUTBOX.name: "29b61483ca6a888645d3eaa973459edf99ab35a24460f4452a13c37fb73a116b",
    PROCESSED_EVENTS.name: "3b9b48fc338e0229a3efd8e7a24147a9c98759911f6cc525b7c5078c97e6c1ee",
}


def test_migrations_are_loaded_in_version_order(tmp_path):
    (tmp_path / "0010_later.sql").write_text("SELECT 10;")
    (tmp_path / "0002_second.sql").write_text("SELECT 2;")
    (tmp_path / "0001_init.sql").write_text("SELECT 1;")
    (tmp_path / "README.md").write_text("not a migration")
    assert [(m.version, m.name) for m in load_migrations(tmp_path)] == [
        (1, "init"),
        (2, "second"),
        (10, "later"),
    ]


@pytest.mark.parametrize("name", ["1_init.sql", "0001-init.sql", "0001_Init.sql", "init.sql"])
def test_badly_named_migration_files_are_refused(tmp_path, name):
    (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)


def test_a_version_used_twice_is_refused(tmp_path):
    (tmp_path / "0001_init.sql").write_text("SELECT 1;")
    (tmp_path / "0001_other.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="appears twice"):
        load_migrations(tmp_path)


def test_checksum_follows_the_sql(tmp_path):
    (tmp_path / "0001_init.sql").write_text("SELECT 1;")
    first = load_migrations(tmp_path)[0].checksum
    (tmp_path / "0001_init.sql").write_text("SELECT 2;")
    assert load_migrations(tmp_path)[0].checksum != first


def test_orders_ships_its_initial_migration():
    migrations = load_migrations(MIGRATIONS.directory)
    assert migrations[0].version == 1
    assert "CREATE TABLE orders" in migrations[0].sql
    assert "CREATE TABLE idempotency_keys" in migrations[0].sql


def test_the_shared_sets_come_before_the_services_own(tmp_path):
    outbox = MigrationSet("outbox", tmp_path / "outbox")
    migrations = ServiceMigrations(tmp_path / "orders", shared=(outbox,))
    assert migrations.sets == (outbox, MigrationSet("service", tmp_path / "orders"))


@pytest.mark.parametrize("names", [("outbox", "outbox"), ("service",)])
def test_two_sets_recorded_under_one_name_are_refused(tmp_path, names):
    with pytest.raises(ValueError, match="distinct names"):
        ServiceMigrations(tmp_path, shared=tuple(MigrationSet(n, tmp_path / n) for n in names))


def test_a_services_folder_may_skip_versions(tmp_path):
    (tmp_path / "0001_init.sql").write_text("SELECT 1;")
    (tmp_path / "0004_later.sql").write_text("SELECT 4;")
    assert [m.version for m in load_migrations(tmp_path)] == [1, 4]


def test_a_version_keyed_history_moves_only_the_copies_of_shared_migrations():
    shared = [
        Recorded("outbox", 1, "outbox", "sha-outbox"),
        Recorded("processed_events", 1, "processed_events", "sha-processed"),
    ]
    legacy = [
        Recorded("service", 1, "init", "sha-init"),
        Recorded("service", 2, "outbox", "sha-outbox"),
        Recorded("service", 3, "processed_events", "sha-processed"),
        Recorded("service", 4, "later", "sha-later"),
    ]
    assert keyed_by_set(legacy, shared) == [
        Recorded("service", 1, "init", "sha-init"),
        *shared,
        Recorded("service", 4, "later", "sha-later"),
    ]


def test_a_copy_of_a_set_the_service_does_not_declare_stays_in_its_folders_set():
    legacy = [Recorded("service", 2, "outbox", "sha-outbox")]
    shared = [Recorded("processed_events", 1, "processed_events", "sha-processed")]
    assert keyed_by_set(legacy, shared) == legacy


@pytest.mark.parametrize("migration_set", [OUTBOX, PROCESSED_EVENTS])
def test_each_messaging_sets_first_migration_is_the_sql_the_services_copied(migration_set):
    migration, *added_since = load_migrations(migration_set.directory)
    assert all(later.version > 1 for later in added_since)
    assert (migration.version, migration.name) == (1, migration_set.name)
    assert f"CREATE TABLE {migration_set.name} (" in migration.sql
    assert migration.checksum == COPIED_CHECKSUMS[migration_set.name]


@pytest.mark.parametrize(
    ("service", "shared"),
    [
        (MIGRATIONS, (OUTBOX, PROCESSED_EVENTS)),
        (PAYMENTS, (OUTBOX, PROCESSED_EVENTS)),
        (USERS, (OUTBOX,)),
        (AUTH, (PROCESSED_EVENTS,)),
        (NOTIFICATIONS, (PROCESSED_EVENTS,)),
    ],
)
def test_each_service_declares_its_messaging_tables_and_keeps_no_copy(service, shared):
    assert service.shared == shared
    for migration in load_migrations(service.directory):
        assert migration.checksum not in COPIED_CHECKSUMS.values()
        assert "CREATE TABLE outbox" not in migration.sql
        assert "CREATE TABLE processed_events" not in migration.sql
