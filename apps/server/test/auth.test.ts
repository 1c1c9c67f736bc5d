import assert from 'node:assert/strict';
import { test } from 'node:test';
import { upstreamAdmin } from '../src/auth.ts';

test('upstreamAdmin: Keycloak granted expenses:admin, or Entra named the expenses-admin app role', () => {
  // Keycloak: the realm grants its expenses:admin scope only to the expenses-admin role.
  assert.equal(upstreamAdmin({}, 'openid profile expenses:admin'), true);
  assert.equal(upstreamAdmin({}, 'openid profile'), false);
  assert.equal(upstreamAdmin({}, 'openid expenses:admin-ish'), false);
  // Entra: app roles assigned to the user arrive in the ID token's `roles`.
  assert.equal(upstreamAdmin({ roles: ['expenses-admin'] }, 'openid profile'), true);
  assert.equal(upstreamAdmin({ roles: ['reader'] }, undefined), false);
  assert.equal(upstreamAdmin({ roles: 'expenses-admin' }, undefined), false, 'roles is a list, never a string');
  assert.equal(upstreamAdmin({}, undefined), false);
});
