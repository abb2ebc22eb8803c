/** The OpenStack client's pure parts: login settings from clouds.yaml or OS_*, the token request, the catalog. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { UsageError } from "../../errors.js";
import { callName, cloudConfigFrom, endpointFrom, identityV3, tokenRequest } from "./client.js";

const CLOUDS = {
  path: "/etc/openstack/clouds.yaml",
  text: `
clouds:
  ovh:
    auth:
      auth_url: https://auth.cloud.ovh.net/v3
      username: user-abc
      project_name: "1234"
      user_domain_name: Default
      project_domain_name: Default
    region_name: GRA11
    interface: public
  app:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://keystone.example.org:5000
      application_credential_id: ac-1
      application_credential_secret: s3cret
`,
};
const SECURE = { path: "/etc/openstack/secure.yaml", text: "clouds:\n  ovh:\n    auth:\n      password: from-secure\n" };

describe("openstack login settings", () => {
  it("reads the OS_* variables the openstack CLI reads (OS_TENANT_NAME as the project, OS_ENDPOINT_TYPE's URL suffix dropped)", () => {
    const config = cloudConfigFrom({
      env: { OS_AUTH_URL: "https://keystone:5000/v3", OS_USERNAME: "u", OS_PASSWORD: "p", OS_TENANT_NAME: "proj", OS_USER_DOMAIN_NAME: "Default", OS_REGION_NAME: "R1", OS_ENDPOINT_TYPE: "internalURL" },
    });
    assert.deepEqual(
      { ...config, source: undefined },
      { authUrl: "https://keystone:5000/v3", authType: "password", username: "u", password: "p", projectName: "proj", userDomainName: "Default", region: "R1", interface: "internal", source: undefined },
    );
  });

  it("reads a clouds.yaml entry named by --os-cloud or OS_CLOUD, secure.yaml merged over it", () => {
    const ovh = cloudConfigFrom({ env: { OS_CLOUD: "ovh" }, clouds: CLOUDS, secure: SECURE });
    assert.equal(ovh.password, "from-secure");
    assert.equal(ovh.projectName, "1234");
    assert.equal(ovh.region, "GRA11");
    assert.match(ovh.source, /clouds\.yaml cloud "ovh" \(\/etc\/openstack\/clouds\.yaml\)/);
    const app = cloudConfigFrom({ env: { OS_CLOUD: "ovh" }, cloud: "app", clouds: CLOUDS });
    assert.equal(app.authType, "v3applicationcredential");
    assert.equal(app.applicationCredentialId, "ac-1");
  });

  it("says what is missing, where, and which cloud names exist", () => {
    assert.throws(() => cloudConfigFrom({ env: {} }), (e: unknown) => e instanceof UsageError && /the OS_\* variables lack auth_url \(OS_AUTH_URL\), username/.test(e.message));
    assert.throws(() => cloudConfigFrom({ env: {}, cloud: "nope", clouds: CLOUDS }), /has no cloud "nope" \(it has: ovh, app\)/);
    assert.throws(() => cloudConfigFrom({ env: {}, cloud: "ovh" }), /needs a clouds\.yaml/);
    assert.throws(() => cloudConfigFrom({ env: { OS_AUTH_URL: "keystone", OS_AUTH_TYPE: "v3applicationcredential", OS_APPLICATION_CREDENTIAL_ID: "a", OS_APPLICATION_CREDENTIAL_SECRET: "s" } }), /auth_url "keystone" is not an http\(s\) URL/);
    assert.throws(() => cloudConfigFrom({ env: { OS_AUTH_TYPE: "token" } }), /auth type "token" is not supported/);
  });

  it("builds Keystone's token request: a password scoped to the project, an application credential unscoped", () => {
    const password = cloudConfigFrom({ env: { OS_AUTH_URL: "http://k/v3", OS_USERNAME: "u", OS_PASSWORD: "p", OS_PROJECT_ID: "pid", OS_USER_DOMAIN_ID: "default" } });
    assert.deepEqual(tokenRequest(password), {
      auth: { identity: { methods: ["password"], password: { user: { name: "u", domain: { id: "default" }, password: "p" } } }, scope: { project: { id: "pid" } } },
    });
    const app = cloudConfigFrom({ env: {}, cloud: "app", clouds: CLOUDS });
    assert.deepEqual(tokenRequest(app), { auth: { identity: { methods: ["application_credential"], application_credential: { id: "ac-1", secret: "s3cret" } } } });
  });

  it("finds a service's endpoint in the catalog by type, interface and region; the identity root gets /v3", () => {
    const catalog = [
      { type: "network", endpoints: [{ interface: "public", region: "A", url: "https://net-a/" }, { interface: "public", region: "B", url: "https://net-b" }, { interface: "internal", region: "B", url: "http://net-b-int" }] },
    ];
    assert.equal(endpointFrom(catalog, "network", "public", "B"), "https://net-b");
    assert.equal(endpointFrom(catalog, "network", "public"), "https://net-a");
    assert.equal(endpointFrom(catalog, "network", "internal", "A"), undefined);
    assert.equal(endpointFrom(catalog, "compute", "public"), undefined);
    assert.equal(identityV3("https://k:5000"), "https://k:5000/v3");
    assert.equal(identityV3("https://k:5000/v3/"), "https://k:5000/v3");
  });

  it("names calls as the API does, for metrics", () => {
    assert.equal(callName("PUT", "/routers/r1/add_extraroutes"), "routers.add_extraroutes");
    assert.equal(callName("PUT", "/routers/r1"), "routers.update");
    assert.equal(callName("GET", "http://h/network/v2.0/ports?limit=2&marker=x"), "ports.list");
    assert.equal(callName("GET", "/servers/detail?limit=1000"), "servers.list");
  });
});
