// What a dashboard reads most, typed from the generated `api.d.ts` (openapi-typescript). Compiled with
// `tsc --noEmit --strict` by tests/clients/test_generated_clients.py: it fails to compile when the spec
// types these fields loosely (`Record<string, never>`, optional, `unknown`).
import type { components, operations } from "./api";

type Deployment = components["schemas"]["Deployment"];
type GetDeployment = operations["getDeployment"]["responses"][200]["content"]["application/json"];

export function readyReplicas(deployment: GetDeployment): number {
  const ready: number = deployment.replicas.ready;
  return ready;
}

export function firstPort(deployment: Deployment): number | null {
  const first = deployment.instances[0];
  const port: number | null = first.port;
  return port;
}

export function isServing(deployment: Deployment): boolean {
  const status: components["schemas"]["DeploymentStatus"] = deployment.status;
  return status === "running" || status === "ready";
}

export function listedIds(page: components["schemas"]["DeploymentPage"]): string[] {
  return page.items.map((item: Deployment) => item.id);
}
