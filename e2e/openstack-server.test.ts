/**
 * The OpenStack test server checked by the real OpenStack CLI (Debian's python3-openstackclient on
 * openstacksdk): it authenticates at the server's Keystone with a password and with an application
 * credential and finds Neutron in the catalog; `router show` finds a router by name and shows the
 * server's state; `router set --route` (the whole-list PUT) and `router add route` / `remove route`
 * (the atomic extraroutes calls) change the routes as Neutron does; a nexthop on no subnet of the router
 * is the CLI's error; `port set --allowed-address` keeps the pairs the port had. Everything on
 * 127.0.0.1 with test credentials, never a real cloud. The CLI starts slowly (about a second a call), so
 * the calls are few and each checks much.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { openstackCli, type OpenStackCli } from "../testkit/openstack-cli.js";
import { startOpenStackServer, type OpenStackServerApi, type OsPort, type OsRouter } from "../testkit/openstack-server.js";

describe("openstack CLI against the OpenStack test server", () => {
  let server: OpenStackServerApi;
  let cli: OpenStackCli;
  let router: OsRouter;
  let nodePort: OsPort;

  before(async () => {
    server = await startOpenStackServer();
    const { subnet } = server.addNetwork({ name: "k8s", cidr: "10.0.0.0/24" });
    router = server.addRouter({ name: "k8s-router", subnets: [subnet], routes: [{ destination: "192.168.50.0/24", nexthop: "10.0.0.200" }] });
    nodePort = server.addServer({ name: "node-1", subnet, ip: "10.0.0.11" }).port;
    server.addServer({ name: "node-2", subnet, ip: "10.0.0.12" });
    cli = openstackCli(server);
  });
  after(async () => {
    cli?.dispose();
    await server?.stop();
  });

  it("router show by name, after a password login, shows the router as the server holds it", async () => {
    const shown = await cli.json<Record<string, unknown>>(["router", "show", "k8s-router"]);
    assert.equal(shown.id, router.id);
    assert.deepEqual(shown.routes, [{ destination: "192.168.50.0/24", nexthop: "10.0.0.200" }]);
    assert.equal(shown.revision_number, router.revision_number);
    const login = server.requests.find((r) => r.service === "identity" && r.path === "/v3/auth/tokens");
    assert.deepEqual((login?.body as any)?.auth?.identity?.methods, ["password"]);
    // openstacksdk's find: GET by id (a 404 for a name), then a list filtered by name
    assert.ok(server.requests.some((r) => r.path === "/v2.0/routers" && r.query.get("name") === "k8s-router"));
    assert.ok(server.requests.filter((r) => r.service !== "identity" && r.path !== "").every((r) => r.headers["x-auth-token"]), "every call carries the token");
  });

  it("router set --route writes the whole list (kept routes and the new one) with one PUT, raising the revision", async () => {
    const revision = router.revision_number;
    const result = await cli.run(["router", "set", "--route", "destination=10.200.1.0/24,gateway=10.0.0.11", "k8s-router"]);
    assert.equal(result.code, 0, result.stderr);
    // a set to Neutron: the order is the CLI's
    assert.deepEqual(
      [...router.routes].sort((a, b) => a.destination.localeCompare(b.destination)),
      [
        { destination: "10.200.1.0/24", nexthop: "10.0.0.11" },
        { destination: "192.168.50.0/24", nexthop: "10.0.0.200" },
      ],
    );
    assert.equal(router.revision_number, revision + 1);
    const put = server.requests.filter((r) => r.method === "PUT" && r.path === `/v2.0/routers/${router.id}`);
    assert.equal(put.length, 1);
    assert.deepEqual(Object.keys((put[0]!.body as any).router), ["routes"]);
  });

  it("router add route and remove route go through add_extraroutes and remove_extraroutes; a nexthop off the router's subnets is refused", async () => {
    const added = await cli.json<{ routes: unknown[] }>(["router", "add", "route", "--route", "destination=10.200.2.0/24,gateway=10.0.0.12", "--route", "destination=10.200.3.0/24,gateway=10.0.0.12", "k8s-router"]);
    assert.deepEqual(added.routes, router.routes);
    assert.equal(router.routes.length, 4);
    assert.equal(server.requests.filter((r) => r.path === `/v2.0/routers/${router.id}/add_extraroutes`).length, 1, "one call for both routes");
    const removed = await cli.run(["router", "remove", "route", "--route", "destination=10.200.2.0/24,gateway=10.0.0.12", "k8s-router"]);
    assert.equal(removed.code, 0, removed.stderr);
    assert.ok(!router.routes.some((r) => r.destination === "10.200.2.0/24"));
    assert.ok(server.requests.some((r) => r.path === `/v2.0/routers/${router.id}/remove_extraroutes`));
    const refused = await cli.run(["router", "add", "route", "--route", "destination=10.200.9.0/24,gateway=10.9.9.9", "k8s-router"]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /BadRequestException: 400.*the nexthop is not connected with router/);
    assert.ok(!router.routes.some((r) => r.destination === "10.200.9.0/24"), "nothing written");
  });

  it("port set --allowed-address adds a pair (the port's MAC filled in) and keeps the pairs the port had", async () => {
    nodePort.allowed_address_pairs = [{ ip_address: "10.0.0.250", mac_address: nodePort.mac_address }];
    const result = await cli.run(["port", "set", "--allowed-address", "ip-address=10.200.1.0/24", nodePort.id]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(nodePort.allowed_address_pairs, [
      { ip_address: "10.0.0.250", mac_address: nodePort.mac_address },
      { ip_address: "10.200.1.0/24", mac_address: nodePort.mac_address },
    ]);
    const ports = await cli.json<{ ID: string; "Fixed IP Addresses": unknown }[]>(["port", "list", "--device-owner", "compute:nova"]);
    assert.deepEqual(ports.map((p) => p.ID).sort(), server.ports.filter((p) => p.device_owner === "compute:nova").map((p) => p.id).sort());
  });

  it("an application credential logs in too (no scope: the credential's project); a wrong secret is Keystone's 401", async () => {
    const credential = server.options.applicationCredentials[0]!;
    const appEnv = { OS_AUTH_TYPE: "v3applicationcredential", OS_APPLICATION_CREDENTIAL_ID: credential.id, OS_APPLICATION_CREDENTIAL_SECRET: credential.secret, OS_USERNAME: "", OS_PASSWORD: "", OS_PROJECT_NAME: "", OS_USER_DOMAIN_NAME: "", OS_PROJECT_DOMAIN_NAME: "" };
    const app = openstackCli(server, appEnv);
    const wrong = openstackCli(server, { ...appEnv, OS_APPLICATION_CREDENTIAL_SECRET: "wrong" });
    try {
      const routers = await app.json<{ ID: string; Name: string }[]>(["router", "list"]);
      assert.deepEqual(routers.map((r) => [r.ID, r.Name]), [[router.id, "k8s-router"]]);
      const logins = server.requests.filter((r) => r.path === "/v3/auth/tokens");
      assert.deepEqual((logins.at(-1)?.body as any)?.auth?.identity?.methods, ["application_credential"]);
      const refused = await wrong.run(["router", "list"]);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /401/);
    } finally {
      app.dispose();
      wrong.dispose();
    }
  });
});
