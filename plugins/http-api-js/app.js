// The http-api example connector in JavaScript: calls the REST API at
// `base_url`; every request is paced by a rate-limit bucket and carries
// `Authorization: Bearer <placeholder>`, which the host swaps for the real
// token at egress. Same actions, inputs and errors as plugins/http-api.
import * as sy from "switchyard-connector";

// `base` + `path` + `?query`: the path is appended to the base's own path
// and must start with `/`; an array repeats its key, null sends the bare
// key, other values are sent as JSON text.
export function buildUrl(base, path, query) {
  if (!path.startsWith("/")) throw new sy.InvalidInput(`path \`${path}\` must start with \`/\``);
  if (/[#\s\x00-\x1f]/.test(path)) {
    throw new sy.InvalidInput(`path \`${path}\` has characters a URL path cannot hold`);
  }
  let url = base.replace(/\/+$/, "") + path;
  let separator = url.includes("?") ? "&" : "?";
  for (const key of Object.keys(query).sort()) {
    const values = Array.isArray(query[key]) ? query[key] : [query[key]];
    for (const value of values) {
      url += separator + encodeURIComponent(key);
      separator = "&";
      if (value === null) continue;
      url += "=" + encodeURIComponent(typeof value === "string" ? value : JSON.stringify(value));
    }
  }
  return url;
}

class HttpApi extends sy.Connector {
  static info = {
    name: "http-api-js",
    version: "0.1.0",
    description: "Calls the REST API at `base_url` with a bearer token secret (JavaScript)",
  };
  static actions = {
    get: 'GET {"path", "query"?} → {"status", "body"}',
    post: 'POST {"path", "query"?, "body"} as JSON → {"status", "body"}',
  };

  get(input) {
    return this.call("GET", input);
  }

  post(input) {
    return this.call("POST", input);
  }

  async call(method, input) {
    if (!input || typeof input.path !== "string") {
      throw new sy.InvalidInput('input must be {"path": "/…", "query"?: {…}, "body"?: …}');
    }
    const unknown = Object.keys(input).filter((k) => !["path", "query", "body"].includes(k));
    if (unknown.length) throw new sy.InvalidInput(`unknown field(s): ${unknown.sort().join(", ")}`);
    if (method === "GET" && "body" in input) throw new sy.InvalidInput("`get` takes no `body`");
    const base = sy.config.require("base_url", "https://httpbin.org");
    const url = buildUrl(base, input.path, input.query ?? {});
    sy.rateLimit.acquire(sy.config.get("rate_bucket", "api"));
    const headers = {
      accept: "application/json",
      authorization: sy.bearer(sy.config.get("token_secret", "api-token")),
    };
    let body;
    if (input.body !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(input.body);
    }
    let response;
    try {
      response = await fetch(url, { method, headers, body });
    } catch (error) {
      throw new sy.Retryable(`HTTP request failed: ${error.message}`);
    }
    sy.raiseForStatus(response);
    const text = await response.text();
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
    return { status: response.status, body: parsed };
  }
}

export const connector = sy.exportConnector(HttpApi);
