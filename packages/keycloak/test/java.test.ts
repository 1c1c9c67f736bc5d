import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { findJava, majorOf } from '../src/java.ts';

let jvmDir: string;

/** A fake JDK: a `release` file (what findJava reads first) or a `bin/java` that prints a version. */
async function fakeJdk(name: string, version: string, { withRelease = true } = {}): Promise<string> {
  const home = join(jvmDir, name);
  await mkdir(join(home, 'bin'), { recursive: true });
  await writeFile(join(home, 'bin', 'java'), `#!/bin/sh\necho 'openjdk version "${version}" 2026-01-01' >&2\n`);
  await chmod(join(home, 'bin', 'java'), 0o755);
  if (withRelease) await writeFile(join(home, 'release'), `IMPLEMENTOR="Test"\nJAVA_VERSION="${version}"\n`);
  return home;
}

before(async () => {
  jvmDir = await mkdtemp(join(tmpdir(), 'jvm-'));
});

after(async () => {
  await rm(jvmDir, { recursive: true, force: true });
});

test('majorOf reads modern and legacy version strings', () => {
  assert.equal(majorOf('25.0.3'), 25);
  assert.equal(majorOf('21'), 21);
  assert.equal(majorOf('17.0.15+6'), 17);
  assert.equal(majorOf('1.8.0_402'), 8);
});

test('a JAVA_HOME that is too old is passed over for a newer JDK; a qualifying JAVA_HOME wins', async () => {
  const java17 = await fakeJdk('java-17-openjdk-amd64', '17.0.15');
  const java21 = await fakeJdk('java-21-openjdk-amd64', '21.0.9', { withRelease: false });
  const temurin25 = await fakeJdk('temurin-25-jdk-amd64', '25.0.3');

  const newest = await findJava({ JAVA_HOME: java17, PATH: '' }, jvmDir);
  assert.equal(newest.javaHome, temurin25);
  assert.equal(newest.major, 25);

  const chosen = await findJava({ JAVA_HOME: java21, PATH: '' }, jvmDir);
  assert.equal(chosen.javaHome, java21, 'read through `java -version` since it has no release file');
  assert.equal(chosen.major, 21);
  await rm(join(jvmDir, 'java-21-openjdk-amd64'), { recursive: true });
  await rm(join(jvmDir, 'temurin-25-jdk-amd64'), { recursive: true });
});

test('without Java 21+ the error lists what was found and says what is needed', async () => {
  const java17 = join(jvmDir, 'java-17-openjdk-amd64');
  await assert.rejects(findJava({ JAVA_HOME: '/nonexistent/jdk', PATH: '' }, jvmDir), (error: Error) => {
    assert.match(error.message, /needs Java 21 or newer/);
    assert.ok(error.message.includes(`${java17} (${jvmDir}): 17.0.15`), error.message);
    assert.ok(error.message.includes('/nonexistent/jdk (JAVA_HOME): no working bin/java'), error.message);
    assert.match(error.message, /set JAVA_HOME/);
    return true;
  });
});
