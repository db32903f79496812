"""Drives the fake with FusionAuth's official Python client (fusionauth-client==1.69.0).

Usage: official_client.py BASE_URL MANAGER_KEY

Runs create (with and without an id), retrieve, update, delete and the error
cases through `FusionAuthClient`, exactly as an application would, and
asserts what the client hands back. Seeds the keys it needs beyond the
manager (expired, tenant-scoped) through the fake's /_fake inspection calls.
Prints one line per check; exits non-zero on the first failure.
"""

import json
import sys
import time
import urllib.request
import uuid

from fusionauth.fusionauth_client import FusionAuthClient

URL, MANAGER = sys.argv[1], sys.argv[2]
client = FusionAuthClient(MANAGER, URL)


def check(what, condition, detail=""):
    if not condition:
        raise AssertionError(f"{what}: {detail}")
    print(f"ok - {what}")


def fake(method, path, body=None):
    """The fake's own inspection calls (outside FusionAuth's API)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(URL + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


def field_codes(response, field):
    errors = response.error_response
    assert isinstance(errors["fieldErrors"], dict), errors
    assert isinstance(errors["generalErrors"], list), errors
    return [e["code"] for e in errors["fieldErrors"].get(field, [])]


def empty_401(response):
    return response.status == 401 and response.response.content == b""


def now_ms():
    return int(time.time() * 1000)


def main():
    suffix = uuid.uuid4().hex[:8]
    permissions = {"endpoints": {"/api/user": ["GET", "POST"], "/api/system/version": ["GET"]}}

    # Create without an id.
    created = client.create_api_key({"apiKey": {
        "name": f"client-generated-{suffix}",
        "permissions": permissions,
        "metaData": {"attributes": {"description": "made by the official client"}},
    }})
    check("create without id answers 200", created.was_successful(), created.status)
    generated = created.success_response["apiKey"]
    check("the id is a generated UUID", uuid.UUID(generated["id"]).version == 4, generated["id"])
    check("the key is 56 characters", len(generated["key"]) == 56, len(generated["key"]))
    check("keyManager is false", generated["keyManager"] is False)
    check("retrievable defaults to true", generated["retrievable"] is True)
    check("instants are epoch milliseconds",
          isinstance(generated["insertInstant"], int) and generated["insertInstant"] > 1_600_000_000_000)
    check("methods come back as a set",
          sorted(generated["permissions"]["endpoints"]["/api/user"]) == ["GET", "POST"])

    # Create with an id.
    chosen = str(uuid.uuid4())
    created = client.create_api_key({"apiKey": {
        "name": f"client-chosen-{suffix}",
        "permissions": permissions,
        "expirationInstant": now_ms() + 3_600_000,
    }}, chosen)
    check("create with id answers 200", created.was_successful(), created.status)
    check("the key has the chosen id", created.success_response["apiKey"]["id"] == chosen)

    # Retrieve.
    retrieved = client.retrieve_api_key(chosen)
    check("retrieve answers 200", retrieved.was_successful(), retrieved.status)
    key = retrieved.success_response["apiKey"]
    check("retrieve shows the key value of a retrievable key",
          key["key"] == created.success_response["apiKey"]["key"])
    check("retrieve shows the expiration", "expirationInstant" in key)

    # The new key works where it is permitted, and only there.
    minted = FusionAuthClient(key["key"], URL)
    check("a minted key may call its permitted endpoint",
          minted.start().uri("/api/system/version").get().go().status == 200)
    check("a minted key is refused elsewhere with an empty 401",
          empty_401(minted.start().uri("/api/group").get().go()))
    check("a key that is not a key manager cannot call the API Key API",
          empty_401(minted.retrieve_api_key(chosen)))

    # Update: PUT replaces; what it omits is cleared.
    updated = client.update_api_key(chosen, {"apiKey": {
        "name": f"client-chosen-{suffix}",
        "permissions": {"endpoints": {"/api/user": ["GET"]}},
    }})
    check("update answers 200", updated.was_successful(), updated.status)
    key = updated.success_response["apiKey"]
    check("update replaced the permissions", key["permissions"] == {"endpoints": {"/api/user": ["GET"]}})
    check("update without expirationInstant cleared it", "expirationInstant" not in key)
    check("update without metaData cleared it", "metaData" not in key)
    check("lastUpdateInstant moves", key["lastUpdateInstant"] >= key["insertInstant"])

    updated = client.update_api_key(chosen, {"apiKey": {"name": f"client-chosen-{suffix}"}})
    check("update without permissions answers 200", updated.was_successful(), updated.status)
    check("update without permissions made a super key",
          "permissions" not in updated.success_response["apiKey"])
    check("the super key may call any endpoint",
          minted.start().uri("/api/system/version").get().go().status == 200
          and minted.start().uri("/api/group").get().go().status == 404)

    # Non-retrievable keys show their value once.
    once = client.create_api_key({"apiKey": {
        "name": f"client-once-{suffix}", "retrievable": False, "permissions": permissions}})
    check("a non-retrievable key is created", once.was_successful(), once.status)
    once_key = once.success_response["apiKey"]
    check("its value is in the create answer", len(once_key["key"]) == 56)
    again = client.retrieve_api_key(once_key["id"])
    check("its value is never shown again", again.was_successful() and "key" not in again.success_response["apiKey"])

    # Error cases, as the client reports them.
    duplicate = client.create_api_key({"apiKey": {"name": f"client-generated-{suffix}", "permissions": permissions}})
    check("a duplicate name is a 400", duplicate.status == 400, duplicate.status)
    check("... with fieldErrors keyed by field", field_codes(duplicate, "apiKey.name") == ["[duplicate]apiKey.name"],
          duplicate.error_response)
    same_value = client.create_api_key({"apiKey": {"key": generated["key"], "permissions": permissions}})
    check("a duplicate key value is [duplicate]apiKey.key",
          field_codes(same_value, "apiKey.key") == ["[duplicate]apiKey.key"], same_value.error_response)
    too_long = client.create_api_key({"apiKey": {"key": "k" * 192, "permissions": permissions}})
    check("a key longer than 191 characters is refused",
          too_long.status == 400 and field_codes(too_long, "apiKey.key") == ["[tooLong]apiKey.key"],
          too_long.error_response)
    at_limit = client.create_api_key({"apiKey": {"key": "k" * 191, "permissions": permissions}})
    check("a key of 191 characters is accepted", at_limit.was_successful(), at_limit.status)
    nameless = client.create_api_key({"apiKey": {"retrievable": False, "permissions": permissions}})
    check("a non-retrievable key needs a name",
          field_codes(nameless, "apiKey.name") == ["[blank]apiKey.name"], nameless.error_response)
    taken_id = client.create_api_key({"apiKey": {"permissions": permissions}}, chosen)
    check("an id in use is refused", taken_id.status == 400, taken_id.status)

    missing = client.retrieve_api_key(str(uuid.uuid4()))
    check("retrieving an unknown id is a 404 with an empty body",
          missing.status == 404 and missing.response.content == b"")
    check("the client reports no error document for a 404", missing.error_response is None)

    stranger = FusionAuthClient("not-a-key-" + suffix, URL)
    check("an unknown key gets an empty 401", empty_401(stranger.retrieve_api_key(chosen)))
    bearer = FusionAuthClient("Bearer " + MANAGER, URL)
    check("a Bearer prefix is not accepted", empty_401(bearer.retrieve_api_key(chosen)))
    anonymous = client.start_anonymous().uri("/api/api-key").url_segment(chosen).get().go()
    check("no Authorization header gets an empty 401", empty_401(anonymous))

    expired_value = "expired-manager-" + suffix
    fake("POST", "/_fake/keys", {"key": expired_value, "keyManager": True, "expirationInstant": now_ms() - 1000})
    check("an expired key manager gets an empty 401",
          empty_401(FusionAuthClient(expired_value, URL).retrieve_api_key(chosen)))

    # Tenants: a tenant-scoped manager sees only its tenant's keys.
    tenant = fake("POST", "/_fake/tenants", {})["id"]
    scoped_value = "tenant-manager-" + suffix
    fake("POST", "/_fake/keys", {"key": scoped_value, "keyManager": True, "tenantId": tenant})
    scoped = FusionAuthClient(scoped_value, URL)
    mine = scoped.create_api_key({"apiKey": {"name": f"client-tenant-{suffix}", "permissions": permissions}})
    check("a tenant-scoped manager creates keys", mine.was_successful(), mine.status)
    check("... in its own tenant", mine.success_response["apiKey"].get("tenantId") == tenant)
    check("a tenant-scoped manager cannot see a global key", scoped.retrieve_api_key(chosen).status == 404)
    headed = FusionAuthClient(MANAGER, URL)
    headed.set_tenant_id(tenant)
    check("X-FusionAuth-TenantId scopes a global manager too",
          headed.retrieve_api_key(chosen).status == 404
          and headed.retrieve_api_key(mine.success_response["apiKey"]["id"]).was_successful())
    check("a tenant-scoped request to a global endpoint gets 401",
          headed.retrieve_system_status_using_api_key().status == 401)

    # Delete.
    deleted = client.delete_api_key(chosen)
    check("delete answers 200", deleted.status == 200, deleted.status)
    check("delete sends no body", deleted.response.content == b"" and deleted.success_response is None)
    check("a deleted key is gone", client.retrieve_api_key(chosen).status == 404)
    check("a deleted key no longer authenticates",
          minted.start().uri("/api/system/version").get().go().status == 401)
    check("deleting it again is a 404", client.delete_api_key(chosen).status == 404)

    # No list endpoint, by design.
    listing = client.start().uri("/api/api-key").get().go()
    check("there is no list of API keys", listing.status == 404 and listing.response.content == b"")

    status = client.retrieve_system_status()
    check("GET /api/status answers anonymously", status.was_successful(), status.status)
    status = client.retrieve_system_status_using_api_key()
    check("GET /api/status with a key tells the version",
          status.was_successful() and status.success_response["version"] == "1.69.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
