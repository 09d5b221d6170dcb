// A Node.js client of jsonlink-gateway written only from gateway/WIRE.md
// (the @therms/rpc-server 2.19 wire): Node's built-in fetch for the HTTP
// gateway, the `ws` package for the WebSocket gateway. Run by
// gateway/tests/node_peer.rs as `node peer.mjs <http-url> <ws-url>`; the
// procedures it calls are registered there. Prints one line per check and
// exits non-zero on the first failure.
import WebSocket from 'ws';
import assert from 'node:assert/strict';

const [httpUrl, wsUrl] = process.argv.slice(2);
if (!httpUrl || !wsUrl) {
  console.error('usage: node peer.mjs <http-url> <ws-url>');
  process.exit(2);
}

const checks = [];
const check = (name, fn) => checks.push([name, fn]);

async function post(body, path = '/') {
  const res = await fetch(httpUrl + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  assert.equal(res.status, 200, 'the HTTP status is always 200');
  return res.json();
}

// A WebSocket client the way @therms/rpc-client's is written: responses
// matched to calls only by correlationId, server messages by their key.
class WsClient {
  constructor(url) {
    this.url = url;
    this.pending = new Map();
    this.serverMessages = [];
    this.waiters = [];
    this.nextId = 0;
  }
  open() {
    return new Promise((resolve, reject) => {
      this.ws = new WebSocket(this.url);
      this.closed = new Promise((r) => this.ws.once('close', (code) => r(code)));
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
      this.ws.on('message', (data, isBinary) => {
        assert.equal(isBinary, false, 'the gateway sends text frames');
        const msg = JSON.parse(data.toString());
        if ('serverMessage' in msg) {
          this.serverMessages.push(msg.serverMessage);
          this.waiters.splice(0).forEach((w) => w());
          return;
        }
        // Correlation ids may be any JSON value: match them by value.
        const key = JSON.stringify(msg.correlationId);
        const p = this.pending.get(key);
        if (!p) {
          this.unexpected = `a response for an unknown correlationId ${key}`;
          return;
        }
        this.pending.delete(key);
        p(msg);
      });
    });
  }
  send(frame) {
    const correlationId = frame.correlationId ?? `node-${++this.nextId}`;
    const full = { ...frame, correlationId };
    return new Promise((resolve) => {
      this.pending.set(JSON.stringify(correlationId), resolve);
      this.ws.send(JSON.stringify(full));
    });
  }
  call(procedure, args, extra = {}) {
    return this.send({ procedure, args, ...extra });
  }
  setIdentity(identity, correlationId) {
    return this.send({ identity, correlationId });
  }
  clientMessage(m) {
    this.ws.send(JSON.stringify({ clientMessage: m }));
  }
  nextServerMessage() {
    if (this.serverMessages.length) return Promise.resolve(this.serverMessages.shift());
    return new Promise((r) => this.waiters.push(() => r(this.serverMessages.shift())));
  }
  close() {
    assert.equal(this.unexpected, undefined);
    this.ws.close();
    return this.closed;
  }
}

check('GET /health answers ok', async () => {
  const res = await fetch(httpUrl + '/health');
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'ok');
});

check('HTTP call, any path: 200 with data and the correlationId echoed', async () => {
  const r = await post({ procedure: 'echo', args: { hello: 'node' }, correlationId: 'n1' }, '/any/path');
  assert.deepEqual(r, { code: 200, success: true, data: { hello: 'node' }, correlationId: 'n1' });
});

check('HTTP call with scope and version defaults spelled out', async () => {
  const r = await post({ procedure: 'echo', scope: 'global', version: '1', args: [1, 2] });
  assert.equal(r.code, 200);
  assert.deepEqual(r.data, [1, 2]);
});

check('HTTP identity in the body reaches the handler', async () => {
  const r = await post({ procedure: 'whoami', identity: { authorization: 'secret-node', deviceName: 'node-fetch' } });
  assert.equal(r.code, 200);
  assert.deepEqual(r.data, { deviceName: 'node-fetch', hasAuthorization: true });
});

check('HTTP 400: empty body, not an object, no procedure', async () => {
  for (const body of ['', '[1,2]', '{"args":1}', '{"procedure":5}']) {
    const r = await post(body);
    assert.equal(r.code, 400, body);
    assert.equal(r.success, false);
    assert.equal(typeof r.message, 'string');
  }
});

check('HTTP 501: no such procedure / scope / version', async () => {
  for (const body of [{ procedure: 'nope' }, { procedure: 'echo', scope: 'other' }, { procedure: 'echo', version: '2' }]) {
    const r = await post(body);
    assert.equal(r.code, 501, JSON.stringify(body));
  }
});

check('HTTP 403: an internal-only procedure', async () => {
  const r = await post({ procedure: 'secret-data', scope: 'internal' });
  assert.equal(r.code, 403);
});

check('HTTP 422: invalid args name the instance path', async () => {
  const r = await post({ procedure: 'typed', args: { name: 5 } });
  assert.equal(r.code, 422);
  assert.match(r.message, /name/);
});

check('HTTP nested call reaches the internal procedure', async () => {
  const r = await post({ procedure: 'public-data', identity: { authorization: 'a-b' } });
  assert.equal(r.code, 200);
  assert.deepEqual(r.data, { secret: 42, hasAuthorization: true });
});

check('WebSocket: identity, calls, out of order, messages, identity change', async () => {
  const c = new WsClient(wsUrl);
  await c.open();
  const set = await c.setIdentity({ authorization: 'tok-1', deviceName: 'node-ws' }, 'id-1');
  assert.deepEqual(set, { code: 200, success: true, correlationId: 'id-1' });

  const who = await c.call('whoami');
  assert.deepEqual(who.data, { deviceName: 'node-ws', hasAuthorization: true });

  // A call carrying its own identity uses it for that call only.
  const own = await c.call('whoami', undefined, { identity: { deviceName: 'just-this-call' } });
  assert.deepEqual(own.data, { deviceName: 'just-this-call', hasAuthorization: false });
  assert.deepEqual((await c.call('whoami')).data, { deviceName: 'node-ws', hasAuthorization: true });

  // Out of order: the slow call was sent first, the fast one answers first.
  const order = [];
  const slow = c.call('sleep', { ms: 300 }, { correlationId: { n: 'slow' } }).then((r) => order.push('slow') && r);
  const fast = c.call('sleep', { ms: 0 }, { correlationId: 7 }).then((r) => order.push('fast') && r);
  const [s, f] = await Promise.all([slow, fast]);
  assert.deepEqual(order, ['fast', 'slow']);
  assert.deepEqual(s.correlationId, { n: 'slow' });
  assert.equal(f.correlationId, 7);

  // A client message (no reply); the test server echoes it as a server message.
  c.clientMessage({ ping: 'from-node' });
  assert.deepEqual(await c.nextServerMessage(), { echo: { ping: 'from-node' } });

  // The same identity re-sent is accepted.
  assert.equal((await c.setIdentity({ authorization: 'tok-1' })).code, 200);
  // A different authorization: 400, then the server closes.
  const changed = await c.setIdentity({ authorization: 'tok-2' }, 'id-2');
  assert.equal(changed.code, 400);
  assert.equal(changed.correlationId, 'id-2');
  assert.equal(c.unexpected, undefined);
  const code = await c.closed;
  assert.ok(code === 1008, `closed by the server with 1008, got ${code}`);
});

check('WebSocket: identity re-sent after a reconnect', async () => {
  const c = new WsClient(wsUrl);
  await c.open();
  await c.setIdentity({ authorization: 'tok-r', deviceName: 'first' });
  await c.close();
  await c.open();
  // A new connection has no identity until it is sent again.
  assert.deepEqual((await c.call('whoami')).data, { deviceName: null, hasAuthorization: false });
  await c.setIdentity({ authorization: 'tok-r', deviceName: 'again' });
  assert.deepEqual((await c.call('whoami')).data, { deviceName: 'again', hasAuthorization: true });
  await c.close();
});

let failed = 0;
for (const [name, fn] of checks) {
  try {
    await fn();
    console.log(`ok - ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`not ok - ${name}: ${e && e.stack ? e.stack : e}`);
  }
}
console.log(`node peer: ${checks.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
