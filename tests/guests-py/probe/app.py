"""A Python guest for the tests: tries what the sandbox must refuse
(files, environment, sockets), uses state, fetches URLs through the host
and raises each error kind on request."""

import os
import socket

import switchyard_connector as sy


def attempt(what):
    try:
        return {"ok": repr(what())[:200]}
    except BaseException as error:  # noqa: BLE001 - report every refusal
        return {"refused": f"{type(error).__name__}: {error}"[:200]}


class Probe(sy.Connector):
    name = "py-probe"
    version = "0.1.0"
    description = "sandbox probe"

    @sy.action("sandbox", "what the guest can reach on its own")
    def sandbox(self, input):
        port = int(input.get("port", 9))

        def connect():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(("127.0.0.1", port))
            return "connected"

        return {
            "open": attempt(lambda: open("/etc/passwd").read()),
            "listdir": attempt(lambda: os.listdir("/")),
            "environ": dict(os.environ),
            "socket": attempt(connect),
        }

    @sy.action("state", "one state operation")
    def state(self, input):
        op, key = input["op"], input.get("key", "")
        if op == "get":
            value = sy.state.get(key)
            return {"result": None if value is None else value.decode()}
        if op == "set":
            sy.state.set(key, input["value"])
            return {"result": None}
        if op == "cas":
            return {"result": sy.state.compare_and_swap(key, input.get("expected"), input.get("new"))}
        if op == "keys":
            return {"result": sy.state.keys(input.get("prefix", ""), 100)}
        raise sy.InvalidInput(f"unknown op `{op}`")

    @sy.action("fetch", "GET a URL through the host")
    def fetch(self, input):
        try:
            response = sy.http.get(input["url"], bearer_secret=input.get("secret"),
                                   bearer_oauth=input.get("oauth"))
        except sy.http.TransportError as error:
            return {"code": error.code, "error": error.message}
        return {"status": response.status, "body": response.text[:2000]}

    @sy.action("fail", "raise the error kind asked for")
    def fail(self, input):
        kind = input["kind"]
        if kind == "retryable":
            raise sy.Retryable("try again")
        if kind == "permanent":
            raise sy.Permanent("never")
        if kind == "rate_limited":
            raise sy.RateLimited("slow down", retry_after_ms=1500)
        if kind == "invalid_input":
            raise sy.InvalidInput("bad field")
        return {"crash": 1 / 0}

    def transform(self, messages):
        out = []
        for m in messages:
            record = sy.json_loads(m.payload)
            record["seen_by"] = "python"
            out.append(sy.message(m.id, m.stream, record, key=m.key))
        return out


Connector = sy.export(Probe)
