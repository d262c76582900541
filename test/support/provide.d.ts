export {};

declare module "vitest" {
  export interface ProvidedContext {
    /**
     * Where test workers ask test/global-setup.ts for the shared MariaDB (started on the first ask);
     * absent in the unit tier (vitest.unit.config.ts), which has no MariaDB.
     */
    mariadbBroker: string | undefined;
  }
}
