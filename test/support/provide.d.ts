export {};

declare module "vitest" {
  export interface ProvidedContext {
    /** `mysql://root@127.0.0.1:PORT/eventsdb` of the MariaDB server started by test/global-setup.ts. */
    mysqlUrl: string;
  }
}
