// Run by `dbos-migrate up` with the app's own node and the app's own @dbos-inc/dbos-sdk 1.x-3.x
// (docs/dbos-compatibility.md, "App shapes and the runtime role"): the SDK's own `migrate`
// function with an empty command list, so it provisions the system database and the app
// database's `dbos.transaction_outputs` exactly as `npx dbos migrate` does, but runs none of
// the user's commands (dbos-migrate runs those itself, under its lock, and grants the runtime
// role, which 1.x-2.x cannot). With DBOS_MIGRATE_TS_MODE=system only the system database is
// provisioned (`--datasource skip`).
// No password is passed here: node-postgres reads PGPASSWORD (and PGHOST, PGPORT, PGUSER).
'use strict';
const path = require('path');

const env = process.env;
const sdk = env.DBOS_MIGRATE_SDK_DIR;
const both = env.DBOS_MIGRATE_TS_MODE === 'both';
const appUrl = env.DBOS_MIGRATE_APP_URL;
const sysUrl = env.DBOS_MIGRATE_SYS_URL;
const load = (name) => require(path.join(sdk, 'dist', 'src', name));

function databaseOf(url) {
  return decodeURIComponent(new URL(url).pathname.slice(1));
}

// SDK 1.x (and early 2.x) reads the connection from its config file's fields; here host, port
// and user come from PG* (node-postgres's own fallback), TLS from PGSSLMODE as 1.x maps
// `ssl`/`ssl_ca`.
function configFile1x() {
  const database = { app_db_name: databaseOf(appUrl), sys_db_name: databaseOf(sysUrl), migrate: [] };
  const mode = env.PGSSLMODE || 'prefer';
  if (['disable', 'allow', 'prefer'].includes(mode)) {
    database.ssl = false;
  } else if (env.PGSSLROOTCERT && mode.startsWith('verify')) {
    database.ssl_ca = env.PGSSLROOTCERT;
  } else {
    database.ssl = true;
  }
  return { database };
}

// The signature of `migrate` (dist/src/dbos-runtime/migrate.js) changed within the lines, so
// it is told by its arity: (commands, databaseUrl, systemDatabaseUrl, logger) from 3.x,
// (config, configFile, logger) in later 2.x, (configFile, logger) in 1.x and early 2.x.
async function main() {
  const { GlobalLogger } = load('telemetry/logs.js');
  const logger = new GlobalLogger();
  const sysdb = load('system_database.js');
  const migrate = load('dbos-runtime/migrate.js').migrate;
  if (!both) {
    if (typeof sysdb.ensureSystemDatabase === 'function') {
      await sysdb.ensureSystemDatabase(sysUrl, logger);
    } else {
      await sysdb.migrateSystemDatabase({ connectionString: sysUrl }, logger);
    }
    return 0;
  }
  if (migrate.length >= 4) {
    return await migrate([], appUrl, sysUrl, logger);
  }
  if (migrate.length === 3) {
    const config = { poolConfig: { connectionString: appUrl }, system_database: databaseOf(sysUrl) };
    return await migrate(config, { database: { migrate: [] } }, logger);
  }
  return await migrate(configFile1x(), logger);
}

main().then(
  (code) => process.exit(code === 0 ? 0 : 1),
  (err) => {
    console.error(`dbos-migrate: @dbos-inc/dbos-sdk provisioning failed: ${err && err.message ? err.message : err}`);
    process.exit(1);
  },
);
