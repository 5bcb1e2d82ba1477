// The benchmark's peer: node-oidc-provider (npm "oidc-provider") with its device flow enabled
// and its default in-memory storage, serving one public client "bench" on 127.0.0.1:$PORT.
// scripts/bench.sh installs the package into a temporary folder and runs this file there.
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 9300);
const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: 'bench',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'none',
  }],
  features: {
    deviceFlow: { enabled: true },
    devInteractions: { enabled: false },
  },
  ttl: { DeviceCode: 30 * 60 },
});
provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${port}`);
});
