"""Any bytes a client can put into the history route's query parameters are a 4xx problem or a
history, never a 5xx; what reaches the repository is text Postgres can store."""

import asyncio

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from services.notifications.hub import Hub
from tests.unit.hostile_text import (
    assert_client_error_or_success,
    hostile_bytes_up_to,
    percent_encoded,
    store_as_postgres_would,
)
from tests.unit.test_notifications_api import ADMIN, PROBLEM, FakeRepository, build_app, new_service


class StoringRepository(FakeRepository):
    """FakeRepository that queries with its text arguments as Postgres would."""

    async def list_for_user(self, user_id, *, limit, after):
        store_as_postgres_would(user_id)
        return await super().list_for_user(user_id, limit=limit, after=after)


def history(query: str, headers=ADMIN) -> tuple[int, str, bytes]:
    async def go():
        hub = Hub()
        app = build_app(hub, new_service(StoringRepository()))
        async with TestClient(TestServer(app)) as client:
            resp = await client.get(URL(f"/notifications?{query}", encoded=True), headers=headers)
            return resp.status, resp.headers["Content-Type"], await resp.read()

    return asyncio.run(go())


# Three of them fit in one request line.
optional_bytes = st.none() | hostile_bytes_up_to(200)


@settings(max_examples=200, deadline=None)
@given(user_id=optional_bytes, limit=optional_bytes, after=optional_bytes)
def test_any_bytes_in_the_history_parameters_are_never_a_server_error(user_id, limit, after):
    params = {"userId": user_id, "limit": limit, "after": after}
    query = "&".join(
        f"{name}={percent_encoded(raw)}" for name, raw in params.items() if raw is not None
    )
    assert_client_error_or_success(*history(query))


def test_a_nul_in_the_user_id_parameter_is_a_400_problem_naming_it():
    status, content_type, body = history("userId=bob%00")
    assert (status, content_type) == (400, PROBLEM)
    assert b"query parameter userId must not contain control characters" in body


def test_a_limit_with_thousands_of_digits_is_a_400_problem_naming_it():
    status, content_type, body = history("limit=" + "9" * 5000)
    assert (status, content_type) == (400, PROBLEM)
    assert b'"field": "limit"' in body
