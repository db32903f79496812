"""Reads a service's accepts document from SSM (boto3, the standard AWS
environment) and checks that the key given on stdin is accepted, by digest:
unpadded base64url of SHA-256 over the key's UTF-8 bytes. Prints the state."""
import base64
import hashlib
import json
import sys

import boto3

name = sys.argv[1]
key = sys.stdin.read()
digest = base64.urlsafe_b64encode(hashlib.sha256(key.encode("utf-8")).digest()).rstrip(b"=").decode()
value = boto3.client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
document = json.loads(value)
assert document["v"] == 1, document["v"]
assert key not in value, "an accepts document must hold digests, never keys"
states = [k["state"] for k in document["keys"] if k["sha256"] == digest]
if not states:
    sys.exit(f"no key with digest {digest[:8]} in {name}")
print(states[0])
