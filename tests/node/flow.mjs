// A second ecosystem's client against AuthGate: openid-client (Node) runs discovery, the device
// flow and the authorization code grant with PKCE, state and nonce, verifying every id_token
// against the published JWKS. The person's part (sign-in, the approval pages) is played by a
// small cookie-keeping browser made of fetch. Started by tests/it/node_client.rs, which passes
// the server and the client in the environment; prints one JSON line when everything held.
import assert from 'node:assert/strict'
import * as client from 'openid-client'

const base = process.env.AUTHGATE_BASE
const appId = process.env.AUTHGATE_APP
const username = process.env.AUTHGATE_USER
const password = process.env.AUTHGATE_PASSWORD
const callback = 'http://127.0.0.1:47001/cb'

// The browser: cookies kept, redirects not followed (the test reads them).
const jar = new Map()
async function browse(url, init = {}) {
  const headers = new Headers(init.headers ?? {})
  if (jar.size) headers.set('cookie', [...jar].map(([k, v]) => `${k}=${v}`).join('; '))
  const res = await fetch(new URL(url, base), { ...init, headers, redirect: 'manual' })
  for (const c of res.headers.getSetCookie()) {
    const pair = c.split(';')[0]
    const i = pair.indexOf('=')
    jar.set(pair.slice(0, i), pair.slice(i + 1))
  }
  return res
}
const post = (url, form) =>
  browse(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form).toString(),
  })
const unescape = (s) =>
  s.replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&quot;', '"')
    .replaceAll('&#x27;', "'").replaceAll('&#x2f;', '/').replaceAll('&amp;', '&')
function field(page, name) {
  const m = page.match(new RegExp(`name="${name}" value="([^"]*)"`))
  assert.ok(m, `the page has a ${name} field`)
  return unescape(m[1])
}

// Discovery from the issuer (OpenID Connect Discovery's openid-configuration).
const config = await client.discovery(new URL(base), appId, undefined, client.None(), {
  execute: [client.allowInsecureRequests],
})
const meta = config.serverMetadata()
assert.equal(meta.issuer, base)
assert.deepEqual(meta.code_challenge_methods_supported, ['S256'])

// Sign in.
{
  const page = await (await browse('/login')).text()
  const res = await post('/login', { username, password, csrf_token: field(page, 'csrf_token'), next: '/device' })
  assert.equal(res.status, 303, 'signed in')
}

// The device flow, with openid: the person approves the code, the client polls.
const device = await client.initiateDeviceAuthorization(config, { scope: 'openid profile offline_access' })
{
  let page = await (await browse('/device')).text()
  let res = await post('/device/verify', { user_code: device.user_code, csrf_token: field(page, 'csrf_token') })
  page = await res.text()
  assert.equal(res.status, 200, page)
  res = await post('/device/approve', { user_code: device.user_code, csrf_token: field(page, 'csrf_token'), action: 'approve' })
  assert.equal(res.status, 200, 'approved')
}
const deviceTokens = await client.pollDeviceAuthorizationGrant(config, device)
const deviceClaims = deviceTokens.claims()
assert.equal(deviceClaims.preferred_username, username)
assert.ok(deviceTokens.refresh_token, 'offline_access: a refresh token')

// The authorization code with PKCE, state and nonce.
const verifier = client.randomPKCECodeVerifier()
const state = client.randomState()
const nonce = client.randomNonce()
const url = client.buildAuthorizationUrl(config, {
  redirect_uri: callback,
  scope: 'openid email',
  code_challenge: await client.calculatePKCECodeChallenge(verifier),
  code_challenge_method: 'S256',
  state,
  nonce,
})
let res = await browse(url)
const page = await res.text()
assert.equal(res.status, 200, `the consent page: ${page}`)
res = await post('/oauth/authorize', { csrf_token: field(page, 'csrf_token'), request: field(page, 'request'), action: 'approve' })
assert.equal(res.status, 303)
const back = new URL(res.headers.get('location'))
assert.equal(back.origin + back.pathname, callback)
const checks = { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true }
const tokens = await client.authorizationCodeGrant(config, back, checks)
const claims = tokens.claims()
assert.equal(claims.nonce, nonce)
assert.equal(claims.sub, deviceClaims.sub, 'one subject for one person')
assert.equal(tokens.refresh_token, undefined, 'openid without offline_access: no refresh token')
const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub)
assert.equal(info.sub, claims.sub)

// The same code again, by the same client with the same verifier: the server refuses it (and
// revokes what it issued, which the Rust side checks).
await assert.rejects(client.authorizationCodeGrant(config, back, checks), (e) => e.error === 'invalid_grant')

console.log(JSON.stringify({ ok: true, sub: claims.sub, device_sub: deviceClaims.sub, access_token: tokens.access_token }))
