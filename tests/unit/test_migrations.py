import pytest

from services.common.migrations import MigrationError, load_migrations
from services.orders.app import MIGRATIONS


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
    migrations = load_migrations(MIGRATIONS)
    assert migrations[0].version == 1
    assert "CREATE TABLE orders" in migrations[0].sql
    assert "CREATE TABLE idempotency_keys" in migrations[0].sql
