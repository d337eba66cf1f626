"""The Responses API's stored state (proxy/response_store.py, PROTOCOLS-RESPONSES §4.1): chains of
previous_response_id, item references, store:false, tenancy, retention, and the write kept off the
request's path. Real database (Postgres, and SQLite in the embedded run); the module's own functions
stand in for POST /v1/responses, which calls them the same way."""

import asyncio
import logging
import threading
import time
from datetime import timedelta

import orjson
import pytest
from django.db import connection
from django.utils import timezone

from accounts.tests.factories import OrgFactory, key_for
from proxy import response_store
from proxy.models import StoredItem, StoredResponse
from proxy.response_store import (
    input_items_normalise,
    items_resolve,
    items_with_ids,
    response_store_get,
    response_store_purge_expired,
    response_store_save,
    responses_expand,
    responses_store_drain,
    responses_store_later,
)
from proxy.stored_responses import items_page
from proxy.translate.errors import NULL_CODE, ErrorKind, GatewayError, openai_error_body
from proxy.translate.usage import estimate_responses_prompt_tokens

pytestmark = pytest.mark.embedded
# The module's reads and writes run in the gateway's ORM threads: they must see committed rows.
db = pytest.mark.django_db(transaction=True)


def user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def assistant(item_id: str, text: str) -> dict:
    return {"type": "message", "id": item_id, "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}  # fmt: skip


def function_call(item_id: str, call_id: str) -> dict:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": "get_weather",
            "arguments": '{"city":"Paris"}', "status": "completed"}  # fmt: skip


def response_object(response_id: str, output: list[dict], *, instructions: str | None = None, **extra) -> dict:
    return {"id": response_id, "object": "response", "created_at": 1_790_000_000, "status": "completed",
            "model": "gpt-test", "instructions": instructions, "output": output, "tools": [], "tool_choice": "auto",
            "parallel_tool_calls": True, "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
            **extra}  # fmt: skip


def expand(org, body: dict) -> list[dict]:
    return asyncio.run(responses_expand(org_id=org.id, body=body))


def turn(org, body: dict, response: dict, *, key=None) -> list[dict]:
    """One create request as POST /v1/responses makes it: expand, answer, store after the last byte."""

    async def run():
        items = await responses_expand(org_id=org.id, body=body)
        responses_store_later(org_id=org.id, api_key_id=key.id if key else None, request=body, input_items=items,
                              response=response)  # fmt: skip
        await responses_store_drain()
        return items

    return asyncio.run(run())


def error_of(org, body: dict) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        expand(org, body)
    return caught.value


def without_ids(items: list[dict]) -> list[dict]:
    return [{k: v for k, v in item.items() if k != "id"} for item in items]


@pytest.fixture
def org():
    return OrgFactory()


@pytest.fixture
def other_org():
    return OrgFactory()


# -- pure helpers ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("_case", "value", "expected"),
    [
        ("string input", "Hi", [user("Hi")]),
        ("no input", None, []),
        ("AI SDK message without type", [{"role": "user", "content": [{"type": "input_text", "text": "x"}]}],
         [user("x")]),
        ("string content, user", [{"type": "message", "role": "developer", "content": "Be brief."}],
         [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]}]),
        ("string content, assistant", [{"role": "assistant", "content": "ok"}],
         [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok", "annotations": []}]}]),
        ("other items unchanged", [function_call("fc_1", "call_1"), {"type": "item_reference", "id": "fc_1"}],
         [function_call("fc_1", "call_1"), {"type": "item_reference", "id": "fc_1"}]),
    ],
)  # fmt: skip
def test_input_is_normalised_to_items(_case, value, expected):
    original = orjson.dumps(value)
    assert input_items_normalise(value) == expected
    assert orjson.dumps(value) == original  # the caller's body is not changed


@pytest.mark.parametrize(
    ("_case", "value", "param"),
    [
        ("input a number", 5, "input"),
        ("an item not an object", ["hi"], "input[0]"),
        ("item_reference without id", [{"type": "item_reference"}], "input[0].id"),
    ],
)
def test_invalid_input_is_a_400_naming_the_field(_case, value, param):
    with pytest.raises(GatewayError) as caught:
        input_items_normalise(value)
    assert (caught.value.kind, caught.value.param, caught.value.code) == (ErrorKind.INVALID_REQUEST, param, "invalid_type")


def test_items_resolve_replaces_references_and_id_only_reasoning():
    stored = {"fc_1": function_call("fc_1", "call_1"),
              "rs_1": {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "rg1.abc"}}  # fmt: skip
    items = [{"type": "item_reference", "id": "fc_1"}, {"type": "reasoning", "id": "rs_1", "summary": []},
             {"type": "reasoning", "id": "rs_unknown", "summary": []},
             {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "client-copy"}]  # fmt: skip
    assert items_resolve(items, stored) == [
        stored["fc_1"], stored["rs_1"],
        {"type": "reasoning", "id": "rs_unknown", "summary": []},  # left for the converter to drop (§4.1)
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "client-copy"},
    ]  # fmt: skip
    with pytest.raises(GatewayError) as caught:
        items_resolve([{"type": "item_reference", "id": "msg_gone"}], stored)
    assert caught.value.kind is ErrorKind.NOT_FOUND
    assert openai_error_body(caught.value) == {"error": {
        "message": "Item with id 'msg_gone' not found. Items are not persisted when `store` is set to false. "
                   "Try again with `store` set to true, or remove this item from your input.",
        "type": "invalid_request_error", "param": "input", "code": None}}  # fmt: skip


def test_items_get_ids_of_their_type_when_they_have_none():
    counter = iter(range(10))
    items = [user("a"), {"type": "function_call_output", "call_id": "c", "output": "x"}, {"type": "web_search_call"},
             function_call("fc_keep", "c")]  # fmt: skip
    assert [i["id"] for i in items_with_ids(items, new_id=lambda p: f"{p}{next(counter)}")] == [
        "msg_0", "fco_1", "item_2", "fc_keep"
    ]


def test_null_code_is_null_in_the_openai_body_and_default_codes_stay():
    assert openai_error_body(GatewayError(ErrorKind.NOT_FOUND, "x", code=NULL_CODE))["error"]["code"] is None
    assert openai_error_body(GatewayError(ErrorKind.NOT_FOUND, "x"))["error"]["code"] == "model_not_found"
    assert openai_error_body(GatewayError(ErrorKind.NOT_FOUND, "x", code="c"))["error"]["code"] == "c"


@pytest.mark.parametrize(
    ("_case", "after", "limit", "order", "ids", "has_more"),
    [
        ("desc by default, first page", None, 2, "desc", ["e", "d"], True),
        ("desc, after d", "d", 2, "desc", ["c", "b"], True),
        ("desc, last page", "b", 2, "desc", ["a"], False),
        ("asc, exact end", "c", 2, "asc", ["d", "e"], False),
        ("asc, all", None, 100, "asc", ["a", "b", "c", "d", "e"], False),
        ("after the last", "e", 5, "asc", [], False),
    ],
)
def test_items_page(_case, after, limit, order, ids, has_more):
    items = [{"type": "message", "id": i} for i in "abcde"]
    page = items_page(items, after=after, limit=limit, order=order)
    assert page == {"object": "list", "data": [{"type": "message", "id": i} for i in ids],
                    "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None,
                    "has_more": has_more}  # fmt: skip


def test_input_token_estimate_counts_instructions_items_and_tools():
    items = [
        user("12345678"),  # 4 overhead + 2
        assistant("msg_1", "abcd"),  # 4 + 1
        function_call("fc_1", "call_1"),  # "get_weather" 3 + '{"city":"Paris"}' 4
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},  # 2
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "thinking"}],
         "encrypted_content": "x" * 4000},  # 2: the ciphertext's size is not the model's reading
        {"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "data:,", "detail": "auto"}]},
    ]  # fmt: skip
    tools = [{"type": "function", "name": "f"}]  # '[{"type":"function","name":"f"}]' = 32 bytes -> 8
    assert estimate_responses_prompt_tokens({"instructions": "Be brief.", "tools": tools}, items) == (
        3 + 6 + 5 + 7 + 2 + 2 + (4 + 1000) + 8
    )


# -- expansion from the store ----------------------------------------------------------------------------------------
@db
def test_a_chain_of_three_expands_in_order_without_earlier_instructions(org):
    # given: three turns, each continuing the previous one, each with its own instructions
    key = key_for(org).api_key
    body1 = {"model": "gpt-test", "instructions": "FIRST-INSTRUCTIONS", "input": "What is the weather in Paris?"}
    items1 = turn(org, body1, response_object("resp_1", [assistant("msg_a1", "Let me check.")],
                                              instructions="FIRST-INSTRUCTIONS"), key=key)  # fmt: skip
    body2 = {"model": "gpt-test", "instructions": "SECOND-INSTRUCTIONS", "previous_response_id": "resp_1",
             "input": [{"role": "user", "content": "Go on."}]}  # fmt: skip
    items2 = turn(org, body2, response_object("resp_2", [function_call("fc_w", "call_w")],
                                              instructions="SECOND-INSTRUCTIONS"), key=key)  # fmt: skip
    body3 = {"model": "gpt-test", "instructions": "THIRD-INSTRUCTIONS", "previous_response_id": "resp_2",
             "input": [{"type": "function_call_output", "call_id": "call_w", "output": "18C, sunny"}]}  # fmt: skip

    # when
    items3 = expand(org, body3)

    # then: turn 1's input and output, turn 2's input and output, then the new input — nothing else
    assert items1 == [user("What is the weather in Paris?")]
    stored1 = StoredResponse.objects.get(id="resp_1")
    stored2 = StoredResponse.objects.get(id="resp_2")
    assert items2 == [*stored1.input_items, assistant("msg_a1", "Let me check."), user("Go on.")]
    assert items3 == [
        *stored2.input_items,
        function_call("fc_w", "call_w"),
        {"type": "function_call_output", "call_id": "call_w", "output": "18C, sunny"},
    ]
    assert without_ids(items3) == without_ids([
        user("What is the weather in Paris?"), assistant("msg_a1", "Let me check."), user("Go on."),
        function_call("fc_w", "call_w"), {"type": "function_call_output", "call_id": "call_w", "output": "18C, sunny"},
    ])  # fmt: skip
    assert b"INSTRUCTIONS" not in orjson.dumps(items3)
    # the stored rows: every input item has an id, turn 2's input repeats turn 1's ids
    assert all(item["id"].startswith("msg_") for item in stored1.input_items)
    assert stored2.input_items[0]["id"] == stored1.input_items[0]["id"]
    assert (stored2.org_id, stored2.api_key_id, stored2.model) == (org.id, key.id, "gpt-test")
    assert stored2.response == response_object("resp_2", [function_call("fc_w", "call_w")],
                                               instructions="SECOND-INSTRUCTIONS")  # fmt: skip
    assert stored2.expires_at - stored2.created_at == timedelta(days=30)


@db
def test_store_false_stores_nothing_and_cannot_be_continued(org):
    # when: a turn with store:false
    turn(org, {"model": "gpt-test", "input": "Hi", "store": False},
         response_object("resp_nostore", [assistant("msg_ns", "Hello")], store=False))  # fmt: skip

    # then: nothing stored, not retrievable, not continuable, its items not referenceable
    assert StoredResponse.objects.count() == 0
    assert StoredItem.objects.count() == 0
    assert response_store_get(org_id=org.id, response_id="resp_nostore") is None
    error = error_of(org, {"model": "gpt-test", "previous_response_id": "resp_nostore", "input": "Next"})
    assert (error.kind, error.status_for("openai")) == (ErrorKind.INVALID_REQUEST, 400)
    assert openai_error_body(error) == {"error": {
        "message": "Previous response with id 'resp_nostore' not found.", "type": "invalid_request_error",
        "param": "previous_response_id", "code": "previous_response_not_found"}}  # fmt: skip
    error = error_of(org, {"model": "gpt-test", "input": [{"type": "item_reference", "id": "msg_ns"}]})
    assert (error.kind, error.status_for("openai"), error.param) == (ErrorKind.NOT_FOUND, 404, "input")


@db
@pytest.mark.parametrize("_case", ["unknown", "expired", "another organisation"])
def test_previous_response_that_is_not_this_organisations_is_not_found(org, other_org, _case):
    # given
    now = timezone.now()
    owner = other_org if _case == "another organisation" else org
    if _case != "unknown":
        response_store_save(org_id=owner.id, api_key_id=None, request={"model": "gpt-test"}, input_items=[user("a")],
                            response=response_object("resp_p", [assistant("msg_p", "b")]),
                            now=now - timedelta(days=31) if _case == "expired" else now)  # fmt: skip
    # when / then
    error = error_of(org, {"model": "gpt-test", "previous_response_id": "resp_p", "input": "c"})
    assert (error.code, error.param, error.message) == (
        "previous_response_not_found", "previous_response_id", "Previous response with id 'resp_p' not found."
    )


@db
@pytest.mark.parametrize("previous_id", ["", "chatcmpl-123", "msg_1"])
def test_a_previous_id_that_cannot_be_a_response_is_refused_without_a_lookup(org, monkeypatch, previous_id):
    async def no_database(*args, **kwargs):
        raise AssertionError("looked up an id that is not a response id")

    monkeypatch.setattr(response_store, "run_db", no_database)
    error = error_of(org, {"model": "gpt-test", "previous_response_id": previous_id, "input": "c"})
    assert (error.code, error.message) == ("previous_response_not_found",
                                           f"Previous response with id '{previous_id}' not found.")  # fmt: skip


@db
def test_item_references_resolve_a_stored_function_call_and_its_output(org):
    # given: a stored turn whose input carried a tool result and whose output is a call
    output_item = {"type": "function_call_output", "id": "fco_given", "call_id": "call_1", "output": "42"}
    response_store_save(org_id=org.id, api_key_id=None, request={"model": "gpt-test"},
                        input_items=[user("compute"), function_call("fc_1", "call_1"), output_item],
                        response=response_object("resp_r", [function_call("fc_2", "call_2")]))  # fmt: skip
    # when: a new conversation (no previous_response_id) refers to the stored items by id
    items = expand(org, {"model": "gpt-test", "input": [
        {"type": "item_reference", "id": "fc_1"}, {"type": "item_reference", "id": "fco_given"},
        {"type": "item_reference", "id": "fc_2"}, {"role": "user", "content": "and now?"}]})  # fmt: skip
    # then
    assert items == [function_call("fc_1", "call_1"), output_item, function_call("fc_2", "call_2"), user("and now?")]


@db
@pytest.mark.parametrize("_case", ["never stored", "another organisation", "expired"])
def test_item_reference_that_is_not_this_organisations_is_404(org, other_org, _case):
    now = timezone.now()
    if _case != "never stored":
        owner = other_org if _case == "another organisation" else org
        response_store_save(org_id=owner.id, api_key_id=None, request={"model": "gpt-test"}, input_items=[user("a")],
                            response=response_object("resp_x", [function_call("fc_x", "call_x")]),
                            now=now - timedelta(days=30, seconds=1) if _case == "expired" else now)  # fmt: skip
    error = error_of(org, {"model": "gpt-test", "input": [{"type": "item_reference", "id": "fc_x"}]})
    assert (error.kind, error.param, error.code) == (ErrorKind.NOT_FOUND, "input", NULL_CODE)
    assert error.message.startswith("Item with id 'fc_x' not found.")


@db
def test_id_only_reasoning_is_completed_from_the_store_when_found(org):
    # given: a stored turn whose output kept the reasoning envelope
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "s"}],
                 "encrypted_content": "rg1.envelope"}  # fmt: skip
    response_store_save(org_id=org.id, api_key_id=None, request={"model": "gpt-test"}, input_items=[user("a")],
                        response=response_object("resp_rs", [reasoning, assistant("msg_b", "b")]))  # fmt: skip
    # when: the client replays its items without the ciphertext (AI SDK with store:true), plus an unknown one
    items = expand(org, {"model": "gpt-test", "input": [
        user("a"), {"type": "reasoning", "id": "rs_1", "summary": []}, assistant("msg_b", "b"),
        {"type": "reasoning", "id": "rs_never", "summary": []}, user("c")]})  # fmt: skip
    # then
    assert items == [user("a"), reasoning, assistant("msg_b", "b"), {"type": "reasoning", "id": "rs_never",
                     "summary": []}, user("c")]  # fmt: skip


@db
def test_a_replayed_item_lives_as_long_as_the_newest_response_holding_it(org):
    # given: turn 1 (old, about to expire) and turn 2 (new) which replays turn 1's call
    now = timezone.now()
    response_store_save(org_id=org.id, api_key_id=None, request={}, input_items=[user("a")],
                        response=response_object("resp_old", [function_call("fc_1", "call_1")]),
                        now=now - timedelta(days=29))  # fmt: skip
    response_store_save(org_id=org.id, api_key_id=None, request={}, input_items=[user("a"), function_call("fc_1", "call_1")],
                        response=response_object("resp_new", [assistant("msg_2", "done")]), now=now)  # fmt: skip
    # when: turn 1 expires and is purged
    assert response_store_purge_expired(now=now + timedelta(days=1, seconds=1)) == 1
    # then: the call is still referenceable through turn 2
    assert expand(org, {"input": [{"type": "item_reference", "id": "fc_1"}]}) == [function_call("fc_1", "call_1")]
    new_user_id = StoredResponse.objects.get(id="resp_new").input_items[0]["id"]
    assert sorted(StoredItem.objects.values_list("item_id", "response_id")) == sorted(
        [("fc_1", "resp_new"), ("msg_2", "resp_new"), (new_user_id, "resp_new")]
    )


@db
def test_nothing_to_look_up_needs_no_database(org, monkeypatch):
    async def no_database(*args, **kwargs):
        raise AssertionError("responses_expand used the database")

    monkeypatch.setattr(response_store, "run_db", no_database)
    assert expand(org, {"model": "gpt-test", "input": [{"role": "user", "content": "hi"}, function_call("fc", "c")]}) == [
        user("hi"), function_call("fc", "c")]  # fmt: skip


# -- the write, off the request's path ----------------------------------------------------------------------------
@db
def test_the_write_happens_after_the_call_returned_and_does_not_block_it(org, monkeypatch):
    # given: a database write that cannot finish until the test lets it
    writing, release = threading.Event(), threading.Event()
    real_save = response_store.response_store_save

    def held_save(**kwargs):
        writing.set()
        assert release.wait(20)
        return real_save(**kwargs)

    monkeypatch.setattr(response_store, "response_store_save", held_save)

    async def scenario():
        # when: the request hands its response over at its last byte
        responses_store_later(org_id=org.id, api_key_id=None, request={"model": "gpt-test"},
                              input_items=[user("hi")], response=response_object("resp_bg", []))  # fmt: skip
        # then: the call has returned, and the write is in progress (held) with no row yet
        assert await asyncio.to_thread(writing.wait, 20)
        exists = await response_store.run_db(StoredResponse.objects.filter(id="resp_bg").exists)
        release.set()
        await responses_store_drain()
        return exists, await response_store.run_db(StoredResponse.objects.filter(id="resp_bg").exists)

    assert asyncio.run(scenario()) == (False, True)


@db
def test_a_failed_write_is_logged_and_never_raised(org, caplog):
    async def scenario():
        responses_store_later(org_id=org.id, api_key_id=None, request={}, input_items=[],
                              response={"object": "response", "output": []})  # fmt: skip
        responses_store_later(org_id=org.id + 10_000, api_key_id=None, request={}, input_items=[],
                              response=response_object("resp_no_such_org", []))  # fmt: skip
        await responses_store_drain()

    with caplog.at_level(logging.ERROR, logger="proxy.response_store"):
        asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records] == [
        "storing response None failed", "storing response 'resp_no_such_org' failed"]
    assert StoredResponse.objects.count() == 0


@db
def test_a_follow_up_waits_for_its_predecessors_pending_write(org, monkeypatch):
    # given: turn 1's write is held for longer than the lookup's own retries last
    release = threading.Event()
    real_save = response_store.response_store_save
    monkeypatch.setattr(response_store, "response_store_save",
                        lambda **kw: (release.wait(20), real_save(**kw))[1])  # fmt: skip

    async def scenario():
        responses_store_later(org_id=org.id, api_key_id=None, request={}, input_items=[user("one")],
                              response=response_object("resp_t1", [assistant("msg_t1", "two")]))  # fmt: skip
        # when: the client sends turn 2 at once
        follow_up = asyncio.create_task(responses_expand(org_id=org.id, body={"previous_response_id": "resp_t1",
                                                                               "input": "three"}))  # fmt: skip
        await asyncio.sleep(sum(response_store.PREVIOUS_RETRY_DELAYS) + 0.3)
        waiting = not follow_up.done()
        release.set()
        return waiting, await follow_up

    waiting, items = asyncio.run(scenario())
    # then: it waited and got the whole history
    assert waiting
    assert without_ids(items) == without_ids([user("one"), assistant("msg_t1", "two"), user("three")])


@db
def test_a_follow_up_finds_a_predecessor_written_by_another_process_a_moment_later(org):
    # given: turn 1 is being written by another process (here: a thread), committing 0.15 s from now
    def other_process():
        try:
            response_store_save(org_id=org.id, api_key_id=None, request={}, input_items=[user("one")],
                                response=response_object("resp_elsewhere", [assistant("msg_e", "two")]))  # fmt: skip
        finally:
            connection.close()

    timer = threading.Timer(0.15, other_process)
    timer.start()
    # when
    items = expand(org, {"previous_response_id": "resp_elsewhere", "input": "three"})
    timer.join()
    # then
    assert without_ids(items) == without_ids([user("one"), assistant("msg_e", "two"), user("three")])


# -- retention -----------------------------------------------------------------------------------------------------
@db
def test_the_purge_deletes_only_expired_responses_and_their_items(org, other_org):
    # given: five responses of two organisations, three of them past the retention
    now = timezone.now()
    ages = {"resp_e1": 31, "resp_e2": 40, "resp_e3": 30, "resp_k1": 29, "resp_k2": 0}  # days
    for index, (response_id, days) in enumerate(ages.items()):
        response_store_save(org_id=(org if index % 2 else other_org).id, api_key_id=None, request={},
                            input_items=[user(response_id)],
                            response=response_object(response_id, [assistant(f"msg_{response_id}", "x")]),
                            now=now - timedelta(days=days, seconds=1 if days else 0))  # fmt: skip
    assert StoredItem.objects.count() == 10

    # when: purged in batches of two
    deleted = response_store_purge_expired(now=now, batch_size=2)

    # then
    assert deleted == 3
    assert sorted(StoredResponse.objects.values_list("id", flat=True)) == ["resp_k1", "resp_k2"]
    assert sorted(StoredItem.objects.values_list("response_id", flat=True)) == ["resp_k1", "resp_k1", "resp_k2", "resp_k2"]
    assert response_store_purge_expired(now=now) == 0


@db
def test_the_purge_task_is_scheduled_and_runs(org, settings):
    from proxy.tasks import purge_stored_responses

    assert settings.CELERY_BEAT_SCHEDULE["proxy-purge-stored-responses"]["task"] == purge_stored_responses.name
    assert purge_stored_responses.name == "proxy.tasks.purge_stored_responses"
    response_store_save(org_id=org.id, api_key_id=None, request={}, input_items=[], response=response_object("resp_o", []),
                        now=timezone.now() - timedelta(days=30, seconds=1))  # fmt: skip
    response_store_save(org_id=org.id, api_key_id=None, request={}, input_items=[], response=response_object("resp_y", []))
    assert purge_stored_responses.apply().get() == 1
    assert list(StoredResponse.objects.values_list("id", flat=True)) == ["resp_y"]


@db
def test_retention_follows_the_setting(org, settings):
    settings.RUAPI_RESPONSES_RETENTION_DAYS = 2
    now = timezone.now()
    stored = response_store_save(org_id=org.id, api_key_id=None, request={}, input_items=[],
                                 response=response_object("resp_short", []), now=now)  # fmt: skip
    assert stored.expires_at == now + timedelta(days=2)
    assert response_store_get(org_id=org.id, response_id="resp_short", now=now + timedelta(days=2)) is None
    assert response_store_get(org_id=org.id, response_id="resp_short", now=now + timedelta(days=1)).id == "resp_short"


@db
def test_the_servers_shutdown_waits_for_pending_writes(org, monkeypatch):
    # given: a server loop (ASGI lifespan) with a write still in progress when shutdown begins
    from ruapi.asgi import lifespan_app

    real_save = response_store.response_store_save
    writing = threading.Event()
    monkeypatch.setattr(response_store, "response_store_save",
                        lambda **kw: (writing.set(), time.sleep(0.5), real_save(**kw))[2])  # fmt: skip

    async def scenario():
        inbox: asyncio.Queue = asyncio.Queue()
        sent = []

        async def send(message):
            sent.append(message["type"])

        await inbox.put({"type": "lifespan.startup"})
        server = asyncio.create_task(lifespan_app({"type": "lifespan"}, inbox.get, send))
        responses_store_later(org_id=org.id, api_key_id=None, request={}, input_items=[user("bye")],
                              response=response_object("resp_shutdown", []))  # fmt: skip
        assert await asyncio.to_thread(writing.wait, 20)
        # when
        await inbox.put({"type": "lifespan.shutdown"})
        await server
        return sent

    # then: the shutdown completed only after the row was written
    assert asyncio.run(scenario()) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert StoredResponse.objects.filter(id="resp_shutdown").exists()


@db
def test_any_json_the_client_sent_round_trips_unchanged(org):
    # jsonb would refuse the NUL character and reorder keys; the store keeps the text as produced
    odd = {"type": "message", "role": "user", "content": [{"text": "a\u0000b ✓ \U0001f600", "type": "input_text"}],
           "zeta": 1, "alpha": {"b": 2, "a": 1}}  # fmt: skip
    turn(org, {"model": "gpt-test", "input": [odd]}, response_object("resp_odd", [assistant("msg_odd", "\u0000")]))
    items = expand(org, {"model": "gpt-test", "previous_response_id": "resp_odd"})
    assert items == [{**odd, "id": items[0]["id"]}, assistant("msg_odd", "\u0000")]
    assert list(items[0]) == ["type", "role", "content", "zeta", "alpha", "id"]
    assert list(items[0]["alpha"]) == ["b", "a"]


# -- the write's SQL and its batching (Postgres) -------------------------------------------------------------------
postgres_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="the single-statement write is Postgres'")


def rows_of(org) -> tuple[list, list]:
    responses = StoredResponse.objects.filter(org=org).order_by("id").values_list(
        "id", "api_key_id", "model", "created_at", "expires_at", "response_json", "input_items_json")  # fmt: skip
    items = StoredItem.objects.filter(org=org).order_by("item_id").values_list(
        "item_id", "response_id", "item_type", "item_json")  # fmt: skip
    return list(responses), list(items)


@db
@postgres_only
def test_the_single_statement_writes_what_the_orm_writes(org, other_org):
    # given: the same two turns (the second replays the first's items), stored by each path for its organisation
    now = timezone.now()
    first = {"input_items": [user("a"), function_call("fc_1", "call_1")],
             "response": response_object("resp_1", [assistant("msg_1", "one")])}  # fmt: skip
    second = {"input_items": [user("a"), function_call("fc_1", "call_1"), {"type": "item_reference", "id": "msg_1"}],
              "response": response_object("resp_2", [assistant("msg_1", "again"), assistant("msg_2", "two")])}  # fmt: skip
    key = key_for(org).api_key
    for write, owner, suffix in ((response_store._write_sql, org, ""), (response_store._write_orm, other_org, "_o")):
        for turn_ in (first, second):
            response = {**turn_["response"], "id": turn_["response"]["id"] + suffix}
            write(response_store._prepared(org_id=owner.id, api_key_id=key.id if owner == org else None, request={},
                                           input_items=turn_["input_items"], response=response, now=now))  # fmt: skip
    # then: row for row the same (but the ids of generated input items)
    sql_rows, orm_rows = rows_of(org), rows_of(other_org)

    def comparable(rows, suffix):
        responses, items = rows
        responses = [(rid.removesuffix(suffix), m, c, e, r.replace(suffix, ""), len(orjson.loads(i)))
                     for rid, _, m, c, e, r, i in responses]  # fmt: skip
        generated = sorted((r.removesuffix(suffix), t, j.replace(i, "")) for i, r, t, j in items if len(i) == 36)
        return responses, generated, [(i, r.removesuffix(suffix), t, j) for i, r, t, j in items if len(i) != 36]

    assert comparable(sql_rows, "") == comparable(orm_rows, "_o")
    assert sql_rows[0][0][1] == key.id and orm_rows[0][0][1] is None
    items = dict((i, (r, orjson.loads(j))) for i, r, _, j in sql_rows[1])
    assert items["fc_1"][0] == "resp_2"  # replayed: it now lives with the newest response
    assert items["msg_1"] == ("resp_2", assistant("msg_1", "again"))  # the last of an id in one response wins
    assert len(sql_rows[1]) == len(orm_rows[1]) == 5  # two input messages (generated ids), fc_1, msg_1, msg_2


@db
@postgres_only
def test_a_taken_id_raises_integrity_error_and_writes_nothing(org):
    from django.db import IntegrityError

    response_store_save(org_id=org.id, api_key_id=None, request={}, input_items=[user("a")],
                        response=response_object("resp_taken", [assistant("msg_a", "first")]))  # fmt: skip
    with pytest.raises(IntegrityError):
        response_store_save(org_id=org.id, api_key_id=None, request={}, input_items=[user("b")],
                            response=response_object("resp_taken", [assistant("msg_a", "second")]))  # fmt: skip
    assert orjson.loads(StoredItem.objects.get(item_id="msg_a").item_json)["content"][0]["text"] == "first"


def run_on_server_loop(scenario):
    """`scenario(writer)` on a fresh event loop set up as a server worker's (the batched ledger writer
    running), with this loop's stored-response writer; closed afterwards."""
    from billing.services import holds

    async def main():
        await holds.enable_for_running_loop()
        try:
            writer = response_store._store_writer()
            assert writer is not None
            return await scenario(writer)
        finally:
            await holds.close_for_running_loop()

    return asyncio.run(main())


def store_later(org, response_id: str, output: list[dict], input_items=None) -> None:
    responses_store_later(org_id=org.id, api_key_id=None, request={"model": "gpt-test"},
                          input_items=input_items or [user(response_id)], response=response_object(response_id, output))  # fmt: skip


@pytest.fixture
def batched(settings):
    if connection.vendor != "postgresql":
        pytest.skip("batching is the Postgres backend's")
    settings.RUAPI_BATCHED_LEDGER = True


@db
def test_concurrent_writes_on_a_server_loop_are_few_statements(org, other_org, batched):
    # given: 64 requests finishing at about the same time, of two organisations
    async def scenario(writer):
        async def request(i):
            await asyncio.sleep(0.001 * (i % 8))
            store_later(org if i % 2 else other_org, f"resp_c{i}", [assistant(f"msg_c{i}", str(i))])

        await asyncio.gather(*(request(i) for i in range(64)))
        await responses_store_drain()
        return dict(writer.stats)

    # when
    stats = run_on_server_loop(scenario)
    # then: every response and its items stored, in far fewer statements
    assert stats["responses"] == 64 and stats["one_by_one"] == 0
    assert stats["batches"] < 32
    assert StoredResponse.objects.count() == 64 and StoredItem.objects.count() == 128
    assert StoredItem.objects.get(item_id="msg_c7").response_id == "resp_c7"
    assert StoredResponse.objects.get(id="resp_c7").org_id == org.id


@db
def test_a_batch_with_a_taken_id_stores_the_others_and_logs_that_one(org, batched, caplog):
    # given: a response already stored, and a batch repeating its id between two new ones
    response_store_save(org_id=org.id, api_key_id=None, request={}, input_items=[user("old")],
                        response=response_object("resp_dup", [assistant("msg_dup", "old")]))  # fmt: skip

    async def scenario(writer):
        store_later(org, "resp_ok1", [assistant("msg_ok1", "x")])
        store_later(org, "resp_dup", [assistant("msg_dup", "new")])
        store_later(org, "resp_ok2", [assistant("msg_ok2", "y")])
        store_later(org, "resp_ok2", [assistant("msg_ok2", "z")])  # the same id twice in one batch: the first wins
        await responses_store_drain()
        return dict(writer.stats)

    # when
    with caplog.at_level(logging.ERROR, logger="proxy.response_store"):
        stats = run_on_server_loop(scenario)
    # then: decided one by one, the taken ids refused as ever, the others stored
    assert stats["one_by_one"] == 4
    assert sorted(StoredResponse.objects.values_list("id", flat=True)) == ["resp_dup", "resp_ok1", "resp_ok2"]
    texts = {i: orjson.loads(j)["content"][0]["text"] for i, j in StoredItem.objects.values_list("item_id", "item_json")}
    assert (texts["msg_dup"], texts["msg_ok1"], texts["msg_ok2"]) == ("old", "x", "y")
    assert [r.getMessage() for r in caplog.records] == ["storing response 'resp_dup' failed",
                                                        "storing response 'resp_ok2' failed"]  # fmt: skip


@db
def test_an_item_id_repeated_within_a_batch_is_one_row_and_the_last_wins(org, other_org, batched):
    async def scenario(writer):
        store_later(org, "resp_r1", [function_call("fc_same", "call_1")])
        store_later(org, "resp_r2", [function_call("fc_same", "call_2")])
        store_later(other_org, "resp_r3", [function_call("fc_same", "call_3")])
        await responses_store_drain()
        return dict(writer.stats)

    stats = run_on_server_loop(scenario)
    assert stats["batches"] < 3 and stats["one_by_one"] == 0
    rows = StoredItem.objects.filter(item_id="fc_same").order_by("org_id").values_list("org_id", "response_id", "item_json")
    assert [(o, r, orjson.loads(j)["call_id"]) for o, r, j in rows] == [
        (org.id, "resp_r2", "call_2"), (other_org.id, "resp_r3", "call_3")]  # fmt: skip


@db
def test_on_a_server_loop_a_follow_up_waits_for_its_batched_predecessor(org, batched):
    # given: the batched statement held until the follow-up has waited longer than its own retries
    async def scenario(writer):
        release = asyncio.Event()
        ledger = writer._ledger()
        real_execute = ledger.execute

        async def held_execute(sql, params):
            await release.wait()
            return await real_execute(sql, params)

        ledger.execute = held_execute
        store_later(org, "resp_b1", [assistant("msg_b1", "two")], input_items=[user("one")])
        follow_up = asyncio.create_task(responses_expand(org_id=org.id, body={"previous_response_id": "resp_b1",
                                                                               "input": "three"}))  # fmt: skip
        await asyncio.sleep(sum(response_store.PREVIOUS_RETRY_DELAYS) + 0.3)
        waiting = not follow_up.done()
        release.set()
        return waiting, await follow_up, dict(writer.stats)

    waiting, items, stats = run_on_server_loop(scenario)
    assert waiting and stats["batches"] == 1
    assert without_ids(items) == without_ids([user("one"), assistant("msg_b1", "two"), user("three")])


@db
def test_the_servers_shutdown_drains_batched_writes(org, batched):
    from ruapi.asgi import lifespan_app

    async def scenario():
        inbox: asyncio.Queue = asyncio.Queue()
        started = asyncio.Event()

        async def send(message):
            if message["type"] == "lifespan.startup.complete":
                started.set()

        await inbox.put({"type": "lifespan.startup"})
        server = asyncio.create_task(lifespan_app({"type": "lifespan"}, inbox.get, send))
        await started.wait()
        writer = response_store._store_writer()
        store_later(org, "resp_last", [assistant("msg_last", "bye")])
        await inbox.put({"type": "lifespan.shutdown"})
        await server
        return writer.stats

    stats = asyncio.run(scenario())
    assert stats["responses"] == 1
    assert StoredResponse.objects.filter(id="resp_last").exists()
