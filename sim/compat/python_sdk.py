"""Daily calls of Neon's python SDK (`neon-api`, unmodified) against neon-sim.

Reads NEON_API_HOST and NEON_API_KEY. The SDK parses every answer into its pydantic models,
so a missing required field fails here. Any failed call exits 1 naming the step.
"""

import os
import sys
import time

from neon_api import NeonAPI

api = NeonAPI(os.environ["NEON_API_KEY"], base_url=os.environ["NEON_API_HOST"].rstrip("/") + "/")
passed = 0


def step(name, fn):
    global passed
    try:
        out = fn()
    except Exception as e:  # the SDK raises NeonAPIError with the body, pydantic its own
        print(f"  FAIL {name}: {type(e).__name__}: {e}")
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1
    print(f"  ok   {name}")
    return out


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def idle(project_id):
    """Waits until the project has no running operation."""
    for _ in range(200):
        ops = api.operations(project_id, limit=100).operations
        if all(getattr(o.status, "value", o.status) in ("finished", "failed") for o in ops):
            return
        time.sleep(0.1)
    raise AssertionError(f"operations of {project_id} never finished")


me = step("me", api.me)
check(me.billing_account is not None, "billing_account")
step("projects", lambda: check(len(api.projects(limit=400).projects) == 400, "a full page"))
step("projects shared", lambda: api.projects(shared=True))
created = step("project_create", lambda: api.project_create(project={"name": "compat-py"}))
project = created.project.id
idle(project)
main = next(b.id for b in api.branches(project).branches if b.default)
step("project", lambda: check(api.project(project).project.name == "compat-py", "name"))
step("project_update", lambda: api.project_update(project, project={"name": "compat-py-2"}))
branch = step(
    "branch_create with compute",
    lambda: api.branch_create(project, branch={"name": "py-dev"}, endpoints=[{"type": "read_write"}]),
)
idle(project)
step("branches", lambda: check(any(b.name == "py-dev" for b in api.branches(project).branches), "listed"))
step("branch", lambda: api.branch(project, branch.branch.id))
step("branch_update", lambda: api.branch_update(project, branch.branch.id, branch={"name": "py-dev-2"}))
endpoint = next(e.id for e in api.endpoints(project).endpoints if e.branch_id == branch.branch.id)
step("endpoints", lambda: api.endpoints(project))
step("endpoint", lambda: api.endpoint(project, endpoint))
step("endpoint_suspend", lambda: api.endpoint_suspend(project, endpoint))
idle(project)
step("endpoint_start", lambda: api.endpoint_start(project, endpoint))
idle(project)
step("role_create", lambda: api.role_create(project, main, "py_app"))
idle(project)
step("roles", lambda: check(any(r.name == "py_app" for r in api.roles(project, main).roles), "listed"))
step("role", lambda: api.role(project, main, "py_app"))


def reveal_is_405():
    # neon-api 0.3.0 sends POST .../reveal_password; Neon's document says GET (and the other
    # clients use GET). The emulator follows the document; see sim/spec/README.md.
    try:
        api.role_password_reveal(project, main, "py_app")
    except Exception as e:
        check("METHOD_NOT_ALLOWED" in str(e), str(e))
        return
    raise AssertionError("POST reveal_password was accepted")


step("role_password_reveal (POST, not in the document: 405)", reveal_is_405)
before = api._request("GET", f"projects/{project}/branches/{main}/roles/py_app/reveal_password")
reset = step("role_password_reset", lambda: api.role_password_reset(project, main, "py_app"))
check(reset.role.password != before["password"], "a new password")
idle(project)
step("database_create", lambda: api.database_create(project, main, database={"name": "pydb", "owner_name": "py_app"}))
idle(project)
step("databases", lambda: check(any(d.name == "pydb" for d in api.databases(project, main).databases), "listed"))
step("database", lambda: api.database(project, main, "pydb"))
uri = step("connection_uri", lambda: api.connection_uri(project, database_name="pydb", role_name="py_app"))
check(uri.uri.startswith("postgresql://py_app:"), uri.uri)
step("database_delete", lambda: api.database_delete(project, main, "pydb"))
idle(project)
step("role_delete", lambda: api.role_delete(project, main, "py_app"))
idle(project)
ops = step("operations", lambda: api.operations(project))
step("operation", lambda: api.operation(project, ops.operations[0].id))
step("branch_delete", lambda: api.branch_delete(project, branch.branch.id))
idle(project)
step("project_delete", lambda: api.project_delete(project))
print(f"  {passed} SDK calls passed")
