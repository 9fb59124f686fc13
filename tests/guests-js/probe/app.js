// A JavaScript guest for the tests: what the sandbox leaves it, state,
// fetch through the host, and each error kind on request.
import * as sy from "switchyard-connector";

class Probe extends sy.Connector {
  static info = { name: "js-probe", version: "0.1.0", description: "sandbox probe" };
  static actions = {
    sandbox: "what the guest can reach on its own",
    state: "one state operation",
    fetch: "GET a URL through the host",
    fail: "throw the error kind asked for",
  };

  sandbox() {
    return {
      process: typeof globalThis.process,
      require: typeof globalThis.require,
      deno: typeof globalThis.Deno,
    };
  }

  state(input) {
    const { op, key } = input;
    if (op === "get") return { result: sy.state.getText(key) };
    if (op === "set") return { result: (sy.state.set(key, input.value), null) };
    if (op === "cas") return { result: sy.state.compareAndSwap(key, input.expected ?? null, input.new ?? null) };
    if (op === "keys") return { result: sy.state.keys(input.prefix ?? "", 100) };
    throw new sy.InvalidInput(`unknown op \`${op}\``);
  }

  async fetch(input) {
    const headers = input.secret ? { authorization: sy.bearer(input.secret) }
      : input.oauth ? { authorization: sy.bearerOAuth(input.oauth) } : {};
    try {
      const response = await fetch(input.url, { headers });
      return { status: response.status, body: (await response.text()).slice(0, 2000) };
    } catch (error) {
      return { error: String(error && error.message ? error.message : error) };
    }
  }

  fail(input) {
    switch (input.kind) {
      case "retryable": throw new sy.Retryable("try again");
      case "permanent": throw new sy.Permanent("never");
      case "rate_limited": throw new sy.RateLimited("slow down", 1500);
      case "invalid_input": throw new sy.InvalidInput("bad field");
      default: return { crash: null.property };
    }
  }

  transform(messages) {
    return messages.map((m) => {
      const record = JSON.parse(sy.text(m.payload));
      record.seen_by = "javascript";
      return sy.message(m.id, m.stream, record, { key: m.key });
    });
  }
}

export const connector = sy.exportConnector(Probe);
