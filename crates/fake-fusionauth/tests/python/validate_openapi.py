"""Validates the fake FusionAuth's recorded answers against FusionAuth's OpenAPI.

Usage: validate_openapi.py SPEC.yaml < exchanges.json
       validate_openapi.py SPEC.yaml --self-test

Reads the exchanges the fake recorded (its request log: method, path, status,
response JSON) and checks every answer against the response the spec declares
for that operation and status (or `default`): a JSON body where the spec has
content, validated against the schema with every $ref resolved; an empty body
where it has none. Schemas are made strict (no properties beyond those the
spec names), so the fake cannot invent fields FusionAuth does not have.
Paths outside the spec subset (/api/status, /api/system/version, other /api
endpoints the fake only authenticates) have a small table of their own below.
Exits 1 listing every failure.
"""

import copy
import json
import re
import sys

import jsonschema
import yaml

HTTP_METHODS = ("get", "put", "post", "delete", "patch")


def load(spec_path):
    with open(spec_path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def resolve(spec, node, seen=()):
    """Inlines every $ref and makes object schemas strict."""
    if isinstance(node, list):
        return [resolve(spec, n, seen) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        if ref in seen:
            raise ValueError(f"recursive $ref {ref}")
        target = spec
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        return resolve(spec, target, seen + (ref,))
    out = {k: resolve(spec, v, seen) for k, v in node.items() if not k.startswith("x-")}
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def compile_paths(spec):
    paths = []
    for template, item in spec["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        paths.append((re.compile(pattern), template, item))
    return paths


# Answers outside the spec subset: FusionAuth documents these without a schema
# in openapi-apikey.yaml. Each maps status -> schema (None = empty body).
ERRORS_REF = {"$ref": "#/components/schemas/Errors"}
EXTRA = {
    ("get", "/api/status"): {
        # Upstream StatusResponse is an object with unspecified properties;
        # the docs promise only `version` (with a key).
        200: {"type": "object", "properties": {"status": {"type": "string"}, "version": {"type": "string"}}},
        401: None,
    },
    ("get", "/api/system/version"): {
        200: {"type": "object", "properties": {"version": {"type": "string"}}, "required": ["version"]},
    },
}
# Any /api request may get these (auth failures, unknown objects, wrong
# methods, a bad tenant header, injected faults).
ANY_API = {400: ERRORS_REF, 401: None, 404: None, 405: None, 500: None, 503: ERRORS_REF}


def expected(spec, paths, method, path, status):
    """The schema for an answer (None = empty body), or raises KeyError."""
    method = method.lower()
    for pattern, template, item in paths:
        if pattern.match(path):
            operation = item.get(method)
            if operation is None:
                break  # a path of the spec, but not this method: generic rules
            responses = operation["responses"]
            response = responses.get(str(status)) or responses.get("default")
            if response is None:
                raise KeyError(f"{template} {method.upper()} declares no response {status}")
            content = response.get("content")
            if not content:
                return None
            return content["application/json"]["schema"]
    extra = EXTRA.get((method, path), {})
    if status in extra:
        return extra[status]
    if status in ANY_API:
        return ANY_API[status]
    raise KeyError(f"no answer {status} is expected for {method.upper()} {path}")


def check(spec, paths, exchange):
    """The list of problems with one recorded answer."""
    status = exchange.get("status")
    if status is None:
        return []  # the connection was dropped on purpose: nothing was sent
    method, path = exchange["method"], exchange["path"]
    body = exchange.get("responseJson")
    try:
        schema = expected(spec, paths, method, path, status)
    except KeyError as e:
        return [str(e)]
    if schema is None:
        if body is not None:
            return [f"status {status} must have an empty body, got {json.dumps(body)[:200]}"]
        return []
    if body is None:
        return [f"status {status} must have a JSON body, got none"]
    content_type = exchange.get("responseContentType") or ""
    if not content_type.startswith("application/json"):
        return [f"JSON body sent with Content-Type {content_type!r}"]
    validator = jsonschema.Draft7Validator(
        resolve(spec, schema), format_checker=jsonschema.FormatChecker()
    )
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(body)
    ]


def validate(spec, exchanges):
    paths = compile_paths(spec)
    failures = []
    for exchange in exchanges:
        for problem in check(spec, paths, exchange):
            failures.append(
                f"#{exchange.get('seq')} {exchange['method']} {exchange['path']} -> "
                f"{exchange.get('status')}: {problem}"
            )
    return failures


def exchange(method, path, status, body=None):
    return {
        "seq": 0,
        "method": method,
        "path": path,
        "status": status,
        "responseJson": body,
        "responseContentType": None if body is None else "application/json;charset=UTF-8",
    }


KEY = "/api/api-key/4f2b1c9e-2a8d-4c51-9a36-0f4d8c5e7b21"
GOOD_KEY = {
    "apiKey": {
        "id": "4f2b1c9e-2a8d-4c51-9a36-0f4d8c5e7b21",
        "key": "k",
        "keyManager": False,
        "retrievable": True,
        "insertInstant": 1767225600000,
        "lastUpdateInstant": 1767225600000,
        "permissions": {"endpoints": {"/api/user": ["GET"]}},
    }
}


def self_test(spec):
    """The validator must accept good answers and reject each known defect."""
    good = [
        exchange("GET", KEY, 200, GOOD_KEY),
        exchange("DELETE", KEY, 200),
        exchange("GET", KEY, 404),
        exchange("POST", "/api/api-key", 401),
        exchange("POST", "/api/api-key", 400, {"fieldErrors": {"apiKey.name": [{"code": "[duplicate]apiKey.name", "message": "m"}]}, "generalErrors": []}),
        exchange("GET", "/api/status", 200, {"status": "ok"}),
    ]
    bad_key = copy.deepcopy(GOOD_KEY)
    bad_key["apiKey"]["insertInstant"] = "2026-01-01T00:00:00Z"
    extra_field = copy.deepcopy(GOOD_KEY)
    extra_field["apiKey"]["description"] = "not a FusionAuth field"
    bad_method = copy.deepcopy(GOOD_KEY)
    bad_method["apiKey"]["permissions"]["endpoints"]["/api/user"] = ["FETCH"]
    long_key = copy.deepcopy(GOOD_KEY)
    long_key["apiKey"]["key"] = "x" * 192
    bad_id = copy.deepcopy(GOOD_KEY)
    bad_id["apiKey"]["id"] = "not-a-uuid"
    bad = [
        exchange("GET", KEY, 200, bad_key),
        exchange("GET", KEY, 200, extra_field),
        exchange("GET", KEY, 200, bad_method),
        exchange("GET", KEY, 200, long_key),
        exchange("GET", KEY, 200, bad_id),
        exchange("GET", KEY, 401, {"generalErrors": []}),
        exchange("GET", KEY, 404, {}),
        exchange("DELETE", KEY, 200, {"apiKey": {}}),
        exchange("POST", "/api/api-key", 400, {"fieldErrors": [{"code": "[duplicate]apiKey.name"}], "generalErrors": []}),
        exchange("POST", "/api/api-key", 200),
        exchange("GET", "/api/api-key", 200, {"apiKeys": []}),
    ]
    failures = validate(spec, good)
    if failures:
        print("self-test: good answers were rejected:\n" + "\n".join(failures))
        return 1
    missed = [b for b in bad if not validate(spec, [b])]
    if missed:
        print("self-test: bad answers were accepted:\n" + "\n".join(json.dumps(m) for m in missed))
        return 1
    print(f"self-test: {len(good)} good answers accepted, {len(bad)} bad answers rejected")
    return 0


def main():
    spec = load(sys.argv[1])
    if sys.argv[2:] == ["--self-test"]:
        return self_test(spec)
    exchanges = json.load(sys.stdin)
    failures = validate(spec, exchanges)
    if failures:
        print(f"{len(failures)} of {len(exchanges)} answers do not match {sys.argv[1]}:")
        print("\n".join(failures))
        return 1
    print(f"{len(exchanges)} answers match {sys.argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
