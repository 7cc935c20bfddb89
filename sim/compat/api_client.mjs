// Daily calls of Neon's TypeScript SDK (@neondatabase/api-client, unmodified) against neon-sim.
// Usage: node api_client.mjs <path of the installed @neondatabase/api-client>
// Reads NEON_API_HOST and NEON_API_KEY. Any failed call (an HTTP error or a wrong answer)
// exits 1 naming the step.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { createApiClient } = require(process.argv[2]);
const api = createApiClient({ apiKey: process.env.NEON_API_KEY, baseURL: process.env.NEON_API_HOST });

let passed = 0;
async function step(name, fn) {
  try {
    const out = await fn();
    passed += 1;
    console.log(`  ok   ${name}`);
    return out;
  } catch (e) {
    const detail = e.response ? `${e.response.status} ${JSON.stringify(e.response.data)}` : String(e.stack || e);
    console.log(`  FAIL ${name}: ${detail}`);
    console.log(`${passed} passed, 1 failed`);
    process.exit(1);
  }
}
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Waits until the project has no running operation (Neon's one-mutation-at-a-time rule).
async function idle(projectId) {
  for (let i = 0; i < 200; i++) {
    const { data } = await api.listProjectOperations({ projectId, limit: 100 });
    if (data.operations.every((o) => o.status === 'finished' || o.status === 'failed')) return;
    await sleep(100);
  }
  throw new Error(`operations of ${projectId} never finished`);
}

const { data: orgs } = await step('getCurrentUserOrganizations', () => api.getCurrentUserOrganizations());
const orgId = orgs.organizations[0].id;
await step('listProjects pages past 400', async () => {
  let cursor;
  const seen = new Set();
  for (;;) {
    const { data } = await api.listProjects({ org_id: orgId, limit: 400, cursor });
    data.projects.forEach((p) => seen.add(p.id));
    if (data.projects.length < 400) break;
    cursor = data.pagination.cursor;
  }
  check(seen.size >= 405, `saw ${seen.size} projects`);
});
await step('listSharedProjects', async () => {
  const { data } = await api.listSharedProjects({});
  check(Array.isArray(data.projects), 'projects array');
});
const { data: created } = await step('createProject', () =>
  api.createProject({ project: { name: 'compat-sdk', org_id: orgId } }));
const projectId = created.project.id;
const main = created.branch.id;
check(created.connection_uris[0].connection_uri.startsWith('postgresql://'), 'connection uri');
await idle(projectId);

const expiresAt = new Date(Date.now() + 3 * 86400 * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
const { data: br } = await step('createProjectBranch with compute and expiry', () =>
  api.createProjectBranch(projectId, {
    branch: { name: 'preview/sdk', expires_at: expiresAt },
    endpoints: [{ type: 'read_write' }],
  }));
check(br.branch.expires_at === expiresAt, `expires_at ${br.branch.expires_at}`);
await idle(projectId);
await step('createProjectBranch refuses an expiry 40 days ahead', async () => {
  try {
    await api.createProjectBranch(projectId, {
      branch: { name: 'too-far', expires_at: new Date(Date.now() + 40 * 86400 * 1000).toISOString() },
    });
  } catch (e) {
    check(e.response && e.response.status === 400, `status ${e.response && e.response.status}`);
    return;
  }
  throw new Error('an expiry 40 days ahead was accepted');
});
await idle(projectId);
const endpointId = br.endpoints[0].id;
await step('listProjectBranches', async () => {
  const { data } = await api.listProjectBranches({ projectId });
  check(data.branches.some((b) => b.id === br.branch.id), 'new branch listed');
});
await step('updateProjectBranch (rename)', () =>
  api.updateProjectBranch(projectId, br.branch.id, { branch: { name: 'preview-sdk' } }));
await step('listProjectEndpoints', async () => {
  const { data } = await api.listProjectEndpoints(projectId);
  check(data.endpoints.some((e) => e.id === endpointId), 'endpoint listed');
});
for (const action of ['suspendProjectEndpoint', 'startProjectEndpoint', 'restartProjectEndpoint']) {
  await step(action, () => api[action](projectId, endpointId));
  await idle(projectId);
}
const { data: snap } = await step('createSnapshot (root branch)', () =>
  api.createSnapshot({ projectId, branchId: main, name: 'sdk-snap' }));
await idle(projectId);
await step('listSnapshots', async () => {
  const { data } = await api.listSnapshots(projectId);
  check(data.snapshots.some((s) => s.id === snap.snapshot.id), 'snapshot listed');
});
await step('deleteSnapshot', () => api.deleteSnapshot(projectId, snap.snapshot.id));
await idle(projectId);
await step('createProjectBranchRole', () =>
  api.createProjectBranchRole(projectId, main, { role: { name: 'sdk' } }));
await idle(projectId);
await step('createProjectBranchDatabase', () =>
  api.createProjectBranchDatabase(projectId, main, { database: { name: 'sdkdb', owner_name: 'sdk' } }));
await idle(projectId);
await step('getProjectBranchRolePassword', async () => {
  const { data } = await api.getProjectBranchRolePassword(projectId, main, 'sdk');
  check(data.password.length >= 8, 'a password');
});
await step('getConnectionUri', async () => {
  const { data } = await api.getConnectionUri({ projectId, database_name: 'sdkdb', role_name: 'sdk' });
  check(data.uri.includes('/sdkdb'), data.uri);
});
await step('getConsumptionHistoryPerProjectV2', async () => {
  const to = new Date();
  to.setUTCMinutes(0, 0, 0);
  const from = new Date(to.getTime() - 86400 * 1000);
  const { data } = await api.getConsumptionHistoryPerProjectV2({
    project_ids: [projectId], from: from.toISOString(), to: to.toISOString(), granularity: 'hourly',
    metrics: ['compute_unit_seconds', 'root_branch_bytes_month'], org_id: orgId,
  });
  check(Array.isArray(data.projects), 'projects array');
});
await step('getOrganization (its plan)', async () => {
  const { data } = await api.getOrganization(orgId);
  check(typeof data.plan === 'string' && data.plan.length > 0, `plan ${data.plan}`);
});
await step('getConsumptionHistoryPerBranchV2', async () => {
  // Up to the end of this hour: the project was made in it.
  const to = new Date();
  to.setUTCMinutes(0, 0, 0);
  to.setTime(to.getTime() + 3600 * 1000);
  const from = new Date(to.getTime() - 86400 * 1000);
  const { data } = await api.getConsumptionHistoryPerBranchV2({
    project_ids: [projectId], from: from.toISOString(), to: to.toISOString(), granularity: 'hourly',
    metrics: ['compute_unit_seconds'], org_id: orgId, limit: 1000,
  });
  check(data.branches.some((b) => b.branch_id === main && b.project_id === projectId), 'main branch listed');
});
await step('getProjectBranchSchemaComparison', async () => {
  const { data } = await api.getProjectBranchSchemaComparison({
    projectId, branchId: br.branch.id, base_branch_id: main, db_name: 'neondb',
  });
  check(typeof data.diff === 'string', `diff ${JSON.stringify(data)}`);
});
await step('restoreProjectBranch (from its parent at a point in time)', () =>
  api.restoreProjectBranch(projectId, br.branch.id, {
    source_branch_id: main,
    source_timestamp: new Date(Date.now() - 1000).toISOString().replace(/\.\d+Z$/, 'Z'),
  }));
await idle(projectId);
await step('listProjectOperations', async () => {
  const { data } = await api.listProjectOperations({ projectId });
  check(data.operations.length > 0, 'operations');
});
await step('deleteProjectBranch', () => api.deleteProjectBranch({ projectId, branchId: br.branch.id, hard_delete: true }));
await idle(projectId);
await step('deleteProject', () => api.deleteProject(projectId));
console.log(`  ${passed} SDK calls passed`);
