"""The npm ``toxiproxy-node-client`` (Node's fetch, its own error mapping) drives the
chaoslab proxy server unchanged. The package is installed from the npm registry into a
temporary directory once per session; in CI a missing node/npm or a failed install fails."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require

NODE_CLIENT = "toxiproxy-node-client@^4.1.0"

# What a Node test suite does with the client: every call of its public API, the answers
# printed as one JSON line for the Python side to check.
SCRIPT = r"""
const { Toxiproxy, ToxiproxyError } = require("toxiproxy-node-client");
const net = require("node:net");

function roundTrip(port) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const sock = net.connect({ host: "127.0.0.1", port }, () => sock.write("ping"));
    sock.setTimeout(5000, () => { sock.destroy(); reject(new Error("timeout")); });
    sock.once("data", (data) => {
      sock.end();
      resolve({ data: data.toString(), ms: Number(process.hrtime.bigint() - started) / 1e6 });
    });
    sock.once("error", reject);
  });
}

(async () => {
  const [api, echo] = process.argv.slice(2);
  const toxiproxy = new Toxiproxy(api);
  const out = {};
  out.version = JSON.parse(await toxiproxy.getVersion()).version;
  const proxy = await toxiproxy.createProxy({ name: "node", upstream: `127.0.0.1:${echo}`, listen: "0.0.0.0:0" });
  out.listen = proxy.listen;
  const port = Number(proxy.listen.split(":").pop());
  out.plain = await roundTrip(port);
  const toxic = await proxy.addToxic({ type: "latency", stream: "downstream", toxicity: 1, attributes: { latency: 150 } });
  out.toxic = toxic.toJson();
  out.slow = await roundTrip(port);
  const updated = await toxic.update({ ...toxic.toJson(), attributes: { latency: 10 } });
  out.updated = updated.toJson();
  out.fetched = (await proxy.getToxic(toxic.name)).toJson();
  await toxic.remove();
  out.noop = (await proxy.addToxic({ type: "noop", stream: "UPSTREAM", attributes: {} })).toJson();
  try {
    await proxy.addToxic({ type: "latency", stream: "", attributes: {} });
    out.badStream = "accepted";
  } catch (e) {
    out.badStream = e instanceof ToxiproxyError ? e.message : String(e);
  }
  const down = await proxy.update({ ...proxy.toJson(), enabled: false });
  out.down = down.toJson();
  out.refused = await roundTrip(port).then(() => "connected", (e) => e.code);
  await toxiproxy.reset();
  out.afterReset = (await toxiproxy.get("node")).toJson();
  const populated = await toxiproxy.populate([{ name: "node2", upstream: `127.0.0.1:${echo}`, listen: "127.0.0.1:0" }]);
  out.all = Object.keys(await toxiproxy.getAll()).sort();
  await populated.node2.remove();
  await proxy.remove();
  try {
    await toxiproxy.get("node");
    out.gone = "still there";
  } catch (e) {
    out.gone = e.message;
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.fixture(scope="session")
def node_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    require(node is not None and npm is not None, "node and npm (Debian packages nodejs, npm)")
    assert npm is not None
    where = tmp_path_factory.mktemp("node-client")
    (where / "package.json").write_text('{"name": "chaoslab-node-client-test", "private": true}\n')
    try:
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", NODE_CLIENT],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        done = None
    require(
        done is not None and done.returncode == 0,
        f"npm install {NODE_CLIENT}: {done.stderr[-500:] if done else 'timed out'}",
    )
    (where / "drive.js").write_text(SCRIPT)
    return where


def test_toxiproxy_node_client_drives_the_server(node_client: Path, proxy_api: str, echo_port: int) -> None:
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run(
        [node, "drive.js", proxy_api, str(echo_port)],
        cwd=node_client,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["version"] == "2.12.0"
    assert out["listen"].startswith("0.0.0.0:")
    assert out["plain"]["data"] == "ping" and out["plain"]["ms"] < 100
    assert out["toxic"] == {
        "attributes": {"latency": 150, "jitter": 0},
        "name": "latency_downstream",
        "stream": "downstream",
        "toxicity": 1,
        "type": "latency",
    }
    assert out["slow"]["data"] == "ping" and out["slow"]["ms"] >= 145
    assert out["updated"]["attributes"] == {"latency": 10, "jitter": 0}
    assert out["fetched"] == out["updated"]
    assert out["noop"]["type"] == "noop" and out["noop"]["stream"] == "UPSTREAM"
    assert out["badStream"] == "Request failed with status code 400"
    assert out["down"]["enabled"] is False
    assert out["refused"] == "ECONNREFUSED"
    assert out["afterReset"]["enabled"] is True
    assert out["all"] == ["node", "node2"]
    assert out["gone"] == "Request failed with status code 404"
