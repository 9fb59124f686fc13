"""The http-api example connector in Python: calls the REST API at
`base_url`; every request is paced by a rate-limit bucket and carries
`Authorization: Bearer <placeholder>`, which the host swaps for the real
token at egress. Same actions, inputs and errors as plugins/http-api."""

from urllib.parse import quote

import switchyard_connector as sy


def build_url(base, path, query):
    """`base` + `path` + `?query`: the path is appended to the base's own
    path and must start with `/`; an array repeats its key, null sends the
    bare key, other values are sent as JSON text."""
    if not path.startswith("/"):
        raise sy.InvalidInput(f"path `{path}` must start with `/`")
    if any(c in path for c in "# ") or any(ord(c) < 32 for c in path):
        raise sy.InvalidInput(f"path `{path}` has characters a URL path cannot hold")
    url = base.rstrip("/") + path
    separator = "&" if "?" in url else "?"
    for key in sorted(query):
        values = query[key] if isinstance(query[key], list) else [query[key]]
        for value in values:
            url += separator + quote(key, safe="")
            separator = "&"
            if value is None:
                continue
            text = value if isinstance(value, str) else sy.json_text(value)
            url += "=" + quote(text, safe="")
    return url


class HttpApi(sy.Connector):
    name = "http-api-py"
    version = "0.1.0"
    description = "Calls the REST API at `base_url` with a bearer token secret (Python)"

    @sy.action("get", 'GET {"path", "query"?} → {"status", "body"}')
    def get(self, input):
        return self.call("GET", input)

    @sy.action("post", 'POST {"path", "query"?, "body"} as JSON → {"status", "body"}')
    def post(self, input):
        return self.call("POST", input)

    def call(self, method, input):
        if not isinstance(input, dict) or not isinstance(input.get("path"), str):
            raise sy.InvalidInput('input must be {"path": "/…", "query"?: {…}, "body"?: …}')
        unknown = set(input) - {"path", "query", "body"}
        if unknown:
            raise sy.InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))}")
        if method == "GET" and "body" in input:
            raise sy.InvalidInput("`get` takes no `body`")
        base = sy.config.require("base_url", "https://httpbin.org")
        url = build_url(base, input["path"], input.get("query") or {})
        sy.rate_limit.acquire(sy.config.get("rate_bucket", "api"))
        response = sy.http.request(
            method,
            url,
            headers={"accept": "application/json"},
            json=input.get("body"),
            bearer_secret=sy.config.get("token_secret", "api-token"),
        ).raise_for_status()
        try:
            body = response.json()
        except ValueError:
            body = response.text
        return {"status": response.status, "body": body}


Connector = sy.export(HttpApi)
