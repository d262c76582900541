import { describe, expect, it } from "vitest";
import { Scrape } from "../../support/metrics.js";

// The /metrics scraper of tests and benches reads what prom-client writes.
describe("the /metrics scraper", () => {
  const scrape = new Scrape(
    [
      "# HELP app_active_event_streams Open streams.",
      "# TYPE app_active_event_streams gauge",
      "app_active_event_streams 3",
      'app_event_operations_total{operation="create_event",status="success"} 12',
      'app_event_operations_total{operation="create_event",status="error"} 1',
      'odd_total{path="a\\"b}c",note="x\\\\y\\nz"} 4.5',
      'app_event_operation_duration_seconds_bucket{le="+Inf",operation="create_event"} 13',
      "with_timestamp 7 1700000000000",
      "",
    ].join("\n"),
  );

  it("reads a series by name and exact labels", () => {
    expect(scrape.value("app_active_event_streams")).toBe(3);
    expect(scrape.value("app_event_operations_total", { operation: "create_event", status: "error" })).toBe(
      1,
    );
    expect(scrape.value("app_event_operations_total", { operation: "create_event" })).toBeNaN();
    expect(scrape.value("with_timestamp")).toBe(7);
  });

  it("unescapes label values and reads +Inf buckets", () => {
    expect(scrape.value("odd_total", { path: 'a"b}c', note: "x\\y\nz" })).toBe(4.5);
    expect(
      scrape.value("app_event_operation_duration_seconds_bucket", { le: "+Inf", operation: "create_event" }),
    ).toBe(13);
  });

  it("says NaN for a series that is not there, and 0 for a counter never counted", () => {
    expect(scrape.value("nope_total")).toBeNaN();
    expect(scrape.counter("nope_total", { reason: "x" })).toBe(0);
    expect(scrape.series("app_event_operations_total")).toHaveLength(2);
  });
});
